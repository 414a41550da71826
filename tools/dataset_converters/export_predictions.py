"""Write predictions as DOTA Task1 files or a FAIR1M submission, merging patches if asked.

    python tools/dataset_converters/export_predictions.py PRED --out-dir DIR
        [--format task1|fair1m] [--tree CONFIG] [--merge-patches] [--iou-thr 0.1]
        [--image-dir DIR] [--img-suffix .tif] [--zip]

PRED is the .pkl written by `tools/test.py CONFIG CKPT --out preds.pkl` or a
folder of Task1_<class>.txt files. With --merge-patches the ids must be patch
names (<image>__<size>__<x>___<y>, as split_images.py writes them): boxes are
shifted to the full image and rotated NMS (per class, --iou-thr) removes the
duplicates from overlapping patches. --format fair1m writes DIR/test/<id>.xml
(and DIR/submission.zip with --zip); --image-dir lists every test image so that
images without detections get an XML too. --tree is any config defining
label_tree (a dataset or model config).
"""
import argparse
import os.path as osp
import sys

from mmengine.utils import ProgressBar

from bhcl.datasets.convert import staged_output
from bhcl.datasets.export import (fair1m_submission_names, load_prediction_pickle,
                                  read_dota_task1, write_dota_task1,
                                  write_fair1m_submission, write_zip)
from bhcl.datasets.merge import merge_patch_detections
from bhcl.datasets.split import find_images, parse_patch_name
from bhcl.datasets.xml_annotated import TREE_CONFIG_DIR, load_label_tree
from bhcl.structures import LabelTree


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('pred', help='.pkl from tools/test.py --out, or a Task1 folder')
    parser.add_argument('--out-dir', required=True, help='output folder')
    parser.add_argument('--format', default='task1', choices=['task1', 'fair1m'])
    parser.add_argument('--tree', default=osp.join(TREE_CONFIG_DIR, 'fair1m_label_tree.py'),
                        help='config file defining label_tree (class order of the labels)')
    parser.add_argument('--merge-patches', action='store_true',
                        help='merge patch predictions into full images (rotated NMS)')
    parser.add_argument('--iou-thr', type=float, default=0.1, help='NMS IoU threshold (0.1)')
    parser.add_argument('--image-dir', nargs='+',
                        help='folder(s) of all test images (FAIR1M: an XML for each)')
    parser.add_argument('--img-suffix', default='.tif', help='FAIR1M <filename> suffix (.tif)')
    parser.add_argument('--zip', action='store_true', help='also write DIR/submission.zip')
    return parser.parse_args(argv)


def full_image_id(name: str) -> str:
    try:
        return parse_patch_name(name)[0]
    except ValueError:
        return name


def main(argv=None):
    args = parse_args(argv)
    tree = LabelTree.from_config(load_label_tree(args.tree))
    if osp.isdir(args.pred):
        dets = read_dota_task1(args.pred, tree.classes)
    else:
        dets = load_prediction_pickle(args.pred)
    print(f'{len(dets)} {"patches" if args.merge_patches else "images"}, '
          f'{sum(len(d) for d in dets.values())} detections from {args.pred}')
    image_ids = None
    if args.image_dir:
        image_ids = list(find_images(args.image_dir))
    if args.merge_patches:
        if image_ids is not None:  # a folder of patches stands for its full images
            image_ids = sorted({full_image_id(i) for i in image_ids})
        n_images = len({full_image_id(i) for i in dets})
        print(f'merging patches of {n_images} images (rotated NMS, IoU {args.iou_thr})')
        dets = merge_patch_detections(dets, args.iou_thr, image_ids=image_ids,
                                      progress=ProgressBar(n_images, file=sys.stdout).update)
        print()
        print(f'merged into {len(dets)} images, {sum(len(d) for d in dets.values())} detections')
    with staged_output(args.out_dir) as out:   # all or nothing
        zip_path = osp.join(out, 'submission.zip') if args.zip else None
        if args.format == 'task1':
            files = write_dota_task1(dets, tree.classes, out)
            if zip_path:
                write_zip(files, out, zip_path)
        else:
            files = write_fair1m_submission(dets, fair1m_submission_names(tree), out,
                                            args.img_suffix, image_ids, zip_path)
    print(f'wrote {len(files)} files to {args.out_dir}'
          + (f' and {osp.join(args.out_dir, "submission.zip")}' if args.zip else ''))


if __name__ == '__main__':
    main()

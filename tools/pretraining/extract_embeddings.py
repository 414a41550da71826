"""Object embeddings of rotated proposals from a frozen backbone (crop-then-encode).

    python tools/pretraining/extract_embeddings.py IMG_DIR PROPOSAL_DIR OUT_DIR
        [--depth 50 | --backbone-config CFG.py] [--checkpoint PATH | URL | none]
        [--scale 1.5] [--out-size 224] [--batch-size 64] [--device cpu] [--half]
        [--seed 0]

For every PROPOSAL_DIR/<stem>.txt (DOTA txt, e.g. from generate_proposals.py)
and its image IMG_DIR/<stem>.*, each box is enlarged SCALE times, cropped
along its own axes to OUT_SIZE x OUT_SIZE, and encoded by a frozen mmdet
ResNet (last stage, global-average-pooled: 2048-d for ResNet-50), or by the
``backbone`` dict of --backbone-config (mmdet registry; its last output is
pooled). Writes OUT_DIR/<stem>.pth = dict(image, boxes (N, 5), embeddings
(N, C)), rows aligned; degenerate boxes, boxes centred outside the image and
images left without boxes are skipped, counted and logged.

--checkpoint (default torchvision://resnet<DEPTH>, ImageNet) takes a backbone
export, a detector / SimCLR checkpoint (its backbone.* weights), a
torchvision:// name or URL, or 'none' (random weights drawn after
``torch.manual_seed(--seed)``, so the same seed gives the same embeddings; tests
and studies without downloadable weights). --half
stores float16 embeddings (half the disk). Next step:
tools/pretraining/cluster_embeddings.py.
"""
import argparse
import sys

import torch
from mmengine.config import Config
from mmengine.utils import ProgressBar

from bhcl.pretraining import DEFAULT_BACKBONE, build_frozen_backbone, extract_embedding_files
from bhcl.pretraining.embeddings import list_proposal_files


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('img_dir', help='folder of images')
    parser.add_argument('proposal_dir', help='folder of <stem>.txt proposal files')
    parser.add_argument('out_dir', help='folder for the <stem>.pth embedding files')
    parser.add_argument('--depth', type=int, default=50, help='ResNet depth (%(default)s)')
    parser.add_argument('--backbone-config', default=None,
                        help='config file defining `backbone = dict(...)` (replaces --depth)')
    parser.add_argument('--checkpoint', default=None,
                        help="backbone weights, or 'none' for random ones (default: "
                        "torchvision://resnet<DEPTH>, or the init_cfg of --backbone-config)")
    parser.add_argument('--scale', type=float, default=1.5,
                        help='box enlargement before cropping (%(default)s)')
    parser.add_argument('--out-size', type=int, default=224, help='crop side (%(default)s)')
    parser.add_argument('--batch-size', type=int, default=64, help='crops per forward')
    parser.add_argument('--device', default='cpu', help="e.g. 'cpu' or 'cuda:0'")
    parser.add_argument('--half', action='store_true', help='store float16 embeddings')
    parser.add_argument('--seed', type=int, default=0,
                        help='seeds the weights the backbone gets before loading any '
                        "(all of them with --checkpoint none; %(default)s)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    checkpoint = args.checkpoint
    if args.backbone_config:
        cfg = Config.fromfile(args.backbone_config)['backbone'].to_dict()
    else:
        cfg = dict(DEFAULT_BACKBONE, depth=args.depth, init_cfg=None)
        checkpoint = checkpoint or f'torchvision://resnet{args.depth}'
    if checkpoint is not None and checkpoint.lower() == 'none':
        cfg['init_cfg'], checkpoint = None, None
    torch.manual_seed(args.seed)
    backbone = build_frozen_backbone(cfg, checkpoint, args.device)
    bar = ProgressBar(len(list_proposal_files(args.proposal_dir)), file=sys.stdout)
    stats = extract_embedding_files(
        args.img_dir, args.proposal_dir, args.out_dir, backbone, scale=args.scale,
        out_size=args.out_size, batch_size=args.batch_size, device=args.device,
        dtype=torch.float16 if args.half else torch.float32, progress=bar.update)
    print(f'\n{args.out_dir}: ' + ', '.join(f'{k}={v}' for k, v in sorted(stats.items())))
    return stats


if __name__ == '__main__':
    main()

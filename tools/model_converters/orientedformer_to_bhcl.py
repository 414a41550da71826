"""Convert a checkpoint of the published BHCL / OrientedFormer code to bhcl.

    python tools/model_converters/orientedformer_to_bhcl.py PUBLISHED_CKPT OUT_DIR
        [--config PUBLISHED_CONFIG.py] [--label-tree TREE] [--name NAME]

PUBLISHED_CKPT is a checkpoint written by the published code (``state_dict``
with its key names). Its model config is read from the checkpoint's
``meta['cfg']`` (mmengine stores the config text there) or from ``--config``
(the published ``.py`` file, e.g. ``projects/BHCL/configs/shiprs_bhcl_decoupled_6x.py``).
Either way the config's ``custom_imports`` (the published package) are not
imported: nothing of the published code is needed. ``--label-tree`` is needed
when the config has no ``hcl_loss.hierarchical_labels`` (the baselines): a
bhcl label-tree config such as ``configs/_base_/datasets/shiprs_label_tree.py``
or a tree JSON file.

OUT_DIR receives ``<name>.pth`` (bhcl weights, loadable by ``tools/test.py``
with the matching ``configs/orientedformer`` / ``configs/bhcl`` config or with
the model config below) and ``<name>_model.py`` (the converted model config,
its label tree an ordered ``paths`` list). The checkpoint records the class
order it was made for; loading it into a model whose label tree has another
order fails and shows both. The converted model is built and the weights
loaded strictly before anything is written.
"""
import argparse
import os
import os.path as osp
import runpy
import sys

import torch
from mmengine.config import Config

import bhcl  # noqa: F401  (registers bhcl modules)
from bhcl.models.published import (PublishedModelError, convert_published_config,
                                   convert_published_state_dict, load_state_dict_strict)
from bhcl.structures import LabelTree
from bhcl.utils.class_order import (ClassOrderError, ConfigReadError, checkpoint_config,
                                    converted_checkpoint, dump_config)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('checkpoint', help='checkpoint of the published code')
    parser.add_argument('out_dir', help='folder for the bhcl checkpoint and model config')
    parser.add_argument('--config', help="published config .py (default: the checkpoint's "
                                         "meta['cfg'])")
    parser.add_argument('--label-tree', help='bhcl label-tree config (.py with label_tree=) '
                                             'or tree JSON')
    parser.add_argument('--name', help='output file stem (default: the checkpoint\'s)')
    return parser.parse_args(argv)


def read_label_tree(path: str) -> LabelTree:
    if path.endswith('.json'):
        return LabelTree.from_json(path)
    values = runpy.run_path(path)
    if 'label_tree' not in values:
        raise SystemExit(f'{path}: no `label_tree = dict(...)` in this file')
    return LabelTree.from_config(values['label_tree'])


def published_model_cfg(args, ckpt: dict) -> dict:
    cfg = checkpoint_config(ckpt, args.checkpoint, args.config)
    if 'model' not in cfg:
        raise PublishedModelError('the published config has no `model`')
    return cfg.to_dict()['model']


def build_converted(model_cfg: dict):
    """The bhcl model of ``model_cfg``, without pretrained backbone weights."""
    from mmrotate.registry import MODELS
    build_cfg = Config(dict(model=model_cfg)).model
    if 'init_cfg' in build_cfg.backbone:
        build_cfg.backbone.init_cfg = None
    return MODELS.build(build_cfg)


def check_written(out_cfg: str, out_ckpt: str, state: dict) -> None:
    """Build the written model config, load the written checkpoint into it as the Runner
    would (strict), and check every tensor arrived: the files work as a pair."""
    from mmengine.runner import load_checkpoint
    model = build_converted(Config.fromfile(out_cfg).to_dict()['model'])
    load_checkpoint(model, out_ckpt, map_location='cpu', strict=True)
    loaded = model.state_dict()
    wrong = [k for k, v in state.items() if not torch.equal(loaded[k], v)]
    if wrong:
        raise PublishedModelError(f'{out_ckpt} does not load into {out_cfg}: {wrong[:10]}')


def main(argv=None) -> int:
    args = parse_args(argv)
    if not osp.isfile(args.checkpoint):
        raise SystemExit(f'{args.checkpoint}: no such checkpoint')
    ckpt = torch.load(args.checkpoint, map_location='cpu', weights_only=False)
    tree = read_label_tree(args.label_tree) if args.label_tree else None
    try:
        model_cfg = convert_published_config(published_model_cfg(args, ckpt), label_tree=tree)
        state = convert_published_state_dict(ckpt.get('state_dict', ckpt))
        model = build_converted(model_cfg)
        load_state_dict_strict(model, state)
        out = converted_checkpoint(state, model.label_tree,
                                   converted_from=osp.basename(args.checkpoint))
        name = args.name or osp.splitext(osp.basename(args.checkpoint))[0]
        os.makedirs(args.out_dir, exist_ok=True)
        out_cfg = osp.join(args.out_dir, f'{name}_model.py')
        dump_config(dict(custom_imports=dict(imports=['bhcl'], allow_failed_imports=False),
                         model=model_cfg), out_cfg)
    except (PublishedModelError, ConfigReadError, ClassOrderError) as error:
        print(f'{args.checkpoint}: {error}', file=sys.stderr)
        return 1
    out_ckpt = osp.join(args.out_dir, f'{name}.pth')
    torch.save(out, out_ckpt)
    check_written(out_cfg, out_ckpt, state)
    print(f'wrote {out_ckpt} and {out_cfg}')
    return 0


if __name__ == '__main__':
    sys.exit(main())

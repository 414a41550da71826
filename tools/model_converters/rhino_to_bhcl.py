"""Convert a checkpoint of the published RHINO code (SIAnalytics/RHINO) to bhcl.

    python tools/model_converters/rhino_to_bhcl.py PUBLISHED_CKPT OUT_DIR
        [--config PUBLISHED_CONFIG.py] [--label-tree TREE] [--name NAME]

PUBLISHED_CKPT is a checkpoint written by the published code (``state_dict``
with its key names; bhcl's RHINO keeps them). Its model config is read from
``--config`` (the published ``.py`` file, e.g.
``configs/rhino/rhino_phc_haus-4scale_r50_2xb2-36e_dota.py``) or, without it,
from the checkpoint's ``meta['cfg']`` (mmengine stores the config there); in
neither case are its ``custom_imports`` executed. ``--label-tree`` (a bhcl
label-tree config ``.py`` with ``label_tree = dict(...)`` or a tree JSON) is
optional: RHINO's classes are flat, a tree only makes bhcl's inference
tree-aware; its node count must be the published ``num_classes``.

OUT_DIR receives ``<name>.pth`` (bhcl weights) and ``<name>_model.py`` (the
converted model config). The converted model is built and the weights loaded
strictly (every missing, unknown or mis-shaped key is listed) before anything
is written.
"""
import argparse
import os
import os.path as osp
import runpy
import sys
import tempfile

import torch
from mmengine.config import Config

import bhcl  # noqa: F401  (registers bhcl modules)
from bhcl.models.published_rhino import (PublishedModelError, convert_published_rhino_config,
                                         convert_published_rhino_state_dict,
                                         load_state_dict_strict)
from bhcl.structures import LabelTree


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('checkpoint', help='checkpoint of the published RHINO code')
    parser.add_argument('out_dir', help='folder for the bhcl checkpoint and model config')
    parser.add_argument('--config', help="published config .py (default: the checkpoint's "
                                         "meta['cfg'])")
    parser.add_argument('--label-tree', help='bhcl label-tree config (.py with label_tree=) '
                                             'or tree JSON')
    parser.add_argument('--name', help="output file stem (default: the checkpoint's)")
    return parser.parse_args(argv)


def read_label_tree(path: str) -> LabelTree:
    if path.endswith('.json'):
        return LabelTree.from_json(path)
    values = runpy.run_path(path)
    if 'label_tree' not in values:
        raise SystemExit(f'{path}: no `label_tree = dict(...)` in this file')
    return LabelTree.from_config(values['label_tree'])


def config_from_text(text: str) -> Config:
    """A config stored as Python text, read without importing its ``custom_imports``
    (``Config.fromstring`` would import them: the published fork is not installed)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = osp.join(tmp, 'published_cfg.py')
        with open(path, 'w', encoding='utf-8') as f:
            f.write(text)
        return Config.fromfile(path, import_custom_modules=False)


def published_model_cfg(args, ckpt: dict) -> dict:
    if args.config:
        cfg = Config.fromfile(args.config, import_custom_modules=False)
    else:
        text = (ckpt.get('meta') or {}).get('cfg')
        if not text:
            raise SystemExit(f"{args.checkpoint}: no meta['cfg'] in the checkpoint; pass the "
                             'published config with --config')
        cfg = config_from_text(text) if isinstance(text, str) else Config(text)
    if 'model' not in cfg:
        raise SystemExit('the published config has no `model`')
    return cfg.to_dict()['model']


def main(argv=None) -> int:
    args = parse_args(argv)
    if not osp.isfile(args.checkpoint):
        raise SystemExit(f'{args.checkpoint}: no such checkpoint')
    ckpt = torch.load(args.checkpoint, map_location='cpu', weights_only=False)
    tree = read_label_tree(args.label_tree) if args.label_tree else None
    try:
        model_cfg = convert_published_rhino_config(published_model_cfg(args, ckpt),
                                                   label_tree=tree)
        state = convert_published_rhino_state_dict(ckpt.get('state_dict', ckpt))
        from mmengine.registry import init_default_scope
        from mmrotate.registry import MODELS
        init_default_scope('mmrotate')  # the converted config's types are mmrotate / bhcl ones
        build_cfg = Config(dict(model=model_cfg)).model
        if 'init_cfg' in build_cfg.backbone:
            build_cfg.backbone.init_cfg = None
        model = MODELS.build(build_cfg)
        load_state_dict_strict(model, state)
    except PublishedModelError as error:
        print(f'{args.checkpoint}: {error}', file=sys.stderr)
        return 1
    os.makedirs(args.out_dir, exist_ok=True)
    name = args.name or osp.splitext(osp.basename(args.checkpoint))[0]
    out_ckpt = osp.join(args.out_dir, f'{name}.pth')
    torch.save(dict(state_dict=state, meta=dict(converted_from=osp.basename(args.checkpoint))),
               out_ckpt)
    out_cfg = osp.join(args.out_dir, f'{name}_model.py')
    Config(dict(custom_imports=dict(imports=['bhcl'], allow_failed_imports=False),
                default_scope='mmrotate', model=model_cfg)).dump(out_cfg)
    print(f'wrote {out_ckpt} and {out_cfg}')
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""The command line shared by the converters of published checkpoints.

``tools/model_converters/orientedformer_to_bhcl.py`` and ``rhino_to_bhcl.py`` differ
only in how a published model config and state dict become bhcl's; this module does
the rest the same way for both: read the published config (``--config`` or the
checkpoint's ``meta['cfg']``, never importing its ``custom_imports``), build the bhcl
model and load the weights strictly, write ``<name>.pth`` (recording the class order
when the model has a label tree) and ``<name>_model.py`` (the tree as an ordered
``paths`` list), then load the written pair back as the Runner would.
"""
import argparse
import os
import os.path as osp
import runpy
import sys
from typing import Callable, List, Mapping, Optional

import torch
from mmengine.config import Config

from ..structures import LabelTree
from ..utils.class_order import (ClassOrderError, ConfigReadError, checkpoint_config,
                                 converted_checkpoint, dump_config)
from .published import PublishedModelError, load_state_dict_strict

ConfigConverter = Callable[..., dict]            # (published model cfg, label_tree=) -> bhcl
StateDictConverter = Callable[[Mapping], dict]   # published state dict -> bhcl


def parse_args(description: str, argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('checkpoint', help='checkpoint of the published code')
    parser.add_argument('out_dir', help='folder for the bhcl checkpoint and model config')
    parser.add_argument('--config', help="published config .py (default: the checkpoint's "
                                         "meta['cfg'])")
    parser.add_argument('--label-tree', help='bhcl label-tree config (.py with label_tree=) '
                                             'or tree JSON')
    parser.add_argument('--name', help="output file stem (default: the checkpoint's)")
    return parser.parse_args(argv)


def read_label_tree(path: str) -> LabelTree:
    """A tree from a bhcl label-tree config (``label_tree = dict(...)``) or a tree JSON."""
    if path.endswith('.json'):
        return LabelTree.from_json(path)
    values = runpy.run_path(path)
    if 'label_tree' not in values:
        raise SystemExit(f'{path}: no `label_tree = dict(...)` in this file')
    return LabelTree.from_config(values['label_tree'])


def build_converted(model_cfg: dict):
    """The bhcl model of ``model_cfg``, without pretrained backbone weights."""
    from mmengine.registry import init_default_scope
    from mmrotate.registry import MODELS
    init_default_scope('mmrotate')   # the converted configs name mmrotate / bhcl types
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


def convert_published_checkpoint(argv: Optional[List[str]], description: str,
                                 convert_config: ConfigConverter,
                                 convert_state_dict: StateDictConverter) -> int:
    """Run a converter's command line; returns the exit status (1 with a message on
    stderr when the checkpoint or its config does not fit, nothing written then)."""
    args = parse_args(description, argv)
    if not osp.isfile(args.checkpoint):
        raise SystemExit(f'{args.checkpoint}: no such checkpoint')
    ckpt = torch.load(args.checkpoint, map_location='cpu', weights_only=False)
    tree = read_label_tree(args.label_tree) if args.label_tree else None
    try:
        cfg = checkpoint_config(ckpt, args.checkpoint, args.config)
        if 'model' not in cfg:
            raise PublishedModelError('the published config has no `model`')
        model_cfg = convert_config(cfg.to_dict()['model'], label_tree=tree)
        state = convert_state_dict(ckpt.get('state_dict', ckpt))
        model = build_converted(model_cfg)
        load_state_dict_strict(model, state)
        origin = dict(converted_from=osp.basename(args.checkpoint))
        out = (converted_checkpoint(state, model.label_tree, **origin)
               if getattr(model, 'label_tree', None) is not None
               else dict(state_dict=state, meta=origin))
        name = args.name or osp.splitext(osp.basename(args.checkpoint))[0]
        os.makedirs(args.out_dir, exist_ok=True)
        out_cfg = osp.join(args.out_dir, f'{name}_model.py')
        dump_config(dict(custom_imports=dict(imports=['bhcl'], allow_failed_imports=False),
                         default_scope='mmrotate', model=model_cfg), out_cfg)
    except (PublishedModelError, ConfigReadError, ClassOrderError) as error:
        print(f'{args.checkpoint}: {error}', file=sys.stderr)
        return 1
    out_ckpt = osp.join(args.out_dir, f'{name}.pth')
    torch.save(out, out_ckpt)
    check_written(out_cfg, out_ckpt, state)
    print(f'wrote {out_ckpt} and {out_cfg}')
    return 0

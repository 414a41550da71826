"""Turn a MutDet pre-training checkpoint into a fine-tuning initialisation.

    python tools/model_converters/mutdet_to_finetune.py PRETRAIN_CKPT FINETUNE_CONFIG OUT.pth \
        [--pretrain-config CONFIG]

Checks that the pre-trained detector has the fine-tuning model's architecture
(decoder depth and layer type, query count, width; MutDet's released configs
differ here, which silently drops layers at fine-tuning), then drops the
pre-training-only modules (mutual enhancement, projections, embedding heads)
and the layers whose shape follows the number of classes (pseudo-classes
there, the dataset's classes here), and writes the rest. It prints the
dropped keys and the keys the fine-tuning model will initialise itself
(missing). Fine-tuning configs read it with ``load_from = 'OUT.pth'``.

The pre-training config is read from the checkpoint (mmengine stores it;
its ``custom_imports`` are not imported) or from ``--pretrain-config``. The
pre-training model's class-order record (its pseudo-classes) is dropped with
the class-dependent layers: the output fits any label tree.
"""
import argparse
import os
import os.path as osp
import sys
from typing import Dict, List, Tuple

import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('checkpoint', help='checkpoint of a MutDetPretrainer run')
    parser.add_argument('config', help='the fine-tuning config')
    parser.add_argument('out', help='output .pth (state_dict + meta)')
    parser.add_argument('--pretrain-config', default=None,
                        help='the pre-training config, when the checkpoint does not hold it')
    return parser.parse_args(argv)


def architecture(model_cfg) -> Dict[str, object]:
    """What must agree between pre-training and fine-tuning."""
    dec = model_cfg['decoder']
    layer = dec['layer_cfg']
    return {
        'decoder.num_layers': dec['num_layers'],
        'decoder.layer_cfg.type': layer.get('type'),
        'decoder.layer_cfg.embed_dims': layer.get('embed_dims'),
        'query_head.num_queries': model_cfg['query_head'].get('num_queries'),
        'backbone.depth': model_cfg['backbone'].get('depth'),
    }


def check_architecture(pre_cfg, fine_cfg, pre_name: str, fine_name: str) -> None:
    pre, fine = architecture(pre_cfg), architecture(fine_cfg)
    diff = [f'{k}: {pre[k]!r} in {pre_name} vs {fine[k]!r} in {fine_name}'
            for k in pre if pre[k] != fine[k]]
    if diff:
        raise ValueError('pre-training and fine-tuning models differ; layers would be '
                         'dropped or left untrained at fine-tuning. Make the configs agree:\n  '
                         + '\n  '.join(diff))


def build(model_cfg):
    from mmengine.registry import init_default_scope
    from mmrotate.registry import MODELS

    import bhcl  # noqa: F401
    init_default_scope('mmrotate')
    cfg = dict(model_cfg)
    cfg.pop('init_cfg', None)
    if isinstance(cfg.get('backbone'), dict):  # no weights are needed to read the layout
        cfg['backbone'] = dict(cfg['backbone'], init_cfg=None)
    return MODELS.build(cfg)


def convert(state: Dict[str, torch.Tensor], pretrainer, finetuner
            ) -> Tuple[Dict[str, torch.Tensor], Dict[str, List[str]]]:
    """Pre-training state dict -> (fine-tuning state dict, report of the keys)."""
    from bhcl.models.detectors import pretrain_only_keys
    from bhcl.utils.class_order import CLASS_ORDER_KEY

    # the recorded class order is no weight: the pseudo-classes' is dropped, and the
    # fine-tuning model's is not to be initialised
    state = {k: v for k, v in state.items() if k != CLASS_ORDER_KEY}
    target = {k: v for k, v in finetuner.state_dict().items() if k != CLASS_ORDER_KEY}
    pre_only = set(pretrain_only_keys(state))
    class_dep = (set(pretrainer.class_dependent_keys())
                 | set(finetuner.class_dependent_keys())) & set(state)
    out, unexpected, mismatched = {}, [], []
    for k, v in state.items():
        if k in pre_only or k in class_dep:
            continue
        if k not in target:
            unexpected.append(k)
        elif target[k].shape != v.shape:
            mismatched.append(f'{k}: {tuple(v.shape)} vs {tuple(target[k].shape)}')
        else:
            out[k] = v
    if mismatched:
        raise ValueError('tensors of the same name but different shape (architectures '
                         'differ beyond the class count):\n  ' + '\n  '.join(mismatched))
    missing = sorted(k for k in target if k not in out)
    return out, dict(dropped_pretrain_only=sorted(pre_only),
                     dropped_class_dependent=sorted(class_dep),
                     unexpected=sorted(unexpected), missing=missing)


def main(argv=None):
    from mmengine.config import Config

    from bhcl.utils.class_order import checkpoint_config
    args = parse_args(argv)
    ckpt = torch.load(args.checkpoint, map_location='cpu', weights_only=False)
    state = ckpt.get('state_dict', ckpt)
    pre_cfg = checkpoint_config(ckpt, args.checkpoint, args.pretrain_config)
    if pre_cfg.model.get('type') != 'MutDetPretrainer':
        raise ValueError(f'{args.checkpoint}: model type {pre_cfg.model.get("type")!r}, '
                         'expected a MutDetPretrainer checkpoint')
    fine_cfg = Config.fromfile(args.config)
    check_architecture(pre_cfg.model, fine_cfg.model, 'pre-training', args.config)
    out, report = convert(state, build(pre_cfg.model), build(fine_cfg.model))
    if report['unexpected']:
        raise ValueError('pre-trained tensors with no place in the fine-tuning model:\n  '
                         + '\n  '.join(report['unexpected']))
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    meta = dict(source=osp.basename(args.checkpoint), kind='mutdet pre-training',
                dropped=report['dropped_pretrain_only'] + report['dropped_class_dependent'])
    torch.save(dict(state_dict=out, meta=meta), args.out)
    print(f'kept {len(out)} tensors of {len(state)}')
    for key in ('dropped_pretrain_only', 'dropped_class_dependent', 'missing'):
        names = report[key]
        print(f'{key} ({len(names)}):')
        for name in names:
            print(f'    {name}')
    print(f'written {args.out}; fine-tune with load_from = {args.out!r}')
    return report


if __name__ == '__main__':
    main()

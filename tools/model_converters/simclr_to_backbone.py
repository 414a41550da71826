"""Export the backbone of a SimCLR (mmpretrain) checkpoint for a bhcl detector.

    python tools/model_converters/simclr_to_backbone.py SIMCLR_CKPT OUT.pth

Keeps the ``backbone.*`` weights of the pre-training checkpoint (the SimCLR
projection neck and head are dropped), without the prefix: the layout of
torchvision / ImageNet ResNet checkpoints, which mmdet's ``ResNet`` reads.
Point the detector at it with

    model = dict(backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='OUT.pth')))

(or ``--cfg-options model.backbone.init_cfg.checkpoint=OUT.pth`` on the paper
configs, whose backbone already has a ``Pretrained`` init_cfg). Prints the
number of tensors kept and dropped.
"""
import argparse
import os
import os.path as osp

import torch


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('checkpoint', help='checkpoint written by a configs/simclr run')
    parser.add_argument('out', help='output .pth with the backbone weights')
    return parser.parse_args(argv)


def backbone_state_dict(checkpoint: dict, path: str = 'checkpoint') -> dict:
    """``backbone.*`` entries of a (mmengine) checkpoint, prefix removed."""
    state = checkpoint.get('state_dict', checkpoint)
    out = {k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')}
    if not out:
        raise ValueError(f'{path}: no backbone.* weights (keys start with '
                         f'{sorted({k.split(".")[0] for k in state})}); expected a checkpoint of '
                         'a configs/simclr pre-training run')
    return out


def main(argv=None):
    args = parse_args(argv)
    ckpt = torch.load(args.checkpoint, map_location='cpu', weights_only=False)
    state = backbone_state_dict(ckpt, args.checkpoint)
    total = len(ckpt.get('state_dict', ckpt))
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    meta = dict(source=osp.basename(args.checkpoint), kind='simclr backbone')
    torch.save(dict(state_dict=state, meta=meta), args.out)
    print(f'kept {len(state)} backbone tensors, dropped {total - len(state)} '
          f'(projection neck and head); written {args.out}')


if __name__ == '__main__':
    main()

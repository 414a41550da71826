"""FLOPs and parameters of a bhcl detector at inference, as mmdet's get_flops.py reports them.

    python tools/analysis_tools/get_flops.py CONFIG [--shape 1024 [1024]] [--show-table]
        [--cfg-options k=v ...]

A random image of the given size (default 1024 x 1024) goes through the
inference path (backbone, neck, distinct-query head, decoder stages); the
training-only auxiliary branch is not run, so its FLOPs are not counted.
``Params`` is every parameter of the model, as mmdet's tool reports it (the
training-only ``query_head.aux`` and ``loss_hcl`` projectors included);
``Params used at inference`` is those the forward pass reads. Operators that
mmengine's counter does not model (scaled-dot-product attention, element-wise
operations, sorting) are listed as warnings and count as zero, so the figure
is a lower bound, comparable between variants.
"""
import argparse

import torch
from mmengine.analysis import get_model_complexity_info
from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope
from torch.overrides import TorchFunctionMode

import bhcl  # noqa: F401  (registers bhcl modules)
from bhcl.utils.setup_env import load_cfg


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='FLOPs and parameters of a bhcl detector')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--shape', type=int, nargs='+', default=[1024],
                        help='input size: H (square) or H W')
    parser.add_argument('--show-table', action='store_true', help='per-module table')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value; a key the config lacks is an '
                        'error unless written +key=value')
    return parser.parse_args(argv)


def complexity(cfg: Config, height: int, width: int) -> dict:
    """mmengine's complexity info of ``cfg.model`` on one (3, height, width) image."""
    from mmrotate.registry import MODELS
    init_default_scope(cfg.get('default_scope', 'mmrotate'))
    model_cfg = cfg.model
    if model_cfg.get('backbone', {}).get('init_cfg') is not None:
        model_cfg.backbone.init_cfg = None  # no pretrained download to count operations
    model = MODELS.build(model_cfg).eval()
    inputs = torch.randn(1, 3, height, width)
    with torch.no_grad():
        info = get_model_complexity_info(model, inputs=(inputs, ), show_table=True,
                                         show_arch=False)
    info['inference_params'] = params_read_by(model, inputs)
    return info


class _ParameterWatch(TorchFunctionMode):
    """Records every ``nn.Parameter`` passed to a torch function or method."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        stack = [args, kwargs]
        while stack:
            item = stack.pop()
            if isinstance(item, torch.nn.Parameter):
                self.seen[id(item)] = item.numel()
            elif isinstance(item, (list, tuple)):
                stack.extend(item)
            elif isinstance(item, dict):
                stack.extend(item.values())
        return func(*args, **kwargs)


def params_read_by(model: torch.nn.Module, inputs: torch.Tensor) -> int:
    """Number of parameters one forward pass of ``model`` on ``inputs`` reads
    (shared parameters once): the model without its training-only parts."""
    watch = _ParameterWatch()
    with torch.no_grad(), watch:
        model(inputs)
    return sum(watch.seen.values())


def main(argv=None) -> int:
    args = parse_args(argv)
    if len(args.shape) not in (1, 2) or min(args.shape) < 32:
        raise SystemExit(f'--shape takes H or H W (at least 32 px), got {args.shape}')
    height, width = (args.shape * 2)[:2]
    cfg = load_cfg(args.config, args.cfg_options)
    info = complexity(cfg, height, width)
    if args.show_table:
        print(info['out_table'])
    split = '=' * 30
    print(f'{split}\nInput shape: (3, {height}, {width})\nFlops: {info["flops_str"]}\n'
          f'Params: {info["params_str"]}\n'
          f'Params used at inference: {info["inference_params"] / 1e6:.3f}M\n{split}')
    print('Params counts every parameter (training-only heads and loss projectors included). '
          'Scaled-dot-product attention and element-wise operations are not counted in Flops: '
          'a lower bound, comparable between variants.')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())

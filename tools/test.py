"""Evaluate a checkpoint; write the metrics (and optionally raw predictions).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out preds.pkl]
                         [--show-dir DIR] [--cfg-options k=v ...] [--launcher pytorch]
    bash tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS [args...]

The metrics are printed and written to ``<work_dir>/metrics.json``.
"""
import argparse
import json
import os
import os.path as osp

from mmengine.config import Config
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

import bhcl  # noqa: F401  (registers bhcl modules)
from bhcl.utils.setup_env import (finish_distributed, init_cpu_distributed, parse_common_args,
                                   setup_cfg)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (and evaluate) a bhcl detector')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', help='dump raw predictions to this .pkl file')
    parser.add_argument('--show-dir', help='save images with predictions under work_dir/<show-dir>')
    return parse_common_args(parser, argv)


def build_cfg(args) -> Config:
    cfg = setup_cfg(args.config, args.launcher, args.work_dir, args.cfg_options)
    cfg.load_from = args.checkpoint
    if args.show_dir:
        vis = cfg.default_hooks.get('visualization')
        if vis is None:
            raise ValueError('--show-dir needs a visualization hook in default_hooks')
        vis.update(draw=True, test_out_dir=args.show_dir)
    if args.out is not None:
        if not args.out.endswith(('.pkl', '.pickle')):
            raise ValueError(f'--out must end with .pkl or .pickle, got {args.out!r}')
        dump = dict(type='mmdet.DumpDetResults', out_file_path=args.out)
        evaluator = cfg.test_evaluator
        cfg.test_evaluator = (list(evaluator) if isinstance(evaluator, (list, tuple))
                              else [evaluator]) + [dump]
    return cfg


def main(argv=None):
    args = parse_args(argv)
    cfg = build_cfg(args)
    init_cpu_distributed(cfg)
    runner = RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
    metrics = runner.test()
    if runner.rank == 0:
        path = osp.join(cfg.work_dir, 'metrics.json')
        with open(path, 'w') as f:
            json.dump({k: float(v) if isinstance(v, (int, float)) else str(v)
                       for k, v in metrics.items()}, f, indent=1)
        runner.logger.info(f'metrics written to {path}')
    del runner
    finish_distributed()
    return metrics


if __name__ == '__main__':
    main()

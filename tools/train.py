"""Train a detector with an mmengine Runner.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
                                 [--cfg-options k=v ...] [--launcher pytorch]
    bash tools/dist_train.sh CONFIG NUM_PROCS [args...]
"""
import argparse
import sys

from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

import bhcl  # noqa: F401  (registers bhcl modules)
from bhcl.engine import Preempted
from bhcl.utils.config_check import amp_device_problem
from bhcl.utils.setup_env import (finish_distributed, init_cpu_distributed, parse_common_args,
                                   setup_cfg)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a bhcl detector')
    parser.add_argument('config', help='train config file path')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from CKPT; without a value, from the latest checkpoint in the work dir')
    parser.add_argument('--amp', action='store_true', help='mixed precision (needs CUDA)')
    return parse_common_args(parser, argv)


def build_cfg(args) -> Config:
    cfg = setup_cfg(args.config, args.launcher, args.work_dir, args.cfg_options)
    if args.amp:
        if cfg.optim_wrapper.get('type', 'OptimWrapper') == 'AmpOptimWrapper':
            print_log('AMP is already enabled in the config', logger='current')
        else:
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'
    amp_problem = amp_device_problem(cfg)
    if amp_problem:
        raise SystemExit(f'error: {amp_problem}')
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    return cfg


def main(argv=None):
    args = parse_args(argv)
    cfg = build_cfg(args)
    init_cpu_distributed(cfg)
    runner = RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
    status = 0
    try:
        runner.train()
    except Preempted as stop:  # a signal asked for a checkpoint and a stop
        status = stop.code
    del runner  # (its DDP reducer holds gloo work objects)
    finish_distributed()
    if status:
        sys.exit(status)


if __name__ == '__main__':
    main()

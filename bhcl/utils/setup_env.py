"""Config set-up shared by tools/train.py, tools/test.py and the analysis tools."""
import logging
import os
import os.path as osp

import torch
from mmengine.config import Config, DictAction
from mmengine.logging import print_log

from bhcl.utils.class_order import ConfigReadError, preserve_label_trees


def load_cfg(config: str, cfg_options=None) -> Config:
    """``Config.fromfile(config)`` with the ``--cfg-options`` overrides checked
    and merged (analysis tools); exits with one message per unknown key."""
    cfg = Config.fromfile(config)
    merge_cfg_options(cfg, cfg_options)
    return cfg


def merge_cfg_options(cfg: Config, cfg_options) -> None:
    """``bhcl.utils.config_check.apply_cfg_options``; an unknown key ends the
    tool with its message rather than a traceback (it is the user's typo)."""
    from .config_check import ConfigKeyError, apply_cfg_options
    try:
        apply_cfg_options(cfg, cfg_options)
    except ConfigKeyError as e:
        raise SystemExit(f'error: {e}') from None


def setup_cfg(config: str, launcher: str = 'none', work_dir=None, cfg_options=None) -> Config:
    """Load ``config`` and apply the common command-line overrides.

    * ``cfg_options`` are checked and merged (``merge_cfg_options``), ``work_dir`` defaults to
      ``./work_dirs/<config name>``;
    * every ``label_tree`` given as a ``parents`` dict becomes the same tree as an
      ordered ``paths`` list (:func:`~bhcl.utils.class_order.preserve_label_trees`):
      the Runner writes the config to the work dir and into each checkpoint's
      ``meta['cfg']`` with sorted dict keys, which would reorder the classes;
    * a distributed launch without CUDA switches the ``nccl`` backend to
      ``gloo`` and wraps the model in DDP without ``device_ids`` so that
      ``dist_train.sh`` also runs on CPU (see ``init_cpu_distributed``).
    """
    cfg = Config.fromfile(config)
    cfg.launcher = launcher
    merge_cfg_options(cfg, cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config))[0])
    try:
        preserve_label_trees(cfg)
    except ConfigReadError as error:  # a written copy that cannot be read misleads no one
        print_log(f'{config}: the config cannot be written and read back ({error}); '
                  'label-tree order not checked', logger='current', level=logging.WARNING)
    if launcher != 'none' and not torch.cuda.is_available():
        dist_cfg = cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})
        if dist_cfg.get('backend', 'nccl') == 'nccl':
            print_log('no CUDA device: using the gloo backend for distributed training',
                      logger='current')
            dist_cfg['backend'] = 'gloo'
        wrapper = cfg.get('model_wrapper_cfg') or dict(type='MMDistributedDataParallel')
        wrapper.setdefault('device_ids', None)   # CPU modules take no device ids
        cfg.model_wrapper_cfg = wrapper
    return cfg


def init_cpu_distributed(cfg: Config) -> None:
    """Start the process group for a CPU launch before the Runner does.

    mmengine's ``init_dist`` for the pytorch launcher calls
    ``torch.cuda.set_device``, which fails without a GPU. The Runner skips its
    own initialisation when a process group exists, so we start a gloo group
    from the torchrun environment first. A no-op with CUDA or without a
    launcher.
    """
    import torch.distributed as dist
    if cfg.get('launcher', 'none') != 'pytorch' or torch.cuda.is_available():
        return
    if not dist.is_initialized():
        backend = cfg.get('env_cfg', {}).get('dist_cfg', {}).get('backend', 'gloo')
        dist.init_process_group(backend=backend)


def finish_distributed() -> None:
    """End a distributed run cleanly: wait for every rank, collect the objects
    that still hold finished collectives (a released runner's DDP reducer), then
    destroy the process group.

    Without this, gloo's worker threads may still own work objects whose tensors
    are freed during interpreter teardown, which aborts a finished run
    ('terminate called without an active exception', SIGABRT). Call it after the
    last reference to the runner is gone. A no-op without a process group.
    """
    import gc

    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        return
    dist.barrier()  # no rank tears down while another still talks to it
    gc.collect()
    dist.destroy_process_group()


def parse_common_args(parser, argv=None):
    """Add ``--work-dir``, ``--cfg-options``, ``--launcher``, ``--local-rank``,
    parse ``argv`` and export ``LOCAL_RANK`` when the launcher did not."""
    parser.add_argument('--work-dir', help='folder for logs, checkpoints and metrics')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, e.g. train_cfg.max_epochs=2; a key the config '
        'lacks is an error (typo check) unless written +key=value')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    # torchrun sets LOCAL_RANK; torch.distributed.launch passes --local-rank
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args

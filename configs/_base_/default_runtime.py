# Runtime defaults of every bhcl config: mmrotate's, with the hierarchical
# visualiser (tools/test.py --show-dir and browse_dataset.py label each box with
# its class and tree path, "Other" reallocations as "Other -> <node>").
_base_ = ['mmrotate::_base_/default_runtime.py']

vis_backends = [
    dict(type='LocalVisBackend'),
    # Experiment trackers: uncomment one (or pass it with --cfg-options) to log
    # losses, metrics and --show-dir images there too; see docs/tools.md.
    # dict(type='TensorboardVisBackend'),  # pip install tensorboard; tensorboard --logdir work_dirs
    # dict(type='MLflowVisBackend', exp_name='bhcl'),  # pip install mlflow; mlflow ui
    # dict(type='WandbVisBackend', init_kwargs=dict(project='bhcl')),  # pip install wandb
]
visualizer = dict(
    type='HierarchicalLocalVisualizer', vis_backends=vis_backends, name='visualizer')

# mmengine's CheckpointHook, made safe for preemption: atomic checkpoint files,
# `--resume` skips unreadable ones, SIGTERM/SIGUSR1 save and exit with status 75,
# and checkpoints saved every N iterations (by_epoch=False, interval=N) resume
# bit-exactly inside an epoch (docs/get_started.md, "Preemption and requeue").
default_hooks = dict(checkpoint=dict(type='PreemptibleCheckpointHook'))

# Schedule of the CPU-sized synthetic configs: AdamW 2e-4, gradient clipping at
# 1, linear warm-up over 30 iterations, 12 epochs with the learning rate divided
# by 10 at 9; the default runtime with frequent logging and a checkpoint every
# 4 epochs.
_base_ = ['../default_runtime.py']

max_epochs = 12
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=30),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[9], gamma=0.1)
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, weight_decay=1e-4),
    clip_grad=dict(max_norm=1.0, norm_type=2))

default_hooks = dict(
    logger=dict(interval=5),
    checkpoint=dict(interval=4, max_keep_ckpts=2))
log_processor = dict(window_size=5)
env_cfg = dict(mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0))
# Seeded, so that a rerun on the same machine gives the same weights and metrics
# (docs/get_started.md: across CPU types and thread counts they still differ).
randomness = dict(seed=0)

# Published schedule for ShipRSImageNet: AdamW 5e-5, weight decay 1e-6, gradient
# clipping at 1, linear warm-up over 1000 iterations from 1/3, 72 epochs with
# the learning rate divided by 10 at 48 and 66.
max_epochs = 72
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=12)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

param_scheduler = [
    dict(type='LinearLR', start_factor=1.0 / 3, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[48, 66],
         gamma=0.1)
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=5e-5, weight_decay=1e-6),
    clip_grad=dict(max_norm=1, norm_type=2))
# the model's set_epoch drives the contrastive-loss warm-up; EpochSeedHook
# re-seeds every random stream at each epoch: exact resume (docs/get_started.md)
custom_hooks = [dict(type='EpochSeedHook'), dict(type='mmdet.SetEpochInfoHook')]
# 4 GPUs x 2 images
auto_scale_lr = dict(enable=False, base_batch_size=8)

# RHINO's schedule: AdamW 1e-4, weight decay 1e-4, gradient clipping at 0.1,
# backbone learning rate x 0.1; 36 epochs with the learning rate divided by 10
# at 27 and 33 (the 12-epoch variant: one step at 11).
max_epochs = 36
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=12)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[27, 33],
         gamma=0.1)
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=1e-4),
    clip_grad=dict(max_norm=0.1, norm_type=2),
    paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.1)}))
# EpochSeedHook re-seeds every random stream at each epoch: exact resume
custom_hooks = [dict(type='EpochSeedHook')]
# 4 GPUs x 2 images
auto_scale_lr = dict(enable=False, base_batch_size=8)

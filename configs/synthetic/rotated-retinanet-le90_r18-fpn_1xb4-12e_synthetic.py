# Rotated RetinaNet (ResNet-18, no pre-training) on the synthetic dataset: a
# CPU-sized baseline that exercises the whole pipeline (data, train, eval).
_base_ = [
    'mmrotate::rotated_retinanet/rotated-retinanet-rbox-le90_r50_fpn_1x_dota.py',
    '../_base_/datasets/synthetic.py',
]
custom_imports = dict(imports=['bhcl'], allow_failed_imports=False)

model = dict(
    backbone=dict(depth=18, frozen_stages=-1, norm_eval=False, init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=64),
    bbox_head=dict(num_classes={{_base_.num_classes}}, in_channels=64, feat_channels=64,
                   stacked_convs=2),
    test_cfg=dict(nms_pre=500, max_per_img=100))

max_epochs = 12
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=30),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[9], gamma=0.1)
]
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=1e-4),
    clip_grad=dict(max_norm=35, norm_type=2))

default_hooks = dict(
    logger=dict(interval=5),
    checkpoint=dict(interval=4, max_keep_ckpts=2))
log_processor = dict(window_size=5)
env_cfg = dict(mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0))

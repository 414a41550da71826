# SimCLR pre-training of a detector backbone on unlabelled image tiles, with the
# OpenMMLab pre-training toolbox (onedl-mmpretrain): its SimCLR model, two-view
# augmentations (random resized crop, flip, colour jitter 0.8, grey 0.2, blur
# 0.5), NT-Xent loss with temperature 0.1 and LARS with a cosine schedule, as in
# mmpretrain's simclr_resnet50 ImageNet config; only the data differs.
#
# Data: every image under data_root/data_prefix, recursively (a plain image
# folder: e.g. a dataset's train/images, or the 1024 px patches of
# tools/dataset_converters/split_images.py). Labels are not read.
#
#   python tools/train.py configs/simclr/simclr_resnet50_4xb64-coslr-200e_tiles.py \
#       --cfg-options train_dataloader.dataset.data_root=data/shiprs_1024/ \
#                     train_dataloader.dataset.data_prefix=train/images
#   python tools/model_converters/simclr_to_backbone.py \
#       work_dirs/simclr_resnet50_4xb64-coslr-200e_tiles/epoch_200.pth r50_simclr.pth
# then point the detector's backbone at it: docs/get_started.md.
_base_ = ['mmpretrain::simclr/simclr_resnet50_16xb256-coslr-200e_in1k.py']
default_scope = 'mmpretrain'
# bhcl's EpochSeedHook / epoch_worker_init: exact resume (docs/get_started.md)
custom_imports = dict(imports=['bhcl'], allow_failed_imports=False)
custom_hooks = [dict(type='EpochSeedHook')]
# atomic checkpoints, exact mid-epoch resume, SIGTERM/SIGUSR1 save and stop
default_hooks = dict(checkpoint=dict(type='PreemptibleCheckpointHook'))

crop_size = 224
view_pipeline = [
    dict(type='RandomResizedCrop', scale=crop_size, backend='pillow'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomApply',
         transforms=[dict(type='ColorJitter', brightness=0.8, contrast=0.8, saturation=0.8,
                          hue=0.2)],
         prob=0.8),
    dict(type='RandomGrayscale', prob=0.2, keep_channels=True,
         channel_weights=(0.114, 0.587, 0.2989)),
    dict(type='GaussianBlur', magnitude_range=(0.1, 2.0), magnitude_std='inf', prob=0.5),
]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='MultiView', num_views=2, transforms=[view_pipeline]),
    dict(type='PackInputs')
]
train_dataloader = dict(
    batch_size=64,
    num_workers=4,
    persistent_workers=False,
    worker_init_fn=dict(type='epoch_worker_init'),
    # a plain dict: the inherited one carries a _scope_ key that mmengine would
    # pass on to the collate function
    collate_fn=dict(_delete_=True, type='default_collate'),
    dataset=dict(_delete_=True, type='CustomDataset', data_root='data/tiles/', data_prefix='',
                 with_label=False, pipeline=train_pipeline))

# BN, not SyncBN, so that one process (and the CPU) works; distributed runs
# convert it with --cfg-options sync_bn=torch.
model = dict(backbone=dict(norm_cfg=dict(type='BN')))
# LARS lr 4.8 for batch 4096 (16 x 256), scaled linearly to 4 x 64
optim_wrapper = dict(optimizer=dict(lr=4.8 * 256 / 4096))
auto_scale_lr = dict(base_batch_size=256)

# SimCLR on the synthetic dataset's training images (128 px crops), ResNet-18:
# the CPU-sized version of simclr_resnet50_4xb64-coslr-200e_tiles.py.
_base_ = ['./simclr_resnet50_4xb64-coslr-200e_tiles.py']

crop_size = 128
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
train_dataloader = dict(
    batch_size=32,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root='data/synthetic/', data_prefix='train/images',
                 pipeline=[
                     dict(type='LoadImageFromFile'),
                     dict(type='MultiView', num_views=2, transforms=[view_pipeline]),
                     dict(type='PackInputs')
                 ]))
model = dict(backbone=dict(depth=18),
             neck=dict(in_channels=512, hid_channels=512))
optim_wrapper = dict(optimizer=dict(lr=4.8 * 32 / 4096))
default_hooks = dict(logger=dict(interval=10))

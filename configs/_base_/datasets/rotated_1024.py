# Pipelines and loaders shared by the real datasets (ShipRSImageNet, FAIR1M):
# images resized to 1024 px (keep ratio), quadrilateral labels turned into
# rotated boxes. The dataset configs add the label tree, the dataset type and
# the folders.
img_scale = (1024, 1024)
backend_args = None
# Whole-scene inference (demo/scene_demo.py, bhcl.apis.infer_scene): windows of
# the size and overlap the training images were cut with (split_images.py).
scene_split = dict(patch_size=1024, patch_overlap=200)

# The paper's augmentation: keep-ratio resize to 1024, random flips, and a
# random translation of up to 32 px.
train_pipeline = [
    dict(type='mmdet.LoadImageFromFile', backend_args=backend_args),
    dict(type='mmdet.LoadAnnotations', with_bbox=True, box_type='qbox'),
    dict(type='ConvertBoxType', box_type_mapping=dict(gt_bboxes='rbox')),
    dict(type='mmdet.Resize', scale=img_scale, keep_ratio=True),
    dict(type='mmdet.RandomFlip', prob=0.75, direction=['horizontal', 'vertical', 'diagonal']),
    dict(type='mmdet.RandomShift', prob=1.0, max_shift_px=32),
    dict(type='mmdet.PackDetInputs')
]
val_pipeline = [
    dict(type='mmdet.LoadImageFromFile', backend_args=backend_args),
    dict(type='mmdet.Resize', scale=img_scale, keep_ratio=True),
    # annotations after Resize so that the boxes stay in the original frame
    dict(type='mmdet.LoadAnnotations', with_bbox=True, box_type='qbox'),
    dict(type='ConvertBoxType', box_type_mapping=dict(gt_bboxes='rbox')),
    dict(type='mmdet.PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
test_pipeline = [
    dict(type='mmdet.LoadImageFromFile', backend_args=backend_args),
    dict(type='mmdet.Resize', scale=img_scale, keep_ratio=True),
    dict(type='mmdet.PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]

train_dataloader = dict(
    batch_size=2,
    num_workers=2,
    # workers restart each epoch, seeded from (seed, epoch, rank, worker), so
    # that a resumed run continues exactly (EpochSeedHook, docs/get_started.md)
    persistent_workers=False,
    worker_init_fn=dict(type='epoch_worker_init'),
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=None,
    dataset=dict(filter_cfg=dict(filter_empty_gt=True), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(test_mode=True, pipeline=val_pipeline))
test_dataloader = val_dataloader

# leaf mAP (the paper's number), mAP over all nodes and per-level mAP, VOC07
# 11-point AP averaged over IoU 0.50:0.05:0.95
val_evaluator = dict(type='HierarchicalDOTAMetric')
test_evaluator = val_evaluator

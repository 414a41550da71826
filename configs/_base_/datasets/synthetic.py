# The bundled synthetic hierarchical dataset (generate it with
# `python tools/generate_synthetic_dataset.py`; tools/quickstart.sh does it for you).
_base_ = ['./synthetic_label_tree.py']

dataset_type = 'HierarchicalDOTADataset'
data_root = 'data/synthetic/'
img_scale = (256, 256)
backend_args = None
# Whole-scene inference (demo/scene_demo.py, bhcl.apis.infer_scene): windows of
# the training image size, overlapping by more than the longest object (64 px).
scene_split = dict(patch_size=256, patch_overlap=80)

train_pipeline = [
    dict(type='mmdet.LoadImageFromFile', backend_args=backend_args),
    dict(type='mmdet.LoadAnnotations', with_bbox=True, box_type='qbox'),
    dict(type='ConvertBoxType', box_type_mapping=dict(gt_bboxes='rbox')),
    dict(type='mmdet.Resize', scale=img_scale, keep_ratio=True),
    dict(type='mmdet.RandomFlip', prob=0.75, direction=['horizontal', 'vertical', 'diagonal']),
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

train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    # augmentation streams seeded from (seed, epoch, rank, worker): exact resume
    worker_init_fn=dict(type='epoch_worker_init'),
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=None,
    dataset=dict(
        type=dataset_type,
        label_tree={{_base_.label_tree}},
        data_root=data_root,
        ann_file='train/labelTxt/',
        data_prefix=dict(img_path='train/images/'),
        filter_cfg=dict(filter_empty_gt=True),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        label_tree={{_base_.label_tree}},
        data_root=data_root,
        ann_file='val/labelTxt/',
        data_prefix=dict(img_path='val/images/'),
        test_mode=True,
        pipeline=val_pipeline))
test_dataloader = val_dataloader

# leaf mAP (AP50:95, the paper's number), all-node mAP and per-level mAP
val_evaluator = dict(type='HierarchicalDOTAMetric')
test_evaluator = val_evaluator

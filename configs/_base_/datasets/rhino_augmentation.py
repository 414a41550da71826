# RHINO's own training pipeline (its configs/_base_/datasets/dota.py): keep-ratio
# resize to 1024 and random flips, no random shift (the BHCL paper's OrientedFormer
# recipe adds a 32 px shift). The RHINO configs use it, with images without objects
# kept (filter_empty_gt=False) as RHINO's configs:
#   train_dataloader = dict(dataset=dict(filter_cfg=dict(filter_empty_gt=False),
#                                        pipeline={{_base_.rhino_train_pipeline}}))
rhino_train_pipeline = [
    dict(type='mmdet.LoadImageFromFile', backend_args=None),
    dict(type='mmdet.LoadAnnotations', with_bbox=True, box_type='qbox'),
    dict(type='ConvertBoxType', box_type_mapping=dict(gt_bboxes='rbox')),
    dict(type='mmdet.Resize', scale=(1024, 1024), keep_ratio=True),
    dict(type='mmdet.RandomFlip', prob=0.75, direction=['horizontal', 'vertical', 'diagonal']),
    dict(type='mmdet.PackDetInputs')
]

# OrientedFormer-style query detector (baseline: one query branch per decoder stage).
# The algorithm config supplies `label_tree` (from the dataset config) and the
# number of queries / stages; num_classes comes from the tree.
model = dict(
    type='OrientedQueryDETR',
    data_preprocessor=dict(
        type='mmdet.DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=64,
        boxtype2tensor=False),
    backbone=dict(
        type='mmdet.ResNet',
        depth=50,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=False),
        norm_eval=True,
        style='pytorch',
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50')),
    neck=dict(
        type='mmdet.ChannelMapper',
        in_channels=[256, 512, 1024, 2048],
        kernel_size=1,
        out_channels=256,
        act_cfg=None,
        norm_cfg=dict(type='GN', num_groups=32),
        num_outs=5),
    query_head=dict(
        type='RotatedQuerySelectionHead',
        num_queries=300,
        strides=(4, 8, 16, 32, 64),
        base_scale=4.0,
        pre_nms=1000,
        nms_iou=0.7,
        loss_cls=dict(type='mmdet.QualityFocalLoss', use_sigmoid=True, beta=2.0,
                      loss_weight=1.0),
        loss_iou=dict(type='RotatedIoULossWithFallback', loss_weight=2.0),
        assigner=dict(
            type='TopkHungarianRotatedAssigner',
            topk=4,
            match_costs=[
                dict(type='mmdet.FocalLossCost', weight=2.0),
                dict(type='RotatedBBoxL1Cost', weight=2.0),
                dict(type='RotatedIoUCostWithFallback', weight=5.0),
            ])),
    decoder=dict(
        num_layers=2,
        layer_cfg=dict(type='QueryDecoderLayer', embed_dims=256, num_heads=8, num_points=16,
                       strides=(4, 8, 16, 32, 64), ffn_channels=2048, dropout=0.0)),
    assigner=dict(
        type='TopkHungarianRotatedAssigner',
        topk=1,
        match_costs=[
            dict(type='mmdet.FocalLossCost', weight=2.0),
            dict(type='RotatedBBoxL1Cost', weight=2.0),
            dict(type='RotatedIoUCostWithFallback', weight=5.0),
        ]),
    loss_cls=dict(type='mmdet.FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                  loss_weight=2.0),
    loss_bbox=dict(type='mmdet.L1Loss', loss_weight=2.0),
    loss_iou=dict(type='RotatedIoULossWithFallback', loss_weight=5.0),
    test_cfg=dict(max_per_img=300))

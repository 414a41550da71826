# OrientedFormer as published (the BHCL paper's baseline): ResNet-50, channel
# mapper + GroupNorm to 5 levels of 256, DDQ-style distinct-query head (300
# queries), 2 decoder stages (self-attention with Gaussian box encoding and
# Wasserstein bias; oriented sampling attention 64 heads x 32 points; FFN 2048).
# The algorithm config supplies `label_tree` (from the dataset config); num_classes
# comes from the tree. Every value here is the published configs' value.
model = dict(
    type='OrientedQueryDETR',
    data_preprocessor=dict(
        type='mmdet.DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=32,
        boxtype2tensor=False),
    backbone=dict(
        type='mmdet.ResNet',
        depth=50,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=True,
        style='pytorch',
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50')),
    neck=dict(
        type='ChannelMapperGN',
        in_channels=[256, 512, 1024, 2048],
        kernel_size=1,
        out_channels=256,
        num_groups=32,
        num_outs=5),
    strides=(4, 8, 16, 32, 64),
    query_head=dict(
        type='DistinctQueryHead',
        feat_channels=256,
        num_queries=300,
        stacked_convs=4,
        shuffle_channels=64,
        norm_cfg=dict(type='GN', num_groups=32, requires_grad=True),
        pre_nms=1000,
        nms_iou=0.7),  # main_loss / aux_loss: the published defaults of DistinctQueryHead
    decoder=dict(
        num_layers=2,
        layer_cfg=dict(type='QueryDecoderLayer', embed_dims=256, num_heads=8,
                       attn_cfg=dict(num_heads=64, num_points=32, reduction=4),
                       ffn_channels=2048, dropout=0.0)),
    num_cls_fcs=1,
    num_reg_fcs=1,
    assigner=dict(
        type='TopkHungarianRotatedAssigner',
        topk=1,
        match_costs=[
            dict(type='mmdet.FocalLossCost', weight=2.0),
            dict(type='RotatedBBoxL1Cost', weight=2.0, angle_version='le90'),
            dict(type='RotatedIoUCostWithFallback', weight=5.0),
        ]),
    loss_cls=dict(type='mmdet.FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                  loss_weight=2.0),
    loss_bbox=dict(type='mmdet.L1Loss', loss_weight=2.0),
    loss_iou=dict(type='RotatedIoULossWithFallback', mode='linear', loss_weight=5.0),
    l1_angle_version='le90',
    test_cfg=dict(max_per_img=300))

# RHINO as published (rotated DINO): ResNet-50 at strides 8/16/32, channel mapper
# with GroupNorm to 4 levels of 256; 6 deformable encoder and 6 decoder layers
# (FFN 2048, 8 heads, 4 levels x 4 points); 900 queries from two-stage selection,
# iterative refinement of (cx, cy, w, h, t/pi), long edge first, t in [0, pi);
# contrastive denoising with rotated boxes (label noise 0.5, box noise 1.0, angle
# not noised, 100 DN queries in uncapped dynamic groups: RHINO's max_num_groups=30
# sits in group_cfg, where it is never read); positive denoising queries matched
# jointly with the matching queries ("PHC"); matching focal 2 + corner Hausdorff 5
# + Gaussian KLD 5; losses focal 1, L1 5, KLD 5 (log1p, tau 1, no square root);
# top 500 (query, class) pairs at test time, no NMS. This is RHINO's
# rhino_phc_haus-4scale_r50_2xb2-36e_dota model (tests/test_models/test_rhino_oracle.py).
# The algorithm config supplies `label_tree`; the number of classes comes from the tree.
model = dict(
    type='RHINO',
    num_queries=900,
    with_box_refine=True,
    as_two_stage=True,
    num_feature_levels=4,
    data_preprocessor=dict(
        type='mmdet.DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=1,
        boxtype2tensor=False),
    backbone=dict(
        type='mmdet.ResNet',
        depth=50,
        num_stages=4,
        out_indices=(1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=False),
        norm_eval=True,
        style='pytorch',
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50')),
    neck=dict(
        type='mmdet.ChannelMapper',
        in_channels=[512, 1024, 2048],
        kernel_size=1,
        out_channels=256,
        act_cfg=None,
        norm_cfg=dict(type='GN', num_groups=32),
        num_outs=4),
    encoder=dict(
        num_layers=6,
        layer_cfg=dict(
            self_attn_cfg=dict(embed_dims=256, num_levels=4, dropout=0.0),
            ffn_cfg=dict(embed_dims=256, feedforward_channels=2048, ffn_drop=0.0))),
    decoder=dict(
        num_layers=6,
        return_intermediate=True,
        layer_cfg=dict(
            type='RotatedDeformableDecoderLayer',  # or DecoupledRotatedDecoderLayer
            self_attn_cfg=dict(embed_dims=256, num_heads=8, dropout=0.0),
            cross_attn_cfg=dict(embed_dims=256, num_levels=4, dropout=0.0),
            ffn_cfg=dict(embed_dims=256, feedforward_channels=2048, ffn_drop=0.0)),
        post_norm_cfg=None),
    positional_encoding=dict(num_feats=128, normalize=True, offset=0.0, temperature=20),
    bbox_head=dict(
        type='RotatedDINOHead',
        embed_dims=256,
        sync_cls_avg_factor=True,
        # the paper's variant: positive denoising queries matched jointly with the
        # matching queries, per group (RotatedDINOHead.joint_dn_class_targets)
        dn_joint_matching=True,
        loss_cls=dict(type='mmdet.FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                      loss_weight=1.0),
        loss_bbox=dict(type='mmdet.L1Loss', loss_weight=5.0),
        loss_iou=dict(type='GDLoss', loss_type='kld', fun='log1p', tau=1.0, sqrt=False,
                      loss_weight=5.0)),
    dn_cfg=dict(
        label_noise_scale=0.5,
        box_noise_scale=1.0,
        group_cfg=dict(dynamic=True, num_groups=None, num_dn_queries=100)),
    train_cfg=dict(
        assigner=dict(
            type='mmdet.HungarianAssigner',
            match_costs=[
                dict(type='mmdet.FocalLossCost', weight=2.0),
                dict(type='HausdorffCornerCost', weight=5.0),
                dict(type='GaussianKLDCost', fun='log1p', tau=1.0, sqrt=False, weight=5.0)
            ])),
    test_cfg=dict(max_per_img=500))

# CPU-sized OrientedFormer baseline on the synthetic dataset: the published
# modules at a small width (ResNet-18 from scratch, 64 channels, 30 queries,
# 2 decoder stages, oriented attention 8 heads x 8 points).
_base_ = [
    '../_base_/models/orientedformer_r50_chmapper.py',
    '../_base_/datasets/synthetic.py',
    '../_base_/schedules/schedule_synthetic_12e.py',
]
custom_imports = dict(imports=['bhcl'], allow_failed_imports=False)

model = dict(
    label_tree={{_base_.label_tree}},
    backbone=dict(depth=18, frozen_stages=-1, norm_cfg=dict(type='BN', requires_grad=True),
                  norm_eval=False, init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=64, num_groups=16),
    query_head=dict(feat_channels=64, num_queries=30, shuffle_channels=16, pre_nms=200,
                    norm_cfg=dict(type='GN', num_groups=16, requires_grad=True)),
    decoder=dict(num_layers=2,
                 layer_cfg=dict(embed_dims=64, num_heads=4, ffn_channels=128,
                                attn_cfg=dict(num_heads=8, num_points=8, reduction=4))),
    test_cfg=dict(max_per_img=100))

custom_hooks = [dict(type='EpochSeedHook'), dict(type='mmdet.SetEpochInfoHook')]

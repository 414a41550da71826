# CPU-sized RHINO baseline on the synthetic dataset: the published modules at a
# small width (ResNet-18 from scratch at strides 8/16/32, 4 levels of 64 channels,
# 2 encoder and 2 decoder layers, 8 heads, FFN 128, 30 queries, 20 denoising
# queries).
_base_ = [
    '../_base_/models/rhino_r50.py',
    '../_base_/datasets/synthetic.py',
    '../_base_/schedules/schedule_synthetic_12e.py',
]
custom_imports = dict(imports=['bhcl'], allow_failed_imports=False)

attn = dict(embed_dims=64, num_heads=8, dropout=0.0)
ffn = dict(embed_dims=64, feedforward_channels=128, ffn_drop=0.0)
model = dict(
    label_tree={{_base_.label_tree}},
    num_queries=30,
    backbone=dict(depth=18, frozen_stages=-1, norm_cfg=dict(type='BN', requires_grad=True),
                  norm_eval=False, init_cfg=None),
    neck=dict(in_channels=[128, 256, 512], out_channels=64, norm_cfg=dict(type='GN',
                                                                          num_groups=16)),
    encoder=dict(num_layers=2, layer_cfg=dict(self_attn_cfg=dict(attn, num_levels=4),
                                              ffn_cfg=ffn)),
    decoder=dict(num_layers=2, layer_cfg=dict(self_attn_cfg=attn,
                                              cross_attn_cfg=dict(attn, num_levels=4),
                                              ffn_cfg=ffn)),
    positional_encoding=dict(num_feats=32),
    bbox_head=dict(embed_dims=64),
    dn_cfg=dict(group_cfg=dict(num_dn_queries=20)),
    test_cfg=dict(max_per_img=100))

# no contrastive loss to warm up: only the exact-resume hook
custom_hooks = [dict(type='EpochSeedHook')]

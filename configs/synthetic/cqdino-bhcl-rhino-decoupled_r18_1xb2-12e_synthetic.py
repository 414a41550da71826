# BHCL on the decoupled CPU-sized RHINO with CQ-DINO as its authors built it: the
# asymmetric, ancestor-masked presence loss; each image's top 8 of the 16 nodes
# (no annotated node forced in) fused with the image tokens before each of the 2
# encoder layers, ranking the encoder proposals and attended to by the
# classification half of every decoder layer; the classification losses count the
# selected nodes only.
_base_ = ['./bhcl-rhino-decoupled_r18_1xb2-12e_synthetic.py']

model = dict(
    decoder=dict(layer_cfg=dict(category_attn=dict(num_heads=4))),
    classifier=dict(type='CQDINOClassifier', relation='tree', topk=8, keep_gt=False,
                    num_heads=4, feat_level=-2, num_fusion_layers=2,
                    fusion=dict(embed_dims=128, num_heads=4, dropout=0.1, init_values=1e-4),
                    loss_presence=dict(type='AsymmetricPresenceLoss')))

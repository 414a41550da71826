# BHCL on the decoupled RHINO with CQ-DINO as its authors built it (Sun et al., 2025),
# on the nodes of ShipRSImageNet's tree: the asymmetric presence loss with the ancestor
# mask, each image's top 25 nodes (annotated ones not forced in, as the authors)
# fused with the image tokens before each of the 6 encoder layers, ranking the
# encoder proposals and attended to by the classification half of every decoder
# layer; every classification loss counts the selected nodes only. top-K as the
# cq-bhcl config beside this one; see docs/method.md.
_base_ = ['./bhcl-rhino-decoupled_r50_4xb2-36e_shiprs.py']

model = dict(
    decoder=dict(layer_cfg=dict(category_attn=dict(num_heads=8))),
    classifier=dict(type='CQDINOClassifier', relation='tree', topk=25, keep_gt=False,
                    num_heads=8, feat_level=-2, num_fusion_layers=6,
                    fusion=dict(embed_dims=1024, num_heads=4, dropout=0.1, init_values=1e-4),
                    loss_presence=dict(type='AsymmetricPresenceLoss')))

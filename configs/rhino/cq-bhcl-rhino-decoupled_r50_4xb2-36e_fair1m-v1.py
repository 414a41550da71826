# BHCL on the decoupled RHINO with the category-query classifier (CQ-DINO style)
# in place of the decoder layers' linear classifiers: one learnable query per
# node (nodes of FAIR1M v1.0), updated bottom-up along the tree; each image keeps
# its top 20 nodes (and, in training, its annotated ones), as the OrientedFormer
# counterpart (configs/bhcl/cq-bhcl-*). The encoder proposals keep a linear scorer.
_base_ = ['./bhcl-rhino-decoupled_r50_4xb2-36e_fair1m-v1.py']

model = dict(
    classifier=dict(type='CategoryQueries', relation='tree', topk=20, keep_gt=True,
                    num_heads=8, feat_level=-2, loss_weight=1.0))

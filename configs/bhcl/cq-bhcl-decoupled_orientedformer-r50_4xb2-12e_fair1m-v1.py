# The full BHCL model with category-query classification (CQ-DINO style) in
# place of the linear classifier: one learnable query per node of FAIR1M v1.0's tree,
# updated bottom-up along the tree; each image keeps its top 20 nodes (and, in
# training, its annotated ones). Not in the BHCL paper: top-K is our choice
# (about half the tree); see docs/method.md.
_base_ = ['./bhcl-decoupled_orientedformer-r50_4xb2-12e_fair1m-v1.py']

model = dict(
    classifier=dict(type='CategoryQueries', relation='tree', topk=20, keep_gt=True,
                    num_heads=8, feat_level=-2, loss_weight=1.0))

# The full BHCL model with category-query classification (CQ-DINO style) in
# place of the linear classifier: one learnable query per node of ShipRSImageNet's 49 nodes,
# updated bottom-up along the tree; each image keeps its top 25 nodes (and, in
# training, its annotated ones). Not in the BHCL paper: top-K is our choice
# (about half the tree); see docs/method.md.
_base_ = ['./bhcl-decoupled_orientedformer-r50_4xb2-72e_shiprs.py']

model = dict(
    classifier=dict(type='CategoryQueries', relation='tree', topk=25, keep_gt=True,
                    num_heads=8, feat_level=-2, loss_weight=1.0))

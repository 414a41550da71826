# BHCL on the decoupled synthetic model with category-query classification
# (CQ-DINO style): the 16 tree nodes are learnable queries updated bottom-up
# along the tree; each image keeps its top 8 (and, in training, its annotated
# nodes); object queries are classified by matching with them.
_base_ = ['./bhcl-decoupled_orientedformer-r18_1xb2-12e_synthetic.py']

model = dict(
    classifier=dict(type='CategoryQueries', relation='tree', topk=8, keep_gt=True,
                    num_heads=4, feat_level=-2, loss_weight=1.0))

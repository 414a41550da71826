# BHCL on the decoupled CPU-sized RHINO with the category-query classifier: the
# 16 nodes' queries updated along the tree, the top 8 per image kept (and the
# annotated ones in training).
_base_ = ['./bhcl-rhino-decoupled_r18_1xb2-12e_synthetic.py']

model = dict(
    classifier=dict(type='CategoryQueries', relation='tree', topk=8, keep_gt=True,
                    num_heads=4, feat_level=-2, loss_weight=1.0))

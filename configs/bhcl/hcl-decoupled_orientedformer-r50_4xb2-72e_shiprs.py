# + decoupling + HCL: hierarchical contrastive loss (weight 0.6, levels 1-3) on
# the class queries matched at every decoder stage. One view per image, as the
# published code trains, and as there a class met once at a level is left out
# of that level's plain-form denominators (see configs/benchmarks/README.md).
_base_ = ['../orientedformer/orientedformer-decoupled_r50_4xb2-72e_shiprs.py']

model = dict(
    loss_hcl=dict(type='HierarchicalContrastiveLoss', in_channels=256, hidden_channels=512,
                  out_channels=128, temperature=0.1, start_level=1, loss_weight=0.6,
                  singleton_negatives=False))

# + decoupling + HCL on FAIR1M v1: the published configs declare 4 levels for
# FAIR1M's 2-level tree, so the one level used (1) weighs exp(1/3) / (exp(1/3) +
# exp(1/2) + exp(1)) = 0.2422 of the loss weight 0.6; reproduced here.
_base_ = ['../orientedformer/orientedformer-decoupled_r50_4xb2-12e_fair1m-v1.py']

model = dict(
    loss_hcl=dict(type='HierarchicalContrastiveLoss', in_channels=256, hidden_channels=512,
                  out_channels=128, temperature=0.1, start_level=1,
                  level_weights=[0.2421838519703906], loss_weight=0.6,
                  singleton_negatives=False))

# + decoupling + HCL on RHINO (fair1m-v1): the hierarchical contrastive loss of the
# OrientedFormer column, same settings (configs/bhcl/hcl-decoupled_orientedformer-
# r50_4xb2-12e_fair1m-v1.py), on the matched classification queries of every decoder
# layer, denoising queries excluded; one view per image, as there.
_base_ = ['./rhino-decoupled_r50_4xb2-36e_fair1m-v1.py']

model = dict(
    loss_hcl=dict(type='HierarchicalContrastiveLoss', in_channels=256, hidden_channels=512,
                  out_channels=128, temperature=0.1, start_level=1,
                  level_weights=[0.2421838519703906], loss_weight=0.6,
                  singleton_negatives=False))
# the loss's warm-up follows the epoch
custom_hooks = [dict(type='EpochSeedHook'), dict(type='mmdet.SetEpochInfoHook')]

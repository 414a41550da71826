# HCL on the decoupled CPU-sized RHINO: hierarchical contrastive loss (weight 0.6)
# on the matched classification queries of every decoder layer (denoising queries
# excluded), two views of each image (2 images x 2 views = 4, as the 1xb4 rows).
_base_ = ['./rhino-decoupled_r18_1xb4-12e_synthetic.py']

model = dict(
    loss_hcl=dict(type='HierarchicalContrastiveLoss', in_channels=64, hidden_channels=128,
                  out_channels=32, temperature=0.1, loss_weight=0.6))

train_dataloader = dict(
    batch_size=2,
    collate_fn=dict(type='multiview_collate'),
    dataset=dict(_delete_=True, type='MultiViewDataset', num_views=2,
                 dataset={{_base_.train_dataloader.dataset}}))
custom_hooks = [dict(type='EpochSeedHook'), dict(type='mmdet.SetEpochInfoHook')]

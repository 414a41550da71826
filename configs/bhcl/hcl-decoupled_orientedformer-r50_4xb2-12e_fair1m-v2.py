# + decoupling + HCL: hierarchical contrastive loss (weight 0.6) on the class
# queries matched at every decoder stage; two views of each image
# (2 images x 2 views per GPU).
_base_ = ['../orientedformer/orientedformer-decoupled_r50_4xb2-12e_fair1m-v2.py']

model = dict(
    loss_hcl=dict(type='HierarchicalContrastiveLoss', in_channels=256, hidden_channels=512,
                  out_channels=128, temperature=0.1, loss_weight=0.6))

train_dataloader = dict(
    collate_fn=dict(type='multiview_collate'),
    dataset=dict(_delete_=True, type='MultiViewDataset', num_views=2,
                 dataset={{_base_.train_dataloader.dataset}}))

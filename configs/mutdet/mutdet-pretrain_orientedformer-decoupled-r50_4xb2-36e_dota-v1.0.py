# The DOTA pre-training with MutDet's own schedule (its released pre-training config):
# 36 epochs, AdamW lr 1e-4 and weight decay 1e-5, linear warm-up over 500 iterations from
# 1/3, the learning rate divided by 10 at epoch 32, gradient clipping at 35; 2 images per
# GPU (the GPU count is not given). MutDet resizes the 800 x 800 patches to 1024 x 1024;
# this config keeps 800 (the fine-tuning models' scale).
_base_ = ['./mutdet-pretrain_orientedformer-decoupled-r50_4xb2-12e_dota-v1.0.py']

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=1.0 / 3, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[32],
         gamma=0.1)
]
optim_wrapper = dict(optimizer=dict(lr=1e-4, weight_decay=1e-5),
                     clip_grad=dict(max_norm=35, norm_type=2))

# Published schedule for FAIR1M v1.0 / v2.0: AdamW 1e-4 (the published FAIR1M
# configs; ShipRSImageNet uses 5e-5), weight decay 1e-6, gradient clipping at 1,
# linear warm-up over 1000 iterations from 1/3, 12 epochs with the learning rate
# divided by 10 at 8 and 11.
_base_ = ['./schedule_adamw_72e.py']

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs, val_interval=12)
param_scheduler = [
    dict(type='LinearLR', start_factor=1.0 / 3, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11],
         gamma=0.1)
]
optim_wrapper = dict(optimizer=dict(lr=1e-4))

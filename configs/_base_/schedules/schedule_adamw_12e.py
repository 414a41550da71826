# Paper schedule for FAIR1M v1.0 / v2.0: the ShipRSImageNet optimiser over 12
# epochs, learning rate divided by 10 at 8 and 11.
_base_ = ['./schedule_adamw_72e.py']

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs, val_interval=12)
param_scheduler = [
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11],
         gamma=0.1)
]

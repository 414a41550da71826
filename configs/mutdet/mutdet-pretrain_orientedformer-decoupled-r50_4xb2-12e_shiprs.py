# As the DOTA-v1.0 pre-training (800 px input), on the ShipRSImageNet training
# images without their labels (pseudo-labels made by the same tools,
# docs/pretraining.md).
_base_ = ['./mutdet-pretrain_orientedformer-decoupled-r50_4xb2-12e_dota-v1.0.py']
train_dataloader = dict(dataset=dict(
    data_root='data/ShipRSImageNet_V1_DOTA_format/',
    data_prefix=dict(img_path='train/images/', pseudo_path='train/pseudo_labels/')))

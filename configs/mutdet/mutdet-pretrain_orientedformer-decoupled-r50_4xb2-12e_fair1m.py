# As the DOTA-v1.0 pre-training (800 px input), on the FAIR1M v1.0 training
# patches (tools/dataset_converters/split_images.py) without their labels.
_base_ = ['./mutdet-pretrain_orientedformer-decoupled-r50_4xb2-12e_dota-v1.0.py']
train_dataloader = dict(dataset=dict(
    data_root='data/FAIR1M_V1_split/',
    data_prefix=dict(img_path='train/images/', pseudo_path='train/pseudo_labels/')))

# FAIR1M v2.0 cut into 1024 px patches with 200 px overlap, as fair1m_v1.py:
# trainval/ (train + validation, for the final model), val/ (the validation
# set, for monitoring only: it is part of trainval) and test/ (no labels).
_base_ = ['./fair1m_v1.py']

dataset_type = 'FAIR1Mv2Dataset'
data_root = 'data/FAIR1M_V2_split/'

train_dataloader = dict(
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='trainval/labelTxt/',
                 data_prefix=dict(img_path='trainval/images/')))
val_dataloader = dict(dataset=dict(type=dataset_type, data_root=data_root))
test_dataloader = dict(dataset=dict(type=dataset_type, data_root=data_root))

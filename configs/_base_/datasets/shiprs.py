# ShipRSImageNet v1.0 in BHCL's DOTA-format conversion: train/ and val/ with
# images/*.bmp and labelTxt/*.txt (class names with spaces). Make it from the
# official release with tools/dataset_converters/shiprs_voc_to_dota.py, see
# docs/data_preparation.md. As in the paper, the labelled val split is used for
# validation and test.
_base_ = ['./rotated_1024.py', './shiprs_label_tree.py']

dataset_type = 'ShipRSImageNetDataset'
data_root = 'data/ShipRSImageNet_V1_DOTA_format/'

train_dataloader = dict(
    dataset=dict(type=dataset_type, label_tree={{_base_.label_tree}}, data_root=data_root,
                 ann_file='train/labelTxt/', data_prefix=dict(img_path='train/images/')))
val_dataloader = dict(
    dataset=dict(type=dataset_type, label_tree={{_base_.label_tree}}, data_root=data_root,
                 ann_file='val/labelTxt/', data_prefix=dict(img_path='val/images/')))
test_dataloader = val_dataloader

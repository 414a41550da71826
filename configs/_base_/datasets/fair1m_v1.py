# FAIR1M v1.0 cut into 1024 px patches with 200 px overlap (.tif images, DOTA
# labelTxt with class names with spaces), made with
# tools/dataset_converters/fair1m_xml_to_dota.py and split_images.py, see
# docs/data_preparation.md. As in BHCL, val/ is the FAIR1M v2.0 validation set
# (v1.0 has none). test/ has no labels: only the FAIR1M server evaluates it.
_base_ = ['./rotated_1024.py', './fair1m_label_tree.py']

dataset_type = 'FAIR1MDataset'
data_root = 'data/FAIR1M_V1_split/'

train_dataloader = dict(
    dataset=dict(type=dataset_type, label_tree={{_base_.label_tree}}, data_root=data_root,
                 ann_file='train/labelTxt/', data_prefix=dict(img_path='train/images/')))
val_dataloader = dict(
    dataset=dict(type=dataset_type, label_tree={{_base_.label_tree}}, data_root=data_root,
                 ann_file='val/labelTxt/', data_prefix=dict(img_path='val/images/')))
test_dataloader = dict(
    dataset=dict(type=dataset_type, label_tree={{_base_.label_tree}}, data_root=data_root,
                 ann_file='', data_prefix=dict(img_path='test/images/'),
                 pipeline={{_base_.test_pipeline}}))

# No labels on test: `tools/test.py CONFIG CKPT --out preds.pkl` dumps the patch
# predictions; tools/dataset_converters/export_predictions.py --merge-patches
# --format fair1m merges them and writes the submission.
test_evaluator = []

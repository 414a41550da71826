# ShipRSImageNet read directly from the official VOC release (v1.0 or v1.1):
# VOC_Format/{JPEGImages/*.bmp, Annotations/*.xml, ImageSets/{train,val,test}.txt}.
# Same pipelines and evaluation as shiprs.py; the XML level_0..level_3 indices
# are checked against each object's class (mismatches are counted and logged).
_base_ = ['./shiprs.py', './shiprs_official_levels.py']

data_root = 'data/ShipRSImageNet/VOC_Format/'
voc_dataset = dict(
    data_root=data_root,
    data_prefix=dict(img_path='JPEGImages/', xml_path='Annotations/'),
    level_names={{_base_.shiprs_level_names}})

train_dataloader = dict(dataset=dict(ann_file='ImageSets/train.txt', **voc_dataset))
val_dataloader = dict(dataset=dict(ann_file='ImageSets/val.txt', **voc_dataset))
test_dataloader = val_dataloader

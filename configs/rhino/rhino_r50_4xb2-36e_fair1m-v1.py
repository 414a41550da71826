# RHINO baseline (rotated DINO, ResNet-50, 900 queries, 6 + 6 layers) on fair1m-v1,
# 4 GPUs x 2 images, RHINO's own 36-epoch recipe (the BHCL paper gives no RHINO
# schedule for this dataset: configs/benchmarks/README.md).
_base_ = [
    '../_base_/models/rhino_r50.py',
    '../_base_/datasets/fair1m_v1.py',
    '../_base_/datasets/rhino_augmentation.py',
    '../_base_/schedules/schedule_rhino_36e.py',
    '../_base_/default_runtime.py',
]
custom_imports = dict(imports=['bhcl'], allow_failed_imports=False)

model = dict(label_tree={{_base_.label_tree}})
# RHINO's own training data: no random shift, images without objects kept
train_dataloader = dict(batch_size=2, dataset=dict(filter_cfg=dict(filter_empty_gt=False),
                                                   pipeline={{_base_.rhino_train_pipeline}}))

# OrientedFormer-style baseline (ResNet-50, 300 queries, 2 decoder stages),
# 4 GPUs x 2 images, 72 epochs on shiprs.
_base_ = [
    '../_base_/models/orientedformer_r50_chmapper.py',
    '../_base_/datasets/shiprs.py',
    '../_base_/schedules/schedule_adamw_72e.py',
    '../_base_/default_runtime.py',
]
custom_imports = dict(imports=['bhcl'], allow_failed_imports=False)

model = dict(label_tree={{_base_.label_tree}})
train_dataloader = dict(batch_size=2)

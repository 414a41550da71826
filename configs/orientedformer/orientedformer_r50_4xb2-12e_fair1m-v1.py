# OrientedFormer-style baseline (ResNet-50, 300 queries, 2 decoder stages),
# 4 GPUs x 2 images, 12 epochs on fair1m-v1.
_base_ = [
    '../_base_/models/orientedformer_r50_chmapper.py',
    '../_base_/datasets/fair1m_v1.py',
    '../_base_/schedules/schedule_adamw_12e.py',
    '../_base_/default_runtime.py',
]
custom_imports = dict(imports=['bhcl'], allow_failed_imports=False)

model = dict(label_tree={{_base_.label_tree}})
train_dataloader = dict(batch_size=2)

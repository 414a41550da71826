# MutDet-style pre-training of the decoupled OrientedFormer (R50, 300 queries, 2
# decoder stages: the fine-tuning model of configs/bhcl/*, checked by the
# converter) on unlabelled DOTA-v1.0 train images cut into 800 x 800 patches with
# stride 600, with k = 256 pseudo-classes. Preparing the pseudo-labels and the
# whole chain: docs/pretraining.md. MutDet freezes the ImageNet backbone.
#
# Schedule: the fine-tuning models' 12-epoch AdamW recipe (lr 1e-4, steps at 8 and 11).
# MutDet's released config pre-trains 36 epochs: the -36e_ config next to this one.
_base_ = ['../orientedformer/orientedformer-decoupled_r50_4xb2-12e_fair1m-v1.py']
num_pseudo_classes = 256  # the k of tools/pretraining/cluster_embeddings.py

model = dict(
    type='MutDetPretrainer',
    label_tree=dict(_delete_=True,
                    paths=[[f'cluster_{i:03d}'] for i in range(num_pseudo_classes)]),
    # MutDet's published sizes are MutDetPretrainer's defaults: 256-d object embeddings,
    # 3 enhancement blocks (8 heads, MLP 2048), embedding heads 256-256-256 and
    # 256-1024-256, InfoNCE at temperature 0.2 weighted 0.4 (2 tau) per direction, enhanced-pass
    # queries chosen by similarity x objectness, frozen backbone
    object_channels=256)

img_scale = (800, 800)
train_pipeline = [
    dict(type='mmdet.LoadImageFromFile'),
    dict(type='LoadPseudoLabels'),
    dict(type='mmdet.Resize', scale=img_scale, keep_ratio=True),
    dict(type='mmdet.RandomFlip', prob=0.75, direction=['horizontal', 'vertical', 'diagonal']),
    dict(type='FilterPseudoLabels', min_size=2.0),
    dict(type='PackPseudoLabelInputs')
]
train_dataloader = dict(
    batch_size=2,
    dataset=dict(
        _delete_=True,
        type='PseudoLabelDataset',
        num_classes=num_pseudo_classes,
        data_root='data/DOTA_v1.0_pretrain/',
        data_prefix=dict(img_path='images/', pseudo_path='pseudo_labels/'),
        pipeline=train_pipeline))
val_dataloader = val_cfg = val_evaluator = None
test_dataloader = test_cfg = test_evaluator = None
train_cfg = dict(val_interval=10 ** 6)

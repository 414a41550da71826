# MutDet-style pre-training of the decoupled OrientedFormer (R50, 300 queries, 2
# decoder stages: the fine-tuning model of configs/bhcl/*, checked by the
# converter) on unlabelled DOTA-v1.0 train images cut into 800 x 800 patches with
# stride 600, with k = 256 pseudo-classes. Preparing the pseudo-labels and the
# whole chain: docs/pretraining.md. MutDet freezes the ImageNet backbone.
#
# MutDet gives no pre-training schedule in the paper: this is the fine-tuning
# models' 12-epoch AdamW recipe (lr 1e-4, steps at 8 and 11).
_base_ = ['../orientedformer/orientedformer-decoupled_r50_4xb2-12e_fair1m-v1.py']
num_pseudo_classes = 256  # the k of tools/pretraining/cluster_embeddings.py

model = dict(
    type='MutDetPretrainer',
    label_tree=dict(_delete_=True,
                    paths=[[f'cluster_{i:03d}'] for i in range(num_pseudo_classes)]),
    object_channels=256,  # PCA dimension of the cluster file
    enhancement=dict(type='MutualEnhancement', num_blocks=3, num_heads=8, ffn_channels=2048),
    query_embed_head=dict(type='EmbeddingHead', hidden_channels=256),
    token_embed_head=dict(type='EmbeddingHead', hidden_channels=1024),
    loss_align=dict(type='ContrastiveAlignmentLoss', temperature=0.2, loss_weight=0.2),
    freeze_backbone=True)

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

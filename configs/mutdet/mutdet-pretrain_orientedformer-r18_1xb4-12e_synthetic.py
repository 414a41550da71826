# MutDet-style pre-training of the decoupled synthetic OrientedFormer (R18, 64 ch.) on
# the synthetic training images without their labels: pseudo-boxes, k-means
# pseudo-classes and object embeddings from tools/pretraining/ (the whole chain:
# docs/pretraining.md). Decoder depth, query count and width equal those of the
# fine-tuning configs (configs/synthetic/*), which the converter checks.
_base_ = [
    '../synthetic/orientedformer-decoupled_r18_1xb4-12e_synthetic.py',
]
num_pseudo_classes = 16  # the k of tools/pretraining/cluster_embeddings.py
pseudo_tree = dict(paths=[[f'cluster_{i:03d}'] for i in range(num_pseudo_classes)])

model = dict(
    type='MutDetPretrainer',
    label_tree=pseudo_tree,
    object_channels=256,  # PCA dimension of the cluster file
    # width 64: 8 heads of 8 channels, object MLP 256 (MutDet at width 256: 2048)
    enhancement=dict(type='MutualEnhancement', num_blocks=3, num_heads=8, ffn_channels=256),
    query_embed_head=dict(type='EmbeddingHead', hidden_channels=64),
    token_embed_head=dict(type='EmbeddingHead', hidden_channels=256),
    loss_align=dict(type='ContrastiveAlignmentLoss', temperature=0.2, loss_weight=0.4),
    # no ImageNet weights offline: the synthetic backbone is trained from scratch here;
    # with a pre-trained backbone (e.g. SimCLR, docs/tools.md) set True, as MutDet does
    freeze_backbone=False)

img_scale = (128, 128)
train_pipeline = [
    dict(type='mmdet.LoadImageFromFile'),
    dict(type='LoadPseudoLabels'),
    dict(type='mmdet.Resize', scale=img_scale, keep_ratio=True),
    dict(type='mmdet.RandomFlip', prob=0.75, direction=['horizontal', 'vertical', 'diagonal']),
    dict(type='FilterPseudoLabels', min_size=2.0),
    dict(type='PackPseudoLabelInputs')
]
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='PseudoLabelDataset',
        num_classes=num_pseudo_classes,
        data_root='data/synthetic/',
        data_prefix=dict(img_path='train/images/', pseudo_path='pseudo_labels/train/'),
        pipeline=train_pipeline))
# pre-training has no labelled validation
val_dataloader = val_cfg = val_evaluator = None
test_dataloader = test_cfg = test_evaluator = None
train_cfg = dict(val_interval=10 ** 6)

"""The warm-up epoch comes from mmdet's SetEpochInfoHook and is right after resume."""
import os.path as osp

import torch
from torch import nn

from .hcl_reference import TREE4

LABELS = [6, 6, 7, 8, 9, 1, 3, 3, 0, 2, 7, 4, 6, 8, 9, 7]


def _model():
    from mmengine.model import BaseModel

    from bhcl.models.losses import HierarchicalContrastiveLoss

    class TinyHCLModel(BaseModel):
        """A linear 'backbone' feeding the loss; records what the loss sees."""

        def __init__(self):
            super().__init__()
            self.backbone = nn.Linear(4, 8)
            self.loss_hcl = HierarchicalContrastiveLoss(
                TREE4, in_channels=8, hidden_channels=8, out_channels=4, balance=True,
                prototype_bank=dict(type='EMAPrototypeBank'), warmup_epochs=2)
            self.seen = []
            self.bank_at_start = None

        def set_epoch(self, epoch):
            self.loss_hcl.set_epoch(epoch)

        def forward(self, inputs, labels, mode='tensor'):
            feats = self.backbone(inputs)
            if mode != 'loss':
                return feats
            if self.bank_at_start is None:
                self.bank_at_start = self.loss_hcl.prototype_bank.prototypes.clone()
            self.seen.append((self.loss_hcl.epoch, self.loss_hcl.in_warmup))
            return self.loss_hcl(feats, labels)

    return TinyHCLModel()


def _runner(work_dir, max_epochs, name, resume_from=None):
    from mmengine.runner import Runner
    gen = torch.Generator().manual_seed(0)
    data = [dict(inputs=torch.randn(4, generator=gen), labels=torch.tensor(k)) for k in LABELS * 2]
    return Runner(
        model=_model(),
        work_dir=work_dir,
        experiment_name=name,
        train_dataloader=dict(dataset=data, batch_size=16, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='default_collate')),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        custom_hooks=[dict(type='mmdet.SetEpochInfoHook')],
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1),
                           logger=dict(type='LoggerHook', interval=1)),
        default_scope='mmrotate',
        load_from=resume_from,
        resume=resume_from is not None,
        randomness=dict(seed=0),
        log_level='WARNING')


def test_epoch_and_bank_survive_resume(tmp_path):
    work_dir = str(tmp_path)
    first = _runner(work_dir, max_epochs=2, name='hcl_first')
    first.train()
    # two iterations per epoch; epochs 0-1 are warm-up (warmup_epochs=2)
    assert first.model.seen == [(0, True), (0, True), (1, True), (1, True)]

    ckpt = osp.join(work_dir, 'epoch_1.pth')
    saved = torch.load(ckpt, map_location='cpu', weights_only=False)['state_dict']
    assert saved['loss_hcl.prototype_bank.initialized'].all()

    resumed = _runner(work_dir, max_epochs=4, name='hcl_resumed', resume_from=ckpt)
    resumed.train()
    assert resumed.model.seen == [(1, True), (1, True), (2, False), (2, False),
                                  (3, False), (3, False)]
    torch.testing.assert_close(resumed.model.bank_at_start,
                               saved['loss_hcl.prototype_bank.prototypes'])

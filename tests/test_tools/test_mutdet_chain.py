"""The MutDet pre-training chain of docs/pretraining.md on a tiny synthetic set:
proposals -> embeddings -> clusters -> pre-training (tools/train.py) -> converter ->
fine-tuning config loads the converted weights."""
import os.path as osp
import subprocess
import sys

import pytest
import torch

from tests.conftest import CONFIG_DIR

ROOT = osp.dirname(CONFIG_DIR)
PRETRAIN = osp.join(CONFIG_DIR, 'mutdet', 'mutdet-pretrain_orientedformer-r18_1xb4-12e_synthetic.py')
FINETUNE = osp.join(CONFIG_DIR, 'mutdet',
                    'bhcl-decoupled_orientedformer-r18_1xb2-12e_synthetic_mutdet-init.py')


def run(*args):
    out = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


@pytest.mark.slow
def test_pretraining_chain_end_to_end(tmp_path):
    data = tmp_path / 'data'
    run('tools/generate_synthetic_dataset.py', '--out', str(data), '--preset', 'bench',
        '--num-train', '8', '--num-val', '2')
    run('tools/pretraining/generate_proposals.py', str(data / 'train' / 'images'),
        str(tmp_path / 'proposals'))
    run('tools/pretraining/extract_embeddings.py', '--depth', '18', '--checkpoint', 'none',
        '--out-size', '32', str(data / 'train' / 'images'), str(tmp_path / 'proposals'),
        str(tmp_path / 'embeddings'))
    run('tools/pretraining/cluster_embeddings.py', str(tmp_path / 'embeddings'),
        str(data / 'pseudo_labels' / 'train'), '--model', str(tmp_path / 'clusters.pth'),
        '--fit', '--num-clusters', '16', '--dim', '32')
    work = tmp_path / 'pretrain'
    run('tools/train.py', PRETRAIN, '--work-dir', str(work), '--cfg-options',
        f'train_dataloader.dataset.data_root={data}/', 'train_cfg.max_epochs=1',
        'model.object_channels=32')
    ckpt = torch.load(work / 'epoch_1.pth', map_location='cpu', weights_only=False)
    assert any(k.startswith('enhancement.') for k in ckpt['state_dict'])
    init = tmp_path / 'init.pth'
    report = run('tools/model_converters/mutdet_to_finetune.py', str(work / 'epoch_1.pth'),
                 FINETUNE, str(init))
    assert 'dropped_pretrain_only' in report and 'missing (20)' in report

    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.runner import load_checkpoint
    from mmrotate.registry import MODELS

    import bhcl  # noqa: F401
    init_default_scope('mmrotate')
    model = MODELS.build(Config.fromfile(FINETUNE).model)
    load_checkpoint(model, str(init), map_location='cpu', strict=False)
    neck = {k: v for k, v in ckpt['state_dict'].items() if k.startswith('neck.')}
    assert neck and all(torch.equal(model.state_dict()[k], v) for k, v in neck.items())

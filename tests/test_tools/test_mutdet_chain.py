"""The MutDet pre-training chain of docs/pretraining.md on a tiny synthetic set:
proposals -> embeddings -> clusters -> pre-training (tools/train.py) -> converter ->
fine-tuning config loads the converted weights."""
import pytest
import torch

from tests.conftest import CONFIG_DIR, run_scripts

PRETRAIN = f'{CONFIG_DIR}/mutdet/mutdet-pretrain_orientedformer-r18_1xb4-12e_synthetic.py'
FINETUNE = (f'{CONFIG_DIR}/mutdet/'
            'bhcl-decoupled_orientedformer-r18_1xb2-12e_synthetic_mutdet-init.py')


@pytest.mark.slow
def test_pretraining_chain_end_to_end(tmp_path):
    """The docs' commands in their order, each run as ``python tools/...`` would run it
    (one interpreter for the chain, so the mm* imports are paid once)."""
    data, work, init = tmp_path / 'data', tmp_path / 'pretrain', tmp_path / 'init.pth'
    *_, report = run_scripts(
        ('tools/generate_synthetic_dataset.py', '--out', data, '--preset', 'bench',
         '--num-train', '8', '--num-val', '2'),
        ('tools/pretraining/generate_proposals.py', data / 'train' / 'images',
         tmp_path / 'proposals'),
        ('tools/pretraining/extract_embeddings.py', '--depth', '18', '--checkpoint', 'none',
         '--out-size', '32', data / 'train' / 'images', tmp_path / 'proposals',
         tmp_path / 'embeddings'),
        ('tools/pretraining/cluster_embeddings.py', tmp_path / 'embeddings',
         data / 'pseudo_labels' / 'train', '--model', tmp_path / 'clusters.pth',
         '--fit', '--num-clusters', '16', '--dim', '32'),
        ('tools/train.py', PRETRAIN, '--work-dir', work, '--cfg-options',
         f'train_dataloader.dataset.data_root={data}/', 'train_cfg.max_epochs=1',
         'model.object_channels=32'),
        ('tools/model_converters/mutdet_to_finetune.py', work / 'epoch_1.pth', FINETUNE, init))
    ckpt = torch.load(work / 'epoch_1.pth', map_location='cpu', weights_only=False)
    assert any(k.startswith('enhancement.') for k in ckpt['state_dict'])
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

"""tools/analysis_tools/get_flops.py on the smoke configs."""
import os.path as osp
import runpy

import pytest
from mmengine.config import Config

from tests.conftest import CONFIG_DIR, REPO_ROOT

TOOL = osp.join(REPO_ROOT, 'tools', 'analysis_tools', 'get_flops.py')
SMOKE = osp.join(CONFIG_DIR, 'synthetic', 'orientedformer_r18_1xb4-12e_synthetic.py')
DECOUPLED = osp.join(CONFIG_DIR, 'synthetic', 'orientedformer-decoupled_r18_1xb4-12e_synthetic.py')


def test_flops_grow_with_the_image_and_with_decoupling(capsys):
    tool = runpy.run_path(TOOL)
    small = tool['complexity'](Config.fromfile(SMOKE), 128, 128)
    large = tool['complexity'](Config.fromfile(SMOKE), 256, 256)
    decoupled = tool['complexity'](Config.fromfile(DECOUPLED), 128, 128)
    assert 3.5 < large['flops'] / small['flops'] < 4.5       # convolutions dominate
    assert decoupled['flops'] > small['flops'] and decoupled['params'] > small['params']
    assert tool['main']([SMOKE, '--shape', '128', '96']) == 0
    out = capsys.readouterr().out
    assert 'Input shape: (3, 128, 96)' in out and 'Flops:' in out and 'Params:' in out
    with pytest.raises(SystemExit, match='--shape'):
        tool['main']([SMOKE, '--shape', '1', '2', '3'])


def test_params_used_at_inference_leave_out_the_training_only_parts(capsys):
    """``Params`` is every parameter (mmdet's figure); the inference figure is it
    minus the auxiliary head and the HCL projectors, which inference never reads."""
    from mmengine.registry import init_default_scope
    from mmrotate.registry import MODELS
    tool = runpy.run_path(TOOL)
    bhcl = osp.join(CONFIG_DIR, 'synthetic',
                    'bhcl-decoupled_orientedformer-r18_1xb2-12e_synthetic.py')
    info = tool['complexity'](Config.fromfile(bhcl), 128, 128)
    init_default_scope('mmrotate')
    model = MODELS.build(Config.fromfile(bhcl).model)
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    training_only = count(model.query_head.aux) + count(model.hierarchy.loss_hcl)
    assert training_only > 0
    assert info['params'] == count(model)
    assert info['inference_params'] == count(model) - training_only
    assert tool['main']([bhcl, '--shape', '128']) == 0
    out = capsys.readouterr().out
    assert f'Params used at inference: {(count(model) - training_only) / 1e6:.3f}M' in out



@pytest.mark.parametrize('config', ['bhcl-decoupled_orientedformer-r18_1xb2-12e_synthetic.py',
                                    'bhcl-rhino-decoupled_r18_1xb2-12e_synthetic.py'])
def test_category_query_configs_trace(config, capsys):
    """The category selection (a top-k scattered into a bool mask) and RHINO's tensor
    mode without data samples go through the JIT tracer that counts the FLOPs; the
    category queries add operations and parameters to the BHCL model they extend."""
    tool = runpy.run_path(TOOL)
    path = lambda prefix: osp.join(CONFIG_DIR, 'synthetic', prefix + config)  # noqa: E731
    base = tool['complexity'](Config.fromfile(path('')), 128, 128)
    cq = tool['complexity'](Config.fromfile(path('cq-')), 128, 128)
    assert cq['flops'] > base['flops'] and cq['params'] > base['params']
    assert tool['main']([path('cqdino-'), '--shape', '128']) == 0
    out = capsys.readouterr().out
    assert 'Input shape: (3, 128, 128)' in out and 'Flops:' in out

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

"""``import bhcl`` without mmdet's OneDL-datasets notice; other output kept."""
import os
import subprocess
import sys

import pytest

from bhcl.utils.upstream_import import ONEDL_NOTICES, import_without_onedl_notice
from tests.conftest import REPO_ROOT

NOTICE = ONEDL_NOTICES[0]


def _python(code: str) -> str:
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, OMP_NUM_THREADS='1')
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         timeout=300, cwd=REPO_ROOT, env=env)
    assert res.returncode == 0, res.stderr
    return res.stdout + res.stderr


def test_import_bhcl_prints_the_onedl_notice_at_most_once():
    out = _python('import bhcl')
    assert out.count(NOTICE) <= 1, out


def _write_module(tmp_path, name: str, body: str) -> None:
    (tmp_path / f'{name}.py').write_text(body)


def test_only_the_notice_lines_are_dropped(tmp_path, monkeypatch, capsys):
    _write_module(tmp_path, 'noisy_upstream_a', f'print({NOTICE!r})\nprint("kept one")\n')
    _write_module(tmp_path, 'noisy_upstream_b',
                  f'print("Could not import OneDL")\nprint({NOTICE!r} + " and more")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    import_without_onedl_notice(['noisy_upstream_a', 'noisy_upstream_b'])
    assert capsys.readouterr().out == f'kept one\n{NOTICE} and more\n'


def test_output_before_a_failing_import_still_comes_out(tmp_path, monkeypatch, capsys):
    _write_module(tmp_path, 'failing_upstream',
                  f'print({NOTICE!r})\nprint("before the error")\nraise ImportError("no")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError, match='no'):
        import_without_onedl_notice(['failing_upstream'])
    assert capsys.readouterr().out == 'before the error\n'

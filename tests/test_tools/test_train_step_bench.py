"""benchmarks/train_step.py --grid-rows: the grid's rows timed as the grid trains them."""
import pytest

from tests.conftest import load_script

LINEAR, CQDINO = '+decoupling+BHCL, one view', '+decoupling+BHCL, CQ-DINO head, one view'


@pytest.fixture(scope='module')
def hierarchical_task(tmp_path_factory):
    """A few images of the hierarchical task (its tree and node cues, no leaf quotas)."""
    from bhcl.datasets.synthetic import SyntheticConfig, generate_synthetic_dataset
    abl = load_script('benchmarks/synthetic_ablation.py')
    root = str(tmp_path_factory.mktemp('hier')) + '/'
    generate_synthetic_dataset(root, abl.task_tree('hierarchical'), SyntheticConfig.preset(
        'hierarchical', num_train=4, num_val=1, leaf_counts=None))
    return root


def test_grid_rows_are_the_grids_configs_on_the_tasks_images(hierarchical_task):
    bench = load_script('benchmarks/train_step.py')
    cfgs, batch = bench.grid_rows([LINEAR, CQDINO], hierarchical_task, 2)
    assert list(cfgs) == [LINEAR, CQDINO]
    assert cfgs[CQDINO].model.classifier.type == 'CQDINOClassifier'
    assert cfgs[CQDINO].model.classifier.topk == 22   # the grid's share of the 45-node tree
    assert all(len(c.model.label_tree['paths']) == 45 for c in cfgs.values())
    assert len(batch['inputs']) == 2 and tuple(batch['inputs'][0].shape[-2:]) == (128, 128)
    with pytest.raises(ValueError, match='two views'):
        bench.grid_rows(['+decoupling+BHCL'], hierarchical_task, 2)
    with pytest.raises(ValueError, match='reads a file'):
        bench.grid_rows(['+decoupling, MutDet init'], hierarchical_task, 2)


@pytest.mark.slow
def test_grid_rows_time_a_real_step_of_each_row(hierarchical_task, capsys):
    bench = load_script('benchmarks/train_step.py')
    bench.main(['--grid-rows', LINEAR, CQDINO, '--data-root', hierarchical_task,
                '--iters', '1', '--batch', '2'])
    out = capsys.readouterr().out
    assert 'grid rows on the hierarchical task' in out
    rows = [line for line in out.splitlines() if line.startswith('+decoupling+BHCL')]
    assert len(rows) == 2
    (t0, x0, m0, y0), (t1, x1, m1, y1) = ([float(v) for v in r.split()[-4:]] for r in rows)
    assert rows[0].startswith(LINEAR) and rows[1].startswith(CQDINO)
    assert x0 == y0 == 1.0 and min(t0, m0, t1, m1) > 0     # ms/iter, peak MiB; the first is 1x
    assert x1 == pytest.approx(t1 / t0, abs=0.01) and y1 == pytest.approx(m1 / m0, abs=0.01)

"""benchmarks/synthetic_ablation.py: equal-budget schedules, groups and intervals."""
import json
import os.path as osp

import pytest
from mmengine.config import Config

from tests.conftest import load_script


def test_one_and_two_view_rows_get_the_same_iterations_and_lr_steps():
    abl = load_script('benchmarks/synthetic_ablation.py')
    runs = {}
    for name in ('baseline', '+decoupling+BHCL'):
        cfg = Config.fromfile(osp.join(abl.CFG_DIR, abl.VARIANTS[name][0]))
        total = abl.scale_schedule(cfg, iters=800, num_train=800)
        batches = 800 // cfg.train_dataloader.batch_size
        assert total == cfg.train_cfg.max_epochs * batches
        step = next(s for s in cfg.param_scheduler if s.type == 'MultiStepLR')
        assert not step.by_epoch
        runs[name] = (total, step.milestones, cfg.train_cfg.max_epochs, cfg.model.get('loss_hcl'))
    # 4 crops per iteration in both: 4 images x 1 view vs 2 images x 2 views
    assert runs['baseline'][0] == runs['+decoupling+BHCL'][0] == 800
    assert runs['baseline'][1] == runs['+decoupling+BHCL'][1] == [600]  # 9/12 of the run
    assert runs['baseline'][2] == 2 * runs['+decoupling+BHCL'][2]  # half the epochs
    # the one-epoch warm-up of 12 keeps its share: 1/12 of 2 epochs rounds to 0
    assert runs['+decoupling+BHCL'][3].warmup_epochs == 0


def test_head_and_tail_are_the_most_and_least_frequent_thirds():
    abl = load_script('benchmarks/synthetic_ablation.py')
    tree = dict(paths=['A', 'A/a1', 'A/a2', 'B', 'B/b1', 'B/b2', 'C', 'C/c1', 'C/c2'])
    counts = dict(a1=100, a2=3, b1=50, b2=7, c1=20, c2=9)
    groups = abl.head_tail_groups(tree, counts)
    assert groups == dict(tail=['a2', 'b2'], head=['b1', 'a1'])


def test_summary_is_mean_sample_sd_and_student_t_interval():
    abl = load_script('benchmarks/synthetic_ablation.py')
    mean, sd, half = abl.summarise([0.1, 0.2, 0.3])
    assert mean == pytest.approx(0.2)
    assert sd == pytest.approx(0.1)
    assert half == pytest.approx(4.303 * 0.1 / 3 ** 0.5, abs=1e-4)   # t, 2 df
    _, sd, half = abl.summarise(list(range(40)))
    assert half / (sd / 40 ** 0.5) == pytest.approx(2.0227, abs=1e-4)   # t, 39 df: not 1.96


def test_simclr_row_needs_its_backbone_file_and_keys_reuse_on_it(tmp_path, capsys):
    abl = load_script('benchmarks/synthetic_ablation.py')
    row = '+decoupling, SimCLR backbone'
    assert abl.uses_simclr(row) and not abl.uses_simclr('+decoupling')
    with pytest.raises(SystemExit):
        abl.main(['--variants', row, '--work-dir', str(tmp_path)])
    assert '--simclr-backbone' in capsys.readouterr().err
    backbone = tmp_path / 'r18.pth'
    backbone.write_bytes(b'0' * 10)

    class Args:
        iters, lr, simclr_backbone = 800, 1e-3, str(backbone)
    assert abl.run_settings(Args, row) == dict(iters=800, lr=1e-3,
                                               simclr_backbone=['r18.pth', 10])
    assert abl.run_settings(Args, '+decoupling') == dict(iters=800, lr=1e-3)


def test_label_fraction_and_mutdet_rows_train_on_fewer_images_for_the_same_iterations(tmp_path):
    abl = load_script('benchmarks/synthetic_ablation.py')
    init = tmp_path / 'init.pth'
    init.write_bytes(b'x')
    files = dict(mutdet_init=str(init))
    done = {}
    for name in ('+decoupling', '+decoupling, 10% labels', '+decoupling, MutDet init',
                 '+decoupling, MutDet init, 10% labels'):
        config, overrides, options = abl.row(name)
        cfg, iters = abl.prepare_config(
            osp.join(abl.CFG_DIR, config), overrides, str(tmp_path), str(tmp_path), 0,
            dict(head=[], tail=[]), 800, 800, 0, 128, 1e-3, files, options)
        done[name] = (iters, cfg.train_cfg.max_epochs, cfg.train_dataloader.dataset.get('indices'),
                      cfg.get('load_from'))
        assert ('mutdet_init' in abl.files_used(name)) == ('MutDet' in name)
    assert done['+decoupling'] == (800, 4, None, None)
    assert done['+decoupling, 10% labels'] == (800, 40, 80, None)
    assert done['+decoupling, MutDet init'] == (800, 4, None, str(init))
    assert done['+decoupling, MutDet init, 10% labels'] == (800, 40, 80, str(init))


def _runs(values):
    """``{seed: result}`` with every column equal to ``values[seed]``."""
    return {s: dict(metrics=dict.fromkeys((k for k, _ in load_script('benchmarks/synthetic_ablation.py').COLUMNS), v))
            for s, v in enumerate(values)}


def test_welch_pairs_lists_the_pairs_welch_rejects():
    abl = load_script('benchmarks/synthetic_ablation.py')
    results = {'a': _runs([0.50, 0.52, 0.48]), 'b': _runs([0.30, 0.33, 0.29]),
               'c': _runs([0.47, 0.53, 0.41]), 'd': _runs([0.9]),
               'RHINO x': _runs([0.10, 0.11, 0.09]), 'RHINO y': _runs([0.30, 0.31, 0.29])}
    lines = abl.welch_pairs(results)
    # a vs c overlap; d has one seed; b lies below both; RHINO rows only against each other
    assert [line.split(':')[0] for line in lines] == ['- a vs b', '- b vs c',
                                                      '- RHINO x vs RHINO y']
    from scipy import stats
    p = stats.ttest_ind([0.50, 0.52, 0.48], [0.30, 0.33, 0.29], equal_var=False).pvalue
    assert f'leaf mAP > (p = {p:.2g})' in lines[0]
    assert 'leaf mAP < (p = ' in lines[1]


def test_paired_lines_use_paired_t_on_the_common_seeds(tmp_path):
    abl = load_script('benchmarks/synthetic_ablation.py')
    ref = [0.40, 0.50, 0.60, 0.45]
    results = {'+decoupling': _runs(ref), 'x': _runs([r + d for r, d in
                                                       zip(ref, [0.02, 0.01, 0.03, 0.02])])}
    del results['x'][3]   # seed 3 missing in x: three pairs
    lines = abl.paired_lines(results, '+decoupling')
    row = next(line for line in lines if line.startswith('| x |'))
    from bhcl.utils.stats import paired_difference, paired_mde
    d = paired_difference([0.42, 0.51, 0.63], ref[:3])
    assert row.startswith('| x | 3 | ')
    assert f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] " \
           f"(p {d['p']:.2g}, MDE {paired_mde(3, d['sd']):.3f})" in row
    # one row x the columns = the tests; p = 0.074 (t 3.5, 2 df) is not bold
    assert len(abl.COLUMNS) == int(lines[0].split(' tests in this table')[0].split()[-1])
    assert '**' not in row and d['p'] == pytest.approx(0.074, abs=0.001)
    strong = {'+decoupling': _runs(ref), 'x': _runs([r + d for r, d in
                                                      zip(ref, [0.020, 0.021, 0.019, 0.020])])}
    assert abl.paired_lines(strong, '+decoupling')[4].count('**') == 2 * len(abl.COLUMNS)
    assert abl.paired_lines({'+decoupling': _runs(ref), 'y': _runs([0.1])}, '+decoupling') == [
        "Paired differences against '+decoupling': no row shares 2 seeds with it yet.", '']
    assert abl.plot_paired(results, '+decoupling', str(tmp_path / 'paired.png'))
    assert (tmp_path / 'paired.png').stat().st_size > 0
    assert not abl.plot_paired({'+decoupling': _runs(ref), 'y': _runs([0.1])}, '+decoupling',
                               str(tmp_path / 'none.png'))


def test_seed_lines_show_every_run_in_its_seed_column():
    abl = load_script('benchmarks/synthetic_ablation.py')
    results = {'+decoupling': _runs([0.05, 0.06124]), 'x': {'2': _runs([0.5])[0]}}
    lines = abl.seed_lines(results)
    assert lines[0] == 'leaf mAP by seed:'
    assert lines[2] == '| variant | seed 0 | seed 1 | seed 2 |'
    assert lines[4] == '| +decoupling | 0.0500 | 0.0612 | - |'
    assert lines[5] == '| x | - | - | 0.5000 |' and lines[-1] == ''
    assert abl.seed_lines({}) == []


def test_cost_lines_add_up_the_runs_time_per_detector():
    abl = load_script('benchmarks/synthetic_ablation.py')
    results = {'+decoupling': {0: dict(total_s=3600.0, train_cpu_s=1800.0),
                               1: dict(total_s=1800.0)},
               'RHINO': {0: dict(total_s=720.0, train_cpu_s=360.0)}}
    assert abl.cost_lines(results) == [
        "Run time of the reported runs (training and evaluation, each run's own clock): "
        'OrientedFormer: 2 runs, 1.5 h (training CPU 0.5 h over the 1 runs that recorded it); '
        'RHINO: 1 runs, 0.2 h (training CPU 0.1 h over the 1 runs that recorded it); '
        'in all 1.7 h.', '']
    assert abl.cost_lines({}) == []


def test_machine_lines_count_cpus_and_name_seeds_that_mixed_them():
    abl = load_script('benchmarks/synthetic_ablation.py')

    def run(cpu=None):
        return dict(metrics={}, **({'machine': {'cpu': cpu}} if cpu else {}))

    results = {'+decoupling': {0: run('A'), 1: run(), 10: run('A')},
               'baseline': {0: run('A'), 1: run('B'), 10: run('B')},
               'RHINO': {0: run('B'), 1: run('B')}}
    lines = abl.machine_lines(results)
    assert lines[0] == ('Runs by CPU: A: 3; B: 4; not recorded (runs from before the '
                        'record): 1.')
    # seed 1: one run unrecorded, one on B: not known to mix; RHINO seed 0 is its own set
    assert lines[1].endswith(': OrientedFormer seed 10.')
    assert abl.machine_lines({'x': {0: run(), 1: run()}}) == []
    assert abl.machine_lines({'x': {0: run('A'), 1: run('A')}}) == ['Runs by CPU: A: 2.', '']


def test_every_row_prepares_a_four_crop_run_with_the_same_iterations(tmp_path):
    abl = load_script('benchmarks/synthetic_ablation.py')
    init = tmp_path / 'init.pth'
    init.write_bytes(b'x')
    files = dict(mutdet_init=str(init), simclr_backbone=str(init))
    for name in abl.VARIANTS:
        config, overrides, options = abl.row(name)
        cfg, iters = abl.prepare_config(
            osp.join(abl.CFG_DIR, config), overrides, str(tmp_path), str(tmp_path), 0,
            dict(head=[], tail=[]), 800, 800, 0, 128, 1e-3, files, options)
        assert iters == 800, name
        loader = cfg.train_dataloader
        views = loader.dataset.get('num_views', 1)
        assert loader.batch_size * views == 4, name


def test_report_takes_reused_runs_and_keys_file_rows_on_the_recorded_file(tmp_path):
    abl = load_script('benchmarks/synthetic_ablation.py')
    simclr = '+decoupling, SimCLR backbone'
    work = tmp_path / 'work'
    here = work / 'runs' / f"{abl.VARIANTS_SLUG['+decoupling']}-seed1"
    here.mkdir(parents=True)
    (here / 'result.json').write_text('{"settings": {"iters": 800, "lr": 0.001}, "at": "here"}')
    reuse = tmp_path / 'results.json'
    ok = dict(iters=800, lr=1e-3)
    reuse.write_text(abl.json.dumps(dict(runs={
        '+decoupling': {'0': dict(settings=ok, at='reuse'),
                        '1': dict(settings=ok, at='reuse, shadowed')},
        'baseline': {'0': dict(settings=dict(iters=400, lr=1e-3), at='other budget')},
        simclr: {'0': dict(settings=dict(ok, simclr_backbone=['r18.pth', 10]), at='reuse')}})))

    class Args:
        iters, lr, simclr_backbone, mutdet_init = 800, 1e-3, None, None
        variants, seeds, work_dir = ['+decoupling', 'baseline', simclr], [0, 1], str(work)
    Args.reuse = str(reuse)
    got = {v: {s: r['at'] for s, r in runs.items()} for v, runs in abl.finished_runs(Args).items()}
    assert got == {'+decoupling': {0: 'reuse', 1: 'here'}, simclr: {0: 'reuse'}}
    # given the file, a report keeps only the runs that used one of its name and size
    other = tmp_path / 'r18.pth'
    other.write_bytes(b'0' * 11)
    Args.simclr_backbone = str(other)
    assert simclr not in abl.finished_runs(Args)
    other.write_bytes(b'0' * 10)
    assert abl.finished_runs(Args)[simclr][0]['at'] == 'reuse'


def _prepared(abl, name, tmp_path, iters=800, num_train=800, label_tree=None):
    config, overrides, options = abl.row(name)
    return abl.prepare_config(osp.join(abl.CFG_DIR, config), overrides, str(tmp_path),
                              str(tmp_path), 0, dict(head=[], tail=[]), iters, num_train, 0,
                              128, 1e-3, {}, options, label_tree)[0]


def test_warmup_rescaled_for_both_detectors_through_one_path(tmp_path):
    """Both detectors' BHCL warm-up keeps its 1/12 share of the shortened schedule."""
    abl = load_script('benchmarks/synthetic_ablation.py')
    shares = {}
    for name in ('+decoupling+BHCL', 'RHINO +decoupling+BHCL', '+decoupling+BHCL, one view',
                 'RHINO +decoupling+BHCL, one view'):
        cfg = _prepared(abl, name, tmp_path, iters=960, num_train=80)
        (loss,) = abl.loss_hcl_cfgs(cfg.model)
        shares[name] = (loss['warmup_epochs'], cfg.train_cfg.max_epochs)
    assert shares['+decoupling+BHCL'] == shares['RHINO +decoupling+BHCL'] == (2, 24)
    assert shares['+decoupling+BHCL, one view'] == (4, 48)   # 4 images a step: twice the epochs
    assert shares['RHINO +decoupling+BHCL, one view'] == (4, 48)
    cfg = _prepared(abl, 'RHINO +decoupling+BHCL', tmp_path)
    assert cfg.model.loss_hcl.warmup_epochs == 0 and 'loss_hcl' not in cfg.model.bbox_head


def test_one_view_rows_use_the_published_switches_on_four_images(tmp_path):
    abl = load_script('benchmarks/synthetic_ablation.py')
    for name in ('+decoupling+HCL, one view', '+decoupling+BHCL, one view',
                 'RHINO +decoupling+HCL, one view', 'RHINO +decoupling+BHCL, one view'):
        cfg = _prepared(abl, name, tmp_path)
        loader = cfg.train_dataloader
        assert loader.dataset.type == 'HierarchicalDOTADataset' and loader.batch_size == 4
        assert 'collate_fn' not in loader
        (loss,) = abl.loss_hcl_cfgs(cfg.model)
        assert loss['singleton_negatives'] is False
        if 'BHCL' in name:
            assert loss['prototype_scope'] == 'subtree'
            assert loss['prototype_bank']['hide_unseen'] is False
        two = _prepared(abl, name.replace(', one view', ''), tmp_path)
        assert two.train_dataloader.dataset.num_views == 2
        assert 'singleton_negatives' not in abl.loss_hcl_cfgs(two.model)[0]


def test_grid_runs_on_the_hierarchical_tree(tmp_path):
    abl = load_script('benchmarks/synthetic_ablation.py')

    class Args:
        variants = seeds = task = None
        grid = True
    abl.apply_defaults(Args)
    assert Args.variants == list(abl.GRID) and Args.seeds == list(range(8))
    assert Args.task == 'hierarchical' and set(abl.GRID) <= set(abl.VARIANTS)
    tree = abl.task_tree('hierarchical')
    for name in abl.GRID:
        cfg = _prepared(abl, name, tmp_path, label_tree=tree)
        assert cfg.model.label_tree == tree and cfg.test_evaluator['label_tree'] == tree
        ds = cfg.train_dataloader.dataset
        assert (ds.dataset if ds.type == 'MultiViewDataset' else ds).label_tree == tree
        assert cfg.test_dataloader.dataset.label_tree == tree
    with pytest.raises(ValueError, match='bench task only'):
        _prepared(abl, 'rotated RetinaNet (reference)', tmp_path, label_tree=tree)


@pytest.mark.slow
def test_a_seed_gives_every_loss_arm_the_same_initial_weights(tmp_path):
    """Common random numbers: for both detectors the one-view decoupled arm and its
    HCL arm start from identical weights (the loss is built off the global stream)."""
    import torch
    from mmengine.registry import init_default_scope
    from mmengine.runner import set_random_seed
    from mmrotate.registry import MODELS
    abl = load_script('benchmarks/synthetic_ablation.py')
    init_default_scope('mmrotate')

    def weights(name):
        cfg = _prepared(abl, name, tmp_path)
        set_random_seed(3)
        model = MODELS.build(cfg.model)
        model.init_weights()
        return model.state_dict()
    for plain, hcl in (('+decoupling', '+decoupling+HCL, one view'),
                       ('RHINO +decoupling', 'RHINO +decoupling+BHCL, one view')):
        a, b = weights(plain), weights(hcl)
        assert set(a) < set(b) and all('loss_hcl' in k for k in set(b) - set(a))
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_cqdino_row_builds_and_trains_a_step_on_the_hierarchical_tree(tmp_path):
    """The CQ-DINO row of issue 29's comparison runs on the grid's task: its classifier covers
    the hierarchical tree and one loss step on annotated leaves is finite."""
    import torch
    from mmengine.registry import init_default_scope
    from mmrotate.registry import MODELS

    from bhcl.structures import LabelTree
    from tests.test_models.test_detector import batch
    abl = load_script('benchmarks/synthetic_ablation.py')
    tree = abl.task_tree('hierarchical')
    cfg = _prepared(abl, '+decoupling+BHCL, CQ-DINO head, one view', tmp_path, label_tree=tree)
    assert cfg.model.classifier.type == 'CQDINOClassifier'
    assert cfg.train_dataloader.batch_size == 4
    # the selection keeps the bench config's share of the tree (8 of 16), not its count,
    # and on the bench's own tree the config's count
    bench_cfg = Config.fromfile(osp.join(abl.CFG_DIR, abl.CQDINO))
    bench = bench_cfg.model.classifier.topk
    assert cfg.model.classifier.topk == len(tree['paths']) * bench // 16 == 22
    abl.keep_topk_share(bench_cfg, bench_cfg.label_tree)
    assert bench_cfg.model.classifier.topk == bench == 8
    with pytest.raises(ValueError, match='no classifier.topk'):
        abl.keep_topk_share(Config.fromfile(osp.join(abl.CFG_DIR, abl.BHCL)), tree)
    init_default_scope('mmrotate')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.set_epoch(1)
    imgs, samples = batch()
    assert list(model.label_tree.classes) == list(LabelTree.from_config(tree).classes)
    for s in samples:  # three leaves of the hierarchical tree
        s.gt_instances.labels = torch.tensor(model.label_tree.leaf_ids[-3:])
    losses = model.train().loss(imgs, samples)
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total) and 'loss_presence' in losses


def test_compute_matched_row_trains_the_matched_iterations(tmp_path, capsys):
    """'+decoupling, compute-matched scratch' is '+decoupling' from scratch for
    ``--matched-iters`` iterations, with its learning-rate step at the same share of the run."""
    abl = load_script('benchmarks/synthetic_ablation.py')
    name = '+decoupling, compute-matched scratch'
    assert name in abl.OPTIONAL and abl.row(name)[0] == abl.row('+decoupling')[0]

    class Args:
        iters, lr, task, matched_iters = 800, 1e-3, 'hierarchical', 1600
    assert abl.row_iters(Args, name) == 1600 and abl.row_iters(Args, '+decoupling') == 800
    assert abl.run_settings(Args, name) == dict(iters=1600, lr=1e-3, task='hierarchical')
    cfg = _prepared(abl, name, tmp_path, iters=abl.row_iters(Args, name))
    assert cfg.train_cfg.max_epochs == 8 and cfg.get('load_from') is None
    step = next(s for s in cfg.param_scheduler if s.type == 'MultiStepLR')
    assert step.milestones == [1200]   # 3/4 of the run, as the 800-iteration rows' 600

    Args.matched_iters = None
    with pytest.raises(ValueError, match='--matched-iters'):
        abl.row_iters(Args, name)
    # a report without --matched-iters takes the row's runs whatever their iterations,
    # every other row's only at --iters
    assert abl.report_settings_match(dict(iters=1600, lr=1e-3, task='hierarchical'), Args, name)
    assert not abl.report_settings_match(dict(iters=1600, lr=1e-3, task='hierarchical'), Args,
                                         '+decoupling')
    with pytest.raises(SystemExit):
        abl.main(['--variants', name, '--work-dir', str(tmp_path)])
    assert 'need --matched-iters N' in capsys.readouterr().err


def test_run_one_records_settings_and_the_machine(tmp_path):
    """A run's result.json names what it trained with and the CPU it ran on."""
    from types import SimpleNamespace

    from bhcl.utils.machine import machine_record
    abl = load_script('benchmarks/synthetic_ablation.py')
    seen = {}

    def fake_train_and_test(config, overrides, data_root, run_dir, seed, *rest):
        seen.update(config=config, seed=seed)
        return dict(metrics=dict(leaf_mAP=0.5), train_s=1.0, train_cpu_s=1.0, iters=800)
    abl.train_and_test = fake_train_and_test
    args = SimpleNamespace(variant='+decoupling', data_root=str(tmp_path), run_dir=str(tmp_path),
                           seed=3, groups='{}', iters=800, num_train=800, bootstrap=0,
                           img_size=128, lr=1e-3, task='hierarchical', matched_iters=None)
    abl.run_one(args)
    res = json.loads((tmp_path / 'result.json').read_text())
    assert seen == dict(config=osp.join(abl.CFG_DIR, abl.DECOUPLED), seed=3)
    assert res['settings'] == dict(iters=800, lr=1e-3, task='hierarchical')
    assert res['machine'] == machine_record() and res['metrics'] == dict(leaf_mAP=0.5)
    assert res['data_sha256'] == abl.data_digest(str(tmp_path))


def _task_files(root, label='0 0 8 0 8 4 0 4 Tanker 0'):
    for split in ('train', 'val'):
        (root / split / 'images').mkdir(parents=True)
        (root / split / 'labelTxt').mkdir(parents=True)
        (root / split / 'images' / f'{split}_0.png').write_bytes(b'png bytes ' + split.encode())
        (root / split / 'labelTxt' / f'{split}_0.txt').write_text(label)
    (root / 'meta.json').write_text('{}')   # not data: left out of the digest
    return str(root)


def test_data_digest_names_the_images_and_labels(tmp_path):
    import hashlib
    abl = load_script('benchmarks/synthetic_ablation.py')
    a = _task_files(tmp_path / 'a')
    assert abl.data_digest(a) == abl.data_digest(_task_files(tmp_path / 'b'))   # elsewhere
    expected = hashlib.sha256()   # by hand: relative path, NUL, bytes, in sorted order
    for name, data in (('train/images/train_0.png', b'png bytes train'),
                       ('train/labelTxt/train_0.txt', b'0 0 8 0 8 4 0 4 Tanker 0'),
                       ('val/images/val_0.png', b'png bytes val'),
                       ('val/labelTxt/val_0.txt', b'0 0 8 0 8 4 0 4 Tanker 0')):
        expected.update(name.encode() + b'\0' + data)
    assert abl.data_digest(a) == expected.hexdigest()
    assert abl.data_digest(a) != abl.data_digest(
        _task_files(tmp_path / 'c', label='0 0 8 0 8 4 0 4 Tanker 1'))
    (tmp_path / 'a' / 'meta.json').write_text('{"other": 1}')
    assert abl.data_digest(a) == expected.hexdigest()


def test_runs_on_other_data_are_neither_reused_nor_reported(tmp_path, capsys):
    abl = load_script('benchmarks/synthetic_ablation.py')
    ok = dict(iters=800, lr=1e-3)
    reuse = tmp_path / 'results.json'
    reuse.write_text(json.dumps(dict(runs={'+decoupling': {
        '0': dict(settings=ok, at='before the digest'),
        '1': dict(settings=ok, data_sha256='here', at='same data'),
        '2': dict(settings=ok, data_sha256='elsewhere', at='other data')}})))

    class Args:
        iters, lr, simclr_backbone, mutdet_init = 800, 1e-3, None, None
        variants, seeds, work_dir = ['+decoupling'], [0, 1, 2], str(tmp_path / 'work')
    Args.reuse = str(reuse)
    got = abl.finished_runs(Args, 'here')['+decoupling']
    assert {s: r['at'] for s, r in got.items()} == {0: 'before the digest', 1: 'same data'}
    assert "seed 2] left out: trained on other data (sha256 elsewhere, here here)" in \
        capsys.readouterr().out
    assert len(abl.finished_runs(Args)['+decoupling']) == 3   # no digest: nothing checked
    assert abl.same_data(dict(data_sha256='x'), 'x') and not abl.same_data(dict(
        data_sha256='x'), 'y') and abl.same_data({}, 'y')


def test_launch_trains_again_a_finished_run_on_other_data(tmp_path, capsys):
    from types import SimpleNamespace
    abl = load_script('benchmarks/synthetic_ablation.py')
    started = []

    class FakePopen:
        def __init__(self, cmd, **kwargs):
            started.append(cmd)
    abl.subprocess = SimpleNamespace(Popen=FakePopen, STDOUT=None)
    args = SimpleNamespace(work_dir=str(tmp_path), rerun=False, iters=800, lr=1e-3,
                           task='hierarchical', matched_iters=None, bootstrap=0, img_size=128,
                           simclr_backbone=None, mutdet_init=None)
    run_dir = abl.run_path(str(tmp_path), '+decoupling', 0)
    settings = abl.run_settings(args, '+decoupling')
    reuse = {'+decoupling': {'0': dict(settings=settings, data_sha256='here')}}
    proc, _ = abl.launch('+decoupling', 0, 'data/', {}, 800, args, 1, reuse, 'here')
    assert proc is None and not started   # same settings, same data: kept
    proc, _ = abl.launch('+decoupling', 0, 'data/', {}, 800, args, 1, reuse, 'regenerated')
    assert isinstance(proc, FakePopen) and '--one' in started[0]
    assert 'trained on other data (sha256 here, here regenerated)' in capsys.readouterr().out
    assert osp.isdir(run_dir)


def test_pair_adds_a_paired_table_of_two_rows_neither_the_reference(capsys):
    """``--pair ROW REFERENCE``: the report also pairs two rows by seed (the pre-training
    study's MutDet init against compute-matched scratch), with the paired t of those two."""
    from types import SimpleNamespace
    abl = load_script('benchmarks/synthetic_ablation.py')
    mutdet, matched = '+decoupling, MutDet init', '+decoupling, compute-matched scratch'
    ref, up, other = [0.40, 0.50, 0.60], [0.45, 0.56, 0.64], [0.41, 0.51, 0.62]
    results = {'+decoupling': _runs(ref), mutdet: _runs(up), matched: _runs(other)}
    for runs in results.values():
        for r in runs.values():
            r.update(train_s=1.0)
    meta = dict(settings=dict(num_train=8, num_val=4, img_size=128))
    args = SimpleNamespace(variants=list(results), iters=800, lr=1e-3, seeds=[0, 1, 2],
                           reference='+decoupling', pair=[[mutdet, matched]])
    text = abl.table(results, args, meta, dict(head=[], tail=[]))[0]
    tables = [line for line in text.split('\n') if line.startswith('Paired differences')]
    assert [t.split("'")[1] for t in tables] == ['+decoupling', matched]
    row = text.split(tables[1])[1].split('\n')[4]
    from bhcl.utils.stats import paired_difference
    d = paired_difference(up, other)
    assert row.startswith(f'| {mutdet} | 3 | ')
    assert f'{d["mean"]:+.3f} [{d["low"]:+.3f}, {d["high"]:+.3f}] (p {d["p"]:.2g}' in row
    args.pair = None   # without it, only the reference's table
    assert abl.table(results, args, meta, dict(head=[], tail=[]))[0].count(
        'Paired differences') == 1
    # a pair must name rows of the invocation
    with pytest.raises(SystemExit):
        abl.main(['--report', '--variants', '+decoupling', '--pair', mutdet, '+decoupling'])
    assert 'not among --variants' in capsys.readouterr().err

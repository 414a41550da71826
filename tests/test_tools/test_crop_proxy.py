"""benchmarks/crop_proxy.py: crops, metrics, common random numbers, resume, report."""
import json
import math

import numpy as np
import pytest

from bhcl.structures import LabelTree
from tests.conftest import load_script


def test_crop_puts_the_long_side_along_x():
    import cv2
    proxy = load_script('benchmarks/crop_proxy.py')
    from bhcl.structures.geometry import rbox_to_poly
    img = np.zeros((96, 96, 3), np.uint8)
    for t in (0.3, 1.4, -2.0):
        img[:] = 0
        poly = rbox_to_poly([[48, 48, 60, 12, t]])[0]
        cv2.fillPoly(img, [np.round(poly.reshape(4, 2)).astype(np.int32)], (255, 255, 255))
        crop = proxy.crop_object(img, poly)
        assert crop.shape == proxy.CROP_HW + (3,)
        # the box fills the crop but a thin margin: along x end to end (long side)
        assert crop[proxy.CROP_HW[0] // 2, 2:-2].min() > 200
        assert crop.mean() > 0.7 * 255 / proxy.MARGIN ** 2


def test_evaluate_per_level_and_group_by_hand():
    proxy = load_script('benchmarks/crop_proxy.py')
    tree = LabelTree.from_config(dict(paths=['A', 'A/B', 'A/B/C', 'A/B/C/d', 'A/B/C/e',
                                             'F', 'F/G', 'F/G/H', 'F/G/H/i']))
    y = np.array([3, 3, 4, 8, 2])       # d, d, e, i and an "Other C"
    pred = np.array([3, 4, 2, 8, 8])    # right, sibling, too shallow, right, other branch
    logits = np.eye(tree.num_classes)[pred]
    groups = dict(head=[3], middle=[8], tail=[4])
    m = proxy.evaluate(logits, y, tree, groups)
    assert m['acc_lv0'] == pytest.approx(4 / 5) and m['acc_lv2'] == pytest.approx(4 / 5)
    assert m['acc_lv3'] == pytest.approx(2 / 4)   # the "Other C" object is no leaf object
    assert (m['head'], m['middle'], m['tail'], m['tail_lv2']) == (0.5, 1.0, 0.0, 1.0)
    assert m['tail_n'] == 1


def test_bhcl_warmup_keeps_its_share_of_the_schedule():
    proxy = load_script('benchmarks/crop_proxy.py')
    assert proxy.build_loss('CE', 8) is None
    assert proxy.build_loss('CE+BHCL', 12).warmup_epochs == 1
    assert proxy.build_loss('CE+BHCL', 24).warmup_epochs == 2
    hcl = proxy.build_loss('CE+HCL', 8)
    assert not hcl.balance and hcl.prototype_bank is None and hcl.in_channels == 64
    assert hcl.loss_weight == 0.6   # the configs' weight, unless --loss-weight replaces it
    assert proxy.build_loss('CE+BHCL', 8, 0.1).loss_weight == 0.1


def test_reuse_takes_only_the_ce_runs_of_another_loss_weight(tmp_path):
    """CE does not depend on the contrastive loss's weight: a file that differs only in
    the weight gives its CE runs; any other difference gives nothing."""
    from types import SimpleNamespace
    proxy = load_script('benchmarks/crop_proxy.py')
    args = SimpleNamespace(epochs=8, lr=2e-3, batch_size=64, loss_weight=None)
    base = proxy.run_settings(args, dict(num_train=800))
    assert 'loss_weight' not in base   # files written before the option stay reusable
    runs = {arm: {'0': dict(metrics={}, cpu_s=1.0)} for arm in proxy.ARMS}
    path = tmp_path / 'results.json'
    path.write_text(json.dumps(dict(settings=base, runs=runs)))
    assert sorted(proxy.load_reuse(str(path), base)) == sorted(proxy.ARMS)
    args.loss_weight = 0.1
    lighter = proxy.run_settings(args, dict(num_train=800))
    assert lighter['loss_weight'] == 0.1
    assert proxy.load_reuse(str(path), lighter) == {'CE': {0: runs['CE']['0']}}
    args.epochs = 24
    assert proxy.load_reuse(str(path), proxy.run_settings(args, dict(num_train=800))) == {}


@pytest.mark.slow
def test_tiny_study_is_paired_deterministic_and_resumable(tmp_path):
    proxy = load_script('benchmarks/crop_proxy.py')
    argv = ['--seeds', '0', '1', '--jobs', '1', '--epochs', '2', '--num-train', '24',
            '--num-val', '12', '--leaf-counts', '8', '1', '--work-dir', str(tmp_path / 'a')]
    summary = proxy.main(argv)
    res = json.loads((tmp_path / 'a' / 'results.json').read_text())
    assert sorted(res['runs']) == sorted(proxy.ARMS)
    assert all(sorted(runs) == ['0', '1'] for runs in res['runs'].values())
    # each run names the CPU it ran on (its numerics repeat on that kind of CPU only)
    from bhcl.utils.machine import machine_record
    assert all(r['machine'] == machine_record() for runs in res['runs'].values()
               for r in runs.values())
    for a, b in proxy.PAIRS:
        pair = summary['pairs'][f'{a} - {b}']
        assert pair['n'] == 2
        diffs = [res['runs'][a][s]['metrics']['tail'] - res['runs'][b][s]['metrics']['tail']
                 for s in ('0', '1')]
        assert pair['metrics']['tail']['mean'] == pytest.approx(np.mean(diffs))
    assert (tmp_path / 'a' / 'paired.png').exists()
    assert 'Paired differences' in (tmp_path / 'a' / 'results.md').read_text()
    # --reuse: nothing is trained again, the numbers are those of the file
    again = proxy.main(argv[:-1] + [str(tmp_path / 'b'), '--reuse',
                                    str(tmp_path / 'a' / 'results.json')])
    assert again == json.loads(json.dumps(summary))
    # a seed gives the same run again (deterministic), and the CE arm differs from HCL
    # only by the loss: same initial weights and batches
    import torch
    data = proxy.prepare_data(str(tmp_path / 'a'), num_train=24, num_val=12, leaf_counts=(8, 1))
    tree = LabelTree.from_config(proxy.tree_config())
    groups = proxy.leaf_groups(tree, data['y_train'])

    class Args:
        epochs, lr, batch_size = 2, 2e-3, 64
    torch.set_num_threads(1)
    one = proxy.train_arm('CE', 1, data, Args, tree, groups)['metrics']
    assert one == res['runs']['CE']['1']['metrics']
    torch.manual_seed(1)
    a = proxy.build_net(tree.num_classes)
    torch.manual_seed(1)
    b = proxy.build_net(tree.num_classes)
    for pa, pb in zip(a[0].parameters(), b[0].parameters()):
        torch.testing.assert_close(pa, pb)
    assert math.isfinite(summary['pairs']['CE+HCL - CE']['metrics']['acc_lv0']['mean'])

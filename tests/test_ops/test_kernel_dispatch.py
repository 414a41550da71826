"""The one mmcv-kernel-vs-PyTorch rule (bhcl.ops.kernel_dispatch): its CPU choices,
the rule itself on (mocked) CUDA, and that every call site asks it."""
import pathlib
import re
import sys
from types import SimpleNamespace

import pytest
import torch

import bhcl.models.dense_heads.distinct_query_head as distinct_query_head
import bhcl.models.layers.rotated_deformable_attention as deform_attn
import bhcl.models.losses.rotated_iou_loss as iou_loss
import bhcl.models.task_modules.match_costs as match_costs
from bhcl.ops import kernel_dispatch
from bhcl.ops.kernel_dispatch import KERNEL_DEVICES, mmcv_kernel_runs, use_mmcv_kernel
from bhcl.ops.rotated_iou import rotated_box_iou

BHCL = pathlib.Path(kernel_dispatch.__file__).parents[1]


def fake(device: str, dtype=torch.float32):
    """Stands for a tensor on ``device`` (only ``.device`` and ``.dtype`` are read)."""
    return SimpleNamespace(device=torch.device(device), dtype=dtype)


@pytest.fixture
def probes(monkeypatch):
    """Mock the probe: ``runs[(op, device)]`` says whether mmcv's kernel runs (default
    True); ``asked`` records the probes made."""
    state = SimpleNamespace(runs={}, asked=[])

    def runs(op, device_type):
        state.asked.append((op, device_type))
        return state.runs.get((op, device_type), True)
    monkeypatch.setattr(kernel_dispatch, 'mmcv_kernel_runs', runs)
    return state


@pytest.fixture
def fresh_probe_cache():
    mmcv_kernel_runs.cache_clear()
    yield
    mmcv_kernel_runs.cache_clear()


def test_cpu_choices():
    boxes = torch.rand(3, 5)
    assert use_mmcv_kernel('box_iou_rotated', boxes)            # compiled CPU kernel, exact
    assert not use_mmcv_kernel('diff_iou_rotated_2d', boxes)    # no CPU vertex sort
    assert not use_mmcv_kernel('nms_rotated', boxes)            # bhcl's exact NMS is faster
    assert not use_mmcv_kernel('multi_scale_deform_attn', boxes)
    assert mmcv_kernel_runs('box_iou_rotated', 'cpu')
    assert not mmcv_kernel_runs('diff_iou_rotated_2d', 'cpu')
    assert not mmcv_kernel_runs('multi_scale_deform_attn', 'cpu')


def test_rule_on_cuda(probes):
    for op in KERNEL_DEVICES:
        assert use_mmcv_kernel(op, fake('cuda'))
    assert sorted(probes.asked) == sorted((op, 'cuda') for op in KERNEL_DEVICES)
    # a dtype the kernel lacks never probes
    probes.asked.clear()
    assert not use_mmcv_kernel('multi_scale_deform_attn', fake('cuda', torch.bfloat16))
    assert use_mmcv_kernel('box_iou_rotated', fake('cuda', torch.bfloat16))
    assert probes.asked == [('box_iou_rotated', 'cuda')]
    # a kernel that does not run (mmcv built without its CUDA sources) falls back
    probes.runs[('diff_iou_rotated_2d', 'cuda')] = False
    assert not use_mmcv_kernel('diff_iou_rotated_2d', fake('cuda'))
    # devices bhcl does not prefer the kernel on are never probed
    probes.asked.clear()
    assert not use_mmcv_kernel('nms_rotated', fake('cpu'))
    assert not use_mmcv_kernel('box_iou_rotated', fake('mps'))
    assert probes.asked == []


def test_forced_backends_and_errors(probes):
    assert use_mmcv_kernel('diff_iou_rotated_2d', fake('cpu'), 'mmcv')
    assert not use_mmcv_kernel('box_iou_rotated', fake('cuda'), 'torch')
    assert probes.asked == []
    with pytest.raises(ValueError, match=r"backend must be one of \('auto', 'mmcv', 'torch'\)"):
        use_mmcv_kernel('box_iou_rotated', fake('cpu'), 'cuda')
    with pytest.raises(ValueError, match="unknown op 'roi_align'.*box_iou_rotated"):
        use_mmcv_kernel('roi_align', fake('cpu'))


def test_probe_runs_once_and_missing_ops_mean_pytorch(monkeypatch, fresh_probe_cache):
    calls = []
    monkeypatch.setattr(kernel_dispatch, '_probe', lambda op, dev: calls.append((op, dev)))
    assert mmcv_kernel_runs('nms_rotated', 'cuda') and mmcv_kernel_runs('nms_rotated', 'cuda')
    assert calls == [('nms_rotated', 'cuda')]
    monkeypatch.undo()
    mmcv_kernel_runs.cache_clear()
    monkeypatch.setitem(sys.modules, 'mmcv.ops', None)          # mmcv without compiled ops
    assert not mmcv_kernel_runs('box_iou_rotated', 'cpu')


def test_loss_and_cost_follow_the_rule(probes):
    assert iou_loss.select_aligned_iou(fake('cuda')) is iou_loss._mmcv_aligned_iou
    probes.runs[('diff_iou_rotated_2d', 'cuda')] = False
    assert iou_loss.select_aligned_iou(fake('cuda')) is iou_loss._torch_aligned_iou
    boxes1 = torch.tensor([[10., 10, 8, 4, 0.3], [20, 20, 6, 6, 0.0]])
    boxes2 = torch.tensor([[11., 10, 8, 4, -0.2]])
    probes.runs[('box_iou_rotated', 'cpu')] = False
    torch.testing.assert_close(match_costs.pairwise_rotated_iou(boxes1, boxes2),
                               rotated_box_iou(boxes1, boxes2), rtol=0, atol=0)


def test_deformable_attention_follows_the_rule(monkeypatch):
    value = torch.rand(1, 5, 2, 4)
    shapes = torch.tensor([[2, 2], [1, 1]])
    locations, weights = torch.rand(1, 3, 2, 2, 4, 2), torch.rand(1, 3, 2, 2, 4)
    seen = []
    monkeypatch.setattr(deform_attn, 'use_mmcv_kernel', lambda op, t: seen.append(op) or True)
    monkeypatch.setattr(deform_attn.MultiScaleDeformableAttnFunction, 'apply',
                        lambda *args: ('kernel', args[2]))
    out = deform_attn.deformable_sample(value, shapes, None, locations, weights)
    assert seen == ['multi_scale_deform_attn'] and out[0] == 'kernel'
    torch.testing.assert_close(out[1], torch.tensor([0, 4]))    # level starts derived
    monkeypatch.setattr(deform_attn, 'use_mmcv_kernel', lambda op, t: False)
    torch.testing.assert_close(
        deform_attn.deformable_sample(value, shapes, None, locations, weights),
        deform_attn.multi_scale_deformable_attn_pytorch(value, shapes, locations, weights))


def test_distinct_query_nms_follows_the_rule(monkeypatch):
    seen = []
    monkeypatch.setattr(distinct_query_head, 'use_mmcv_kernel',
                        lambda op, t: seen.append(op) or True)
    monkeypatch.setattr(distinct_query_head, 'batched_nms',
                        lambda boxes, scores, idxs, cfg: (None, torch.tensor([1])))
    boxes = torch.tensor([[10., 10, 8, 4, 0.3], [30, 30, 6, 6, 0.0]])
    scores, ids = torch.tensor([[0.2], [0.9]]), torch.tensor([0, 1])
    head = SimpleNamespace(nms_iou=0.7)
    kept = distinct_query_head.DistinctQueryHead.distinct(head, (scores, boxes, ids))
    assert seen == ['nms_rotated']
    torch.testing.assert_close(kept[2], torch.tensor([1]))


def test_no_other_rule_in_bhcl():
    """Device and build checks for choosing an op live in kernel_dispatch only."""
    pattern = re.compile(r'\.is_cuda\b|IS_CUDA_AVAILABLE|device\.type ==|device_type ==')
    offenders = [f'{path.relative_to(BHCL.parent)}:{i}'
                 for path in BHCL.rglob('*.py') if path.name != 'kernel_dispatch.py'
                 for i, line in enumerate(path.read_text().splitlines(), 1)
                 if pattern.search(line)]
    assert offenders == []

"""Speed of the paper model: bhcl's OrientedFormer / BHCL, optionally beside the published code.

Times a training step (forward + backward) and inference (images per second) of
the paper's models (ResNet-50, 300 queries, 2 stages, oriented attention 64 x
32; baseline and decoupled + BHCL past its warm-up) on 2 images per size, and
the peak memory of a training step. With ``--published PATH`` (a checkout of
the published BHCL repository, whose ``projects/BHCL`` is imported) the
published model runs on the same inputs with the same weights (converted by
``bhcl.models.published``) in the same process, its outputs are checked
against bhcl's, and the ratios are printed.

    python benchmarks/published_speed.py [--sizes 512 1024] [--iters 3]
        [--published PATH] [--device cuda] [--profile]

Peak memory is the high-water mark of tensor bytes allocated during one
training step (CUDA: ``max_memory_allocated``; CPU: tracked per tensor storage).
"""
import argparse
import copy
import os.path as osp
import statistics
import sys
import time

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, osp.join(ROOT, 'benchmarks'))
from hcl_loss_speed import _LiveTensorBytes  # noqa: E402

CONFIGS = {
    'baseline': ('configs/orientedformer/orientedformer_r50_4xb2-72e_shiprs.py',
                 'projects/BHCL/configs/shiprs_baseline_6x.py'),
    'decoupled+BHCL': ('configs/bhcl/bhcl-decoupled_orientedformer-r50_4xb2-72e_shiprs.py',
                       'projects/BHCL/configs/shiprs_bhcl_decoupled_6x.py'),
}


def make_batch(size: int, num_classes_leaves, device, seed=0):
    """2 normalised random images and 8 random le90 ground-truth boxes each."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    from mmrotate.structures.bbox import RotatedBoxes
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(2, 3, size, size, generator=g)
    samples = []
    for _ in range(2):
        n = 8
        boxes = torch.cat([32 + torch.rand(n, 2, generator=g) * (size - 64),
                           24 + torch.rand(n, 1, generator=g) * size / 8,
                           8 + torch.rand(n, 1, generator=g) * 12,
                           (torch.rand(n, 1, generator=g) - 0.5) * 3], dim=1)
        labels = torch.tensor(num_classes_leaves)[torch.randint(len(num_classes_leaves), (n,),
                                                                generator=g)]
        s = DetDataSample(metainfo=dict(img_shape=(size, size), pad_shape=(size, size),
                                        ori_shape=(size, size), scale_factor=(1.0, 1.0),
                                        batch_input_shape=(size, size)))
        s.gt_instances = InstanceData(bboxes=RotatedBoxes(boxes), labels=labels)
        s.ignored_instances = InstanceData(bboxes=RotatedBoxes(torch.zeros(0, 5)),
                                           labels=torch.zeros(0, dtype=torch.long))
        samples.append(s.to(device))
    return images.to(device), samples


def build_bhcl(config: str, device):
    from mmengine.config import Config
    from mmrotate.registry import MODELS
    cfg = Config.fromfile(osp.join(ROOT, config))
    cfg.model.backbone.init_cfg = None
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.set_epoch(5)  # past the BHCL warm-up: balanced loss with prototypes
    return model.to(device)


def import_published_modules():
    """Import ``projects.BHCL.models``; its ``HierarchicalContrastiveLoss`` shares a
    registry name with bhcl's, which keeps the name afterwards."""
    from mmengine.registry import Registry
    from mmrotate.registry import MODELS
    before = dict(MODELS._module_dict)
    register = Registry._register_module

    def forced(self, module, module_name=None, force=False):
        return register(self, module, module_name, True)
    Registry._register_module = forced
    try:
        import projects.BHCL.models  # noqa: F401
    finally:
        Registry._register_module = register
    MODELS._module_dict.update({k: v for k, v in before.items()
                                if k == 'HierarchicalContrastiveLoss'})


def build_published(path: str, config: str, bhcl_model, device):
    """The published model with bhcl_model's weights (converted back by key matching)."""
    sys.path.insert(0, path)
    from mmengine.config import Config
    from mmrotate.registry import MODELS
    from mmrotate.utils import register_all_modules
    register_all_modules()
    import_published_modules()
    import mmrotate.models.losses.rotated_iou_loss as ril
    from bhcl.models.published import published_key_map
    from bhcl.ops.rotated_iou import rotated_box_iou
    if device.type == 'cpu':  # the published IoU loss calls a CUDA-only kernel
        ril.diff_iou_rotated_2d = lambda p, t: rotated_box_iou(p[0], t[0], aligned=True)[None]
    cfg = Config.fromfile(osp.join(path, config), import_custom_modules=False)
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    mapping, _ = published_key_map(model.state_dict())
    ours = bhcl_model.state_dict()
    model.load_state_dict({old: ours[new] for old, new in mapping.items()}, strict=False)
    for loss in getattr(model.roi_head, 'hcl_loss', None) or []:
        loss.set_epoch(6)
    return model.to(device)


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize()


def timed(fn, device, iters):
    times = []
    for _ in range(iters + 1):  # one warm-up
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def measure(model, images, samples, device, iters, published=False):
    def train_step():
        model.train()
        losses = model.loss(images, copy.deepcopy(samples))
        total = sum(sum(v) if isinstance(v, list) else v   # lists: per image (published)
                    for k, v in losses.items() if 'loss' in k)
        model.zero_grad(set_to_none=True)
        total.backward()

    def infer():
        model.eval()
        with torch.no_grad():
            model.predict(images, copy.deepcopy(samples), rescale=False)

    step_s = timed(train_step, device, iters)
    infer_s = timed(infer, device, iters)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        train_step()
        sync(device)
        peak = (torch.cuda.max_memory_allocated() - start) / 2**20
    else:
        with _LiveTensorBytes() as tracker:
            train_step()
        peak = tracker.peak / 2**20
    return step_s, len(images) / infer_s, peak


def profile(model, images, samples):
    from torch.profiler import ProfilerActivity, profile as torch_profile
    model.train()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        losses = model.loss(images, copy.deepcopy(samples))
        sum(sum(v) if isinstance(v, list) else v
            for k, v in losses.items() if 'loss' in k).backward()
    print(prof.key_averages().table(sort_by='cpu_time_total', row_limit=25))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sizes', type=int, nargs='+', default=[512, 1024])
    parser.add_argument('--iters', type=int, default=3)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--published', help='checkout of the published BHCL code')
    parser.add_argument('--variants', nargs='+', default=list(CONFIGS))
    parser.add_argument('--profile', action='store_true', help='print a CPU op profile')
    args = parser.parse_args(argv)
    import bhcl  # noqa: F401
    from mmengine.registry import init_default_scope
    init_default_scope('mmrotate')
    device = torch.device(args.device)
    print(f'device {device}, 2 images per step, {args.iters} timed iterations (median), '
          f'torch threads {torch.get_num_threads()}')
    header = f'{"model":<16} {"px":>5} {"code":<10} {"step s":>8} {"img/s":>8} {"peak MiB":>9}'
    print(header)
    for name in args.variants:
        bhcl_cfg, published_cfg = CONFIGS[name]
        ours = build_bhcl(bhcl_cfg, device)
        leaves = list(ours.label_tree.leaf_ids)
        theirs = build_published(args.published, published_cfg, ours, device) \
            if args.published else None
        for size in args.sizes:
            images, samples = make_batch(size, leaves, device)
            rows = [('bhcl', measure(ours, images, samples, device, args.iters))]
            if args.profile:
                profile(ours, images, samples)
            if theirs is not None:
                rows.append(('published', measure(theirs, images, samples, device, args.iters)))
            for code, (step, ips, peak) in rows:
                print(f'{name:<16} {size:5d} {code:<10} {step:8.2f} {ips:8.2f} {peak:9.0f}',
                      flush=True)
            if theirs is not None:
                (s1, i1, m1), (s2, i2, m2) = rows[0][1], rows[1][1]
                print(f'{"":<16} {size:5d} {"ratio":<10} {s2 / s1:7.2f}x {i1 / i2:7.2f}x '
                      f'{m1 / m2:8.2f}x   (published/bhcl step time, bhcl/published img/s, '
                      'bhcl/published memory)')


if __name__ == '__main__':
    main()

"""A behaviour fingerprint of the label-tree glue, to compare the code before and after a
refactor that must not change what the detectors compute.

Two parts, both on one thread with fixed seeds:

1. ``training``: the decoupled OrientedFormer + BHCL synthetic config trained for 50
   iterations through mmengine's Runner (as ``tools/train.py`` would) on a tiny
   synthetic dataset generated here (10 training images of 64 x 64, 5 iterations an
   epoch, so the BHCL warm-up ends after the first of 10 epochs): the losses at
   iterations 1, 10 and 50 and the sha256 of the final weights (every float tensor
   of the state dict, by sorted key, raw bytes).
2. ``models``: each OrientedFormer / RHINO synthetic config (plain, decoupled, HCL,
   BHCL, category queries) built with seed 0 (``init_sha256``: its initial weights)
   and run on one fixed batch: every loss term at epoch 0, every loss term of a
   second call after ``set_epoch(1)`` (BHCL's prototypes in use), and the sha256 of
   the predictions in eval mode. ``--out FILE`` also saves the initial weights
   (``FILE.init.pth``); ``--compare FILE`` loads them into the models before the
   losses, so that the computation is compared on the same weights even where a
   change of construction order changes what a seed draws (``init_sha256`` is
   compared too, and a change reported).

    python benchmarks/behaviour_fingerprint.py --out before.json
    python benchmarks/behaviour_fingerprint.py --compare before.json [--out after.json]

``--compare`` exits non-zero on any difference: losses must be exactly equal, hashes
identical. Names that a refactor changes on purpose are mapped explicitly in
``RENAMED_*`` lists (new name -> old name, per detector) and nowhere else.
Takes about two minutes of one core.
"""
import argparse
import copy
import hashlib
import importlib.util
import json
import os.path as osp
import re
import sys
import tempfile

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
CFG_DIR = osp.join(ROOT, 'configs', 'synthetic')
TRAIN_CONFIG = 'bhcl-decoupled_orientedformer-r18_1xb2-12e_synthetic.py'
MODEL_CONFIGS = [
    'orientedformer_r18_1xb4-12e_synthetic.py',
    'orientedformer-decoupled_r18_1xb4-12e_synthetic.py',
    'hcl-decoupled_orientedformer-r18_1xb2-12e_synthetic.py',
    'bhcl-decoupled_orientedformer-r18_1xb2-12e_synthetic.py',
    'cq-bhcl-decoupled_orientedformer-r18_1xb2-12e_synthetic.py',
    'rhino_r18_1xb4-12e_synthetic.py',
    'rhino-decoupled_r18_1xb4-12e_synthetic.py',
    'hcl-rhino-decoupled_r18_1xb2-12e_synthetic.py',
    'bhcl-rhino-decoupled_r18_1xb2-12e_synthetic.py',
    'cq-bhcl-rhino-decoupled_r18_1xb2-12e_synthetic.py',
]
ITERS = 50
RECORDED_ITERS = (1, 10, 50)
IMG = 64

# Deliberate renames, (pattern on the new name, replacement giving the old name); the
# first pattern that matches is applied.
# - the label-tree modules moved into the detectors' ``hierarchy`` module (from the top
#   of OrientedFormer and from RHINO's head);
# - RHINO's per-layer loss keys follow OrientedFormer's ``s{i}.`` (the synthetic RHINO
#   has 2 decoder layers: mmdet wrote ``d0.`` for the first, no prefix for the last).
RENAMED_STATE_KEYS = [
    (r'hierarchy\.(loss_hcl|category_queries)\.(.*)', r'\1.\2'),
]
RENAMED_STATE_KEYS_RHINO = [
    (r'hierarchy\.(loss_hcl|category_queries)\.(.*)', r'bbox_head.\1.\2'),
]
RENAMED_LOSS_KEYS = []
RENAMED_LOSS_KEYS_RHINO = [
    (r's0\.(.*)', r'd0.\1'),
    (r's1\.(.*)', r'\1'),
]


# Initial weights that a change of construction order draws differently on purpose
# (config -> why); reported, not failed. The losses are still compared on the
# recorded initial weights.
EXPECTED_INIT_CHANGES = {
    'cq-bhcl-decoupled_orientedformer-r18_1xb2-12e_synthetic.py':
        'the category queries are built with the hierarchy module after the stage '
        'branches (before: between the query head and the class branches)',
    'cq-bhcl-rhino-decoupled_r18_1xb2-12e_synthetic.py':
        'the category queries are built by the detector after the head (before: inside '
        'the head, before its class projections)',
}


def old_name(key, renames):
    for pattern, repl in renames:
        if re.fullmatch(pattern, key):
            return re.sub(pattern, repl, key)
    return key


def renames(config):
    """(state-dict renames, loss-key renames) of a config's detector."""
    if 'rhino' in config:
        return RENAMED_STATE_KEYS_RHINO, RENAMED_LOSS_KEYS_RHINO
    return RENAMED_STATE_KEYS, RENAMED_LOSS_KEYS


def state_hash(state_dict, state_renames=RENAMED_STATE_KEYS):
    """sha256 of every float tensor (by sorted old-scheme key): key and raw bytes."""
    named = {old_name(k, state_renames): v for k, v in state_dict.items()}
    h = hashlib.sha256()
    for key in sorted(named):
        value = named[key]
        if torch.is_tensor(value) and value.is_floating_point():
            h.update(key.encode())
            h.update(value.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def box_tensor(boxes):
    return boxes.tensor if hasattr(boxes, 'tensor') else boxes


def tensor_hash(tensors):
    h = hashlib.sha256()
    for t in tensors:
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def loss_terms(losses, loss_renames=RENAMED_LOSS_KEYS):
    """{old-scheme key: full float repr} of a loss dict."""
    return {old_name(k, loss_renames): repr(float(torch.as_tensor(v).detach()))
            for k, v in losses.items()}


def load_ablation():
    path = osp.join(ROOT, 'benchmarks', 'synthetic_ablation.py')
    spec = importlib.util.spec_from_file_location('synthetic_ablation', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------ training
def train_fingerprint(work_dir):
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    from bhcl.datasets.synthetic import SyntheticConfig, generate_synthetic_dataset
    abl = load_ablation()
    tree = abl.task_tree('bench')
    data_root = osp.join(work_dir, 'data') + '/'
    generate_synthetic_dataset(data_root, tree, SyntheticConfig(
        num_train=10, num_val=2, img_size=IMG, min_objects=2, max_objects=4,
        min_length=12.0, max_length=24.0, border_ratio=0.05, seed=0))
    cfg, iters = abl.prepare_config(
        osp.join(CFG_DIR, TRAIN_CONFIG), {}, data_root, osp.join(work_dir, 'run'), seed=0,
        groups=dict(head=[], tail=[]), iters=ITERS, num_train=10, bootstrap=0, img_size=IMG)
    assert iters == ITERS, iters
    cfg.randomness = dict(seed=0, deterministic=True)
    cfg.default_hooks.logger.interval = 10

    class Record(Hook):
        def __init__(self):
            self.losses = {}

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            it = runner.iter + 1
            if it in RECORDED_ITERS:
                self.losses[str(it)] = loss_terms(outputs)

    runner = Runner.from_cfg(cfg)
    record = Record()
    runner.register_hook(record, priority='LOWEST')
    runner.train()
    return dict(config=TRAIN_CONFIG, iters=ITERS, losses=record.losses,
                state_sha256=state_hash(runner.model.state_dict()))


# -------------------------------------------------------------------- models
def fixed_batch(num_classes):
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    from mmrotate.structures.bbox import RotatedBoxes
    g = torch.Generator().manual_seed(0)
    imgs = torch.randn(2, 3, IMG, IMG, generator=g)
    boxes = torch.tensor([[16., 18, 20, 8, 0.3], [44, 40, 24, 10, -0.6], [30, 50, 14, 9, 1.2],
                          [20, 40, 22, 12, -1.0], [48, 14, 16, 10, 0.1]])
    # leaves and two internal nodes ("Other" objects reallocated to them)
    labels = torch.tensor([2, 6, 0, 11, 13]) % num_classes
    samples = []
    for rows in ([0, 1, 2], [3, 4]):
        s = DetDataSample(metainfo=dict(img_shape=(IMG, IMG), ori_shape=(IMG, IMG),
                                        batch_input_shape=(IMG, IMG), scale_factor=(1., 1.),
                                        pad_shape=(IMG, IMG)))
        s.gt_instances = InstanceData(bboxes=RotatedBoxes(boxes[rows].clone()),
                                      labels=labels[rows].clone())
        samples.append(s)
    return imgs, samples


def model_fingerprint(config, weights=None):
    """The ``models`` entry of ``config`` and its initial weights (old-scheme names);
    ``weights``: initial weights to load before the losses (an earlier run's)."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmrotate.registry import MODELS
    init_default_scope('mmrotate')
    cfg = Config.fromfile(osp.join(CFG_DIR, config))
    torch.manual_seed(0)
    model = MODELS.build(copy.deepcopy(cfg.model))
    model.init_weights()
    num_classes = len(cfg.model.label_tree['paths'])
    imgs, samples = fixed_batch(num_classes)
    state_renames, loss_renames = renames(config)
    out = dict(init_sha256=state_hash(model.state_dict(), state_renames))
    init = {old_name(k, state_renames): v.clone() for k, v in model.state_dict().items()}
    if weights is not None:  # the earlier run's initial weights, by old-scheme name
        state = model.state_dict()
        missing = [k for k in state if old_name(k, state_renames) not in weights]
        if missing or len(state) != len(weights):
            raise KeyError(f'{config}: the recorded initial weights do not fit the model '
                           f'(missing {missing[:5]}, {len(weights)} recorded vs {len(state)}); '
                           'map renamed keys in RENAMED_STATE_KEYS')
        model.load_state_dict({k: weights[old_name(k, state_renames)] for k in state})
    model.train()
    for epoch in (0, 1):
        if hasattr(model, 'set_epoch'):
            model.set_epoch(epoch)
        torch.manual_seed(epoch)  # the denoising noise
        losses = model.loss(imgs, copy.deepcopy(samples))
        out[f'epoch{epoch}'] = loss_terms(losses, loss_renames)
    model.eval()
    with torch.no_grad():
        preds = model.predict(imgs, copy.deepcopy(samples))
    out['predict_sha256'] = tensor_hash(
        t for p in preds for t in (box_tensor(p.pred_instances.bboxes), p.pred_instances.scores,
                                   p.pred_instances.labels.float()))
    return out, init


# ------------------------------------------------------------------- compare
def differences(before, after, path=''):
    """Lines naming every leaf that differs (or is missing on one side)."""
    if isinstance(before, dict) and isinstance(after, dict):
        lines = []
        for key in sorted(set(before) | set(after)):
            where = f'{path}/{key}'
            if key not in after:
                lines.append(f'{where}: missing after')
            elif key not in before:
                lines.append(f'{where}: new after')
            else:
                lines += differences(before[key], after[key], where)
        return lines
    if before == after:
        return []
    try:
        rel = abs(float(after) - float(before)) / max(abs(float(before)), 1e-30)
        return [f'{path}: {before} -> {after} (relative difference {rel:.3g})']
    except (TypeError, ValueError):
        return [f'{path}: {before} -> {after}']


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', help='write the fingerprint (JSON) here')
    parser.add_argument('--compare', help='an earlier fingerprint: exit 1 on any difference')
    parser.add_argument('--skip-training', action='store_true',
                        help='models part only (a quick look; --compare then skips training)')
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    import bhcl  # noqa: F401
    result, inits = dict(models={}), {}
    recorded = torch.load(args.compare + '.init.pth') if args.compare else {}
    for config in MODEL_CONFIGS:
        result['models'][config], inits[config] = model_fingerprint(config,
                                                                    recorded.get(config))
        print(f'{config}: {len(result["models"][config]["epoch0"])} loss terms', flush=True)
    if not args.skip_training:
        with tempfile.TemporaryDirectory() as work_dir:
            result['training'] = train_fingerprint(work_dir)
        t = result['training']
        print(f'training {t["config"]}, {t["iters"]} iterations: weights sha256 '
              f'{t["state_sha256"]}')
        for it, losses in t['losses'].items():
            print(f'  iteration {it}: loss {losses.get("loss")}')
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(result, f, indent=1, sort_keys=True)
        torch.save(inits, args.out + '.init.pth')
    if args.compare:
        with open(args.compare) as f:
            before = json.load(f)
        if args.skip_training:
            before.pop('training', None)
        lines = differences(before, result)
        expected = [f'/models/{c}/init_sha256' for c in EXPECTED_INIT_CHANGES]
        for line in [x for x in lines if x.split(':')[0] in expected]:
            config = line.split('/')[2]
            print(f'expected: {line} ({EXPECTED_INIT_CHANGES[config]})')
            lines.remove(line)
        print('\n'.join(lines) if lines else
              f'identical to {osp.basename(args.compare)}: every loss term equal, '
              'weight and prediction hashes identical (but the expected changes above)')
        return 1 if lines else 0
    return 0


if __name__ == '__main__':
    sys.exit(main())

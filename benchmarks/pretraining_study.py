"""MutDet pre-training against scratch, paired by seed, with a compute-matched control.

    python benchmarks/pretraining_study.py --work-dir work_dirs/grid [--seeds 0 1 ... 7]
        [--jobs 2] [--pretrain-epochs 2] [--task hierarchical] [--report]

On the ablation's task (default: the hierarchical preset of the loss study, whose
``--work-dir`` it may share: the '+decoupling' runs are the grid's one-view decoupled
arm) the study

1. generates rotated proposals on the training images (classical generator),
2. embeds them with a randomly initialised, frozen ResNet-18 (64 px crops; no
   pre-trained weights can be downloaded here) and clusters them into the
   config's 16 pseudo-classes,
3. pre-trains the decoupled synthetic OrientedFormer with MutDet's objectives
   (``configs/mutdet/mutdet-pretrain_orientedformer-r18_1xb4-12e_synthetic.py``,
   ``--pretrain-epochs`` epochs at lr 1e-3, one thread) and converts the
   checkpoint into a fine-tuning initialisation,
4. fine-tunes, seed by seed: '+decoupling' (from scratch) and '+decoupling, MutDet
   init' at the ablation's budget (``--iters``), then '+decoupling,
   compute-matched scratch', which trains from scratch for ``--iters`` plus the
   pre-training's compute expressed in training iterations: the CPU seconds of
   steps 1-3 divided by the mean CPU seconds per fine-tuning iteration of the
   step-4 runs finished by then, rounded to whole epochs (fixed by the first
   invocation that computes it, ``pretraining_study.json``),
5. reports the three rows, their paired differences against '+decoupling'
   (``synthetic_ablation.py --report --reference '+decoupling'``) and MutDet init
   against compute-matched scratch (``--pair``).

What the study has measured is kept in ``--out-dir`` (default: this repository's
``docs/results/pretraining_study``, meant to be committed): ``pretraining_study.json``
(every step's CPU seconds, the sha256 of the fine-tuning initialisation, the matched
iterations) and the report's ``results.json`` (every finished run). Every step's
output is kept in ``--work-dir`` and skipped when it exists; on a machine whose
``--work-dir`` is empty the study regenerates the task and the initialisation (which
must hash as recorded once a MutDet-init or compute-matched run has finished: a
different initialisation then stops the study rather than mix two in one arm; before
that, it replaces the record's chain), keeps the recorded CPU seconds and matched
iterations, and takes the finished runs from ``--out-dir``'s ``results.json``
(``--reuse``), so it goes on where it stopped. ``--report`` only reports. CPU seconds
are the user + system time of the step's processes, each run with one thread.
"""
import argparse
import glob
import hashlib
import json
import os
import os.path as osp
import resource
import statistics
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, osp.join(ROOT, 'benchmarks'))
import synthetic_ablation as ablation  # noqa: E402

PRETRAIN_CONFIG = osp.join(ROOT, 'configs', 'mutdet',
                           'mutdet-pretrain_orientedformer-r18_1xb4-12e_synthetic.py')
PSEUDO_CLASSES = 16  # the pre-training config's num_pseudo_classes
SCRATCH, MUTDET, MATCHED = ('+decoupling', '+decoupling, MutDet init',
                            '+decoupling, compute-matched scratch')
# what the record says of its chain (and of the compute-matched iterations derived from it)
CHAIN_KEYS = ('mutdet_init_sha256', 'machine', 'pretraining_cpu_s', 'pretraining_cpu_s_total',
              'fine_tuning_cpu_s_per_iter', 'fine_tuning_runs_timed',
              'pretraining_in_iterations', 'iters', 'matched_iters')


def children_cpu_s():
    """User + system seconds of this process's finished children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_step(name, cmd, done, costs, log_dir):
    """Run ``cmd`` (one thread) unless ``done`` exists; record its CPU seconds in
    ``costs[name]`` (this machine's measurements: a skipped step keeps the one made when
    it ran)."""
    if osp.exists(done):
        if name not in costs:
            raise RuntimeError(f'{done} exists but the CPU time of step {name!r} was not '
                               'recorded (pretraining_cost.json); delete it to run the step '
                               'again')
        print(f'[{name}] done earlier ({costs[name]:.0f} CPU s)', flush=True)
        return
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get('PYTHONPATH'))
                                          if p))
    log = osp.join(log_dir, f'{name}.log')
    print(f'[{name}] {" ".join(cmd)}', flush=True)
    before = children_cpu_s()
    with open(log, 'w') as f:
        proc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f'step {name!r} failed (exit {proc.returncode}); see {log}')
    if not osp.exists(done):
        raise RuntimeError(f'step {name!r} finished without writing {done}; see {log}')
    costs[name] = children_cpu_s() - before
    print(f'[{name}] {costs[name]:.0f} CPU s', flush=True)


def study_path(args):
    """The study's record (``pretraining_study.json`` in ``--out-dir``)."""
    return osp.join(args.out_dir, 'pretraining_study.json')


def load_study(args):
    """The study's record, empty before the first invocation."""
    if not osp.exists(study_path(args)):
        return {}
    with open(study_path(args)) as f:
        return json.load(f)


def save_study(args, study):
    os.makedirs(args.out_dir, exist_ok=True)
    with open(study_path(args), 'w') as f:
        json.dump(study, f, indent=1)


def sha256(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def pretrain(args, data_root):
    """Steps 1-3; returns (the fine-tuning initialisation, CPU seconds per step). The
    CPU seconds and the initialisation's sha256 go to the study's record; a chain run
    again on another machine keeps the CPU seconds recorded the first time, and its
    initialisation must hash as recorded once a MutDet-init or compute-matched run has
    finished (before that, a chain that gives another initialisation replaces the record:
    nothing depends on it yet). This machine's own CPU seconds stay in the work dir's
    ``pretraining_cost.json``."""
    out = osp.join(args.work_dir, 'mutdet')
    os.makedirs(out, exist_ok=True)
    record = osp.join(out, 'pretraining_cost.json')
    study = load_study(args)
    recorded = dict(study.get('pretraining_cpu_s', {}))
    py = sys.executable
    images = osp.join(data_root, 'train', 'images')
    work = osp.join(out, 'pretrain')
    last = osp.join(work, f'epoch_{args.pretrain_epochs}.pth')
    init = osp.join(out, 'mutdet_init.pth')
    steps = [
        ('proposals', [py, osp.join(ROOT, 'tools', 'pretraining', 'generate_proposals.py'),
                       images, osp.join(out, 'proposals')], osp.join(out, 'proposals')),
        ('embeddings', [py, osp.join(ROOT, 'tools', 'pretraining', 'extract_embeddings.py'),
                        '--depth', '18', '--checkpoint', 'none', '--seed', '0', '--out-size',
                        '64', images,
                        osp.join(out, 'proposals'), osp.join(out, 'embeddings')],
         osp.join(out, 'embeddings')),
        ('clusters', [py, osp.join(ROOT, 'tools', 'pretraining', 'cluster_embeddings.py'),
                      osp.join(out, 'embeddings'), osp.join(out, 'pseudo_labels'),
                      '--model', osp.join(out, 'clusters.pth'), '--fit',
                      '--num-clusters', str(PSEUDO_CLASSES), '--dim', str(args.embedding_dim)],
         osp.join(out, 'clusters.pth')),
        ('pretraining', [py, osp.join(ROOT, 'tools', 'train.py'), PRETRAIN_CONFIG,
                         '--work-dir', work, '--cfg-options',
                         'train_dataloader.dataset.data_root=',
                         f'train_dataloader.dataset.data_prefix.img_path={images}/',
                         'train_dataloader.dataset.data_prefix.pseudo_path='
                         f"{osp.join(out, 'pseudo_labels')}/",
                         f'train_cfg.max_epochs={args.pretrain_epochs}', 'randomness.seed=0',
                         f'model.object_channels={args.embedding_dim}',
                         f'optim_wrapper.optimizer.lr={args.pretrain_lr}'], last),
        ('conversion', [py, osp.join(ROOT, 'tools', 'model_converters', 'mutdet_to_finetune.py'),
                        last, osp.join(ablation.CFG_DIR, ablation.DECOUPLED), init], init),
    ]
    # this machine's measurements; a step done here by an older version, which kept no
    # measurement of its own, has the record's
    measured = dict(recorded)
    if osp.exists(record):
        with open(record) as f:
            measured.update(json.load(f))
    for name, cmd, done in steps:
        run_step(name, cmd, done, measured, out)
        with open(record, 'w') as f:
            json.dump(measured, f, indent=1)
    from bhcl.utils.machine import machine_record
    digest = sha256(init)
    here = machine_record()
    if study.get('mutdet_init_sha256', digest) != digest:
        made_on = (study.get('machine') or {}).get('cpu', 'a CPU the record does not name')
        bound = runs_on_the_record(args)
        if bound:
            raise RuntimeError(
                f"{init} (sha256 {digest}) is not the initialisation the study's finished "
                f"runs used ({', '.join(bound)}: sha256 {study['mutdet_init_sha256']}, "
                f'{study_path(args)}): the pre-training did not reproduce here '
                f'({here["cpu"]}; the record was made on {made_on}, and training repeats bit '
                'for bit on one kind of CPU only). Run the study from scratch in a new '
                '--out-dir, or on the machine kind that made the record')
        print(f"The recorded initialisation (sha256 {study['mutdet_init_sha256']}, made on "
              f'{made_on}) is not the one the chain gives here ({here["cpu"]}: sha256 '
              f'{digest}). No MutDet-init or compute-matched run has used it, so '
              f"{study_path(args)} now holds this machine's chain: its initialisation, CPU "
              'and CPU seconds.', flush=True)
        for key in CHAIN_KEYS:
            study.pop(key, None)
    costs = {**measured, **study.get('pretraining_cpu_s', {})}  # the first measurement stays
    for name in costs:
        if costs[name] != measured.get(name, costs[name]):
            print(f'[{name}] {measured[name]:.0f} CPU s here; the study keeps the '
                  f'{costs[name]:.0f} CPU s recorded when the chain first ran', flush=True)
    study.update(pretraining_cpu_s=costs, mutdet_init_sha256=digest)
    study.setdefault('machine', here)   # a kind of CPU on which the chain gives this init
    save_study(args, study)
    return init, costs


def runs_on_the_record(args):
    """The finished MutDet-init and compute-matched runs (in ``--out-dir``'s results.json
    or in ``--work-dir``): what binds the recorded chain (the first use its
    initialisation, the second train the iterations its CPU seconds give)."""
    found = set()
    earlier = osp.join(args.out_dir, 'results.json')
    if osp.exists(earlier):
        with open(earlier) as f:
            runs = json.load(f).get('runs', {})
        found |= {(variant, int(seed)) for variant in (MUTDET, MATCHED)
                  for seed in runs.get(variant, {})}
    for variant in (MUTDET, MATCHED):
        slug = ablation.VARIANTS_SLUG[variant]
        for path in glob.glob(osp.join(args.work_dir, 'runs', f'{slug}-seed*', 'result.json')):
            found.add((variant, int(osp.basename(osp.dirname(path)).rsplit('seed', 1)[1])))
    return [f'{variant!r} seed {seed}' for variant, seed in sorted(found)]


def ablation_args(args, variants, init, out_dir, matched_iters=None, report=False):
    """The ablation's command line for ``variants`` (its tables go to ``out_dir``, not
    to the shared ``--work-dir``)."""
    argv = ['--task', args.task, '--work-dir', args.work_dir, '--out-dir', out_dir,
            '--jobs', str(args.jobs),
            '--threads', '1', '--iters', str(args.iters), '--lr', str(args.lr),
            '--reference', SCRATCH, '--seeds', *map(str, args.seeds), '--variants', *variants]
    if init:
        argv += ['--mutdet-init', init]
    if matched_iters:
        argv += ['--matched-iters', str(matched_iters)]
    earlier = osp.join(out_dir, 'results.json')
    if osp.exists(earlier):  # the runs finished before, perhaps on another machine
        argv += ['--reuse', earlier]
    if MUTDET in variants and MATCHED in variants:   # the question the control answers
        argv += ['--pair', MUTDET, MATCHED]
    if report:
        argv.append('--report')
    return argv


def fine_tuning_cpu_per_iter(args, cpu=None):
    """Mean CPU seconds per training iteration over the finished scratch and MutDet-init
    runs that recorded them (both train the same model at the same step); given ``cpu``,
    only over the runs recorded on that CPU model (CPU seconds differ between kinds of
    CPU, and the pre-training's were measured on one)."""
    per_iter = []
    for variant in (SCRATCH, MUTDET):
        for seed in args.seeds:
            path = osp.join(ablation.run_path(args.work_dir, variant, seed), 'result.json')
            if osp.exists(path):
                with open(path) as f:
                    res = json.load(f)
                if cpu is not None and (res.get('machine') or {}).get('cpu') != cpu:
                    continue
                if res.get('train_cpu_s'):
                    per_iter.append(res['train_cpu_s'] / res['iters'])
    if not per_iter:
        raise RuntimeError('no fine-tuning run recorded its CPU time (train_cpu_s)'
                           + (f' on {cpu}, the CPU the pre-training was timed on'
                              if cpu is not None else '')
                           + f'; run the {SCRATCH!r} / {MUTDET!r} arms with this version '
                           'there first')
    return statistics.mean(per_iter), len(per_iter)


def matched_iterations(iters, pretrain_cpu_s, cpu_per_iter, epoch_iters):
    """``iters`` plus the pre-training's CPU seconds in fine-tuning iterations,
    rounded to whole epochs of ``epoch_iters`` (the ablation trains whole epochs)."""
    extra = pretrain_cpu_s / cpu_per_iter
    return iters + epoch_iters * max(1, round(extra / epoch_iters))


def matched_study(args, costs, epoch_iters):
    """The compute-matched arm's iterations with what they were computed from, fixed by
    the first invocation that can compute them (``pretraining_study.json``): a later
    invocation with more finished runs would otherwise re-estimate the CPU seconds per
    iteration, and a different rounding would make the matched runs already finished
    disagree with the rest."""
    path = study_path(args)
    study = load_study(args)
    if 'matched_iters' in study:
        if study['iters'] != args.iters:
            raise ValueError(f"{path} matched --iters {study['iters']}, not {args.iters}; "
                             'delete it (and the compute-matched runs) to match again')
        print(f"compute-matched scratch trains {study['matched_iters']} iterations "
              f'(fixed by {path})', flush=True)
        return study
    cpu_per_iter, runs = fine_tuning_cpu_per_iter(
        args, (study.get('machine') or {}).get('cpu'))
    pretrain_cpu = sum(costs.values())
    matched = matched_iterations(args.iters, pretrain_cpu, cpu_per_iter, epoch_iters)
    study.update(pretraining_cpu_s=costs, pretraining_cpu_s_total=pretrain_cpu,
                 fine_tuning_cpu_s_per_iter=cpu_per_iter, fine_tuning_runs_timed=runs,
                 pretraining_in_iterations=pretrain_cpu / cpu_per_iter, iters=args.iters,
                 matched_iters=matched)
    save_study(args, study)
    print(f'pre-training: {pretrain_cpu:.0f} CPU s = {pretrain_cpu / cpu_per_iter:.0f} '
          f'fine-tuning iterations ({cpu_per_iter:.3f} CPU s each, {runs} runs); '
          f'compute-matched scratch trains {matched} iterations', flush=True)
    return study


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--work-dir', default='work_dirs/grid',
                        help="the ablation's work dir (shared with --grid: same data, same "
                        "'+decoupling' runs)")
    parser.add_argument('--seeds', type=int, nargs='+', default=list(range(8)))
    parser.add_argument('--task', choices=sorted(ablation.TASKS), default='hierarchical')
    parser.add_argument('--jobs', type=int, default=2, help='fine-tuning runs at once')
    parser.add_argument('--iters', type=int, default=800,
                        help='fine-tuning iterations of the scratch and MutDet-init arms')
    parser.add_argument('--lr', type=float, default=1e-3, help='fine-tuning learning rate')
    parser.add_argument('--pretrain-epochs', type=int, default=2)
    parser.add_argument('--pretrain-lr', type=float, default=1e-3)
    parser.add_argument('--embedding-dim', type=int, default=256,
                        help='PCA dimension of the object embeddings (the config: 256)')
    parser.add_argument('--out-dir', default=osp.join(ROOT, 'docs', 'results', 'pretraining_study'),
                        help="the study's record and report (kept in the repository: a "
                        'later invocation, on this machine or another, goes on from it)')
    parser.add_argument('--report', action='store_true', help='report the finished runs only')
    args = parser.parse_args(argv)
    os.makedirs(args.work_dir, exist_ok=True)
    data_root, _, _, meta = ablation.bench_dataset(args.work_dir, args.task)
    if args.report:
        matched = load_study(args).get('matched_iters')
        return ablation.main(ablation_args(args, [SCRATCH, MUTDET, MATCHED], None, args.out_dir,
                                           matched, report=True))
    init, costs = pretrain(args, data_root)
    ablation.main(ablation_args(args, [SCRATCH, MUTDET], init, args.out_dir))
    epoch_iters = -(-meta['settings']['num_train'] // 4)
    matched = matched_study(args, costs, epoch_iters)['matched_iters']
    ablation.main(ablation_args(args, [MATCHED], None, args.out_dir, matched))
    ablation.main(ablation_args(args, [SCRATCH, MUTDET, MATCHED], init, args.out_dir, matched,
                                report=True))


if __name__ == '__main__':
    main()

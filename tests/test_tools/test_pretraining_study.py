"""benchmarks/pretraining_study.py: the compute-matched iterations and the resumable
pre-training chain."""
import json
import sys
from types import SimpleNamespace

import pytest
import torch

from bhcl.utils.machine import machine_record
from tests.conftest import load_script


def test_matched_iterations_add_the_pretraining_cpu_in_whole_epochs():
    study = load_script('benchmarks/pretraining_study.py')
    # 1000 CPU s of pre-training at 1.25 CPU s per fine-tuning iteration = 800 iterations
    assert study.matched_iterations(800, 1000.0, 1.25, 200) == 1600
    # 700 iterations round to 4 epochs of 200 (800), 590 to 3 (600)
    assert study.matched_iterations(800, 875.0, 1.25, 200) == 1600
    assert study.matched_iterations(800, 737.5, 1.25, 200) == 1400
    # never less than one epoch more than the arms it is compared with
    assert study.matched_iterations(800, 1.0, 1.25, 200) == 1000


def test_fine_tuning_cpu_per_iteration_from_both_arms_runs(tmp_path):
    study = load_script('benchmarks/pretraining_study.py')
    slug = study.ablation.VARIANTS_SLUG
    for variant, seed, cpu in ((study.SCRATCH, 0, 800.0), (study.MUTDET, 0, 1000.0),
                               (study.SCRATCH, 1, None)):   # no CPU time recorded: left out
        run = tmp_path / 'runs' / f'{slug[variant]}-seed{seed}'
        run.mkdir(parents=True)
        res = dict(iters=800, train_s=1.0, **({'train_cpu_s': cpu} if cpu else {}))
        (run / 'result.json').write_text(json.dumps(res))
    args = SimpleNamespace(work_dir=str(tmp_path), seeds=[0, 1, 2])
    assert study.fine_tuning_cpu_per_iter(args) == (pytest.approx(1.125), 2)
    with pytest.raises(RuntimeError, match='train_cpu_s'):
        study.fine_tuning_cpu_per_iter(SimpleNamespace(work_dir=str(tmp_path), seeds=[5]))


def test_fine_tuning_cpu_per_iteration_only_from_the_pretrainings_cpu(tmp_path):
    """CPU seconds differ between kinds of CPU: given the CPU the pre-training was
    timed on, only fine-tuning runs recorded on that CPU count."""
    study = load_script('benchmarks/pretraining_study.py')
    slug = study.ablation.VARIANTS_SLUG
    for variant, seed, cpu, model in ((study.SCRATCH, 0, 800.0, 'cpu A'),
                                      (study.MUTDET, 0, 1600.0, 'cpu B'),
                                      (study.SCRATCH, 1, 1000.0, None)):  # from before
        run = tmp_path / 'runs' / f'{slug[variant]}-seed{seed}'
        run.mkdir(parents=True)
        res = dict(iters=800, train_cpu_s=cpu, **({'machine': {'cpu': model}} if model else {}))
        (run / 'result.json').write_text(json.dumps(res))
    args = SimpleNamespace(work_dir=str(tmp_path), seeds=[0, 1])
    assert study.fine_tuning_cpu_per_iter(args, 'cpu A') == (pytest.approx(1.0), 1)
    assert study.fine_tuning_cpu_per_iter(args, 'cpu B') == (pytest.approx(2.0), 1)
    assert study.fine_tuning_cpu_per_iter(args) == (pytest.approx(3400 / 2400), 3)
    with pytest.raises(RuntimeError, match='on cpu C, the CPU the pre-training was timed on'):
        study.fine_tuning_cpu_per_iter(args, 'cpu C')


def test_matched_iterations_are_fixed_by_the_first_invocation(tmp_path):
    """A later invocation with more finished runs (another estimate of the CPU seconds
    per iteration) keeps the iterations the matched runs already trained."""
    study = load_script('benchmarks/pretraining_study.py')
    slug = study.ablation.VARIANTS_SLUG

    def finish(variant, seed, cpu):
        run = tmp_path / 'runs' / f'{slug[variant]}-seed{seed}'
        run.mkdir(parents=True)
        (run / 'result.json').write_text(json.dumps(dict(iters=800, train_cpu_s=cpu)))

    finish(study.SCRATCH, 0, 800.0)   # 1.0 CPU s per iteration
    out = tmp_path / 'record'
    args = SimpleNamespace(work_dir=str(tmp_path), out_dir=str(out), seeds=[0, 1], iters=800)
    costs = dict(proposals=100.0, pretraining=900.0)   # 1000 iterations -> 5 epochs of 200
    first = study.matched_study(args, costs, 200)
    assert first['matched_iters'] == 1800 and first['fine_tuning_runs_timed'] == 1
    assert first['pretraining_cpu_s_total'] == 1000.0
    finish(study.SCRATCH, 1, 1600.0)  # now 1.5 on average: would round to 1400
    assert study.matched_study(args, costs, 200) == first
    with pytest.raises(ValueError, match='matched --iters 800, not 400'):
        study.matched_study(SimpleNamespace(work_dir=str(tmp_path), out_dir=str(out),
                                            seeds=[0, 1], iters=400), costs, 200)
    (out / 'pretraining_study.json').unlink()
    assert study.matched_study(args, costs, 200)['matched_iters'] == 1400


def test_run_step_records_cpu_seconds_and_skips_a_finished_step(tmp_path):
    study = load_script('benchmarks/pretraining_study.py')
    out, costs = tmp_path / 'out.txt', {}
    busy = ('import sys, time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: '
            'pass\nopen(sys.argv[1], "w").write("x")')
    study.run_step('busy', [sys.executable, '-c', busy, str(out)], str(out), costs, str(tmp_path))
    assert out.exists() and 0.3 <= costs['busy'] < 5.0
    assert (tmp_path / 'busy.log').exists()
    recorded = dict(costs)
    study.run_step('busy', [sys.executable, '-c', 'raise SystemExit(3)'], str(out), costs,
                   str(tmp_path))   # its output exists: not run again
    assert costs == recorded
    with pytest.raises(RuntimeError, match="CPU time of step .other. was not recorded"):
        study.run_step('other', [sys.executable, '-c', 'pass'], str(out), {}, str(tmp_path))
    with pytest.raises(RuntimeError, match="step 'fails' failed .*fails.log"):
        study.run_step('fails', [sys.executable, '-c', 'raise SystemExit(3)'],
                       str(tmp_path / 'never'), {}, str(tmp_path))
    with pytest.raises(RuntimeError, match='without writing'):
        study.run_step('silent', [sys.executable, '-c', 'pass'], str(tmp_path / 'never'), {},
                       str(tmp_path))


@pytest.mark.slow
def test_pretraining_chain_runs_once_and_resumes(tmp_path):
    """Proposals, embeddings, clusters, one pre-training epoch and the conversion on 8
    tiny images; a second call finds every step done and runs nothing."""
    from tests.conftest import run_scripts
    study = load_script('benchmarks/pretraining_study.py')
    data = tmp_path / 'data'
    run_scripts(('tools/generate_synthetic_dataset.py', '--out', data, '--preset', 'bench',
                 '--num-train', '8', '--num-val', '2'))
    args = SimpleNamespace(work_dir=str(tmp_path / 'work'), pretrain_epochs=1,
                           pretrain_lr=1e-3, embedding_dim=32, out_dir=str(tmp_path / 'record'))
    init, costs = study.pretrain(args, str(data))
    assert set(costs) == {'proposals', 'embeddings', 'clusters', 'pretraining', 'conversion'}
    assert all(c > 0 for c in costs.values()) and costs['pretraining'] > costs['proposals']
    state = torch.load(init, map_location='cpu', weights_only=False)
    state = state.get('state_dict', state)
    assert any(k.startswith('neck.') for k in state)
    recorded = json.loads((tmp_path / 'work' / 'mutdet' / 'pretraining_cost.json').read_text())
    assert recorded == pytest.approx(costs)
    again, costs2 = study.pretrain(args, str(data))
    assert again == init and costs2 == pytest.approx(costs)
    record = json.loads((tmp_path / 'record' / 'pretraining_study.json').read_text())
    assert record['pretraining_cpu_s'] == pytest.approx(costs)
    assert record['mutdet_init_sha256'] == study.sha256(init)
    # another machine: an empty work dir, the record kept: every step runs again, the
    # initialisation hashes as recorded, the recorded CPU seconds stay
    args.work_dir = str(tmp_path / 'elsewhere')
    moved, costs3 = study.pretrain(args, str(data))
    assert moved != init and study.sha256(moved) == record['mutdet_init_sha256']
    assert costs3 == pytest.approx(costs)


def make_chain_outputs(tmp_path, weights=b'weights'):
    """The chain's outputs in a work dir (nothing runs): the init holds ``weights``."""
    work = tmp_path / 'work' / 'mutdet'
    for folder in ('proposals', 'embeddings', 'pretrain'):
        (work / folder).mkdir(parents=True, exist_ok=True)
    for name in ('clusters.pth', 'pretrain/epoch_2.pth'):
        (work / name).write_bytes(b'weights')
    (work / 'mutdet_init.pth').write_bytes(weights)
    return work


def test_an_initialisation_that_does_not_hash_as_recorded_stops_the_study(tmp_path):
    """The chain's outputs are there (nothing runs); the record's sha256 is another
    initialisation's, which a finished MutDet-init run used: the study stops rather than
    mix two initialisations in one arm."""
    study = load_script('benchmarks/pretraining_study.py')
    work = make_chain_outputs(tmp_path)
    costs = dict(proposals=1.0, embeddings=2.0, clusters=3.0, pretraining=4.0, conversion=5.0)
    record = tmp_path / 'record'
    args = SimpleNamespace(work_dir=str(tmp_path / 'work'), pretrain_epochs=2, pretrain_lr=1e-3,
                           embedding_dim=32, out_dir=str(record))
    record.mkdir()
    (record / 'pretraining_study.json').write_text(json.dumps(
        dict(pretraining_cpu_s=costs, mutdet_init_sha256=study.sha256(work / 'clusters.pth'))))
    init, got = study.pretrain(args, str(tmp_path / 'data'))   # the same bytes: accepted
    assert got == costs
    # a machine on which the chain gives the recorded init is recorded with it
    machine = json.loads((record / 'pretraining_study.json').read_text())['machine']
    assert machine == machine_record()
    (record / 'results.json').write_text(json.dumps({'runs': {study.MUTDET: {'3': {}}}}))
    (work / 'mutdet_init.pth').write_bytes(b'other weights')
    with pytest.raises(RuntimeError, match='did not reproduce here') as err:
        study.pretrain(args, str(tmp_path / 'data'))
    assert f"the record was made on {machine['cpu']}" in str(err.value)
    assert f"{study.MUTDET!r} seed 3" in str(err.value)
    # a finished run in the work dir binds it too
    (record / 'results.json').unlink()
    run = tmp_path / 'work' / 'runs' / f'{study.ablation.VARIANTS_SLUG[study.MATCHED]}-seed1'
    run.mkdir(parents=True)
    (run / 'result.json').write_text('{}')
    with pytest.raises(RuntimeError) as err:
        study.pretrain(args, str(tmp_path / 'data'))
    assert f"{study.MATCHED!r} seed 1" in str(err.value)


def test_a_chain_no_run_has_used_is_replaced_by_this_machines(tmp_path, capsys):
    """The record's chain (made on another kind of CPU) gives another initialisation
    here, and no MutDet-init or compute-matched run has finished: the record takes this
    machine's initialisation, CPU and CPU seconds, and drops the matched iterations
    derived from the old ones."""
    study = load_script('benchmarks/pretraining_study.py')
    work = make_chain_outputs(tmp_path, b'weights made here')
    here = dict(proposals=10.0, embeddings=20.0, clusters=30.0, pretraining=40.0,
                conversion=50.0)
    (work / 'pretraining_cost.json').write_text(json.dumps(here))   # measured on this machine
    record = tmp_path / 'record'
    record.mkdir()
    elsewhere = dict(proposals=1.0, embeddings=2.0, clusters=3.0, pretraining=4.0,
                     conversion=5.0)
    (record / 'pretraining_study.json').write_text(json.dumps(dict(
        pretraining_cpu_s=elsewhere, mutdet_init_sha256='0' * 64,
        machine={'cpu': 'another CPU'}, matched_iters=1400, iters=800)))
    (record / 'results.json').write_text(json.dumps({'runs': {study.SCRATCH: {'0': {}}}}))
    args = SimpleNamespace(work_dir=str(tmp_path / 'work'), pretrain_epochs=2, pretrain_lr=1e-3,
                           embedding_dim=32, out_dir=str(record))
    init, costs = study.pretrain(args, str(tmp_path / 'data'))
    assert costs == here
    saved = json.loads((record / 'pretraining_study.json').read_text())
    assert saved == dict(pretraining_cpu_s=here, mutdet_init_sha256=study.sha256(init),
                         machine=machine_record())
    assert 'made on another CPU' in capsys.readouterr().out
    # the new record holds from now on: the same bytes again keep it
    assert study.pretrain(args, str(tmp_path / 'data'))[1] == here


def test_a_chain_that_hashes_as_recorded_keeps_the_recorded_cpu_seconds(tmp_path, capsys):
    """Another machine of the kind that made the record: its chain gives the recorded
    initialisation; its own CPU seconds stay in its work dir, the record's stay."""
    study = load_script('benchmarks/pretraining_study.py')
    work = make_chain_outputs(tmp_path)
    here = dict(proposals=10.0, embeddings=20.0, clusters=30.0, pretraining=40.0,
                conversion=50.0)
    (work / 'pretraining_cost.json').write_text(json.dumps(here))
    first = {k: v / 10 for k, v in here.items()}
    record = tmp_path / 'record'
    record.mkdir()
    (record / 'pretraining_study.json').write_text(json.dumps(dict(
        pretraining_cpu_s=first, mutdet_init_sha256=study.sha256(work / 'mutdet_init.pth'))))
    args = SimpleNamespace(work_dir=str(tmp_path / 'work'), pretrain_epochs=2, pretrain_lr=1e-3,
                           embedding_dim=32, out_dir=str(record))
    assert study.pretrain(args, str(tmp_path / 'data'))[1] == first
    assert json.loads((work / 'pretraining_cost.json').read_text()) == here
    assert 'the study keeps the 4 CPU s recorded when the chain first ran' in \
        capsys.readouterr().out


def test_ablation_calls_keep_their_tables_out_of_the_shared_work_dir():
    study = load_script('benchmarks/pretraining_study.py')
    args = SimpleNamespace(task='hierarchical', work_dir='w', jobs=2, iters=800, lr=1e-3,
                           seeds=[0, 1])
    argv = study.ablation_args(args, [study.MATCHED], None, 'w/mutdet/report', 1600)
    assert argv[argv.index('--out-dir') + 1] == 'w/mutdet/report'
    assert argv[argv.index('--matched-iters') + 1] == '1600' and '--report' not in argv
    assert argv[argv.index('--reference') + 1] == study.SCRATCH
    report = study.ablation_args(args, [study.SCRATCH, study.MUTDET], 'init.pth', 'r', report=True)
    assert report[-1] == '--report' and report[report.index('--mutdet-init') + 1] == 'init.pth'
    assert '--matched-iters' not in report and '--reuse' not in report and '--pair' not in report
    # the three rows' report also pairs MutDet init with compute-matched scratch
    both = study.ablation_args(args, [study.SCRATCH, study.MUTDET, study.MATCHED], None, 'r',
                               1600, report=True)
    assert both[both.index('--pair') + 1:both.index('--pair') + 3] == [study.MUTDET, study.MATCHED]


def test_ablation_calls_reuse_the_runs_the_record_holds(tmp_path):
    """Runs finished before (the committed results.json of --out-dir) are taken, not
    trained again, by every ablation call of the study."""
    study = load_script('benchmarks/pretraining_study.py')
    args = SimpleNamespace(task='hierarchical', work_dir='w', jobs=2, iters=800, lr=1e-3,
                           seeds=[0, 1])
    (tmp_path / 'results.json').write_text('{"runs": {}}')
    for report in (False, True):
        argv = study.ablation_args(args, [study.SCRATCH], None, str(tmp_path), report=report)
        assert argv[argv.index('--reuse') + 1] == str(tmp_path / 'results.json')

"""tools/slurm_train.sh with stand-in sbatch / srun / scontrol: the job asks
for SIGUSR1 before its time limit, passes it on to training, and requeues
itself when training stopped with its checkpoint (status 75), not otherwise."""
import os
import os.path as osp
import signal
import subprocess
import time

import pytest

from tests.conftest import REPO_ROOT

FAKES = {
    'sbatch': 'printf "%s\\n" "$@" > "$LOG/sbatch_args"\n'
              'cat > "$LOG/job.sh"\necho "Submitted batch job 42"\n',
    # a training stand-in: exits 75 on SIGUSR1 (as tools/train.py does), else $TRAIN_STATUS
    'srun': 'trap \'echo usr1 >> "$LOG/srun_signals"; exit 75\' USR1\n'
            'printf "%s\\n" "$@" > "$LOG/srun_args"\n'
            'for _ in $(seq "${TRAIN_TICKS:-200}"); do sleep 0.05; done\n'
            'exit "${TRAIN_STATUS:-0}"\n',
    'scontrol': 'printf "%s\\n" "$@" > "$LOG/scontrol_args"\n',
}


@pytest.fixture
def fake_slurm(tmp_path):
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    for name, body in FAKES.items():
        (bin_dir / name).write_text('#!/usr/bin/env bash\n' + body)
        (bin_dir / name).chmod(0o755)
    env = dict(os.environ, PATH=f'{bin_dir}:{os.environ["PATH"]}', LOG=str(tmp_path),
               GPUS='2', TIME='4:00:00')
    work_dir = str(tmp_path / 'work')
    proc = subprocess.run(['bash', osp.join(REPO_ROOT, 'tools', 'slurm_train.sh'), 'gpu', 'job',
                           'configs/x.py', work_dir, '--amp'],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return tmp_path, env


def _lines(path):
    return path.read_text().split('\n')[:-1]


def _start_job(tmp_path, env, **extra):
    env = dict(env, SLURM_JOB_ID='42', **extra)
    job = subprocess.Popen(['bash', str(tmp_path / 'job.sh')], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for _ in range(200):  # until the training stand-in runs
        if (tmp_path / 'srun_args').exists():
            break
        time.sleep(0.02)
    return job


def test_submission_asks_for_a_signal_and_requeue(fake_slurm):
    tmp_path, _ = fake_slurm
    args = _lines(tmp_path / 'sbatch_args')
    for expected in ('--signal=B:USR1@300', '--requeue', '--time=4:00:00', '--ntasks=2',
                     '--open-mode=append', '--job-name=job'):
        assert expected in args
    assert args[:2] == ['-p', 'gpu']


def test_usr1_reaches_training_and_the_job_requeues(fake_slurm):
    tmp_path, env = fake_slurm
    job = _start_job(tmp_path, env)
    job.send_signal(signal.SIGUSR1)
    out, _ = job.communicate(timeout=30)
    assert job.returncode == 75, out
    assert _lines(tmp_path / 'srun_signals') == ['usr1']
    assert _lines(tmp_path / 'scontrol_args') == ['requeue', '42']
    train = _lines(tmp_path / 'srun_args')
    assert train[0] == '--kill-on-bad-exit=1'
    assert train[train.index('python') + 3:] == [
        'configs/x.py', f'--work-dir={tmp_path}/work', '--launcher=slurm', '--resume', '--amp']


@pytest.mark.parametrize('status', ['0', '1', '75'])
def test_no_requeue_without_the_time_limit_signal(fake_slurm, status):
    """Finished, crashed, or stopped by a signal Slurm sent the tasks itself
    (scancel, preemption: Slurm requeues preempted jobs on its own)."""
    tmp_path, env = fake_slurm
    job = _start_job(tmp_path, env, TRAIN_STATUS=status, TRAIN_TICKS='2')
    out, _ = job.communicate(timeout=30)
    assert job.returncode == int(status), out
    assert not (tmp_path / 'scontrol_args').exists()

#!/usr/bin/env bash
# GPUS=8 bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args...]
# Submits a batch job that trains with one task per GPU (srun; mmengine reads the
# SLURM_* variables with --launcher slurm) and survives its time limit and
# preemption: Slurm sends SIGUSR1 SIGNAL_LEAD seconds before the limit, training
# saves a checkpoint at the next iteration and exits with status 75, and the job
# requeues itself; every start resumes from the work dir (--resume), so the first
# one starts from scratch and the later ones continue exactly.
# Environment: GPUS (total, 8), GPUS_PER_NODE (8), CPUS_PER_TASK (5), TIME (time
# limit, e.g. 24:00:00; the partition's default if unset), SIGNAL_LEAD (seconds,
# 300; leave room for an iteration and a checkpoint), SBATCH_ARGS and SRUN_ARGS
# (extra options, e.g. "--qos=preemptible"). The job's log is WORK_DIR/slurm-JOBID.out.
set -euo pipefail
if [ $# -lt 4 ]; then
    echo "usage: [GPUS=8] bash $0 PARTITION JOB_NAME CONFIG WORK_DIR [train.py args...]" >&2
    exit 2
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
WORK_DIR=$4
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-$(( GPUS < 8 ? GPUS : 8 ))}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SIGNAL_LEAD=${SIGNAL_LEAD:-300}
SBATCH_ARGS=${SBATCH_ARGS:-""}
SRUN_ARGS=${SRUN_ARGS:-""}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
NODES=$(( (GPUS + GPUS_PER_NODE - 1) / GPUS_PER_NODE ))
mkdir -p "$WORK_DIR"

TRAIN=$(printf '%q ' python -u "$ROOT/tools/train.py" "$CONFIG" --work-dir="$WORK_DIR" \
    --launcher=slurm --resume "${@:5}")
TIME_ARG=()
if [ -n "${TIME:-}" ]; then TIME_ARG=(--time="$TIME"); fi

# shellcheck disable=SC2086  # SBATCH_ARGS / SRUN_ARGS hold several options
sbatch -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    --nodes="$NODES" \
    --gres=gpu:"$GPUS_PER_NODE" \
    --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" \
    --signal=B:USR1@"$SIGNAL_LEAD" \
    --requeue \
    --open-mode=append \
    --output="$WORK_DIR/slurm-%j.out" \
    ${TIME_ARG[@]+"${TIME_ARG[@]}"} \
    $SBATCH_ARGS <<EOF
#!/usr/bin/env bash
# Written by tools/slurm_train.sh. USR1 (the time limit is near) reaches this
# shell only (B:); it is passed on to srun, which passes it to every task.
set -uo pipefail
export PYTHONPATH="$ROOT:\${PYTHONPATH:-}"
echo "[slurm_train] job \$SLURM_JOB_ID start \${SLURM_RESTART_COUNT:-0} on \$(hostname) at \$(date)"
TRAIN_PID=""
ASKED=0
on_usr1() {
    ASKED=1
    echo "[slurm_train] time limit near: asking training to checkpoint and stop"
    if [ -n "\$TRAIN_PID" ]; then kill -USR1 "\$TRAIN_PID"; fi
}
trap on_usr1 USR1
# scancel and preemption signal the tasks themselves; wait for their checkpoint
trap 'echo "[slurm_train] SIGTERM: waiting for training to checkpoint and stop"' TERM
srun --kill-on-bad-exit=1 $SRUN_ARGS $TRAIN &
TRAIN_PID=\$!
while true; do
    wait \$TRAIN_PID
    STATUS=\$?
    kill -0 \$TRAIN_PID 2>/dev/null || break   # wait was cut short by the signal
done
if [ "\$STATUS" -eq 75 ] && [ "\$ASKED" -eq 1 ]; then
    echo "[slurm_train] checkpoint saved; requeueing job \$SLURM_JOB_ID"
    scontrol requeue "\$SLURM_JOB_ID"
fi
exit \$STATUS
EOF

#!/usr/bin/env bash
# Slurm training: tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args...]
# GPUS (total, default 8), GPUS_PER_NODE (8), CPUS_PER_TASK (5), SRUN_ARGS: optional env.
#
# Preemption (docs/reliability.md): SIGTERM / SIGUSR1 to the training tasks (Slurm's preemption,
# or `sbatch --signal=USR1@120`) makes them checkpoint and exit with status 75. Inside a batch
# job this script then runs `scontrol requeue $SLURM_JOB_ID`; when Slurm restarts the requeued
# job (SLURM_RESTART_COUNT > 0) training continues with --resume from WORK_DIR.
set -euo pipefail
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
WORK_DIR=$4
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
EXIT_PREEMPTED=75
DIR=$(cd "$(dirname "$0")" && pwd)

RESUME=()
if [[ "${SLURM_RESTART_COUNT:-0}" -gt 0 && " ${*:5} " != *" --resume"* ]]; then
    RESUME=(--resume)
    echo "slurm_train.sh: restart ${SLURM_RESTART_COUNT} of job ${SLURM_JOB_ID:-?}: resuming from $WORK_DIR"
fi

# the tasks receive the signal themselves; the batch shell keeps waiting for srun, then requeues
trap 'echo "slurm_train.sh: preemption signal received; waiting for the tasks to checkpoint"' TERM USR1

status=0
PYTHONPATH="$DIR/..${PYTHONPATH:+:$PYTHONPATH}" \
srun -p "$PARTITION" --job-name="$JOB_NAME" --gres=gpu:"$GPUS_PER_NODE" \
    --ntasks="$GPUS" --ntasks-per-node="$GPUS_PER_NODE" --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 $SRUN_ARGS \
    python -u "$DIR/train.py" "$CONFIG" --work-dir="$WORK_DIR" --launcher slurm "${@:5}" "${RESUME[@]}" \
    || status=$?

if [[ $status -eq $EXIT_PREEMPTED ]]; then
    if [[ -n "${SLURM_JOB_ID:-}" ]]; then
        echo "slurm_train.sh: training was preempted and checkpointed; requeueing job $SLURM_JOB_ID"
        scontrol requeue "$SLURM_JOB_ID" \
            || echo "slurm_train.sh: scontrol requeue $SLURM_JOB_ID failed; resubmit with --resume" >&2
    else
        echo "slurm_train.sh: training was preempted and checkpointed; not inside a batch job," \
             "so nothing is requeued: run this command again with --resume" >&2
    fi
fi
exit $status

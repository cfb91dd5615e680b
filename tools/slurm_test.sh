#!/usr/bin/env bash
# Testing on a slurm cluster, one task per GPU:
#   GPUS=4 tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [ARGS...]
# GPUS (default 4), GPUS_PER_NODE (4), CPUS_PER_TASK (5) and SRUN_ARGS shape
# the job; GPUS_PER_NODE=0 asks for no GPU (CPU tasks, gloo). PYTHON picks
# the interpreter (see tools/python.sh).
set -euo pipefail
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
CHECKPOINT=$4
GPUS=${GPUS:-4}
GPUS_PER_NODE=${GPUS_PER_NODE:-4}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
TOOLS="$(cd "$(dirname "$0")" && pwd)"
source "$TOOLS/python.sh"
GRES=()
[ "$GPUS_PER_NODE" -gt 0 ] && GRES=(--gres=gpu:"$GPUS_PER_NODE")
TASKS_PER_NODE=$(( GPUS_PER_NODE > 0 ? GPUS_PER_NODE : GPUS ))

set -x
PYTHONPATH="$TOOLS/..${PYTHONPATH:+:$PYTHONPATH}" \
srun -p "$PARTITION" --job-name="$JOB_NAME" "${GRES[@]}" \
    --ntasks="$GPUS" --ntasks-per-node="$TASKS_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" --kill-on-bad-exit=1 $SRUN_ARGS \
    "$PYTHON" -u "$TOOLS/test.py" "$CONFIG" "$CHECKPOINT" \
    --launcher=slurm "${@:5}"

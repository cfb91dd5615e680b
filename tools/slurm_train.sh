#!/usr/bin/env bash
# Training on a slurm cluster, one task per GPU:
#   GPUS=8 tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [ARGS...]
# GPUS (default 4), GPUS_PER_NODE (4), CPUS_PER_TASK (5) and SRUN_ARGS shape
# the job; GPUS_PER_NODE=0 asks for no GPU (CPU tasks, gloo). PYTHON picks
# the interpreter (see tools/launch.sh).
set -euo pipefail
source "$(dirname "$0")/launch.sh"
srun_tool "$1" "$2" train.py "$3" --work-dir="$4" "${@:5}"

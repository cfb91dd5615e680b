#!/usr/bin/env bash
# Distributed training, one process per GPU (nccl), or NPROC processes on a
# machine without one (gloo):
#   tools/dist_train.sh CONFIG NPROC [ARGS...]
# Each process's batch is train_dataloader.batch_size; the global batch is
# NPROC times that. NNODES, NODE_RANK, MASTER_ADDR and PORT set a multi-node
# run; PYTHON picks the interpreter (see tools/launch.sh).
set -euo pipefail
source "$(dirname "$0")/launch.sh"
torchrun_tool train.py "$2" "$1" "${@:3}"

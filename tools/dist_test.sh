#!/usr/bin/env bash
# Distributed testing, one process per GPU (nccl), or NPROC processes on a
# machine without one (gloo):
#   tools/dist_test.sh CONFIG CHECKPOINT NPROC [ARGS...]
# NNODES, NODE_RANK, MASTER_ADDR and PORT set a multi-node run; PYTHON picks
# the interpreter (see tools/launch.sh).
set -euo pipefail
source "$(dirname "$0")/launch.sh"
torchrun_tool test.py "$3" "$1" "$2" "${@:4}"

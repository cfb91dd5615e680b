#!/usr/bin/env bash
# Distributed testing, one process per GPU (nccl), or NPROC processes on a
# machine without one (gloo):
#   tools/dist_test.sh CONFIG CHECKPOINT NPROC [ARGS...]
# NNODES, NODE_RANK, MASTER_ADDR and PORT set a multi-node run; PYTHON picks
# the interpreter (see tools/python.sh).
set -euo pipefail
CONFIG=$1
CHECKPOINT=$2
NPROC=$3
TOOLS="$(cd "$(dirname "$0")" && pwd)"
source "$TOOLS/python.sh"

PYTHONPATH="$TOOLS/..${PYTHONPATH:+:$PYTHONPATH}" \
"$PYTHON" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29500}" \
    --nproc_per_node="$NPROC" \
    "$TOOLS/test.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "${@:4}"

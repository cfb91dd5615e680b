#!/usr/bin/env bash
# Distributed training, one process per GPU (nccl), or NPROC processes on a
# machine without one (gloo):
#   tools/dist_train.sh CONFIG NPROC [ARGS...]
# Each process's batch is train_dataloader.batch_size; the global batch is
# NPROC times that. NNODES, NODE_RANK, MASTER_ADDR and PORT set a multi-node
# run; PYTHON picks the interpreter (see tools/python.sh).
set -euo pipefail
CONFIG=$1
NPROC=$2
TOOLS="$(cd "$(dirname "$0")" && pwd)"
source "$TOOLS/python.sh"

PYTHONPATH="$TOOLS/..${PYTHONPATH:+:$PYTHONPATH}" \
"$PYTHON" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29500}" \
    --nproc_per_node="$NPROC" \
    "$TOOLS/train.py" "$CONFIG" --launcher pytorch "${@:3}"

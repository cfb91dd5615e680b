# Sourced by the launcher scripts (dist_*.sh, slurm_*.sh, gpu_check.sh).
#
# Which Python runs mmcc, in order: $PYTHON; the active virtual or conda
# environment's `python`; the project's own .venv (what `make setup`
# creates), so a user who never activated it can launch; else python3.
TOOLS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ -z "${PYTHON:-}" ]; then
    if [ -n "${VIRTUAL_ENV:-}${CONDA_PREFIX:-}" ] && command -v python >/dev/null; then
        PYTHON=python
    elif [ -x "$TOOLS/../.venv/bin/python" ]; then
        PYTHON="$(cd "$TOOLS/.." && pwd)/.venv/bin/python"
    else
        PYTHON=python3
    fi
fi

# torchrun_tool TOOL NPROC [ARGS...]: NPROC processes of tools/TOOL on this
# node (NNODES, NODE_RANK, MASTER_ADDR and PORT set a multi-node run).
torchrun_tool() {
    local tool=$1 nproc=$2
    shift 2
    PYTHONPATH="$TOOLS/..${PYTHONPATH:+:$PYTHONPATH}" \
    "$PYTHON" -m torch.distributed.run \
        --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
        --master_addr="${MASTER_ADDR:-127.0.0.1}" \
        --master_port="${PORT:-29500}" --nproc_per_node="$nproc" \
        "$TOOLS/$tool" "$@" --launcher pytorch
}

# srun_tool PARTITION JOB_NAME TOOL [ARGS...]: tools/TOOL as a slurm job of
# GPUS tasks (default 4), GPUS_PER_NODE a node (4; 0 asks for no GPU: CPU
# tasks, gloo), CPUS_PER_TASK cores each (5), with SRUN_ARGS.
srun_tool() {
    local partition=$1 job=$2 tool=$3
    shift 3
    local gpus=${GPUS:-4} per_node=${GPUS_PER_NODE:-4}
    local gres=()
    [ "$per_node" -gt 0 ] && gres=(--gres=gpu:"$per_node")
    local tasks_per_node=$(( per_node > 0 ? per_node : gpus ))
    set -x
    # shellcheck disable=SC2086  # SRUN_ARGS holds several words
    PYTHONPATH="$TOOLS/..${PYTHONPATH:+:$PYTHONPATH}" \
    srun -p "$partition" --job-name="$job" "${gres[@]}" \
        --ntasks="$gpus" --ntasks-per-node="$tasks_per_node" \
        --cpus-per-task="${CPUS_PER_TASK:-5}" --kill-on-bad-exit=1 \
        ${SRUN_ARGS:-} "$PYTHON" -u "$TOOLS/$tool" "$@" --launcher=slurm
}

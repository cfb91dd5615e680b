#!/usr/bin/env bash
# Every CUDA path of mmcc, for the day a GPU is at hand (no machine of the
# project's has one): faiss GPU indexes, --amp, the memory update and the
# evaluation on the device (gpu_check.py), the CUDA-marked tests, and with
# two or more GPUs the two-process tests over nccl. A few minutes on one or
# two GPUs; prints a line per path and exits non-zero on any failure.
#   tools/analysis_tools/gpu_check.sh
set -u
cd "$(dirname "$0")/../.."
source tools/launch.sh
status=0
report() {  # report NAME EXIT_CODE
    if [ "$2" -eq 0 ]; then echo "ok   $1"; else echo "FAIL $1"; status=1; fi
}

"$PYTHON" tools/analysis_tools/gpu_check.py
report "gpu_check.py (faiss-gpu, amp, memory update, evaluation)" $?

"$PYTHON" -m pytest -q -m cuda tests >/tmp/mmcc_gpu_check_cuda.log 2>&1
report "tests marked cuda (log: /tmp/mmcc_gpu_check_cuda.log)" $?

gpus=$("$PYTHON" -c 'import torch; print(torch.cuda.device_count())')
if [ "$gpus" -ge 2 ]; then
    "$PYTHON" -m pytest -q tests/test_distributed.py \
        >/tmp/mmcc_gpu_check_nccl.log 2>&1
    report "nccl: 2 processes on 2 GPUs (log: /tmp/mmcc_gpu_check_nccl.log)" $?
else
    echo "skip nccl: needs 2 GPUs, found $gpus"
fi
exit $status

#!/usr/bin/env bash
# The GPU checks of issue 15 as one short run (about 3-5 minutes on one H200), from any folder:
#   bash benchmarks/gpu_check.sh
# 1. the CUDA tests, which skip on a machine without a GPU: recording does not synchronise the
#    stream between steps (tests/capture/test_cuda_nosync.py), CUDA records equal the CPU path's,
#    fp16 autocast with a GradScaler and torch.compile on CUDA (tests/capture/test_amp_compile.py);
# 2. benchmarks/overhead.py --device cuda --quick: a GPT-2-small-sized model from a config (nothing
#    downloaded), bf16 autocast; every=1/10/100, the copy waited for, floor and naive hooks, as
#    ratios over the plain step, the peak memory added, and the aten ops and kernel launches a
#    recorded step adds.
# Needs a python with a CUDA build of torch, pytest and gradscope's requirements (numpy, pyyaml,
# click, tabulate, matplotlib); gradscope itself is imported from this checkout. PYTHON picks the
# interpreter (default python3). Exit status: 0 when both parts passed.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 GRADSCOPE_TEST_THREADS=4

"$PYTHON" - <<'EOF' || exit 2
import sys
import torch
if not torch.cuda.is_available():
    sys.exit("gpu_check: this python's torch sees no CUDA GPU (a CPU build, or no driver): nothing to check here.")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}", flush=True)
EOF

status=0
echo "== CUDA tests"
timeout 240 "$PYTHON" -m pytest -q -rs -p no:cacheprovider tests/capture/test_cuda_nosync.py \
    tests/capture/test_amp_compile.py -k "cuda" || status=1
echo "== CUDA benchmark"
timeout 300 "$PYTHON" benchmarks/overhead.py --device cuda --quick || status=1
echo "== gpu_check: $([ $status = 0 ] && echo passed || echo FAILED)"
exit $status

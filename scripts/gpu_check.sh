#!/usr/bin/env bash
# The GPU path in one command (issue 20), for the first time a CUDA machine is at hand:
#   1. the tests marked `gpu` (pretrain and transfer steps in mixed precision, evaluation on the
#      device, DDP across GPUs when there are several), then
#   2. scripts/bench_device.py: ptxssl beside a plain PyTorch loop, fp32 and mixed precision,
#      channels-last, peak GPU memory, post-fit evaluation s / 1000 images.
# Sized to finish in under 8 minutes on one H100 (not yet timed: no GPU so far). The table goes
# to stdout and to ${OUT:-.}/gpu_check.md.
# Without CUDA it says so in one line and exits 0.
#   bash scripts/gpu_check.sh            (PYTHON=.venv/bin/python to pick the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check: no CUDA device here (torch.cuda.is_available() is False); nothing measured"
    exit 0
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 MPLBACKEND=Agg
"$PY" -c "import torch; print('gpu_check:', torch.cuda.device_count(), 'x', torch.cuda.get_device_name(), '| torch', torch.__version__)"
"$PY" -m pytest -q -m gpu -p no:cacheprovider tests
"$PY" scripts/bench_device.py --out "${OUT:-.}/gpu_check.md"

#!/usr/bin/env bash
# Real-GPU checks for issue 17, on a machine with an NVIDIA driver and at least one GPU.
#
# Prints what the driver reports, then runs tests/worker/test_real_nvml.py: `--gpus all` in a
# real task (CUDA_DEVICE_ORDER=PCI_BUS_ID, UUIDs in NVIDIA_VISIBLE_DEVICES and on the
# task, CUDA's devices in NVML's PCI order, asked of libcuda), per-GPU metrics and the
# health gauges, NVML events, and MIG listing when a GPU is in MIG mode.  Every test
# skips, with the reason, where NVML does not initialise.
#
# Needs fleet installed with its test extra in .venv (bash tests/run.sh, or
# `python3 -m venv .venv && .venv/bin/pip install -e '.[test]'`); no network is used.
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
echo "== driver"
nvidia-smi -L || echo "nvidia-smi: not available"
nvidia-smi --query-gpu=index,uuid,pci.bus_id,name,mig.mode.current,ecc.mode.current --format=csv || true
echo "== python: $PY"
"$PY" -c "import pynvml; pynvml.nvmlInit(); print('NVML', pynvml.nvmlSystemGetDriverVersion())" || true
echo "== tests/worker/test_real_nvml.py"
exec "$PY" -m pytest -p no:cacheprovider -v -rs -s tests/worker/test_real_nvml.py "$@"

#!/usr/bin/env bash
# Set up a Cloud TPU VM for this project: run it on the TPU VM, in a clone of the repository.
#
#   scripts/setup_tpu_vm.sh [--bucket gs://BUCKET/PATH] [--venv DIR] [--pypi-torch]
#
#   1. a virtualenv (default .venv) with the torch / torch_xla pair of requirements-xla.txt
#      (torch 2.9.0 + torch-xla[tpu] 2.9.0, which brings libtpu) and the rest of requirements.txt
#      minus its torch line (DVC, dvc-gs, transformers, peft, ...);
#   2. PJRT_DEVICE=TPU written into the venv's activate script, so every `dvc repro`,
#      `dvc exp run` and `dvc queue start` launched from an activated shell trains on the TPU;
#   3. a check that torch_xla sees the TPU chips, and a tiny step on one of them;
#   4. with --bucket, the DVC remote of this clone pointed at your bucket and made its default (in .dvc/config.local,
#      not committed) and checked with scripts/remote_check.py.
#
# torch comes from the PyTorch CPU wheel index (about 200 MB; a TPU VM has no use for the 4 GB CUDA
# build that PyPI serves for torch 2.9.0); --pypi-torch takes PyPI's instead. docs/tpu.md walks
# through the whole set-up, from creating the VM to running the queue.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
BUCKET=
TORCH_INDEX=https://download.pytorch.org/whl/cpu
while [ $# -gt 0 ]; do
  case $1 in
    --bucket) BUCKET=$2; shift 2 ;;
    --venv) VENV=$2; shift 2 ;;
    --pypi-torch) TORCH_INDEX=; shift ;;
    -h | --help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 13))'; then
  echo "error: torch_xla 2.9 needs Python 3.10 to 3.13; $PY is $("$PY" -V 2>&1). Set PYTHON=python3.X" >&2
  exit 2
fi
if ! "$PY" -m venv --help >/dev/null 2>&1 || ! "$PY" -c 'import ensurepip' 2>/dev/null; then
  echo "installing python3-venv (sudo)" >&2
  sudo apt-get update -q && sudo apt-get install -y -q python3-venv
fi

echo "== 1/4 virtualenv $VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
pair=$(sed -e 's/#.*//' -e 's/[[:space:]]*$//' requirements-xla.txt | grep -v '^$')
torch_pin=$(printf '%s\n' "$pair" | grep -E '^torch==')
xla_pin=$(printf '%s\n' "$pair" | grep -E '^torch-xla==')
if [ -n "$TORCH_INDEX" ]; then
  "$VENV/bin/pip" install -q "$torch_pin" --index-url "$TORCH_INDEX"
fi
rest=$(mktemp)
grep -v -E '^[[:space:]]*torch[[:space:]]*([=<>!~;[]|$)' requirements.txt >"$rest"
# torch-xla[tpu] pulls libtpu; torch stays at the pinned version (already there from the CPU index)
"$VENV/bin/pip" install -q "$torch_pin" "${xla_pin/torch-xla==/torch-xla[tpu]==}" -r "$rest"
rm -f "$rest"

echo "== 2/4 PJRT_DEVICE=TPU in $VENV/bin/activate"
if ! grep -q 'PJRT_DEVICE=TPU' "$VENV/bin/activate"; then
  printf '\n# lora-dvc: train on the TPU through torch_xla (PJRT runtime)\nexport PJRT_DEVICE=TPU\n' >>"$VENV/bin/activate"
fi

echo "== 3/4 torch_xla on the TPU"
PJRT_DEVICE=TPU "$VENV/bin/python" - <<'EOF'
import torch, torch_xla
import torch_xla.runtime as xr
from torch_xla._internal import tpu

chips = tpu.num_available_chips()
if chips == 0:
    raise SystemExit("error: no TPU chip on this VM's PCI bus; is this a TPU VM?")
device = torch_xla.device()
x = torch.randn(128, 128, device=device)
y = (x @ x.T).sum()
torch_xla.sync()
print(f"torch {torch.__version__}, torch_xla {torch_xla.__version__}, TPU {tpu.version()}: "
      f"{chips} chip(s), {xr.global_runtime_device_count()} device(s) in this process; matmul ok ({float(y):.1f})")
EOF

echo "== 4/4 DVC remote"
if [ -n "$BUCKET" ]; then
  "$VENV/bin/dvc" remote modify --local gcs url "$BUCKET"
  "$VENV/bin/dvc" remote default --local gcs   # this machine's default; the committed config sets none
  "$VENV/bin/python" scripts/remote_check.py || echo "(fix the remote as the line above says; training does not need it)" >&2
else
  echo "no --bucket given: the remote stays as .dvc/config has it ($("$VENV/bin/dvc" remote list | tr '\t' ' '))"
  echo "set it later with: dvc remote modify --local gcs url gs://BUCKET/PATH && dvc remote default --local gcs (see docs/remote.md)"
fi

cat <<EOF

Done. Next:
  source $VENV/bin/activate            # sets PJRT_DEVICE=TPU
  dvc repro                            # train.device: auto picks the TPU
  dvc exp run -S train.cores=all       # data-parallel over every core of this host
  dvc exp run --queue -S lora.r=8,16,32 && dvc queue start -j 1   # one worker per TPU host
EOF

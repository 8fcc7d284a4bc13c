#!/usr/bin/env bash
# The XLA test environment: torch 2.9 + torch_xla 2.9 (requirements-xla.txt) and the rest of
# requirements.txt without its torch line, in a virtualenv cached outside the clone.
#
#   .ci/xla_env.sh                 build or reuse it, print its folder
#   .ci/xla_env.sh CMD [ARGS...]   the same, then run CMD from the repository root with that
#                                  venv first on PATH, PJRT_DEVICE=CPU (unless set) and
#                                  LORA_DVC_REQUIRE_XLA=1 (tests/test_xla.py fails, not skips,
#                                  without torch_xla); e.g. .ci/xla_env.sh python -m pytest -q tests/test_xla.py
#
# The folder is ${XLA_VENV:-${XDG_CACHE_HOME:-~/.cache}/lora-dvc/xla-venv-<hash>}, the hash taken
# over the requirement lines and the Python version: a change to either builds a new one (and
# removes the old ones, about 7 GB each). The torch 2.9.0 wheel on PyPI is a CUDA build: the first
# build downloads about 4 GB (3 to 4 minutes here); a reuse takes a second.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-python3}

reqs=$({
  cat "$root/requirements-xla.txt"
  grep -v -E '^[[:space:]]*torch[[:space:]]*([=<>!~;[]|$)' "$root/requirements.txt"
} | sed -e 's/#.*//' -e 's/[[:space:]]*$//' | grep -v '^$')
key=$({ printf '%s\n' "$reqs"; "$py" -c 'import sys; print(sys.version)'; } | sha256sum | cut -c1-12)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/lora-dvc
venv=${XLA_VENV:-$cache/xla-venv-$key}
mkdir -p "$(dirname "$venv")"

exec 9>"$venv.lock"
flock 9  # two CI jobs on one machine: the second waits for the first build, then reuses it
if [ -f "$venv/.complete" ]; then
  echo "xla_env: reusing $venv" >&2
else
  started=$(date +%s)
  rm -rf "$venv"
  "$py" -m venv "$venv"
  printf '%s\n' "$reqs" >"$venv/requirements.txt"
  PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/pip" install -q -r "$venv/requirements.txt"
  PJRT_DEVICE=CPU "$venv/bin/python" -c \
    'import torch, torch_xla; assert torch.__version__.startswith("2.9."), torch.__version__; torch_xla.device()'
  touch "$venv/.complete"
  echo "xla_env: built $venv in $(($(date +%s) - started)) s" >&2
  if [ -z "${XLA_VENV:-}" ]; then
    for old in "$cache"/xla-venv-*; do
      case $old in "$venv" | "$venv.lock") ;; *) rm -rf "$old" ;; esac
    done
  fi
fi
flock -u 9

if [ $# -eq 0 ]; then
  echo "$venv"
  exit 0
fi
cd "$root"
export PATH="$venv/bin:$PATH" PJRT_DEVICE=${PJRT_DEVICE:-CPU} LORA_DVC_REQUIRE_XLA=1
export HF_HUB_OFFLINE=1 DVC_NO_ANALYTICS=1 TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
exec "$@"

#!/usr/bin/env bash
# What one SkyPilot sweep job runs (sky/sweep.yaml), in a clone of the project at the launched commit:
#
#   1. dvc exp run --pull --allow-missing [-n EXP_NAME] -S ... : fetches from the DVC remote only the
#      cached inputs the changed stages need (the prepared and tokenized data when only lora.* or
#      train.* changed), and trains;
#   2. dvc exp push GIT_REMOTE [EXP_NAME] : the experiment's git ref to the git remote and its
#      outputs (the adapter) to the default DVC remote, the gs:// bucket.
#
# Environment (set per job by `lora-dvc sky launch`):
#   OVERRIDES             the -S values, shell-quoted, space-separated ('lora.r=4 lora.targets=qv')
#   EXP_NAME              the experiment's name; empty: DVC makes one up and every experiment on HEAD is pushed
#   GIT_REMOTE            git remote name or URL for dvc exp push (default origin)
#   DVC_REMOTE            DVC remote to pull from and push to, made this clone's default (default: the
#                         committed default remote, if any)
#   LORA_DVC_CHECKPOINTS  gs:// folder for the trainer's checkpoints, so a preempted job resumes
#   DVC                   the dvc command (default: dvc on PATH)
#
# It runs as is on a workstation too (tests/test_sky.py runs it against a GCS emulator).
set -euo pipefail

DVC=${DVC:-dvc}
GIT_REMOTE=${GIT_REMOTE:-origin}
EXP_NAME=${EXP_NAME:-}

if ! git rev-parse --git-dir >/dev/null 2>&1; then
  echo "error: $(pwd) is not a git clone; SkyPilot's workdir must include .git (no .git in .skyignore)" >&2
  exit 2
fi
if [ -z "${LORA_DVC_CHECKPOINTS:-}" ]; then
  echo "warning: LORA_DVC_CHECKPOINTS is not set: a preempted job restarts training from step 0" >&2
else
  export LORA_DVC_CHECKPOINTS
fi

if [ -n "${DVC_REMOTE:-}" ]; then
  $DVC remote default --local "$DVC_REMOTE"  # --pull and exp push use the default remote
fi

# the -S values, split as the shell would but without evaluating anything in them
mapfile -t OVERRIDE_LIST < <(python -c 'import os, shlex
print(*shlex.split(os.environ.get("OVERRIDES", "")), sep="\n")')
SET_ARGS=()
for value in "${OVERRIDE_LIST[@]}"; do
  [ -n "$value" ] && SET_ARGS+=(-S "$value")
done
NAME_ARGS=()
[ -n "$EXP_NAME" ] && NAME_ARGS=(-n "$EXP_NAME")

echo "sky_job: commit $(git rev-parse --short HEAD), experiment '${EXP_NAME:-<auto>}', overrides: ${OVERRIDES:-<none>}"
$DVC exp run --pull --allow-missing "${NAME_ARGS[@]}" "${SET_ARGS[@]}"
if [ -n "$EXP_NAME" ]; then
  $DVC exp push "$GIT_REMOTE" "$EXP_NAME"
else
  $DVC exp push "$GIT_REMOTE" --rev HEAD
fi
echo "sky_job: pushed experiment '${EXP_NAME:-<auto>}' to $GIT_REMOTE and its outputs to the DVC remote"

#!/usr/bin/env bash
# Run the DVC experiment queue with one worker per accelerator, each worker pinned to its device.
#
#   dvc exp run --queue -S 'lora.r=4,8,16,32'        # queue the sweep as usual, then
#   scripts/queue_per_device.sh                      # one worker per GPU (CUDA_VISIBLE_DEVICES=0, 1, ...)
#   scripts/queue_per_device.sh --var CUDA_VISIBLE_DEVICES --values 0,1
#   scripts/queue_per_device.sh --var OMP_NUM_THREADS --values 1,1      # CPU: 2 workers x 1 thread
#
# How: `dvc queue start -j N` starts workers dvc-exp-<hash>-1..N that all inherit one environment,
# so it cannot pin devices. It does skip workers that are already running, so calling it N times,
# with -j 1, -j 2, ... -j N and a different device variable each time, adds exactly one worker per
# call with its own environment; every experiment that worker picks up inherits it. The script
# waits for each worker to show in `dvc queue status` before adding the next (else the next call
# would not see it and start a second worker 1), then until no experiment is queued or running
# (the idle workers exit by themselves about 10 s later).
#
# Parallel queue workers are experimental in DVC and have an open race (treeverse/dvc#10673:
# with -j > 1 some experiments fail with no logs); docs/scaling.md says what was measured here.
# A failed experiment is listed by `dvc queue status`; re-queue it with its params.
set -euo pipefail

VAR=CUDA_VISIBLE_DEVICES
VALUES=
while [ $# -gt 0 ]; do
  case $1 in
    --var) VAR=$2; shift 2 ;;
    --values) VALUES=$2; shift 2 ;;
    -h | --help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ -z "$VALUES" ]; then
  if ! command -v nvidia-smi >/dev/null; then
    echo "error: no nvidia-smi to count GPUs; pass --values (e.g. --values 0,1)" >&2
    exit 2
  fi
  VALUES=$(nvidia-smi --query-gpu=index --format=csv,noheader | paste -sd, -)
fi
IFS=, read -r -a DEVICES <<<"$VALUES"

running_workers() {
  dvc queue status 2>/dev/null | awk '/^Worker status:/ { print $3 + $5 }'  # active + idle
}
wait_for_workers() {  # wait_for_workers N: until N workers run (or the queue is already empty)
  for _ in $(seq 120); do
    [ "$(running_workers)" -ge "$1" ] 2>/dev/null && return 0
    sleep 0.5
  done
  echo "warning: worker $1 did not show up in dvc queue status within 60 s" >&2
}

for i in "${!DEVICES[@]}"; do
  echo "worker $((i + 1)): $VAR=${DEVICES[$i]}"
  env "$VAR=${DEVICES[$i]}" dvc queue start -j "$((i + 1))" >/dev/null
  wait_for_workers "$((i + 1))"
done
queue_busy() {  # a task still queued or running; a status that cannot be read (locked) counts as busy
  local status
  status=$(dvc queue status 2>/dev/null) || return 0
  grep -Eq ' (Queued|Running)$' <<<"$status"
}
while queue_busy; do
  sleep 5  # each status is a dvc process: seconds of CPU the experiments need
done
dvc queue status

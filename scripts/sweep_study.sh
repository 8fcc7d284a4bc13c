#!/usr/bin/env bash
# The published study's sweep in one command: queue every configuration with `dvc exp run --queue`,
# run the queue, wait for it, then print `dvc exp show` and write reports/comparison.md.
#
#   scripts/sweep_study.sh                       # the embedded default: MiniLM on AG News, 7 runs, 1 worker
#   scripts/sweep_study.sh -j 2                  # 2 queue workers (CPU only, see below)
#   scripts/sweep_study.sh --seeds 42,43,44      # every configuration x 3 seeds (mean ± std in the report;
#                                                # tfidf runs once: it has no randomness)
#   scripts/sweep_study.sh --configs qv-r4,tfidf -- -S data.max_train_rows=2000   # a subset, extra -S
#   scripts/sweep_study.sh --preset xlmr-banglasenti --data data/raw/banglasenti/merged.csv   # GPU/TPU study
#   scripts/sweep_study.sh --dry-run             # print the dvc commands, queue nothing
#
# Configurations (alpha = 2r throughout, as in the study):
#   qv-r4 qv-r16 qv-r32   LoRA r 4/16/32 on query+value
#   qkv-r32 all-r32       LoRA r 32 on query+key+value, and on query+key+value+dense
#   full                  full fine-tuning (train.method=full)
#   tfidf                 TF-IDF + logistic regression (train.method=tfidf)
#
# One accelerator, one worker: each queue worker runs its own training process, and with one GPU or
# one TPU two of them fight over the device (out-of-memory on a GPU; a TPU can be opened by only one
# process). So -j > 1 is refused when torch sees a CUDA device or torch_xla is installed, unless
# --force-parallel (for when each run pins its own device). CPU-only machines may use more workers.
#
# The script never runs `dvc queue stop`: idle workers exit by themselves about a minute after the
# queue drains, and a stop sent to drained workers would stay behind and make the next workers quit
# after one task. If workers are gone while tasks are still queued, it starts them again.
set -euo pipefail

PYTHON=${PYTHON:-python}
JOBS=1
FORCE_PARALLEL=0
PRESET=minilm
DATA_PATH=
CONFIGS=qv-r4,qv-r16,qv-r32,qkv-r32,all-r32,full,tfidf
SEEDS=
DRY_RUN=0
COMPARE=1
POLL=${SWEEP_POLL_SECONDS:-10}
EXTRA=()

die() { echo "error: $*" >&2; exit 2; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    -j|--jobs) [[ $# -ge 2 ]] || die "$1 needs a number"; JOBS=$2; shift 2 ;;
    -j*) JOBS=${1#-j}; shift ;;
    --force-parallel) FORCE_PARALLEL=1; shift ;;
    --preset) [[ $# -ge 2 ]] || die "--preset needs minilm or xlmr-banglasenti"; PRESET=$2; shift 2 ;;
    --data) [[ $# -ge 2 ]] || die "--data needs a path"; DATA_PATH=$2; shift 2 ;;
    --configs) [[ $# -ge 2 ]] || die "--configs needs a comma-separated list"; CONFIGS=$2; shift 2 ;;
    --seeds) [[ $# -ge 2 ]] || die "--seeds needs a comma-separated list of integers"; SEEDS=$2; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --no-compare) COMPARE=0; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) die "unknown option '$1' (see --help; pass dvc -S overrides after --)" ;;
  esac
done

[[ "$JOBS" =~ ^[1-9][0-9]*$ ]] || die "-j '$JOBS': expected a positive integer"
[[ -z "$SEEDS" || "$SEEDS" =~ ^-?[0-9]+(,-?[0-9]+)*$ ]] || die "--seeds '$SEEDS': expected integers separated by commas, e.g. 42,43,44"
[[ -f dvc.yaml && -f params.yaml ]] || die "run from the repository root (no dvc.yaml/params.yaml in $(pwd))"

# ---- the grid ---------------------------------------------------------------------------------
case "$PRESET" in
  minilm)
    # the embedded default: params.yaml's model and data (all-MiniLM-L6-v2, AG News), 1 epoch
    [[ -z "$DATA_PATH" ]] || die "--data is for --preset xlmr-banglasenti; with minilm pass -- -S data.path=..."
    COMMON=()
    LORA_LR=(-S train.lr=0.001)
    FULL_LR=(-S train.lr=0.0001)
    ;;
  xlmr-banglasenti)
    # the TPU study: xlm-roberta-base on BanglaSenti, 10 epochs, batch 64; needs the hub (or a local copy)
    DATA_PATH=${DATA_PATH:-data/raw/banglasenti}
    [[ -e "$DATA_PATH" ]] || die "--data '$DATA_PATH' not found (point it at the merged BanglaSenti CSV)"
    COMMON=(-S data.dataset=banglasenti -S "data.path=$DATA_PATH" -S model.name=xlm-roberta-base
            -S train.epochs=10 -S train.batch_size=64)
    LORA_LR=(-S train.lr=5e-5)
    FULL_LR=(-S train.lr=2e-5)
    ;;
  *) die "--preset '$PRESET': expected minilm or xlmr-banglasenti" ;;
esac

config_args() {  # the -S overrides of one named configuration
  local lora=(-S train.method=lora "${LORA_LR[@]}")
  case "$1" in
    qv-r4)   echo "${lora[*]} -S lora.targets=qv -S lora.r=4 -S lora.alpha=8" ;;
    qv-r16)  echo "${lora[*]} -S lora.targets=qv -S lora.r=16 -S lora.alpha=32" ;;
    qv-r32)  echo "${lora[*]} -S lora.targets=qv -S lora.r=32 -S lora.alpha=64" ;;
    qkv-r32) echo "${lora[*]} -S lora.targets=qkv -S lora.r=32 -S lora.alpha=64" ;;
    all-r32) echo "${lora[*]} -S lora.targets=all -S lora.r=32 -S lora.alpha=64" ;;
    full)    echo "-S train.method=full ${FULL_LR[*]}" ;;
    tfidf)   echo "-S train.method=tfidf" ;;
    *) return 1 ;;
  esac
}

IFS=, read -r -a CONFIG_LIST <<< "$CONFIGS"
[[ ${#CONFIG_LIST[@]} -gt 0 ]] || die "--configs is empty"
for name in "${CONFIG_LIST[@]}"; do
  config_args "$name" > /dev/null || die "--configs: unknown configuration '$name' (known: qv-r4 qv-r16 qv-r32 qkv-r32 all-r32 full tfidf)"
done

# ---- single-accelerator guard -----------------------------------------------------------------
if [[ "$JOBS" -gt 1 && "$FORCE_PARALLEL" -eq 0 ]]; then
  accelerator=$("$PYTHON" - <<'EOF'
import importlib.util
found = []
if importlib.util.find_spec("torch_xla") is not None:
    found.append("torch_xla is installed (TPU)")
try:
    import torch
    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        found.append(f"torch sees {torch.cuda.device_count()} CUDA device(s)")
except Exception:
    pass
print("; ".join(found))
EOF
)
  if [[ -n "$accelerator" ]]; then
    die "-j $JOBS refused: $accelerator, and queue workers would fight over the device; use -j 1 (or --force-parallel if every run pins its own device)"
  fi
fi

DVC=("$PYTHON" -m dvc)
commands=()
for name in "${CONFIG_LIST[@]}"; do
  read -r -a args <<< "$(config_args "$name")"
  cmd=("${DVC[@]}" exp run --queue "${COMMON[@]}" "${args[@]}")
  # one -S with a comma list = one run per seed; TF-IDF + logistic regression has no randomness to average
  [[ -z "$SEEDS" || "$name" == tfidf ]] || cmd+=(-S "train.seed=$SEEDS")
  cmd+=("${EXTRA[@]}")
  commands+=("$(printf '%q ' "${cmd[@]}")")
done

if [[ "$DRY_RUN" -eq 1 ]]; then
  printf '%s\n' "${commands[@]}"
  echo "${DVC[*]} queue start -j $JOBS"
  exit 0
fi

untracked=$(git ls-files --others --exclude-standard -- stages dvc.yaml params.yaml data 2>/dev/null || true)
if [[ -n "$untracked" ]]; then
  echo "warning: queued runs see only what git tracks (plus uncommitted changes to tracked files); untracked:" >&2
  echo "$untracked" | sed 's/^/  /' >&2
fi

# ---- the baseline ------------------------------------------------------------------------------
# Queued runs start from the baseline's outputs (dvc.lock). Whatever of them is missing from the
# local cache (a fresh clone) each run would recompute (or fetch, where a default remote is set);
# the baseline is made local once first: `dvc repro`, a no-op when it is up to date (or after
# `dvc pull` from the team's bucket).
if [[ "$("${DVC[@]}" status --json 2>/dev/null | tr -d '[:space:]')" != "{}" ]]; then
  echo "+ ${DVC[*]} repro   # the baseline is not up to date in this workspace: reproduce it before queueing"
  "${DVC[@]}" repro || die "dvc repro of the baseline failed; fix it (or dvc pull) before queueing a sweep"
fi

# ---- queue, run, wait -------------------------------------------------------------------------
# The experiments are followed through dvc.api.exp_show() (scripts/sweep_wait.py): the ones that did
# not exist before queueing are this sweep's, whatever names dvc gave them.
BEFORE=$(mktemp)
trap 'rm -f "$BEFORE"' EXIT
"$PYTHON" scripts/sweep_wait.py names > "$BEFORE" || die "could not list the experiments (dvc.api.exp_show)"
BASE_REV=$(git rev-parse HEAD)  # the sweep's commit: commits made while it runs must not hide its experiments
for cmd in "${commands[@]}"; do
  echo "+ $cmd"
  eval "$cmd" || die "queueing failed: $cmd"
done

"${DVC[@]}" queue start -j "$JOBS"
started=$(date +%s)
sweep_rc=0
"$PYTHON" scripts/sweep_wait.py wait --before "$BEFORE" -j "$JOBS" --poll "$POLL" --rev "$BASE_REV" || sweep_rc=$?
[[ "$sweep_rc" -le 1 ]] || die "waiting for the queue failed (scripts/sweep_wait.py exited $sweep_rc)"
echo "sweep done in $(( $(date +%s) - started ))s"

"${DVC[@]}" exp show --no-pager --md --rev "$BASE_REV" --drop '.*' \
  --keep '^(Experiment|State)$|^lora\.(r|alpha|targets|dropout|rslora|dora)$|^train\.(method|batch_size|lr|epochs|seed)$|^(val|test)\.(accuracy|macro_f1|loss)$|^fit\.(trainable_params|seconds)$|^test\.learned$' \
  --sort-by test.accuracy --sort-order desc || true
if [[ "$COMPARE" -eq 1 ]]; then
  "$PYTHON" -m lora_dvc.compare --rev "$BASE_REV" || echo "warning: python -m lora_dvc.compare failed" >&2
fi
exit "$sweep_rc"  # 1 when some experiment did not succeed (sweep_wait.py named them)

#!/usr/bin/env bash
# The first run on a fresh CUDA machine, from the repository root after the README's set-up (with the
# CUDA build of torch):
#
#   bash bench/gpu_check.sh [RESULTS_DIR]        # default bench/results/gpu-<date>; about 20 minutes
#
# 1. the CUDA tests (tests/integration/gpu/, and tests/unit/test_unpadded_attention.py and
#    test_modern_model.py with their CUDA tests): parity with transformers in bf16, a ZeRO-2 bf16 engine
#    that learns, flash or memory-efficient SDPA, unpadded = padded (BERT, and ModernBERT's windowed
#    varlen route), no recompiles over batches of one shape; a skip here is a failure;
# 2. bench/train_throughput.py --model base, ours eager and compiled against transformers, at length 128
#    (micro batch 256, with a torch.profiler trace of a few steps) and 512 (micro batch 64);
# 3. the trainer itself, experiment=bert_base_phase1 for 60 steps on the sample's shards at ZeRO 0, 1
#    and 2 (bf16, compiled), with its own tokens/s and MFU (read back from its W&B offline log);
# 4. the modern recipes (experiment=modernbert_base, electra_base, bert_base_mlm30) for 60 steps each on
#    no-NSP dynamic shards of the sample, with their tokens/s and MFU.
#
# Everything goes under RESULTS_DIR: summary.txt (what ran, the figures), one log per step, profile/
# (traces), work/ (the shards, built here from the Wikipedia sample) and train-*/ (the runs,
# checkpoints removed). It stops at the first failure and says where its log is. docs/gpu.md has more.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-bench/results/gpu-$(date +%Y-%m-%d)}
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"

say() { echo "$*" | tee -a "$SUMMARY"; }

# step NAME COMMAND...: run COMMAND with its output in $OUT/NAME.log; say what ran, how long it took,
# and on failure its exit code and the end of its log, then stop.
step() {
  local name=$1 rc=0 start=$SECONDS
  shift
  say "== $name: $*"
  "$@" >"$OUT/$name.log" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ]; then
    say "FAILED: $name exited with $rc; the end of $OUT/$name.log:"
    tail -n 40 "$OUT/$name.log" | tee -a "$SUMMARY"
    exit "$rc"
  fi
  say "   done in $((SECONDS - start)) s"
}

# quote NAME PATTERN: the lines of a step's log that match PATTERN, into the summary.
quote() { grep -E "$2" "$OUT/$1.log" | sed 's/^/   /' | tee -a "$SUMMARY" || true; }

changes=$(git status --porcelain --untracked-files=no 2>/dev/null | head -c 1 || true)
say "bench/gpu_check.sh, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)${changes:+ with local changes}, results in $OUT"
python - <<'EOF' | tee -a "$SUMMARY"
import sys

import torch

if not torch.cuda.is_available():
    print(f"FAILED: no CUDA device (torch {torch.__version__}, CUDA build {torch.version.cuda}); on a GPU machine, install the CUDA build of torch")
    sys.exit(1)
import deepspeed  # noqa: E402  (after the check: without CUDA it prints a warning of its own)
import transformers  # noqa: E402

p = torch.cuda.get_device_properties(0)
print(f"{torch.cuda.device_count()} x {p.name}, {p.total_memory / 2**30:.1f} GiB, capability {p.major}.{p.minor}")
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), deepspeed {deepspeed.__version__}, transformers {transformers.__version__}")
EOF
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || say "(nvidia-smi not found; the device line above comes from torch)"

# report_run RUN LABEL: tokens/s, MFU and memory per logging interval of a trainer run, from its W&B offline log.
report_run() {
  python - "$1" "$2" <<'EOF' | tee -a "$SUMMARY"
import sys

from training.report import tracked_history

run, label = sys.argv[1], sys.argv[2]
rows, _, notes = tracked_history(run)
rows = [r for r in rows if "perf/tokens_per_s" in r]
if not rows:
    sys.exit(f"no perf/tokens_per_s in {run}'s W&B offline log ({notes})")
for r in rows:  # the first interval includes compilation
    mfu = f"{r['perf/mfu']:.1%}" if "perf/mfu" in r else "n/a (peak unknown: trainer.peak_tflops)"
    print(
        f"   {label} steps to {r['step']}: {r['perf/tokens_per_s']:,.0f} tokens/s, MFU {mfu}, "
        f"peak memory {r.get('perf/memory_gb', float('nan')):.1f} GB, loss {r['train/loss']:.3f}"
    )
EOF
}

# --- 1. CUDA tests -----------------------------------------------------------------------------
step cuda-tests python -m pytest -q -rs -p no:cacheprovider tests/integration/gpu tests/unit/test_unpadded_attention.py \
  tests/unit/test_modern_model.py --junitxml="$OUT/cuda-tests.xml"
quote cuda-tests "passed|failed"
if grep -qE "[0-9]+ skipped" "$OUT/cuda-tests.log"; then
  say "FAILED: tests were skipped on a CUDA machine (their reasons are in $OUT/cuda-tests.log)"
  exit 1
fi

# --- 2. throughput: ours eager and compiled against transformers, BERT-Base ---------------------
step throughput-128 python bench/train_throughput.py --model base --seq-len 128 --micro-batch 256 \
  --warmup 5 --steps 20 --rounds 2 --work "$OUT/work" --profile "$OUT/profile"
quote throughput-128 "^(ours|transformers)|ratio|goal|^profile"
step throughput-512 python bench/train_throughput.py --model base --seq-len 512 --micro-batch 64 \
  --warmup 5 --steps 20 --rounds 2 --work "$OUT/work"
quote throughput-512 "^(ours|transformers)|ratio"

# --- 3. the trainer: experiment=bert_base_phase1 at ZeRO 0, 1 and 2 ------------------------------
for stage in 0 1 2; do
  run="$OUT/train-zero$stage"
  rm -rf "$run"  # a fresh run, not a resume of an earlier check
  step "train-zero$stage" python -m training experiment=bert_base_phase1 "deepspeed=zero$stage" \
    data_dir="$OUT/work/shards-128" output_dir="$run" logger=wandb_offline \
    trainer.max_steps=60 trainer.log_every=20 trainer.eval_every=0 trainer.eval_steps=5 \
    trainer.checkpoint_every=1000 trainer.export_hf=false optim.warmup_steps=10
  rm -rf "$run/checkpoints"  # 1.3 GB each; the logs and steps.jsonl stay
  report_run "$run" "ZeRO-$stage"
done

# --- 4. the modern recipes: ModernBERT-style MLM at 30%, ELECTRA, BERT at 30%; 60 steps each ------
step shards-none python -m pipeline output_dir="$OUT/work/shards-none" instances=none masking=dynamic overwrite=true
for recipe in modernbert_base electra_base bert_base_mlm30; do
  run="$OUT/train-$recipe"
  rm -rf "$run"
  step "train-$recipe" python -m training "experiment=$recipe" \
    data_dir="$OUT/work/shards-none" output_dir="$run" logger=wandb_offline \
    trainer.max_steps=60 trainer.log_every=20 trainer.eval_every=0 trainer.eval_steps=5 \
    trainer.checkpoint_every=1000 trainer.export_hf=false optim.warmup_steps=10 optim.warmup_ratio=null
  rm -rf "$run/checkpoints"
  report_run "$run" "$recipe"
done

say "all checks passed; figures above, logs and traces in $OUT"

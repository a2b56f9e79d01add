#!/usr/bin/env bash
# ranker_train_ratio: issue 12's second speed check, through the CLI.
#   X = `ranker train --max-tokens 1536 --history 20`'s closing-table line
#       `| training tokens/s | X |` on a SmolLM2-135M-shaped F32 model with
#       stories260K's vocabulary (`model random --shape smollm2-135m --vocab`);
#   P = the same model's prefill tokens/s through `llm logits --ids` of 1536 ids
#       (its stderr line `prefill: N tokens in S s (P tokens/s)`), fastest of 2;
#   prints X, P and X / P (goal >= 0.45).
# Data: ml-latest-small under $MLLM4REC_DATA, ./data or ../shared/data, prepared and
# given a short retriever (for the candidates) under build/bench/ratio once.
#   RATIO_THREADS (2) threads for both, RATIO_STEPS (3) optimiser steps of RATIO_BATCH (2) prompts
#   (1536 tokens each here: the prompts are cut from the left); the first step also pays
#   for first-touching the training state, so a longer run gives a steadier X.
set -eu
BIN=${MLLM4REC_BIN:-build/mllm4rec}
THREADS=${RATIO_THREADS:-2}
STEPS=${RATIO_STEPS:-3}
BATCH=${RATIO_BATCH:-2}
OUT=build/bench/ratio
mkdir -p "$OUT"
src=""
for d in "${MLLM4REC_DATA:-}" ./data ../shared/data; do
  [ -n "$d" ] && [ -f "$d/ml-latest-small/ratings.csv" ] && { src="$d/ml-latest-small"; break; }
done
if [ -z "$src" ]; then echo "ranker_train_ratio: skip (ml-latest-small not found)"; exit 0; fi
vocab=models/stories260K.gguf
[ -f "$vocab" ] || { echo "ranker_train_ratio: $vocab not found" >&2; exit 1; }
model=$OUT/smollm2-135m-stories-f32.gguf
[ -f "$model" ] || "$BIN" model random --shape smollm2-135m --vocab "$vocab" --type f32 --out "$model" >&2
[ -f "$OUT/ml/meta.json" ] || "$BIN" prepare --format movielens --input "$src" --out "$OUT/ml" >&2
[ -f "$OUT/retriever/retriever.safetensors" ] ||
  "$BIN" retriever train --dataset "$OUT/ml" --out "$OUT/retriever" --max-epochs 2 --seed 1 --threads "$THREADS" >&2
[ -f "$OUT/retriever/candidates.tsv" ] ||
  "$BIN" retriever candidates --dataset "$OUT/ml" --run "$OUT/retriever" --threads "$THREADS" >&2

# X: a short training run, validation kept small (it is not counted in X)
rm -rf "$OUT/ranker"
"$BIN" ranker train --dataset "$OUT/ml" --candidates "$OUT/retriever/candidates.tsv" --model "$model" \
  --out "$OUT/ranker" --max-tokens 1536 --history 20 --threads "$THREADS" --max-steps "$STEPS" --batch "$BATCH" \
  --val-every 1000 --val-users 1 --seed 1 > "$OUT/train.out" 2> "$OUT/train.err" ||
  { cat "$OUT/train.err" >&2; exit 1; }
X=$(sed -n 's/^| training tokens\/s | \([0-9.]*\) |$/\1/p' "$OUT/train.out")
[ -n "$X" ] || { echo "ranker_train_ratio: no training tokens/s line in ranker train's output" >&2; exit 1; }

# P: prefill of 1536 ids (ids drawn from the vocabulary, fixed seed), fastest of 2
nv=$("$BIN" llm logits --model "$model" --ids 1 --full --threads "$THREADS" 2>/dev/null | awk '{ print NF - 1; exit }')
ids=$(awk -v n="$nv" 'BEGIN { srand(1); for (i = 0; i < 1536; i++) printf "%d ", 1 + int(rand() * (n - 1)) }')
P=0
for _ in 1 2; do
  p=$("$BIN" llm logits --model "$model" --ids "$ids" --threads "$THREADS" --top 1 2>&1 >/dev/null |
    sed -n 's/^prefill: 1536 tokens in .* s (\([0-9.]*\) tokens\/s)$/\1/p')
  [ -n "$p" ] || { echo "ranker_train_ratio: no prefill line from llm logits" >&2; exit 1; }
  P=$(awk -v a="$P" -v b="$p" 'BEGIN { print (b > a ? b : a) }')
done
R=$(awk -v x="$X" -v p="$P" 'BEGIN { printf "%.3f", x / p }')
echo "{\"model\": \"smollm2-135m-f32 (stories260K vocabulary)\", \"threads\": $THREADS, \"training_tokens_per_s\": $X, \"prefill_tokens_per_s\": $P, \"ratio\": $R}"
echo "| ranker train vs llm logits, smollm2-135m f32, 1536 tokens, $THREADS threads | value |"
echo "|---|---:|"
echo "| ranker train: training tokens/s | $X |"
echo "| llm logits --ids (1536 ids): prefill tokens/s | $P |"
echo "| training / prefill (goal >= 0.45) | $R |"

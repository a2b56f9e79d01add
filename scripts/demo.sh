#!/usr/bin/env bash
# `make demo`: the pipeline on its default data, ml-latest-small (the paper's "ML-100K").
#
# Stages are shell functions run in the order listed in DEMO_STAGES at the bottom.
# Later stages (retriever, captions, ranker) add a function `stage_NAME` below the
# marked line and append NAME to DEMO_STAGES; each stage reads what earlier ones
# left in the variables below (DATA_DIR, DATASET) and writes under $DEMO.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${MLLM4REC_BIN:-build/mllm4rec}
DEMO=${MLLM4REC_DEMO_DIR:-build/demo}
SHARED=${MLLM4REC_SHARED:-../shared}
URL=${MLLM4REC_DEMO_URL:-https://files.grouplens.org/datasets/movielens/ml-latest-small.zip}
DATA_DIR=""                       # the ml-latest-small folder used (stage_data)
DATASET="$DEMO/ml-latest-small"   # the prepared dataset folder (stage_prepare)

# sha256 of the unzipped files, from ../shared/data/SOURCES.md (DESIGN section 8)
SUMS="63d22ac138e80fae37021797ed8e1b9424b5239dc576a137422adf783ae3f404  README.txt
97ad18e4e56a09363c65676b6cb3482ce3e2cea2372a24620c1599c843325f31  links.csv
5a5f32dd9bb3797b8e728a1b98958789d2b13f294a69fdfbc5727f8a9611aa07  movies.csv
aa289ca83157595d0df6aea1be6a4ded676ddc4385472e8313a8ed9805352646  ratings.csv
92a9f8bb7916dceef6151209845788c3643f794dfa79d1feaec7121b5960399d  tags.csv"

step() { printf '\n== %s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

verify_sums() { # $1 = folder holding the five files
  (cd "$1" && printf '%s\n' "$SUMS" | sha256sum --quiet -c -)
}

offline_help() {
  cat >&2 <<MSG
demo: ml-latest-small was not found and could not be downloaded.
  Put the GroupLens archive's files in one of these places and run 'make demo' again:
    \$MLLM4REC_DATA/ml-latest-small/ratings.csv   (set MLLM4REC_DATA to the folder above it)
    ./data/ml-latest-small/ratings.csv            (in this repository)
    $SHARED/data/ml-latest-small/ratings.csv
  The archive: $URL
  (unzip it inside ./data; it holds ml-latest-small/ with ratings.csv, movies.csv,
   links.csv, tags.csv and README.txt; their sha256 sums are checked).
MSG
  exit 1
}

stage_data() {
  step "data: finding ml-latest-small"
  local c
  for c in ${MLLM4REC_DATA:+"$MLLM4REC_DATA/ml-latest-small"} ./data/ml-latest-small "$SHARED/data/ml-latest-small"; do
    if [ -f "$c/ratings.csv" ] && [ -f "$c/movies.csv" ]; then DATA_DIR=$c; break; fi
  done
  if [ -z "$DATA_DIR" ]; then
    echo "not found locally; downloading $URL"
    mkdir -p "$DEMO"
    local zip="$DEMO/ml-latest-small.zip"
    "$BIN" fetch --url "$URL" --out "$zip" || offline_help
    command -v unzip > /dev/null || die "unzip is missing (apt-get install unzip)"
    rm -rf "$DEMO/unzip" && mkdir -p "$DEMO/unzip"
    unzip -q "$zip" -d "$DEMO/unzip" || die "$zip: cannot unzip"
    verify_sums "$DEMO/unzip/ml-latest-small" ||
      die "the downloaded files differ from the sums in SOURCES.md; not using them ($DEMO/unzip)"
    mkdir -p data && rm -rf data/ml-latest-small
    mv "$DEMO/unzip/ml-latest-small" data/ml-latest-small
    rm -rf "$DEMO/unzip" "$zip"
    DATA_DIR=./data/ml-latest-small
  elif ! verify_sums "$DATA_DIR" 2> /dev/null; then
    echo "note: $DATA_DIR differs from the GroupLens release (sha256); using it anyway"
  fi
  echo "using $DATA_DIR"
}

stage_prepare() {
  step "prepare: $DATA_DIR -> $DATASET"
  "$BIN" prepare --format movielens --input "$DATA_DIR" --name ml-latest-small --out "$DATASET" --force
}

# ---- later stages: define stage_NAME here and append NAME to DEMO_STAGES ----

RETRIEVER_RUN="$DEMO/retriever"   # stage_retriever
RANKER_RUN="$DEMO/ranker"         # stage_ranker
# A short retriever schedule keeps the demo within minutes; the full schedule
# (early stopping, up to 500 epochs) is `retriever train` without --max-epochs.
RETRIEVER_EPOCHS=${MLLM4REC_DEMO_RETRIEVER_EPOCHS:-10}

stage_retriever() {
  step "retriever: LRURec on $DATASET ($RETRIEVER_EPOCHS epochs; the full schedule drops --max-epochs)"
  rm -rf "$RETRIEVER_RUN"
  "$BIN" retriever train --dataset "$DATASET" --out "$RETRIEVER_RUN" --max-epochs "$RETRIEVER_EPOCHS"
  echo "metrics of the best model (per user; also in $RETRIEVER_RUN/metrics.json):"
  "$BIN" retriever eval --dataset "$DATASET" --run "$RETRIEVER_RUN" > /dev/null
}

stage_captions() {
  step "captions"
  local model=${MLLM4REC_BLIP2:-}
  local posters="$SHARED/data/ml100k-posters"
  if [ -z "$model" ]; then
    echo "no captioning model: set MLLM4REC_BLIP2 to a Hugging Face BLIP-2 folder (e.g. Salesforce/blip2-opt-2.7b)"
    echo "to caption the posters; the ranker below reads titles with empty captions."
    return 0
  fi
  [ -f "$posters/map_ml-latest-small.tsv" ] || { echo "no posters at $posters: captions skipped"; return 0; }
  "$BIN" caption --dataset "$DATASET" --images "$posters/jpg" --map "$posters/map_ml-latest-small.tsv" --model "$model"
}

stage_ranker() {
  step "ranker: LoRA tuning and ranking of the retriever's top 20"
  # without MLLM4REC_LLM: stories260K as shipped in models/ (checked against its sha256)
  local model=${MLLM4REC_LLM:-models/stories260K.gguf}
  if [ -z "${MLLM4REC_LLM:-}" ] && [ -f "$model" ] &&
    ! printf '%s  %s\n' "$STORIES_SHA256" "$model" | sha256sum --quiet -c - 2> /dev/null; then
    die "$model differs from the shipped stories260K (sha256 $STORIES_SHA256); see models/README.md"
  fi
  if [ ! -e "$model" ]; then
    echo "no LLM found: set MLLM4REC_LLM to a Llama-family GGUF file or Hugging Face folder"
    echo "(for example a Q4_0 Llama-2-7B GGUF); the ranker stage is skipped."
    return 0
  fi
  # stories260K was trained on 512-token contexts with a 512-token vocabulary: a
  # short history and short titles keep its prompts within that. Real models use
  # the defaults (history 20, 32 tokens per title, 1536-token prompts).
  local small=(--history 5 --max-title-tokens 8 --max-tokens 512)
  local train=(--max-steps 120 --batch 4 --val-every 20 --lr 1e-3 --warmup 10)
  if [ -n "${MLLM4REC_LLM:-}" ]; then small=(); train=(--max-steps "${MLLM4REC_DEMO_RANKER_STEPS:-200}"); fi
  echo "model: $model"
  rm -rf "$RANKER_RUN"
  "$BIN" ranker train --dataset "$DATASET" --candidates "$RETRIEVER_RUN/candidates.tsv" --model "$model" \
    --out "$RANKER_RUN" "${small[@]}" "${train[@]}"
  "$BIN" ranker eval --dataset "$DATASET" --candidates "$RETRIEVER_RUN/candidates.tsv" --model "$model" \
    --adapter "$RANKER_RUN/adapter.gguf" --split test "${small[@]}"
}

STORIES_SHA256=047bf46455a544931cff6fef14d7910154c56afbc23ab1c5e56a72e69912c04b
PLOTS=()

# Learning curves of the training runs (mllm4rec experiment curves RUN_DIR).
stage_plots() {
  step "plots: learning curves of the training runs"
  local run
  for run in "$RETRIEVER_RUN" "$RANKER_RUN"; do
    [ -d "$run" ] || continue
    "$BIN" experiment curves "$run" > /dev/null && PLOTS+=("$run/curves.svg")
  done
}

DEMO_STAGES=(data prepare retriever captions ranker plots)

[ -x "$BIN" ] || die "$BIN is missing (run make first)"
for s in "${DEMO_STAGES[@]}"; do "stage_$s"; done
step "demo finished: outputs in $DEMO"
if [ ${#PLOTS[@]} -gt 0 ]; then
  echo "plots (SVG, open in a browser):"
  printf '  %s\n' "${PLOTS[@]}"
fi
echo "the paper's experiments, one command each: build/mllm4rec experiment run experiments/fig4.yaml (docs/experiments.md)"

#!/usr/bin/env bash
# Makes tests/data/lora_llamacpp/: three LoRA adapters that `mllm4rec ranker train`
# writes on stories260K, and the perplexity llama.cpp gives with each of them
# (`llama-perplexity --lora`), for tests/test_lora_llamacpp.c. Nothing in that folder is
# typed by hand: run this script again whenever the adapter's file form changes.
#
#   scripts/lora_llamacpp_ref.sh
#
# Environment: MLLM4REC_BIN (build/mllm4rec), SHARED (../shared), LLAMA_PERPLEXITY
# (/tmp/llamacpp/build/bin/llama-perplexity, built by ../shared/tools/build-llama-cpp.sh),
# LLAMA_CPP_COMMIT (the commit that binary was built from; it does not print it itself).
#
# The figure the test checks is llama.cpp's F32 attention path: `-ctk f32 -ctv f32
# -fa off`, as ../shared/reference/models/README.md measures perplexity. llama.cpp's
# defaults (an F16 KV cache, flash attention "auto", which is on for the CPU and casts
# K and V to F16 even over an F32 cache) round K and V (and, for heads narrower than
# a SIMD register, Q and the V accumulator) to F16; that moves the 4th digit. Those
# figures are recorded too (column ppl_llamacpp_defaults), for reading, not checked.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${MLLM4REC_BIN:-build/mllm4rec}
shared=${SHARED:-../shared}
lp=${LLAMA_PERPLEXITY:-/tmp/llamacpp/build/bin/llama-perplexity}
commit=${LLAMA_CPP_COMMIT:-173442644d1700c48fa05181543d4a923e2f1477}
model=$shared/reference/models/stories260K.gguf
text=$shared/reference/models/ppl_text.txt
out=tests/data/lora_llamacpp
for f in "$bin" "$lp" "$model" "$text"; do [ -e "$f" ] || { echo "missing: $f" >&2; exit 1; }; done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# the 4-user MovieLens-like world of tests/test_ranker_engine.c
ds=$tmp/ml
mkdir -p "$ds"
printf '{"format_version": 1, "format": "movielens", "name": "ml-latest-small",\n "counts": {"after": {"users": 4, "items": 8, "interactions": 24}}}\n' >"$ds/meta.json"
printf 'item_id\tsource_id\ttitle\timage\tcaption\n1\t1\tToy Story (1995)\t\ta toy cowboy and a space ranger\n2\t2\tJumanji (1995)\t\t\n3\t3\tHeat (1995)\t\ttwo men with guns\n4\t4\tThe Lion King (1994)\t\ta lion on a rock\n5\t5\tAlien (1979)\t\ta dark ship\n6\t6\tUp (2009)\t\ta house with balloons\n7\t7\tJaws (1975)\t\ta shark\n8\t8\tBig (1988)\t\ta piano\n' >"$ds/items.tsv"
printf 'user_id\tsource_user_id\titems\n1\t1\t1 2 3 4 5 6\n2\t2\t2 3 4 5 6 7\n3\t3\t3 4 5 6 7 8\n4\t4\t8 7 6 5 4 3\n' >"$ds/sequences.tsv"
printf 'split\tuser_id\tlabel\titems\tscores\nval\t1\t5\t5,7,8,1\t4,3,2,1\ntest\t1\t6\t7,6,8,1\t4,3,2,1\nval\t2\t6\t1,8,6,2\t4,3,2,1\ntest\t2\t7\t7,8,1,2\t4,3,2,1\nval\t3\t7\t7,1,2,3\t4,3,2,1\ntest\t3\t8\t1,2,3,4\t4,3,2,1\nval\t4\t4\t1,2,4,8\t4,3,2,1\ntest\t4\t3\t3,1,2,8\t4,3,2,1\n' >"$ds/cands.tsv"

# name and the ranker train flags beyond the common ones
runs=(
  "qv_default|"
  "all_targets|--targets q,k,v,o,gate,up,down"
  "qv_lr1e-3|--lr 1e-3"
)
mkdir -p "$out"
for r in "${runs[@]}"; do
  name=${r%%|*} flags=${r#*|}
  # shellcheck disable=SC2086
  "$bin" ranker train --dataset "$ds" --candidates "$ds/cands.tsv" --model "$model" --num-candidates 4 \
    --threads 1 --seed 42 --max-steps 40 --out "$tmp/$name" $flags >"$tmp/$name.log" 2>&1
  cp "$tmp/$name/adapter.gguf" "$out/$name.gguf"
done

# llama-perplexity's last line: its logger sometimes loses the final lines at exit, so
# it is run again until the "Final estimate" line is there
final_ppl() {
  for _ in $(seq 20); do
    v=$("$lp" -m "$model" -f "$text" -c 128 -b 128 -t 1 "$@" 2>&1 | sed -n 's/^Final estimate: PPL = \([0-9.]*\) .*/\1/p')
    [ -n "$v" ] && { echo "$v"; return; }
  done
  echo "llama-perplexity printed no final estimate for: $*" >&2
  exit 1
}

tsv=$out/llamacpp_ppl.tsv
{
  echo "# made by scripts/lora_llamacpp_ref.sh with llama.cpp $commit"
  echo "# ppl_llamacpp_f32: llama-perplexity -m stories260K.gguf -f ppl_text.txt -c 128 -b 128 -t 1 -ctk f32 -ctv f32 -fa off [--lora ADAPTER]"
  echo "# ppl_llamacpp_defaults: the same without -ctk/-ctv/-fa (F16 KV cache, flash attention auto)"
  printf 'adapter\tppl_llamacpp_f32\tppl_llamacpp_defaults\n'
  printf 'none\t%s\t%s\n' "$(final_ppl -ctk f32 -ctv f32 -fa off)" "$(final_ppl)"
  for r in "${runs[@]}"; do
    name=${r%%|*}
    printf '%s.gguf\t%s\t%s\n' "$name" "$(final_ppl -ctk f32 -ctv f32 -fa off --lora "$out/$name.gguf")" \
      "$(final_ppl --lora "$out/$name.gguf")"
  done
} >"$tsv"
cat "$tsv"

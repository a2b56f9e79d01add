#!/usr/bin/env bash
# caption_stage: the caption stage's own time per caption (issue 17), as the issue
# counts it: `caption --dataset D --images DIR --model M` with the default decoder type
# (q8_0) and batch, once over a dataset of 3 posters and once over 1 (the first of
# the 3); (wall time of 3 images - wall time of 1) / 2 is the time per caption, so the
# load and conversion cancel out. Prints both wall times, the time per caption, the
# peak resident memory of each run (GNU time's maximum RSS), the load average before
# and after, and the goals (<= 6 s per caption, <= 6 GB).
#
#   bench/caption_stage.sh              (CAPTION_STAGE_THREADS, default 2)
#
# The model: the blip2-opt-2.7b shape with random BF16 weights and the GPT-2
# vocabulary (captions need a tokenizer), written once to
# build/bench/blip2-opt-2.7b-gpt2 (7.5 GB) by `model random`. Needs
# ../shared/reference/tokenizer/ggml-vocab-gpt-2.gguf and ../shared/data/ml100k-posters/jpg
# (or $MLLM4REC_SHARED); says skip without them. Random weights with std 0.02 do not
# produce the eos within 19 tokens, so every caption is a full 19-token one.
set -eu
BIN=${MLLM4REC_BIN:-build/mllm4rec}
THREADS=${CAPTION_STAGE_THREADS:-2}
SHARED=${MLLM4REC_SHARED:-../shared}
VOCAB=$SHARED/reference/tokenizer/ggml-vocab-gpt-2.gguf
POSTERS=$SHARED/data/ml100k-posters/jpg
MODEL=${CAPTION_STAGE_MODEL:-build/bench/blip2-opt-2.7b-gpt2}
OUT=build/bench/caption_stage
TIME=/usr/bin/time
if [ ! -f "$VOCAB" ] || [ ! -d "$POSTERS" ]; then echo "caption_stage: skip (GPT-2 vocabulary or posters not in $SHARED)"; exit 0; fi
if [ ! -x "$TIME" ]; then echo "caption_stage: needs GNU time (apt-get install time)" >&2; exit 1; fi
if [ ! -f "$MODEL/tokenizer.json" ]; then
  echo "caption_stage: writing the random blip2-opt-2.7b model to $MODEL once ..." >&2
  "$BIN" model random --arch blip2 --shape blip2-opt-2.7b --vocab "$VOCAB" --seed 1 --out "$MODEL" >&2
fi
rm -rf "$OUT"
mkdir -p "$OUT/images"
SIDS="1 2 3"
for s in $SIDS; do cp "$POSTERS/$s.jpg" "$OUT/images/$s.jpg"; done

# a dataset folder of the first n source ids (one user who saw them all)
make_dataset() {
  local dir=$1 n=$2 i=0 items=""
  mkdir -p "$dir"
  printf '{"format_version": 1, "format": "movielens", "name": "posters", "counts": {"after": {"users": 1, "items": %d, "interactions": %d}}}\n' "$n" "$n" >"$dir/meta.json"
  printf 'item_id\tsource_id\ttitle\timage\tcaption\n' >"$dir/items.tsv"
  for s in $SIDS; do
    i=$((i + 1)); [ "$i" -le "$n" ] || break
    printf '%d\t%s\tMovie %s\t\t\n' "$i" "$s" "$s" >>"$dir/items.tsv"
    items="$items${items:+ }$i"
  done
  printf 'user_id\tsource_user_id\titems\n1\tu1\t%s\n' "$items" >"$dir/sequences.tsv"
}

# run_stage NAME N: wall seconds and peak RSS (MB) of one caption run over N images
run_stage() {
  local name=$1 n=$2
  make_dataset "$OUT/$name" "$n"
  local t0 t1
  t0=$(date +%s.%N)
  "$TIME" -f '%M' -o "$OUT/$name.rss" "$BIN" caption --dataset "$OUT/$name" --images "$OUT/images" --model "$MODEL" \
    --threads "$THREADS" >"$OUT/$name.out" 2>"$OUT/$name.log"
  t1=$(date +%s.%N)
  local rows
  rows=$(($(wc -l <"$OUT/$name/captions.tsv") - 1))
  if [ "$rows" -ne "$n" ] || grep -q $'\t$' "$OUT/$name/captions.tsv"; then
    echo "caption_stage: the $name run did not caption its $n images:" >&2
    cat "$OUT/$name.out" "$OUT/$name.log" >&2
    exit 1
  fi
  echo "$t0 $t1 $(tail -1 "$OUT/$name.rss")"
}

echo "caption stage: model $MODEL, decoder type default (q8_0), batch default, $THREADS threads"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
read -r a0 a1 rss1 <<<"$(run_stage one 1)"
read -r b0 b1 rss3 <<<"$(run_stage three 3)"
echo "load average after:  $(cut -d' ' -f1-3 /proc/loadavg)"
awk -v a0="$a0" -v a1="$a1" -v b0="$b0" -v b1="$b1" -v r1="$rss1" -v r3="$rss3" 'BEGIN {
  w1 = a1 - a0; w3 = b1 - b0; per = (w3 - w1) / 2;
  printf "  wall time, 1 image:           %8.2f s  (peak RSS %.0f MB)\n", w1, r1 / 1024;
  printf "  wall time, 3 images:          %8.2f s  (peak RSS %.0f MB)\n", w3, r3 / 1024;
  verdict = per <= 0 ? "no figure: the 3-image run was not slower, the load changed between the runs" : per <= 6 ? "met" : "not met";
  printf "  time per caption (3 - 1) / 2: %8.2f s  (goal <= 6 s per 19-token caption: %s)\n", per, verdict;
  rmax = (r1 > r3 ? r1 : r3) / 1024;
  printf "  peak RSS:                     %8.0f MB (goal <= 6144 MB: %s)\n", rmax, rmax <= 6144 ? "met" : "not met";
  printf "{\"bench\":\"caption_stage\",\"threads\":%d,\"wall1_s\":%.3f,\"wall3_s\":%.3f,\"per_caption_s\":%.3f,\"peak_rss_mb\":%.0f}\n", '"$THREADS"', w1, w3, per, rmax;
}'
echo "captions (3 images):"
tail -n +2 "$OUT/three/captions.tsv" | sed 's/^/  /'

#!/usr/bin/env bash
# bench_serve: wrk against POST /v1/recommend (retriever only, no answer cache: every
# request runs the model) on ml-latest-small, users drawn at random; 64 connections,
# two runs of BENCH_SERVE_SECONDS (30) each; requests/s, p50 / p99 latency, non-2xx
# answers, and the server's RSS before and after each run.
#   BENCH_SERVE_THREADS (2) server threads, BENCH_SERVE_WRK_THREADS (2), BENCH_SERVE_CONNECTIONS (64)
# Needs wrk (Debian package; installed here when missing) and ml-latest-small under
# $MLLM4REC_DATA, ./data or ../shared/data. Prepares the dataset and trains a short
# retriever schedule under build/bench/serve once.
set -eu
BIN=${MLLM4REC_BIN:-build/mllm4rec}
SECONDS_RUN=${BENCH_SERVE_SECONDS:-30}
THREADS=${BENCH_SERVE_THREADS:-2}
WRK_THREADS=${BENCH_SERVE_WRK_THREADS:-2}
CONNS=${BENCH_SERVE_CONNECTIONS:-64}
OUT=build/bench/serve
mkdir -p "$OUT"
if ! command -v wrk >/dev/null; then
  echo "bench_serve: installing wrk" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get install -y -qq wrk >&2 || { $SUDO apt-get update -qq >&2 && $SUDO apt-get install -y -qq wrk >&2; }
fi
src=""
for d in "${MLLM4REC_DATA:-}" ./data ../shared/data; do
  [ -n "$d" ] && [ -f "$d/ml-latest-small/ratings.csv" ] && { src="$d/ml-latest-small"; break; }
done
if [ -z "$src" ]; then echo "bench_serve: skip (ml-latest-small not found)"; exit 0; fi
[ -f "$OUT/ml/meta.json" ] || "$BIN" prepare --format movielens --input "$src" --out "$OUT/ml" >&2
[ -f "$OUT/run/retriever.safetensors" ] ||
  "$BIN" retriever train --dataset "$OUT/ml" --out "$OUT/run" --max-epochs 5 --seed 1 --threads 2 >&2
users=$(awk 'NR > 1' "$OUT/ml/sequences.tsv" | wc -l)

cat > "$OUT/random_user.lua" <<LUA
-- POST /v1/recommend for a user drawn at random (uniform over 1..$users)
math.randomseed(7)
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  return wrk.format(nil, "/v1/recommend", nil, '{"user_id": ' .. math.random(1, $users) .. ', "k": 10}')
end
LUA

"$BIN" serve --dataset "$OUT/ml" --retriever "$OUT/run" --port 0 --threads "$THREADS" 2>"$OUT/serve.err" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true' EXIT
port=""
for _ in $(seq 100); do
  port=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\)/.*|\1|p' "$OUT/serve.err")
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || { echo "bench_serve: the server did not start" >&2; cat "$OUT/serve.err" >&2; exit 1; }
rss() { awk '/^VmRSS/ {print $2}' /proc/$pid/status; }
url="http://127.0.0.1:$port/v1/recommend"
# warm-up: pages touched, buffers allocated
wrk -t "$WRK_THREADS" -c "$CONNS" -d 3s -s "$OUT/random_user.lua" "$url" >/dev/null
rows=""
objs=()
for runno in 1 2; do
  before=$(rss)
  wrk -t "$WRK_THREADS" -c "$CONNS" -d "${SECONDS_RUN}s" --latency -s "$OUT/random_user.lua" "$url" > "$OUT/wrk$runno.txt"
  after=$(rss)
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$OUT/wrk$runno.txt")
  p50=$(awk '$1 == "50%" {print $2}' "$OUT/wrk$runno.txt")
  p99=$(awk '$1 == "99%" {print $2}' "$OUT/wrk$runno.txt")
  non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $5}' "$OUT/wrk$runno.txt"); non2xx=${non2xx:-0}
  sockerr=$(awk '/Socket errors:/ {print $0}' "$OUT/wrk$runno.txt"); sockerr=${sockerr:-none}
  total=$(awk '/requests in/ {print $1}' "$OUT/wrk$runno.txt")
  rows="$rows| $runno | $total | $rps | $p50 | $p99 | $non2xx | $sockerr | $before | $after | $load |\n"
  objs+=("{\"run\": $runno, \"requests\": $total, \"requests_per_s\": $rps, \"p50\": \"$p50\", \"p99\": \"$p99\", \"non_2xx\": $non2xx, \"socket_errors\": \"$sockerr\", \"rss_kb_before\": $before, \"rss_kb_after\": $after, \"loadavg\": \"$load\"}")
done
json="[$(IFS=,; echo "${objs[*]}")]"
batches=$(curl -s --noproxy '*' "http://127.0.0.1:$port/metrics" 2>/dev/null | grep -E '^mllm4rec_retriever_batch' || true)
kill -TERM $pid; wait $pid; trap - EXIT
echo "$json" > "$OUT/results.json"
cat "$OUT/results.json"
echo
echo "serve: POST /v1/recommend, retriever only (no cache), ml-latest-small ($users users at random), $CONNS connections, ${SECONDS_RUN}s, server threads $THREADS, wrk threads $WRK_THREADS"
echo "| run | requests | requests/s | p50 | p99 | non-2xx | socket errors | RSS before (kB) | RSS after (kB) | loadavg |"
echo "|---:|---:|---:|---:|---:|---:|---|---:|---:|---|"
printf "$rows"
[ -n "$batches" ] && echo "$batches"
exit 0

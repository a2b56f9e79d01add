#!/usr/bin/env bash
# docs/serve.png: the page of `mllm4rec serve` in headless Chromium (Debian's
# `chromium`, installed here when missing), after searching "toy" and picking three
# movies (Toy Story, Toy Story 2, Toys), with ml-latest-small, a short retriever
# schedule and the ml100k posters. The page is pre-filled by its query parameters
# (?q=toy&pick=...&go=1), which run the same search, picks and request as clicks do.
#   usage: bash bench/serve_screenshot.sh [OUT.png]   (uses build/bench/serve like bench_serve.sh)
set -eu
BIN=${MLLM4REC_BIN:-build/mllm4rec}
OUT_PNG=${1:-docs/serve.png}
DIR=build/bench/serve
SHARED=${MLLM4REC_SHARED:-../shared}
mkdir -p "$DIR"
if ! command -v chromium >/dev/null; then
  echo "serve_screenshot: installing chromium" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get install -y -qq chromium >&2 || { $SUDO apt-get update -qq >&2 && $SUDO apt-get install -y -qq chromium >&2; }
fi
[ -f "$DIR/ml/meta.json" ] || "$BIN" prepare --format movielens --input "$SHARED/data/ml-latest-small" --out "$DIR/ml" >&2
[ -f "$DIR/run/retriever.safetensors" ] ||
  "$BIN" retriever train --dataset "$DIR/ml" --out "$DIR/run" --max-epochs 5 --seed 1 --threads 2 >&2
posters="$SHARED/data/ml100k-posters"
model_flags=()
[ -f "$SHARED/reference/models/stories260K.gguf" ] && model_flags=(--model "$SHARED/reference/models/stories260K.gguf")
"$BIN" serve --dataset "$DIR/ml" --retriever "$DIR/run" --port 0 --images "$posters/jpg" \
  --image-map "$posters/map_ml-latest-small.tsv" "${model_flags[@]}" 2>"$DIR/screenshot-serve.err" &
pid=$!
ud=$(mktemp -d)
trap 'kill -TERM $pid 2>/dev/null || true; rm -rf "$ud"' EXIT
port=""
for _ in $(seq 100); do
  port=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\)/.*|\1|p' "$DIR/screenshot-serve.err")
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || { cat "$DIR/screenshot-serve.err" >&2; exit 1; }
# item ids of the three picks, found with the search API as the page finds them
ids=$(curl -s --noproxy '*' "http://127.0.0.1:$port/v1/items?q=toy&limit=20" | python3 -c '
import json, sys
items = {it["title"]: it["item_id"] for it in json.load(sys.stdin)["items"]}
print(",".join(str(items[t]) for t in ("Toy Story (1995)", "Toy Story 2 (1999)", "Toys (1992)")))')
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --no-proxy-server --user-data-dir="$ud" --hide-scrollbars \
  --window-size=1280,1080 --virtual-time-budget=8000 --screenshot="$OUT_PNG" \
  "http://127.0.0.1:$port/?q=toy&pick=$ids&go=1" 2>/dev/null
echo "wrote $OUT_PNG (picks $ids)"

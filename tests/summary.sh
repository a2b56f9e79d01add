#!/usr/bin/env bash
# Adds up the counts that tests/run.sh recorded and prints the closing line.
set -u
f=${1:-build/test-results.txt}
read -r p x s <<<"$(awk '{p+=$2; x+=$3; s+=$4} END {print p+0, x+0, s+0}' "$f" 2>/dev/null || echo "0 1 0")"
[ -s "$f" ] || x=1
echo "$p passed, $x failed, $s skipped"
[ "$x" -eq 0 ]

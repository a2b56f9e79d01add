#!/usr/bin/env bash
# Runs every test program in BUILD/tests and appends "LABEL pass fail skip" to
# build/test-results.txt. A program that crashes or exits non-zero without
# reporting a failure counts as one failure.
set -u
build=${1:-build}
label=${2:-plain}
results=build/test-results.txt
mkdir -p build
export MLLM4REC_BIN="$build/mllm4rec"
tp=0; tf=0; ts=0
for t in "$build"/tests/test_*; do
  [ -x "$t" ] || continue
  name=$(basename "$t")
  echo "== $label $name"
  out=$("$t" 2>&1); rc=$?
  echo "$out" | sed 's/^/  /'
  p=$(echo "$out" | grep -c '^ok ') ; f=$(echo "$out" | grep -c '^FAIL ') ; s=$(echo "$out" | grep -c '^skip ')
  if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then
    echo "  FAIL $name: exited with status $rc"
    f=$((f + 1))
  fi
  tp=$((tp + p)); tf=$((tf + f)); ts=$((ts + s))
done
echo "$label $tp $tf $ts" >> "$results"
echo "-- $label: $tp ok, $tf failed, $ts skipped"

#!/usr/bin/env bash
# Compares two bench binaries by alternating runs under perf-stat.sh and printing the
# medians (the way the optimization commits on this branch were measured):
#   ab.sh N BIN_A BIN_B [bench args...]    e.g.  ab.sh 3 /tmp/bench-old target/release/bench --clients 64 --seconds 3
set -euo pipefail
n=$1
a=$2
b=$3
shift 3
here=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for _ in $(seq "$n"); do
    BIN=$a "$here/perf-stat.sh" A "$@"
    BIN=$b "$here/perf-stat.sh" B "$@"
done | tee "$out"
python3 - "$out" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    k, rest = line.split(":", 1)
    rows.setdefault(k, []).append([float(x) for x in re.findall(r"[-+]?\d+\.?\d*", rest)])
for k, v in sorted(rows.items()):
    m = [statistics.median(c) for c in zip(*v)]
    print("median %s: %8.0f/s p50 %7.1f p99 %7.1f us | syscalls %5.1f cs %5.1f cpu %6.1f us/entry"
          % (k, m[0], m[2], m[4], m[5], m[6], m[7]))
PY

#!/usr/bin/env bash
# One benchmark run under `perf stat`, printed as figures per committed entry, which
# vary far less than wall-clock figures on a shared machine:
#   perf-stat.sh LABEL [bench args...]      e.g.  perf-stat.sh mem64 --clients 64 --seconds 3
# BIN picks the bench binary (default: target/release/bench of this checkout). The floor
# is skipped so that the counts are the cluster's alone. Needs perf with tracepoints
# (root, or kernel.perf_event_paranoid <= -1).
set -euo pipefail
label=$1
shift
here=$(cd "$(dirname "$0")/../.." && pwd)
bin=${BIN:-$here/target/release/bench}
stat=$(mktemp)
json=$(mktemp)
trap 'rm -f "$stat" "$json"' EXIT
perf stat -x, -o "$stat" -e raw_syscalls:sys_enter,context-switches,task-clock \
    "$bin" --json --skip-floor --warmup 0.3 "$@" >"$json" 2>/dev/null
python3 - "$stat" "$json" "$label" <<'PY'
import json, sys
r = json.load(open(sys.argv[2]))
n = r["run_entries"]
st = {}
for line in open(sys.argv[1]):
    f = line.strip().split(",")
    if len(f) > 3 and f[0] and f[0][0].isdigit():
        st[f[2]] = float(f[0])
print("%s: %8.0f/s p50 %7.1f p99 %7.1f us | per entry: syscalls %5.1f cs %5.1f cpu %6.1f us | load %s" % (
    sys.argv[3], r["entries_per_second"], r["latency"]["p50_us"], r["latency"]["p99_us"],
    st.get("raw_syscalls:sys_enter", 0) / n, st.get("context-switches", 0) / n,
    st.get("task-clock", 0) * 1e3 / n, open("/proc/loadavg").read().split()[0]))
PY

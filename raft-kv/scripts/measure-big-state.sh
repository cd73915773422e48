#!/usr/bin/env bash
# Issue 18, step 5: the big-state measurements of docs/performance.md ("Big state through
# raft-kv"), reproducible. A persistent, encrypted 3-node raft-kv cluster on this machine:
#
#   1. `raft-kv bench --value-bytes $VALUE_BYTES --requests $REQUESTS` in $ROUNDS rounds,
#      each with new keys, so the state grows by REQUESTS x VALUE_BYTES per round: writes/s,
#      leader changes (counted from the nodes' logs), disk per node, `uptime` per round;
#   2. a follower whose data directory is wiped catches up (by snapshot, over loopback
#      UDP): seconds from its restart until it applied the leader's commit index, and the
#      snapshot's size from its log, so MB/s;
#   3. every node's peak RSS (VmHWM from /proc/<pid>/status) against the issue's bound,
#      1.5 x state + 128 MiB: the leader's covers taking and sending snapshots, the wiped
#      follower's receiving and installing one.
#
# Usage: raft-kv/scripts/measure-big-state.sh [WORKDIR]   (from the repository root, after
#        cargo build --release -p raft-kv)
# Environment: ROUNDS (default 4), REQUESTS (2000), VALUE_BYTES (50000), CLIENTS (8),
#              BASE_PORT (17301), RAFT_KV (target/release/raft-kv), KEEP=1 keeps WORKDIR,
#              PERSISTENT=0 runs the same on in-memory logs (the A/B control: what the
#              disk costs), ENCRYPT=0 without encryption, SNAPSHOT_AFTER=N sets the
#              config's snapshot_after_entries (default: what `raft-kv init` writes).
set -euo pipefail

ROUNDS=${ROUNDS:-4}
REQUESTS=${REQUESTS:-2000}
VALUE_BYTES=${VALUE_BYTES:-50000}
CLIENTS=${CLIENTS:-8}
BASE_PORT=${BASE_PORT:-17301}
PERSISTENT=${PERSISTENT:-1}
ENCRYPT=${ENCRYPT:-1}
BIN=$(realpath "${RAFT_KV:-target/release/raft-kv}")
DIR=${1:-$(mktemp -d /tmp/raft-kv-measure.XXXXXX)}
mkdir -p "$DIR"
DIR=$(realpath "$DIR")
export RAFT_KV_PASSWORD=${RAFT_KV_PASSWORD:-measure-big-state}
CFG="$DIR/raft-kv.toml"
declare -A PID

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*"; }

stop_all() {
    for id in "${!PID[@]}"; do
        kill "${PID[$id]}" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    if [[ "${KEEP:-0}" != 1 ]]; then
        rm -rf "$DIR"
    fi
}
trap stop_all EXIT

start_node() {
    local id=$1
    "$BIN" node -c "$CFG" --id "$id" --headless --log-level info \
        --metrics-addr "127.0.0.1:$((BASE_PORT + 200 + id))" \
        --log-file "$DIR/node$id.log" 2>/dev/null &
    PID[$id]=$!
}

status() { "$BIN" status -c "$CFG" --node "$1" --json --timeout-ms 2000 2>/dev/null; }

# The leader's id, once all three nodes agree on one.
wait_leader() {
    local deadline=$((SECONDS + 60))
    while ((SECONDS < deadline)); do
        local l1 l2 l3
        l1=$(status 1 | jq -r .leader_id || true)
        l2=$(status 2 | jq -r .leader_id || true)
        l3=$(status 3 | jq -r .leader_id || true)
        if [[ -n "$l1" && "$l1" != null && "$l1" == "$l2" && "$l2" == "$l3" ]]; then
            echo "$l1"
            return
        fi
        sleep 0.2
    done
    echo "no leader within 60 s" >&2
    exit 2
}

hwm_kib() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
# Leadership changes seen by node 1 ("follows leader" lines, one per new leader or term).
leader_changes() { grep -c "follows leader" "$DIR/node1.log" || true; }
# Mean and count of one node's log syncs (`raft_log_sync_seconds{cause="ready"}`): what a
# commit waits for on each node.
sync_stats() {
    curl -s "http://127.0.0.1:$((BASE_PORT + 200 + $1))/metrics" |
        awk '/^raft_log_sync_seconds_sum\{.*cause="ready"/ {s=$2} /^raft_log_sync_seconds_count\{.*cause="ready"/ {c=$2}
             END {if (c > 0) printf "%d syncs, mean %.2f ms", c, s / c * 1000; else print "no syncs"}'
}
disk_mib() { if [[ -e "$1" ]]; then du -sm "$1" | cut -f1; else echo 0; fi; }
# CPU seconds (user + system) a process used so far.
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.1f", ($14 + $15) / hz}' "/proc/$1/stat"; }
# Seconds since midnight of a node log line's "HH:MM:SS.mmmZ" stamp.
stamp_s() { awk -F'[:Z ]' '{printf "%.3f", $1 * 3600 + $2 * 60 + $3}' <<<"$1"; }

flags=()
if [[ "$PERSISTENT" == 1 ]]; then flags+=(--persistent); else flags+=(--ephemeral); fi
if [[ "$ENCRYPT" == 1 ]]; then flags+=(--encrypt); else flags+=(--no-encrypt); fi
"$BIN" init --non-interactive --cluster-name measure --nodes 3 "${flags[@]}" \
    --base-port "$BASE_PORT" --out "$CFG" >/dev/null
if [[ -n "${SNAPSHOT_AFTER:-}" ]]; then
    sed -i "s/^snapshot_after_entries = .*/snapshot_after_entries = $SNAPSHOT_AFTER/" "$CFG"
fi
for id in 1 2 3; do start_node "$id"; done
leader=$(wait_leader)
log "cluster up in $DIR, leader node$leader; $(uptime)"
changes_start=$(leader_changes)

state_bytes=0
for r in $(seq 1 "$ROUNDS"); do
    load=$(uptime | sed 's/.*load average: //')
    before=$(leader_changes)
    cpu_before=()
    for id in 1 2 3; do cpu_before[id]=$(cpu_s "${PID[$id]}"); done
    out=$("$BIN" bench -c "$CFG" --value-bytes "$VALUE_BYTES" --requests "$REQUESTS" \
        --clients "$CLIENTS" --key-prefix "round$r" 2>&1 || true)
    state_bytes=$((state_bytes + REQUESTS * VALUE_BYTES))
    rate=$(grep -o '[0-9.]* writes/s' <<<"$out" | head -1)
    lat=$(grep -io 'p50.*' <<<"$out" | head -1)
    failed=$(grep -io '[0-9]* failed' <<<"$out" | head -1)
    disks=""
    cpus=""
    for id in 1 2 3; do
        disks+="node$id $(disk_mib "$DIR"/raft-kv-data/node$id)MiB "
        cpus+="node$id $(echo "$(cpu_s "${PID[$id]}") - ${cpu_before[id]}" | bc)s "
    done
    log "round $r: state $((state_bytes / 1000000)) MB; ${rate:-?} ${failed:-} ($lat); leader changes $(( $(leader_changes) - before )); disk $disks; CPU $cpus; load $load"
    if [[ -z "$rate" ]]; then
        echo "$out"
    fi
done
log "leader changes over the rounds: $(( $(leader_changes) - changes_start ))"
for id in 1 2 3; do log "  node$id log syncs: $(sync_stats "$id")"; done

# Let every node store the snapshot that covers the last writes, so the catch-up
# below is one snapshot plus a short log.
sleep 5
leader=$(wait_leader)
follower=$(( leader % 3 + 1 ))
commit=$(status "$leader" | jq .commit_index)
log "wiping node$follower's data directory (leader node$leader, commit $commit); $(uptime)"
kill "${PID[$follower]}"
wait "${PID[$follower]}" 2>/dev/null || true
rm -rf "$DIR"/raft-kv-data/node"$follower"
mv "$DIR/node$follower.log" "$DIR/node$follower.before-wipe.log"
started=$(date +%s.%N)
start_node "$follower"
peak_mib=0
while true; do
    applied=$(status "$follower" | jq .applied_index 2>/dev/null || echo 0)
    if [[ -n "$applied" && "$applied" != null && "$applied" -ge "$commit" ]]; then
        break
    fi
    rss=$(( $(rss_kib "${PID[$follower]}") / 1024 ))
    ((rss > peak_mib)) && peak_mib=$rss
    if (( $(date +%s) - ${started%.*} > 600 )); then
        log "node$follower did not catch up within 600 s"
        break
    fi
    sleep 0.1
done
took=$(echo "$(date +%s.%N) - $started" | bc)
flog="$DIR/node$follower.log"
snap=$(grep -o 'received a snapshot up to [0-9]*@[0-9]* ([0-9]* bytes)' "$flog" |
    tail -1 | grep -o '([0-9]*' | tr -d '(' || true)
log "node$follower caught up to $commit in ${took}s from its restart: $((state_bytes / 1000000)) MB of values, $(echo "scale=1; $state_bytes / 1000000 / $took" | bc) MB/s; load $(uptime | sed 's/.*load average: //')"
if [[ -n "$snap" ]]; then
    t0=$(stamp_s "$(grep 'receiving a snapshot' "$flog" | tail -1)")
    t1=$(stamp_s "$(grep 'received a snapshot' "$flog" | tail -1)")
    log "  snapshot stream: ${snap} bytes in $(echo "$t1 - $t0" | bc)s = $(echo "scale=1; $snap / 1000000 / ($t1 - $t0)" | bc) MB/s (first chunk to last, checksum checked)"
fi
grep -E "receiving a snapshot|received a snapshot|installing a snapshot|restored" "$DIR/node$follower.log" | sed 's/^/    /' | head -8

bound_mib=$(( state_bytes * 3 / 2 / 1048576 + 128 ))
for id in 1 2 3; do
    role=$(status "$id" | jq -r .role)
    log "node$id ($role): peak RSS $(( $(hwm_kib "${PID[$id]}") / 1024 )) MiB (VmHWM), bound 1.5 x $((state_bytes / 1048576)) MiB + 128 = $bound_mib MiB; disk $(disk_mib "$DIR"/raft-kv-data/node$id) MiB; CPU $(cpu_s "${PID[$id]}")s"
done

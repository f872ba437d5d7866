#!/usr/bin/env bash
# Benchmark mayfly's resource limits (issue 22), with a private daemon in a network namespace
# this script creates (deleted at the end; no instance has a network interface here):
#
#   sudo bench/resources.sh [--runs N] [--instances 200] [--stats-samples 5] [--no-disk]
#
#   1. launch latency, same run, interleaved: `mayfly run --rm --network none busybox -- true`
#      without limits, with `--flavor small` (cpus, memory, reservation, pids: four cgroup
#      files written at start and admission counted), and with every v1 limit flag at once
#      (`--cpus --cpu-weight --memory --memory-reserve --pids`);
#   2. pause + resume and `set memory=…` of one running instance (N rounds each);
#   3. `mayfly stats --json` over 200 running instances with limits (one sample each call,
#      two usage samples 250 ms apart inside the daemon), and `stats` of one instance;
#   4. the disk quota's cost at launch: bench/disk-quota.sh, when present (P2's script), with
#      --no-disk to skip it.
# Results: stdout and bench/out/resources.txt.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

RUNS=30
INSTANCES=200
STATS_SAMPLES=5
DISK=1
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS="$2"; shift 2 ;;
        --instances) INSTANCES="$2"; shift 2 ;;
        --stats-samples) STATS_SAMPLES="$2"; shift 2 ;;
        --no-disk) DISK=0; shift ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "resources.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

[ "$(id -u)" -eq 0 ] || { echo "resources.sh: run as root (sudo bench/resources.sh)" >&2; exit 1; }
for d in "$HOME/.cargo/bin" /root/.cargo/bin; do [ -d "$d" ] && export PATH="$d:$PATH"; done
for tool in cargo jq ip nsenter; do
    command -v "$tool" >/dev/null || { echo "resources.sh: $tool is missing" >&2; exit 1; }
done

echo "resources.sh: building mayfly (release)…" >&2
cargo build --release --locked -p mayfly
MAYFLY="$ROOT/target/release/mayfly"

TMP="$(mktemp -d /var/tmp/mayfly-res.XXXXXX)"
STATE="$TMP/state"
SOCK="$TMP/mayfly.sock"
NS="mfres-$$"
DAEMON_PID=""
CGROUP_PARENT=""
OUT="$ROOT/bench/out/resources.txt"
mkdir -p "$ROOT/bench/out"
: >"$OUT"

mf() { "$MAYFLY" --socket "$SOCK" "$@"; }
say() { echo "$*" | tee -a "$OUT"; }
alive() { [ -n "$1" ] && [ -d "/proc/$1" ] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }
now_ns() { date +%s%N; }
stats() { # microseconds on stdin -> "median X ms, p90 Y ms (n=N)"
    sort -n | awk '{a[NR]=$1} END {m=a[int((NR+1)/2)]; p=a[int(NR*0.9+0.999)]; printf "median %.2f ms, p90 %.2f ms (n=%d)", m/1000, p/1000, NR}'
}

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    if alive "$DAEMON_PID" && [ -S "$SOCK" ]; then
        mf list --json 2>/dev/null | jq -r '.[].name' | xargs -r "$MAYFLY" --socket "$SOCK" rm --force >/dev/null 2>&1
        kill -TERM "$DAEMON_PID"
        for _ in $(seq 150); do alive "$DAEMON_PID" || break; sleep 0.1; done
        alive "$DAEMON_PID" && kill -KILL "$DAEMON_PID"
    fi
    for _ in $(seq 100); do
        [ -z "$(ps -eo pid=,args= | grep -F "$TMP" | grep -v grep)" ] && break
        sleep 0.1
    done
    local left
    left="$(ps -eo pid=,args= | grep -F "$TMP" | grep -v grep || true)"
    if [ -n "$left" ]; then
        echo "resources.sh: LEAK: processes left (killing them):" >&2
        echo "$left" >&2
        echo "$left" | awk '{print $1}' | xargs -r kill -KILL
        [ "$rc" -eq 0 ] && rc=1
    fi
    if grep -qF "$TMP" /proc/self/mountinfo; then
        echo "resources.sh: LEAK: mounts left" >&2
        grep -F "$TMP" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l
        [ "$rc" -eq 0 ] && rc=1
    fi
    if [ -n "$CGROUP_PARENT" ]; then
        for cg in /sys/fs/cgroup/*/"$CGROUP_PARENT"; do
            [ -d "$cg" ] || continue
            echo "resources.sh: LEAK: cgroup left: $cg" >&2
            [ "$rc" -eq 0 ] && rc=1
        done
    fi
    ip netns del "$NS" 2>/dev/null
    cp "$TMP/daemon.log" "$ROOT/bench/out/resources-daemon.log" 2>/dev/null
    rm -rf "$TMP"
    [ "$rc" -eq 0 ] && echo "resources.sh: clean: namespace, processes, cgroups and directory of this run removed" >&2
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- the namespace and the daemon --------------------------------------------------------------
ip netns add "$NS"
nsenter --net="/run/netns/$NS" -- ip link set lo up
echo "resources.sh: daemon in namespace $NS, state in $TMP" >&2
# Not `ip netns exec`: it remounts /sys and would hide the cgroup hierarchies.
nsenter --net="/run/netns/$NS" -- "$MAYFLY" daemon --state-dir "$STATE" --socket "$SOCK" \
    >"$TMP/daemon.log" 2>&1 &
DAEMON_PID=$!
for _ in $(seq 300); do
    [ -S "$SOCK" ] && mf info --json >/dev/null 2>&1 && break
    alive "$DAEMON_PID" || { echo "resources.sh: the daemon died:" >&2; cat "$TMP/daemon.log" >&2; exit 1; }
    sleep 0.1
done
FORKER_PID="$(mf info --json | jq -r '.forker_pid // empty')"
if [ -n "$FORKER_PID" ]; then
    CGROUP_PARENT="$(tr '\0' '\n' <"/proc/$FORKER_PID/cmdline" | sed -n '/^--cgroup-parent$/{n;p}')"
fi
say "== host: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), cgroup mode $(mf info --json | jq -r .cgroup_mode), kernel $(uname -r)"

# ---- 1. launch latency ------------------------------------------------------------------------
ALL_FLAGS=(--cpus 1.5 --cpu-weight 200 --memory 512M --memory-reserve 64M --pids 512)
mf run --rm --network none busybox -- true >/dev/null   # warm-up (not timed)
mf run --rm --network none --flavor small busybox -- true >/dev/null
: >"$TMP/latency"
for _ in $(seq "$RUNS"); do
    t=$(now_ns); mf run --rm --network none busybox -- true >/dev/null
    echo "plain $(( ($(now_ns) - t) / 1000 ))" >>"$TMP/latency"
    t=$(now_ns); mf run --rm --network none --flavor small busybox -- true >/dev/null
    echo "flavor $(( ($(now_ns) - t) / 1000 ))" >>"$TMP/latency"
    t=$(now_ns); mf run --rm --network none "${ALL_FLAGS[@]}" busybox -- true >/dev/null
    echo "flags $(( ($(now_ns) - t) / 1000 ))" >>"$TMP/latency"
done
say "== launch latency: mayfly run --rm --network none busybox -- true ($RUNS runs each, interleaved)"
say "no limits           : $(awk '$1 == "plain" {print $2}' "$TMP/latency" | stats)"
say "--flavor small      : $(awk '$1 == "flavor" {print $2}' "$TMP/latency" | stats)"
say "${ALL_FLAGS[*]} : $(awk '$1 == "flags" {print $2}' "$TMP/latency" | stats)"

# ---- 2. live operations on one instance -------------------------------------------------------
mf launch busybox --name one --network none --memory 256M -- sh -c 'while :; do sleep 1; done' >/dev/null
: >"$TMP/live"
for i in $(seq "$RUNS"); do
    t=$(now_ns); mf pause one >/dev/null; echo "pause $(( ($(now_ns) - t) / 1000 ))" >>"$TMP/live"
    t=$(now_ns); mf resume one >/dev/null; echo "resume $(( ($(now_ns) - t) / 1000 ))" >>"$TMP/live"
    t=$(now_ns); mf set one "memory=$((256 + i))M" >/dev/null; echo "set $(( ($(now_ns) - t) / 1000 ))" >>"$TMP/live"
    t=$(now_ns); mf stats one --json --no-stream >/dev/null; echo "stats1 $(( ($(now_ns) - t) / 1000 ))" >>"$TMP/live"
done
say "== one running instance ($RUNS rounds)"
say "pause               : $(awk '$1 == "pause" {print $2}' "$TMP/live" | stats)"
say "resume              : $(awk '$1 == "resume" {print $2}' "$TMP/live" | stats)"
say "set memory=…        : $(awk '$1 == "set" {print $2}' "$TMP/live" | stats)"
say "stats (1 instance)  : $(awk '$1 == "stats1" {print $2}' "$TMP/live" | stats)"
mf rm --force one >/dev/null

# ---- 3. stats over many instances -------------------------------------------------------------
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
t=$(now_ns)
for i in $(seq "$INSTANCES"); do
    mf launch busybox --name "s$i" --network none --cpus 0.1 --memory 32M --pids 16 \
        -- sh -c 'while :; do sleep 1; done' >/dev/null
done
LAUNCH_MS=$(( ($(now_ns) - t) / 1000000 ))
: >"$TMP/stats"
for _ in $(seq "$STATS_SAMPLES"); do
    t=$(now_ns); mf stats --json --no-stream >"$TMP/stats.json"
    echo "all $(( ($(now_ns) - t) / 1000 ))" >>"$TMP/stats"
done
COUNT="$(jq length "$TMP/stats.json")"
MEM_SUM="$(jq '[.[].memory_bytes] | add / 1048576 | floor' "$TMP/stats.json")"
say "== $INSTANCES running instances (--cpus 0.1 --memory 32M --pids 16), launched in ${LAUNCH_MS} ms"
say "stats --json, all   : $(awk '$1 == "all" {print $2}' "$TMP/stats" | stats); $COUNT entries, $(wc -c <"$TMP/stats.json") bytes, memory in use ${MEM_SUM} MiB in all"
say "daemon VmRSS        : $(rss_kib "$DAEMON_PID") KiB"
t=$(now_ns)
mf list --json | jq -r '.[].name' | xargs -r "$MAYFLY" --socket "$SOCK" rm --force >/dev/null
say "remove all          : $(( ($(now_ns) - t) / 1000000 )) ms"

# ---- 4. the disk quota ------------------------------------------------------------------------
if [ "$DISK" -eq 1 ] && [ -x "$ROOT/bench/disk-quota.sh" ]; then
    say "== disk quota: bench/disk-quota.sh"
    "$ROOT/bench/disk-quota.sh" 2>&1 | tee -a "$OUT"
elif [ "$DISK" -eq 1 ]; then
    say "== disk quota: bench/disk-quota.sh is not there; not measured"
fi
echo "resources.sh: results in $OUT" >&2

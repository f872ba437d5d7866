#!/usr/bin/env bash
# Benchmark mayfly's networks (issue 21), everything inside a network namespace this script
# creates (no packet leaves it; it is deleted at the end):
#
#   sudo bench/net.sh [--runs N] [--instances 200] [--mib 200] [--pings 10000]
#
#   1. launch latency, same run, interleaved: `mayfly run --rm busybox -- true` on the default
#      network, with `--network none`, and crun (`crun run`, busybox root, no overlay, no
#      cgroup) in a netns given a veth on a bridge by this script (ip netns add, veth, address,
#      route, then crun, then ip netns del: all timed);
#   2. instance-to-instance latency (1-byte ping-pong) and throughput (MiB/s) over TCP on the
#      bridge against a channel (a unix socket), same pair of instances, same run, with
#      tests/fixtures/usock.c built here (gcc -static);
#   3. 200 instances on one network: time to launch them, names answered, daemon, forker and
#      dnsmasq memory (VmRSS), time to remove them.
# Results: stdout and bench/out/net.txt.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SELF="$ROOT/bench/net.sh"
cd "$ROOT"

# Internal: the launch-latency loop, run by this script itself under `unshare -m` (a private
# mount namespace where the hybrid host's /sys/fs/cgroup/unified/cgroup.controllers is hidden
# behind an empty file: crun refuses the hybrid layout otherwise, as bench/src/main.rs does).
if [ "${1:-}" = "--latency-inner" ]; then
    set -euo pipefail
    : >"$TMP/empty"
    if [ -e /sys/fs/cgroup/unified/cgroup.controllers ]; then
        mount --bind "$TMP/empty" /sys/fs/cgroup/unified/cgroup.controllers
    fi
    mf() { "$MAYFLY" --socket "$SOCK" "$@"; }
    inns() { nsenter --net="/run/netns/$NS" -- "$@"; }
    now_ns() { date +%s%N; }
    crun_once() {
        local i="$1" c="mfbc-$NS-$1"
        ip netns add "$c"
        inns ip link add "crv$i" type veth peer name eth0 netns "$c"
        inns ip link set "crv$i" master crbr0 up
        nsenter --net="/run/netns/$c" -- sh -c \
            'ip link set lo up && ip addr add 10.99.0.2/24 dev eth0 && ip link set eth0 up && ip route add default via 10.99.0.1'
        sed "s|NETNS|/run/netns/$c|" "$BUNDLE/config.tmpl" >"$BUNDLE/config.json"
        crun --root "$TMP/crun-state" --cgroup-manager=disabled run --bundle "$BUNDLE" "bench$i" >/dev/null
        inns ip link del "crv$i"
        ip netns del "$c"
    }
    crun_once warm
    for i in $(seq "$RUNS"); do
        t=$(now_ns); mf run --rm busybox -- true >/dev/null; echo "net $(( ($(now_ns) - t) / 1000 ))"
        t=$(now_ns); mf run --rm --network none busybox -- true >/dev/null; echo "none $(( ($(now_ns) - t) / 1000 ))"
        t=$(now_ns); crun_once "$i"; echo "crun $(( ($(now_ns) - t) / 1000 ))"
    done
    exit 0
fi

RUNS=20
INSTANCES=200
MIB=200
PINGS=10000
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS="$2"; shift 2 ;;
        --instances) INSTANCES="$2"; shift 2 ;;
        --mib) MIB="$2"; shift 2 ;;
        --pings) PINGS="$2"; shift 2 ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "net.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

[ "$(id -u)" -eq 0 ] || { echo "net.sh: run as root (sudo bench/net.sh)" >&2; exit 1; }
for d in "$HOME/.cargo/bin" /root/.cargo/bin; do [ -d "$d" ] && export PATH="$d:$PATH"; done
for tool in cargo gcc crun jq ip nsenter busybox; do
    command -v "$tool" >/dev/null || { echo "net.sh: $tool is missing" >&2; exit 1; }
done

echo "net.sh: building mayfly (release)…" >&2
cargo build --release --locked -p mayfly
MAYFLY="$ROOT/target/release/mayfly"

TMP="$(mktemp -d /var/tmp/mayfly-net.XXXXXX)"
STATE="$TMP/state"
SOCK="$TMP/mayfly.sock"
NS="mfbench-$$"
DAEMON_PID=""
OUT="$ROOT/bench/out/net.txt"
mkdir -p "$ROOT/bench/out"
: >"$OUT"

mf() { "$MAYFLY" --socket "$SOCK" "$@"; }
inns() { nsenter --net="/run/netns/$NS" -- "$@"; }
say() { echo "$*" | tee -a "$OUT"; }
alive() { [ -n "$1" ] && [ -d "/proc/$1" ] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }
now_ns() { date +%s%N; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    if alive "$DAEMON_PID" && [ -S "$SOCK" ]; then
        for n in $(mf list --json 2>/dev/null | jq -r '.[].name'); do mf rm --force "$n" >/dev/null 2>&1; done
        for n in $(mf network list --json 2>/dev/null | jq -r '.[].name'); do mf network rm "$n" >/dev/null 2>&1; done
        kill -TERM "$DAEMON_PID"
        for _ in $(seq 100); do alive "$DAEMON_PID" || break; sleep 0.1; done
        alive "$DAEMON_PID" && kill -KILL "$DAEMON_PID"
    fi
    for _ in $(seq 100); do
        [ -z "$(ps -eo pid=,args= | grep -F "$TMP" | grep -v grep)" ] && break
        sleep 0.1
    done
    local left
    left="$(ps -eo pid=,args= | grep -F "$TMP" | grep -v grep || true)"
    if [ -n "$left" ]; then
        echo "net.sh: LEAK: processes left (killing them):" >&2
        echo "$left" >&2
        echo "$left" | awk '{print $1}' | xargs -r kill -KILL
        [ "$rc" -eq 0 ] && rc=1
    fi
    for c in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^mfbc-$NS-"); do ip netns del "$c"; done
    ip netns del "$NS" 2>/dev/null
    if grep -qF "$TMP" /proc/self/mountinfo; then
        echo "net.sh: LEAK: mounts left" >&2
        grep -F "$TMP" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l
        [ "$rc" -eq 0 ] && rc=1
    fi
    cp "$TMP/daemon.log" "$ROOT/bench/out/net-daemon.log" 2>/dev/null
    rm -rf "$TMP"
    [ "$rc" -eq 0 ] && echo "net.sh: clean: namespace, processes and directory of this run removed" >&2
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- the namespace and the daemon --------------------------------------------------------------
ip netns add "$NS"
inns ip link set lo up
echo "net.sh: daemon in namespace $NS, state in $TMP" >&2
nsenter --net="/run/netns/$NS" -- "$MAYFLY" daemon --state-dir "$STATE" --socket "$SOCK" \
    >"$TMP/daemon.log" 2>&1 &
DAEMON_PID=$!
for _ in $(seq 300); do
    [ -S "$SOCK" ] && mf info --json >/dev/null 2>&1 && break
    alive "$DAEMON_PID" || { echo "net.sh: the daemon died:" >&2; cat "$TMP/daemon.log" >&2; exit 1; }
    sleep 0.1
done
FORKER_PID="$(mf info --json | jq -r '.forker_pid // empty')"

# usock into the busybox template.
mkdir -p "$TMP/usock-tree/bin"
gcc -static -O2 -o "$TMP/usock-tree/bin/usock" "$ROOT/crates/mayfly/tests/fixtures/usock.c" 2>/dev/null
mf template patch busybox --from "$TMP/usock-tree" -m usock >/dev/null

# ---- 1. launch latency ------------------------------------------------------------------------
# crun's bundle: a plain busybox root, read-only, /bin/true; its netns path is filled per run.
BUNDLE="$TMP/crun-bundle"
mkdir -p "$BUNDLE/rootfs/bin" "$BUNDLE/rootfs/proc" "$BUNDLE/rootfs/dev" "$BUNDLE/rootfs/sys" "$TMP/crun-state"
cp /bin/busybox "$BUNDLE/rootfs/bin/busybox"
ln -s busybox "$BUNDLE/rootfs/bin/true"
(cd "$BUNDLE" && crun spec)
jq '.process.args = ["/bin/true"] | .process.terminal = false | .root.readonly = true
    | .mounts |= map(select(.type != "cgroup"))
    | .linux.namespaces |= map(if .type == "network" then .path = "NETNS" else . end)' \
    "$BUNDLE/config.json" >"$BUNDLE/config.tmpl"
inns ip link add crbr0 type bridge
inns ip addr add 10.99.0.1/24 dev crbr0
inns ip link set crbr0 up

mf run --rm busybox -- true >/dev/null   # makes the default network (not timed)
export TMP SOCK NS MAYFLY BUNDLE RUNS
unshare -m --propagation private "$SELF" --latency-inner >"$TMP/latency"
inns ip link del crbr0

stats() { # microseconds on stdin -> "median X ms, p90 Y ms"
    sort -n | awk '{a[NR]=$1} END {m=a[int((NR+1)/2)]; p=a[int(NR*0.9+0.999)]; printf "median %.2f ms, p90 %.2f ms (n=%d)", m/1000, p/1000, NR}'
}
say "== launch latency ($RUNS runs, interleaved)"
say "mayfly run --rm, default network : $(awk '$1 == "net" {print $2}' "$TMP/latency" | stats)"
say "mayfly run --rm, --network none  : $(awk '$1 == "none" {print $2}' "$TMP/latency" | stats)"
say "crun run + veth script (busybox root, no overlay, no cgroup, no user namespace): $(awk '$1 == "crun" {print $2}' "$TMP/latency" | stats)"

# ---- 2. TCP over the bridge against a channel ------------------------------------------------
mf launch busybox --name bsrv --no-start -- sh -c \
    'usock serve tcp 7000 & exec usock serve unix /run/mayfly/channels/bench/sock' >/dev/null
mf launch busybox --name bcli --no-start -- sh -c 'while :; do sleep 1; done' >/dev/null
mf channel create bench --server bsrv --client bcli >/dev/null
mf start bsrv bcli >/dev/null
SRV_IP="$(mf info bsrv --json | jq -r '.interfaces[0].ipv4')"
for _ in $(seq 100); do
    mf exec bcli -- test -S /run/mayfly/channels/bench/sock && break
    sleep 0.1
done
say "== instance to instance ($PINGS round trips, $MIB MiB; 3 rounds each, same pair)"
for r in 1 2 3; do
    tcp_rtt=$(mf exec bcli -- usock pingpong tcp "$SRV_IP" 7000 "$PINGS")
    ch_rtt=$(mf exec bcli -- usock pingpong unix /run/mayfly/channels/bench/sock "$PINGS")
    tcp_bw=$(mf exec bcli -- usock stream tcp "$SRV_IP" 7000 "$MIB")
    ch_bw=$(mf exec bcli -- usock stream unix /run/mayfly/channels/bench/sock "$MIB")
    say "round $r: TCP over the bridge ${tcp_rtt} ${tcp_bw} | channel ${ch_rtt} ${ch_bw}"
done
mf rm --force bsrv bcli >/dev/null

# ---- 3. many instances on one network --------------------------------------------------------
mf network create many --subnet 10.98.0.0/24 >/dev/null
DNSMASQ_PID="$(pgrep -f -- "--conf-file=$STATE/net/many/dnsmasq.conf" | head -1 || true)"
RSS0_D=$(rss_kib "$DAEMON_PID"); RSS0_F=$(rss_kib "$FORKER_PID"); RSS0_N=$(rss_kib "${DNSMASQ_PID:-0}")
t=$(now_ns)
for i in $(seq "$INSTANCES"); do
    mf launch busybox --name "n$i" --network many -- sleep 1000000 >/dev/null
done
LAUNCH_MS=$(( ($(now_ns) - t) / 1000000 ))
GW="$(mf network info many --json | jq -r .gateway)"
MISSING=0
for i in $(seq "$INSTANCES"); do
    answer="$(inns busybox timeout 5 busybox nslookup "n$i" "$GW" 2>/dev/null || true)"
    case "$answer" in *Name:*) ;; *) MISSING=$((MISSING + 1)) ;; esac
done
DNSMASQ_PID="$(pgrep -f -- "--conf-file=$STATE/net/many/dnsmasq.conf" | head -1 || true)"
say "== $INSTANCES instances on one network"
say "launch all: ${LAUNCH_MS} ms ($(( LAUNCH_MS / INSTANCES )) ms each); names not answered: $MISSING"
say "VmRSS KiB before -> after: daemon $RSS0_D -> $(rss_kib "$DAEMON_PID"), forker $RSS0_F -> $(rss_kib "$FORKER_PID"), dnsmasq $RSS0_N -> $(rss_kib "${DNSMASQ_PID:-0}")"
say "veths: $(inns ip -o link show | grep -c ' mv') ; nft ruleset lines: $(inns nft list ruleset | wc -l)"
t=$(now_ns)
mf list --json | jq -r '.[].name' | xargs -r "$MAYFLY" --socket "$SOCK" rm --force >/dev/null
say "remove all: $(( ($(now_ns) - t) / 1000000 )) ms; veths left: $(inns ip -o link show | grep -c ' mv' || true)"
mf network rm many >/dev/null
echo "net.sh: results in $OUT" >&2

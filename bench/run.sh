#!/usr/bin/env bash
# Benchmark mayfly on this machine. Suites (any combination; none given = --lifecycle):
#
#   sudo bench/run.sh [--lifecycle] [--phases] [--runs N] [--warmup N] [--json] [options]
#       start-up against crun (fresh overlay per run) and a bare floor; with --phases,
#       bench/phases.sh then breaks `mayfly run --rm` down into phases (perf)
#   sudo bench/run.sh --snapshots [--runs N] [--sizes 0,1,10,100] [--big-mb 200] [--no-publish]
#       snapshot, clone, publish and cp -a of the whole root, against template size and
#       changed data
#   sudo bench/run.sh --rollout [--runs N] [--instances 100] [--wave 10] [--health CMD]
#       launching 100 instances, template patch, rollout, rollback; disk and daemon memory
#   sudo bench/run.sh --all            the three, in that order, on one daemon
#
# Other options go to every selected suite's mayfly-bench (see `mayfly-bench --help`).
# Builds mayfly (release) and the benchmark, starts a private daemon on a temporary state
# directory and socket (never /var/lib/mayfly or /run/mayfly), runs the suites, then
# removes every instance, stops the daemon, waits for its forker, removes the temporary
# directory and checks that no process, mount or cgroup of the run is left. Results go to
# stdout and to bench/out/{latest,snapshots,rollout}.{txt,json}.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

PHASES=0
LIFECYCLE=0
SNAPSHOTS=0
ROLLOUT=0
ARGS=()
for a in "$@"; do
    case "$a" in
        --phases) PHASES=1; LIFECYCLE=1 ;;
        --lifecycle) LIFECYCLE=1 ;;
        --snapshots) SNAPSHOTS=1 ;;
        --rollout) ROLLOUT=1 ;;
        --all) LIFECYCLE=1; SNAPSHOTS=1; ROLLOUT=1 ;;
        *) ARGS+=("$a") ;;
    esac
done
[ $((LIFECYCLE + SNAPSHOTS + ROLLOUT)) -eq 0 ] && LIFECYCLE=1

if [ "$(id -u)" -ne 0 ]; then
    echo "run.sh: run as root (sudo bench/run.sh)" >&2
    exit 1
fi
for d in "$HOME/.cargo/bin" /root/.cargo/bin; do [ -d "$d" ] && export PATH="$d:$PATH"; done
command -v cargo >/dev/null || { echo "run.sh: cargo not found" >&2; exit 1; }
if [ "$LIFECYCLE" -eq 1 ] && ! command -v crun >/dev/null; then
    echo "run.sh: crun is missing; installing it" >&2
    apt-get install -y crun
fi
[ -x /bin/busybox ] || { echo "run.sh: /bin/busybox is missing (apt-get install busybox-static)" >&2; exit 1; }
CRUN="$(command -v crun || echo /usr/bin/crun)"

echo "run.sh: building mayfly (release) and the benchmark…" >&2
cargo build --release --locked -p mayfly
cargo build --release --locked --manifest-path bench/Cargo.toml
MAYFLY="$ROOT/target/release/mayfly"
BENCH="$ROOT/bench/target/release/mayfly-bench"

TMP="$(mktemp -d /var/tmp/mayfly-bench.XXXXXX)"
STATE="$TMP/state"
SOCK="$TMP/mayfly.sock"
DAEMON_PID=""
FORKER_PID=""
CGROUP_PARENT=""
mf() { "$MAYFLY" --socket "$SOCK" "$@"; }

alive() { [ -n "$1" ] && [ -d "/proc/$1" ] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    if alive "$DAEMON_PID" && [ -S "$SOCK" ]; then
        # Every instance left by an interrupted run.
        local names
        names="$(mf list --json 2>/dev/null | sed -n 's/^ *"name": "\(.*\)",$/\1/p')"
        for n in $names; do mf rm --force "$n" >/dev/null 2>&1 || echo "run.sh: could not remove instance $n" >&2; done
    fi
    if alive "$DAEMON_PID"; then
        kill -TERM "$DAEMON_PID"
        for _ in $(seq 100); do alive "$DAEMON_PID" || break; sleep 0.1; done
        alive "$DAEMON_PID" && { echo "run.sh: daemon did not stop; killing it" >&2; kill -KILL "$DAEMON_PID"; }
        wait "$DAEMON_PID" 2>/dev/null
    fi
    if alive "$FORKER_PID"; then
        # The forker leaves on its own once the daemon is gone and nothing runs.
        for _ in $(seq 200); do alive "$FORKER_PID" || break; sleep 0.1; done
        alive "$FORKER_PID" && { echo "run.sh: forker $FORKER_PID did not exit; killing it" >&2; kill -KILL "$FORKER_PID"; }
    fi

    if [ -n "${NETNS:-}" ] && [ -e "/run/netns/$NETNS" ]; then
        # Its networks' name servers run in it; then it goes, with whatever links are left.
        for p in $(ps -eo pid=,args= | grep -F "$STATE/net/" | grep -v grep | awk '{print $1}'); do kill "$p"; done
        ip netns del "$NETNS"
    fi

    # Leak checks: processes, mounts, cgroups of this run.
    local leaks=0
    local procs
    procs="$(ps -eo pid=,args= | grep -F "$TMP" | grep -v grep || true)"
    if [ -n "$procs" ]; then echo "run.sh: LEAK: processes left:" >&2; echo "$procs" >&2; leaks=1; fi
    if grep -qF "$TMP" /proc/self/mountinfo; then
        echo "run.sh: LEAK: mounts left:" >&2; grep -F "$TMP" /proc/self/mountinfo >&2
        grep -F "$TMP" /proc/self/mountinfo | awk '{print $5}' | sort -r | while read -r m; do umount -l "$m"; done
        leaks=1
    fi
    local cg
    for cg in /sys/fs/cgroup/*/"${CGROUP_PARENT:-/nonexistent}" /sys/fs/cgroup/*/mayfly-bench-*; do
        [ -d "$cg" ] || continue
        case "$cg" in
            */mayfly-bench-*)
                # The benchmark's crun parent group; another benchmark run may own a live one.
                alive "${cg##*-}" && continue ;;
        esac
        echo "run.sh: LEAK: cgroup left: $cg" >&2
        leaks=1
    done
    if [ -d "$TMP" ]; then
        cp "$TMP/daemon.log" "$ROOT/bench/out/daemon.log" 2>/dev/null
        rm -rf "$TMP" || { echo "run.sh: could not remove $TMP" >&2; leaks=1; }
    fi
    if [ "$leaks" -ne 0 ]; then
        echo "run.sh: FAILED: something was left behind (see above)" >&2
        [ "$rc" -eq 0 ] && rc=1
    else
        echo "run.sh: clean: no process, mount, cgroup or directory of this run is left" >&2
        [ "$rc" -eq 0 ] || echo "run.sh: FAILED (exit $rc)" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$ROOT/bench/out"
echo "run.sh: starting a private daemon in $TMP…" >&2
# In a network namespace of its own: the networks its instances get (the rollout suite's
# launches) change nothing of the host's.
NETNS="mfbench-$$"
ip netns add "$NETNS"
ip -n "$NETNS" link set lo up
nsenter --net="/run/netns/$NETNS" -- "$MAYFLY" daemon --state-dir "$STATE" --socket "$SOCK" >"$TMP/daemon.log" 2>&1 &
DAEMON_PID=$!
for _ in $(seq 300); do
    if [ -S "$SOCK" ] && mf info --json >/dev/null 2>&1; then break; fi
    alive "$DAEMON_PID" || { echo "run.sh: the daemon died:" >&2; cat "$TMP/daemon.log" >&2; exit 1; }
    sleep 0.1
done
FORKER_PID="$(mf info --json | sed -n 's/^ *"forker_pid": \([0-9]*\).*/\1/p')"
if alive "$FORKER_PID"; then
    CGROUP_PARENT="$(tr '\0' '\n' <"/proc/$FORKER_PID/cmdline" | sed -n '/^--cgroup-parent$/{n;p}')"
fi

# suite NAME OUT: one mayfly-bench run; results in bench/out/OUT.{txt,json}.
suite() {
    local name="$1" out="$2"
    shift 2
    "$BENCH" --suite "$name" --mayfly "$MAYFLY" --socket "$SOCK" --state-dir "$STATE" \
        --work "$TMP/work-$name" --json-out "$ROOT/bench/out/$out.json" "$@" \
        ${ARGS[@]+"${ARGS[@]}"} | tee "$ROOT/bench/out/$out.txt"
}

if [ "$LIFECYCLE" -eq 1 ]; then
    suite lifecycle latest --crun "$CRUN"
    if [ "$PHASES" -eq 1 ]; then
        echo
        echo "Phases of mayfly run --rm busybox -- /bin/true (perf tracepoints, same daemon):"
        MAYFLY="$MAYFLY" "$ROOT/bench/phases.sh" "$SOCK" 100 | tee "$ROOT/bench/out/phases.txt"
    fi
fi
if [ "$SNAPSHOTS" -eq 1 ]; then
    [ "$LIFECYCLE" -eq 1 ] && echo
    suite snapshots snapshots
fi
if [ "$ROLLOUT" -eq 1 ]; then
    [ $((LIFECYCLE + SNAPSHOTS)) -gt 0 ] && echo
    suite rollout rollout --daemon-pid "$DAEMON_PID"
fi

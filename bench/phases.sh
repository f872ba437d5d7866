#!/usr/bin/env bash
# Where the time of `mayfly run --rm busybox -- /bin/true` goes, phase by phase, from kernel
# tracepoints (perf record; low overhead, unlike strace). Against a running daemon:
#
#   sudo bench/phases.sh SOCKET [RUNS]      (default 100 runs; needs perf and python3)
#
# Phases are cut at: CLI exec, CLI connect(), forker receives the spawn request, forker
# clone(), clone done, forker hands the root to the child, exec of /bin/true, its exit,
# forker waitid(), CLI exit. Also counts slow (> 1 ms) writes by the forker, which are the
# first cgroup.procs write of a v1 attach waiting for an RCU grace period.
set -euo pipefail
SOCK="${1:?usage: phases.sh SOCKET [RUNS]}"
RUNS="${2:-100}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
MAYFLY="${MAYFLY:-$ROOT/target/release/mayfly}"
[ "$(id -u)" -eq 0 ] || { echo "phases.sh: run as root" >&2; exit 1; }
command -v perf >/dev/null || { echo "phases.sh: perf is missing (apt-get install linux-perf)" >&2; exit 1; }
FORKER="$("$MAYFLY" --socket "$SOCK" info --json | sed -n 's/^ *"forker_pid": \([0-9]*\).*/\1/p')"
[ -n "$FORKER" ] || { echo "phases.sh: no forker pid from mayfly info" >&2; exit 1; }
OUT="$(mktemp -d /tmp/mayfly-phases.XXXXXX)"
trap 'rm -rf "$OUT"' EXIT

perf record -q -a -o "$OUT/perf.data" \
    -e sched:sched_process_exec,sched:sched_process_fork,sched:sched_process_exit \
    -e syscalls:sys_enter_connect,syscalls:sys_exit_recvmsg,syscalls:sys_enter_sendmsg \
    -e syscalls:sys_enter_clone,syscalls:sys_enter_waitid \
    -e syscalls:sys_enter_write --filter "common_pid == $FORKER" \
    -e syscalls:sys_exit_write --filter "common_pid == $FORKER" \
    -- sh -c "for i in \$(seq $RUNS); do '$MAYFLY' --socket '$SOCK' run --rm busybox -- /bin/true || exit 1; done"
perf script -i "$OUT/perf.data" 2>/dev/null >"$OUT/perf.txt"

FORKER="$FORKER" MAYFLY="$MAYFLY" python3 - "$OUT/perf.txt" <<'EOF'
import os, re, statistics, sys
F, exe = os.environ["FORKER"], os.environ["MAYFLY"]
ev = []
for line in open(sys.argv[1]):
    m = re.match(r"\s*(.+?)\s+(\d+)\s+\[\d+\]\s+([\d.]+):\s+(\S+):\s*(.*)", line)
    if m:
        _, pid, t, name, rest = m.groups()
        ev.append((float(t) * 1000, pid, name, rest))
runs, cur, wstart, slow_writes = [], None, None, []
for t, pid, name, rest in ev:
    if pid == F and name == "syscalls:sys_enter_write":
        wstart = t
        continue
    if pid == F and name == "syscalls:sys_exit_write" and wstart is not None:
        if t - wstart > 1.0:
            slow_writes.append(t - wstart)
        wstart = None
        continue
    if name == "sched:sched_process_exec" and rest.startswith("filename=" + exe):
        cur = {"pid": pid, "exec": t}
        runs.append(cur)
        continue
    if cur is None:
        continue
    if pid == cur["pid"] and name == "syscalls:sys_enter_connect":
        cur.setdefault("connect", t)
    elif pid == F and name == "syscalls:sys_exit_recvmsg" and "connect" in cur:
        cur.setdefault("frecv", t)
    elif pid == F and name == "syscalls:sys_enter_clone" and "frecv" in cur:
        cur.setdefault("clone", t)
    elif pid == F and name == "sched:sched_process_fork" and "clone" in cur:
        cur.setdefault("forked", t)
    elif pid == F and name == "syscalls:sys_enter_sendmsg" and "forked" in cur:
        cur.setdefault("go", t)
    elif name == "sched:sched_process_exec" and "filename=/bin/true" in rest:
        cur.setdefault("texec", t)
        cur["tpid"] = pid
    elif name == "sched:sched_process_exit" and pid == cur.get("tpid"):
        cur.setdefault("texit", t)
    elif pid == F and name == "syscalls:sys_enter_waitid" and "texit" in cur:
        cur.setdefault("waitid", t)
    elif pid == cur["pid"] and name == "sched:sched_process_exit":
        cur.setdefault("end", t)
keys = ["exec", "connect", "frecv", "clone", "forked", "go", "texec", "texit", "waitid", "end"]
labels = [
    "CLI start (exec -> connect)",
    "daemon: HTTP, store, instance dirs -> forker",
    "forker: create cgroups",
    "clone() into 6 new namespaces",
    "forker: id maps, join cgroups, idmapped overlay",
    "child: mounts, pivot, seccomp, caps -> exec",
    "/bin/true runs",
    "exit -> forker waitid (namespace teardown)",
    "daemon: cleanup, reply; CLI exit",
]
ok = [r for r in runs if all(k in r for k in keys)]
print(f"{len(ok)} complete runs of {len(runs)}\n")
print(f"{'phase':<50} {'median':>9} {'mean':>9} {'p90':>9}")
def row(label, d):
    d = sorted(d)
    p90 = d[min(len(d) - 1, int(round(0.9 * (len(d) - 1))))]
    print(f"{label:<50} {statistics.median(d):6.3f} ms {statistics.mean(d):6.3f} ms {p90:6.3f} ms")
for i, label in enumerate(labels):
    row(label, [r[keys[i + 1]] - r[keys[i]] for r in ok])
row("total (CLI exec -> CLI exit)", [r["end"] - r["exec"] for r in ok])
print(f"\nforker writes slower than 1 ms: {len(slow_writes)} in {len(ok)} runs"
      + (f" ({', '.join(f'{w:.1f}' for w in sorted(slow_writes))} ms)" if slow_writes else ""))
EOF

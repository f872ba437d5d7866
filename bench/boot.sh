#!/usr/bin/env bash
# Boot of a systemd template (issue 20): time from `mayfly launch` to
# `systemctl is-system-running --wait` answering `running`, median of RUNS, and the memory of
# an idle booted instance (its memory cgroup); against `systemd-nspawn -b` of the same tree
# when ROOTFS is given and systemd-nspawn (Debian's systemd-container) is installed.
#
#   sudo bench/boot.sh SOCKET TEMPLATE [RUNS] [ROOTFS]
#
# SOCKET is a running daemon's API socket, TEMPLATE a template built with
# `mayfly template build TEMPLATE --debian bookworm`; ROOTFS a directory with the same tree
# for nspawn (e.g. `debootstrap --variant=minbase --include=systemd-sysv,dbus bookworm DIR`).
# Every instance this makes is removed; nspawn runs with --register=no (no machined needed).
set -euo pipefail
SOCK="${1:?usage: boot.sh SOCKET TEMPLATE [RUNS] [ROOTFS]}"
TEMPLATE="${2:?usage: boot.sh SOCKET TEMPLATE [RUNS] [ROOTFS]}"
RUNS="${3:-10}"
ROOTFS="${4:-}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
MAYFLY="${MAYFLY:-$ROOT/target/release/mayfly}"
[ -x "$MAYFLY" ] || MAYFLY="$ROOT/target/debug/mayfly"
m() { "$MAYFLY" --socket "$SOCK" "$@"; }
now() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

# Memory charged to the group of process $1 (v1 memory controller or v2 memory.current).
memory_of() {
  local pid="$1" rel
  rel="$(sed -n 's/^[0-9]*:memory:\(.*\)/\1/p' "/proc/$pid/cgroup")"
  if [ -n "$rel" ] && [ -r "/sys/fs/cgroup/memory$rel/memory.usage_in_bytes" ]; then
    cat "/sys/fs/cgroup/memory$rel/memory.usage_in_bytes"
    return
  fi
  rel="$(sed -n 's/^0::\(.*\)/\1/p' "/proc/$pid/cgroup")"
  cat "/sys/fs/cgroup$rel/memory.current" 2>/dev/null || echo 0
}

# Pss (KiB) summed over the processes in the pid namespace of process $1: the same measure for
# both (nspawn without machined makes no cgroup of its own).
pss_of_ns() {
  local ns total=0 p v
  ns="$(readlink "/proc/$1/ns/pid")"
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/ns/pid" 2>/dev/null)" = "$ns" ] || continue
    v="$(awk '/^Pss:/ {print $2}' "$p/smaps_rollup" 2>/dev/null || true)"
    total=$((total + ${v:-0}))
  done
  echo "$total"
}

# Waits (60 s at most) until `$@ systemctl is-system-running --wait` answers; prints it.
wait_running() {
  local deadline=$(($(date +%s) + 60)) state
  while [ "$(date +%s)" -lt "$deadline" ]; do
    state="$("$@" systemctl is-system-running --wait 2>/dev/null || true)"
    if [ -n "$state" ] && [ "$state" != offline ]; then
      echo "$state"
      return
    fi
    sleep 0.05
  done
  echo timeout
}

times=() mems=() psss=()
for i in $(seq "$RUNS"); do
  name="bootbench-$$-$i"
  t0=$(now)
  m launch "$TEMPLATE" --name "$name" >/dev/null
  state="$(wait_running m exec "$name" --)"
  t1=$(now)
  [ "$state" = running ] || echo "run $i: $state" >&2
  times+=($(((t1 - t0) / 1000000)))
  sleep 2
  pid="$(m info "$name" --json | sed -n 's/^ *"pid": \([0-9]*\).*/\1/p' | head -1)"
  mems+=($(($(memory_of "$pid") / 1024)))
  psss+=($(pss_of_ns "$pid"))
  m rm --force "$name" >/dev/null
done
echo "mayfly:  boot to running, median of $RUNS: $(printf '%s\n' "${times[@]}" | median) ms (all: ${times[*]})"
echo "mayfly:  idle booted instance: Pss of its processes, median $(printf '%s\n' "${psss[@]}" | median) KiB; its memory cgroup (page cache included) $(printf '%s\n' "${mems[@]}" | median) KiB"

if [ -z "$ROOTFS" ]; then
  echo "nspawn:  no ROOTFS given; skipped"
  exit 0
fi
if ! command -v systemd-nspawn >/dev/null; then
  echo "nspawn:  systemd-nspawn is not installed (apt-get install systemd-container); skipped"
  exit 0
fi
times=() psss=()
for i in $(seq "$RUNS"); do
  t0=$(now)
  systemd-nspawn -q --register=no --keep-unit -D "$ROOTFS" -b >/dev/null 2>&1 &
  nspawn=$!
  leader=""
  for _ in $(seq 200); do
    leader="$(pgrep -P "$nspawn" | head -1 || true)"
    [ -n "$leader" ] && break
    sleep 0.01
  done
  state="$(wait_running nsenter -t "$leader" -a)"
  t1=$(now)
  [ "$state" = running ] || echo "nspawn run $i: $state" >&2
  times+=($(((t1 - t0) / 1000000)))
  sleep 2
  psss+=($(pss_of_ns "$leader"))
  kill -RTMIN+3 "$leader" 2>/dev/null || true
  timeout 20 tail --pid="$nspawn" -f /dev/null || kill -9 "$nspawn"
  wait "$nspawn" 2>/dev/null || true
done
echo "nspawn:  boot to running, median of $RUNS: $(printf '%s\n' "${times[@]}" | median) ms (all: ${times[*]})"
echo "nspawn:  idle booted container: Pss of its processes, median $(printf '%s\n' "${psss[@]}" | median) KiB"

#!/usr/bin/env bash
# What a disk limit costs at launch (issue 22): the per-instance set-up of each mechanism,
# median of RUNS, in milliseconds.
#
#   sudo bench/disk-quota.sh [RUNS]
#
#   nothing       mkdir of an instance directory (what a launch without --disk does)
#   project       mkdir + project id with the inherit flag (FS_IOC_FSSETXATTR, through
#                 `chattr -p ID +P`) + the limit (Q_SETQUOTA, through `setquota -P` when the
#                 kernel and quota tools allow it), on a loop-mounted xfs (or ext4) image mounted
#                 `prjquota` when the kernel supports it, else without quotas (labels only:
#                 then the limit step is not measured, see the output)
#   image         a filesystem image per instance: sparse file, mkfs.ext4, loop device, mount
#                 (and, separately, its teardown: umount, loop detach, delete)
#   spawn         one fork+exec of /bin/true: `project` pays it once or twice for the tools, the
#                 daemon does the same with one ioctl and one quotactl and no process
#   in one process  `nothing` and `project` again, timed inside one python3 process (mkdir;
#                 mkdir + Q_GETQUOTA of a candidate id + FS_IOC_FS{GET,SET}XATTR): what the
#                 daemon pays
#
# Everything it makes lives under a temporary directory and is removed at the end (also on
# failure): images, loop devices, mounts.
set -euo pipefail
RUNS="${1:-50}"
[ "$(id -u)" -eq 0 ] || { echo "disk-quota.sh: run as root (loop devices, mounts)" >&2; exit 1; }
# Microseconds, without a fork (bash 5's EPOCHREALTIME): read it as `t0=${EPOCHREALTIME/./}`.
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print int((a[NR/2]+a[NR/2+1])/2)}'; }
ms() { awk -v us="$1" 'BEGIN {printf "%.2f", us / 1e3}'; }

WORK="$(mktemp -d /var/tmp/mayfly-dq-XXXXXX)"
LOOPS=()
MOUNTS=()
cleanup() {
  for m in "${MOUNTS[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
  for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- spawn baseline ---
samples=()
for _ in $(seq "$RUNS"); do t0=${EPOCHREALTIME/./}; /bin/true; samples+=($(( ${EPOCHREALTIME/./} - t0 ))); done
SPAWN=$(printf '%s\n' "${samples[@]}" | median)

# --- project ids (and quotas when the kernel has them) ---
PROJ_FS=none PROJ_NOTE=""
if command -v mkfs.xfs >/dev/null; then
  truncate -s 512M "$WORK/xfs.img"
  mkfs.xfs -q -f -K "$WORK/xfs.img"
  dev=$(losetup --find --show "$WORK/xfs.img"); LOOPS+=("$dev")
  mkdir "$WORK/xfs"
  if mount -o prjquota "$dev" "$WORK/xfs" 2>/dev/null; then
    PROJ_FS="xfs, prjquota"
  else
    mount "$dev" "$WORK/xfs"; PROJ_FS="xfs without quotas (this kernel has no CONFIG_XFS_QUOTA)"
  fi
  MOUNTS+=("$WORK/xfs")
  mkdir "$WORK/xfs/instances" "$WORK/xfs/plain"
  PLAIN="$WORK/xfs/plain"
  samples=()
  limit_measured=no
  for i in $(seq "$RUNS"); do
    id=$(( 1879048192 + i ))
    t0=${EPOCHREALTIME/./}
    mkdir "$WORK/xfs/instances/i$i"
    chattr -p "$id" +P "$WORK/xfs/instances/i$i"
    if [ "$PROJ_FS" = "xfs, prjquota" ] && command -v setquota >/dev/null; then
      setquota -P "$id" 0 65536 0 0 "$WORK/xfs" && limit_measured=yes
    fi
    samples+=($(( ${EPOCHREALTIME/./} - t0 )))
    [ "$limit_measured" = yes ] && setquota -P "$id" 0 0 0 0 "$WORK/xfs"
  done
  PROJECT=$(printf '%s\n' "${samples[@]}" | median)
  [ "$limit_measured" = yes ] || PROJ_NOTE=" (limit not set: no quotas here or no setquota; it is one quotactl)"
else
  PROJECT=""
  PROJ_NOTE=" (not measured: mkfs.xfs missing; scripts/install-deps installs xfsprogs)"
fi

# --- nothing (on the same filesystem as `project` when there is one) ---
PLAIN="${PLAIN:-$WORK/plain}"
mkdir -p "$PLAIN"
samples=()
for i in $(seq "$RUNS"); do
  t0=${EPOCHREALTIME/./}; mkdir "$PLAIN/i$i"; samples+=($(( ${EPOCHREALTIME/./} - t0 )))
done
NOTHING=$(printf '%s\n' "${samples[@]}" | median)

# --- in one process, as the daemon does it (python3: no process per step) ---
INPROC=""
if command -v python3 >/dev/null && [ -d "$WORK/xfs/instances" ]; then
  INPROC=$(python3 - "$WORK/xfs/inproc" "$RUNS" <<'PY'
import ctypes, fcntl, os, struct, sys, time
root, runs = sys.argv[1], int(sys.argv[2])
os.mkdir(root)
libc = ctypes.CDLL(None, use_errno=True)
GET, SET = 0x801C581F, 0x401C5820          # FS_IOC_FSGETXATTR, FS_IOC_FSSETXATTR
Q_GETQUOTA = (0x800007 << 8) | 2           # QCMD(Q_GETQUOTA, PRJQUOTA)
def median(v):
    v = sorted(v); n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2
plain, proj = [], []
for i in range(runs):
    t0 = time.perf_counter_ns(); os.mkdir(f"{root}/p{i}"); plain.append(time.perf_counter_ns() - t0)
for i in range(runs):
    t0 = time.perf_counter_ns()
    path = f"{root}/q{i}"
    os.mkdir(path)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    dq = ctypes.create_string_buffer(72)
    libc.syscall(443, fd, Q_GETQUOTA, 0x70000000 + i, dq)  # is the id unused? (quotactl_fd)
    buf = bytearray(fcntl.ioctl(fd, GET, bytes(28)))
    xflags, ext, nex, projid, cow = struct.unpack_from("5I", buf)
    struct.pack_into("5I", buf, 0, xflags | 0x200, ext, nex, 0x70000000 + i, cow)
    fcntl.ioctl(fd, SET, bytes(buf))
    os.close(fd)
    proj.append(time.perf_counter_ns() - t0)
print(int(median(plain) / 1000), int(median(proj) / 1000))
PY
)
fi

# --- an image per instance ---
mkdir "$WORK/images"
setup=() teardown=()
for i in $(seq "$RUNS"); do
  img="$WORK/images/i$i.img" point="$WORK/images/i$i"
  t0=${EPOCHREALTIME/./}
  truncate -s 1G "$img"
  mkfs.ext4 -q -F -E nodiscard,lazy_itable_init=1 "$img"
  dev=$(losetup --find --show "$img")
  mkdir "$point"
  mount "$dev" "$point"
  t1=${EPOCHREALTIME/./}
  umount "$point"
  losetup -d "$dev"
  rm -f "$img"; rmdir "$point"
  t2=${EPOCHREALTIME/./}
  setup+=($(( t1 - t0 ))); teardown+=($(( t2 - t1 )))
done
IMAGE=$(printf '%s\n' "${setup[@]}" | median)
IMAGE_DOWN=$(printf '%s\n' "${teardown[@]}" | median)

echo "disk-limit set-up per instance, median of $RUNS runs (kernel $(uname -r)):"
net() { local v=$(( $1 - $2 * SPAWN )); echo $(( v > 0 ? v : 0 )); }
if [ -n "$INPROC" ]; then
  # The daemon's own steps, timed in one process (the process-based figures below them are
  # dominated by process spawns and the noise of a shared machine).
  read -r IN_PLAIN IN_PROJ <<<"$INPROC"
  printf '  %-34s %8s µs\n' "nothing (mkdir)" "$IN_PLAIN"
  printf '  %-34s %8s µs   on %s (+ one Q_SETQUOTA for the limit%s)\n' \
    "project id (mkdir+check+ioctl)" "$IN_PROJ" "$PROJ_FS" \
    "$([ "$PROJ_FS" = "xfs, prjquota" ] || echo ': not timed on this kernel')"
fi
printf '  %-34s %8s ms   (%s ms without the mkdir process)\n' "nothing, as processes (mkdir)" \
  "$(ms "$NOTHING")" "$(ms "$(net "$NOTHING" 1)")"
if [ -n "$PROJECT" ]; then
  printf '  %-34s %8s ms   (%s ms without the 2 processes)%s\n' "project id, as processes (+chattr)" \
    "$(ms "$PROJECT")" "$(ms "$(net "$PROJECT" 2)")" "$PROJ_NOTE"
else
  printf '  %-34s %8s%s\n' "project id" "-" "$PROJ_NOTE"
fi
printf '  %-34s %8s ms\n' "image (truncate+mkfs+loop+mount)" "$(ms "$IMAGE")"
printf '  %-34s %8s ms\n' "image teardown (umount+detach+rm)" "$(ms "$IMAGE_DOWN")"
printf '  %-34s %8s ms\n' "one process spawn (/bin/true)" "$(ms "$SPAWN")"

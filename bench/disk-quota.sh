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
printf '  %-34s %8s ms   (%s ms without the mkdir process)\n' "nothing (mkdir)" "$(ms "$NOTHING")" \
  "$(ms "$(net "$NOTHING" 1)")"
if [ -n "$PROJECT" ]; then
  printf '  %-34s %8s ms   (%s ms without the 2 processes) on %s%s\n' "project id (mkdir+chattr)" \
    "$(ms "$PROJECT")" "$(ms "$(net "$PROJECT" 2)")" "$PROJ_FS" "$PROJ_NOTE"
else
  printf '  %-34s %8s%s\n' "project id" "-" "$PROJ_NOTE"
fi
printf '  %-34s %8s ms\n' "image (truncate+mkfs+loop+mount)" "$(ms "$IMAGE")"
printf '  %-34s %8s ms\n' "image teardown (umount+detach+rm)" "$(ms "$IMAGE_DOWN")"
printf '  %-34s %8s ms\n' "one process spawn (/bin/true)" "$(ms "$SPAWN")"

//! Limits and usage of instance groups: one [`Controller`] abstraction with a v1 and a v2
//! implementation of each controller (memory, cpu, cpuset, pids, io), chosen once by the
//! layout the groups live in (see [`Cgroups::apply_limits`]). Nothing here branches on the
//! cgroup version: the version picks the list of controllers, and each controller knows its
//! own files.
//!
//! Semantics shared by both versions:
//! - Every key of [`Limits`] that is absent is lifted (v2 `max`, v1 `-1`, weights back to the
//!   default), so applying a `Limits` to a running group makes it exactly that.
//! - `swap` absent means no swap at all.
//! - A key that is set but cannot be enforced (its controller is missing, the kernel refused
//!   the value) is answered as a refusal `(key, reason)`; absent keys whose controller is
//!   missing are skipped (there is nothing to lift).

mod cpu;
mod cpuset;
mod io;
mod memory;
mod pids;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use mayfly_api::Limits;

use super::{CgroupError, CgroupMode, Cgroups};
use crate::Usage;

/// A limit that could not be applied: its key (one of [`mayfly_api::LIMIT_KEYS`]) and why.
pub type Refusal = (String, String);

/// One controller in one cgroup version.
pub(crate) trait Controller: Sync {
    /// Refusals for the limits of `limits` this controller cannot enforce for groups made
    /// under `at` (a group that may not exist yet: its nearest existing ancestor is read).
    fn check(&self, at: &At<'_>, limits: &Limits, out: &mut Vec<Refusal>);
    /// Writes `limits` (absent ones lifted) into the group `at`.
    fn apply(&self, at: &At<'_>, limits: &Limits, out: &mut Vec<Refusal>);
    /// Adds the group's figures this controller accounts.
    fn usage(&self, at: &At<'_>, usage: &mut Usage);
}

/// The controllers of groups in v1 hierarchies (also the hybrid layout).
static V1: &[&dyn Controller] = &[
    &memory::MemoryV1,
    &cpu::CpuV1,
    &cpuset::CpusetV1,
    &pids::PidsV1,
    &io::IoV1,
];

/// The controllers of groups in the unified hierarchy.
static V2: &[&dyn Controller] = &[
    &memory::MemoryV2,
    &cpu::CpuV2,
    &cpuset::CpusetV2,
    &pids::PidsV2,
    &io::IoV2,
];

/// A group (existing, or about to be made) as the controllers see it.
pub(crate) struct At<'a> {
    cg: &'a Cgroups,
    rel: String,
    /// The whole disk (`MAJ:MIN`) that `io-max` applies to, if the state directory has one.
    io_device: Option<&'a str>,
}

impl At<'_> {
    /// The group's directory in the v1 hierarchy that carries `subsystem`.
    fn v1(&self, subsystem: &str) -> Option<PathBuf> {
        let h = self
            .cg
            .roots
            .iter()
            .find(|h| h.boot.is_none() && h.has(subsystem))?;
        Some(h.mount.join(&self.rel))
    }

    /// The group's directory in the unified hierarchy.
    fn v2(&self) -> Option<PathBuf> {
        let h = self.cg.roots.first()?;
        Some(h.mount.join(&self.rel))
    }

    /// The mount point of the hierarchy `dir` is in.
    fn mount_of(&self, dir: &Path) -> Option<&Path> {
        self.cg
            .roots
            .iter()
            .map(|h| h.mount.as_path())
            .find(|m| dir.starts_with(m))
    }
}

/// `dir`, or its nearest ancestor that exists (a group not made yet inherits from there).
fn existing(dir: &Path) -> PathBuf {
    dir.ancestors()
        .find(|d| d.is_dir())
        .unwrap_or(dir)
        .to_owned()
}

/// The v2 controllers a group made below `dir` can get (`cgroup.controllers` of `dir`, or of
/// its nearest existing ancestor).
fn v2_available(dir: &Path) -> Vec<String> {
    fs::read_to_string(existing(dir).join("cgroup.controllers"))
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// The reason for a limit whose v2 controller is missing from the groups' hierarchy.
fn v2_missing(at: &At<'_>, controller: &str) -> String {
    let dir = at.v2().map(|d| existing(&d)).unwrap_or_default();
    let held = v2_available(&dir).join(" ");
    format!(
        "the cgroup v2 hierarchy at {} offers no {controller} controller to instance groups (it offers: {}); start the daemon with --cgroup-layout auto to use this host's v1 controllers, or enable {controller} in the parent groups' cgroup.subtree_control",
        at.mount_of(&dir).unwrap_or(&dir).display(),
        if held.is_empty() { "none" } else { &held },
    )
}

/// The reason for a limit whose v1 hierarchy is missing.
fn v1_missing(subsystem: &str) -> String {
    format!(
        "this host has no cgroup v1 hierarchy with the {subsystem} controller mounted (mount one: `mount -t cgroup -o {subsystem} cgroup /sys/fs/cgroup/{subsystem}`)"
    )
}

/// Refuses each of `keys` that `limits` sets, for `reason`.
fn refuse_set(limits: &Limits, keys: &[&str], reason: &str, out: &mut Vec<Refusal>) {
    for key in keys {
        if is_set(limits, key) {
            out.push(((*key).to_owned(), reason.to_owned()));
        }
    }
}

/// Whether `limits` sets `key`.
fn is_set(limits: &Limits, key: &str) -> bool {
    match key {
        "cpus" => limits.cpus.is_some(),
        "cpu-weight" => limits.cpu_weight.is_some(),
        "cpuset" => limits.cpuset.is_some(),
        "memory" => limits.memory.is_some(),
        "memory-reserve" => limits.memory_reserve.is_some(),
        "swap" => limits.swap.is_some(),
        "pids" => limits.pids.is_some(),
        "io-weight" => limits.io_weight.is_some(),
        "io-max" => limits.io_max.is_some(),
        _ => false,
    }
}

/// Writes `value` to `file`; a failure becomes a refusal of `key`.
fn put(out: &mut Vec<Refusal>, key: &str, file: &Path, value: &str) -> bool {
    match super::write_file(file, value) {
        Ok(()) => true,
        Err(e) => {
            out.push((
                key.to_owned(),
                format!("the kernel refused `{value}` in {}: {e}", file.display()),
            ));
            false
        }
    }
}

fn read(file: &Path) -> Option<String> {
    fs::read_to_string(file).ok()
}

fn read_u64(file: &Path) -> Option<u64> {
    read(file)?.trim().parse().ok()
}

/// The value of `key` in a flat-keyed file (`key value` lines: memory.stat, cpu.stat, …).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// The CPUs of a kernel list (`0-3,6`); `None` when malformed.
fn cpu_list(s: &str) -> Option<BTreeSet<u32>> {
    let mut out = BTreeSet::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                if a > b || b > 4095 {
                    return None;
                }
                out.extend(a..=b);
            }
            None => {
                out.insert(part.trim().parse().ok()?);
            }
        }
    }
    Some(out)
}

/// The whole disk (`MAJ:MIN`) holding `path`: the device of its filesystem, or, when that is
/// a partition, the disk it is part of. `None` when the filesystem is on no block device
/// (tmpfs, overlayfs, btrfs subvolumes, …), so IO limits have nothing to apply to.
/// A path not made yet counts as its nearest existing ancestor.
pub fn io_device(path: &Path) -> Option<String> {
    let dev = path.ancestors().find_map(|p| fs::metadata(p).ok())?.dev();
    let (major, minor) = (rustix::fs::major(dev), rustix::fs::minor(dev));
    io_device_in(Path::new("/sys/dev/block"), major, minor)
}

fn io_device_in(sys_dev_block: &Path, major: u32, minor: u32) -> Option<String> {
    let node = sys_dev_block.join(format!("{major}:{minor}"));
    if !node.exists() {
        return None;
    }
    if node.join("partition").exists() {
        let disk = read(&node.join("../dev"))?;
        return Some(disk.trim().to_owned());
    }
    Some(format!("{major}:{minor}"))
}

impl Cgroups {
    fn controllers(&self) -> &'static [&'static dyn Controller] {
        match self.mode {
            CgroupMode::V2 => V2,
            CgroupMode::V1 | CgroupMode::Hybrid => V1,
        }
    }

    fn at<'a>(&'a self, rel: &str, io_device: Option<&'a str>) -> At<'a> {
        At {
            cg: self,
            rel: rel.trim_start_matches('/').to_owned(),
            io_device,
        }
    }

    /// Why some of `limits` cannot be enforced for groups made under `parent` (one message
    /// naming each key and what to do); `Ok` when all can. `io_device` is the disk of the
    /// state directory ([`io_device`]).
    pub fn check_limits(
        &self,
        parent: &str,
        limits: &Limits,
        io_device: Option<&str>,
    ) -> Result<(), String> {
        let at = self.at(parent, io_device);
        let mut out = Vec::new();
        for c in self.controllers() {
            c.check(&at, limits, &mut out);
        }
        if out.is_empty() {
            return Ok(());
        }
        let each: Vec<String> = out
            .iter()
            .map(|(key, why)| format!("--{key}: {why}"))
            .collect();
        Err(format!(
            "this host cannot enforce {}: {}",
            if out.len() == 1 {
                "a limit asked for"
            } else {
                "some limits asked for"
            },
            each.join("; ")
        ))
    }

    /// Makes group `rel`'s limits `limits` (absent ones lifted); answers what could not be.
    pub fn apply_limits(
        &self,
        rel: &str,
        limits: &Limits,
        io_device: Option<&str>,
    ) -> Vec<Refusal> {
        let at = self.at(rel, io_device);
        let mut out = Vec::new();
        for c in self.controllers() {
            c.apply(&at, limits, &mut out);
        }
        out
    }

    /// What group `rel` uses (figures a controller lacks are zero).
    pub fn usage(&self, rel: &str) -> Result<Usage, CgroupError> {
        if !self.exists(rel) {
            return Err(CgroupError::Io {
                action: "read usage of",
                path: PathBuf::from(rel),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        let at = self.at(rel, None);
        let mut usage = Usage::default();
        for c in self.controllers() {
            c.usage(&at, &mut usage);
        }
        Ok(usage)
    }
}

#[cfg(test)]
pub(crate) mod fake;

#[cfg(test)]
mod real;
#[cfg(test)]
mod tests;

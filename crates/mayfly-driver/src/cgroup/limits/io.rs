//! IO: a relative weight (`io-weight`) and bandwidth/operation limits (`io-max`) on the disk
//! that holds the state directory.

use std::path::Path;

use mayfly_api::{IoMax, Limits};

use super::{
    At, Controller, Refusal, existing, put, read, refuse_set, v1_missing, v2_available, v2_missing,
};
use crate::Usage;

const KEYS: &[&str] = &["io-weight", "io-max"];

/// The default weight (v2 `io.weight`).
const DEFAULT_WEIGHT: u32 = 100;

fn no_device(out: &mut Vec<Refusal>, limits: &Limits) {
    if limits.io_max.is_some() {
        out.push((
            "io-max".to_owned(),
            "the state directory is on no block device (tmpfs, overlayfs, …), so there is no disk to limit; drop --io-max or move the state directory to a disk".to_owned(),
        ));
    }
}

/// The first weight file of `names` in `dir` (or its nearest existing ancestor).
fn weight_file<'n>(dir: &Path, names: &[&'n str]) -> Option<&'n str> {
    let base = existing(dir);
    names.iter().copied().find(|n| base.join(n).exists())
}

/// `io.weight` (or BFQ's `io.bfq.weight`) and `io.max`; usage from `io.stat`.
pub(super) struct IoV2;

const V2_WEIGHTS: &[&str] = &["io.weight", "io.bfq.weight"];

impl Controller for IoV2 {
    fn check(&self, at: &At<'_>, limits: &Limits, out: &mut Vec<Refusal>) {
        let Some(dir) = at.v2() else { return };
        if !v2_available(&dir).iter().any(|c| c == "io") {
            refuse_set(limits, KEYS, &v2_missing(at, "io"), out);
            return;
        }
        // The weight files exist in non-root groups only; at the root, trust the controller.
        let base = existing(&dir);
        if limits.io_weight.is_some()
            && at.mount_of(&base) != Some(base.as_path())
            && weight_file(&dir, V2_WEIGHTS).is_none()
        {
            out.push(("io-weight".to_owned(), "this kernel's io controller offers no weight (neither io.weight nor io.bfq.weight: enable the BFQ scheduler or blk-iocost)".to_owned()));
        }
        if at.io_device.is_none() {
            no_device(out, limits);
        }
    }

    fn apply(&self, at: &At<'_>, limits: &Limits, out: &mut Vec<Refusal>) {
        let Some(dir) = at.v2() else { return };
        if !dir.join("io.max").exists() {
            refuse_set(limits, KEYS, &v2_missing(at, "io"), out);
            return;
        }
        let weight = limits.io_weight.unwrap_or(DEFAULT_WEIGHT);
        match weight_file(&dir, V2_WEIGHTS) {
            Some("io.weight") => {
                put(
                    out,
                    "io-weight",
                    &dir.join("io.weight"),
                    &format!("default {weight}"),
                );
            }
            Some(bfq) => {
                let w = weight.clamp(1, 1000);
                put(out, "io-weight", &dir.join(bfq), &format!("default {w}"));
            }
            None if limits.io_weight.is_some() => {
                out.push(("io-weight".to_owned(), "this kernel's io controller offers no weight (neither io.weight nor io.bfq.weight)".to_owned()));
            }
            None => {}
        }
        let Some(dev) = at.io_device else {
            no_device(out, limits);
            return;
        };
        let m = limits.io_max.unwrap_or_default();
        let f = |v: Option<u64>| v.map_or("max".to_owned(), |v| v.to_string());
        let line = format!(
            "{dev} rbps={} wbps={} riops={} wiops={}",
            f(m.rbps),
            f(m.wbps),
            f(m.riops),
            f(m.wiops)
        );
        put(out, "io-max", &dir.join("io.max"), &line);
    }

    fn usage(&self, at: &At<'_>, usage: &mut Usage) {
        let Some(dir) = at.v2() else { return };
        let Some(text) = read(&dir.join("io.stat")) else {
            return;
        };
        for line in text.lines() {
            for field in line.split_whitespace().skip(1) {
                match field.split_once('=') {
                    Some(("rbytes", v)) => usage.io_read_bytes += v.parse::<u64>().unwrap_or(0),
                    Some(("wbytes", v)) => usage.io_write_bytes += v.parse::<u64>().unwrap_or(0),
                    _ => {}
                }
            }
        }
    }
}

/// `blkio.bfq.weight` or `blkio.weight` (whichever the IO scheduler offers) and the
/// `blkio.throttle.*_device` files; usage from `blkio.throttle.io_service_bytes_recursive`.
pub(super) struct IoV1;

const V1_WEIGHTS: &[&str] = &["blkio.bfq.weight", "blkio.weight"];

/// The v1 value of a v2-style weight (1..=10000, default 100) for `file`, keeping the default
/// at the file's default (BFQ 100 in 1..=1000, CFQ 500 in 10..=1000).
fn v1_weight(file: &str, weight: u32) -> u32 {
    if file == "blkio.weight" {
        (weight * 5).clamp(10, 1000)
    } else {
        weight.clamp(1, 1000)
    }
}

/// One field of [`IoMax`].
type Field = fn(&IoMax) -> Option<u64>;

const THROTTLE: &[(&str, Field)] = &[
    ("blkio.throttle.read_bps_device", |m| m.rbps),
    ("blkio.throttle.write_bps_device", |m| m.wbps),
    ("blkio.throttle.read_iops_device", |m| m.riops),
    ("blkio.throttle.write_iops_device", |m| m.wiops),
];

impl Controller for IoV1 {
    fn check(&self, at: &At<'_>, limits: &Limits, out: &mut Vec<Refusal>) {
        let Some(dir) = at.v1("blkio") else {
            refuse_set(limits, KEYS, &v1_missing("blkio"), out);
            return;
        };
        if limits.io_weight.is_some() && weight_file(&dir, V1_WEIGHTS).is_none() {
            out.push((
                "io-weight".to_owned(),
                "this host's v1 blkio controller offers no weight (neither blkio.bfq.weight nor blkio.weight: the disk's IO scheduler has no cgroup weights; `echo bfq > /sys/block/DISK/queue/scheduler` with the bfq module loaded provides them); drop --io-weight or use --io-max".to_owned(),
            ));
        }
        if at.io_device.is_none() {
            no_device(out, limits);
        }
    }

    fn apply(&self, at: &At<'_>, limits: &Limits, out: &mut Vec<Refusal>) {
        let Some(dir) = at.v1("blkio") else {
            refuse_set(limits, KEYS, &v1_missing("blkio"), out);
            return;
        };
        match weight_file(&dir, V1_WEIGHTS) {
            Some(file) => {
                let w = v1_weight(file, limits.io_weight.unwrap_or(DEFAULT_WEIGHT));
                put(out, "io-weight", &dir.join(file), &w.to_string());
            }
            None if limits.io_weight.is_some() => {
                out.push(("io-weight".to_owned(), "this host's v1 blkio controller offers no weight (neither blkio.bfq.weight nor blkio.weight)".to_owned()));
            }
            None => {}
        }
        let Some(dev) = at.io_device else {
            no_device(out, limits);
            return;
        };
        let m = limits.io_max.unwrap_or_default();
        for (file, field) in THROTTLE {
            // 0 lifts a throttle.
            let v = field(&m).unwrap_or(0);
            if !put(out, "io-max", &dir.join(file), &format!("{dev} {v}")) {
                break;
            }
        }
    }

    fn usage(&self, at: &At<'_>, usage: &mut Usage) {
        let Some(dir) = at.v1("blkio") else { return };
        let Some(text) = read(&dir.join("blkio.throttle.io_service_bytes_recursive")) else {
            return;
        };
        for line in text.lines() {
            let mut f = line.split_whitespace();
            let (Some(_dev), Some(op), Some(v)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            let v = v.parse::<u64>().unwrap_or(0);
            match op {
                "Read" => usage.io_read_bytes += v,
                "Write" => usage.io_write_bytes += v,
                _ => {}
            }
        }
    }
}

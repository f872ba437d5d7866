//! Pids: the most processes and threads at once. The file is the same in both versions
//! (`pids.max`, `max` for none); where it lives differs.

use std::path::Path;

use mayfly_api::Limits;

use super::{
    At, Controller, Refusal, put, read_u64, refuse_set, v1_missing, v2_available, v2_missing,
};
use crate::Usage;

const KEYS: &[&str] = &["pids"];

fn write_max(dir: &Path, limits: &Limits, out: &mut Vec<Refusal>) {
    let max = limits.pids.map_or("max".to_owned(), |p| p.to_string());
    put(out, "pids", &dir.join("pids.max"), &max);
}

/// `pids.max` in the unified hierarchy; usage from `pids.current`.
pub(super) struct PidsV2;

impl Controller for PidsV2 {
    fn check(&self, at: &At<'_>, limits: &Limits, out: &mut Vec<Refusal>) {
        let Some(dir) = at.v2() else { return };
        if !v2_available(&dir).iter().any(|c| c == "pids") {
            refuse_set(limits, KEYS, &v2_missing(at, "pids"), out);
        }
    }

    fn apply(&self, at: &At<'_>, limits: &Limits, out: &mut Vec<Refusal>) {
        let Some(dir) = at.v2() else { return };
        if !dir.join("pids.max").exists() {
            refuse_set(limits, KEYS, &v2_missing(at, "pids"), out);
            return;
        }
        write_max(&dir, limits, out);
    }

    fn usage(&self, at: &At<'_>, usage: &mut Usage) {
        if let Some(dir) = at.v2() {
            usage.pids = read_u64(&dir.join("pids.current")).unwrap_or(0);
        }
    }
}

/// `pids.max` in the v1 pids hierarchy; usage from `pids.current`.
pub(super) struct PidsV1;

impl Controller for PidsV1 {
    fn check(&self, at: &At<'_>, limits: &Limits, out: &mut Vec<Refusal>) {
        if at.v1("pids").is_none() {
            refuse_set(limits, KEYS, &v1_missing("pids"), out);
        }
    }

    fn apply(&self, at: &At<'_>, limits: &Limits, out: &mut Vec<Refusal>) {
        let Some(dir) = at.v1("pids") else {
            refuse_set(limits, KEYS, &v1_missing("pids"), out);
            return;
        };
        write_max(&dir, limits, out);
    }

    fn usage(&self, at: &At<'_>, usage: &mut Usage) {
        if let Some(dir) = at.v1("pids") {
            usage.pids = read_u64(&dir.join("pids.current")).unwrap_or(0);
        }
    }
}

//! Cpuset: the CPUs an instance may run on. Only CPUs its parent group has can be given.

use std::path::Path;

use mayfly_api::Limits;

use super::{
    At, Controller, Refusal, cpu_list, existing, put, read, refuse_set, v1_missing, v2_available,
    v2_missing,
};
use crate::Usage;

const KEYS: &[&str] = &["cpuset"];

/// Refuses `limits.cpuset` when it names CPUs that `parent_cpus` (a kernel list) lacks.
fn check_within(limits: &Limits, parent_cpus: Option<String>, out: &mut Vec<Refusal>) {
    let Some(want) = &limits.cpuset else { return };
    let Some(wanted) = cpu_list(want) else {
        out.push((
            "cpuset".to_owned(),
            format!("`{want}` is not a CPU list (write it as the kernel does: 0-3,6)"),
        ));
        return;
    };
    let Some(have) = parent_cpus else { return };
    let have_set = cpu_list(&have).unwrap_or_default();
    let missing: Vec<String> = wanted.difference(&have_set).map(u32::to_string).collect();
    if !missing.is_empty() {
        out.push((
            "cpuset".to_owned(),
            format!(
                "CPU {} is not available to instances here (their parent group has CPUs {}): pick CPUs among those",
                missing.join(","),
                have.trim()
            ),
        ));
    }
}

/// `cpuset.cpus` in the unified hierarchy (empty: the parent's).
pub(super) struct CpusetV2;

fn parent_effective(dir: &Path) -> Option<String> {
    let parent = existing(dir.parent()?);
    read(&parent.join("cpuset.cpus.effective"))
}

impl Controller for CpusetV2 {
    fn check(&self, at: &At<'_>, limits: &Limits, out: &mut Vec<Refusal>) {
        let Some(dir) = at.v2() else { return };
        if !v2_available(&dir).iter().any(|c| c == "cpuset") {
            refuse_set(limits, KEYS, &v2_missing(at, "cpuset"), out);
            return;
        }
        // `at` is the parent the instance groups go under.
        check_within(
            limits,
            read(&existing(&dir).join("cpuset.cpus.effective")),
            out,
        );
    }

    fn apply(&self, at: &At<'_>, limits: &Limits, out: &mut Vec<Refusal>) {
        let Some(dir) = at.v2() else { return };
        if !dir.join("cpuset.cpus").exists() {
            refuse_set(limits, KEYS, &v2_missing(at, "cpuset"), out);
            return;
        }
        let before = out.len();
        check_within(limits, parent_effective(&dir), out);
        if out.len() == before {
            let cpus = limits.cpuset.clone().unwrap_or_default();
            put(out, "cpuset", &dir.join("cpuset.cpus"), &cpus);
        }
    }

    fn usage(&self, _: &At<'_>, _: &mut Usage) {}
}

/// `cpuset.cpus` in the v1 cpuset hierarchy (which cannot be empty: lifting copies the
/// parent's).
pub(super) struct CpusetV1;

impl Controller for CpusetV1 {
    fn check(&self, at: &At<'_>, limits: &Limits, out: &mut Vec<Refusal>) {
        let Some(dir) = at.v1("cpuset") else {
            refuse_set(limits, KEYS, &v1_missing("cpuset"), out);
            return;
        };
        check_within(limits, read(&existing(&dir).join("cpuset.cpus")), out);
    }

    fn apply(&self, at: &At<'_>, limits: &Limits, out: &mut Vec<Refusal>) {
        let Some(dir) = at.v1("cpuset") else {
            refuse_set(limits, KEYS, &v1_missing("cpuset"), out);
            return;
        };
        let parent = dir.parent().and_then(|p| read(&p.join("cpuset.cpus")));
        let before = out.len();
        check_within(limits, parent.clone(), out);
        if out.len() != before {
            return;
        }
        let cpus = match (&limits.cpuset, parent) {
            (Some(c), _) => c.clone(),
            (None, Some(p)) => p.trim().to_owned(),
            (None, None) => return,
        };
        put(out, "cpuset", &dir.join("cpuset.cpus"), &cpus);
    }

    fn usage(&self, _: &At<'_>, _: &mut Usage) {}
}

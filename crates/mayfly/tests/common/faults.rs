//! Fault injection: a daemon that crashes at a named step, and freezing an instance behind
//! mayfly's back.

use super::*;

impl TestDaemon {
    /// Runs `args` against a daemon started with `MAYFLY_CRASH_AT=point`, which aborts there
    /// (the command must fail); then brings the test's own daemon back.
    pub fn crash_at(&mut self, point: &str, args: &[&str]) {
        self.stop_daemon();
        let saved = std::mem::take(&mut self.env);
        let mut env: Vec<(&str, &str)> = saved
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        env.push(("MAYFLY_CRASH_AT", point));
        self.set_env(&env);
        self.spawn_daemon();
        self.env = saved;
        let out = self.mayfly(args);
        assert!(
            !out.success(),
            "`{}` should have been interrupted at {point}: {out}",
            args.join(" ")
        );
        let mut daemon = self.daemon.take().expect("the crashing daemon");
        let status = daemon.wait().expect("wait for the crashing daemon");
        assert!(
            !status.success(),
            "the daemon should have aborted at {point}"
        );
        self.restart();
    }
}

/// The freezer file of instance `name`'s group and its thawed and frozen values (v1
/// `freezer.state`, or v2 `cgroup.freeze`), if the group exists.
pub fn freezer_file(d: &TestDaemon, name: &str) -> Option<(PathBuf, &'static str, &'static str)> {
    let id = d.info(name)["id"].as_str().unwrap_or_default().to_owned();
    let rel = format!("{}/{id}", d.cgroup_parent());
    // The v1 freezer first: beside v1 controllers the instance also has a group in the
    // unified tree (for an init that boots), whose `cgroup.freeze` mayfly does not drive.
    let present = cgroup_present(&rel);
    if let Some(h) = present.iter().find(|h| h.join("freezer.state").exists()) {
        return Some((h.join("freezer.state"), "THAWED", "FROZEN"));
    }
    present
        .iter()
        .find(|h| h.join("cgroup.freeze").exists())
        .map(|h| (h.join("cgroup.freeze"), "0", "1"))
}

/// Whether instance `name` is thawed (a group without a freezer counts as thawed).
pub fn freezer_thawed(d: &TestDaemon, name: &str) -> bool {
    match freezer_file(d, name) {
        Some((file, thawed, _)) => std::fs::read_to_string(&file)
            .map(|s| s.trim() == thawed)
            .unwrap_or(true),
        None => true,
    }
}

/// Freezes or thaws instance `name` behind mayfly's back, as an operator (or another tool)
/// could.
pub fn freeze_by_hand(d: &TestDaemon, name: &str, frozen: bool) {
    let (file, thawed, frozen_value) =
        freezer_file(d, name).unwrap_or_else(|| panic!("instance {name} has no freezer"));
    std::fs::write(&file, if frozen { frozen_value } else { thawed })
        .unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
}

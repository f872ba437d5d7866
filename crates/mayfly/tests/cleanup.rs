//! What instances leave on disk as they go through their lives: every discarded writable
//! layer and scratch directory is deleted soon after, not when something else happens to
//! wake the trash.

mod common;

use std::time::Duration;

use common::{TestDaemon, poll_until};

#[test]
fn restarts_resets_and_transient_runs_leave_nothing_in_the_trash() {
    let d = TestDaemon::start();
    d.ok(&["launch", "busybox", "--name", "t"]);
    d.ok(&["launch", "busybox", "--name", "p", "--persistent"]);
    for name in ["t", "p"] {
        d.sh(name, "echo data > /root/f");
        d.ok(&["restart", name]);
        d.ok(&["reset", name]);
        d.ok(&["stop", name]);
        d.ok(&["start", name]);
    }
    let emptied = poll_until(Duration::from_secs(10), || {
        d.state_entries("trash").is_empty()
    });
    assert!(
        emptied,
        "the trash still holds {:?}",
        d.state_entries("trash")
    );
    d.ok(&["rm", "-f", "t", "p"]);
    assert!(poll_until(Duration::from_secs(10), || d
        .state_entries("trash")
        .is_empty()));
    d.finish();
}

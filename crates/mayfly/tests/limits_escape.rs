//! An instance cannot lift its own limits. Without a user namespace its root is the host's
//! uid 0, which owns the cgroup files: in a user namespace of its own it could mount the
//! cgroup hierarchy afresh and write its own `pids.max`. So such an instance may not make a
//! user namespace at all (seccomp: `unshare`/`clone` with `CLONE_NEWUSER` fail with EPERM),
//! while an instance in a user namespace (the default) still can make nested ones.

mod common;
mod limits_common;

use common::TestDaemon;
use limits_common::{cg_read, group_of, has_v1, launch_idle};

#[test]
fn an_instance_without_a_user_namespace_cannot_make_one_to_lift_its_limits() {
    // The whole escape also needs a cgroup namespace of its own (`unshare -C`, which
    // busybox lacks); what is checked here is its first step, the user namespace, refused.
    let d = TestDaemon::start_with(&["--user-namespaces", "off"]);
    launch_idle(&d, "plain", &["--pids", "64"]);
    let out = d.sh(
        "plain",
        "unshare -U -r -m sh -c 'mkdir -p /tmp/cg && mount -t cgroup -o pids none /tmp/cg && echo max > /tmp/cg/pids.max' 2>&1; echo rc=$?",
    );
    assert!(!out.contains("rc=0"), "the escape ran: {out}");
    assert!(out.contains("Operation not permitted"), "{out}");
    if has_v1("pids") {
        assert_eq!(cg_read("pids", &group_of(&d, "plain"), "pids.max"), "64");
    }
    // Threads and processes still start (clone without CLONE_NEWUSER, clone3 refused with
    // ENOSYS and answered by the C library's fallback).
    let out = d.sh("plain", "sh -c 'echo child' & wait; echo done");
    assert!(out.contains("child") && out.contains("done"), "{out}");
    d.finish();
}

#[test]
fn an_instance_in_a_user_namespace_can_still_make_nested_ones() {
    let d = TestDaemon::start();
    launch_idle(&d, "nested", &["--pids", "64"]);
    let out = d.sh("nested", "unshare -U -r id -u 2>&1; echo rc=$?");
    assert!(out.contains("rc=0"), "{out}");
    d.finish();
}

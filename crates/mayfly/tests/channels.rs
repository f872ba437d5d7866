//! Channels (issue 21, point 5): `mayfly channel create NAME --server A --client B` makes a
//! directory that A sees read-write and B read-only at `/run/mayfly/channels/NAME`; a service
//! in A listens on a unix socket there and B connects, with `--network none` on both. The
//! client cannot delete or replace the socket; `channel list|rm`; a running instance sees a
//! new channel at its next start (the answer's note says so); removing an instance removes
//! its channels. Busybox has no unix-socket client or server: the tests use `usock`
//! (tests/fixtures/usock.c, built at test time).

mod common;

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use common::netns::*;
use common::*;
use serde_json::Value;

const DIR: &str = "/run/mayfly/channels";

/// The init of a server listening on `DIR/<chan>/sock` once the channel is mounted (a
/// running instance gets a new channel at its next start).
fn server_init(chan: &str) -> String {
    format!(
        "while [ ! -d {DIR}/{chan} ]; do sleep 0.2; done; exec usock serve unix {DIR}/{chan}/sock"
    )
}

fn channels(d: &TestDaemon) -> Vec<Value> {
    d.json(&["channel", "list", "--json"])
        .as_array()
        .expect("channel list --json is an array")
        .clone()
}

fn channel_names(d: &TestDaemon) -> Vec<String> {
    channels(d)
        .iter()
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect()
}

/// Waits until the client sees the server's socket, then echoes `msg` through it.
fn call(d: &TestDaemon, client: &str, chan: &str, msg: &str) -> Output {
    let sock = format!("{DIR}/{chan}/sock");
    wait_until(
        Duration::from_secs(10),
        "the server's socket appears in the client",
        || {
            d.mayfly(&["exec", client, "--", "test", "-S", &sock])
                .success()
        },
    );
    d.mayfly(&["exec", client, "--", "usock", "call", "unix", &sock, msg])
}

#[test]
fn a_channel_connects_two_instances_without_any_network() {
    let d = TestDaemon::start();
    install_usock(&d);
    launch(
        &d,
        "srv",
        &["--network", "none", "--no-start"],
        Some(&server_init("pipe")),
    );
    launch(&d, "cli", &["--network", "none", "--no-start"], Some(IDLE));
    let created = d.ok(&[
        "channel", "create", "pipe", "--server", "srv", "--client", "cli",
    ]);
    assert!(
        created.contains("pipe"),
        "create prints the channel: {created}"
    );
    let list = channels(&d);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["name"], "pipe");
    assert_eq!(list[0]["server"], "srv");
    assert_eq!(list[0]["client"], "cli");
    assert_eq!(list[0]["path"], format!("{DIR}/pipe"));
    let host_dir = d.state.join("channels/pipe");
    let meta = std::fs::metadata(&host_dir)
        .unwrap_or_else(|e| panic!("{} should exist: {e}", host_dir.display()));
    assert!(meta.is_dir());
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (0, 0, 0o755),
        "the channel's host directory is 0:0 0755"
    );

    d.ok(&["start", "srv", "cli"]);
    for who in ["srv", "cli"] {
        assert_eq!(links_inside(&d, who), ["lo"], "{who} has no network");
    }
    let out = call(&d, "cli", "pipe", "hello-through-the-channel");
    assert!(
        out.success(),
        "the client's call through the channel failed: {out}"
    );
    assert_eq!(out.stdout.trim(), "hello-through-the-channel");

    // The client sees it read-only: it cannot delete, replace or add anything.
    let sock = format!("{DIR}/pipe/sock");
    for script in [
        format!("rm -f {sock}"),
        format!("mv {sock} {sock}.old"),
        format!("touch {DIR}/pipe/other"),
        format!("usock serve unix {DIR}/pipe/fake & sleep 1; kill $!; test -S {DIR}/pipe/fake"),
    ] {
        let out = d.mayfly(&["exec", "cli", "--", "sh", "-c", &script]);
        assert!(
            !out.success(),
            "the client must not change the channel (`{script}`): {out}"
        );
    }
    assert!(exists_in(&d, "cli", &sock), "the socket is still there");
    let out = call(&d, "cli", "pipe", "still-works");
    assert!(out.success(), "the channel still works: {out}");
    // The server can write there (read-write).
    d.sh(
        "srv",
        &format!("touch {DIR}/pipe/by-server && rm {DIR}/pipe/by-server"),
    );
    // What it writes is the host's root's, setuid bits included: the host's users must not
    // reach it, so the directory of all channels is private.
    d.sh(
        "srv",
        &format!("cp /bin/busybox {DIR}/pipe/suid && chmod 4755 {DIR}/pipe/suid"),
    );
    let planted = std::fs::metadata(host_dir.join("suid")).unwrap();
    assert_eq!((planted.uid(), planted.mode() & 0o4000), (0, 0o4000));
    let parent = std::fs::metadata(d.state.join("channels")).unwrap();
    assert_eq!(
        parent.mode() & 0o777,
        0o700,
        "the host's users can reach a setuid-root file a server made"
    );
    d.sh("srv", &format!("rm {DIR}/pipe/suid"));

    // Restarts: the channel comes back with each start.
    d.ok(&["restart", "srv", "cli"]);
    let out = call(&d, "cli", "pipe", "after-restart");
    assert!(out.success(), "the channel works after restarts: {out}");

    d.ok(&["channel", "rm", "pipe"]);
    assert!(channel_names(&d).is_empty(), "channel rm removes it");
    d.ok(&["restart", "srv", "cli"]);
    assert!(
        !exists_in(&d, "cli", &format!("{DIR}/pipe")),
        "a removed channel is not mounted at the next start"
    );
    let gone = poll_until(Duration::from_secs(10), || !host_dir.exists());
    assert!(gone, "the channel's host directory is removed");
    d.finish();
}

#[test]
fn a_running_instance_sees_a_new_channel_at_its_next_start() {
    let d = TestDaemon::start();
    install_usock(&d);
    launch(
        &d,
        "srv",
        &["--network", "none"],
        Some(&server_init("late")),
    );
    launch(&d, "cli", &["--network", "none"], Some(IDLE));
    // The note of the answer (the API's; the CLI prints it).
    let req = serde_json::json!({"name": "late", "server": "srv", "client": "cli"});
    let (status, created) = d.api("POST", "/v1/channels", Some(&req));
    assert!(
        status == 200 || status == 201,
        "channel create over the API: {status} {created}"
    );
    let note = created["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("start"),
        "the answer says the running instances see it at their next start: {created}"
    );
    assert!(
        !exists_in(&d, "cli", &format!("{DIR}/late")),
        "not mounted into a running instance"
    );
    d.ok(&["restart", "srv", "cli"]);
    let out = call(&d, "cli", "late", "now-it-works");
    assert!(out.success(), "after the restarts the channel works: {out}");
    d.finish();
}

#[test]
fn removing_an_instance_removes_its_channels() {
    let d = TestDaemon::start();
    launch(&d, "a", &["--network", "none", "--no-start"], Some(IDLE));
    launch(&d, "b", &["--network", "none", "--no-start"], Some(IDLE));
    launch(&d, "c", &["--network", "none", "--no-start"], Some(IDLE));
    d.ok(&["channel", "create", "ab", "--server", "a", "--client", "b"]);
    d.ok(&["channel", "create", "cb", "--server", "c", "--client", "b"]);
    d.ok(&["channel", "create", "ca", "--server", "c", "--client", "a"]);
    let mut names = channel_names(&d);
    names.sort();
    assert_eq!(names, ["ab", "ca", "cb"]);
    d.ok(&["rm", "a"]);
    assert_eq!(
        channel_names(&d),
        ["cb"],
        "removing a removes the channels where it is server or client"
    );
    assert!(
        !d.state.join("channels/ab").exists(),
        "ab's directory is gone"
    );
    assert!(
        !d.state.join("channels/ca").exists(),
        "ca's directory is gone"
    );
    assert!(d.state.join("channels/cb").exists(), "cb's directory stays");
    d.ok(&["rm", "--force", "b", "c"]);
    assert!(channel_names(&d).is_empty());
    d.finish();
}

#[test]
fn bad_channels_are_refused() {
    let d = TestDaemon::start();
    launch(&d, "a", &["--network", "none", "--no-start"], Some(IDLE));
    launch(&d, "b", &["--network", "none", "--no-start"], Some(IDLE));
    let out = d.fails(&[
        "channel", "create", "self", "--server", "a", "--client", "a",
    ]);
    assert_refused_with(&out, &["a"]);
    let out = d.fails(&[
        "channel", "create", "x", "--server", "a", "--client", "ghost",
    ]);
    assert_refused_with(&out, &["ghost"]);
    let out = d.fails(&[
        "channel", "create", "x", "--server", "ghost", "--client", "a",
    ]);
    assert_refused_with(&out, &["ghost"]);
    let out = d.fails(&[
        "channel", "create", "Bad_Name", "--server", "a", "--client", "b",
    ]);
    assert_refused_with(&out, &["Bad_Name"]);
    d.ok(&["channel", "create", "ab", "--server", "a", "--client", "b"]);
    let out = d.fails(&["channel", "create", "ab", "--server", "b", "--client", "a"]);
    assert_refused_with(&out, &["ab"]);
    let out = d.fails(&["channel", "rm", "nosuch"]);
    assert_refused_with(&out, &["nosuch"]);
    let (s, body) = d.api("DELETE", "/v1/channels/nosuch", None);
    assert_eq!(s, 404, "{body}");
    let req = serde_json::json!({"name": "y", "server": "a", "client": "nobody"});
    let (s, body) = d.api("POST", "/v1/channels", Some(&req));
    assert_eq!(s, 404, "an unknown client over the API: {body}");
    assert_eq!(channel_names(&d), ["ab"], "nothing created by the refusals");
    let dirs = d.state_entries("channels");
    assert_eq!(dirs, ["ab"], "no directory left by the refusals");
    d.finish();
}

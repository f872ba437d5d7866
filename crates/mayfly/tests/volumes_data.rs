//! Volume data (issue 23, point 3): it survives every way an instance ends (stop and start of
//! a transient instance, restart, reset, rm, the end of an ephemeral instance, kill -9 of the
//! daemon), and a symbolic link the tenant plants where a volume is mounted cannot lead the
//! mount onto anything of the host.

mod common;

use std::time::Duration;

use common::*;

fn volume_data(d: &TestDaemon, name: &str) -> std::path::PathBuf {
    let id = d.json(&["volume", "info", name, "--json"])["id"]
        .as_str()
        .expect("an id")
        .to_owned();
    d.state.join("volumes").join(id).join("data")
}

/// Appends `line` to /v/log inside `name` and checks the whole log is `want` afterwards.
fn append(d: &TestDaemon, name: &str, line: &str, want: &str) {
    let got = d.sh(name, &format!("echo {line} >>/v/log && cat /v/log"));
    assert_eq!(got, want, "the volume's log in {name}");
}

#[test]
fn volume_data_survives_every_way_an_instance_ends() {
    let mut d = TestDaemon::start();
    d.ok(&["volume", "create", "keep"]);
    let host = volume_data(&d, "keep");
    launch(&d, "t", &["-v", "keep:/v"], Some(IDLE));
    append(&d, "t", "one", "one\n");
    // A transient instance's writable layer goes at stop; the volume does not.
    d.sh("t", "echo layer >/layer-file");
    d.ok(&["stop", "t"]);
    d.ok(&["start", "t"]);
    assert!(
        !exists_in(&d, "t", "/layer-file"),
        "the transient layer was discarded"
    );
    append(&d, "t", "two", "one\ntwo\n");
    d.ok(&["restart", "t"]);
    wait_state(&d, "t", "running");
    append(&d, "t", "three", "one\ntwo\nthree\n");
    d.ok(&["reset", "t"]);
    wait_state(&d, "t", "running");
    append(&d, "t", "four", "one\ntwo\nthree\nfour\n");

    // kill -9 of the daemon: the instance and its volume are found again.
    d.kill_daemon();
    d.restart();
    wait_state(&d, "t", "running");
    append(&d, "t", "five", "one\ntwo\nthree\nfour\nfive\n");
    assert_eq!(
        d.json(&["volume", "info", "keep", "--json"])["attached"]["instance"],
        "t"
    );

    // rm: the volume is free again and keeps everything.
    d.ok(&["rm", "--force", "t"]);
    assert!(d.json(&["volume", "info", "keep", "--json"])["attached"].is_null());
    assert_eq!(
        std::fs::read_to_string(host.join("log")).unwrap(),
        "one\ntwo\nthree\nfour\nfive\n"
    );

    // An ephemeral instance: deleted at its end, the volume freed, its writes kept.
    d.ok(&[
        "run",
        "--rm",
        "-v",
        "keep:/v",
        "busybox",
        "--",
        "sh",
        "-c",
        "echo six >>/v/log",
    ]);
    let freed = poll_until(Duration::from_secs(10), || {
        d.json(&["volume", "info", "keep", "--json"])["attached"].is_null()
    });
    assert!(
        freed,
        "the end of the ephemeral instance detached the volume"
    );
    assert_eq!(
        std::fs::read_to_string(host.join("log")).unwrap(),
        "one\ntwo\nthree\nfour\nfive\nsix\n"
    );

    // kill -9 while no instance holds it: still there, still free.
    d.kill_daemon();
    d.restart();
    assert!(host.join("log").is_file());
    d.ok(&["volume", "rm", "keep"]);
    assert!(!host.exists(), "rm removes the data");
    d.finish();
}

/// The tenant of a persistent instance plants `/srv/data -> /etc` and a link climbing out
/// of the root to a host directory, then gets volumes attached there: the forker resolves
/// the targets inside the instance's root, so the volumes land in the instance's own tree and
/// nothing of the host is covered or changed.
#[test]
fn a_planted_symlink_cannot_redirect_a_volume_onto_the_host() {
    let d = TestDaemon::start();
    let host_dir = d.dir.join("host-secret");
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::write(host_dir.join("keep"), "host data").unwrap();
    let host_etc_before: Vec<_> = dir_listing(std::path::Path::new("/etc"));
    d.ok(&["volume", "create", "one"]);
    d.ok(&["volume", "create", "two"]);
    launch(&d, "p", &["--persistent"], Some(IDLE));
    let climb = format!("../../../../../../../../..{}", host_dir.display());
    d.sh(
        "p",
        &format!("mkdir -p /srv && ln -s /etc /srv/data && ln -s {climb} /srv/up"),
    );
    d.ok(&["stop", "p"]);
    d.ok(&["volume", "attach", "one", "p:/srv/data"]);
    d.ok(&["volume", "attach", "two", "p:/srv/up"]);
    // The climbing link resolves inside the root, where nothing is there yet: the start is
    // refused (the forker never creates through a link) and nothing of the host changed.
    let out = d.fails(&["start", "p"]);
    assert!(out.stderr.contains("/srv/up"), "{out}");
    // The user's error, not mayfly's: a 400 that says what to do.
    let (status, body) = d.api("POST", "/v1/instances/p/start", None);
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["hint"]
            .as_str()
            .is_some_and(|h| h.contains("another path")),
        "{body}"
    );
    assert_eq!(dir_listing(&host_dir), ["keep"]);
    // Once the tenant makes that path inside its own root, the volume lands there.
    d.ok(&["volume", "detach", "two", "p"]);
    d.ok(&["start", "p"]);
    d.sh("p", &format!("mkdir -p {}", host_dir.display()));
    d.ok(&["stop", "p"]);
    d.ok(&["volume", "attach", "two", "p:/srv/up"]);
    d.ok(&["start", "p"]);
    wait_state(&d, "p", "running");
    d.sh(
        "p",
        "echo planted >/srv/data/owned && echo planted >/srv/up/owned",
    );

    // The writes went into the volumes.
    assert_eq!(
        std::fs::read_to_string(volume_data(&d, "one").join("owned")).unwrap(),
        "planted\n"
    );
    assert_eq!(
        std::fs::read_to_string(volume_data(&d, "two").join("owned")).unwrap(),
        "planted\n"
    );
    // Nothing of the host changed or got covered.
    assert!(!std::path::Path::new("/etc/owned").exists());
    assert_eq!(dir_listing(std::path::Path::new("/etc")), host_etc_before);
    assert_eq!(dir_listing(&host_dir), ["keep"]);
    assert_eq!(
        std::fs::read_to_string(host_dir.join("keep")).unwrap(),
        "host data"
    );
    let covered = mounts_mentioning(&host_dir.display().to_string());
    assert!(
        covered.is_empty(),
        "a host directory got a mount: {covered:?}"
    );
    let etc_mounts: Vec<_> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some("/etc"))
        .map(str::to_owned)
        .collect();
    assert!(
        etc_mounts.is_empty(),
        "the host's /etc got a mount: {etc_mounts:?}"
    );
    // Inside, the volume covers the instance's own /etc (the link's target in its root).
    assert_eq!(d.sh("p", "cat /etc/owned"), "planted\n");
    d.ok(&["rm", "--force", "p"]);
    d.ok(&["volume", "rm", "one", "two"]);
    d.finish();
}

fn dir_listing(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A volume's mount point that the template lacks is made in the mount-point layer: it never
/// lands in a persistent instance's writable layer (nor, from there, in its snapshots or a
/// template published from it).
#[test]
fn a_volume_target_never_lands_in_the_writable_layer() {
    let d = TestDaemon::start();
    d.ok(&["volume", "create", "v"]);
    launch(
        &d,
        "p",
        &["--persistent", "-v", "v:/srv/deep/data"],
        Some(IDLE),
    );
    d.sh("p", "test -d /srv/deep/data && echo x >/srv/deep/data/f");
    d.ok(&["stop", "p"]);
    assert_eq!(
        std::fs::read_to_string(volume_data(&d, "v").join("f")).unwrap(),
        "x\n"
    );
    let id = d.info("p")["id"].as_str().unwrap().to_owned();
    let upper = d.state.join("instances").join(&id).join("upper-1");
    assert!(upper.is_dir(), "{}", upper.display());
    assert!(
        !upper.join("srv").exists(),
        "the mount point landed in the writable layer"
    );
    d.ok(&["rm", "p"]);
    d.ok(&["volume", "rm", "v"]);
    d.finish();
}

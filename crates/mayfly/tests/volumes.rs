//! Volumes (issue 23, point 3), through the CLI and the API: create/list/info/rm, launch
//! `--volume`, attach/detach of a stopped instance (refused while it runs), root inside owns a
//! new volume, bad input refused with 4xx and nothing left, and the single-attach rule: a
//! second holder is refused naming the first, also under simultaneous requests (exactly one
//! wins).

mod common;

use common::*;
use serde_json::{Value, json};

fn volumes(d: &TestDaemon) -> Vec<Value> {
    d.json(&["volume", "list", "--json"])
        .as_array()
        .expect("volume list --json is an array")
        .clone()
}

fn volume_id(d: &TestDaemon, name: &str) -> String {
    d.json(&["volume", "info", name, "--json"])["id"]
        .as_str()
        .expect("an id")
        .to_owned()
}

#[test]
fn volumes_are_made_listed_attached_and_removed_through_cli_and_api() {
    let d = TestDaemon::start();
    let out = d.ok(&["volume", "create", "data"]);
    assert!(out.contains("created volume data"), "{out}");
    let (status, v) = d.api("POST", "/v1/volumes", Some(&json!({"name": "logs"})));
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["name"], "logs");
    let names: Vec<_> = volumes(&d).iter().map(|v| v["name"].clone()).collect();
    assert_eq!(names, [json!("data"), json!("logs")]);
    // The data directory is owned by 0:0, mode 0755 on the host.
    let data = d
        .state
        .join("volumes")
        .join(volume_id(&d, "data"))
        .join("data");
    {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(&data).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (0, 0, 0o755));
    }

    // Bad input: 4xx with a message naming what is wrong, nothing made.
    assert_refused_with(
        &d.fails(&["volume", "create", "data"]),
        &["data", "already exists"],
    );
    let (status, e) = d.api("POST", "/v1/volumes", Some(&json!({"name": "Bad_Name"})));
    assert_eq!(status, 400, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("volume name"),
        "{e}"
    );
    let (status, e) = d.api(
        "POST",
        "/v1/volumes",
        Some(&json!({"name": "tiny", "size": 4096})),
    );
    assert_eq!(status, 400, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("too small"),
        "{e}"
    );
    let (status, e) = d.api(
        "POST",
        "/v1/volumes/data/attach",
        Some(&json!({"instance": "ghost", "path": "/x"})),
    );
    assert_eq!(status, 404, "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("ghost"),
        "{e}"
    );
    let (status, e) = d.api(
        "POST",
        "/v1/volumes/nope/detach",
        Some(&json!({"instance": "ghost"})),
    );
    assert_eq!(status, 404, "{e}");
    let (status, e) = d.api(
        "POST",
        "/v1/volumes/data/attach",
        Some(&json!({"path": "/x"})),
    );
    assert_eq!(status, 400, "{e}");
    let (status, e) = d.api("GET", "/v1/volumes/nope", None);
    assert_eq!(status, 404, "{e}");
    assert!(
        e["error"]["hint"]
            .as_str()
            .unwrap()
            .contains("volume create"),
        "{e}"
    );
    assert_eq!(d.state_entries("volumes").len(), 2, "only the two volumes");

    // Launch with a volume: root inside owns it and writes there; the host sees 0:0 files.
    launch(
        &d,
        "web",
        &["--persistent", "-v", "data:/srv/data"],
        Some(IDLE),
    );
    let owner = d.sh(
        "web",
        "stat -c %u:%g /srv/data && echo hello >/srv/data/f && stat -c %u /srv/data/f",
    );
    assert_eq!(
        owner.split_whitespace().collect::<Vec<_>>(),
        ["0:0", "0"],
        "{owner}"
    );
    {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(data.join("f")).unwrap();
        assert_eq!(
            m.uid(),
            0,
            "root inside writes as the host's 0 through the idmapped mount"
        );
    }
    let info = d.info("web");
    assert_eq!(info["volumes"][0]["volume"], "data", "{info}");
    let shown = d.ok(&["info", "web"]);
    assert!(shown.contains("data"), "info shows the volume: {shown}");
    let v = d.json(&["volume", "info", "data", "--json"]);
    assert_eq!(v["attached"]["instance"], "web", "{v}");
    assert_eq!(v["attached"]["path"], "/srv/data", "{v}");
    assert!(v["used"].as_u64().unwrap() > 0, "{v}");

    // A second holder is refused, naming the first; so is rm; attach while running too.
    let out = d.fails(&["launch", "busybox", "--name", "other", "-v", "data:/x"]);
    assert_refused_with(&out, &["data", "web"]);
    assert!(is_gone(&d, "other"), "the refused launch left no instance");
    assert_refused_with(&d.fails(&["volume", "rm", "data"]), &["attached", "web"]);
    assert_refused_with(
        &d.fails(&["volume", "detach", "data", "web"]),
        &["web", "running", "stop it first"],
    );
    let (status, e) = d.api(
        "POST",
        "/v1/volumes/logs/attach",
        Some(&json!({"instance": "web", "path": "/var/log/app"})),
    );
    assert_eq!(status, 409, "{e}");

    // Stopped: detach and attach elsewhere; bad targets refused.
    d.ok(&["stop", "web"]);
    launch(&d, "db", &["--persistent", "--no-start"], Some(IDLE));
    assert_refused_with(
        &d.fails(&["volume", "attach", "data", "db:/srv/db"]),
        &["data", "web"],
    );
    for bad in [
        "db:/",
        "db:/proc/x",
        "db:/run/mayfly",
        "db:/a/../b",
        "db:/dev",
    ] {
        let out = d.fails(&["volume", "attach", "logs", bad]);
        assert!(out.stderr.contains("cannot be mounted"), "{bad}: {out}");
    }
    let out = d.mayfly(&["volume", "attach", "logs", "db"]);
    assert_eq!(out.code, 2, "a usage error: {out}");
    assert!(
        out.stderr.contains("invalid target `db`") && out.stderr.contains("INSTANCE:/path"),
        "{out}"
    );
    assert_refused_with(
        &d.fails(&["volume", "detach", "data", "db"]),
        &["web", "not `db`"],
    );
    // Through the API: a conflict with where it is (409), as an attach to a held volume.
    let (status, e) = d.api(
        "POST",
        "/v1/volumes/data/detach",
        Some(&json!({"instance": "db"})),
    );
    assert_eq!(status, 409, "{e}");
    d.ok(&["volume", "detach", "data", "web"]);
    assert!(
        d.info("web")["volumes"]
            .as_array()
            .is_none_or(Vec::is_empty)
    );
    d.ok(&["volume", "attach", "data", "db:/srv/db:ro"]);
    d.ok(&["start", "db"]);
    assert_eq!(d.sh("db", "cat /srv/db/f").trim(), "hello");
    let out = d.mayfly(&["exec", "db", "--", "sh", "-c", "echo x >/srv/db/g"]);
    assert_ne!(out.code, 0, "a read-only volume refuses writes: {out}");
    let list = d.ok(&["volume", "list"]);
    assert!(list.contains("db:/srv/db:ro"), "{list}");

    // Removing the holder frees the volume; its data stays; rm then works.
    d.ok(&["rm", "--force", "db"]);
    d.ok(&["rm", "--force", "web"]);
    assert!(volumes(&d).iter().all(|v| v["attached"].is_null()));
    assert!(data.join("f").is_file(), "the data outlives its instance");
    d.ok(&["volume", "rm", "data", "logs"]);
    assert!(volumes(&d).is_empty());
    assert_refused_with(&d.fails(&["volume", "rm", "data"]), &["does not exist"]);
    d.finish();
}

#[test]
fn launch_refuses_unknown_volumes_bad_targets_and_duplicates() {
    let d = TestDaemon::start();
    d.ok(&["volume", "create", "a"]);
    d.ok(&["volume", "create", "b"]);
    let cases: &[(&[&str], &[&str])] = &[
        (&["-v", "nope:/x"], &["volume `nope` does not exist"]),
        (&["-v", "a:/sys/x"], &["cannot be mounted", "/sys"]),
        (&["-v", "a:/x", "-v", "b:/x/"], &["two volumes", "/x"]),
        (&["-v", "a:/x", "-v", "a:/y"], &["`a` is given twice"]),
    ];
    for (args, parts) in cases {
        let mut all = vec!["launch", "busybox", "--name", "x", "--no-start"];
        all.extend_from_slice(args);
        assert_refused_with(&d.fails(&all), parts);
        assert!(is_gone(&d, "x"), "{args:?} left an instance");
    }
    // The CLI refuses a relative path itself (usage error); the API with a 400.
    let out = d.mayfly(&["launch", "busybox", "--name", "x", "-v", "a:relative"]);
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("absolute"), "{out}");
    let (status, e) = d.api(
        "POST",
        "/v1/instances",
        Some(&json!({"template": "busybox", "name": "x", "start": false,
                     "volumes": [{"volume": "a", "path": "relative"}]})),
    );
    assert_eq!(status, 400, "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("absolute"),
        "{e}"
    );
    assert!(is_gone(&d, "x"));
    assert!(
        d.json(&["volume", "list", "--json"])
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["attached"].is_null())
    );
    d.ok(&["volume", "rm", "a", "b"]);
    d.finish();
}

/// Simultaneous attaches of one volume to different stopped instances, and simultaneous
/// launches naming it: exactly one wins each time, the others get 409 naming the winner.
#[test]
fn of_simultaneous_attaches_and_launches_exactly_one_wins() {
    let d = TestDaemon::start();
    d.ok(&["volume", "create", "shared"]);
    const N: usize = 6;
    for i in 0..N {
        launch(
            &d,
            &format!("i{i}"),
            &["--persistent", "--no-start"],
            Some(IDLE),
        );
    }
    let socket = d.socket.clone();
    let barrier = std::sync::Barrier::new(N);
    let answers: Vec<(u16, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..N)
            .map(|i| {
                let (socket, barrier) = (&socket, &barrier);
                s.spawn(move || {
                    let body = json!({"instance": format!("i{i}"), "path": "/data"}).to_string();
                    barrier.wait();
                    let r = common::http(
                        socket,
                        "POST",
                        "/v1/volumes/shared/attach",
                        "application/json",
                        body.as_bytes(),
                    );
                    (r.status, r.json())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners: Vec<_> = answers.iter().filter(|(s, _)| *s == 200).collect();
    assert_eq!(winners.len(), 1, "{answers:?}");
    let holder = winners[0].1["attached"]["instance"]
        .as_str()
        .unwrap()
        .to_owned();
    for (status, e) in answers.iter().filter(|(s, _)| *s != 200) {
        assert_eq!(*status, 409, "{e}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains(&holder),
            "{e}"
        );
    }
    let holding: Vec<_> = (0..N)
        .map(|i| format!("i{i}"))
        .filter(|n| {
            d.info(n)["volumes"]
                .as_array()
                .is_some_and(|v| !v.is_empty())
        })
        .collect();
    assert_eq!(
        holding,
        std::slice::from_ref(&holder),
        "only the winner's config names it"
    );
    d.ok(&["volume", "detach", "shared", &holder]);

    // Launches.
    let answers: Vec<(u16, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..N)
            .map(|i| {
                let (socket, barrier) = (&socket, &barrier);
                s.spawn(move || {
                    let body = json!({
                        "template": "busybox",
                        "name": format!("l{i}"),
                        "start": false,
                        "volumes": [{"volume": "shared", "path": "/data"}],
                    })
                    .to_string();
                    barrier.wait();
                    let r = common::http(
                        socket,
                        "POST",
                        "/v1/instances",
                        "application/json",
                        body.as_bytes(),
                    );
                    (r.status, r.json())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = answers.iter().filter(|(s, _)| *s == 201).count();
    assert_eq!(ok, 1, "{answers:?}");
    for (status, e) in answers.iter().filter(|(s, _)| *s != 201) {
        assert_eq!(*status, 409, "{e}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains("shared"),
            "{e}"
        );
    }
    let launched: Vec<_> = d
        .instance_names()
        .into_iter()
        .filter(|n| n.starts_with('l'))
        .collect();
    d.wait_instance_dirs(N + 1);
    assert_eq!(
        launched.len(),
        1,
        "the refused launches left no instance: {launched:?}"
    );
    d.ok(&["rm", "--force", &launched[0]]);
    d.ok(&["volume", "rm", "shared"]);
    d.finish();
}

/// Targets one inside another (the forker does not resolve a target across another mount),
/// under `/run` (a tmpfs in a system container), and sizes too large for any disk are refused
/// with 400 at launch and attach; a launch stores its paths normalised, as attach does.
#[test]
fn nested_run_and_oversized_volumes_are_refused_and_paths_normalised() {
    let d = TestDaemon::start();
    for v in ["db", "wal", "x"] {
        d.ok(&["volume", "create", v]);
    }
    for pair in [
        ["db:/var/lib/db", "wal:/var/lib/db/wal"],
        ["wal:/var/lib/db//wal/", "db:/var/lib/db"],
    ] {
        let out = d.fails(&[
            "launch", "busybox", "--name", "n", "-v", pair[0], "-v", pair[1],
        ]);
        assert_refused_with(&out, &["volume `wal`", "inside volume `db`"]);
        assert!(is_gone(&d, "n"), "the refused launch left no instance");
    }
    let out = d.fails(&["launch", "busybox", "--name", "n", "-v", "x:/run/app"]);
    assert_refused_with(&out, &["volume `x`", "/run", "tmpfs"]);
    assert!(is_gone(&d, "n"));

    // A launch stores its paths normalised: the instance and the volume agree.
    launch(
        &d,
        "a",
        &["--persistent", "--no-start", "-v", "db://var//lib/./db/"],
        Some(IDLE),
    );
    assert_eq!(d.info("a")["volumes"][0]["path"], "/var/lib/db");
    let v = d.json(&["volume", "info", "db", "--json"]);
    assert_eq!(v["attached"]["path"], "/var/lib/db", "{v}");

    // Attach checks against the instance's volumes, both ways.
    for (vol, path) in [("wal", "/var/lib/db/wal"), ("wal", "/var"), ("x", "/run")] {
        let (status, e) = d.api(
            "POST",
            &format!("/v1/volumes/{vol}/attach"),
            Some(&json!({"instance": "a", "path": path})),
        );
        assert_eq!(status, 400, "{path}: {e}");
        let msg = e["error"]["message"].as_str().unwrap();
        assert!(msg.contains(&format!("volume `{vol}`")), "{e}");
        assert!(e["error"]["hint"].as_str().is_some(), "{e}");
    }
    let v = d.json(&["volume", "info", "wal", "--json"]);
    assert!(v["attached"].is_null(), "{v}");
    // A shared name prefix is not nesting.
    d.ok(&["volume", "attach", "wal", "a:/var/lib/dbwal"]);
    d.ok(&["start", "a"]);
    d.sh("a", "echo w >/var/lib/dbwal/f && echo d >/var/lib/db/f");
    assert_eq!(d.sh("a", "cat /var/lib/dbwal/f /var/lib/db/f"), "w\nd\n");

    // Sizes above what any disk here could hold: 400, nothing made.
    let before = d.state_entries("volumes").len();
    let (status, e) = d.api(
        "POST",
        "/v1/volumes",
        Some(&json!({"name": "huge", "size": u64::MAX})),
    );
    assert_eq!(status, 400, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("too large"),
        "{e}"
    );
    assert_refused_with(
        &d.fails(&["volume", "create", "huge", "--size", "20T"]),
        &["volume `huge`", "too large"],
    );
    assert_eq!(d.state_entries("volumes").len(), before, "nothing made");
    assert!(d.mayfly(&["volume", "info", "huge"]).code != 0);

    d.ok(&["rm", "--force", "a"]);
    d.ok(&["volume", "rm", "db", "wal", "x"]);
    d.finish();
}

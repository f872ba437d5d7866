//! User data run by mayfly itself before the init, for templates without cloud-init (issue
//! 23 §1): scripts and the cloud-config subset, output in `logs`, status in `info`, checks
//! at launch.

mod common;

use std::time::Duration;

use common::{TestDaemon, wait_until};
use serde_json::{Value, json};

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write user data");
    p.display().to_string()
}

/// Writes `text` into the test's directory and launches busybox instance `name` with it as
/// its user data.
fn launch_with(d: &TestDaemon, name: &str, text: &str) -> common::Output {
    let file = write(&d.dir, &format!("{name}.user-data"), text);
    d.mayfly(&["launch", "busybox", "--name", name, "--user-data", &file])
}

/// [`launch_with`], which must succeed.
fn launched(d: &TestDaemon, name: &str, text: &str) {
    let out = launch_with(d, name, text);
    assert!(out.success(), "{out}");
}

/// [`launch_with`] (instance `b1`), which must be refused: the answer, to check its words.
fn refused(d: &TestDaemon, text: &str) -> common::Output {
    let out = launch_with(d, "b1", text);
    assert!(!out.success(), "launched with bad user data: {out}");
    out
}

fn status_of(d: &TestDaemon, name: &str) -> Value {
    d.info(name)["user_data"].clone()
}

fn wait_status(d: &TestDaemon, name: &str) -> Value {
    wait_until(Duration::from_secs(30), "the user data to end", || {
        let s = status_of(d, name)["status"]["state"].clone();
        s == "done" || s == "failed"
    });
    status_of(d, name)
}

#[test]
fn a_script_runs_before_the_init_with_its_output_in_logs_and_its_status_in_info() {
    let d = TestDaemon::start();
    let dir = tempfile::tempdir().unwrap();
    let ok = write(
        dir.path(),
        "ok.sh",
        "#!/bin/sh\necho hello from user data\nid -u > /root/ud-uid\necho $$ > /ud-pid\n[ -e /proc/1 ] && cat /proc/1/cmdline | tr '\\0' ' ' > /ud-pid1\n",
    );
    d.ok(&[
        "launch",
        "busybox",
        "--name",
        "u1",
        "--persistent",
        "--user-data",
        &ok,
    ]);
    let ud = wait_status(&d, "u1");
    assert_eq!(ud["kind"], "script", "{ud}");
    assert_eq!(ud["handler"], "mayfly", "{ud}");
    assert_eq!(ud["status"]["state"], "done", "{ud}");
    assert_eq!(ud["status"]["code"], 0, "{ud}");
    assert!(ud["status"]["at"].as_str().is_some(), "{ud}");
    assert_eq!(d.state_of("u1").as_deref(), Some("running"));
    assert!(d.ok(&["logs", "u1"]).contains("hello from user data"));
    assert_eq!(
        d.sh("u1", "cat /root/ud-uid").trim(),
        "0",
        "it runs as root"
    );
    // Before the init: PID 1 was still mayfly's child when it ran, not yet the init.
    let pid1_then = d.sh("u1", "cat /ud-pid1");
    let pid1_now = d.sh("u1", "cat /proc/1/cmdline | tr '\\0' ' '");
    assert_ne!(
        pid1_then, pid1_now,
        "the user data ran before the init was executed"
    );
    // The script itself is nowhere in the instance.
    assert!(
        !d.sh(
            "u1",
            "grep -rl 'hello from user data' /etc /root /tmp /run 2>/dev/null; true"
        )
        .contains('/')
    );
    let text = d.ok(&["info", "u1"]);
    assert!(text.contains("script") && text.contains("done"), "{text}");

    // A failing one: the init starts anyway, the code is shown.
    let bad = write(
        dir.path(),
        "bad.sh",
        "#!/bin/sh\necho about to fail >&2\nexit 3\n",
    );
    d.ok(&["launch", "busybox", "--name", "u2", "--user-data", &bad]);
    let ud = wait_status(&d, "u2");
    assert_eq!(ud["status"]["state"], "failed", "{ud}");
    assert_eq!(ud["status"]["code"], 3, "{ud}");
    assert_eq!(d.state_of("u2").as_deref(), Some("running"));
    let logs = d.ok(&["logs", "u2"]);
    assert!(
        logs.contains("about to fail") && logs.contains("status 3"),
        "{logs}"
    );

    // Its interpreter missing: said in the logs and the status, the init still runs.
    let nointerp = write(dir.path(), "py.sh", "#!/usr/bin/python3\nprint(1)\n");
    d.ok(&[
        "launch",
        "busybox",
        "--name",
        "u3",
        "--user-data",
        &nointerp,
    ]);
    let ud = wait_status(&d, "u3");
    assert_eq!(ud["status"]["state"], "failed", "{ud}");
    assert!(
        d.ok(&["logs", "u3"]).contains("interpreter"),
        "{}",
        d.ok(&["logs", "u3"])
    );
    assert_eq!(d.state_of("u3").as_deref(), Some("running"));

    // A stop while it runs is not held up by it: the user data ends, the init never starts.
    let long = write(dir.path(), "long.sh", "#!/bin/sh\nsleep 300\n");
    d.ok(&["launch", "busybox", "--name", "u5", "--user-data", &long]);
    let asked = std::time::Instant::now();
    d.ok(&["stop", "u5"]);
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "stop took {:?}",
        asked.elapsed()
    );
    let ud = status_of(&d, "u5");
    assert_eq!(ud["status"]["state"], "failed", "{ud}");
    assert!(
        ud["status"]["errors"][0]
            .as_str()
            .unwrap()
            .contains("stopped"),
        "{ud}"
    );

    // From standard input too; it runs again at each start.
    let out = d.mayfly_stdin(
        &[
            "launch",
            "busybox",
            "--name",
            "u4",
            "--persistent",
            "--user-data",
            "-",
        ],
        b"#!/bin/sh\necho run >> /root/runs\n",
    );
    assert!(out.success(), "{out}");
    wait_status(&d, "u4");
    d.ok(&["restart", "u4"]);
    wait_until(Duration::from_secs(30), "the second run", || {
        d.mayfly(&["exec", "u4", "--", "cat", "/root/runs"])
            .stdout
            .lines()
            .count()
            == 2
    });
    d.finish();
}

#[test]
fn a_script_past_its_deadline_is_killed_and_the_init_starts() {
    let d = TestDaemon::start_with_env(&[], &[("MAYFLY_USER_DATA_TIMEOUT", "2")]);
    launched(
        &d,
        "slow",
        "#!/bin/sh\n(sleep 300; touch /child-survived) &\necho started slow\nsleep 300\n",
    );
    assert_eq!(status_of(&d, "slow")["status"]["state"], "running");
    let ud = wait_status(&d, "slow");
    assert_eq!(ud["status"]["state"], "failed", "{ud}");
    assert!(
        ud["status"]["errors"][0]
            .as_str()
            .unwrap()
            .contains("deadline"),
        "{ud}"
    );
    assert_eq!(d.state_of("slow").as_deref(), Some("running"));
    // Its whole process group went with it.
    assert!(!d.sh("slow", "ps -o args").contains("sleep 300"));
    d.finish();
}

#[test]
fn the_cloud_config_subset_is_carried_out_by_mayfly() {
    let d = TestDaemon::start();
    let dir = tempfile::tempdir().unwrap();
    let cc = write(
        dir.path(),
        "cc.yaml",
        r#"#cloud-config
hostname: web-7
users:
- default
- name: alice
  shell: /bin/sh
  sudo: ALL=(ALL) NOPASSWD:ALL
  ssh_authorized_keys:
  - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey alice@example
write_files:
- path: /etc/app/config.txt
  content: |
    port: 8080
    it's quoted
- path: /etc/app/secret
  encoding: b64
  content: c2VjcmV0IHZhbHVl
  permissions: '0600'
  owner: alice:alice
- path: /etc/app/config.txt
  content: "appended\n"
  append: true
runcmd:
- echo ran-runcmd > /root/marker
- [sh, -c, 'echo "$0" > /root/argv', 'two words']
"#,
    );
    d.ok(&["launch", "busybox", "--name", "cc1", "--user-data", &cc]);
    let ud = wait_status(&d, "cc1");
    assert_eq!(ud["kind"], "cloud-config", "{ud}");
    assert_eq!(
        ud["status"]["state"],
        "done",
        "{ud}\n{}",
        d.ok(&["logs", "cc1"])
    );
    assert_eq!(
        d.sh("cc1", "cat /etc/app/config.txt"),
        "port: 8080\nit's quoted\nappended\n"
    );
    assert_eq!(d.sh("cc1", "cat /etc/app/secret"), "secret value");
    assert_eq!(
        d.sh("cc1", "stat -c '%a %U' /etc/app/secret").trim(),
        "600 alice"
    );
    assert_eq!(d.sh("cc1", "cat /root/marker"), "ran-runcmd\n");
    assert_eq!(d.sh("cc1", "cat /root/argv"), "two words\n");
    let keys = d.sh("cc1", "cat ~alice/.ssh/authorized_keys");
    assert!(keys.contains("alice@example"), "{keys}");
    assert_eq!(
        d.sh("cc1", "stat -c '%a %U' ~alice/.ssh/authorized_keys")
            .trim(),
        "600 alice"
    );
    assert_eq!(d.sh("cc1", "hostname").trim(), "web-7");
    assert_eq!(d.sh("cc1", "cat /etc/hostname").trim(), "web-7");
    assert_eq!(
        d.sh(
            "cc1",
            "cat /run/mayfly/meta.json | grep -c '\"hostname\": \"web-7\"'"
        )
        .trim(),
        "1"
    );
    let logs = d.ok(&["logs", "cc1"]);
    assert!(logs.contains("`sudo` of alice ignored"), "{logs}");
    d.finish();
}

#[test]
fn bad_user_data_is_refused_at_launch_with_what_is_wrong() {
    let d = TestDaemon::start();
    // Malformed YAML: the line and the reason.
    let out = refused(&d, "#cloud-config\nruncmd:\n  - echo one\n - echo two: [\n");
    assert!(
        out.stderr.contains("malformed cloud-config") && out.stderr.contains("line 4"),
        "{out}"
    );
    // A wrong shape: its line too.
    let out = refused(&d, "#cloud-config\nruncmd:\n  - ls\nwrite_files: yes\n");
    assert!(out.stderr.contains("line 4"), "{out}");
    // Keys outside the subset, on a template without cloud-init: the supported ones listed.
    let out = refused(&d, "#cloud-config\npackages: [nginx]\n");
    assert!(
        out.stderr.contains("`packages`")
            && out.stderr.contains("hostname, runcmd, users, write_files"),
        "{out}"
    );
    // Neither a script nor a cloud-config.
    let out = refused(&d, "echo hi\n");
    assert!(out.stderr.contains("#cloud-config"), "{out}");
    // Through the API: 400 with the JSON error; too large: 413.
    let (status, body) = d.api(
        "POST",
        "/v1/instances",
        Some(&json!({"template": "busybox", "name": "b2", "user_data": "#cloud-config\nhostname: a\n  runcmd: x\n"})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("line 3"), "{body}");
    assert_eq!(body["error"]["code"], "invalid_argument", "{body}");
    let big = format!("#!/bin/sh\n{}", "#".repeat(256 * 1024));
    let (status, body) = d.api(
        "POST",
        "/v1/instances",
        Some(&json!({"template": "busybox", "name": "b2", "user_data": big})),
    );
    assert_eq!(status, 413, "{body}");
    assert!(body.to_string().contains("at most 262144"), "{body}");
    let out = d.fails(&[
        "launch",
        "busybox",
        "--name",
        "b3",
        "--user-data",
        "/nonexistent/x",
    ]);
    assert!(out.stderr.contains("/nonexistent/x"), "{out}");
    assert!(d.instance_names().is_empty(), "nothing was made");
    d.finish();
}

#[test]
fn a_failed_preparation_or_a_killed_daemon_leaves_the_user_data_consistent() {
    let mut d = TestDaemon::start_with_env(&[], &[("MAYFLY_FAIL_AT", "start:user-data")]);
    let dir = tempfile::tempdir().unwrap();
    let script = write(
        dir.path(),
        "s.sh",
        "#!/bin/sh\nsleep 2\necho ran >> /root/ran\n",
    );
    // The start fails while its files are prepared: nothing runs, nothing is left mounted.
    let out = d.fails(&[
        "launch",
        "busybox",
        "--name",
        "f1",
        "--persistent",
        "--user-data",
        &script,
    ]);
    assert!(out.stderr.contains("start:user-data"), "{out}");
    assert_ne!(d.state_of("f1").as_deref(), Some("running"));
    d.stop_daemon();
    d.set_env(&[]);
    d.restart();
    if d.state_of("f1").is_some() {
        d.ok(&["start", "f1"]);
    } else {
        d.ok(&[
            "launch",
            "busybox",
            "--name",
            "f1",
            "--persistent",
            "--user-data",
            &script,
        ]);
    }
    assert_eq!(wait_status(&d, "f1")["status"]["state"], "done");
    assert_eq!(d.sh("f1", "cat /root/ran"), "ran\n");

    // The daemon killed while the user data runs: it goes on (the forker holds the
    // instance), and the status is there once the daemon is back.
    d.ok(&["launch", "busybox", "--name", "f2", "--user-data", &script]);
    assert_eq!(status_of(&d, "f2")["status"]["state"], "running");
    d.kill_daemon();
    d.restart();
    let ud = wait_status(&d, "f2");
    assert_eq!(ud["status"]["state"], "done", "{ud}");
    assert_eq!(d.sh("f2", "cat /root/ran"), "ran\n");
    d.finish();
}

#[test]
fn the_runner_holds_against_its_own_script_and_writes_what_it_is_given() {
    let d = TestDaemon::start();
    let dir = tempfile::tempdir().unwrap();
    // Signals the script sends to PID 1 do not end the instance (only mayfly's do).
    launched(
        &d,
        "s1",
        "#!/bin/sh\nkill -HUP 1\nkill -TERM 1\nsleep 1\necho survived > /root/survived\n",
    );
    let ud = wait_status(&d, "s1");
    assert_eq!(ud["status"]["state"], "done", "{ud}");
    assert_eq!(d.state_of("s1").as_deref(), Some("running"));
    assert_eq!(d.sh("s1", "cat /root/survived"), "survived\n");

    // Binary content, default modes, a dotted hostname, a user by name only; a persistent
    // instance started again does not duplicate its keys.
    let cc = write(
        dir.path(),
        "cc.yaml",
        "#cloud-config\nhostname: web1.example.com\nusers:\n- bob\n- name: al\n  ssh_authorized_keys: [ssh-ed25519 AAAAk al@x]\nwrite_files:\n- path: /srv/bin\n  encoding: b64\n  content: //6AQQ==\n- path: /srv/plain\n  content: x\n",
    );
    d.ok(&[
        "launch",
        "busybox",
        "--name",
        "s2",
        "--persistent",
        "--user-data",
        &cc,
    ]);
    let ud = wait_status(&d, "s2");
    assert_eq!(
        ud["status"]["state"],
        "done",
        "{ud} {}",
        d.ok(&["logs", "s2"])
    );
    assert_eq!(
        d.sh("s2", "od -An -tx1 /srv/bin")
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["ff", "fe", "80", "41"]
    );
    assert_eq!(
        d.sh("s2", "stat -c '%a %U' /srv/plain /srv/bin"),
        "644 root\n644 root\n"
    );
    assert_eq!(d.sh("s2", "hostname").trim(), "web1");
    assert_eq!(
        d.sh("s2", "awk -F: '$1==\"bob\"' /etc/passwd | wc -l")
            .trim(),
        "1"
    );
    d.ok(&["stop", "s2"]);
    d.ok(&["start", "s2"]);
    wait_status(&d, "s2");
    assert_eq!(
        d.sh("s2", "grep -c al@x ~al/.ssh/authorized_keys").trim(),
        "1"
    );

    // A run that ended without the runner saying how (its PID 1 killed from the host) is
    // shown interrupted, not running forever.
    let long = write(dir.path(), "long.sh", "#!/bin/sh\nsleep 300\n");
    d.ok(&[
        "launch",
        "busybox",
        "--name",
        "s3",
        "--persistent",
        "--user-data",
        &long,
    ]);
    assert_eq!(status_of(&d, "s3")["status"]["state"], "running");
    let pid = d.pid_of("s3");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    wait_until(Duration::from_secs(20), "s3 to stop", || {
        d.state_of("s3").as_deref() == Some("stopped")
    });
    assert_eq!(status_of(&d, "s3")["status"]["state"], "interrupted");

    // Formats only cloud-init reads are refused for mayfly's runner, saying why; an empty
    // runcmd command with its line.
    let out = refused(&d, "#include\nhttp://example.com/x\n");
    assert!(
        out.stderr.contains("without cloud-init") && out.stderr.contains("#include"),
        "{out}"
    );
    let out = refused(&d, "#cloud-config\nruncmd:\n- ls\n- []\n");
    assert!(
        out.stderr.contains("line 4") && out.stderr.contains("empty command"),
        "{out}"
    );
    d.finish();
}

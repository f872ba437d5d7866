//! Instances through their lives: the three modes (transient, persistent, ephemeral) and the
//! verbs (`launch`, `list`, `info`, `start`, `stop`, `restart`, `reset`, `rm`). `exec`, the
//! console logs, names and errors, and the REST API have files of their own (`exec.rs`,
//! `logs.rs`, `errors.rs`).

mod common;

use common::{
    IDLE, SETTLE, TestDaemon, assert_refused_with, exists_in, is_gone, launch, logs, pid_alive,
    signal, wait_log, wait_state, wait_until,
};
use serde_json::Value;

/// The identity of an instance: id, and the host id range its ids map to.
fn identity(d: &TestDaemon, name: &str) -> (String, Value, Value) {
    let info = d.info(name);
    (
        info["id"].as_str().expect("an id").to_owned(),
        info["isolation"]["host_id_base"].clone(),
        info["isolation"]["host_id_count"].clone(),
    )
}

// ---- modes ----------------------------------------------------------------------------------

#[test]
fn transient_instance_forgets_changes_at_stop_and_restart_but_keeps_its_identity() {
    let d = TestDaemon::start();
    let out = d.ok(&["launch", "busybox", "--name", "tr-web"]);
    assert!(out.contains("tr-web"), "{out}");
    let info = d.info("tr-web");
    assert_eq!(
        info["mode"], "transient",
        "transient is the default: {info}"
    );
    assert_eq!(info["state"], "running", "{info}");
    let id = identity(&d, "tr-web");
    assert!(id.1.is_u64() && id.2.is_u64(), "an id range: {info}");

    d.sh("tr-web", "echo hi > /root/note");
    assert_eq!(d.sh("tr-web", "cat /root/note"), "hi\n");

    d.ok(&["stop", "tr-web"]);
    assert_eq!(d.state_of("tr-web").as_deref(), Some("stopped"));
    d.ok(&["start", "tr-web"]);
    assert_eq!(d.state_of("tr-web").as_deref(), Some("running"));
    assert!(
        !exists_in(&d, "tr-web", "/root/note"),
        "stop + start keeps a transient instance's change"
    );
    assert_eq!(
        identity(&d, "tr-web"),
        id,
        "stop + start changed the identity"
    );

    d.sh("tr-web", "echo again > /root/note");
    let pid = d.pid_of("tr-web");
    d.ok(&["restart", "tr-web"]);
    assert_eq!(d.state_of("tr-web").as_deref(), Some("running"));
    assert_ne!(d.pid_of("tr-web"), pid, "restart runs a new init");
    assert!(!pid_alive(pid), "the old init is gone after restart");
    assert!(
        !exists_in(&d, "tr-web", "/root/note"),
        "restart keeps a transient instance's change"
    );
    assert_eq!(identity(&d, "tr-web"), id, "restart changed the identity");
    assert_eq!(d.instance_names(), vec!["tr-web".to_owned()]);
    d.finish();
}

#[test]
fn persistent_instance_keeps_changes_until_reset() {
    let d = TestDaemon::start();
    launch(&d, "pe-db", &["--persistent"], None);
    assert_eq!(d.info("pe-db")["mode"], "persistent");
    let id = identity(&d, "pe-db");
    d.sh("pe-db", "echo kept > /root/data");

    d.ok(&["stop", "pe-db"]);
    d.ok(&["start", "pe-db"]);
    assert_eq!(
        d.sh("pe-db", "cat /root/data"),
        "kept\n",
        "lost at stop/start"
    );
    d.ok(&["restart", "pe-db"]);
    assert_eq!(d.sh("pe-db", "cat /root/data"), "kept\n", "lost at restart");
    assert_eq!(identity(&d, "pe-db"), id);

    // Reset of a running instance: clean again, and running.
    let pid = d.pid_of("pe-db");
    d.ok(&["reset", "pe-db"]);
    assert_eq!(d.state_of("pe-db").as_deref(), Some("running"));
    assert_ne!(
        d.pid_of("pe-db"),
        pid,
        "a running instance is restarted by reset"
    );
    assert!(
        !exists_in(&d, "pe-db", "/root/data"),
        "reset kept the change"
    );

    // Reset of a stopped instance: it stays stopped, and starts clean.
    d.sh("pe-db", "echo second > /root/data");
    d.ok(&["stop", "pe-db"]);
    d.ok(&["reset", "pe-db"]);
    assert_eq!(d.state_of("pe-db").as_deref(), Some("stopped"));
    d.ok(&["start", "pe-db"]);
    assert!(
        !exists_in(&d, "pe-db", "/root/data"),
        "reset of a stopped instance kept the change"
    );
    // And its changes persist again afterwards.
    d.sh("pe-db", "echo third > /root/data");
    d.ok(&["restart", "pe-db"]);
    assert_eq!(d.sh("pe-db", "cat /root/data"), "third\n");
    assert_eq!(identity(&d, "pe-db"), id);
    d.finish();
}

#[test]
fn ephemeral_instance_is_deleted_when_stopped_and_when_its_init_exits() {
    let d = TestDaemon::start();
    launch(&d, "ep-job", &["--ephemeral"], None);
    assert_eq!(d.info("ep-job")["mode"], "ephemeral");
    d.wait_instance_dirs(1);
    d.ok(&["stop", "ep-job"]);
    assert!(is_gone(&d, "ep-job"), "stopped, it is still there");
    assert!(d.instance_names().is_empty(), "{:?}", d.instance_names());
    d.wait_instance_dirs(0);

    // An init that ends by itself takes the instance with it.
    launch(
        &d,
        "ep-oneshot",
        &["--ephemeral"],
        Some("while [ ! -e /tmp/go ]; do sleep 0.05; done; exit 0"),
    );
    let pid = d.pid_of("ep-oneshot");
    std::fs::write(format!("/proc/{pid}/root/tmp/go"), "").expect("poke the instance");
    wait_until(SETTLE, "the ephemeral instance to go", || {
        is_gone(&d, "ep-oneshot")
    });
    assert!(d.instance_names().is_empty(), "{:?}", d.instance_names());
    d.wait_instance_dirs(0);
    // Its name is free again.
    launch(&d, "ep-oneshot", &["--ephemeral"], None);
    d.ok(&["rm", "--force", "ep-oneshot"]);
    d.wait_instance_dirs(0);
    d.finish();
}

#[test]
fn launch_whose_command_exits_leaves_a_stopped_instance_with_its_exit() {
    let d = TestDaemon::start();
    // Each run marks its writable layer: a second run of the transient one does not find the
    // mark (exit 4 again), the persistent one does (exit 5).
    let script =
        |code: u8| format!("test -e /root/f && exit 5; touch /root/f; echo bye; exit {code}");
    launch(&d, "ex-trans", &[], Some(&script(4)));
    launch(&d, "ex-pers", &["--persistent"], Some(&script(9)));
    wait_state(&d, "ex-trans", "stopped");
    wait_state(&d, "ex-pers", "stopped");
    let t = d.info("ex-trans");
    assert_eq!(t["last_exit"]["code"], 4, "{t}");
    assert!(t["last_exit"]["signal"].is_null(), "{t}");
    assert!(t["pid"].is_null(), "a stopped instance has no pid: {t}");
    assert_eq!(d.info("ex-pers")["last_exit"]["code"], 9);
    let text = d.ok(&["info", "ex-trans"]);
    assert!(text.contains("last exit:   exit code 4"), "{text}");
    assert!(logs(&d, "ex-trans").contains("bye"), "the run's output");
    // Both are still listed, stopped.
    let mut names = d.instance_names();
    names.sort();
    assert_eq!(names, vec!["ex-pers".to_owned(), "ex-trans".to_owned()]);
    for n in ["ex-trans", "ex-pers"] {
        d.ok(&["start", n]);
        wait_state(&d, n, "stopped");
    }
    assert_eq!(
        d.info("ex-trans")["last_exit"]["code"],
        4,
        "the transient run kept its layer"
    );
    assert_eq!(
        d.info("ex-pers")["last_exit"]["code"],
        5,
        "the persistent run lost its layer"
    );

    // An init killed from the host: the signal is recorded.
    launch(&d, "ex-killed", &[], Some(IDLE));
    let pid = d.pid_of("ex-killed");
    signal(pid, rustix::process::Signal::KILL);
    wait_state(&d, "ex-killed", "stopped");
    let k = d.info("ex-killed");
    assert_eq!(k["last_exit"]["signal"], 9, "{k}");
    assert_eq!(k["last_exit"]["code"], 137, "{k}");
    let text = d.ok(&["info", "ex-killed"]);
    assert!(text.contains("killed by signal 9"), "{text}");
    // It can be started again.
    d.ok(&["start", "ex-killed"]);
    assert_eq!(d.state_of("ex-killed").as_deref(), Some("running"));
    d.finish();
}

// ---- list, info, start, stop, rm --------------------------------------------------------------

#[test]
fn list_and_info_show_instances_as_text_and_json() {
    let d = TestDaemon::start();
    launch(&d, "li-run", &[], None);
    launch(&d, "li-pers", &["--persistent", "--no-start"], None);

    let text = d.ok(&["list"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "a header and two rows: {text}");
    for col in ["NAME", "STATE", "MODE", "TEMPLATE", "PID", "CREATED"] {
        assert!(lines[0].contains(col), "header lacks {col}: {text}");
    }
    let row = |name: &str| -> Vec<String> {
        lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}: {text}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    let pid = d.pid_of("li-run");
    let r = row("li-run");
    assert_eq!(&r[1..3], ["running", "transient"], "{text}");
    assert!(r.contains(&pid.to_string()), "the pid shows: {text}");
    let p = row("li-pers");
    assert_eq!(&p[1..3], ["stopped", "persistent"], "{text}");
    assert!(
        p.contains(&"-".to_owned()),
        "no pid for a stopped one: {text}"
    );

    // JSON: the same facts.
    let all = d.json(&["list", "--json"]);
    let all = all.as_array().expect("an array");
    assert_eq!(all.len(), 2);
    let run = all
        .iter()
        .find(|i| i["name"] == "li-run")
        .expect("li-run listed");
    assert_eq!(run["state"], "running");
    assert_eq!(run["pid"], pid);
    assert_eq!(run["template"], "busybox");
    let info = d.info("li-run");
    assert_eq!(info["id"], run["id"]);
    assert!(
        info["id"]
            .as_str()
            .is_some_and(|s| s.len() == 16 && s.chars().all(|c| c.is_ascii_hexdigit())),
        "{info}"
    );
    let pers = d.info("li-pers");
    assert_eq!(pers["state"], "stopped");
    assert_eq!(pers["mode"], "persistent");
    assert!(pers["pid"].is_null());

    // Text info of a running instance.
    let text = d.ok(&["info", "li-run"]);
    for want in [
        "name:        li-run".to_owned(),
        format!("id:          {}", info["id"].as_str().unwrap_or_default()),
        "state:       running".to_owned(),
        "mode:        transient".to_owned(),
        format!("pid:         {pid}"),
        "template:    busybox".to_owned(),
        "isolation:   user namespace".to_owned(),
    ] {
        assert!(text.contains(&want), "info lacks `{want}`:\n{text}");
    }
    // The daemon's info counts them.
    let di = d.daemon_info();
    assert_eq!(di["instances"], 2, "{di}");
    assert_eq!(di["running"], 1, "{di}");

    // A launch without --name gets a valid DNS label, which is also its hostname.
    let generated = d.json(&["launch", "busybox", "--json"]);
    let name = generated["name"]
        .as_str()
        .expect("a generated name")
        .to_owned();
    assert!(
        mayfly_like_dns_label(&name),
        "the generated name `{name}` is no DNS label"
    );
    assert_eq!(d.sh(&name, "hostname").trim(), name);
    d.finish();
}

/// The instance-name rule, restated: 1–63 of a-z, 0-9, `-`, starting with a letter, not
/// ending with `-`.
fn mayfly_like_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

#[test]
fn stop_sends_the_stop_signal_then_kills_after_the_timeout() {
    let d = TestDaemon::start();
    // Catches TERM and carries on: gets TERM, then SIGKILL once the timeout passes.
    launch(
        &d,
        "st-stubborn",
        &[],
        Some("trap 'echo got-term' TERM; echo ready; while :; do sleep 0.1; done"),
    );
    // Ignores TERM outright.
    launch(
        &d,
        "st-deaf",
        &[],
        Some("trap '' TERM; echo ready; while :; do sleep 1; done"),
    );
    // Leaves on TERM: a clean exit, no SIGKILL.
    launch(
        &d,
        "st-polite",
        &[],
        Some("trap 'echo bye; exit 0' TERM; echo ready; while :; do sleep 0.1; done"),
    );
    for n in ["st-stubborn", "st-deaf", "st-polite"] {
        wait_log(&d, n, "ready");
    }

    let stubborn = d.pid_of("st-stubborn");
    d.ok(&["stop", "--timeout", "1", "st-stubborn"]);
    assert_eq!(d.state_of("st-stubborn").as_deref(), Some("stopped"));
    assert!(!pid_alive(stubborn), "the init survived stop");
    let e = d.info("st-stubborn")["last_exit"].clone();
    assert_eq!(e["signal"], 9, "killed once the timeout passed: {e}");
    assert!(
        logs(&d, "st-stubborn").contains("got-term"),
        "TERM came first: {:?}",
        logs(&d, "st-stubborn")
    );

    let deaf = d.pid_of("st-deaf");
    d.ok(&["stop", "--timeout", "1", "st-deaf"]);
    assert_eq!(d.state_of("st-deaf").as_deref(), Some("stopped"));
    assert!(!pid_alive(deaf), "the init survived stop");
    assert_eq!(d.info("st-deaf")["last_exit"]["signal"], 9);

    d.ok(&["stop", "--timeout", "10", "st-polite"]);
    let e = d.info("st-polite")["last_exit"].clone();
    assert_eq!(e["code"], 0, "it left by itself on TERM: {e}");
    assert!(e["signal"].is_null(), "{e}");
    assert!(logs(&d, "st-polite").contains("bye"));

    // --force kills at once, even one that would leave politely.
    d.ok(&["start", "st-polite"]);
    wait_until(SETTLE, "the second run to say ready", || {
        logs(&d, "st-polite").matches("ready").count() >= 2
    });
    d.ok(&["stop", "--force", "st-polite"]);
    assert_eq!(d.info("st-polite")["last_exit"]["signal"], 9);
    // Stopping a stopped instance, or starting a running one, is no error: verbs.rs.
    d.finish();
}

#[test]
fn rm_refuses_a_running_instance_unless_forced() {
    let d = TestDaemon::start();
    launch(&d, "rm-live", &[], None);
    let out = d.fails(&["rm", "rm-live"]);
    assert_refused_with(&out, &["rm-live", "running", "--force"]);
    assert_eq!(
        d.state_of("rm-live").as_deref(),
        Some("running"),
        "a refused rm changed the instance"
    );
    let pid = d.pid_of("rm-live");
    d.ok(&["rm", "--force", "rm-live"]);
    assert!(is_gone(&d, "rm-live"));
    assert!(!pid_alive(pid), "rm --force left the init running");
    d.wait_instance_dirs(0);

    // A stopped one goes without --force.
    launch(&d, "rm-idle", &["--no-start"], None);
    d.ok(&["rm", "rm-idle"]);
    assert!(is_gone(&d, "rm-idle"));
    d.wait_instance_dirs(0);
    d.finish();
}

#[test]
fn verbs_take_several_names_and_go_on_past_a_failure() {
    let d = TestDaemon::start();
    for n in ["mn-a", "mn-b", "mn-c"] {
        launch(&d, n, &[], None);
    }
    let out = d.ok(&["stop", "mn-a", "mn-b"]);
    assert!(
        out.contains("stopped mn-a") && out.contains("stopped mn-b"),
        "{out}"
    );
    assert_eq!(d.state_of("mn-a").as_deref(), Some("stopped"));
    assert_eq!(d.state_of("mn-b").as_deref(), Some("stopped"));
    assert_eq!(d.state_of("mn-c").as_deref(), Some("running"));

    d.ok(&["start", "mn-a", "mn-b"]);
    assert_eq!(d.state_of("mn-a").as_deref(), Some("running"));
    assert_eq!(d.state_of("mn-b").as_deref(), Some("running"));

    let (pa, pb) = (d.pid_of("mn-a"), d.pid_of("mn-b"));
    d.ok(&["restart", "mn-a", "mn-b"]);
    assert_ne!(d.pid_of("mn-a"), pa);
    assert_ne!(d.pid_of("mn-b"), pb);

    // One unknown name in the middle: the others are still acted on, the exit code says 1.
    let out = d.mayfly(&["stop", "mn-a", "mn-ghost", "mn-b"]);
    assert_refused_with(&out, &["mn-ghost", "does not exist"]);
    assert_eq!(d.state_of("mn-a").as_deref(), Some("stopped"), "{out}");
    assert_eq!(d.state_of("mn-b").as_deref(), Some("stopped"), "{out}");

    d.ok(&["rm", "--force", "mn-a", "mn-b", "mn-c"]);
    assert!(d.instance_names().is_empty(), "{:?}", d.instance_names());
    d.wait_instance_dirs(0);
    d.finish();
}

//! The daemon's start-up from the outside: its configuration file (`--config`,
//! `MAYFLY_CONFIG`, precedence command line > environment > file > default, refusals that
//! name the key) and its readiness notification to a service manager (`NOTIFY_SOCKET`).

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{TestDaemon, bin, run_command};

/// Writes `text` as a configuration file in a fresh directory (kept by the returned guard).
fn config_file(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).expect("write the configuration file");
    let path = path.display().to_string();
    (dir, path)
}

#[test]
fn the_file_fills_what_the_command_line_and_the_environment_leave_at_their_defaults() {
    let has_cgroup2 = std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("cgroup2"));
    let (dir, path) = config_file(
        "# The test daemon's command line gives --state-dir: it wins.\n\
         state-dir = \"/nonexistent/elsewhere\"\n\
         user-namespaces = \"off\"\n\
         cgroup-layout = \"v2\"\n\
         log-max-size = 4096\n",
    );
    // MAYFLY_CGROUP_LAYOUT wins over the file's v2.
    let mut d =
        TestDaemon::start_with_env(&["--config", &path], &[("MAYFLY_CGROUP_LAYOUT", "auto")]);
    let info = d.daemon_info();
    assert_eq!(
        info["state_dir"],
        d.state.display().to_string(),
        "the command line wins over the file: {info}"
    );
    assert_eq!(info["user_namespaces"], false, "the file's value: {info}");
    assert!(
        info["user_namespaces_off_reason"]
            .as_str()
            .is_some_and(|r| r.contains("--user-namespaces off")),
        "off because the file says so: {info}"
    );
    let auto_mode = info["cgroup_mode"].as_str().unwrap_or_default().to_owned();
    if has_cgroup2 && auto_mode != "v2" {
        // Without the variable, the file's layout is used.
        d.stop_daemon();
        d.set_env(&[]);
        d.restart();
        let info = d.daemon_info();
        assert_eq!(
            info["cgroup_mode"], "v2",
            "the file wins over the default: {info}"
        );
        d.stop_daemon();
        d.set_env(&[("MAYFLY_CGROUP_LAYOUT", "auto")]);
        d.restart();
        assert_eq!(d.daemon_info()["cgroup_mode"], auto_mode.as_str());
    } else {
        eprintln!("cgroup layout `{auto_mode}` by default: the file's v2 cannot be told apart");
    }
    d.finish();
    drop(dir);
}

/// Runs `mayfly daemon ARGS` in a network namespace of its own (`unshare --net`), with
/// `env`: for refusals, which must come before the daemon does anything.
fn daemon_refused(args: &[&str], env: &[(&str, &str)]) -> common::Output {
    let scratch = tempfile::tempdir().expect("temporary directory");
    let mut cmd = Command::new("unshare");
    cmd.arg("--net")
        .arg(bin())
        .arg("daemon")
        .arg("--state-dir")
        .arg(scratch.path().join("state"))
        .arg("--socket")
        .arg(scratch.path().join("sock"))
        .args(args)
        .env_remove("MAYFLY_CONFIG")
        .envs(env.iter().copied());
    let out = run_command(cmd, None, Duration::from_secs(20));
    assert_eq!(out.code, 2, "refused as bad usage: {out}");
    assert!(
        !scratch.path().join("state").exists() && !scratch.path().join("sock").exists(),
        "nothing is made before the configuration is refused"
    );
    out
}

#[test]
fn bad_configurations_are_refused_naming_the_file_the_key_and_what_to_do() {
    let missing = "/nonexistent/mayfly/config.toml";
    let out = daemon_refused(&["--config", missing], &[]);
    assert!(
        out.stderr.contains(missing) && out.stderr.contains("hint:"),
        "{}",
        out.stderr
    );
    let out = daemon_refused(&[], &[("MAYFLY_CONFIG", missing)]);
    assert!(out.stderr.contains(missing), "{}", out.stderr);

    let (_dir, path) = config_file("log_level = \"debug\"\n");
    let out = daemon_refused(&["--config", &path], &[]);
    assert!(
        out.stderr.contains(&path)
            && out.stderr.contains("unknown key `log_level`")
            && out.stderr.contains("did you mean `log-level`"),
        "{}",
        out.stderr
    );

    let (_dir, path) = config_file("memory-overcommit = -3\n");
    let out = daemon_refused(&["--config", &path], &[]);
    assert!(
        out.stderr.contains("key `memory-overcommit`")
            && out.stderr.contains("-3")
            && out.stderr.contains("hint: fix or remove it"),
        "{}",
        out.stderr
    );

    let (_dir, path) = config_file("[daemon]\nlog-level = \"debug\"\n");
    let out = daemon_refused(&["--config", &path], &[]);
    assert!(
        out.stderr.contains("unknown key `daemon`"),
        "{}",
        out.stderr
    );

    let (_dir, path) = config_file("log-level = \n");
    let out = daemon_refused(&["--config", &path], &[]);
    assert!(out.stderr.contains("not valid TOML"), "{}", out.stderr);
}

/// Receives one datagram within 20 s.
fn notification(socket: &UnixDatagram) -> String {
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("set a read timeout");
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("a notification within 20 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn environment_of(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

#[test]
fn readiness_is_notified_and_the_socket_is_not_inherited() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("notify");
    let manager = UnixDatagram::bind(&path).expect("bind the service manager's socket");
    let address = path.display().to_string();
    let mut d = TestDaemon::start_with_env(&[], &[("NOTIFY_SOCKET", address.as_str())]);
    let ready = notification(&manager);
    assert!(
        ready.lines().any(|l| l == "READY=1") && ready.contains("STATUS="),
        "{ready:?}"
    );

    d.ok(&["launch", "busybox", "--name", "web"]);
    let forker = d.forker_pid().expect("the forker runs");
    let init = d.pid_of("web");
    for pid in [forker, init] {
        let env = environment_of(pid);
        assert!(!env.is_empty(), "the environment of {pid} is readable");
        assert!(
            !env.iter().any(|v| v.starts_with("NOTIFY_SOCKET=")),
            "{pid} inherited NOTIFY_SOCKET: {env:?}"
        );
    }
    let out = d.ok(&["exec", "web", "--", "env"]);
    assert!(!out.contains("NOTIFY_SOCKET"), "{out}");

    d.stop_daemon();
    let stopping = notification(&manager);
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    // A daemon started again says so again.
    d.restart();
    assert!(notification(&manager).contains("READY=1"));
    d.ok(&["rm", "--force", "web"]);
    d.finish();
    assert!(Path::new(&path).exists());
}

/// The tests' daemons and clients ignore the machine's configuration: a configuration file
/// (here named by MAYFLY_CONFIG, which stands for a real /etc/mayfly/config.toml), the
/// daemon's MAYFLY_* variables, and a default remote, none of which the test gave. This test
/// runs [`a_test_daemon_in_a_configured_environment`] in this very test binary, with them set.
#[test]
fn test_daemons_ignore_the_machines_configuration() {
    let exe = std::env::current_exe().expect("the test binary");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        "a_test_daemon_in_a_configured_environment",
        "--ignored",
        "--nocapture",
    ])
    .env("MAYFLY_CONFIG", "/nonexistent/mayfly/config.toml")
    .env("MAYFLY_LISTEN", "not-an-address")
    .env("MAYFLY_MEMORY_OVERCOMMIT", "-1")
    .env("MAYFLY_REMOTE", "nowhere");
    let out = run_command(cmd, None, Duration::from_secs(120));
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("1 passed"), "the test ran: {out}");
}

#[test]
#[ignore = "run by test_daemons_ignore_the_machines_configuration, in its environment"]
fn a_test_daemon_in_a_configured_environment() {
    let d = TestDaemon::start();
    let info = d.daemon_info();
    assert_eq!(info["state_dir"], d.state.display().to_string(), "{info}");
    d.ok(&["ls"]);
    d.finish();
}

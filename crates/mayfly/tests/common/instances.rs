//! Instances and templates as the test files drive them: launch, wait for a state, read
//! what `info` says, read the console log, and what a refusal looks like.

use std::io::{BufRead, BufReader};
use std::sync::mpsc;

use super::*;

/// How long an instance may take to reach a state it is expected to reach.
pub const SETTLE: Duration = Duration::from_secs(10);

/// Launches `name` from busybox with `extra` arguments before `--`, and `cmd` (a `sh -c`
/// script) as its init when given.
pub fn launch(d: &TestDaemon, name: &str, extra: &[&str], cmd: Option<&str>) {
    let mut args = vec!["launch", "busybox", "--name", name];
    args.extend_from_slice(extra);
    if let Some(script) = cmd {
        args.extend_from_slice(&["--", "sh", "-c", script]);
    }
    d.ok(&args);
}

/// Waits until instance `name` is in `state`.
pub fn wait_state(d: &TestDaemon, name: &str, state: &str) {
    let ok = poll_until(SETTLE, || d.state_of(name).as_deref() == Some(state));
    assert!(
        ok,
        "instance {name} did not become {state}: {:?}\n{}",
        d.state_of(name),
        d.logs()
    );
}

/// Whether `info NAME` says the instance does not exist.
pub fn is_gone(d: &TestDaemon, name: &str) -> bool {
    let out = d.mayfly(&["info", name, "--json"]);
    out.code == 1 && out.stderr.contains("does not exist")
}

/// Whether `path` exists inside running instance `name`.
pub fn exists_in(d: &TestDaemon, name: &str, path: &str) -> bool {
    let out = d.mayfly(&["exec", name, "--", "test", "-e", path]);
    assert!(
        out.code == 0 || out.code == 1,
        "`test -e {path}` in {name} failed to run: {out}"
    );
    out.code == 0
}

/// The host id base of an instance's user namespace (0 without one).
pub fn id_base(d: &TestDaemon, name: &str) -> u32 {
    d.info(name)["isolation"]["host_id_base"]
        .as_u64()
        .and_then(|b| u32::try_from(b).ok())
        .unwrap_or(0)
}

/// `template info NAME --json`.
pub fn template_info(d: &TestDaemon, name: &str) -> Value {
    d.json(&["template", "info", name, "--json"])
}

/// One version of a template's info.
pub fn version(info: &Value, n: u64) -> Value {
    info["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .find(|v| v["version"] == n)
        .cloned()
        .unwrap_or_else(|| panic!("no version {n} in {info}"))
}

/// The layer digests of a version, lowest first.
pub fn digests(v: &Value) -> Vec<String> {
    v["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].as_str().expect("digest").to_owned())
        .collect()
}

/// The directory name of a layer in `<state>/layers` (`blake3:x` → `blake3-x`).
pub fn layer_dir_name(digest: &str) -> String {
    digest.replace(':', "-")
}

/// An init that idles and never prints (`sh -c`, so that it holds no script file open).
pub const IDLE: &str = "while :; do sleep 1; done";

/// The console log of `name` (`mayfly logs`).
pub fn logs(d: &TestDaemon, name: &str) -> String {
    d.ok(&["logs", name])
}

/// Waits until the console log of `name` contains `needle`.
pub fn wait_log(d: &TestDaemon, name: &str, needle: &str) {
    let ok = poll_until(SETTLE, || logs(d, name).contains(needle));
    assert!(
        ok,
        "the log of {name} never showed `{needle}`: {:?}",
        logs(d, name)
    );
}

/// Asserts that `out` is a refusal (exit 1) whose message contains every one of `parts`.
pub fn assert_refused_with(out: &Output, parts: &[&str]) {
    assert_eq!(out.code, 1, "expected a refusal (exit 1): {out}");
    for p in parts {
        assert!(
            out.stderr.contains(p),
            "the error should mention `{p}`: {out}"
        );
    }
}

/// The lines `r` yields, through a channel (read by a thread).
pub fn line_reader(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// What `info` says of the last end of `name`'s init (`ending`: halted, rebooted, …).
pub fn last_exit(d: &TestDaemon, name: &str) -> Value {
    d.info(name)["last_exit"].clone()
}

/// The host pid of `name`'s init, if it runs.
pub fn init_pid(d: &TestDaemon, name: &str) -> Option<i64> {
    let info = d.info(name);
    (info["state"] == "running")
        .then(|| info["pid"].as_i64())
        .flatten()
}

/// Waits until `name` runs another init than `before` (a reboot's new run).
pub fn wait_new_run(d: &TestDaemon, name: &str, before: Option<i64>, within: Duration) {
    wait_until(within, "the instance runs again", || {
        init_pid(d, name).is_some_and(|p| Some(p) != before)
    });
}

/// Waits until `name` is stopped.
pub fn wait_stopped(d: &TestDaemon, name: &str, within: Duration) {
    wait_until(within, "the instance stops", || {
        d.state_of(name).as_deref() == Some("stopped")
    });
}

/// Asks the init of `name` to reboot or power off with `cmd` run by `exec`. The init's
/// shutdown ends every process, so the command may be ended by SIGTERM or SIGKILL before it
/// returns: that, or a success, is the expected outcome; anything else fails the test.
pub fn ask_init(d: &TestDaemon, name: &str, cmd: &[&str]) {
    let mut args = vec!["exec", name, "--"];
    args.extend_from_slice(cmd);
    let out = d.mayfly(&args);
    let ended_by_shutdown = out.code == 128 + libc::SIGTERM || out.code == 128 + libc::SIGKILL;
    assert!(
        out.success() || ended_by_shutdown,
        "`mayfly {}` failed: {out}",
        args.join(" ")
    );
}

/// Compiles `tests/fixtures/NAME.c` (static) into the test's directory and lays it over the
/// busybox template as `/bin/NAME` (`template patch --from`), so that every instance
/// launched afterwards has it. Returns the host's copy of the program.
pub fn install_fixture(d: &TestDaemon, name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/{name}.c"));
    let tree = d.dir.join(format!("{name}-tree"));
    std::fs::create_dir_all(tree.join("bin")).expect("mkdir the fixture's tree");
    let bin = tree.join("bin").join(name);
    let mut gcc = Command::new("gcc");
    gcc.args(["-static", "-O2", "-o"]).arg(&bin).arg(&src);
    let out = run_command(gcc, None, Duration::from_secs(120));
    assert!(out.success(), "cannot build {name}: {out}");
    d.ok(&[
        "template",
        "patch",
        "busybox",
        "--from",
        tree.to_str().expect("a UTF-8 path"),
        "-m",
        name,
    ]);
    bin
}

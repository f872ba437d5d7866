//! The CLI as a client of a remote daemon: `mayfly remote add` trusts the daemon's
//! certificate on first use (shown, confirmed, pinned), `--remote NAME` and `NAME:INSTANCE`
//! send every command there over TLS with the bearer token, a changed certificate is refused.
//! Every client runs in the daemon's network namespace.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::TestDaemon;
use common::tls::{DEFAULT_ADDR, add_remote, client_config, create_token, remote_cli};

fn fingerprint(d: &TestDaemon) -> String {
    let info = d.daemon_info();
    info["tls_fingerprint"]
        .as_str()
        .unwrap_or_else(|| panic!("no fingerprint in {info}"))
        .to_owned()
}

#[test]
fn remote_add_shows_the_fingerprint_and_pins_it_only_once_trusted() {
    let d = TestDaemon::start();
    let fp = fingerprint(&d);
    assert_eq!(fp.len(), 64, "{fp}");
    assert!(
        d.ok(&["info"]).contains(&fp),
        "mayfly info prints the fingerprint"
    );
    let secret = create_token(&d, "ops");
    let url = format!("https://{DEFAULT_ADDR}");
    let remotes = client_config(&d).join("mayfly/remotes.json");

    // Not a terminal and no flag: refused, with the fingerprint and what to do.
    let out = remote_cli(
        &d,
        &["remote", "add", "lab", &url, "--token", &secret],
        None,
    );
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains(&fp), "{out}");
    assert!(out.stderr.contains("--accept-certificate"), "{out}");
    assert!(!remotes.exists(), "nothing saved");
    // A wrong expected fingerprint: refused with both.
    let wrong = "00".repeat(32);
    let out = remote_cli(
        &d,
        &[
            "remote",
            "add",
            "lab",
            &url,
            "--token",
            &secret,
            "--fingerprint",
            &wrong,
        ],
        None,
    );
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains(&wrong) && out.stderr.contains(&fp),
        "{out}"
    );
    assert!(!remotes.exists());
    // A wrong token: refused before anything is saved.
    let out = remote_cli(
        &d,
        &[
            "remote",
            "add",
            "lab",
            &url,
            "--token",
            "mayfly_wrong",
            "--accept-certificate",
        ],
        None,
    );
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("refused the token"), "{out}");
    assert!(!remotes.exists());
    // Plain http and junk URLs: refused with the form to use.
    let out = remote_cli(&d, &["remote", "add", "lab", "http://127.0.0.1:8443"], None);
    assert!(out.stderr.contains("only speaks TLS"), "{out}");
    let out = remote_cli(&d, &["remote", "add", "Lab!", &url], None);
    assert!(out.stderr.contains("invalid remote name"), "{out}");

    // The expected fingerprint (as openssl prints it: upper case with colons): added.
    let colons: Vec<String> = fp
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).to_uppercase())
        .collect();
    let out = remote_cli(
        &d,
        &[
            "remote",
            "add",
            "lab",
            &url,
            "--token",
            &secret,
            "--fingerprint",
            &colons.join(":"),
        ],
        None,
    );
    assert!(out.success(), "{out}");
    let mode = std::fs::metadata(&remotes).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the remotes file holds tokens");
    let list = remote_cli(&d, &["remote", "list", "--json"], None);
    assert!(list.success(), "{list}");
    assert!(
        list.stdout.contains(&fp) && !list.stdout.contains(&secret),
        "{list}"
    );
    let out = remote_cli(
        &d,
        &["remote", "add", "lab", &url, "--accept-certificate"],
        None,
    );
    assert!(out.stderr.contains("exists already"), "{out}");

    let out = remote_cli(&d, &["--remote", "lab", "info", "--json"], None);
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains(&fp), "{out}");
    // An unknown remote says how to add it.
    let out = remote_cli(&d, &["--remote", "nowhere", "list"], None);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("mayfly remote add nowhere"), "{out}");

    let out = remote_cli(&d, &["remote", "rm", "lab"], None);
    assert!(out.success(), "{out}");
    let out = remote_cli(&d, &["--remote", "lab", "list"], None);
    assert!(out.stderr.contains("not configured"), "{out}");
    d.finish();
}

#[test]
fn commands_and_exec_run_on_the_remote_and_a_revoked_token_stops_them() {
    let d = TestDaemon::start();
    add_remote(&d, "lab");
    common::launch(&d, "rx-box", &[], None);

    let out = remote_cli(&d, &["--remote", "lab", "list"], None);
    assert!(out.success() && out.stdout.contains("rx-box"), "{out}");
    // REMOTE:NAME
    let out = remote_cli(&d, &["info", "lab:rx-box", "--json"], None);
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains("\"rx-box\""), "{out}");
    // exec through the upgrade, over TLS: codes, both streams, stdin.
    let out = remote_cli(
        &d,
        &[
            "--remote",
            "lab",
            "exec",
            "rx-box",
            "--",
            "sh",
            "-c",
            "cat; echo err >&2; exit 5",
        ],
        Some(b"over the wire\n"),
    );
    assert_eq!(out.code, 5, "{out}");
    assert_eq!(out.stdout, "over the wire\n", "{out}");
    assert_eq!(out.stderr, "err\n", "{out}");
    // run: a new instance attached through the upgrade, its exit code ours.
    let out = remote_cli(
        &d,
        &[
            "--remote",
            "lab",
            "run",
            "busybox",
            "--",
            "sh",
            "-c",
            "echo ran; exit 3",
        ],
        None,
    );
    assert_eq!(out.code, 3, "{out}");
    assert_eq!(out.stdout, "ran\n", "{out}");
    // A remote launch and removal.
    let out = remote_cli(
        &d,
        &["--remote", "lab", "launch", "busybox", "--name", "rx-two"],
        None,
    );
    assert!(out.success(), "{out}");
    assert_eq!(d.state_of("rx-two").as_deref(), Some("running"));
    let out = remote_cli(&d, &["--remote", "lab", "rm", "-f", "rx-two"], None);
    assert!(out.success(), "{out}");
    assert!(d.state_of("rx-two").is_none());

    // Revoked on the daemon's host: the remote's commands are refused at once.
    d.ok(&["token", "revoke", "lab"]);
    let out = remote_cli(&d, &["--remote", "lab", "list"], None);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("not valid"), "{out}");
    d.finish();
}

#[test]
fn a_changed_certificate_is_refused_with_both_fingerprints() {
    let mut d = TestDaemon::start();
    add_remote(&d, "lab");
    let old = fingerprint(&d);
    // The daemon gets a new certificate (as if it were another machine at that address).
    d.stop_daemon();
    std::fs::remove_dir_all(d.state.join("tls")).unwrap();
    d.restart();
    let new = fingerprint(&d);
    assert_ne!(old, new);

    let out = remote_cli(&d, &["--remote", "lab", "list"], None);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains(&old) && out.stderr.contains(&new),
        "{out}"
    );
    assert!(out.stderr.contains("mayfly remote rm lab"), "{out}");
    let out = remote_cli(&d, &["info", "lab:anything"], None);
    assert!(out.stderr.contains("not the one trusted"), "{out}");
    d.finish();
}

#[test]
fn remote_add_asks_on_a_terminal() {
    let d = TestDaemon::start();
    let fp = fingerprint(&d);
    let secret = create_token(&d, "tty");
    let url = format!("https://{DEFAULT_ADDR}");
    // `script` gives the CLI a terminal; what the test writes is the user's answer.
    let on_terminal = |answer: &[u8]| {
        let line = format!("{} remote add lab {url} --token {secret}", common::bin());
        let mut cmd = std::process::Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", d.netns()))
            .args(["--", "script", "-qec", &line, "/dev/null"])
            .env("XDG_CONFIG_HOME", client_config(&d))
            .env_remove("MAYFLY_TOKEN")
            .env_remove("MAYFLY_REMOTE");
        common::run_command(cmd, Some(answer), common::CLI_TIMEOUT)
    };
    let out = on_terminal(b"n\n");
    assert_ne!(out.code, 0, "{out}");
    assert!(
        out.stdout.contains(&fp) && out.stdout.contains("[y/N]"),
        "{out}"
    );
    assert!(out.stdout.contains("not added"), "{out}");
    assert!(
        remote_cli(&d, &["--remote", "lab", "list"], None)
            .stderr
            .contains("not configured")
    );
    let out = on_terminal(b"y\n");
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains("added remote lab"), "{out}");
    assert!(remote_cli(&d, &["--remote", "lab", "list"], None).success());
    d.finish();
}

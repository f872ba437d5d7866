//! Every `--help` (of `mayfly`, each command and each nested command) exits 0 and shows
//! examples. The command tree is read from the help texts themselves, so a new command
//! without examples fails here.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{bin, run_command};

/// The subcommand names listed under `Commands:` in a help text (without `help`).
fn subcommands(help: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in help.lines() {
        if line.starts_with("Commands:") {
            inside = true;
            continue;
        }
        if !inside {
            continue;
        }
        if line.trim().is_empty() || !line.starts_with(' ') {
            break;
        }
        // Command lines are indented by two spaces; wrapped descriptions by more.
        if line.starts_with("  ")
            && !line.starts_with("   ")
            && let Some(name) = line.split_whitespace().next()
            && name != "help"
        {
            out.push(name.to_owned());
        }
    }
    out
}

fn help_of(path: &[String]) -> String {
    let mut cmd = Command::new(bin());
    cmd.args(path).arg("--help");
    let out = run_command(cmd, None, Duration::from_secs(10));
    assert_eq!(
        out.code,
        0,
        "`mayfly {} --help` failed: {out}",
        path.join(" ")
    );
    assert!(
        out.stdout.contains("Examples"),
        "`mayfly {} --help` shows no examples:\n{}",
        path.join(" "),
        out.stdout
    );
    out.stdout
}

#[test]
fn every_help_exits_zero_and_shows_examples() {
    let mut queue: Vec<Vec<String>> = vec![Vec::new()];
    let mut seen = 0;
    while let Some(path) = queue.pop() {
        let help = help_of(&path);
        seen += 1;
        for sub in subcommands(&help) {
            let mut p = path.clone();
            p.push(sub);
            queue.push(p);
        }
    }
    // mayfly + 17 commands + the template and snapshot subcommands at least.
    assert!(seen >= 25, "only {seen} help texts found");
}

#[test]
fn the_commands_of_the_brief_are_all_there() {
    let top = subcommands(&help_of(&[]));
    for c in [
        "daemon", "info", "template", "launch", "run", "list", "start", "stop", "restart", "reset",
        "rm", "exec", "logs",
    ] {
        assert!(top.iter().any(|t| t == c), "no `{c}` in {top:?}");
    }
    let template = subcommands(&help_of(&["template".to_owned()]));
    for c in ["import", "list", "info", "rm"] {
        assert!(
            template.iter().any(|t| t == c),
            "no `template {c}` in {template:?}"
        );
    }
}

#[test]
fn bad_usage_exits_two() {
    let mut cmd = Command::new(bin());
    cmd.arg("launch");
    let out = run_command(cmd, None, Duration::from_secs(10));
    assert_eq!(out.code, 2, "{out}");
    let mut cmd = Command::new(bin());
    cmd.args(["no-such-command"]);
    let out = run_command(cmd, None, Duration::from_secs(10));
    assert_eq!(out.code, 2, "{out}");
}

#[test]
fn an_unreachable_daemon_exits_three_with_a_hint() {
    let mut cmd = Command::new(bin());
    cmd.args(["--socket", "/tmp/mayfly-test-no-such.sock", "list"]);
    let out = run_command(cmd, None, Duration::from_secs(10));
    assert_eq!(out.code, 3, "{out}");
    assert!(
        out.stderr.contains("cannot reach the mayfly daemon"),
        "{out}"
    );
    assert!(out.stderr.contains("hint"), "{out}");
}

#[test]
fn run_refuses_user_data_from_the_stdin_it_gives_the_command() {
    let mut cmd = Command::new(bin());
    cmd.args([
        "--socket",
        "/tmp/mayfly-test-no-such.sock",
        "run",
        "--user-data",
        "-",
        "busybox",
    ]);
    let out = run_command(cmd, None, Duration::from_secs(10));
    assert_eq!(out.code, 125, "{out}");
    assert!(
        out.stderr.contains("--user-data FILE") && !out.stderr.contains("cannot reach"),
        "refused before the daemon is asked: {out}"
    );
}

/// A secret in the environment never shows in a help text (`[env: MAYFLY_TOKEN=…]`).
#[test]
fn help_texts_never_show_a_secret_from_the_environment() {
    let secret = "mayfly_help_must_not_show_this";
    let mut cmd = Command::new(bin());
    cmd.args(["remote", "add", "--help"])
        .env("MAYFLY_TOKEN", secret);
    let out = run_command(cmd, None, Duration::from_secs(10));
    assert!(out.success(), "{}", out.stderr);
    assert!(out.stdout.contains("MAYFLY_TOKEN"), "{}", out.stdout);
    assert!(
        !out.stdout.contains(secret),
        "the token shows: {}",
        out.stdout
    );
}

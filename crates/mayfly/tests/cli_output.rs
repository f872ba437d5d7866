//! What the CLI prints: shell completions and manual pages generated from its definition,
//! `--json` on the commands that act, `--quiet`, and tables fitted to the terminal.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{TestDaemon, bin, run_command};
use serde_json::Value;

fn mayfly(args: &[&str]) -> common::Output {
    let mut cmd = Command::new(bin());
    cmd.args(args);
    let out = run_command(cmd, None, Duration::from_secs(30));
    assert!(out.success(), "mayfly {args:?}: {out}");
    out
}

/// The visible subcommand names of `mayfly --help`.
fn top_commands() -> Vec<String> {
    let help = mayfly(&["--help"]).stdout;
    let mut out = Vec::new();
    let mut inside = false;
    for line in help.lines() {
        if line.starts_with("Commands:") {
            inside = true;
            continue;
        }
        if inside && (line.trim().is_empty() || !line.starts_with("  ")) {
            break;
        }
        if inside
            && !line.starts_with("   ")
            && let Some(name) = line.split_whitespace().next()
            && name != "help"
        {
            out.push(name.to_owned());
        }
    }
    assert!(out.len() > 20, "subcommands of --help: {out:?}");
    out
}

/// Asks bash's completion of `line` (the completion script loaded from `script`).
fn bash_complete(script: &std::path::Path, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        "source '{}' || exit 9\n\
         complete -p mayfly >/dev/null || exit 8\n\
         COMP_WORDS=({})\n\
         COMP_CWORD={}\n\
         COMP_LINE=\"${{COMP_WORDS[*]}}\"\n\
         COMP_POINT=${{#COMP_LINE}}\n\
         _mayfly mayfly \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        quoted.join(" "),
        words.len() - 1
    );
    let mut cmd = Command::new("bash");
    cmd.arg("--norc").arg("-c").arg(program);
    let out = run_command(cmd, None, Duration::from_secs(30));
    assert!(out.success(), "bash completion: {out}");
    out.stdout.lines().map(str::to_owned).collect()
}

#[test]
fn completion_scripts_load_and_complete_commands_and_options() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let script = dir.path().join("mayfly.bash");
    std::fs::write(&script, mayfly(&["completion", "bash"]).stdout).expect("write the script");

    let got = bash_complete(&script, &["mayfly", "sna"]);
    assert_eq!(got, ["snapshot"], "`mayfly sna<TAB>`");
    let got = bash_complete(&script, &["mayfly", "snapshot", "re"]);
    assert!(got.contains(&"restore".to_owned()), "{got:?}");
    let got = bash_complete(&script, &["mayfly", "stop", "--ti"]);
    assert_eq!(got, ["--timeout"], "`mayfly stop --ti<TAB>`");
    // Every command of --help completes.
    let all = bash_complete(&script, &["mayfly", ""]);
    for c in top_commands() {
        assert!(all.contains(&c), "{c} in {all:?}");
    }

    for (shell, marker) in [
        ("zsh", "#compdef mayfly"),
        ("fish", "complete -c mayfly"),
        ("elvish", "mayfly"),
        ("powershell", "mayfly"),
    ] {
        let out = mayfly(&["completion", shell]).stdout;
        assert!(out.contains(marker) && out.contains("snapshot"), "{shell}");
    }
    let mut cmd = Command::new(bin());
    cmd.args(["completion", "tcsh"]);
    let out = run_command(cmd, None, Duration::from_secs(30));
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr.contains("bash") && out.stderr.contains("zsh"),
        "{out}"
    );
}

#[test]
fn the_manual_page_renders_and_names_every_command() {
    let page = mayfly(&["man"]).stdout;
    assert!(page.contains(".TH mayfly 1"), "{page}");
    let commands = top_commands();
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("mayfly.1");
    std::fs::write(&file, &page).expect("write the page");
    let has_man = Command::new("man").arg("--version").output().is_ok();
    let text = if has_man {
        let mut cmd = Command::new("man");
        cmd.arg("-l")
            .arg(&file)
            .env("MANWIDTH", "100")
            .env("MANPAGER", "cat");
        let out = run_command(cmd, None, Duration::from_secs(30));
        assert!(out.success(), "man -l: {out}");
        assert!(out.stdout.contains("SUBCOMMANDS"), "{}", out.stdout);
        out.stdout
    } else {
        eprintln!("no man(1) here: checking the roff source only");
        page
    };
    // Rendered, a subcommand reads `mayfly-launch(1)`; in roff, `mayfly\-launch(1)`.
    let text = text.replace("\\-", "-");
    for c in &commands {
        assert!(
            text.contains(&format!("mayfly-{c}(1)")),
            "{c} in the manual page:\n{text}"
        );
    }

    // --dir: one page per command, nested ones included.
    let pages = dir.path().join("man1");
    mayfly(&["man", "--dir", pages.to_str().unwrap_or_default()]);
    for c in &commands {
        assert!(pages.join(format!("mayfly-{c}.1")).exists(), "mayfly-{c}.1");
    }
    assert!(pages.join("mayfly.1").exists());
    assert!(pages.join("mayfly-snapshot-create.1").exists());
    let launch = std::fs::read_to_string(pages.join("mayfly-launch.1")).unwrap_or_default();
    assert!(
        launch.contains("\\-\\-persistent") || launch.contains("--persistent"),
        "{launch}"
    );
    assert!(
        !pages.join("mayfly-forker.1").exists(),
        "hidden commands get no page"
    );
}

/// `man --dir` writes its pages into the directory only: a page's name that is a symbolic
/// link there (planted in a shared directory) is refused, its target left alone.
#[test]
fn man_pages_never_follow_a_symbolic_link_out_of_the_directory() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious\n").expect("write the victim");
    let pages = dir.path().join("man1");
    std::fs::create_dir(&pages).expect("create the directory");
    std::os::unix::fs::symlink(&victim, pages.join("mayfly-launch.1")).expect("plant the link");
    let mut cmd = Command::new(bin());
    cmd.args(["man", "--dir"]).arg(&pages);
    let out = run_command(cmd, None, Duration::from_secs(30));
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("mayfly-launch.1") && out.stderr.contains("hint:"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap_or_default(),
        "precious\n",
        "the link's target is untouched"
    );
    // Pages already there (an earlier run's) are replaced.
    std::fs::remove_file(pages.join("mayfly-launch.1")).expect("remove the link");
    std::fs::write(pages.join("mayfly.1"), "old").expect("write an old page");
    mayfly(&["man", "--dir", pages.to_str().unwrap_or_default()]);
    let page = std::fs::read_to_string(pages.join("mayfly.1")).unwrap_or_default();
    assert!(page.contains(".TH mayfly 1"), "{page}");
    assert!(pages.join("mayfly-launch.1").is_file());
}

fn json(out: &common::Output) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[test]
fn json_and_quiet_on_the_commands_that_act() {
    let d = TestDaemon::start();
    // launch -q prints the new instance's name, and only that.
    let name = d.ok(&["-q", "launch", "busybox"]);
    let name = name.trim();
    assert!(!name.is_empty() && !name.contains(' '), "{name:?}");
    d.ok(&["launch", "busybox", "--name", "web"]);

    // list -q: names only.
    let listed = d.ok(&["-q", "list"]);
    let mut names: Vec<&str> = listed.lines().collect();
    names.sort_unstable();
    let mut want = vec![name, "web"];
    want.sort_unstable();
    assert_eq!(names, want, "{listed}");

    let out = d.mayfly(&["stop", "web", name, "--json"]);
    assert!(out.success(), "{out}");
    let stopped = json(&out);
    assert_eq!(stopped.as_array().map(Vec::len), Some(2), "{stopped}");
    assert_eq!(stopped[0]["name"], "web");
    assert_eq!(stopped[0]["state"], "stopped", "{stopped}");

    // One failure among several: the others are answered, the failure is on stderr, exit 1.
    let out = d.mayfly(&["start", "--json", "web", "nosuch"]);
    assert_eq!(out.code, 1, "{out}");
    let started = json(&out);
    assert_eq!(started.as_array().map(Vec::len), Some(1), "{started}");
    assert_eq!(started[0]["state"], "running", "{started}");
    assert!(out.stderr.contains("nosuch"), "{out}");

    // --quiet: no confirmation; errors still reported.
    assert_eq!(d.ok(&["restart", "-q", "web"]), "");
    assert_eq!(d.ok(&["pause", "web", "--quiet"]), "");
    let resumed = json(&d.mayfly(&["resume", "web", "--json"]));
    assert_eq!(resumed[0]["state"], "running", "{resumed}");
    let out = d.mayfly(&["-q", "start", "nosuch"]);
    assert_eq!(out.code, 1, "{out}");
    assert_eq!(out.stdout, "");
    assert!(out.stderr.contains("nosuch"), "{out}");

    d.ok(&["snapshot", "create", "web", "s1"]);
    let removed = json(&d.mayfly(&["snapshot", "rm", "web", "s1", "--json"]));
    assert_eq!(removed["removed"], true, "{removed}");
    d.ok(&["volume", "create", "data", "-q"]);
    let removed = json(&d.mayfly(&["volume", "rm", "data", "--json"]));
    assert_eq!(
        removed,
        serde_json::json!([{"name": "data", "removed": true}])
    );

    let removed = json(&d.mayfly(&["rm", "--force", "--json", "web", name]));
    assert_eq!(
        removed,
        serde_json::json!([{"name": "web", "removed": true}, {"name": name, "removed": true}])
    );
    assert_eq!(d.ok(&["list", "-q"]), "");
    d.finish();
}

/// Runs `mayfly ARGS` on a pseudo-terminal `cols` wide (script(1)), against `d`.
fn on_terminal(d: &TestDaemon, cols: u16, args: &str) -> String {
    let mut cmd = Command::new("script");
    cmd.arg("-qec")
        .arg(format!("stty cols {cols} rows 50; {} {args}", bin()))
        .arg("/dev/null")
        .env("MAYFLY_SOCKET", &d.socket);
    let out = run_command(cmd, None, Duration::from_secs(30));
    assert!(out.success(), "{out}");
    out.stdout.replace('\r', "")
}

#[test]
fn tables_fit_the_terminal_and_are_whole_in_a_pipe() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("no script(1): cannot give the CLI a terminal");
        return;
    }
    let d = TestDaemon::start();
    let long = "an-instance-with-a-name-much-longer-than-usual";
    d.ok(&["launch", "busybox", "--name", long]);

    let piped = d.ok(&["list"]);
    assert!(piped.contains(long), "{piped}");
    assert!(piped.lines().any(|l| l.chars().count() > 60), "{piped}");

    let narrow = on_terminal(&d, 60, "list");
    let lines: Vec<&str> = narrow.lines().filter(|l| !l.is_empty()).collect();
    assert!(lines.len() >= 2, "{narrow}");
    for l in &lines {
        assert!(l.chars().count() <= 60, "{l:?} wider than 60:\n{narrow}");
    }
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("CREATED"),
        "{narrow}"
    );
    assert!(narrow.contains('…') && !narrow.contains(long), "{narrow}");
    assert!(narrow.contains("running"), "{narrow}");

    let wide = on_terminal(&d, 250, "list");
    assert!(wide.contains(long) && !wide.contains('…'), "{wide}");
    d.ok(&["rm", "--force", long]);
    d.finish();
}

//! `mayfly run`: attached one-shot runs — output streamed and separated, exit codes passed
//! through, stdin piped, a terminal with `-t`, and what is left afterwards (`--rm`: nothing).

mod common;

use std::time::Duration;

use common::{TestDaemon, wait_until};

#[test]
fn run_rm_streams_stdout_and_stderr_separately() {
    let d = TestDaemon::start();
    let out = d.mayfly(&[
        "run",
        "--rm",
        "busybox",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2",
    ]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.stdout, "out\n", "{out}");
    assert_eq!(out.stderr, "err\n", "{out}");
    d.finish();
}

#[test]
fn run_rm_passes_exit_codes_through() {
    let d = TestDaemon::start();
    let code = |args: &[&str]| {
        let mut all = vec!["run", "--rm", "busybox", "--"];
        all.extend_from_slice(args);
        d.mayfly(&all)
    };
    assert_eq!(code(&["true"]).code, 0);
    let three = code(&["sh", "-c", "exit 3"]);
    assert_eq!(three.code, 3, "{three}");

    let missing = code(&["no-such-program"]);
    assert_eq!(missing.code, 127, "{missing}");
    assert!(missing.stderr.contains("no-such-program"), "{missing}");

    let not_exec = code(&["/etc/passwd"]);
    assert_eq!(not_exec.code, 126, "{not_exec}");
    assert!(not_exec.stderr.contains("/etc/passwd"), "{not_exec}");

    // Nothing of any of these runs is left.
    assert!(d.instance_names().is_empty(), "{:?}", d.instance_names());
    d.wait_instance_dirs(0);
    d.finish();
}

#[test]
fn run_rm_pipes_stdin() {
    let d = TestDaemon::start();
    let out = d.mayfly_stdin(&["run", "--rm", "busybox", "--", "cat"], b"hi\n");
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.stdout, "hi\n", "{out}");
    // A larger input arrives whole, and the program sees its end.
    let big: Vec<u8> = (0..200_000u32)
        .flat_map(|i| format!("{i}\n").into_bytes())
        .collect();
    let out = d.mayfly_stdin(&["run", "--rm", "busybox", "--", "wc", "-c"], &big);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.stdout.trim(), big.len().to_string(), "{out}");
    d.finish();
}

#[test]
fn run_rm_delivers_large_output_whole_and_in_order() {
    let d = TestDaemon::start();
    let out = d.mayfly(&[
        "run",
        "--rm",
        "busybox",
        "--",
        "sh",
        "-c",
        "i=0; while [ $i -lt 20000 ]; do echo line-$i; i=$((i+1)); done; echo done >&2",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 20000, "lost output: {} lines", lines.len());
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(*l, format!("line-{i}"));
    }
    assert_eq!(out.stderr, "done\n");
    d.finish();
}

#[test]
fn run_rm_leaves_nothing_behind() {
    let d = TestDaemon::start();
    let out = d.mayfly(&[
        "run",
        "--rm",
        "busybox",
        "--",
        "sh",
        "-c",
        "echo data > /root/file; dd if=/dev/zero of=/root/big bs=1024 count=512 2>/dev/null",
    ]);
    assert_eq!(out.code, 0, "{out}");
    assert!(d.instance_names().is_empty(), "{:?}", d.instance_names());
    assert_eq!(d.daemon_info()["instances"], 0);
    d.wait_instance_dirs(0);
    d.finish();
}

#[test]
fn run_without_rm_leaves_a_stopped_transient_instance() {
    let d = TestDaemon::start();
    let out = d.mayfly(&[
        "run",
        "--name",
        "kept",
        "busybox",
        "--",
        "sh",
        "-c",
        "test -e /root/file && exit 5; echo x > /root/file; exit 4",
    ]);
    assert_eq!(out.code, 4, "{out}");
    let info = d.info("kept");
    assert_eq!(info["state"], "stopped", "{info}");
    assert_eq!(info["mode"], "transient", "{info}");
    assert_eq!(info["last_exit"]["code"], 4, "{info}");
    assert_eq!(d.instance_names(), vec!["kept".to_owned()]);
    // Its writable layer was discarded with the run: started again (detached), the same
    // command finds no /root/file and exits 4 again, not 5.
    d.ok(&["start", "kept"]);
    wait_until(Duration::from_secs(10), "the second run to end", || {
        d.state_of("kept").as_deref() == Some("stopped")
    });
    let info = d.info("kept");
    assert_eq!(
        info["last_exit"]["code"], 4,
        "the second run saw the first one's file: {info}"
    );
    d.finish();
}

#[test]
fn run_t_gives_the_program_a_terminal() {
    let d = TestDaemon::start();
    let with = d.mayfly(&[
        "run",
        "--rm",
        "-t",
        "busybox",
        "--",
        "sh",
        "-c",
        "test -t 0",
    ]);
    assert_eq!(with.code, 0, "with -t stdin is a terminal: {with}");
    let without = d.mayfly(&["run", "--rm", "busybox", "--", "sh", "-c", "test -t 0"]);
    assert_eq!(
        without.code, 1,
        "without -t stdin is no terminal: {without}"
    );
    // The terminal carries the output too.
    let out = d.mayfly(&[
        "run",
        "--rm",
        "-t",
        "busybox",
        "--",
        "sh",
        "-c",
        "tty; echo on-tty",
    ]);
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("on-tty"), "{out}");
    assert!(out.stdout.contains("/dev/"), "{out}");
    assert!(d.instance_names().is_empty());
    d.wait_instance_dirs(0);
    d.finish();
}

#[test]
fn run_of_an_unknown_template_fails_cleanly() {
    let d = TestDaemon::start();
    let out = d.mayfly(&["run", "--rm", "no-such-template", "--", "true"]);
    assert_eq!(out.code, 125, "mayfly itself failed: {out}");
    assert!(out.stderr.contains("does not exist"), "{out}");
    assert!(d.instance_names().is_empty());
    d.wait_instance_dirs(0);
    d.finish();
}

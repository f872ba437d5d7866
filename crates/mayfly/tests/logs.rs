//! Console logs: `mayfly logs` shows an instance's init output and follows it, and the log
//! stays bounded by `--log-max-size`.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{SETTLE, TestDaemon, launch, line_reader, logs, poll_until, wait_log};

// ---- logs ------------------------------------------------------------------------------------

#[test]
fn logs_show_the_init_output_and_follow_it() {
    let d = TestDaemon::start();
    launch(
        &d,
        "lg-box",
        &[],
        Some(
            "echo first-line; echo on-stderr >&2; \
             while :; do [ -e /tmp/say ] && { cat /tmp/say; rm /tmp/say; }; sleep 0.05; done",
        ),
    );
    wait_log(&d, "lg-box", "on-stderr");
    let all = logs(&d, "lg-box");
    assert_eq!(all, "first-line\non-stderr\n", "{all:?}");
    assert_eq!(d.ok(&["logs", "--tail", "1", "lg-box"]), "on-stderr\n");

    // Follow: the head arrives, then what the init prints later.
    let mut child = d
        .command(&["logs", "-f", "lg-box"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn logs -f");
    let rx = line_reader(child.stdout.take().expect("stdout"));
    let mut seen = Vec::new();
    let mut wait_line = |want: &str| -> bool {
        poll_until(SETTLE, || {
            while let Ok(l) = rx.try_recv() {
                seen.push(l);
            }
            seen.iter().any(|l| l == want)
        })
    };
    let head = wait_line("first-line");
    // The init prints what it finds in /tmp/say.
    d.sh("lg-box", "echo printed-later > /tmp/x; mv /tmp/x /tmp/say");
    let later = wait_line("printed-later");
    let still_running = matches!(child.try_wait(), Ok(None));
    let _ = child.kill();
    let _ = child.wait();
    assert!(head, "logs -f did not print the head: {seen:?}");
    assert!(later, "logs -f did not follow: {seen:?}");
    assert!(still_running, "logs -f ended by itself");
    assert!(logs(&d, "lg-box").ends_with("printed-later\n"));

    // A stopped instance's log is still there.
    d.ok(&["stop", "lg-box"]);
    assert!(logs(&d, "lg-box").contains("first-line"));

    // A follower ends when its instance is removed.
    let mut child = d
        .command(&["logs", "-f", "lg-box"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn logs -f");
    let following = !poll_until(Duration::from_millis(300), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    d.ok(&["rm", "lg-box"]);
    let ended = poll_until(SETTLE, || matches!(child.try_wait(), Ok(Some(_))));
    if !ended {
        let _ = child.kill();
    }
    let _ = child.wait();
    assert!(following, "logs -f of a stopped instance ended at once");
    assert!(ended, "logs -f went on after its instance was removed");
    d.finish();
}

#[test]
fn logs_stay_bounded_by_log_max_size() {
    const MAX: u64 = 4096;
    let d = TestDaemon::start_with(&["--log-max-size", "4096"]);
    // About 120 kB of lines, then one 10 kB burst (a single write, like a dumped stack
    // trace), then a last line; then it idles.
    launch(
        &d,
        "lb-chatty",
        &[],
        Some(
            "i=0; while [ $i -lt 10000 ]; do echo line-$i; i=$((i+1)); done; \
             s=0123456789; for k in 1 2 3 4 5 6 7 8 9 10; do s=$s$s; done; echo \"burst-$s\"; \
             echo last-line; while :; do sleep 1; done",
        ),
    );
    wait_log(&d, "lb-chatty", "last-line");
    let id = d.info("lb-chatty")["id"].as_str().expect("id").to_owned();
    let dir = d.state.join("instances").join(&id);
    let mut total = 0;
    let mut files = Vec::new();
    for e in std::fs::read_dir(&dir).expect("the instance dir").flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("console.log") {
            let len = e.metadata().expect("stat").len();
            files.push((name, len));
            total += len;
        }
    }
    files.sort();
    assert!(
        files.iter().any(|(n, _)| n == "console.log"),
        "no console.log in {}: {files:?}",
        dir.display()
    );
    assert!(files.len() <= 2, "one previous file at most: {files:?}");
    for (name, len) in &files {
        assert!(
            *len <= MAX,
            "{name} is {len} bytes, over the {MAX} limit: {files:?}"
        );
    }
    assert!(total <= 2 * MAX, "{total} bytes of log: {files:?}");

    // `logs` shows the latest lines, not the first.
    let shown = logs(&d, "lb-chatty");
    assert!(
        shown.ends_with("\nlast-line\n"),
        "{:?}",
        &shown[shown.len().saturating_sub(200)..]
    );
    assert!(!shown.contains("line-0\n"), "the oldest output was kept");
    assert!(shown.len() as u64 <= 2 * MAX, "{} bytes shown", shown.len());
    d.finish();
}

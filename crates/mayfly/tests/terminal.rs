//! `exec -t`: the process gets a terminal of the instance's own devpts, one that has a name
//! inside the instance (what `tty`, `ssh`, `screen` and `sudo` look up) and belongs to the
//! instance's root.

mod common;

use common::TestDaemon;

#[test]
fn exec_t_gets_a_terminal_named_inside_the_instance() {
    let d = TestDaemon::start();
    d.ok(&["launch", "--name", "term", "busybox"]);

    // `tty` names the terminal, and that name is the very terminal on stdin.
    let out = d.mayfly(&[
        "exec",
        "-t",
        "term",
        "--",
        "sh",
        "-c",
        "t=$(tty) && echo \"name=$t\" && [ \"$(stat -L -c %t:%T \"$t\")\" = \"$(stat -L -c %t:%T /proc/self/fd/0)\" ] && echo same",
    ]);
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("name=/dev/pts/"), "{out}");
    assert!(out.stdout.contains("same"), "{out}");

    // It is owned by the instance's root (not an unmapped host user), and a second session
    // gets a terminal of its own.
    let owner = d.mayfly(&[
        "exec",
        "-t",
        "term",
        "--",
        "sh",
        "-c",
        "stat -c 'owner=%u' $(tty); echo 'x' > $(tty) && echo reopened",
    ]);
    assert_eq!(owner.code, 0, "{owner}");
    assert!(owner.stdout.contains("owner=0"), "{owner}");
    assert!(owner.stdout.contains("reopened"), "{owner}");

    // Without -t there is no terminal at all.
    let without = d.mayfly(&["exec", "term", "--", "tty"]);
    assert_ne!(without.code, 0, "{without}");
    assert!(without.stdout.contains("not a tty"), "{without}");

    // The terminals are gone with their sessions.
    let left = d.ok(&["exec", "term", "--", "ls", "/dev/pts"]);
    assert_eq!(
        left.split_whitespace().collect::<Vec<_>>(),
        ["ptmx"],
        "{left}"
    );

    d.ok(&["rm", "-f", "term"]);
    d.finish();
}

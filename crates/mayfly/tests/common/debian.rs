//! Tests that build Debian templates: the download cache they share (debootstrap's and apt's,
//! kept between runs so that packages are downloaded once per machine), the lock that
//! serialises them, and CLI calls with the longer timeouts that builds need.

use super::*;

/// Download cache shared by the Debian builds of every run (debootstrap's and apt's).
pub const DEBIAN_CACHE: &str = "/var/tmp/mayfly-tests-debian-cache";

/// Serialises the tests (of any run on this machine) that use [`DEBIAN_CACHE`].
pub const DEBIAN_LOCK: &str = "/var/tmp/mayfly-tests-debian-cache.lock";

/// How long a debootstrap may take (a minbase build takes ~25 s, more with a cold cache).
pub const DEBOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a package install in a build container may take.
pub const APT_TIMEOUT: Duration = Duration::from_secs(90);

/// Runs the CLI with a longer timeout than the harness's default.
pub fn long(d: &TestDaemon, args: &[&str], timeout: Duration) -> Output {
    run_command(d.command(args), None, timeout)
}

/// Like [`long`], failing the test unless it exits 0.
pub fn long_ok(d: &TestDaemon, args: &[&str], timeout: Duration) -> Output {
    let out = long(d, args, timeout);
    assert!(out.success(), "`mayfly {}` failed: {out}", args.join(" "));
    out
}

/// Builds `name`, a bookworm minbase template without an init (debootstrap, cached), the
/// base the Debian tests stack their packages on.
pub fn build_minbase(d: &TestDaemon, name: &str) -> Output {
    long_ok(
        d,
        &[
            "template",
            "build",
            name,
            "--debian",
            "bookworm",
            "--variant",
            "minbase",
            "--no-init",
        ],
        DEBOOTSTRAP_TIMEOUT,
    )
}

/// An exclusive lock on a file, released when dropped.
#[derive(Debug)]
pub struct FileLock(#[allow(dead_code)] std::fs::File);

/// Waits for an exclusive lock on `path`.
pub fn lock_file(path: &str) -> FileLock {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {path}: {e}"));
    rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
        .unwrap_or_else(|e| panic!("lock {path}: {e}"));
    FileLock(f)
}

/// Takes the Debian cache's lock and starts a daemon that uses the cache, in the machine's own
/// network namespace: its builds download packages through NAT.
pub fn debian_daemon() -> (FileLock, TestDaemon) {
    let lock = lock_file(DEBIAN_LOCK);
    std::fs::create_dir_all(DEBIAN_CACHE).expect("create the download cache");
    (
        lock,
        TestDaemon::start_in_host_netns(&["--cache-dir", DEBIAN_CACHE]),
    )
}

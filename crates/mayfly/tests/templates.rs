//! The template life cycle through the CLI: OS templates built with debootstrap (download
//! cache, recorded package list), application templates (own layer only, shared base, stacked
//! with a merged package database, conflicts refused unless ordered), patches (followers move
//! at their next start, pinned instances stay, persistent followers' shadowed paths reported),
//! history, rollback (rollouts are in `rollout.rs`), storage
//! (dedup by digest, one layer per patch whatever the number of followers, gc that never
//! removes a layer in use, squashing of deep stacks with identical content) and bad input
//! that leaves nothing half-created.
//!
//! Everything that does not need dpkg uses the built-in busybox template; one test builds a
//! real Debian minbase (twice, to prove the download cache) and stacks applications on it.

mod common;
mod view;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::time::Duration;

use common::{
    Output, TestDaemon, digests, layer_dir_name, layer_dirs, run_command, template_info, version,
    wait_until,
};
use serde_json::Value;

/// Download cache shared by the Debian builds of every run (debootstrap's and apt's).
const DEBIAN_CACHE: &str = "/var/tmp/mayfly-tests-debian-cache";

/// Serialises the tests (of any run on this machine) that use [`DEBIAN_CACHE`].
const DEBIAN_LOCK: &str = "/var/tmp/mayfly-tests-debian-cache.lock";

/// How long a debootstrap may take (a minbase build takes ~25 s, more with a cold cache).
const DEBOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a package install in a build container may take.
const APT_TIMEOUT: Duration = Duration::from_secs(90);

// ---- helpers -----------------------------------------------------------------------------------

/// Runs the CLI with a longer timeout than the harness's default.
fn long(d: &TestDaemon, args: &[&str], timeout: Duration) -> Output {
    run_command(d.command(args), None, timeout)
}

/// Like [`long`], failing the test unless it exits 0.
fn long_ok(d: &TestDaemon, args: &[&str], timeout: Duration) -> Output {
    let out = long(d, args, timeout);
    assert!(out.success(), "`mayfly {}` failed: {out}", args.join(" "));
    out
}

/// Whether template `name` exists.
fn template_exists(d: &TestDaemon, name: &str) -> bool {
    let all = d.json(&["template", "list", "--json"]);
    all.as_array()
        .expect("template list --json is an array")
        .iter()
        .any(|t| t["name"] == name)
}

/// The current version number of a template.
fn current(d: &TestDaemon, name: &str) -> u64 {
    template_info(d, name)["current_version"]
        .as_u64()
        .expect("current_version")
}

/// The top layer of a version.
fn top_layer(v: &Value) -> Value {
    v["layers"]
        .as_array()
        .and_then(|l| l.last())
        .cloned()
        .unwrap_or_else(|| panic!("a version without layers: {v}"))
}

/// The template version instance `name` runs now.
fn running_version(d: &TestDaemon, name: &str) -> Option<u64> {
    d.info(name)["running_version"].as_u64()
}

/// Strings of a JSON array.
fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Writes `files` (relative path → content) under `dir`.
fn write_tree(dir: &Path, files: &[(&str, &str)]) {
    for (rel, content) in files {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().expect("a parent")).expect("mkdir");
        std::fs::write(&p, content).expect("write");
    }
    std::fs::create_dir_all(dir).expect("mkdir");
}

/// Waits until `<state>/tmp` is empty (staging trees go to the trash synchronously, but the
/// check must not race a background step).
fn wait_tmp_empty(d: &TestDaemon) {
    wait_until(Duration::from_secs(10), "an empty <state>/tmp", || {
        d.state_entries("tmp").is_empty()
    });
}

/// Total bytes of regular files below `dir`.
fn bytes_below(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(p) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&p) else {
            continue;
        };
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    total
}

/// An exclusive lock on a file, released when dropped.
#[derive(Debug)]
struct FileLock(#[allow(dead_code)] std::fs::File);

fn lock_file(path: &str) -> FileLock {
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

/// The `.deb` files of a cache directory with their size and modification time.
fn debs(dir: &Path) -> BTreeMap<String, (u64, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".deb") {
                continue;
            }
            let m = e.metadata().expect("stat a cached package");
            out.insert(name, (m.len(), m.modified().expect("mtime")));
        }
    }
    out
}

/// Packages that debootstrap's output says it downloaded (`I: Retrieving NAME VERSION`;
/// the archive's index files are fetched at every build and do not count).
fn debootstrap_downloads(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|l| l.trim().strip_prefix("I: Retrieving "))
        .filter(|rest| {
            let what = rest.split_whitespace().next().unwrap_or_default();
            !["InRelease", "Release", "Release.gpg", "Packages"].contains(&what)
        })
        .map(str::to_owned)
        .collect()
}

// ---- OS templates and applications on Debian ---------------------------------------------------

#[test]
fn debian_templates_are_built_with_a_download_cache_and_applications_stack_with_dpkg() {
    let _lock = lock_file(DEBIAN_LOCK);
    std::fs::create_dir_all(DEBIAN_CACHE).expect("create the download cache");
    let d = TestDaemon::start_with(&["--cache-dir", DEBIAN_CACHE]);
    let cache = Path::new(DEBIAN_CACHE);
    let build = |name: &str| {
        long_ok(
            &d,
            &[
                "template",
                "build",
                name,
                "--debian",
                "bookworm",
                "--variant",
                "minbase",
                "--packages",
                "less",
            ],
            DEBOOTSTRAP_TIMEOUT,
        )
    };

    // A first build: progress is streamed, packages land in the cache.
    let first = build("deb-first");
    assert!(
        first
            .stderr
            .contains("I: Base system installed successfully"),
        "debootstrap's progress is shown: {first}"
    );
    let cached = debs(&cache.join("debootstrap"));
    assert!(
        cached.keys().any(|k| k.starts_with("less_")),
        "the downloaded packages are cached in {DEBIAN_CACHE}/debootstrap: {cached:?}"
    );
    let t = template_info(&d, "deb-first");
    let v1 = version(&t, 1);
    let packages = strings(&v1["packages"]);
    for p in ["less ", "dpkg ", "apt ", "base-files "] {
        assert!(
            packages.iter().any(|x| x.starts_with(p)),
            "the package list records `{p}…`: {packages:?}"
        );
    }
    assert_eq!(digests(&v1).len(), 1, "an OS template is one layer: {t}");

    // A rebuild with the same cache downloads no package again.
    let second = build("deb");
    let downloaded = debootstrap_downloads(&second.stderr);
    assert!(
        downloaded.is_empty(),
        "the rebuild downloaded packages again: {downloaded:?}\n{second}"
    );
    assert!(
        second
            .stderr
            .contains("I: Base system installed successfully"),
        "{second}"
    );
    assert_eq!(
        debs(&cache.join("debootstrap")),
        cached,
        "the rebuild rewrote or added cached packages"
    );
    let base = template_info(&d, "deb");
    let base_v = version(&base, 1);
    assert_eq!(
        strings(&base_v["packages"]),
        packages,
        "the same build records the same packages"
    );
    d.ok(&["template", "rm", "deb-first"]);
    let base_digest = digests(&base_v)[0].clone();
    let base_size = top_layer(&base_v)["size"].as_u64().expect("size");

    // Application templates: their own layer only, over the shared base layer.
    let mut before = layer_dirs(&d);
    for (app, pkg) in [("hello-app", "hello"), ("tree-app", "tree")] {
        let out = long_ok(
            &d,
            &["template", "build", app, "--from", "deb", "--packages", pkg],
            APT_TIMEOUT,
        );
        assert!(
            out.stderr.contains(&format!("Setting up {pkg} ")),
            "apt's output is shown: {out}"
        );
        let a = template_info(&d, app);
        let v = version(&a, 1);
        let layers = digests(&v);
        assert_eq!(layers.len(), 2, "base + its own layer: {a}");
        assert_eq!(layers[0], base_digest, "the base layer is shared: {a}");
        assert_eq!(v["app"], true, "{a}");
        assert_eq!(v["base"], "deb@1", "{a}");
        assert!(
            strings(&v["packages"])
                .iter()
                .any(|p| p.starts_with(&format!("{pkg} "))),
            "the application's package list has {pkg}: {a}"
        );
        let own = top_layer(&v)["size"].as_u64().expect("size");
        assert!(
            own * 20 < base_size,
            "the application's own layer ({own} bytes) is small next to the base ({base_size})"
        );
        let after = layer_dirs(&d);
        let new: Vec<&String> = after.difference(&before).collect();
        assert_eq!(
            new,
            vec![&layer_dir_name(&layers[1])],
            "exactly one new layer is stored for {app} (the base is not copied)"
        );
        before = after;
    }

    // Both stacked: each works, and dpkg sees both.
    d.ok(&[
        "launch",
        "deb",
        "--app",
        "hello-app",
        "--app",
        "tree-app",
        "--name",
        "stack",
    ]);
    assert_eq!(d.sh("stack", "hello").trim(), "Hello, world!");
    let tree = d.sh("stack", "mkdir -p /t/a/b && tree /t");
    assert!(tree.contains("3 directories"), "tree works: {tree}");
    let dpkg = d.sh("stack", "dpkg -l hello tree less");
    for pkg in ["hello", "tree", "less"] {
        assert!(
            dpkg.lines()
                .any(|l| l.starts_with("ii") && l.split_whitespace().nth(1) == Some(pkg)),
            "dpkg lists {pkg} as installed in the stacked instance:\n{dpkg}"
        );
    }
    let audit = d.sh("stack", "dpkg --audit; echo audit-done");
    assert_eq!(
        audit.trim(),
        "audit-done",
        "the merged package database is consistent"
    );
    let info = d.info("stack");
    assert_eq!(
        strings(&info["apps"]),
        vec!["hello-app".to_owned(), "tree-app".to_owned()],
        "{info}"
    );

    // A package patch of the OS template: one more layer, the package list updated.
    long_ok(
        &d,
        &[
            "template",
            "patch",
            "deb",
            "--packages",
            "tree",
            "-m",
            "add tree",
        ],
        APT_TIMEOUT,
    );
    let patched = template_info(&d, "deb");
    let v2 = version(&patched, 2);
    assert_eq!(
        digests(&v2),
        vec![base_digest.clone(), digests(&v2)[1].clone()]
    );
    assert_eq!(v2["message"], "add tree");
    assert!(
        strings(&v2["packages"])
            .iter()
            .any(|p| p.starts_with("tree ")),
        "{patched}"
    );
    d.ok(&["launch", "deb", "--name", "patched"]);
    assert!(d.sh("patched", "dpkg -l tree").contains("ii  tree"));

    // Packages installed by a build are cached too: a rebuild of the same package downloads
    // nothing (apt says `Get:N … hello` when it downloads).
    let cached_apt = debs(&cache.join("apt/archives"));
    assert!(
        cached_apt.keys().any(|k| k.starts_with("hello_")),
        "the package installed by an application build is kept in {DEBIAN_CACHE}/apt/archives: {cached_apt:?}"
    );
    let again = long_ok(
        &d,
        &[
            "template",
            "build",
            "hello-again",
            "--from",
            "deb",
            "--packages",
            "hello",
        ],
        APT_TIMEOUT,
    );
    let fetched: Vec<&str> = again
        .stderr
        .lines()
        .filter(|l| l.starts_with("Get:") && l.contains(" hello "))
        .collect();
    assert!(
        fetched.is_empty(),
        "rebuilding an application downloaded its package again: {fetched:?}\n{again}"
    );
    d.finish();
}

// ---- applications on busybox: layers, stacking, conflicts --------------------------------------

#[test]
fn application_templates_stack_and_conflicting_ones_are_refused_unless_ordered() {
    let d = TestDaemon::start();
    let base = template_info(&d, "busybox");
    let base_layers = digests(&version(&base, 1));
    let mut before = layer_dirs(&d);
    let x = |who: &str| {
        format!(
            "mkdir -p /usr/local/bin && printf '#!/bin/sh\\necho {who}\\n' > /usr/local/bin/x && chmod 755 /usr/local/bin/x && echo {who} > /etc/{who}-only"
        )
    };
    for (app, script) in [
        ("xa", x("a")),
        ("xb", x("b")),
        ("xc", "echo c > /etc/c-only".to_owned()),
    ] {
        d.ok(&[
            "template", "build", app, "--from", "busybox", "--run", &script,
        ]);
        let t = template_info(&d, app);
        let v = version(&t, 1);
        let layers = digests(&v);
        assert_eq!(layers.len(), base_layers.len() + 1, "{t}");
        assert_eq!(layers[..base_layers.len()], base_layers[..], "shared base");
        assert_eq!(v["app"], true, "{t}");
        assert_eq!(v["base"], "busybox@1", "{t}");
        let after = layer_dirs(&d);
        let new: Vec<&String> = after.difference(&before).collect();
        assert_eq!(
            new,
            vec![&layer_dir_name(layers.last().expect("a layer"))],
            "one new layer for {app}"
        );
        assert!(
            top_layer(&v)["size"].as_u64().expect("size") < 1024,
            "the application's layer holds only what its script wrote: {t}"
        );
        before = after;
    }

    // Two applications that do not conflict stack without --ordered; each one works.
    d.ok(&[
        "launch", "busybox", "--app", "xa", "--app", "xc", "--name", "ac",
    ]);
    assert_eq!(d.sh("ac", "/usr/local/bin/x").trim(), "a");
    assert_eq!(d.sh("ac", "cat /etc/a-only /etc/c-only"), "a\nc\n");

    // Two that write the same path differently are refused, naming it, and nothing is left.
    let refused = d.fails(&[
        "launch", "busybox", "--app", "xa", "--app", "xb", "--name", "ab",
    ]);
    let msg = format!("{}{}", refused.stdout, refused.stderr);
    assert_eq!(refused.code, 1, "{refused}");
    for word in ["usr/local/bin/x", "xa", "xb", "--ordered"] {
        assert!(msg.contains(word), "the refusal mentions {word}: {refused}");
    }
    assert!(
        !msg.contains("etc/a-only") && !msg.contains("etc/b-only"),
        "paths only one application has are no conflict: {refused}"
    );
    assert_eq!(d.state_of("ab"), None, "no half-created instance");

    // With --ordered the later one wins.
    d.ok(&[
        "launch",
        "busybox",
        "--app",
        "xa",
        "--app",
        "xb",
        "--ordered",
        "--name",
        "ab",
    ]);
    assert_eq!(d.sh("ab", "/usr/local/bin/x").trim(), "b");
    assert_eq!(d.sh("ab", "cat /etc/a-only /etc/b-only"), "a\nb\n");
    d.ok(&[
        "launch",
        "busybox",
        "--app",
        "xb",
        "--app",
        "xa",
        "--ordered",
        "--name",
        "ba",
    ]);
    assert_eq!(d.sh("ba", "/usr/local/bin/x").trim(), "a");

    // Not an application, an application over an application, and a stale base.
    let not_app = d.fails(&["launch", "busybox", "--app", "busybox", "--name", "n1"]);
    assert!(
        not_app.stderr.contains("not an application template"),
        "{not_app}"
    );
    let nested = d.fails(&["template", "build", "xd", "--from", "xa", "--run", "true"]);
    assert!(
        nested.stderr.contains("itself an application template"),
        "{nested}"
    );
    assert!(!template_exists(&d, "xd"));
    d.ok(&["template", "patch", "busybox", "--run", "echo 2 > /etc/two"]);
    let stale = d.fails(&["launch", "busybox@2", "--app", "xa", "--name", "n2"]);
    assert!(
        stale.stderr.contains("busybox@1") && stale.stderr.contains("busybox@2"),
        "the refusal says what the application was built on: {stale}"
    );
    assert_eq!(d.state_of("n2"), None, "no half-created instance");
    // A follower is held back on the version its application is built on.
    d.ok(&["launch", "busybox", "--app", "xa", "--name", "n2"]);
    assert_eq!(running_version(&d, "n2"), Some(1));
    d.ok(&["launch", "busybox@1", "--app", "xa", "--name", "n3"]);
    assert_eq!(d.sh("n3", "/usr/local/bin/x").trim(), "a");
    d.finish();
}

#[test]
fn an_application_template_in_use_cannot_be_removed() {
    let d = TestDaemon::start();
    d.ok(&[
        "template",
        "build",
        "tool",
        "--from",
        "busybox",
        "--run",
        "echo tool > /etc/tool",
    ]);
    let own = layer_dir_name(&digests(&version(&template_info(&d, "tool"), 1))[1]);
    d.ok(&["launch", "busybox", "--app", "tool", "--name", "user"]);
    let out = d.mayfly(&["template", "rm", "tool"]);
    assert!(
        !out.success(),
        "`template rm tool` must be refused while instance `user` stacks it: {out}"
    );
    assert!(
        out.stderr.contains("user"),
        "the refusal names the user: {out}"
    );
    d.ok(&["template", "gc"]);
    assert!(
        layer_dirs(&d).contains(&own),
        "the application's layer is kept while in use"
    );
    d.ok(&["restart", "user"]);
    assert_eq!(d.sh("user", "cat /etc/tool"), "tool\n");

    // Versions of an application: one pinned by an instance, or run by a running follower,
    // stays; once nothing uses it, it can go.
    d.ok(&[
        "launch",
        "busybox",
        "--app",
        "tool@1",
        "--name",
        "pinned",
        "--no-start",
    ]);
    d.ok(&[
        "template",
        "patch",
        "tool",
        "--run",
        "echo tool-2 > /etc/tool",
    ]);
    let out = d.fails(&["template", "rm", "tool@1"]);
    assert!(
        out.stderr.contains("pinned") && out.stderr.contains("user"),
        "{out}"
    );
    d.ok(&["rm", "pinned"]);
    let out = d.fails(&["template", "rm", "tool@1"]);
    assert!(
        out.stderr.contains("user") && !out.stderr.contains("pinned"),
        "{out}"
    );
    d.ok(&["stop", "user"]);
    d.ok(&["template", "rm", "tool@1"]);
    d.ok(&["start", "user"]);
    assert_eq!(d.sh("user", "cat /etc/tool"), "tool-2\n");
    // A running follower holds the version it runs, not the others.
    d.ok(&[
        "template",
        "patch",
        "tool",
        "--run",
        "echo tool-3 > /etc/tool",
    ]);
    d.ok(&["restart", "user"]);
    assert_eq!(d.sh("user", "cat /etc/tool"), "tool-3\n");
    d.ok(&["template", "rm", "tool@2"]);
    d.ok(&["rm", "--force", "user"]);
    d.ok(&["template", "rm", "tool"]);
    d.finish();
}

// ---- patch, history -----------------------------------------------------------------------------

#[test]
fn patch_adds_one_layer_followers_move_at_next_start_pinned_stay_and_history_shows_it() {
    let d = TestDaemon::start();
    d.ok(&["launch", "busybox", "--name", "fol"]);
    d.ok(&["launch", "busybox@1", "--name", "pin"]);
    d.ok(&["launch", "busybox", "--name", "per", "--persistent"]);
    d.sh("per", "echo mine > /etc/motd");

    let out = d.ok(&[
        "template",
        "patch",
        "busybox",
        "--run",
        "echo v2 > /etc/motd",
        "--message",
        "motd v2",
    ]);
    assert!(out.contains("version 2"), "{out}");
    assert!(
        out.contains("per") && out.contains("etc/motd"),
        "the patch says what the persistent follower hides: {out}"
    );
    let t = template_info(&d, "busybox");
    assert_eq!(t["current_version"], 2);
    let (v1, v2) = (version(&t, 1), version(&t, 2));
    let (l1, l2) = (digests(&v1), digests(&v2));
    assert_eq!(l2.len(), l1.len() + 1, "N+1 = N + one layer: {t}");
    assert_eq!(l2[..l1.len()], l1[..], "N's layers are reused: {t}");
    assert_eq!(v2["message"], "motd v2");
    let shadowed = t["shadowed"].as_array().cloned().unwrap_or_default();
    assert_eq!(shadowed.len(), 1, "{t}");
    assert_eq!(shadowed[0]["instance"], "per");
    assert_eq!(shadowed[0]["since_version"], 1);
    assert_eq!(strings(&shadowed[0]["paths"]), vec!["etc/motd".to_owned()]);
    let text = d.ok(&["template", "info", "busybox"]);
    assert!(
        text.lines()
            .any(|l| l.contains("per") && l.contains("etc/motd") && l.starts_with("note:")),
        "info says what `per` hides:\n{text}"
    );

    let history = d.ok(&["template", "history", "busybox"]);
    assert!(
        history
            .lines()
            .any(|l| l.starts_with("note:") && l.contains("per") && l.contains("etc/motd")),
        "history says what `per` hides:\n{history}"
    );

    // Running instances keep their version until their next start.
    for name in ["fol", "pin", "per"] {
        assert_eq!(running_version(&d, name), Some(1), "{name}");
    }
    d.ok(&["restart", "fol", "pin"]);
    assert_eq!(running_version(&d, "fol"), Some(2));
    assert_eq!(d.sh("fol", "cat /etc/motd"), "v2\n");
    assert_eq!(
        running_version(&d, "pin"),
        Some(1),
        "pinned keeps version 1"
    );
    let pinned = d.mayfly(&["exec", "pin", "--", "cat", "/etc/motd"]);
    assert!(!pinned.success(), "version 1 has no /etc/motd: {pinned}");

    // A rollout does not reset the persistent follower; it reports what it hides.
    let per_pid = d.pid_of("per");
    let rollout = d.ok(&["template", "rollout", "busybox"]);
    assert!(
        rollout
            .lines()
            .any(|l| l.contains("per") && l.contains("not reset") && l.contains("etc/motd")),
        "{rollout}"
    );
    assert_eq!(
        d.pid_of("per"),
        per_pid,
        "the persistent follower was not reset"
    );
    d.ok(&["restart", "per"]);
    assert_eq!(running_version(&d, "per"), Some(2));
    assert_eq!(
        d.sh("per", "cat /etc/motd"),
        "mine\n",
        "a persistent follower's own change wins"
    );

    // History, as text and as JSON.
    let src = d.dir.join("patch3");
    write_tree(&src, &[("opt/three", "3\n")]);
    d.ok(&[
        "template",
        "patch",
        "busybox",
        "--from",
        src.to_str().expect("utf-8"),
        "-m",
        "third from a dir",
    ]);
    let t = template_info(&d, "busybox");
    let v3 = version(&t, 3);
    assert_eq!(digests(&v3).len(), l2.len() + 1);
    let history = d.ok(&["template", "history", "busybox"]);
    let lines: Vec<&str> = history.lines().collect();
    let row = |prefix: &str| {
        lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(prefix))
            .unwrap_or_else(|| panic!("no row {prefix} in the history:\n{history}"))
            .to_string()
    };
    let (r1, r2, r3) = (row("1"), row("2"), row("3*"));
    assert!(
        r2.contains("motd v2") && r3.contains("third from a dir"),
        "{history}"
    );
    let short = |v: &Value| {
        top_layer(v)["digest"]
            .as_str()
            .expect("digest")
            .chars()
            .take(19)
            .collect::<String>()
    };
    assert!(r1.contains(&short(&v1)), "v1's digest: {history}");
    assert!(r2.contains(&short(&v2)), "v2's digest: {history}");
    assert!(r3.contains(&short(&v3)), "v3's digest: {history}");
    assert!(r1.contains("pin"), "v1 is used by pin: {history}");
    assert!(r2.contains("fol"), "v2 is used by fol: {history}");
    assert!(r1.contains(v1["created_at"].as_str().expect("time")));
    assert!(
        r1.contains("MiB") || r1.contains("KiB"),
        "a size: {history}"
    );
    let hj = d.json(&["template", "history", "busybox", "--json"]);
    let hv = hj.as_array().expect("an array of versions");
    assert_eq!(hv.len(), 3, "{hj}");
    for (i, v) in hv.iter().enumerate() {
        assert_eq!(v["version"].as_u64(), Some(i as u64 + 1), "{hj}");
        assert!(v["created_at"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(v["message"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(top_layer(v)["size"].is_u64() && top_layer(v)["digest"].is_string());
    }
    assert!(
        strings(&hv[0]["used_by"]).contains(&"pin".to_owned()),
        "{hj}"
    );
    assert!(
        strings(&hv[1]["used_by"]).contains(&"fol".to_owned()),
        "{hj}"
    );
    assert!(
        !strings(&hv[1]["used_by"]).contains(&"pin".to_owned()),
        "{hj}"
    );
    d.ok(&["restart", "fol"]);
    assert_eq!(d.sh("fol", "cat /opt/three /etc/motd"), "3\nv2\n");
    d.finish();
}

#[test]
fn shadowed_paths_are_still_reported_after_the_persistent_follower_restarts() {
    let d = TestDaemon::start();
    d.ok(&["launch", "busybox", "--name", "per", "--persistent"]);
    d.sh("per", "echo mine > /etc/motd");
    d.ok(&[
        "template",
        "patch",
        "busybox",
        "--run",
        "echo v2 > /etc/motd",
    ]);
    let before = template_info(&d, "busybox");
    assert_eq!(before["shadowed"][0]["instance"], "per", "{before}");
    // Restarted onto version 2, its own /etc/motd (made on version 1) still hides version 2's.
    d.ok(&["restart", "per"]);
    assert_eq!(running_version(&d, "per"), Some(2));
    assert_eq!(d.sh("per", "cat /etc/motd"), "mine\n");
    let after = template_info(&d, "busybox");
    let paths = after["shadowed"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["instance"] == "per"))
        .map(|s| strings(&s["paths"]))
        .unwrap_or_default();
    assert_eq!(
        paths,
        vec!["etc/motd".to_owned()],
        "`per` still hides version 2's etc/motd after a restart, but info no longer says so: {after}"
    );
    // A reset drops its changes: nothing is hidden any more, and it sees version 2.
    d.ok(&["reset", "per"]);
    assert_eq!(d.sh("per", "cat /etc/motd"), "v2\n");
    let reset = template_info(&d, "busybox");
    assert!(
        reset["shadowed"]
            .as_array()
            .is_none_or(|a| a.iter().all(|s| s["instance"] != "per")),
        "{reset}"
    );
    d.finish();
}

// ---- rollback -----------------------------------------------------------------------------------

#[test]
fn rollback_points_the_name_back_and_followers_take_it_at_next_start() {
    let d = TestDaemon::start();
    d.ok(&["template", "patch", "busybox", "--run", "echo 2 > /etc/v"]);
    d.ok(&["template", "patch", "busybox", "--run", "echo 3 > /etc/v"]);
    d.ok(&["launch", "busybox", "--name", "f"]);
    d.ok(&["launch", "busybox", "--name", "g", "--no-start"]);
    assert_eq!(d.sh("f", "cat /etc/v"), "3\n");

    let out = d.ok(&["template", "rollback", "busybox"]);
    assert!(out.contains("version 2"), "{out}");
    assert_eq!(current(&d, "busybox"), 2);
    assert_eq!(
        running_version(&d, "f"),
        Some(3),
        "a running follower keeps its version until its next start"
    );
    d.ok(&["restart", "f"]);
    d.ok(&["start", "g"]);
    for name in ["f", "g"] {
        assert_eq!(running_version(&d, name), Some(2));
        assert_eq!(d.sh(name, "cat /etc/v"), "2\n");
    }

    d.ok(&["template", "rollback", "busybox", "--to", "1"]);
    assert_eq!(current(&d, "busybox"), 1);
    d.ok(&["reset", "f"]);
    assert_eq!(running_version(&d, "f"), Some(1));
    assert!(!d.mayfly(&["exec", "f", "--", "cat", "/etc/v"]).success());

    // Forward again, to the newest.
    d.ok(&["template", "rollback", "busybox", "--to", "3"]);
    d.ok(&["restart", "f"]);
    assert_eq!(d.sh("f", "cat /etc/v"), "3\n");

    // Versions that do not exist, and nothing older.
    let bad = d.fails(&["template", "rollback", "busybox", "--to", "9"]);
    assert_eq!(bad.code, 1, "{bad}");
    assert!(bad.stderr.contains("busybox@9"), "{bad}");
    assert_eq!(
        current(&d, "busybox"),
        3,
        "a failed rollback changes nothing"
    );
    let src = d.dir.join("solo");
    common::make_rootfs(&src, "solo");
    d.ok(&["template", "import", "solo", src.to_str().expect("utf-8")]);
    let none = d.fails(&["template", "rollback", "solo"]);
    assert!(none.stderr.contains("no version older"), "{none}");
    let missing = d.fails(&["template", "rollback", "nosuch"]);
    assert!(missing.stderr.contains("nosuch"), "{missing}");
    d.finish();
}

// ---- storage ------------------------------------------------------------------------------------

#[test]
fn identical_trees_are_stored_once() {
    let d = TestDaemon::start();
    let src = d.dir.join("tree");
    common::make_rootfs(&src, "same");
    let before = layer_dirs(&d);
    let path = src.to_str().expect("utf-8");
    d.ok(&["template", "import", "one", path]);
    d.ok(&["template", "import", "two", path]);
    let (a, b) = (
        digests(&version(&template_info(&d, "one"), 1)),
        digests(&version(&template_info(&d, "two"), 1)),
    );
    assert_eq!(a, b, "the same tree has the same digest");
    let after = layer_dirs(&d);
    assert_eq!(
        after.difference(&before).cloned().collect::<Vec<_>>(),
        vec![layer_dir_name(&a[0])],
        "two templates from one tree store one layer"
    );

    // The same patch tree laid over two templates: one layer.
    let patch = d.dir.join("patch");
    write_tree(&patch, &[("etc/patched", "yes\n")]);
    let p = patch.to_str().expect("utf-8");
    d.ok(&["template", "patch", "one", "--from", p]);
    d.ok(&["template", "patch", "busybox", "--from", p]);
    let top_one = digests(&version(&template_info(&d, "one"), 2))[1].clone();
    let top_bb = digests(&version(&template_info(&d, "busybox"), 2))[1].clone();
    assert_eq!(top_one, top_bb);
    let after2 = layer_dirs(&d);
    assert_eq!(
        after2.difference(&after).cloned().collect::<Vec<_>>(),
        vec![layer_dir_name(&top_one)],
        "one layer for the same patch on two templates"
    );
    d.ok(&["launch", "one", "--name", "i1", "--", "sleep", "1000"]);
    d.ok(&["launch", "busybox", "--name", "i2"]);
    for i in ["i1", "i2"] {
        assert_eq!(d.sh(i, "cat /etc/patched"), "yes\n");
    }
    assert_eq!(d.sh("i1", "cat /marker"), "same\n");
    d.finish();
}

#[test]
fn patching_the_same_tree_twice_stores_one_layer_and_the_version_still_starts() {
    let d = TestDaemon::start();
    let patch = d.dir.join("patch");
    write_tree(&patch, &[("etc/patched", "yes\n")]);
    let p = patch.to_str().expect("utf-8");
    d.ok(&["template", "patch", "busybox", "--from", p]);
    let once = layer_dirs(&d);
    d.ok(&["template", "patch", "busybox", "--from", p]);
    assert_eq!(layer_dirs(&d), once, "the identical tree is stored once");
    let t = template_info(&d, "busybox");
    assert_eq!(t["current_version"], 3, "{t}");
    // Version 3 has the same layer twice; it must still be usable.
    let out = d.mayfly(&["launch", "busybox", "--name", "twice"]);
    assert!(
        out.success(),
        "a version whose stack holds the same layer twice cannot start: {out}"
    );
    assert_eq!(d.sh("twice", "cat /etc/patched"), "yes\n");
    let patched = d.mayfly(&[
        "template",
        "patch",
        "busybox",
        "--run",
        "echo 4 > /etc/four",
    ]);
    assert!(patched.success(), "patching over it fails: {patched}");
    d.finish();
}

#[test]
fn a_patch_rolled_out_to_many_followers_costs_one_layer() {
    let d = TestDaemon::start();
    let followers = ["n1", "n2", "n3", "n4", "n5", "n6"];
    for f in followers {
        d.ok(&["launch", "busybox", "--name", f]);
    }
    let before = layer_dirs(&d);
    d.ok(&[
        "template",
        "patch",
        "busybox",
        "--run",
        "mkdir -p /srv && head -c 65536 /dev/urandom > /srv/blob",
    ]);
    let top = top_layer(&version(&template_info(&d, "busybox"), 2));
    let new: Vec<String> = layer_dirs(&d).difference(&before).cloned().collect();
    assert_eq!(
        new,
        vec![layer_dir_name(top["digest"].as_str().expect("digest"))],
        "one new layer"
    );
    assert!(top["size"].as_u64().expect("size") >= 65536, "{top}");
    d.ok(&["template", "rollout", "busybox", "--wave", "3"]);
    let sum: BTreeSet<String> = followers
        .iter()
        .map(|f| {
            let out = d.sh(f, "md5sum /srv/blob");
            out.split_whitespace().next().unwrap_or_default().to_owned()
        })
        .collect();
    assert_eq!(sum.len(), 1, "every follower sees the same blob: {sum:?}");
    let after: HashSet<String> = layer_dirs(&d);
    assert_eq!(after.len(), before.len() + 1, "instances add no layers");
    let instances = bytes_below(&d.state.join("instances"));
    assert!(
        instances < 65536,
        "the followers' directories hold {instances} bytes: the patch was not copied into them"
    );
    for f in followers {
        assert!(
            d.info(f)["writable_bytes"].as_u64().unwrap_or(0) < 65536,
            "{f}: {}",
            d.info(f)
        );
    }
    d.finish();
}

#[test]
fn gc_removes_what_nothing_references_and_never_a_layer_in_use() {
    let d = TestDaemon::start();
    let layer_of = |v: u64| {
        let t = template_info(&d, "busybox");
        layer_dir_name(digests(&version(&t, v)).last().expect("a layer"))
    };
    let l1 = layer_of(1);
    d.ok(&[
        "template",
        "patch",
        "busybox",
        "--run",
        "echo two > /etc/two",
    ]);
    let l2 = layer_of(2);
    d.ok(&["launch", "busybox@2", "--name", "pin"]);
    d.ok(&[
        "template",
        "patch",
        "busybox",
        "--run",
        "echo three > /etc/three",
    ]);
    let l3 = layer_of(3);
    d.ok(&["launch", "busybox", "--name", "keeper", "--persistent"]);
    d.sh("keeper", "echo kept > /root/kept");
    d.ok(&["snapshot", "create", "keeper", "s1"]);
    // Only the snapshot holds version 3 now.
    d.ok(&["template", "rollback", "busybox", "--to", "2"]);
    d.ok(&["reset", "keeper"]);
    assert_eq!(running_version(&d, "keeper"), Some(2));

    let refused = d.fails(&["template", "rm", "busybox@3"]);
    assert!(
        refused.stderr.contains("keeper/s1"),
        "the snapshot holds version 3: {refused}"
    );
    let refused = d.fails(&["template", "rm", "busybox@2"]);
    assert!(refused.stderr.contains("current"), "{refused}");
    // Version 1 is used by nobody; its layer is also version 2's and stays.
    d.ok(&["template", "rm", "busybox@1"]);
    assert!(layer_dirs(&d).contains(&l1), "a layer of version 2 is kept");

    // A tree that no version references (as a crash between rename and commit leaves).
    let stray = format!("blake3-{}", "a".repeat(64));
    write_tree(
        &d.state.join("layers").join(&stray),
        &[("etc/stray", "x\n")],
    );
    let report = d.json(&["template", "gc", "--json"]);
    assert_eq!(
        strings(&report["removed"]),
        vec![stray.clone()],
        "gc removes exactly the unreferenced tree: {report}"
    );
    let left = layer_dirs(&d);
    assert!(!left.contains(&stray));
    for l in [&l1, &l2, &l3] {
        assert!(left.contains(l), "gc kept {l}: {left:?}");
    }
    d.ok(&["restart", "pin"]);
    assert_eq!(d.sh("pin", "cat /etc/two"), "two\n");
    d.ok(&["snapshot", "restore", "keeper", "s1"]);
    assert_eq!(d.sh("keeper", "cat /etc/three /root/kept"), "three\nkept\n");
    let report = d.json(&["template", "gc", "--json"]);
    assert_eq!(
        strings(&report["removed"]),
        Vec::<String>::new(),
        "{report}"
    );

    // Released, version 3 can go, and its own layer with it.
    d.ok(&["reset", "keeper"]);
    d.ok(&["snapshot", "rm", "keeper", "s1"]);
    d.ok(&["template", "rm", "busybox@3"]);
    d.ok(&["template", "gc"]);
    let left = layer_dirs(&d);
    assert!(
        !left.contains(&l3),
        "version 3's own layer is gone: {left:?}"
    );
    assert!(left.contains(&l1) && left.contains(&l2), "{left:?}");
    d.finish();
}

#[test]
fn a_stack_past_the_depth_limit_is_squashed_with_identical_content() {
    let d = TestDaemon::start();
    // 31 patches over the one-layer busybox: 32 layers, the limit. Some are scripts that
    // delete, overwrite and replace (whiteouts and opaque directories in the stack).
    for i in 1..=31 {
        match i {
            8 => d.ok(&["template", "patch", "busybox", "--run", "rm /bin/rev /etc/q3"]),
            15 => d.ok(&[
                "template",
                "patch",
                "busybox",
                "--run",
                "echo overwritten > /etc/q5 && rm -rf /root && mkdir -p /root/fresh && echo f > /root/fresh/f",
            ]),
            22 => d.ok(&[
                "template",
                "patch",
                "busybox",
                "--run",
                "ln -s /etc/q1 /etc/link && mkdir -p /var/empty-dir && chmod 0700 /etc/q2",
            ]),
            _ => {
                let dir = d.dir.join(format!("p{i}"));
                write_tree(
                    &dir,
                    &[
                        (&format!("etc/q{i}"), &format!("{i}\n")),
                        (&format!("usr/share/q/{}", i % 4), &format!("v{i}\n")),
                    ],
                );
                d.ok(&[
                    "template",
                    "patch",
                    "busybox",
                    "--from",
                    dir.to_str().expect("utf-8"),
                ])
            }
        };
    }
    let t = template_info(&d, "busybox");
    assert_eq!(t["current_version"], 32);
    assert_eq!(digests(&version(&t, 32)).len(), 32, "at the limit: {t}");
    d.ok(&["launch", "busybox", "--name", "deep"]);
    let deep = view::of_instance(&d, "deep");
    for p in ["etc/q31", "root/fresh/f", "etc/link", "usr/share/q/3"] {
        assert!(deep.contains_key(p), "{p} in the deep view");
    }
    for p in ["bin/rev", "etc/q3"] {
        assert!(!deep.contains_key(p), "{p} is deleted in the deep view");
    }

    // One more (empty) layer: past the limit, the version is squashed into one layer.
    let empty = d.dir.join("empty");
    std::fs::create_dir_all(&empty).expect("mkdir");
    d.ok(&[
        "template",
        "patch",
        "busybox",
        "--from",
        empty.to_str().expect("utf-8"),
    ]);
    let t = template_info(&d, "busybox");
    assert_eq!(t["current_version"], 33);
    assert_eq!(
        digests(&version(&t, 33)).len(),
        1,
        "squashed into one layer: {t}"
    );
    d.ok(&["restart", "deep"]);
    assert_eq!(running_version(&d, "deep"), Some(33));
    view::assert_same(
        "32 layers -> squashed",
        &deep,
        &view::of_instance(&d, "deep"),
    );
    assert_eq!(
        d.sh("deep", "cat /etc/q5 /usr/share/q/3"),
        "overwritten\nv31\n"
    );

    // The squashed version patches like any other.
    d.ok(&[
        "template",
        "patch",
        "busybox",
        "--run",
        "echo after > /etc/after",
    ]);
    assert_eq!(
        digests(&version(&template_info(&d, "busybox"), 34)).len(),
        2
    );
    d.ok(&["restart", "deep"]);
    assert_eq!(d.sh("deep", "cat /etc/after /etc/q31"), "after\n31\n");
    d.finish();
}

// ---- bad input ----------------------------------------------------------------------------------

#[test]
fn bad_input_is_refused_clearly_and_leaves_nothing_half_created() {
    let d = TestDaemon::start();
    let templates = || -> Vec<String> {
        let all = d.json(&["template", "list", "--json"]);
        all.as_array()
            .expect("array")
            .iter()
            .map(|t| format!("{}@{}", t["name"], t["current_version"]))
            .collect()
    };
    let before_templates = templates();
    let before_layers = layer_dirs(&d);
    let history = || d.json(&["template", "history", "busybox", "--json"]);
    let before_history = history();
    let nothing_changed = |what: &str| {
        assert_eq!(templates(), before_templates, "{what}: templates changed");
        assert_eq!(layer_dirs(&d), before_layers, "{what}: a layer was left");
        assert_eq!(history(), before_history, "{what}: a version was added");
        wait_tmp_empty(&d);
    };

    // Unknown base.
    let out = d.fails(&[
        "template", "build", "app", "--from", "nosuch", "--run", "true",
    ]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("`nosuch` does not exist"), "{out}");
    nothing_changed("unknown base");
    let out = d.fails(&["template", "patch", "nosuch", "--run", "true"]);
    assert!(out.stderr.contains("nosuch"), "{out}");

    // A failing build script: its output is in the error, nothing is kept.
    let script = "echo marker-out; echo marker-err >&2; mkdir -p /junk; echo x > /junk/x; exit 7";
    let out = d.fails(&[
        "template", "build", "broken", "--from", "busybox", "--run", script,
    ]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("code 7")
            && out.stderr.contains("marker-out")
            && out.stderr.contains("marker-err"),
        "the error shows how the script ended and what it printed: {out}"
    );
    assert!(!template_exists(&d, "broken"));
    nothing_changed("failing build");
    let out = d.fails(&["template", "patch", "busybox", "--run", script, "-m", "x"]);
    assert!(out.stderr.contains("marker-out"), "{out}");
    nothing_changed("failing patch");
    // A failing debootstrap (an unknown suite): likewise.
    let out = d.fails(&["template", "build", "deb", "--debian", "nosuchsuite"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("nosuchsuite"), "{out}");
    assert!(!template_exists(&d, "deb"));
    nothing_changed("failing debootstrap");
    assert!(
        common::mounts_mentioning(&d.dir.display().to_string()).is_empty(),
        "no mount is left"
    );

    // Invalid names and arguments.
    for name in ["Bad", "a@b", "-x", "a b", "über", &"x".repeat(65)] {
        let out = d.fails(&[
            "template", "build", name, "--from", "busybox", "--run", "true",
        ]);
        assert!(
            out.stderr.contains("invalid template name") || out.code == 2,
            "{name}: {out}"
        );
    }
    let out = d.fails(&["launch", "busybox", "--name", "Bad_Name"]);
    assert!(out.stderr.contains("invalid instance name"), "{out}");
    let out = d.fails(&[
        "template",
        "build",
        "p",
        "--from",
        "busybox",
        "--packages",
        "a;rm",
    ]);
    assert!(out.stderr.contains("invalid package name"), "{out}");
    let out = d.fails(&["template", "build", "p", "--debian", "bookworm;rm"]);
    assert!(out.stderr.contains("invalid suite"), "{out}");
    let out = d.fails(&[
        "template", "build", "p", "--debian", "bookworm", "--run", "true",
    ]);
    assert!(out.stderr.contains("--run"), "{out}");
    let out = d.fails(&["template", "build", "p", "--from", "busybox"]);
    assert!(out.stderr.contains("nothing to build"), "{out}");
    let out = d.fails(&[
        "template", "build", "busybox", "--from", "busybox", "--run", "true",
    ]);
    assert!(out.stderr.contains("busybox"), "{out}");
    let out = d.fails(&["template", "patch", "busybox"]);
    assert!(out.stderr.contains("exactly one"), "{out}");
    let out = d.fails(&[
        "template", "patch", "busybox", "--run", "true", "--from", "/tmp",
    ]);
    assert!(out.stderr.contains("exactly one") || out.code == 2, "{out}");
    let out = d.fails(&["template", "patch", "busybox", "--from", "/nonexistent/dir"]);
    assert!(out.stderr.contains("/nonexistent/dir"), "{out}");
    let out = d.fails(&["launch", "nosuch", "--name", "x"]);
    assert!(out.stderr.contains("nosuch"), "{out}");
    let out = d.fails(&["launch", "busybox@7", "--name", "x"]);
    assert!(out.stderr.contains("no version 7"), "{out}");
    assert_eq!(d.instance_names(), Vec::<String>::new());
    nothing_changed("invalid arguments");

    // Rollback to a version that does not exist.
    let out = d.fails(&["template", "rollback", "busybox", "--to", "5"]);
    assert!(
        out.stderr.contains("busybox@5") && out.stderr.contains("template history"),
        "{out}"
    );
    assert_eq!(current(&d, "busybox"), 1);

    // Removing a version in use, the current version, or one that does not exist.
    d.ok(&["template", "patch", "busybox", "--run", "echo 2 > /etc/two"]);
    d.ok(&["launch", "busybox@1", "--name", "pin"]);
    let out = d.fails(&["template", "rm", "busybox@1"]);
    assert!(
        out.stderr.contains("pin"),
        "the refusal names the user: {out}"
    );
    let out = d.fails(&["template", "rm", "busybox@2"]);
    assert!(out.stderr.contains("current"), "{out}");
    let out = d.fails(&["template", "rm", "busybox@9"]);
    assert!(out.stderr.contains("busybox@9"), "{out}");
    let out = d.fails(&["template", "rm", "busybox"]);
    assert!(out.stderr.contains("pin"), "a template in use stays: {out}");
    let t = template_info(&d, "busybox");
    assert_eq!(t["versions"].as_array().map(Vec::len), Some(2), "{t}");
    d.ok(&["restart", "pin"]);
    assert_eq!(running_version(&d, "pin"), Some(1));
    d.finish();
}

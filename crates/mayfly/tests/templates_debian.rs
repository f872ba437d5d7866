//! OS templates built with debootstrap: the download cache (debootstrap's and apt's), the
//! recorded package list, and applications stacked on a real Debian minbase with a merged
//! package database. Slow (it downloads packages), so it has a file of its own and runs in
//! parallel with the other template tests.

mod common;

use common::debian::{APT_TIMEOUT, DEBIAN_CACHE, DEBOOTSTRAP_TIMEOUT, debian_daemon, long_ok};
use common::{digests, layer_dir_name, layer_dirs, strings, template_info, top_layer, version};
use std::collections::BTreeMap;
use std::path::Path;

// ---- helpers -----------------------------------------------------------------------------------

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
    let (_lock, d) = debian_daemon();
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
                "--no-init",
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

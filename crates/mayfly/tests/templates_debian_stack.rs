//! Real Debian applications that share directories, stacked: a minbase template built with
//! debootstrap is clean (no downloaded packages, package lists, build logs or build-host
//! files, apt's directories kept), application layers built on it (nginx-light; curl, procps
//! and iproute2) carry no opaque marker that hides nothing of their base and white out none of
//! its directories, and both stack — unordered without a false conflict, and `--ordered` — with
//! `dpkg -V` and `apt-get check` clean inside. Slow (one debootstrap and two package builds);
//! it shares the Debian download cache and its lock with `templates_debian.rs`.

mod common;

use std::path::{Path, PathBuf};

use common::debian::{APT_TIMEOUT, build_minbase, debian_daemon, long_ok};
use common::{TestDaemon, layer_dir_name, strings, template_info, top_layer, version};

/// The tree of the top layer of version 1 of template `name`.
fn own_layer(d: &TestDaemon, name: &str) -> PathBuf {
    let t = template_info(d, name);
    let digest = top_layer(&version(&t, 1))["digest"]
        .as_str()
        .expect("a digest")
        .to_owned();
    d.state.join("layers").join(layer_dir_name(&digest))
}

/// Relative paths of every entry below `root` (not following symlinks), with its metadata.
fn walk(root: &Path) -> Vec<(String, std::fs::Metadata)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let m = e.path().symlink_metadata().expect("lstat");
            let rel = e.path().strip_prefix(root).unwrap().display().to_string();
            if m.is_dir() {
                stack.push(e.path());
            }
            out.push((rel, m));
        }
    }
    out
}

/// Non-directories below `root/rel`.
fn files_below(root: &Path, rel: &str) -> Vec<String> {
    walk(&root.join(rel))
        .into_iter()
        .filter(|(_, m)| !m.is_dir())
        .map(|(p, _)| format!("{rel}/{p}"))
        .collect()
}

fn is_opaque(path: &Path) -> bool {
    let mut buf = [0u8; 8];
    matches!(
        rustix::fs::lgetxattr(path, "trusted.overlay.opaque", &mut buf),
        Ok(1) if buf[0] == b'y'
    )
}

/// Whether `rel` is a real directory in the layer `root`, every component a directory (not
/// reached through a symlink, as overlayfs looks layers up).
fn real_dir(root: &Path, rel: &str) -> bool {
    let mut path = root.to_owned();
    rel.split('/').all(|part| {
        path.push(part);
        path.symlink_metadata().is_ok_and(|m| m.is_dir())
    })
}

fn is_whiteout(m: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    m.file_type().is_char_device() && m.rdev() == 0
}

/// Asserts that application layer `layer` (built on the one-layer template `base`) keeps opaque
/// markers only over directories of the base, deletes none of apt's directories and carries no
/// lists, logs or host files; returns how many markers it keeps.
fn assert_clean_app_layer(name: &str, layer: &Path, base: &Path) -> usize {
    let entries = walk(layer);
    let opaque: Vec<&String> = entries
        .iter()
        .filter(|(p, m)| m.is_dir() && is_opaque(&layer.join(p)))
        .map(|(p, _)| p)
        .collect();
    let needless: Vec<&&String> = opaque.iter().filter(|p| !real_dir(base, p)).collect();
    assert!(
        needless.is_empty(),
        "{name}'s layer keeps opaque markers over directories its base does not have: {needless:?}"
    );
    let whiteouts: Vec<&String> = entries
        .iter()
        .filter(|(_, m)| is_whiteout(m))
        .map(|(p, _)| p)
        .collect();
    for dir in [
        "var/lib/apt/lists",
        "var/lib/apt/lists/partial",
        "var/cache/apt",
    ] {
        assert!(
            !whiteouts.iter().any(|w| w.as_str() == dir),
            "{name}'s layer deletes the base's {dir}: {whiteouts:?}"
        );
    }
    let lists = files_below(layer, "var/lib/apt/lists");
    assert!(lists.is_empty(), "{name} keeps package lists: {lists:?}");
    for gone in [
        "var/log/dpkg.log",
        "var/log/alternatives.log",
        "var/log/apt/history.log",
        "var/log/apt/term.log",
        "var/cache/apt/pkgcache.bin",
        "var/cache/apt/srcpkgcache.bin",
        "etc/resolv.conf",
        "etc/hostname",
        "etc/hosts",
    ] {
        assert!(
            layer.join(gone).symlink_metadata().is_err(),
            "{name}'s layer has {gone}"
        );
    }
    opaque.len()
}

/// `dpkg -V` prints nothing and `apt-get check` succeeds in instance `name`.
fn assert_packages_consistent(d: &TestDaemon, name: &str) {
    let verify = d.sh(name, "dpkg -V 2>&1; echo \"dpkg-exit=$?\"");
    assert_eq!(
        verify.trim(),
        "dpkg-exit=0",
        "dpkg -V finds missing or changed files in {name}"
    );
    let check = d.mayfly(&["exec", name, "--", "apt-get", "check"]);
    assert!(check.success(), "apt-get check in {name}: {check}");
    let tools = d.sh(
        name,
        "nginx -v 2>&1 && curl --version | head -1 && ps -o pid= -p 1 && ip -V && \
         ls -d /var/lib/apt/lists/partial /var/cache/apt/archives/partial",
    );
    assert!(tools.contains("nginx version"), "{tools}");
    assert!(tools.contains("curl "), "{tools}");
    assert!(tools.contains("/var/lib/apt/lists/partial"), "{tools}");
}

#[test]
fn debian_minbase_is_clean_and_real_applications_stack_without_false_conflicts() {
    let (_lock, d) = debian_daemon();
    build_minbase(&d, "deb");

    // The OS template keeps apt's sources and directories, and nothing of the build.
    let base = own_layer(&d, "deb");
    for rel in ["var/cache/apt", "var/lib/apt/lists", "var/log/apt"] {
        let left = files_below(&base, rel);
        assert!(left.is_empty(), "the template keeps {left:?}");
    }
    for dir in [
        "var/lib/apt/lists/partial",
        "var/cache/apt/archives/partial",
        "etc/apt/sources.list.d",
    ] {
        assert!(real_dir(&base, dir), "the template lacks {dir}");
    }
    let sources = std::fs::read_to_string(base.join("etc/apt/sources.list")).unwrap();
    assert!(sources.contains("deb "), "apt's sources stay: {sources}");
    for gone in [
        "var/log/dpkg.log",
        "var/log/bootstrap.log",
        "var/log/alternatives.log",
        "var/cache/ldconfig/aux-cache",
        "etc/resolv.conf",
        "etc/hostname",
    ] {
        assert!(
            base.join(gone).symlink_metadata().is_err(),
            "the template has {gone}"
        );
    }
    let info = template_info(&d, "deb");
    let v1 = version(&info, 1);
    eprintln!(
        "minbase bookworm template: {} bytes in {} entries, {} packages",
        top_layer(&v1)["size"],
        top_layer(&v1)["entries"],
        strings(&v1["packages"]).len()
    );

    // Two applications that add to the same directories of the base.
    long_ok(
        &d,
        &[
            "template",
            "build",
            "web",
            "--from",
            "deb",
            "--packages",
            "nginx-light",
        ],
        APT_TIMEOUT,
    );
    long_ok(
        &d,
        &[
            "template",
            "build",
            "tools",
            "--from",
            "deb",
            "--packages",
            "curl,procps,iproute2",
        ],
        APT_TIMEOUT,
    );
    for app in ["web", "tools"] {
        let kept = assert_clean_app_layer(app, &own_layer(&d, app), &base);
        eprintln!("{app}: {kept} opaque markers kept (each over a directory of the base)");
    }

    // Stacked in either order without a conflict, and with --ordered; the package tools find
    // every file of both.
    d.ok(&[
        "launch", "deb", "--app", "web", "--app", "tools", "--name", "both",
    ]);
    assert_packages_consistent(&d, "both");
    d.ok(&[
        "launch",
        "deb",
        "--app",
        "tools",
        "--app",
        "web",
        "--ordered",
        "--name",
        "ordered",
    ]);
    assert_packages_consistent(&d, "ordered");

    // The instance's own name and resolvers, not the build host's: its address on the
    // default network, whose gateway answers names.
    assert_eq!(d.sh("both", "hostname -f").trim(), "both");
    let info = d.info("both");
    let ipv4 = info["interfaces"][0]["ipv4"].as_str().unwrap_or_default();
    let ipv6 = info["interfaces"][0]["ipv6"].as_str().unwrap_or_default();
    assert!(!ipv4.is_empty() && !ipv6.is_empty(), "{info}");
    // glibc asks for IPv6 first: /etc/hosts gives it the instance's own IPv6 address.
    assert_eq!(
        d.sh("both", "getent hosts both")
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>(),
        vec![ipv6, "both"]
    );
    assert_eq!(
        d.sh("both", "getent ahostsv4 both")
            .split_whitespace()
            .next()
            .unwrap_or_default(),
        ipv4
    );
    let resolv = d.sh("both", "cat /etc/resolv.conf");
    assert!(resolv.starts_with("# Written by mayfly"), "{resolv}");
    assert!(resolv.contains("search mayfly"), "{resolv}");
    d.finish();
}

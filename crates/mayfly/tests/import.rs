//! `mayfly template import`: root filesystems from a directory, a `.tar`, `.tar.gz`, `.tar.zst`
//! or stdin, through the CLI and the API; what an instance launched from the result sees
//! (content, modes, owners, links, xattrs); layers shared by digest; `template rm` and `gc`
//! against instances that use a template; the progress bar (only on a terminal); hostile
//! archives (every entry that tries to write outside, odd entries, corrupt streams), each
//! refused or neutralised with nothing written outside the state directory and nothing half
//! created; bad sources and names; OCI image layouts and `docker save` archives (whiteouts,
//! opaque directories, the image's defaults, layers shared with other images).

mod common;
mod view;

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::images::{
    OCI_TAR, OCI_TAR_GZ, docker_save, image_config, sha256_hex, write_oci_layout,
};
use common::{
    CLI_TIMEOUT, Output, RawEntry, TestDaemon, assert_nothing_created, assert_refused, catalogue,
    digests, dir_entries, gzip, layer_dir_name, layer_dirs, mounts_mentioning, octal, raw_tar,
    tar_of, template_info, template_names, version, wait_until, zstd,
};

// ---- helpers: instances, catalogue, outside targets -----------------------------------------

/// An init for trees without one: idles, ends at once on TERM or INT.
const IDLE: &str = "trap 'exit 0' TERM INT; while :; do sleep 1000 & wait $!; done";

/// Launches `name` from `template` with the idle init.
fn launch(d: &TestDaemon, template: &str, name: &str) {
    d.ok(&[
        "launch", template, "--name", name, "--", "/bin/sh", "-c", IDLE,
    ]);
}

/// The layer digests of a template's current version, lowest first.
fn layer_digests(d: &TestDaemon, name: &str) -> Vec<String> {
    let info = template_info(d, name);
    let current = info["current_version"].as_u64().expect("current_version");
    digests(&version(&info, current))
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh path under /tmp (outside every state directory) that does not exist yet.
fn outside_path(tag: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    let p = PathBuf::from(format!(
        "/tmp/mfimp-{}-{n}-{nanos:x}-{tag}",
        std::process::id()
    ));
    assert!(!p.exists(), "{} exists already", p.display());
    p
}

/// Places a hostile archive may target: a directory beside the state directory (in the test's
/// directory) holding one file, an empty directory under /tmp, and a /tmp path that must never
/// come into existence.
#[derive(Debug)]
struct Sentinels {
    /// `<test dir>/sentinel`, holding `keep`.
    near: PathBuf,
    /// An empty directory under /tmp.
    far: PathBuf,
    /// A path under /tmp that does not exist.
    absent: PathBuf,
}

const PRECIOUS: &str = "precious\n";

impl Sentinels {
    fn plant(d: &TestDaemon) -> Sentinels {
        let near = d.dir.join("sentinel");
        std::fs::create_dir(&near).expect("create the sentinel directory");
        std::fs::write(near.join("keep"), PRECIOUS).expect("write the sentinel file");
        let far = outside_path("far");
        std::fs::create_dir(&far).expect("create the /tmp sentinel");
        Sentinels {
            near,
            far,
            absent: outside_path("absent"),
        }
    }

    /// Fails if anything was written to, replaced or created at any of them.
    fn assert_untouched(&self, what: &str) {
        assert_eq!(
            dir_entries(&self.near),
            vec!["keep".to_owned()],
            "{what}: something was written into {}",
            self.near.display()
        );
        let keep = self.near.join("keep");
        let meta = std::fs::symlink_metadata(&keep).expect("stat the sentinel file");
        assert!(meta.is_file(), "{what}: {} was replaced", keep.display());
        assert_eq!(
            meta.nlink(),
            1,
            "{what}: {} was hard-linked",
            keep.display()
        );
        assert_eq!(meta.mode() & 0o7777, 0o644, "{what}: mode changed");
        assert_eq!(
            std::fs::read_to_string(&keep).expect("read the sentinel file"),
            PRECIOUS,
            "{what}: {} was overwritten",
            keep.display()
        );
        assert!(
            dir_entries(&self.far).is_empty(),
            "{what}: something was written into {}: {:?}",
            self.far.display(),
            dir_entries(&self.far)
        );
        assert!(
            std::fs::symlink_metadata(&self.absent).is_err(),
            "{what}: {} was created",
            self.absent.display()
        );
    }
}

impl Drop for Sentinels {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.far);
        let _ = std::fs::remove_dir_all(&self.absent);
        let _ = std::fs::remove_file(&self.absent);
    }
}

/// Writes `bytes` to `<test dir>/<file>` and imports it as `name` through the CLI.
fn import_bytes(d: &TestDaemon, name: &str, file: &str, bytes: &[u8]) -> Output {
    let path = d.dir.join(file);
    std::fs::write(&path, bytes).expect("write the archive");
    let path = path.to_str().expect("utf-8 path").to_owned();
    d.mayfly(&["template", "import", name, &path])
}

/// The ndjson events of an import answer.
fn events(body: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(body)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad event line {l}: {e}")))
        .collect()
}

// ---- helpers: trees -------------------------------------------------------------------------

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty())
        .unwrap_or_else(|e| panic!("setxattr {name} on {}: {e}", path.display()));
}

fn set_mtime(path: &Path, sec: i64, nsec: i64) {
    let t = rustix::fs::Timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &rustix::fs::Timestamps {
            last_access: t,
            last_modification: t,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap_or_else(|e| panic!("utimensat {}: {e}", path.display()));
}

fn lchown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("lchown {}: {e}", path.display()));
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// A `security.capability` value (v2) granting CAP_NET_BIND_SERVICE, permitted and effective.
fn net_bind_capability() -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&(0x0200_0000u32 | 1).to_le_bytes()); // revision 2, effective
    v.extend_from_slice(&(1u32 << 10).to_le_bytes()); // permitted, low word
    v.extend_from_slice(&0u32.to_le_bytes()); // inheritable, low word
    v.extend_from_slice(&0u32.to_le_bytes()); // permitted, high word
    v.extend_from_slice(&0u32.to_le_bytes()); // inheritable, high word
    v
}

/// A root filesystem with every kind of entry: odd modes (setuid, setgid, sticky, 0600),
/// owners other than root (on a symlink too), relative, absolute and dangling symlinks, hard
/// links across directories, a FIFO, an empty and a binary file, nanosecond mtimes, `user.*`
/// xattrs on a file and a directory, a file capability, and a `trusted.overlay.opaque` that
/// must not survive.
fn make_rich_tree(root: &Path, marker: &str) {
    common::make_rootfs(root, marker);
    for applet in ["stat", "readlink", "ls", "cat"] {
        let link = root.join("bin").join(applet);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink("busybox", &link).expect("symlink");
        }
    }
    let data = root.join("data");
    for dir in ["data/sub", "data/sticky", "other"] {
        std::fs::create_dir_all(root.join(dir)).expect("mkdir");
    }
    std::fs::write(data.join("plain"), "hello\n").expect("write");
    std::fs::write(data.join("secret"), "s3cret\n").expect("write");
    std::fs::write(data.join("empty"), "").expect("write");
    std::fs::write(data.join("binary"), b"\x00\x01\x02\xff\xfe bin").expect("write");
    std::fs::write(data.join("suid"), "#!/bin/sh\nid\n").expect("write");
    std::fs::write(data.join("sgid"), "#!/bin/sh\nid\n").expect("write");
    std::fs::write(data.join("capbin"), "caps\n").expect("write");
    std::fs::write(data.join("linked"), "shared inode\n").expect("write");
    std::fs::hard_link(data.join("linked"), data.join("linked2")).expect("link");
    std::fs::hard_link(data.join("linked"), root.join("other/linked3")).expect("link");
    std::os::unix::fs::symlink("../marker", data.join("rel")).expect("symlink");
    std::os::unix::fs::symlink("/etc/passwd", data.join("abs")).expect("symlink");
    std::os::unix::fs::symlink("/no/such/target", data.join("dangling")).expect("symlink");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        data.join("fifo").as_path(),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .expect("mkfifo");
    // Owners first: chown clears the setuid and setgid bits.
    lchown(&data.join("secret"), 1234, 5678);
    lchown(&data.join("sgid"), 0, 42);
    lchown(&data.join("rel"), 4321, 8765);
    lchown(&root.join("other"), 65534, 65534);
    chmod(&data.join("secret"), 0o600);
    chmod(&data.join("suid"), 0o4755);
    chmod(&data.join("sgid"), 0o2711);
    chmod(&data.join("sticky"), 0o1777);
    chmod(&data.join("fifo"), 0o640);
    set_xattr(&data.join("plain"), "user.color", b"blue");
    set_xattr(&data.join("sub"), "user.dir", b"\x00\x01");
    set_xattr(
        &data.join("capbin"),
        "security.capability",
        &net_bind_capability(),
    );
    set_xattr(&data.join("sticky"), "trusted.overlay.opaque", b"y");
    set_mtime(&data.join("plain"), 981_173_106, 123_456_789);
    set_mtime(&data.join("rel"), 1_000_000_000, 5);
    set_mtime(&data.join("secret"), 1_234_567_890, 0);
    // Directory mtimes last: creating children changes them.
    set_mtime(&data.join("sub"), 1_100_000_000, 999_999_999);
    set_mtime(&data, 1_200_000_000, 42);
}

/// A tarball of `root` made by GNU tar (PAX format: hard links, numeric owners, nanosecond
/// mtimes, xattrs, the trusted.overlay one included so that the importer has to drop it).
fn gnu_tar_of(root: &Path) -> Vec<u8> {
    let mut cmd = Command::new("tar");
    cmd.args([
        "--format=posix",
        "--numeric-owner",
        "--xattrs",
        "--xattrs-include=user.*",
        "--xattrs-include=security.capability",
        "--xattrs-include=trusted.*",
        "-C",
    ])
    .arg(root)
    .args(["-cf", "-", "."]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = cmd.output().expect("run tar");
    assert!(
        out.status.success(),
        "tar failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

// ---- helpers: hand-made tar entries ---------------------------------------------------------

/// A tar entry with everything `RawEntry` lacks: owners, device numbers, PAX records (long
/// names, xattrs).
#[derive(Debug, Clone)]
struct Ent {
    name: String,
    kind: u8,
    link: String,
    data: Vec<u8>,
    mode: u32,
    uid: u64,
    gid: u64,
    dev: (u64, u64),
    pax: Vec<(String, Vec<u8>)>,
}

impl Ent {
    fn new(name: &str, kind: u8) -> Ent {
        Ent {
            name: name.to_owned(),
            kind,
            link: String::new(),
            data: Vec::new(),
            mode: if kind == b'5' { 0o755 } else { 0o644 },
            uid: 0,
            gid: 0,
            dev: (0, 0),
            pax: Vec::new(),
        }
    }
    fn file(name: &str, data: &[u8]) -> Ent {
        Ent {
            data: data.to_vec(),
            ..Ent::new(name, b'0')
        }
    }
    fn dir(name: &str) -> Ent {
        Ent::new(name, b'5')
    }
    fn mode(mut self, mode: u32) -> Ent {
        self.mode = mode;
        self
    }
    fn device(name: &str, kind: u8, major: u64, minor: u64) -> Ent {
        Ent {
            dev: (major, minor),
            ..Ent::new(name, kind)
        }
    }
    fn xattr(mut self, key: &str, value: &[u8]) -> Ent {
        self.pax
            .push((format!("SCHILY.xattr.{key}"), value.to_vec()));
        self
    }
}

fn header(name: &[u8], kind: u8, link: &[u8], e: &Ent, size: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    let name = &name[..name.len().min(100)];
    let link = &link[..link.len().min(100)];
    h[..name.len()].copy_from_slice(name);
    octal(&mut h[100..108], u64::from(e.mode));
    octal(&mut h[108..116], e.uid);
    octal(&mut h[116..124], e.gid);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 1_700_000_000);
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    octal(&mut h[329..337], e.dev.0);
    octal(&mut h[337..345], e.dev.1);
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

fn pad(out: &mut Vec<u8>) {
    let rem = out.len() % 512;
    if rem != 0 {
        out.extend(std::iter::repeat_n(0u8, 512 - rem));
    }
}

/// One PAX record: `<len> key=value\n`, the length counting itself.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    assert_eq!(r.len(), len);
    r
}

/// A PAX (ustar + extended headers) archive of `entries`, byte by byte.
fn ent_tar(entries: &[Ent]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut pax: Vec<u8> = Vec::new();
        if e.name.len() > 100 {
            pax.extend(pax_record("path", e.name.as_bytes()));
        }
        if e.link.len() > 100 {
            pax.extend(pax_record("linkpath", e.link.as_bytes()));
        }
        for (k, v) in &e.pax {
            pax.extend(pax_record(k, v));
        }
        if !pax.is_empty() {
            let size = u64::try_from(pax.len()).expect("size");
            out.extend_from_slice(&header(b"PaxHeader", b'x', b"", e, size));
            out.extend_from_slice(&pax);
            pad(&mut out);
        }
        let size = u64::try_from(e.data.len()).expect("size");
        out.extend_from_slice(&header(
            e.name.as_bytes(),
            e.kind,
            e.link.as_bytes(),
            e,
            size,
        ));
        out.extend_from_slice(&e.data);
        pad(&mut out);
    }
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

/// A tar of a small valid root filesystem (busybox, /proc, /sys, /dev, /marker).
fn rootfs_tar(d: &TestDaemon, tag: &str, marker: &str) -> Vec<u8> {
    let dir = d.dir.join(format!("rootfs-{tag}"));
    common::make_rootfs(&dir, marker);
    tar_of(&dir)
}

/// `base` (a complete tar) with `extra` entries added before its end-of-archive marker.
fn tar_with(base: &[u8], extra: &[u8]) -> Vec<u8> {
    let end = end_of_entries(base);
    let mut out = base[..end].to_vec();
    // `extra` is a complete archive too: drop its marker and append ours.
    out.extend_from_slice(&extra[..end_of_entries(extra)]);
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

/// The offsets of the entry headers of a ustar/GNU tar (PAX records included), in order.
fn header_offsets(tar: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 512 <= tar.len() {
        let h = &tar[pos..pos + 512];
        if h.iter().all(|b| *b == 0) {
            return out;
        }
        out.push(pos);
        pos += 512 + entry_size(h).div_ceil(512) * 512;
    }
    panic!("no end-of-archive marker");
}

/// The content size a tar header gives.
fn entry_size(header: &[u8]) -> usize {
    let field = std::str::from_utf8(&header[124..135]).expect("size field");
    usize::from_str_radix(field.trim_matches(|c: char| c == '\0' || c == ' '), 8)
        .expect("octal size")
}

/// The offset of the end-of-archive marker of a tar (the first all-zero header block).
fn end_of_entries(tar: &[u8]) -> usize {
    match header_offsets(tar).last() {
        Some(&last) => last + 512 + entry_size(&tar[last..last + 512]).div_ceil(512) * 512,
        None => 0,
    }
}

// ---- tests: the happy paths -----------------------------------------------------------------

#[test]
fn import_from_dir_tar_gz_zst_and_stdin_shows_the_exact_tree_and_shares_layers() {
    let d = TestDaemon::start();
    let src = d.dir.join("src");
    make_rich_tree(&src, "rich");
    let expected = view::of_dir(&src, 0, &HashSet::new());
    assert!(
        expected.contains_key("data/linked2")
            && expected.contains_key("data/fifo")
            && expected["data/plain"].xattrs.contains_key("user.color")
            && expected["data/plain"].mtime == (981_173_106, 123_456_789),
        "the source tree was made"
    );
    let src_s = src.to_str().expect("utf-8").to_owned();
    let before = layer_dirs(&d);

    // A directory.
    let out = d.mayfly(&["template", "import", "t-dir", &src_s]);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout
            .starts_with("imported template t-dir version 1 (1 layer"),
        "{out}"
    );
    let dir_layers = layer_digests(&d, "t-dir");
    assert_eq!(dir_layers.len(), 1, "{dir_layers:?}");
    let after_dir = layer_dirs(&d);
    let new: Vec<&String> = after_dir.difference(&before).collect();
    assert_eq!(
        new,
        vec![&layer_dir_name(&dir_layers[0])],
        "one new layer directory, named by the digest"
    );

    // The same tree as .tar, .tar.gz, .tar.zst and on stdin: one layer for all four.
    let tar = gnu_tar_of(&src);
    for record in [
        &b"SCHILY.xattr.user.color=blue"[..],
        b"SCHILY.xattr.trusted.overlay.opaque=y",
        b"SCHILY.xattr.security.capability=",
    ] {
        assert!(
            tar.windows(record.len()).any(|w| w == record),
            "GNU tar did not store {}",
            String::from_utf8_lossy(record)
        );
    }
    for (name, file, bytes) in [
        ("t-tar", "rootfs.tar", tar.clone()),
        ("t-gz", "rootfs.tar.gz", gzip(&tar)),
        ("t-zst", "rootfs.tar.zst", zstd(&tar)),
    ] {
        let out = import_bytes(&d, name, file, &bytes);
        assert_eq!(out.code, 0, "{name}: {out}");
        assert!(
            out.stdout
                .starts_with(&format!("imported template {name} version 1 (1 layer")),
            "{name}: {out}"
        );
    }
    let out = d.mayfly_stdin(&["template", "import", "t-stdin", "-"], &zstd(&tar));
    assert_eq!(out.code, 0, "stdin: {out}");
    let tar_layers = layer_digests(&d, "t-tar");
    for name in ["t-gz", "t-zst", "t-stdin"] {
        assert_eq!(
            layer_digests(&d, name),
            tar_layers,
            "{name} has the layer of the same tree as a plain tar"
        );
    }
    // GNU tar keeps everything the directory import copies (nanosecond mtimes, owners,
    // xattrs, hard links, the root's own metadata), so it is the same tree: the same layer.
    assert_eq!(
        tar_layers, dir_layers,
        "the tarball of a tree and the tree itself"
    );
    let after_tars = layer_dirs(&d);
    assert_eq!(
        after_tars, after_dir,
        "no new layer directory for the tarballs"
    );
    // The same directory again: no new layer, the same digest.
    d.ok(&["template", "import", "t-dir2", &src_s]);
    assert_eq!(layer_digests(&d, "t-dir2"), dir_layers);
    assert_eq!(
        layer_dirs(&d),
        after_tars,
        "a second import of a tree shares its layer"
    );

    // `template list`, text and JSON.
    let text = d.ok(&["template", "list"]);
    let header_line = text.lines().next().unwrap_or_default();
    assert!(
        header_line.starts_with("NAME") && header_line.contains("VERSION"),
        "{text}"
    );
    for name in ["t-dir", "t-tar", "t-gz", "t-zst", "t-stdin", "t-dir2"] {
        let row = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} not in the list:\n{text}"));
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(&cols[1..3], ["1", "1"], "version 1, one layer: {row}");
    }
    let list = d.json(&["template", "list", "--json"]);
    let tdir = list
        .as_array()
        .expect("array")
        .iter()
        .find(|t| t["name"] == "t-dir")
        .unwrap_or_else(|| panic!("t-dir not in {list}"));
    assert_eq!(tdir["current_version"], 1, "{tdir}");
    assert_eq!(tdir["builtin"], false, "{tdir}");

    // `template info --json`: the layer's digest, size and entries, the message.
    let info = template_info(&d, "t-tar");
    assert_eq!(info["name"], "t-tar", "{info}");
    let v1 = &info["versions"][0];
    assert_eq!(v1["version"], 1, "{info}");
    let layer = &v1["layers"][0];
    assert!(
        layer["digest"]
            .as_str()
            .is_some_and(|s| s.starts_with("blake3:")),
        "{info}"
    );
    let busybox_size = std::fs::metadata("/bin/busybox").expect("busybox").len();
    assert!(
        layer["size"].as_u64().is_some_and(|s| s > busybox_size),
        "the size counts file content: {info}"
    );
    assert!(
        layer["entries"]
            .as_u64()
            .is_some_and(|n| n >= u64::try_from(expected.len()).expect("len") - 1),
        "{info}"
    );
    assert!(
        v1["config"]["command"]
            .as_array()
            .is_some_and(|c| c.is_empty()),
        "no /sbin/init, no --cmd: no default command: {info}"
    );

    // What instances see: exactly the source tree (minus what mayfly mounts), for the
    // directory and for the tarball.
    for (template, inst) in [
        ("t-dir", "from-dir"),
        ("t-tar", "from-tar"),
        ("t-zst", "from-zst"),
    ] {
        launch(&d, template, inst);
        let seen = view::of_instance(&d, inst);
        let mut want = expected.clone();
        // The root of an instance is its writable layer's directory (and no part of its view).
        want.remove(".");
        view::assert_same(&format!("{template} seen by {inst}"), &want, &seen);
    }
    // From inside too: owners, modes, link targets, hard-link counts, the FIFO.
    let inside = d.sh(
        "from-tar",
        "stat -c '%n %u:%g %a %h' /data/secret /data/suid /data/sgid /data/sticky /data/linked /other/linked3; \
         readlink /data/abs; readlink /data/rel; cat /data/rel; test -p /data/fifo && echo fifo",
    );
    assert_eq!(
        inside,
        "/data/secret 1234:5678 600 1\n/data/suid 0:0 4755 1\n/data/sgid 0:42 2711 1\n\
         /data/sticky 0:0 1777 2\n/data/linked 0:0 644 3\n/other/linked3 0:0 644 3\n\
         /etc/passwd\n../marker\nrich\nfifo\n",
        "what the instance sees from inside"
    );

    // On the host, the layers hold the file capability but no trusted.overlay.* xattr taken
    // from the input (it would change what overlayfs makes of the layer).
    for digest in [&dir_layers[0], &tar_layers[0]] {
        let layer = d.state.join("layers").join(layer_dir_name(digest));
        assert_eq!(
            view::xattr_value(&layer.join("data/capbin"), "security.capability"),
            Some(net_bind_capability()),
            "{digest}: the file capability is kept"
        );
        assert!(
            !view::xattr_names(&layer.join("data/sticky"))
                .iter()
                .any(|x| x.starts_with("trusted.")),
            "{digest}: trusted.overlay.opaque was imported: {:?}",
            view::xattr_names(&layer.join("data/sticky"))
        );
    }

    for inst in ["from-dir", "from-tar", "from-zst"] {
        d.ok(&["rm", "--force", inst]);
    }
    d.finish();
}

#[test]
fn import_over_the_api_from_an_upload_and_from_a_path() {
    let d = TestDaemon::start();
    let tar = rootfs_tar(&d, "api", "via-api");

    // An upload: the body is the archive, `?name=` names the template; newline-delimited
    // events end with `done`.
    let r = d.api_raw(
        "POST",
        "/v1/templates?name=api-up&message=uploaded%20by%20a%20test",
        "application/x-tar",
        &gzip(&tar),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let evs = events(&r.body);
    let last = evs.last().expect("at least one event");
    assert_eq!(last["done"]["name"], "api-up", "{evs:?}");
    assert_eq!(
        last["done"]["versions"][0]["message"], "uploaded by a test",
        "{evs:?}"
    );
    assert!(
        evs[..evs.len() - 1]
            .iter()
            .all(|e| e.get("progress").is_some()),
        "only progress before the result: {evs:?}"
    );

    // A path on the daemon's host, with a default command.
    let path = d.dir.join("api.tar");
    std::fs::write(&path, &tar).expect("write");
    let body = json!({
        "name": "api-path",
        "path": path.to_str().expect("utf-8"),
        "command": ["/bin/sh", "-c", IDLE],
    });
    let r = d.api_raw(
        "POST",
        "/v1/templates",
        "application/json",
        body.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let evs = events(&r.body);
    let done = &evs.last().expect("an event")["done"];
    assert_eq!(done["name"], "api-path", "{evs:?}");
    assert_eq!(
        done["versions"][0]["config"]["command"],
        json!(["/bin/sh", "-c", IDLE]),
        "{evs:?}"
    );
    // The same tree: the same layer.
    assert_eq!(layer_digests(&d, "api-up"), layer_digests(&d, "api-path"));

    // GET shows both; the default command is the init.
    let (status, list) = d.api("GET", "/v1/templates", None);
    assert_eq!(status, 200);
    let names: Vec<&str> = list
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        names.contains(&"api-up") && names.contains(&"api-path"),
        "{list}"
    );
    d.ok(&["launch", "api-path", "--name", "apiinst"]);
    assert_eq!(d.sh("apiinst", "cat /marker"), "via-api\n");

    // Refusals over the API: a relative path, an unknown field, a hostile upload.
    let r = d.api_raw(
        "POST",
        "/v1/templates",
        "application/json",
        json!({"name": "rel", "path": "relative/dir"})
            .to_string()
            .as_bytes(),
    );
    let evs = events(&r.body);
    let err = evs
        .iter()
        .find_map(|e| e.get("error"))
        .unwrap_or_else(|| panic!("no error event: {evs:?}"));
    assert_eq!(err["code"], "invalid_argument", "{err}");
    assert!(
        err["message"]
            .as_str()
            .is_some_and(|m| m.contains("absolute")),
        "{err}"
    );
    let (status, v) = d.api(
        "POST",
        "/v1/templates",
        Some(&json!({"name": "x", "path": "/tmp", "bogus": 1})),
    );
    assert_eq!(status, 400, "unknown fields are refused: {v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("bogus")),
        "the error names the unknown field: {v}"
    );

    let before = catalogue(&d);
    let evil = raw_tar(&[RawEntry::file("../../../../sentinel/api-evil", b"x")]);
    let r = d.api_raw(
        "POST",
        "/v1/templates?name=api-evil",
        "application/x-tar",
        &evil,
    );
    let evs = events(&r.body);
    let err = evs
        .iter()
        .find_map(|e| e.get("error"))
        .unwrap_or_else(|| panic!("no error event: {evs:?}"));
    assert_eq!(err["code"], "invalid_argument", "{err}");
    assert!(
        err["message"]
            .as_str()
            .is_some_and(|m| m.contains("../../../../sentinel/api-evil")),
        "the error names the entry: {err}"
    );
    assert!(
        !d.dir.join("sentinel").exists(),
        "nothing was written outside"
    );
    assert_nothing_created(&d, &before, "hostile upload over the API");
    let (status, _) = d.api("GET", "/v1/templates/api-evil", None);
    assert_eq!(status, 404, "no half-created template");

    // DELETE: refused (409, in_use, naming the instance) while an instance uses it.
    let (status, v) = d.api("DELETE", "/v1/templates/api-path", None);
    assert_eq!(status, 409, "{v}");
    assert_eq!(v["error"]["code"], "in_use", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("apiinst")),
        "{v}"
    );
    d.ok(&["rm", "--force", "apiinst"]);
    for name in ["api-up", "api-path"] {
        let (status, v) = d.api("DELETE", &format!("/v1/templates/{name}"), None);
        assert_eq!(status, 204, "{v}");
    }
    assert_eq!(template_names(&d), ["busybox"]);
    d.finish();
}

// ---- tests: removal and garbage collection --------------------------------------------------

#[test]
fn template_rm_is_refused_while_used_and_removes_only_unshared_layers() {
    let d = TestDaemon::start();
    let x = d.dir.join("x");
    common::make_rootfs(&x, "shared");
    let y = d.dir.join("y");
    common::make_rootfs(&y, "solo");
    let (xs, ys) = (x.to_str().expect("utf-8"), y.to_str().expect("utf-8"));
    d.ok(&["template", "import", "shared-a", xs]);
    d.ok(&["template", "import", "shared-b", xs]);
    d.ok(&["template", "import", "solo", ys]);
    let shared = layer_digests(&d, "shared-a");
    assert_eq!(shared, layer_digests(&d, "shared-b"), "one tree, one layer");
    let solo = layer_digests(&d, "solo");
    assert_ne!(shared, solo);
    let shared_dir = layer_dir_name(&shared[0]);
    let solo_dir = layer_dir_name(&solo[0]);

    // In use by a running and by a stopped instance: refused, naming them.
    launch(&d, "solo", "user1");
    d.ok(&[
        "launch",
        "solo",
        "--name",
        "user2",
        "--no-start",
        "--",
        "true",
    ]);
    let out = d.mayfly(&["template", "rm", "solo"]);
    assert_refused(&out, "rm of a template in use", &["solo", "user1", "user2"]);
    assert!(template_names(&d).contains(&"solo".to_owned()));
    assert!(layer_dirs(&d).contains(&solo_dir));
    let info = template_info(&d, "solo");
    let mut users: Vec<String> = info["used_by"]
        .as_array()
        .expect("used_by")
        .iter()
        .filter_map(|u| u.as_str().map(str::to_owned))
        .collect();
    users.sort();
    assert_eq!(users, ["user1", "user2"], "{info}");
    // Still usable: the running instance works, a new one starts.
    assert_eq!(d.sh("user1", "cat /marker"), "solo\n");
    launch(&d, "solo", "user3");
    assert_eq!(d.sh("user3", "cat /marker"), "solo\n");

    // gc never removes a layer in use.
    let gc = d.json(&["template", "gc", "--json"]);
    let removed: Vec<&str> = gc["removed"]
        .as_array()
        .expect("removed")
        .iter()
        .filter_map(|r| r.as_str())
        .collect();
    assert!(removed.is_empty(), "gc removed layers in use: {gc}");
    assert!(layer_dirs(&d).contains(&solo_dir) && layer_dirs(&d).contains(&shared_dir));
    assert_eq!(d.sh("user3", "cat /marker"), "solo\n");

    // Once its instances are gone, it goes, and so does its layer (nothing else uses it).
    for u in ["user1", "user2", "user3"] {
        d.ok(&["rm", "--force", u]);
    }
    let out = d.mayfly(&["template", "rm", "solo"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.stdout, "removed template solo\n", "{out}");
    assert!(!template_names(&d).contains(&"solo".to_owned()));
    assert!(
        !layer_dirs(&d).contains(&solo_dir),
        "the unshared layer is removed with its template"
    );
    assert_refused(
        &d.mayfly(&["template", "info", "solo"]),
        "info of a removed template",
        &["solo"],
    );

    // A shared layer stays while another template uses it, an instance of which still works.
    launch(&d, "shared-b", "onb");
    d.ok(&["template", "rm", "shared-a"]);
    assert!(
        layer_dirs(&d).contains(&shared_dir),
        "the layer shared-b uses was removed with shared-a"
    );
    assert_eq!(d.sh("onb", "cat /marker"), "shared\n");
    launch(&d, "shared-b", "onb2");
    assert_eq!(d.sh("onb2", "cat /marker"), "shared\n");
    let gc = d.json(&["template", "gc", "--json"]);
    assert!(
        gc["removed"].as_array().is_some_and(|r| r.is_empty()),
        "{gc}"
    );
    assert!(layer_dirs(&d).contains(&shared_dir));
    assert_refused(
        &d.mayfly(&["template", "rm", "shared-b"]),
        "rm of shared-b in use",
        &["onb"],
    );
    d.ok(&["rm", "--force", "onb", "onb2"]);
    d.ok(&["template", "rm", "shared-b"]);
    assert!(
        !layer_dirs(&d).contains(&shared_dir),
        "the last user is gone"
    );
    let gc = d.ok(&["template", "gc"]);
    assert!(gc.starts_with("removed 0 unused layer(s)"), "{gc}");
    // The built-in template is untouched by all this.
    assert_eq!(template_names(&d), ["busybox"]);
    d.ok(&["run", "--rm", "busybox", "--", "true"]);
    d.finish();
}

// ---- tests: progress ------------------------------------------------------------------------

/// A tarball of a root filesystem with `mib` MiB of extra content.
fn big_rootfs_tar(d: &TestDaemon, tag: &str, mib: usize) -> Vec<u8> {
    let dir = d.dir.join(format!("big-{tag}"));
    common::make_rootfs(&dir, tag);
    let chunk: Vec<u8> = (0..(1usize << 20))
        .map(|i| u8::try_from(i % 251).expect("byte"))
        .collect();
    for i in 0..mib {
        std::fs::write(dir.join(format!("root/blob{i}")), &chunk).expect("write");
    }
    tar_of(&dir)
}

#[test]
fn import_without_a_terminal_prints_only_the_result() {
    let d = TestDaemon::start();
    let tar = big_rootfs_tar(&d, "quiet", 4);
    let path = d.dir.join("quiet.tar");
    std::fs::write(&path, &tar).expect("write");
    let dir = d.dir.join("big-quiet");
    for (name, source) in [
        ("quiet-file", path.to_str().expect("utf-8")),
        ("quiet-dir", dir.to_str().expect("utf-8")),
    ] {
        let out = d.mayfly(&["template", "import", name, source]);
        assert_eq!(out.code, 0, "{out}");
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(
            lines[0].starts_with(&format!(
                "imported template {name} version 1 (1 layer, top blake3:"
            )),
            "{out}"
        );
        assert!(lines[1].starts_with("note: it has no /sbin/init"), "{out}");
        for (stream, text) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            assert!(
                !text.contains('\r') && !text.contains('\x1b'),
                "{name}: terminal control codes on {stream}: {out:?}"
            );
        }
        assert_eq!(out.stderr, "", "{name}: nothing on stderr: {out}");
    }
    let out = d.mayfly_stdin(&["template", "import", "quiet-stdin", "-"], &tar);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        !out.stdout.contains('\r') && !out.stdout.contains('\x1b'),
        "{out}"
    );
    assert_eq!(out.stderr, "", "{out}");
    // --json prints one JSON document and nothing else.
    let out = d.mayfly(&[
        "template",
        "import",
        "quiet-json",
        path.to_str().expect("utf-8"),
        "--json",
    ]);
    assert_eq!(out.code, 0, "{out}");
    let v: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["name"], "quiet-json");
    d.finish();
}

/// Runs `cmd` with its stderr on a new pseudo-terminal (stdout a pipe, stdin /dev/null);
/// returns the exit code, stdout, and everything written to the terminal.
fn run_with_stderr_on_pty(mut cmd: Command) -> (i32, String, Vec<u8>) {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let master =
        openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).expect("open a pty");
    grantpt(&master).expect("grantpt");
    unlockpt(&master).expect("unlockpt");
    rustix::termios::tcsetwinsize(
        &master,
        rustix::termios::Winsize {
            ws_row: 40,
            ws_col: 160,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    )
    .expect("set the window size");
    let name = ptsname(&master, Vec::new()).expect("ptsname");
    let slave: OwnedFd = rustix::fs::open(
        name.as_c_str(),
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .expect("open the pty's terminal");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(slave));
    let mut child = cmd.spawn().expect("spawn");
    // Our copy of the terminal goes with the command, so that the master sees EOF (EIO) when
    // the child is done.
    drop(cmd);
    let mut stdout = child.stdout.take().expect("stdout");
    let out_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let term_thread = std::thread::spawn(move || {
        let mut file = std::fs::File::from(master);
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match file.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf
    });
    let deadline = Instant::now() + CLI_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the command did not finish within {CLI_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = out_thread.join().expect("stdout reader");
    let term = term_thread.join().expect("terminal reader");
    (status.code().unwrap_or(-1), stdout, term)
}

#[test]
fn import_on_a_terminal_shows_progress_on_stderr_only() {
    let d = TestDaemon::start();
    let tar = big_rootfs_tar(&d, "loud", 8);
    let path = d.dir.join("loud.tar");
    std::fs::write(&path, &tar).expect("write");
    let (code, stdout, term) = run_with_stderr_on_pty(d.command(&[
        "template",
        "import",
        "loud",
        path.to_str().expect("utf-8"),
    ]));
    let term = String::from_utf8_lossy(&term).into_owned();
    assert_eq!(code, 0, "stdout: {stdout}\nterminal: {term:?}");
    assert!(
        term.contains("uploading") && term.contains("loud.tar"),
        "no progress display on the terminal: {term:?}"
    );
    assert!(
        stdout.starts_with("imported template loud version 1 (1 layer"),
        "{stdout:?}"
    );
    assert!(
        !stdout.contains('\x1b') && !stdout.contains('\r') && !stdout.contains("uploading"),
        "the progress display leaked onto stdout: {stdout:?}"
    );
    assert_eq!(layer_digests(&d, "loud").len(), 1);

    // A directory: a spinner naming it while it is copied.
    let dir = d.dir.join("big-loud");
    let (code, stdout, term) = run_with_stderr_on_pty(d.command(&[
        "template",
        "import",
        "loud-dir",
        dir.to_str().expect("utf-8"),
    ]));
    let term = String::from_utf8_lossy(&term).into_owned();
    assert_eq!(code, 0, "stdout: {stdout}\nterminal: {term:?}");
    assert!(
        term.contains("copying") && term.contains("big-loud"),
        "no progress display on the terminal: {term:?}"
    );
    assert!(
        stdout.starts_with("imported template loud-dir version 1 (1 layer")
            && !stdout.contains('\x1b')
            && !stdout.contains("copying"),
        "{stdout:?}"
    );
    d.finish();
}

// ---- tests: hostile archives ----------------------------------------------------------------

#[test]
fn hostile_archives_are_refused_and_write_nothing_outside() {
    let d = TestDaemon::start();
    let s = Sentinels::plant(&d);
    let near = s.near.to_str().expect("utf-8").to_owned();
    let far = s.far.to_str().expect("utf-8").to_owned();
    let absent = s.absent.to_str().expect("utf-8").to_owned();
    // From the staging tree (<state>/tmp/import-X/tree) four levels up is the test directory.
    let up = "../../../../sentinel";
    let base = rootfs_tar(&d, "hostile", "hostile");

    // (case, entries, what the error must name)
    let cases: Vec<(&str, Vec<RawEntry>, Vec<String>)> = vec![
        (
            "dot-dot component",
            vec![RawEntry::file(&format!("{up}/evil"), b"pwned")],
            vec![format!("{up}/evil"), "..".to_owned()],
        ),
        (
            "dot-dot in the middle",
            vec![
                RawEntry::dir("a"),
                RawEntry::file("a/b/../../../../../sentinel/evil", b"pwned"),
            ],
            vec!["a/b/../../../../../sentinel/evil".to_owned()],
        ),
        (
            "absolute path",
            vec![RawEntry::file(&format!("{near}/evil"), b"pwned")],
            vec![format!("{near}/evil"), "absolute".to_owned()],
        ),
        (
            "absolute path under /tmp",
            vec![RawEntry::file(&absent, b"pwned")],
            vec![absent.clone()],
        ),
        (
            "write through an absolute symlink",
            vec![
                RawEntry::symlink("link", &far),
                RawEntry::file("link/evil", b"pwned"),
            ],
            vec!["link/evil".to_owned(), "symlink".to_owned()],
        ),
        (
            "write through a symlink to the sentinel",
            vec![
                RawEntry::symlink("link", &near),
                RawEntry::file("link/keep", b"pwned"),
            ],
            vec!["link/keep".to_owned()],
        ),
        (
            "write through a relative symlink that climbs out",
            vec![
                RawEntry::dir("etc"),
                RawEntry::symlink("etc/up", "../../../../../sentinel"),
                RawEntry::file("etc/up/evil", b"pwned"),
            ],
            vec!["etc/up/evil".to_owned()],
        ),
        (
            "write through a symlink deeper down",
            vec![
                RawEntry::symlink("deep", &far),
                RawEntry::file("deep/x/y/evil", b"pwned"),
            ],
            vec!["deep/x/y/evil".to_owned()],
        ),
        (
            "a directory entry through a symlink",
            vec![RawEntry::symlink("dl", &far), RawEntry::dir("dl/newdir")],
            vec!["dl/newdir".to_owned()],
        ),
        (
            "a symlink through a symlink",
            vec![
                RawEntry::symlink("sl", &far),
                RawEntry::symlink("sl/planted", "/etc/shadow"),
            ],
            vec!["sl/planted".to_owned()],
        ),
        (
            "hard link to an absolute path",
            vec![RawEntry::hardlink("hl", &format!("{near}/keep"))],
            vec!["hl".to_owned(), "absolute".to_owned()],
        ),
        (
            "hard link to a host file",
            vec![RawEntry::hardlink("passwd", "/etc/passwd")],
            vec!["passwd".to_owned()],
        ),
        (
            "hard link climbing out",
            vec![RawEntry::hardlink("hl", &format!("{up}/keep"))],
            vec!["hl".to_owned(), "..".to_owned()],
        ),
        (
            "hard link to an outside file, then a file written over it",
            vec![
                RawEntry::hardlink("hl", &format!("{up}/keep")),
                RawEntry::file("hl", b"pwned"),
            ],
            vec!["hl".to_owned()],
        ),
        (
            "hard link to a symlink that points outside",
            vec![
                RawEntry::symlink("sym", &format!("{near}/keep")),
                RawEntry::hardlink("hl", "sym"),
                RawEntry::file("hl", b"pwned"),
            ],
            vec!["hl".to_owned(), "sym".to_owned()],
        ),
        (
            "hard link through a symlinked directory",
            vec![
                RawEntry::symlink("sd", &near),
                RawEntry::hardlink("hl", "sd/keep"),
            ],
            vec!["hl".to_owned()],
        ),
        (
            "hard link to a file not in the archive",
            vec![RawEntry::hardlink("hl", "etc/shadow")],
            vec!["hl".to_owned(), "etc/shadow".to_owned()],
        ),
        (
            "a directory replaced by a symlink, then written through",
            vec![
                RawEntry::dir("d"),
                RawEntry::file("d/ok", b"fine"),
                RawEntry::symlink("d", &far),
                RawEntry::file("d/evil", b"pwned"),
            ],
            vec!["`d`".to_owned()],
        ),
        (
            "a directory replaced by a relative symlink that climbs out",
            vec![
                RawEntry::dir("d"),
                RawEntry::symlink("d", "../../../../sentinel"),
                RawEntry::file("d/keep", b"pwned"),
            ],
            vec!["`d`".to_owned()],
        ),
        (
            "a file replacing a directory",
            vec![RawEntry::dir("d"), RawEntry::file("d", b"x")],
            vec!["`d`".to_owned(), "directory".to_owned()],
        ),
    ];
    for (case, entries, mentions) in &cases {
        let before = catalogue(&d);
        let mut all = vec![RawEntry::dir("data")];
        all.extend(entries.iter().cloned());
        let evil = tar_with(&base, &raw_tar(&all));
        let mentions: Vec<&str> = mentions.iter().map(String::as_str).collect();
        let out = import_bytes(&d, "evil", "evil.tar", &evil);
        assert_refused(&out, case, &mentions);
        s.assert_untouched(case);
        assert_nothing_created(&d, &before, case);
        // The same archive uploaded on stdin, gzip-compressed.
        let out = d.mayfly_stdin(&["template", "import", "evil", "-"], &gzip(&evil));
        assert_refused(&out, &format!("{case} (stdin)"), &mentions);
        s.assert_untouched(case);
        assert_nothing_created(&d, &before, case);
    }
    d.finish();
}

#[test]
fn odd_entries_devices_fifos_setuid_duplicates_are_neutralised() {
    let d = TestDaemon::start();
    let s = Sentinels::plant(&d);
    let base = rootfs_tar(&d, "odd", "odd");
    let extra = ent_tar(&[
        Ent::dir("odd"),
        // A device that would give the host's memory, and one that would read zeros: kept as
        // nodes, useless inside (layers are mounted nodev).
        Ent::device("odd/mem", b'3', 1, 1).mode(0o666),
        Ent::device("odd/zero", b'3', 1, 5).mode(0o666),
        Ent::device("odd/disk", b'4', 8, 0).mode(0o660),
        Ent::new("odd/fifo", b'6').mode(0o600),
        // Setuid root, setgid, sticky.
        Ent::file("odd/suid", b"#!/bin/sh\nid -u\n").mode(0o4755),
        Ent::file("odd/sgid", b"x").mode(0o2755),
        Ent::dir("odd/sticky").mode(0o1777),
        // Duplicates: the later file wins; a later directory replaces a file; a directory
        // twice is one directory.
        Ent::file("odd/dup", b"first"),
        Ent::file("odd/dup", b"second"),
        Ent::file("odd/becomes-dir", b"file first"),
        Ent::dir("odd/becomes-dir"),
        Ent::file("odd/becomes-dir/inner", b"inner"),
        Ent::dir("odd/twice"),
        Ent::file("odd/twice/a", b"a"),
        Ent::dir("odd/twice").mode(0o700),
        // xattrs: user.* kept, trusted.overlay.* dropped (opaque and whiteout markers planted
        // by an archive would change overlayfs semantics), security.selinux dropped.
        Ent::file("odd/xattrs", b"x")
            .xattr("user.keep", b"kept")
            .xattr("trusted.overlay.opaque", b"y")
            .xattr("trusted.overlay.redirect", b"/etc")
            .xattr("security.selinux", b"system_u:object_r:shadow_t:s0"),
        Ent::dir("odd/opaque").xattr("trusted.overlay.opaque", b"y"),
        // Owners other than root, and one at the top of the id range.
        Ent {
            uid: 1000,
            gid: 100,
            ..Ent::file("odd/owned", b"o")
        },
        Ent {
            uid: 65534,
            gid: 65534,
            ..Ent::file("odd/nobody", b"n")
        },
        // A `.wh.` name in a rootfs tarball is just a file.
        Ent::file("odd/.wh.not-a-whiteout", b"plain"),
    ]);
    let tar = tar_with(&base, &extra);
    let before = layer_dirs(&d);
    let out = import_bytes(&d, "odd", "odd.tar", &tar);
    assert_eq!(out.code, 0, "{out}");
    s.assert_untouched("odd entries");
    let digest = layer_digests(&d, "odd");
    let layer = d.state.join("layers").join(layer_dir_name(&digest[0]));
    assert_eq!(
        layer_dirs(&d)
            .difference(&before)
            .cloned()
            .collect::<Vec<_>>(),
        vec![layer_dir_name(&digest[0])]
    );
    for (path, want) in [
        ("odd/xattrs", vec!["user.keep".to_owned()]),
        ("odd/opaque", Vec::new()),
    ] {
        assert_eq!(
            view::xattr_names(&layer.join(path)),
            want,
            "only portable xattrs survive on {path}"
        );
    }

    // The nodes are real on the host, where they are not nodev: only root may reach them.
    for dir in ["layers", "tmp"] {
        let mode = std::fs::metadata(d.state.join(dir)).expect("stat").mode() & 0o7777;
        assert_eq!(
            mode & 0o077,
            0,
            "<state>/{dir} is open to other users: {mode:o}"
        );
    }

    launch(&d, "odd", "oddi");
    let tree = view::of_instance(&d, "oddi");
    let get = |p: &str| {
        tree.get(p)
            .unwrap_or_else(|| panic!("{p} is missing from the instance"))
            .clone()
    };
    assert_eq!(get("odd/mem").kind, "char");
    assert_eq!(get("odd/mem").rdev, rustix::fs::makedev(1, 1));
    assert_eq!(get("odd/disk").kind, "block");
    assert_eq!(get("odd/fifo").kind, "fifo");
    assert_eq!(get("odd/fifo").mode, 0o600);
    assert_eq!(get("odd/suid").mode, 0o4755, "setuid is kept");
    assert_eq!(get("odd/sgid").mode, 0o2755, "setgid is kept");
    assert_eq!(get("odd/sticky").mode, 0o1777);
    assert_eq!(
        get("odd/twice").mode,
        0o700,
        "the later directory entry sets its mode"
    );
    assert_eq!((get("odd/owned").uid, get("odd/owned").gid), (1000, 100));
    assert_eq!(
        (get("odd/nobody").uid, get("odd/nobody").gid),
        (65534, 65534)
    );
    assert_eq!(get("odd/becomes-dir").kind, "dir");
    assert_eq!(
        get("odd/xattrs").xattrs,
        BTreeMap::from([("user.keep".to_owned(), b"kept".to_vec())])
    );
    // The devices cannot be opened inside: nodev.
    let out = d.mayfly(&[
        "exec",
        "oddi",
        "--",
        "sh",
        "-c",
        "head -c 4 /odd/zero | wc -c; head -c 4 /odd/mem | wc -c; head -c 4 /odd/disk | wc -c",
    ]);
    assert_eq!(
        out.stdout.split_whitespace().collect::<Vec<_>>(),
        ["0", "0", "0"],
        "device nodes of the template are usable inside: {out}"
    );
    assert!(
        out.stderr.contains("ermission denied") || out.stderr.contains("not permitted"),
        "{out}"
    );
    assert_eq!(
        d.sh(
            "oddi",
            "cat /odd/dup; echo; cat /odd/becomes-dir/inner; echo; cat /odd/twice/a; echo; cat /odd/.wh.not-a-whiteout"
        ),
        "second\ninner\na\nplain",
        "duplicates: the later entry wins"
    );
    d.ok(&["rm", "--force", "oddi"]);
    d.finish();
}

#[test]
fn long_names_are_kept_and_overlong_components_refused_cleanly() {
    let d = TestDaemon::start();
    let s = Sentinels::plant(&d);
    let base = rootfs_tar(&d, "long", "long");
    // A 250-byte path of 50-byte components (beyond ustar's 100), and a 255-byte name (the
    // longest a file system takes), both through PAX records; a long symlink target too.
    let seg = "c".repeat(49);
    let deep = format!("long/{seg}/{seg}/{seg}/{seg}/file");
    let max_name = format!("long/{}", "n".repeat(255));
    let long_target = format!("/{}/target", "t".repeat(200));
    let extra = ent_tar(&[
        Ent::dir("long"),
        Ent::file(&deep, b"deep"),
        Ent::file(&max_name, b"max"),
        Ent {
            link: long_target.clone(),
            ..Ent::new("long/sym", b'2')
        },
        Ent {
            link: deep.clone(),
            ..Ent::new(&format!("long/{}", "h".repeat(150)), b'1')
        },
    ]);
    let out = import_bytes(&d, "long", "long.tar", &tar_with(&base, &extra));
    assert_eq!(out.code, 0, "{out}");
    launch(&d, "long", "longi");
    let tree = view::of_instance(&d, "longi");
    assert!(tree.contains_key(&deep), "the deep path is missing");
    assert!(tree.contains_key(&max_name), "the 255-byte name is missing");
    assert_eq!(tree["long/sym"].target, long_target);
    let hard = format!("long/{}", "h".repeat(150));
    assert!(
        tree[&hard].link_of.as_deref() == Some(deep.as_str())
            || tree[&deep].link_of.as_deref() == Some(hard.as_str()),
        "the long hard link is not a link of the deep file: {:?} {:?}",
        tree[&hard],
        tree[&deep]
    );
    assert_eq!(d.sh("longi", &format!("cat /{deep}")), "deep");

    // A component longer than any file system allows: refused, naming it, nothing left.
    let before = catalogue(&d);
    for (case, name) in [
        ("a 256-byte name", format!("long/{}", "x".repeat(256))),
        ("a 5000-byte name", format!("long/{}", "y".repeat(5000))),
    ] {
        let evil = tar_with(&base, &ent_tar(&[Ent::dir("long"), Ent::file(&name, b"x")]));
        let out = import_bytes(&d, "toolong", "toolong.tar", &evil);
        assert_refused(&out, case, &["long/"]);
        assert!(
            out.stderr.contains(&name[..40]),
            "{case}: the error does not name the entry: {out}"
        );
        s.assert_untouched(case);
        assert_nothing_created(&d, &before, case);
    }
    d.ok(&["rm", "--force", "longi"]);
    d.finish();
}

#[test]
fn corrupt_and_non_tar_input_is_refused_cleanly() {
    let d = TestDaemon::start();
    let s = Sentinels::plant(&d);
    let good = rootfs_tar(&d, "corrupt", "corrupt");
    let end = end_of_entries(&good);
    // A cut inside the content of a file (busybox is large, so the middle of the archive is
    // inside it).
    let mid = good.len() / 2 + 100;
    // Damage near the end, so that the daemon has read the whole upload when it finds it (an
    // early failure of a large upload is `early_refusals_of_a_large_upload_reach_the_client`).
    let last = *header_offsets(&good).last().expect("entries");
    let mut bad_checksum = good.clone();
    bad_checksum[last] ^= 0x20;
    let gz = gzip(&good);
    let mut gz_corrupt = gz.clone();
    let n = gz.len();
    for b in &mut gz_corrupt[n - 300..n - 236] {
        *b ^= 0x5a;
    }
    let mut gz_bad_crc = gz.clone();
    gz_bad_crc[n - 6] ^= 0xff;
    let zst = zstd(&good);
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("empty file", "empty.tar", Vec::new()),
        (
            "text, not a tar",
            "notes.tar",
            b"this is not a tarball\n".to_vec(),
        ),
        (
            "random bytes",
            "random.tar",
            (0..100_000u32)
                .map(|i| u8::try_from((i.wrapping_mul(2_654_435_761) >> 13) & 0xff).expect("byte"))
                .collect(),
        ),
        ("cut inside a file", "cut.tar", good[..mid].to_vec()),
        (
            "cut inside a header",
            "cuthdr.tar",
            good[..last + 200].to_vec(),
        ),
        (
            "cut at a block boundary, without end marker",
            "noend.tar",
            good[..end].to_vec(),
        ),
        ("bad header checksum", "sum.tar", bad_checksum),
        (
            "a .tar.gz that is not gzip",
            "fake.tar.gz",
            b"PK\x03\x04 zip, not gzip".repeat(100),
        ),
        (
            "gzip of garbage",
            "garbage.tar.gz",
            gzip(b"not a tar inside the gzip at all"),
        ),
        (
            "truncated gzip",
            "cut.tar.gz",
            gz[..gz.len() - 100].to_vec(),
        ),
        ("corrupt gzip", "bad.tar.gz", gz_corrupt),
        ("gzip with a bad checksum", "crc.tar.gz", gz_bad_crc),
        (
            "truncated zstd",
            "cut.tar.zst",
            zst[..zst.len() / 2].to_vec(),
        ),
        ("xz", "x.tar.xz", b"\xfd7zXZ\x00 more".to_vec()),
        ("bzip2", "x.tar.bz2", b"BZh91AY&SY".to_vec()),
    ];
    for (case, file, bytes) in &cases {
        let before = catalogue(&d);
        let out = import_bytes(&d, "corrupt", file, bytes);
        assert_refused(&out, case, &[]);
        let lower = out.stderr.to_lowercase();
        assert!(
            ["archive", "tar", "gzip", "zstd", "corrupt", "unsupported"]
                .iter()
                .any(|w| lower.contains(w)),
            "{case}: the error does not say the archive is bad: {out}"
        );
        s.assert_untouched(case);
        assert_nothing_created(&d, &before, case);
        let out = d.mayfly_stdin(&["template", "import", "corrupt", "-"], bytes);
        assert_refused(&out, &format!("{case} (stdin)"), &[]);
        assert_nothing_created(&d, &before, case);
    }
    // Input that is no tar at all is called that, not a puzzle about one header field.
    for bytes in [&b"PK\x03\x04 zip, not gzip".repeat(100), &gzip(b"hello")] {
        let out = import_bytes(&d, "corrupt", "what.tar.gz", bytes);
        assert!(
            out.stderr.contains("does not start with a tar header"),
            "{out}"
        );
    }
    // A .tar.gz that is really a plain tar is told apart by its content, not its name.
    let out = import_bytes(&d, "plain-in-gz", "plain.tar.gz", &good);
    assert_eq!(out.code, 0, "{out}");
    d.finish();
}

// ---- tests: bad input -----------------------------------------------------------------------

#[test]
fn bad_sources_names_and_existing_templates_are_refused() {
    let d = TestDaemon::start();
    let good = d.dir.join("good");
    common::make_rootfs(&good, "good");
    let good_s = good.to_str().expect("utf-8");
    let before = catalogue(&d);

    // A source that does not exist, or is neither a file nor a directory.
    let missing = d.dir.join("no-such-rootfs.tar");
    let missing_s = missing.to_str().expect("utf-8");
    let out = d.mayfly(&["template", "import", "missing", missing_s]);
    assert_refused(&out, "missing source", &[missing_s]);
    let out = d.mayfly(&["template", "import", "missing", "/no/such/dir/"]);
    assert_refused(&out, "missing directory", &["/no/such/dir"]);
    let r = d.api_raw(
        "POST",
        "/v1/templates",
        "application/json",
        json!({"name": "missing", "path": missing_s})
            .to_string()
            .as_bytes(),
    );
    let evs = events(&r.body);
    let err = evs
        .iter()
        .find_map(|e| e.get("error"))
        .unwrap_or_else(|| panic!("importing a missing path: {evs:?}"));
    assert_eq!(err["code"], "invalid_argument", "{err}");
    assert!(
        err["message"]
            .as_str()
            .is_some_and(|m| m.contains(missing_s)),
        "{err}"
    );
    let r = d.api_raw(
        "POST",
        "/v1/templates",
        "application/json",
        json!({"name": "sock", "path": d.socket.to_str().expect("utf-8")})
            .to_string()
            .as_bytes(),
    );
    let evs = events(&r.body);
    let err = evs
        .iter()
        .find_map(|e| e.get("error"))
        .unwrap_or_else(|| panic!("importing a socket: {evs:?}"));
    assert!(
        err["message"]
            .as_str()
            .is_some_and(|m| m.contains("neither a directory nor a file")),
        "{err}"
    );
    assert_nothing_created(&d, &before, "missing sources");

    // Invalid names: a directory through the CLI, an archive by path through the API (an
    // archive uploaded under a bad name: `early_refusals_of_a_large_upload_reach_the_client`).
    let tar_path = d.dir.join("small.tar");
    std::fs::write(&tar_path, tar_of(&good)).expect("write");
    let tar_s = tar_path.to_str().expect("utf-8");
    let api_import = |name: &str, path: &str| -> Value {
        let r = d.api_raw(
            "POST",
            "/v1/templates",
            "application/json",
            json!({"name": name, "path": path}).to_string().as_bytes(),
        );
        let evs = events(&r.body);
        evs.iter()
            .find_map(|e| e.get("error"))
            .cloned()
            .unwrap_or_else(|| panic!("importing {path} as {name:?}: no error: {evs:?}"))
    };
    let long = "a".repeat(65);
    for name in [
        "Upper",
        "-dash",
        "a/b",
        "../up",
        "has space",
        "x@1",
        long.as_str(),
        "é",
        "",
    ] {
        let out = d.mayfly(&["template", "import", "--", name, good_s]);
        assert_refused(&out, &format!("name {name:?}"), &["invalid template name"]);
        let err = api_import(name, tar_s);
        assert_eq!(err["code"], "invalid_argument", "{err}");
        assert!(
            err["message"]
                .as_str()
                .is_some_and(|m| m.contains("invalid template name")),
            "{err}"
        );
    }
    assert_nothing_created(&d, &before, "invalid names");

    // An existing name: refused (the README and --help: a new version comes from `template
    // patch` or `publish`, not from a second import), the existing template unchanged.
    d.ok(&["template", "import", "taken", good_s]);
    let layers = layer_digests(&d, "taken");
    let after_first = catalogue(&d);
    let other = d.dir.join("other");
    common::make_rootfs(&other, "other");
    let out = d.mayfly(&[
        "template",
        "import",
        "taken",
        other.to_str().expect("utf-8"),
    ]);
    assert_refused(&out, "existing name", &["taken", "already exists"]);
    let err = api_import("taken", tar_s);
    assert_eq!(err["code"], "already_exists", "{err}");
    let out = d.mayfly(&["template", "import", "busybox", good_s]);
    assert_refused(&out, "the built-in name", &["busybox", "already exists"]);
    assert_nothing_created(&d, &after_first, "existing names");
    let info = template_info(&d, "taken");
    assert_eq!(info["current_version"], 1, "{info}");
    assert_eq!(info["versions"].as_array().map(Vec::len), Some(1), "{info}");
    assert_eq!(layer_digests(&d, "taken"), layers);
    assert_eq!(
        d.ok(&["run", "--rm", "taken", "--", "cat", "/marker"]),
        "good\n"
    );

    // Bad --cmd.
    let out = d.mayfly(&[
        "template",
        "import",
        "badcmd",
        good_s,
        "--cmd",
        "[\"unterminated",
    ]);
    assert_refused(&out, "bad --cmd JSON", &["--cmd"]);
    let out = d.mayfly(&["template", "import", "badcmd", good_s, "--cmd", "[]"]);
    assert_refused(&out, "empty --cmd", &["command"]);
    assert_nothing_created(&d, &after_first, "bad --cmd");
    d.finish();
}

/// The daemon refuses a bad name, an existing name, a hostile first entry or a bad first
/// header before it has read the whole upload (of megabytes, or even of a few KiB); the client, still sending a large archive,
/// must get that answer (exit code 1, the daemon's message), not a broken connection. Whether
/// the answer is lost depends on timing, so each case is tried a few times.
#[test]
fn early_refusals_of_a_large_upload_reach_the_client() {
    let d = TestDaemon::start();
    let s = Sentinels::plant(&d);
    let tar = big_rootfs_tar(&d, "early", 16);
    let big_dir = d.dir.join("big-early");
    d.ok(&[
        "template",
        "import",
        "taken",
        big_dir.to_str().expect("utf-8"),
    ]);
    let before = catalogue(&d);
    let evil_first = tar_with(
        &raw_tar(&[RawEntry::file("../../../../sentinel/first", b"pwned")]),
        &tar,
    );
    assert_eq!(header_offsets(&tar)[0], 0);
    let mut bad_first_header = tar.clone();
    bad_first_header[0] ^= 0x20;
    let small = raw_tar(&[RawEntry::dir("proc"), RawEntry::file("marker", b"small\n")]);
    let cases: [(&str, &str, &[u8], &[&str]); 5] = [
        (
            "invalid name",
            "Upper",
            &tar,
            &["invalid template name", "Upper"],
        ),
        ("existing name", "taken", &tar, &["taken", "already exists"]),
        (
            "a hostile first entry",
            "early",
            &evil_first,
            &["../../../../sentinel/first", "climbs out"],
        ),
        (
            "a bad first header",
            "early",
            &bad_first_header,
            &["archive"],
        ),
        (
            "a small archive under an invalid name",
            "has space",
            &small,
            &["invalid template name"],
        ),
    ];
    for (case, name, bytes, mentions) in cases {
        for attempt in 1..=3 {
            let out = import_bytes(&d, name, "early.tar", bytes);
            assert_refused(&out, &format!("{case} (file, try {attempt})"), mentions);
            let out = d.mayfly_stdin(&["template", "import", name, "-"], bytes);
            assert_refused(&out, &format!("{case} (stdin, try {attempt})"), mentions);
        }
        s.assert_untouched(case);
        assert_nothing_created(&d, &before, case);
    }
    assert_eq!(layer_digests(&d, "taken").len(), 1);
    d.finish();
}

#[test]
fn trees_without_usable_proc_sys_dev_do_not_start_and_touch_nothing_outside() {
    let d = TestDaemon::start();
    let s = Sentinels::plant(&d);
    let far = s.far.to_str().expect("utf-8").to_owned();

    // An empty directory.
    let empty = d.dir.join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let before = catalogue(&d);
    let out = d.mayfly(&[
        "template",
        "import",
        "empty",
        empty.to_str().expect("utf-8"),
    ]);
    if out.success() {
        // Accepted as an (empty) template: an instance of it must fail to start, clearly,
        // and leave nothing.
        let out = d.mayfly(&["launch", "empty", "--name", "e1", "--", "/bin/sh"]);
        assert_eq!(
            out.code, 1,
            "an instance of an empty template started: {out}"
        );
        assert!(out.stderr.contains("/bin/sh"), "{out}");
        assert!(
            d.instance_names().is_empty(),
            "a failed launch left an instance"
        );
        d.ok(&["template", "rm", "empty"]);
    } else {
        assert_refused(&out, "empty directory", &[]);
        assert_nothing_created(&d, &before, "empty directory");
    }

    // /proc, /sys or /dev a symlink to a host directory (they would resolve on the host
    // before the pivot), or a file.
    for (top, how) in [
        ("proc", "symlink"),
        ("sys", "symlink"),
        ("dev", "symlink"),
        ("proc", "file"),
    ] {
        let root = d.dir.join(format!("bad-{top}-{how}"));
        common::make_rootfs(&root, "bad");
        std::fs::remove_dir(root.join(top)).expect("rmdir");
        if how == "symlink" {
            std::os::unix::fs::symlink(&far, root.join(top)).expect("symlink");
        } else {
            std::fs::write(root.join(top), "not a dir").expect("write");
        }
        let name = format!("bad-{top}-{how}");
        let case = format!("/{top} a {how}");
        let before = catalogue(&d);
        let out = d.mayfly(&["template", "import", &name, root.to_str().expect("utf-8")]);
        if out.success() {
            let out = d.mayfly(&[
                "launch", &name, "--name", "badi", "--", "/bin/sh", "-c", IDLE,
            ]);
            assert_eq!(out.code, 1, "{case}: an instance started: {out}");
            assert!(
                out.stderr.contains(&format!("/{top}")) && out.stderr.contains("not a directory"),
                "{case}: the error does not say what is wrong: {out}"
            );
            d.ok(&["template", "rm", &name]);
        } else {
            assert_refused(&out, &case, &[top]);
        }
        s.assert_untouched(&case);
        assert!(
            d.instance_names().is_empty(),
            "{case}: {:?}",
            d.instance_names()
        );
        assert!(
            mounts_mentioning(&far).is_empty(),
            "{case}: something was mounted on {far}: {:?}",
            mounts_mentioning(&far)
        );
        assert_nothing_created(&d, &before, &case);
    }
    d.finish();
}

// ---- tests: container images ----------------------------------------------------------------

/// The base layer of the test images: a root filesystem with files the next layers delete
/// or hide.
fn base_layer(d: &TestDaemon) -> Vec<u8> {
    let dir = d.dir.join("image-base");
    common::make_rootfs(&dir, "image");
    std::fs::write(dir.join("etc/doomed"), "delete me\n").expect("write");
    std::fs::write(dir.join("etc/kept"), "keep me\n").expect("write");
    std::fs::create_dir_all(dir.join("opt/app/sub")).expect("mkdir");
    std::fs::write(dir.join("opt/app/old"), "old\n").expect("write");
    std::fs::write(dir.join("opt/app/sub/deep"), "deep\n").expect("write");
    std::fs::create_dir_all(dir.join("srv")).expect("mkdir");
    std::fs::write(dir.join("srv/keep"), "srv\n").expect("write");
    std::fs::create_dir_all(dir.join("var/gone/inside")).expect("mkdir");
    std::fs::write(dir.join("var/gone/inside/f"), "f\n").expect("write");
    tar_of(&dir)
}

/// A changeset over [`base_layer`]: deletes `/etc/doomed` and the directory `/var/gone`
/// (whiteouts), replaces `/opt/app` by a directory holding only `new` (opaque), adds a file.
fn top_layer() -> Vec<u8> {
    raw_tar(&[
        RawEntry::dir("etc"),
        RawEntry::file("etc/.wh.doomed", b""),
        RawEntry::dir("var"),
        RawEntry::file("var/.wh.gone", b""),
        RawEntry::dir("opt/app"),
        RawEntry::file("opt/app/.wh..wh..opq", b""),
        RawEntry::file("opt/app/new", b"new\n"),
        RawEntry::dir("srv"),
        RawEntry::file("srv/added", b"added\n"),
    ])
}

const IMAGE_INIT: &str =
    "echo init:$FOO:$(pwd); trap 'exit 0' TERM INT; while :; do sleep 1000 & wait $!; done";

#[test]
fn oci_layout_and_docker_save_become_layered_templates_with_the_image_defaults() {
    let d = TestDaemon::start();
    let base = base_layer(&d);
    let top = top_layer();
    let config = image_config(
        &["FOO=from-image", "PATH=/bin", "EMPTY="],
        &["/bin/sh", "-c"],
        &[IMAGE_INIT],
        "/opt/app",
        &[sha256_hex(&base), sha256_hex(&top)],
    );
    let layout = d.dir.join("oci");
    write_oci_layout(
        &layout,
        &[(OCI_TAR, base.clone()), (OCI_TAR_GZ, gzip(&top))],
        &config,
    );
    let before = layer_dirs(&d);
    let out = d.mayfly(&["template", "import", "oci", layout.to_str().expect("utf-8")]);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout
            .starts_with("imported template oci version 1 (2 layers"),
        "{out}"
    );
    let oci_layers = layer_digests(&d, "oci");
    assert_eq!(oci_layers.len(), 2, "one layer per image layer");
    let new: HashSet<String> = layer_dirs(&d).difference(&before).cloned().collect();
    assert_eq!(
        new,
        oci_layers
            .iter()
            .map(|l| layer_dir_name(l))
            .collect::<HashSet<_>>()
    );
    // The image's defaults.
    let info = template_info(&d, "oci");
    let cfg = &info["versions"][0]["config"];
    assert_eq!(
        cfg["command"],
        json!(["/bin/sh", "-c", IMAGE_INIT]),
        "{info}"
    );
    assert_eq!(
        cfg["env"],
        json!(["FOO=from-image", "PATH=/bin", "EMPTY="]),
        "{info}"
    );
    assert_eq!(cfg["workdir"], "/opt/app", "{info}");
    assert_eq!(cfg["stop_signal"], "SIGINT", "{info}");
    let text = d.ok(&["template", "info", "oci"]);
    assert!(text.contains("workdir:    /opt/app"), "{text}");
    assert!(text.contains("env:        FOO=from-image"), "{text}");

    // An instance: the init is the image's entrypoint + cmd, with its env and workdir; exec
    // gets them too; the deletions and the replaced directory show.
    d.ok(&["launch", "oci", "--name", "ocii"]);
    wait_until(Duration::from_secs(10), "the image's init to log", || {
        d.mayfly(&["logs", "ocii"])
            .stdout
            .contains("init:from-image:/opt/app")
    });
    assert_eq!(d.sh("ocii", "echo $FOO; pwd"), "from-image\n/opt/app\n");
    assert_eq!(
        d.sh(
            "ocii",
            "test -e /etc/doomed && echo doomed-present; test -e /var/gone && echo gone-present; \
             ls -A /opt/app; ls -A /etc; cat /etc/kept /srv/keep /srv/added /marker"
        ),
        "new\nkept\npasswd\nkeep me\nsrv\nadded\nimage\n",
        "whiteouts delete, the opaque directory hides the lower one"
    );
    let tree = view::of_instance(&d, "ocii");
    assert!(
        !tree.keys().any(|k| k.contains(".wh.")),
        "whiteout names are visible: {:?}",
        tree.keys()
            .filter(|k| k.contains(".wh."))
            .collect::<Vec<_>>()
    );
    // Stopping uses the image's stop signal (the init exits on INT).
    d.ok(&["stop", "ocii"]);
    assert_eq!(d.state_of("ocii").as_deref(), Some("stopped"));
    let info = d.info("ocii");
    assert_eq!(info["last_exit"]["code"], 0, "{info}");

    // A docker save archive sharing the base layer (from a file, then from stdin): the base
    // layer directory is shared, only its own layer is new.
    let third = raw_tar(&[
        RawEntry::dir("srv"),
        RawEntry::file("srv/from-docker", b"docker\n"),
    ]);
    let dconfig = image_config(
        &["FOO=from-docker"],
        &[],
        &["/bin/sh", "-c", IMAGE_INIT],
        "/srv",
        &[sha256_hex(&base), sha256_hex(&third)],
    );
    let saved = docker_save(&[&base, &third], &dconfig);
    let before = layer_dirs(&d);
    let out = import_bytes(&d, "docker", "image.tar", &saved);
    assert_eq!(out.code, 0, "{out}");
    let docker_layers = layer_digests(&d, "docker");
    assert_eq!(docker_layers.len(), 2, "{docker_layers:?}");
    assert_eq!(
        docker_layers[0], oci_layers[0],
        "the base layer is shared by digest"
    );
    let new: Vec<String> = layer_dirs(&d).difference(&before).cloned().collect();
    assert_eq!(
        new,
        vec![layer_dir_name(&docker_layers[1])],
        "only the new layer is stored"
    );
    let out = d.mayfly_stdin(&["template", "import", "docker-stdin", "-"], &zstd(&saved));
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(layer_digests(&d, "docker-stdin"), docker_layers);
    assert_eq!(layer_dirs(&d).difference(&before).count(), 1);
    let dcfg = &template_info(&d, "docker")["versions"][0]["config"];
    assert_eq!(
        dcfg["command"],
        json!(["/bin/sh", "-c", IMAGE_INIT]),
        "{dcfg}"
    );
    assert_eq!(dcfg["workdir"], "/srv", "{dcfg}");
    assert_eq!(dcfg["env"], json!(["FOO=from-docker"]), "{dcfg}");
    d.ok(&["launch", "docker", "--name", "dock"]);
    wait_until(
        Duration::from_secs(10),
        "the docker image's init to log",
        || {
            d.mayfly(&["logs", "dock"])
                .stdout
                .contains("init:from-docker:/srv")
        },
    );
    assert_eq!(
        d.sh(
            "dock",
            "echo $FOO; pwd; cat from-docker; test -e /etc/doomed && echo yes"
        ),
        "from-docker\n/srv\ndocker\nyes\n"
    );

    // Removing the OCI template keeps the shared base layer for the docker ones.
    d.ok(&["rm", "--force", "ocii"]);
    d.ok(&["template", "rm", "oci"]);
    let dirs = layer_dirs(&d);
    assert!(
        dirs.contains(&layer_dir_name(&oci_layers[0])),
        "shared base removed"
    );
    assert!(
        !dirs.contains(&layer_dir_name(&oci_layers[1])),
        "unshared top kept"
    );
    assert_eq!(d.sh("dock", "cat /marker"), "image\n");
    d.ok(&["rm", "--force", "dock"]);
    d.finish();
}

#[test]
fn hostile_images_are_refused_and_write_nothing_outside() {
    let d = TestDaemon::start();
    let s = Sentinels::plant(&d);
    let base = base_layer(&d);
    let config = image_config(&[], &[], &["/bin/sh"], "/", &[]);
    let far = s.far.to_str().expect("utf-8").to_owned();

    // Layers that climb out, write through a symlink, or whiteout through one.
    let climbing = raw_tar(&[RawEntry::file("../../../../sentinel/evil", b"pwned")]);
    let through = raw_tar(&[
        RawEntry::symlink("srv", &far),
        RawEntry::file("srv/evil", b"x"),
    ]);
    let wh_through = raw_tar(&[
        RawEntry::symlink("lnk", &s.near.to_string_lossy()),
        RawEntry::file("lnk/.wh.keep", b""),
    ]);
    let opq_through = raw_tar(&[
        RawEntry::symlink("lnk2", &s.near.to_string_lossy()),
        RawEntry::file("lnk2/.wh..wh..opq", b""),
    ]);
    let wh_dotdot = raw_tar(&[RawEntry::file(".wh..", b"")]);
    let cases: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        (
            "layer climbing out",
            climbing,
            vec!["../../../../sentinel/evil"],
        ),
        ("layer writing through a symlink", through, vec!["srv/evil"]),
        (
            "whiteout through a symlink",
            wh_through,
            vec!["lnk/.wh.keep"],
        ),
        (
            "opaque marker through a symlink",
            opq_through,
            vec!["lnk2/.wh..wh..opq"],
        ),
        ("whiteout of ..", wh_dotdot, vec![".wh.."]),
    ];
    for (case, layer, mentions) in &cases {
        let before = catalogue(&d);
        // As an OCI layout directory...
        let layout = d.dir.join("evil-oci");
        let _ = std::fs::remove_dir_all(&layout);
        write_oci_layout(
            &layout,
            &[(OCI_TAR, base.clone()), (OCI_TAR, layer.clone())],
            &config,
        );
        let out = d.mayfly(&[
            "template",
            "import",
            "evil",
            layout.to_str().expect("utf-8"),
        ]);
        assert_refused(&out, case, mentions);
        s.assert_untouched(case);
        assert_nothing_created(&d, &before, case);
        // ... and as a docker save archive.
        let out = import_bytes(
            &d,
            "evil",
            "evil-save.tar",
            &docker_save(&[&base, layer], &config),
        );
        assert_refused(&out, &format!("{case} (docker save)"), mentions);
        s.assert_untouched(case);
        assert_nothing_created(&d, &before, case);
    }

    // Image metadata that points outside or lies.
    let before = catalogue(&d);
    let layout = d.dir.join("lying-oci");
    write_oci_layout(&layout, &[(OCI_TAR, base.clone())], &config);
    // A layer blob that does not match its digest.
    let blobs = layout.join("blobs/sha256");
    let base_hex = sha256_hex(&base);
    let mut tampered = base.clone();
    let n = tampered.len() / 3;
    tampered[n] ^= 1;
    std::fs::write(blobs.join(&base_hex), &tampered).expect("tamper");
    let out = d.mayfly(&[
        "template",
        "import",
        "lying",
        layout.to_str().expect("utf-8"),
    ]);
    assert_refused(&out, "tampered blob", &[&base_hex]);
    assert_nothing_created(&d, &before, "tampered blob");

    // docker save archives whose manifest names files outside the image, directly or through
    // a symlink the archive plants (docker save links a repeated layer to its first copy, so
    // a symlink that stays inside is fine; one that leaves is not).
    let near_keep = format!("{}/keep", s.near.display());
    let config_entry = RawEntry::file("config.json", &config);
    for (case, layer_path, extra, mentions) in [
        (
            "layer path climbing out",
            "../../sentinel/keep",
            vec![],
            vec!["../../sentinel/keep"],
        ),
        (
            "absolute layer path",
            near_keep.as_str(),
            vec![],
            vec![near_keep.as_str()],
        ),
        (
            "layer symlinked to a host file",
            "evil/layer.tar",
            vec![
                RawEntry::dir("evil"),
                RawEntry::symlink("evil/layer.tar", &near_keep),
            ],
            vec!["evil/layer.tar"],
        ),
        (
            "layer symlinked out by a relative path",
            "evil/layer.tar",
            vec![
                RawEntry::dir("evil"),
                RawEntry::symlink("evil/layer.tar", "../../../../../sentinel/keep"),
            ],
            vec!["evil/layer.tar"],
        ),
    ] {
        let manifest = json!([{"Config": "config.json", "Layers": [layer_path]}]).to_string();
        let mut entries = vec![
            config_entry.clone(),
            RawEntry::file("manifest.json", manifest.as_bytes()),
        ];
        entries.extend(extra);
        let out = import_bytes(&d, "evil", "evil-manifest.tar", &raw_tar(&entries));
        assert_refused(&out, case, &mentions);
        s.assert_untouched(case);
        assert_nothing_created(&d, &before, case);
    }

    // An OCI layout directory whose layer blob is a symlink to a file outside it (with the
    // right digest): refused, the outside file is not read into a template.
    let outside = d.dir.join("outside-layer.tar");
    std::fs::write(&outside, &base).expect("write");
    let layout = d.dir.join("symlinked-oci");
    write_oci_layout(&layout, &[(OCI_TAR, base.clone())], &config);
    let blob = layout.join("blobs/sha256").join(sha256_hex(&base));
    std::fs::remove_file(&blob).expect("rm blob");
    std::os::unix::fs::symlink(&outside, &blob).expect("symlink");
    let out = d.mayfly(&[
        "template",
        "import",
        "evil",
        layout.to_str().expect("utf-8"),
    ]);
    assert_refused(
        &out,
        "blob symlinked outside the layout",
        &[&sha256_hex(&base)],
    );
    assert_nothing_created(&d, &before, "blob symlinked outside the layout");
    d.finish();
}

//! Hostile and broken archives given to `mayfly template import`: entries that try to write
//! outside, odd entries (devices, FIFOs, setuid, duplicates, overlay xattrs), long names and
//! corrupt or non-tar input; each is refused or neutralised, with nothing written outside the
//! state directory and nothing half created.

mod common;
mod view;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;

use common::imports::{
    Sentinels, end_of_entries, header_offsets, import_bytes, launch, layer_digests, rootfs_tar,
    tar_with,
};
use common::{
    RawEntry, TestDaemon, assert_nothing_created, assert_refused, catalogue, gzip, layer_dir_name,
    layer_dirs, octal, raw_tar, zstd,
};

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

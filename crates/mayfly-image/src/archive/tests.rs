use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use super::*;
use crate::fixtures::{
    Kind, Raw, SAMPLE, Spec, TarWriter, assert_matches, budget, materialize, tar_of,
};
use crate::{NoProgress, tree_digest};

pub(super) fn unpack(archive: &[u8]) -> (tempfile::TempDir, Result<TreeStats, ImageError>) {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("dest");
    fs::create_dir(&dest).unwrap();
    let result = unpack_archive(archive, &dest, &NoProgress, &budget());
    (tmp, result)
}

#[test]
fn round_trip_keeps_every_type_and_attribute() {
    let (tmp, result) = unpack(&tar_of(SAMPLE));
    let stats = result.unwrap();
    let dest = tmp.path().join("dest");
    assert_matches(&dest, SAMPLE, |_| true);
    assert_eq!(stats.entries, SAMPLE.len() as u64);

    let direct = tmp.path().join("direct");
    fs::create_dir(&direct).unwrap();
    materialize(&direct, SAMPLE);
    assert_matches(&direct, SAMPLE, |_| true);
    assert_eq!(tree_digest(&dest).unwrap(), tree_digest(&direct).unwrap());
}

#[test]
fn compressed_archives_unpack_like_plain_ones() {
    let plain = tar_of(SAMPLE);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&plain).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::encode_all(&plain[..], 3).unwrap();

    let (tmp, result) = unpack(&plain);
    result.unwrap();
    let want = tree_digest(&tmp.path().join("dest")).unwrap();
    for archive in [gz, zst] {
        let (tmp, result) = unpack(&archive);
        result.unwrap();
        let dest = tmp.path().join("dest");
        assert_matches(&dest, SAMPLE, |_| true);
        assert_eq!(tree_digest(&dest).unwrap(), want);
    }
}

#[test]
fn only_portable_xattrs_survive() {
    let specs = [
        Spec {
            path: "f",
            kind: Kind::File(b"x"),
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: (1, 0),
            xattrs: &[
                ("user.keep", b"1"),
                ("trusted.overlay.opaque", b"y"),
                ("trusted.overlay.redirect", b"/etc"),
                ("security.selinux", b"system_u:object_r:etc_t:s0"),
            ],
        },
        Spec {
            path: "d",
            kind: Kind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: (1, 0),
            xattrs: &[("trusted.overlay.opaque", b"y")],
        },
    ];
    let (tmp, result) = unpack(&tar_of(&specs));
    result.unwrap();
    let dest = tmp.path().join("dest");
    let mut expected = vec![Spec {
        path: "",
        kind: Kind::Dir,
        mode: 0o755,
        uid: 0,
        gid: 0,
        mtime: (0, 0),
        xattrs: &[],
    }];
    expected.extend(specs);
    assert_matches(&dest, &expected, |name| name == "user.keep");
}

#[test]
fn missing_parents_are_root_owned_0755_with_mtime_zero() {
    let mut tar = TarWriter::default();
    let mut file = Raw::new(b"./deep/er/file", b'0');
    file.uid = 1000;
    file.data = b"content";
    tar.add(file, &[]);
    let (tmp, result) = unpack(&tar.finish());
    assert_eq!(
        result.unwrap(),
        TreeStats {
            entries: 1,
            bytes: 7
        }
    );
    let dest = tmp.path().join("dest");
    let plain = |path: &'static str| Spec {
        path,
        kind: Kind::Dir,
        mode: 0o755,
        uid: 0,
        gid: 0,
        mtime: (0, 0),
        xattrs: &[],
    };
    let specs = [
        plain(""),
        plain("deep"),
        plain("deep/er"),
        Spec {
            path: "deep/er/file",
            kind: Kind::File(b"content"),
            mode: 0o644,
            uid: 1000,
            gid: 0,
            mtime: (1_600_000_000, 0),
            xattrs: &[],
        },
    ];
    assert_matches(&dest, &specs, |_| true);
}

#[test]
fn later_entries_replace_earlier_ones_but_not_directories() {
    let mut tar = TarWriter::default();
    let mut first = Raw::new(b"x", b'0');
    first.data = b"first";
    tar.add(first, &[]);
    let mut link = Raw::new(b"x", b'2');
    link.link = b"/somewhere";
    tar.add(link, &[]);
    tar.add(Raw::new(b"y", b'0'), &[]);
    tar.add(Raw::new(b"y", b'5'), &[]);
    let (tmp, result) = unpack(&tar.finish());
    result.unwrap();
    let dest = tmp.path().join("dest");
    assert_eq!(
        fs::read_link(dest.join("x")).unwrap(),
        Path::new("/somewhere")
    );
    assert!(fs::symlink_metadata(dest.join("y")).unwrap().is_dir());

    tar.add(Raw::new(b"y", b'0'), &[]);
    let (_tmp, result) = unpack(&tar.finish());
    assert!(
        matches!(result, Err(ImageError::UnsupportedEntry { ref entry, .. }) if entry == "y"),
        "{result:?}"
    );
}

#[test]
fn progress_counts_entries_and_bytes() {
    #[derive(Default)]
    struct Count(std::sync::Mutex<(u64, u64)>);
    impl Progress for Count {
        fn advance(&self, entries: u64, bytes: u64) {
            let mut c = self.0.lock().unwrap();
            c.0 += entries;
            c.1 += bytes;
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let count = Count::default();
    let stats = unpack_archive(&tar_of(SAMPLE)[..], tmp.path(), &count, &budget()).unwrap();
    let content: usize = SAMPLE
        .iter()
        .map(|s| {
            if let Kind::File(c) = s.kind {
                c.len()
            } else {
                0
            }
        })
        .sum();
    assert_eq!(
        stats,
        TreeStats {
            entries: SAMPLE.len() as u64,
            bytes: content as u64
        }
    );
    assert_eq!(*count.0.lock().unwrap(), (stats.entries, stats.bytes));
}

#[test]
fn refuses_a_destination_that_is_not_empty() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("x"), "").unwrap();
    let result = unpack_archive(&tar_of(SAMPLE)[..], tmp.path(), &NoProgress, &budget());
    assert!(
        matches!(result, Err(ImageError::NotEmpty { .. })),
        "{result:?}"
    );
}

/// A scratch area with a destination, an empty sentinel directory next to it, and a
/// directory holding one file that symlinks in archives point at.
struct Attack {
    tmp: tempfile::TempDir,
}

impl Attack {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("dest")).unwrap();
        fs::create_dir(tmp.path().join("outside")).unwrap();
        fs::create_dir(tmp.path().join("target")).unwrap();
        fs::write(tmp.path().join("target/keep"), "original").unwrap();
        Self { tmp }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// Unpacks `archive`, expects it refused as unsafe, and checks nothing leaked.
    fn refuses(&self, archive: &[u8], culprit: &str) -> String {
        // A fresh destination each time, like the caller that removes a failed import.
        fs::remove_dir_all(self.path("dest")).unwrap();
        fs::create_dir(self.path("dest")).unwrap();
        let result = unpack_archive(archive, &self.path("dest"), &NoProgress, &budget());
        let message = match result {
            Err(err @ ImageError::UnsafeEntry { .. }) => {
                let ImageError::UnsafeEntry { entry, .. } = &err else {
                    unreachable!()
                };
                assert_eq!(entry, culprit);
                err.to_string()
            }
            other => panic!("expected an unsafe-entry error for `{culprit}`, got {other:?}"),
        };
        assert_eq!(
            fs::read_dir(self.path("outside")).unwrap().count(),
            0,
            "sentinel touched"
        );
        let target: Vec<_> = fs::read_dir(self.path("target"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(target, ["keep"], "symlink target touched");
        assert_eq!(fs::read(self.path("target/keep")).unwrap(), b"original");
        let keep = fs::metadata(self.path("target/keep")).unwrap();
        assert_eq!(keep.permissions().mode() & 0o7777, 0o644);
        message
    }
}

pub(super) fn file(name: &[u8]) -> Raw<'_> {
    let mut raw = Raw::new(name, b'0');
    raw.data = b"pwned";
    raw
}

pub(super) fn link<'a>(name: &'a [u8], typeflag: u8, target: &'a [u8]) -> Raw<'a> {
    let mut raw = Raw::new(name, typeflag);
    raw.link = target;
    raw
}

#[test]
fn refuses_absolute_names() {
    let attack = Attack::new();
    let name = format!("{}/pwned", attack.path("outside").display()).into_bytes();
    let mut raw = file(b"");
    raw.name = &name;
    let archive = TarWriter::default().add(raw, &[]).finish();
    let message = attack.refuses(&archive, std::str::from_utf8(&name).unwrap());
    assert!(message.ends_with("it is an absolute path"), "{message}");
}

#[test]
fn refuses_dot_dot() {
    let attack = Attack::new();
    let archive = TarWriter::default()
        .add(file(b"../outside/pwned"), &[])
        .finish();
    let message = attack.refuses(&archive, "../outside/pwned");
    assert_eq!(
        message,
        "refusing archive entry `../outside/pwned`: it climbs out of the root with `..`"
    );
    let archive = TarWriter::default()
        .add(file(b"a/../../outside/pwned"), &[])
        .finish();
    attack.refuses(&archive, "a/../../outside/pwned");
    // A PAX path overrides the harmless header name.
    let archive = TarWriter::default()
        .add(file(b"harmless"), &[("path", b"x/../../outside/pwned")])
        .finish();
    attack.refuses(&archive, "x/../../outside/pwned");
}

#[test]
fn refuses_writing_through_a_symlink() {
    let attack = Attack::new();
    let target = attack.path("target").into_os_string().into_encoded_bytes();
    let archive = TarWriter::default()
        .add(link(b"evil", b'2', &target), &[])
        .add(file(b"evil/file"), &[])
        .finish();
    let message = attack.refuses(&archive, "evil/file");
    assert_eq!(
        message,
        "refusing archive entry `evil/file`: it is written through symlink `evil`"
    );

    let attack = Attack::new();
    let archive = TarWriter::default()
        .add(link(b"up", b'2', b"../outside"), &[])
        .add(Raw::new(b"up/dir/", b'5'), &[])
        .finish();
    attack.refuses(&archive, "up/dir/");

    // Overwriting the file the symlink points at must replace the symlink, not follow it.
    let attack = Attack::new();
    let keep = attack
        .path("target/keep")
        .into_os_string()
        .into_encoded_bytes();
    let archive = TarWriter::default()
        .add(link(b"evil", b'2', &keep), &[])
        .add(file(b"evil"), &[])
        .finish();
    unpack_archive(&archive[..], &attack.path("dest"), &NoProgress, &budget()).unwrap();
    assert_eq!(fs::read(attack.path("dest/evil")).unwrap(), b"pwned");
    assert_eq!(fs::read(attack.path("target/keep")).unwrap(), b"original");
}

#[test]
fn refuses_hard_links_outside_the_archive() {
    let attack = Attack::new();
    let target = attack.path("target").into_os_string().into_encoded_bytes();
    let archive = TarWriter::default()
        .add(link(b"evil", b'2', &target), &[])
        .add(link(b"pwn", b'1', b"evil/keep"), &[])
        .finish();
    let message = attack.refuses(&archive, "pwn");
    assert!(
        message.contains("its link target `evil/keep` is not a regular file"),
        "{message}"
    );

    let archive = TarWriter::default()
        .add(link(b"evil", b'2', &target), &[])
        .add(file(b"real"), &[])
        .add(link(b"evil/pwn", b'1', b"real"), &[])
        .finish();
    let message = attack.refuses(&archive, "evil/pwn");
    assert!(
        message.ends_with("it is written through symlink `evil`"),
        "{message}"
    );

    let archive = TarWriter::default()
        .add(link(b"pwn", b'1', b"/etc/passwd"), &[])
        .finish();
    let message = attack.refuses(&archive, "pwn");
    assert!(
        message.ends_with("its link target `/etc/passwd` is an absolute path"),
        "{message}"
    );

    let archive = TarWriter::default()
        .add(link(b"pwn", b'1', b"../../x"), &[])
        .finish();
    let message = attack.refuses(&archive, "pwn");
    assert!(
        message.ends_with("its link target `../../x` climbs out of the root with `..`"),
        "{message}"
    );

    let archive = TarWriter::default()
        .add(link(b"pwn", b'1', b"not/here"), &[])
        .finish();
    attack.refuses(&archive, "pwn");

    // A symlink is no hard-link target either, even one the archive made.
    let archive = TarWriter::default()
        .add(link(b"evil", b'2', &target), &[])
        .add(link(b"pwn", b'1', b"evil"), &[])
        .finish();
    attack.refuses(&archive, "pwn");
}

#[test]
fn truncated_or_corrupt_archives_are_bad() {
    let plain = tar_of(SAMPLE);
    let gz = {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).unwrap();
        gz.finish().unwrap()
    };
    let zst = zstd::encode_all(&plain[..], 3).unwrap();
    let big = [7u8; 5000];
    let mut raw = Raw::new(b"big", b'0');
    raw.data = &big;
    let with_big = TarWriter::default().add(raw, &[]).finish();
    let mut garbage = plain.clone();
    garbage[100] ^= 0x55;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("inside file content", with_big[..2000].to_vec()),
        ("inside padding", plain[..plain.len() - 1024 - 300].to_vec()),
        ("at a block boundary", plain[..plain.len() - 1024].to_vec()),
        (
            "inside a header",
            plain[..plain.len() - 1024 - 512 - 100].to_vec(),
        ),
        ("gzip", gz[..gz.len() - 10].to_vec()),
        ("zstd", zst[..zst.len() - 10].to_vec()),
        ("header checksum", garbage),
        ("empty", Vec::new()),
        (
            "not a tar",
            b"hello, this is not an archive at all".repeat(40),
        ),
    ];
    for (what, archive) in cases {
        let (_tmp, result) = unpack(&archive);
        assert!(
            matches!(result, Err(ImageError::BadArchive { .. })),
            "{what}: {result:?}"
        );
    }
}

#[test]
fn unsupported_entry_types_are_named() {
    let archive = TarWriter::default()
        .add(Raw::new(b"label", b'V'), &[])
        .finish();
    let (_tmp, result) = unpack(&archive);
    let err = result.unwrap_err();
    assert_eq!(
        err.to_string(),
        "unsupported archive entry `label`: GNU volume label"
    );
}

#[test]
fn global_pax_headers_are_not_entries() {
    let archive = TarWriter::default()
        .add(Raw::new(b"pax_global_header", b'g'), &[])
        .add(file(b"f"), &[])
        .finish();
    let (tmp, result) = unpack(&archive);
    assert_eq!(result.unwrap().entries, 1);
    let names: Vec<_> = fs::read_dir(tmp.path().join("dest"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["f"]);
}

//! Root filesystems and archives built by the tests: small busybox trees, tars of them,
//! compressed variants, and hand-made tar entries for hostile archives.

use super::*;

/// Busybox applets linked in test root filesystems.
const APPLETS: &[&str] = &[
    "sh", "cat", "ls", "echo", "sleep", "true", "false", "test", "id", "ps", "touch", "mkdir",
    "rm", "mount", "hostname", "wc", "grep", "env", "pwd", "head", "tail",
];

/// Builds a small root filesystem at `root`: busybox and some applets in /bin, /proc, /sys,
/// /dev, /etc/passwd, and `/marker` containing `marker`.
pub fn make_rootfs(root: &Path, marker: &str) {
    for d in ["bin", "proc", "sys", "dev", "etc", "tmp", "root"] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("copy busybox");
    for a in APPLETS {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).expect("symlink");
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("passwd");
    std::fs::write(root.join("marker"), format!("{marker}\n")).expect("marker");
}

/// A tar of the tree at `root` (entries relative to it, symlinks kept).
pub fn tar_of(root: &Path) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all(".", root).expect("tar the tree");
    b.into_inner().expect("finish the tar")
}

/// `data` gzip-compressed.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

/// `data` zstd-compressed.
pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 3).expect("zstd")
}

/// A tar entry built by hand (ustar), for archives the `tar` crate refuses to write.
#[derive(Debug, Clone)]
pub struct RawEntry {
    /// Path as stored.
    pub name: String,
    /// `b'0'` file, `b'5'` directory, `b'2'` symlink, `b'1'` hard link.
    pub kind: u8,
    /// Link target for symlinks and hard links.
    pub link: String,
    /// File content.
    pub data: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
}

impl RawEntry {
    /// A regular file.
    pub fn file(name: &str, data: &[u8]) -> RawEntry {
        RawEntry {
            name: name.into(),
            kind: b'0',
            link: String::new(),
            data: data.to_vec(),
            mode: 0o644,
        }
    }
    /// A directory.
    pub fn dir(name: &str) -> RawEntry {
        RawEntry {
            name: name.into(),
            kind: b'5',
            link: String::new(),
            data: Vec::new(),
            mode: 0o755,
        }
    }
    /// A symbolic link.
    pub fn symlink(name: &str, target: &str) -> RawEntry {
        RawEntry {
            name: name.into(),
            kind: b'2',
            link: target.into(),
            data: Vec::new(),
            mode: 0o777,
        }
    }
    /// A hard link.
    pub fn hardlink(name: &str, target: &str) -> RawEntry {
        RawEntry {
            name: name.into(),
            kind: b'1',
            link: target.into(),
            data: Vec::new(),
            mode: 0o644,
        }
    }
}

/// Writes `value` into a tar header `field`: zero-padded octal and a NUL.
pub fn octal(field: &mut [u8], value: u64) {
    let n = field.len() - 1;
    let s = format!("{value:0n$o}");
    assert_eq!(s.len(), n, "{value} does not fit the field");
    field[..n].copy_from_slice(s.as_bytes());
    field[n] = 0;
}

/// A ustar archive of `entries`, byte by byte.
pub fn raw_tar(entries: &[RawEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut h = [0u8; 512];
        assert!(e.name.len() <= 100 && e.link.len() <= 100, "name too long");
        h[..e.name.len()].copy_from_slice(e.name.as_bytes());
        octal(&mut h[100..108], u64::from(e.mode));
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[124..136], e.data.len() as u64);
        octal(&mut h[136..148], 1_700_000_000);
        h[156] = e.kind;
        h[157..157 + e.link.len()].copy_from_slice(e.link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(&e.data);
        let pad = (512 - e.data.len() % 512) % 512;
        out.extend(std::iter::repeat_n(0u8, pad));
    }
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

/// Names of the entries of a directory (sorted), empty when it does not exist.
pub fn dir_entries(path: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(path)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A set of the layer directory names of a daemon.
pub fn layer_dirs(d: &TestDaemon) -> HashSet<String> {
    d.state_entries("layers").into_iter().collect()
}

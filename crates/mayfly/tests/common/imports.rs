//! Helpers shared by the `import_*` test files: instances launched from imported templates,
//! the layers of a template, sentinels a hostile archive must not reach, imports of bytes
//! through the CLI and the API's events, and small tars of root filesystems spliced by hand.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;

// The bodies moved here from the test files call `common::make_rootfs`; this keeps them as they were.
use crate::common;
use crate::common::{Output, TestDaemon, digests, dir_entries, tar_of, template_info, version};

/// An init for trees without one: idles, ends at once on TERM or INT.
pub const IDLE: &str = "trap 'exit 0' TERM INT; while :; do sleep 1000 & wait $!; done";

/// Launches `name` from `template` with the idle init.
pub fn launch(d: &TestDaemon, template: &str, name: &str) {
    d.ok(&[
        "launch", template, "--name", name, "--", "/bin/sh", "-c", IDLE,
    ]);
}

/// The layer digests of a template's current version, lowest first.
pub fn layer_digests(d: &TestDaemon, name: &str) -> Vec<String> {
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
pub struct Sentinels {
    /// `<test dir>/sentinel`, holding `keep`.
    pub near: PathBuf,
    /// An empty directory under /tmp.
    pub far: PathBuf,
    /// A path under /tmp that does not exist.
    pub absent: PathBuf,
}

const PRECIOUS: &str = "precious\n";

impl Sentinels {
    pub fn plant(d: &TestDaemon) -> Sentinels {
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
    pub fn assert_untouched(&self, what: &str) {
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
pub fn import_bytes(d: &TestDaemon, name: &str, file: &str, bytes: &[u8]) -> Output {
    let path = d.dir.join(file);
    std::fs::write(&path, bytes).expect("write the archive");
    let path = path.to_str().expect("utf-8 path").to_owned();
    d.mayfly(&["template", "import", name, &path])
}

/// The ndjson events of an import answer.
pub fn events(body: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(body)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad event line {l}: {e}")))
        .collect()
}

// ---- root filesystems and tars ---------------------------------------------------------------

/// A tar of a small valid root filesystem (busybox, /proc, /sys, /dev, /marker).
pub fn rootfs_tar(d: &TestDaemon, tag: &str, marker: &str) -> Vec<u8> {
    let dir = d.dir.join(format!("rootfs-{tag}"));
    common::make_rootfs(&dir, marker);
    tar_of(&dir)
}

/// A tarball of a root filesystem with `mib` MiB of extra content.
pub fn big_rootfs_tar(d: &TestDaemon, tag: &str, mib: usize) -> Vec<u8> {
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

/// `base` (a complete tar) with `extra` entries added before its end-of-archive marker.
pub fn tar_with(base: &[u8], extra: &[u8]) -> Vec<u8> {
    let end = end_of_entries(base);
    let mut out = base[..end].to_vec();
    // `extra` is a complete archive too: drop its marker and append ours.
    out.extend_from_slice(&extra[..end_of_entries(extra)]);
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

/// The offsets of the entry headers of a ustar/GNU tar (PAX records included), in order.
pub fn header_offsets(tar: &[u8]) -> Vec<usize> {
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
pub fn end_of_entries(tar: &[u8]) -> usize {
    match header_offsets(tar).last() {
        Some(&last) => last + 512 + entry_size(&tar[last..last + 512]).div_ceil(512) * 512,
        None => 0,
    }
}

//! What one import may cost the host: bytes on disk, inodes, memory, and the free space it must
//! leave on the state filesystem.
//!
//! An archive is counted while it streams, never trusted for its own sizes: every header is
//! checked before anything is written for it (path length, depth, entry count, the file's
//! declared size against the per-file and total limits and against the free space), file
//! content is counted as it is written, and the decompressed stream is compared with the
//! compressed one (a compression bomb expands thousands of times; a real root filesystem
//! three to five times). The first byte past a limit ends the import with
//! [`ImageError::Limit`], which names the limit and the daemon flag that raises it.
//!
//! The defaults refuse what no real root filesystem looks like and accept real multi-GiB
//! templates; docs/security.md ("Import limits") says why each is what it is.

use std::fmt;
use std::os::fd::BorrowedFd;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use mayfly_api::size::{format_size, parse_size};

use crate::ImageError;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// How much an import may write and read. One value per daemon; [`ImportBudget`] counts one
/// import against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportLimits {
    /// Bytes of regular-file content an archive may unpack to; for an image, all its layers
    /// together. Default 32 GiB: real system templates weigh a few GiB (a Debian minbase
    /// 160 MiB, a build host's whole `/usr` 5 GiB).
    pub max_bytes: u64,
    /// Bytes one file may have. Default 8 GiB: a root filesystem's largest files (libraries,
    /// language runtimes, firmware) are a few hundred MiB.
    pub max_file_bytes: u64,
    /// Entries (files, directories, links, nodes, whiteouts) an archive may have; for an
    /// image, all its layers together. Default 2 million: a build host's `/usr` has 133 000,
    /// a full desktop a few hundred thousand.
    pub max_entries: u64,
    /// Bytes of an entry's path. Default 4096, Linux's `PATH_MAX`: no longer path can be
    /// opened in one call.
    pub max_path: u64,
    /// Components of an entry's path (`a/b/c` has 3). Default 256: real trees stay near 20,
    /// and every walk of a tree holds a descriptor per level.
    pub max_depth: u64,
    /// How many times larger the decompressed stream may be than the compressed one, checked
    /// once it is past [`Self::ratio_floor`]; 0 turns the check off (file content is held to
    /// it too, against the archive read). Default 200: zstd -19 of a Debian tree is about 4:1
    /// (C headers alone 12:1), a bomb of zeros 1000:1 (gzip) to 32 000:1 (zstd).
    pub max_ratio: u64,
    /// Decompressed bytes below which the ratio is not checked, so that small, very
    /// compressible archives pass. Default 64 MiB.
    pub ratio_floor: u64,
    /// Bytes of archive (compressed, as uploaded or read) an import may read. Default 40 GiB:
    /// a plain tar of a tree at the other defaults (32 GiB of content and a header and padding
    /// per entry) fits.
    pub max_input_bytes: u64,
    /// Free space an import must leave on the state filesystem.
    pub min_free: MinFree,
}

impl Default for ImportLimits {
    fn default() -> Self {
        Self {
            max_bytes: 32 * GIB,
            max_file_bytes: 8 * GIB,
            max_entries: 2_000_000,
            max_path: 4096,
            max_depth: 256,
            max_ratio: 200,
            ratio_floor: 64 * MIB,
            max_input_bytes: 40 * GIB,
            min_free: MinFree::default(),
        }
    }
}

/// Free space an import must leave on the filesystem it writes to: the larger of `bytes` and
/// `percent` of the filesystem's size, measured as space unprivileged users may still use
/// (`f_bavail`: on ext4 the blocks reserved for root come on top). Default: the larger of
/// 1 GiB and 5%, so that the catalogue, console logs and the instances' writable layers keep
/// room whatever is imported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinFree {
    /// Bytes to keep free.
    pub bytes: u64,
    /// Percent of the filesystem's size to keep free (0-100).
    pub percent: u8,
}

impl Default for MinFree {
    fn default() -> Self {
        Self {
            bytes: GIB,
            percent: 5,
        }
    }
}

impl MinFree {
    /// The bytes to keep free on a filesystem of `size` bytes.
    pub fn reserve(self, size: u64) -> u64 {
        let share = u128::from(size) * u128::from(self.percent) / 100;
        self.bytes.max(u64::try_from(share).unwrap_or(u64::MAX))
    }
}

impl FromStr for MinFree {
    type Err = String;

    /// `SIZE` (`2GiB`), `N%` (`10%`), or both, comma-separated (`5%,1GiB`: the larger).
    /// `0` keeps nothing free.
    fn from_str(text: &str) -> Result<Self, String> {
        let mut out = MinFree {
            bytes: 0,
            percent: 0,
        };
        for part in text.split(',') {
            let part = part.trim();
            if let Some(number) = part.strip_suffix('%') {
                out.percent = number
                    .trim()
                    .parse::<u8>()
                    .ok()
                    .filter(|p| *p <= 100)
                    .ok_or_else(|| {
                        format!("invalid percentage `{part}`: give 0% to 100%, e.g. 5%")
                    })?;
            } else {
                out.bytes = parse_size(part)?;
            }
        }
        Ok(out)
    }
}

impl fmt::Display for MinFree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.percent, self.bytes) {
            (0, bytes) => f.write_str(&format_size(bytes)),
            (percent, 0) => write!(f, "{percent}%"),
            (percent, bytes) => write!(f, "the larger of {percent}% and {}", format_size(bytes)),
        }
    }
}

/// One of the limits of [`ImportLimits`], to name it in an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// [`ImportLimits::max_bytes`].
    Bytes,
    /// [`ImportLimits::max_file_bytes`].
    FileBytes,
    /// [`ImportLimits::max_entries`].
    Entries,
    /// [`ImportLimits::max_path`].
    Path,
    /// [`ImportLimits::max_depth`].
    Depth,
    /// [`ImportLimits::max_ratio`].
    Ratio,
    /// [`ImportLimits::max_input_bytes`].
    Input,
    /// [`ImportLimits::min_free`].
    FreeSpace,
}

impl Limit {
    /// The `mayfly daemon` flag that sets it.
    pub fn flag(self) -> &'static str {
        match self {
            Self::Bytes => "--import-max-bytes",
            Self::FileBytes => "--import-max-file-size",
            Self::Entries => "--import-max-entries",
            Self::Path => "--import-max-path",
            Self::Depth => "--import-max-depth",
            Self::Ratio => "--import-max-ratio",
            Self::Input => "--import-max-upload",
            Self::FreeSpace => "--import-min-free",
        }
    }

    /// What to do about it, as the end of an error message.
    pub fn advice(self) -> String {
        let flag = self.flag();
        match self {
            Self::FreeSpace => format!(
                "free space on it first, or lower the reserve with `mayfly daemon {flag} SIZE|N%`"
            ),
            Self::Ratio => format!(
                "if this is a real template, raise it with `mayfly daemon {flag} N` (0: no limit)"
            ),
            Self::Entries | Self::Path | Self::Depth => {
                format!("if this is a real template, raise it with `mayfly daemon {flag} N`")
            }
            Self::Bytes | Self::FileBytes | Self::Input => {
                format!("if this is a real template, raise it with `mayfly daemon {flag} SIZE`")
            }
        }
    }
}

/// Counts one import against its [`ImportLimits`]: the content bytes and entries of every
/// archive unpacked with it (all the layers of an image share one). Free space, path length,
/// depth, per-file size and the ratio are checked per entry and per stream as they come.
#[derive(Debug)]
pub struct ImportBudget {
    limits: ImportLimits,
    bytes: AtomicU64,
    entries: AtomicU64,
}

impl ImportBudget {
    /// A fresh budget under `limits`.
    pub fn new(limits: ImportLimits) -> Self {
        Self {
            limits,
            bytes: AtomicU64::new(0),
            entries: AtomicU64::new(0),
        }
    }

    /// The limits counted against.
    pub fn limits(&self) -> &ImportLimits {
        &self.limits
    }

    /// Counts one more entry.
    pub(crate) fn add_entry(&self) -> Result<(), ImageError> {
        let entries = self.entries.fetch_add(1, Ordering::Relaxed) + 1;
        if entries > self.limits.max_entries {
            return Err(ImageError::limit(
                Limit::Entries,
                format!(
                    "the archive has more than {} entries",
                    self.limits.max_entries
                ),
            ));
        }
        Ok(())
    }

    /// Checks that a file of `size` bytes named `name` fits, before it is written.
    pub(crate) fn check_file(&self, name: &str, size: u64) -> Result<(), ImageError> {
        if size > self.limits.max_file_bytes {
            return Err(ImageError::limit(
                Limit::FileBytes,
                format!(
                    "`{}` is {}, more than the {} a file may have",
                    shorten(name),
                    format_size(size),
                    format_size(self.limits.max_file_bytes)
                ),
            ));
        }
        let so_far = self.bytes.load(Ordering::Relaxed);
        if so_far.saturating_add(size) > self.limits.max_bytes {
            return Err(self.too_many_bytes());
        }
        Ok(())
    }

    /// Counts `n` bytes of content written.
    pub(crate) fn add_bytes(&self, n: u64) -> Result<(), ImageError> {
        let total = self.bytes.fetch_add(n, Ordering::Relaxed).saturating_add(n);
        if total > self.limits.max_bytes {
            return Err(self.too_many_bytes());
        }
        Ok(())
    }

    fn too_many_bytes(&self) -> ImageError {
        ImageError::limit(
            Limit::Bytes,
            format!(
                "the archive unpacks to more than {}",
                format_size(self.limits.max_bytes)
            ),
        )
    }

    /// Checks an entry's normalised path (`a/b/c`, empty for the root) against the path length
    /// and depth limits.
    pub(crate) fn check_path(&self, name: &str, path: &[u8]) -> Result<(), ImageError> {
        let len = path.len() as u64;
        if len > self.limits.max_path {
            return Err(ImageError::limit(
                Limit::Path,
                format!(
                    "entry `{}`: its path is {len} bytes long, more than {}",
                    shorten(name),
                    self.limits.max_path
                ),
            ));
        }
        let depth = if path.is_empty() {
            0
        } else {
            path.iter().filter(|&&b| b == b'/').count() as u64 + 1
        };
        if depth > self.limits.max_depth {
            return Err(ImageError::limit(
                Limit::Depth,
                format!(
                    "entry `{}`: it is {depth} levels deep, more than {}",
                    shorten(name),
                    self.limits.max_depth
                ),
            ));
        }
        Ok(())
    }

    /// Fails unless the filesystem of `fd` keeps the reserve free after `more` bytes are
    /// written to it. `fd` is any descriptor on the filesystem (the staging root).
    pub(crate) fn check_free(&self, fd: BorrowedFd<'_>, more: u64) -> Result<(), ImageError> {
        let reserve_wanted = self.limits.min_free;
        if reserve_wanted.bytes == 0 && reserve_wanted.percent == 0 {
            return Ok(());
        }
        // A filesystem that cannot say (an error, or no size at all, as some FUSE ones) is not
        // refused: the write itself fails when it is full.
        let st = match rustix::fs::fstatvfs(fd) {
            Ok(st) if st.f_blocks > 0 => st,
            _ => return Ok(()),
        };
        let block = st.f_frsize.max(1);
        let size = st.f_blocks.saturating_mul(block);
        let available = st.f_bavail.saturating_mul(block);
        let reserve = reserve_wanted.reserve(size);
        if available.saturating_sub(more) < reserve {
            return Err(ImageError::limit(
                Limit::FreeSpace,
                format!(
                    "importing would leave less than {} free on the state filesystem ({} of {} free now, {} still to write; {})",
                    format_size(reserve),
                    format_size(available),
                    format_size(size),
                    format_size(more),
                    reserve_wanted
                ),
            ));
        }
        Ok(())
    }
}

/// A name cut to a length an error message can carry (archive names can be kilobytes long).
pub(crate) fn shorten(name: &str) -> String {
    const KEEP: usize = 160;
    if name.len() <= KEEP {
        return name.to_owned();
    }
    let mut end = KEEP;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &name[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_free_parses_and_reserves_the_larger() {
        let both: MinFree = "5%,1GiB".parse().unwrap();
        assert_eq!(both, MinFree::default());
        assert_eq!(both.reserve(10 * GIB), GIB);
        assert_eq!(both.reserve(100 * GIB), 5 * GIB);
        let pct: MinFree = "10%".parse().unwrap();
        assert_eq!(pct.reserve(50 * GIB), 5 * GIB);
        let bytes: MinFree = "2GiB".parse().unwrap();
        assert_eq!(bytes.reserve(1000 * GIB), 2 * GIB);
        assert_eq!("0".parse::<MinFree>().unwrap().reserve(GIB), 0);
        assert!("101%".parse::<MinFree>().is_err());
        assert!("5 %x".parse::<MinFree>().is_err());
        assert_eq!(MinFree::default().to_string(), "the larger of 5% and 1 GiB");
    }

    #[test]
    fn entries_bytes_and_files_count_across_archives() {
        let budget = ImportBudget::new(ImportLimits {
            max_entries: 3,
            max_bytes: 100,
            max_file_bytes: 60,
            ..ImportLimits::default()
        });
        for _ in 0..3 {
            budget.add_entry().unwrap();
        }
        let err = budget.add_entry().unwrap_err().to_string();
        assert_eq!(
            err,
            "the archive has more than 3 entries (--import-max-entries); if this is a real template, raise it with `mayfly daemon --import-max-entries N`"
        );
        budget.check_file("a", 60).unwrap();
        let err = budget.check_file("big", 61).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "`big` is 61 B, more than the 60 B a file may have (--import-max-file-size)"
            ),
            "{err}"
        );
        budget.add_bytes(60).unwrap();
        let err = budget.check_file("b", 41).unwrap_err().to_string();
        assert!(
            err.starts_with("the archive unpacks to more than 100 B (--import-max-bytes)"),
            "{err}"
        );
        budget.add_bytes(40).unwrap();
        assert!(budget.add_bytes(1).is_err());
    }

    #[test]
    fn paths_are_limited_in_length_and_depth() {
        let budget = ImportBudget::new(ImportLimits {
            max_path: 10,
            max_depth: 3,
            ..ImportLimits::default()
        });
        budget.check_path("a/b/c", b"a/b/c").unwrap();
        budget.check_path(".", b"").unwrap();
        let err = budget.check_path("a/b/c/d", b"a/b/c/d").unwrap_err();
        assert!(
            matches!(
                err,
                ImageError::Limit {
                    limit: Limit::Depth,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("it is 4 levels deep, more than 3"));
        let err = budget
            .check_path("abcdefghijk", b"abcdefghijk")
            .unwrap_err();
        assert!(
            err.to_string().starts_with(
                "entry `abcdefghijk`: its path is 11 bytes long, more than 10 (--import-max-path)"
            ),
            "{err}"
        );
        let long = "x".repeat(5000);
        let err = budget.check_path(&long, long.as_bytes()).unwrap_err();
        assert!(err.to_string().len() < 600, "{err}");
    }

    #[test]
    fn free_space_keeps_the_reserve() {
        let dir = tempfile::tempdir().unwrap();
        let fd = rustix::fs::open(
            dir.path(),
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        let st = rustix::fs::fstatvfs(&fd).unwrap();
        let available = st.f_bavail * st.f_frsize;
        let budget = |bytes| {
            ImportBudget::new(ImportLimits {
                min_free: MinFree { bytes, percent: 0 },
                ..ImportLimits::default()
            })
        };
        budget(0).check_free(fd.as_fd(), 1 << 20).unwrap();
        // Leaves room for 64 MiB more, whatever else writes meanwhile (give or take 1 GiB).
        let tight = budget(available.saturating_sub(GIB + 64 * MIB));
        tight.check_free(fd.as_fd(), 0).unwrap();
        let err = tight.check_free(fd.as_fd(), 2 * GIB).unwrap_err();
        assert!(
            matches!(
                err,
                ImageError::Limit {
                    limit: Limit::FreeSpace,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("(--import-min-free)"), "{err}");
        let all = ImportBudget::new(ImportLimits {
            min_free: "100%".parse().unwrap(),
            ..ImportLimits::default()
        });
        assert!(all.check_free(fd.as_fd(), 0).is_err());
    }

    use std::os::fd::AsFd as _;
}

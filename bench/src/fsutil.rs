//! File-system helpers of the snapshot and rollout suites: disk usage, flushing, waiting
//! for mayfly's background trash, process memory, and the generated template tree.

use std::collections::HashSet;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// Disk use of a tree: allocated bytes (`st_blocks`, each inode once, like `du`) and
/// apparent bytes (file sizes), plus the number of entries. Does not follow symbolic links
/// and stays on the tree's file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct Usage {
    pub allocated: u64,
    pub apparent: u64,
    pub entries: u64,
}

pub fn usage(root: &Path) -> io::Result<Usage> {
    let mut u = Usage::default();
    let mut seen = HashSet::new();
    let dev = std::fs::symlink_metadata(root)?.dev();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = match std::fs::symlink_metadata(&p) {
            Ok(m) => m,
            // Trees can change under us (mayfly's trash thread): skip what vanished.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if md.dev() != dev {
            continue;
        }
        u.entries += 1;
        if seen.insert(md.ino()) {
            u.allocated += md.blocks() * 512;
            if md.is_file() {
                u.apparent += md.len();
            }
        }
        if md.is_dir() {
            match std::fs::read_dir(&p) {
                Ok(rd) => {
                    for e in rd {
                        stack.push(e?.path());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(u)
}

/// `syncfs` on the file system that holds `path`.
pub fn syncfs(path: &Path) -> io::Result<()> {
    let f = std::fs::File::open(path)?;
    // SAFETY: valid descriptor.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Lets the previous operation finish its background work before the next timed one: waits
/// until mayfly's trash (`<state>/trash`, emptied by a background thread) is empty, then
/// flushes the file system, so that no timed operation pays for an earlier one's deletions
/// or dirty pages.
pub fn quiesce(state: &Path) -> io::Result<()> {
    let trash = state.join("trash");
    let t = Instant::now();
    loop {
        let empty = match std::fs::read_dir(&trash) {
            Ok(mut rd) => rd.next().is_none(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => true,
            Err(e) => return Err(e),
        };
        if empty {
            break;
        }
        if t.elapsed() > Duration::from_secs(120) {
            return Err(io::Error::other(format!(
                "{} still holds entries after 120 s",
                trash.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    syncfs(state)
}

/// `VmRSS` and `VmHWM` of a process, in bytes.
pub fn rss(pid: u32) -> io::Result<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> u64 {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

/// splitmix64: a small seeded generator, so that the generated tree is the same on every run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Log-uniform in [lo, hi).
    pub fn log_uniform(&mut self, lo: f64, hi: f64) -> u64 {
        (lo * (hi / lo).powf(self.unit())) as u64
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// What `generate_filler` wrote.
#[derive(Debug, Default, Clone, Copy)]
pub struct Filler {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
}

/// Writes about `target` bytes of incompressible, seeded data under `dir`: files of mixed
/// sizes (95 % log-uniform 256 B–64 KiB, 5 % log-uniform 64 KiB–4 MiB, roughly the shape
/// of a distribution's `/usr`), 100 per directory.
pub fn generate_filler(dir: &Path, target: u64, seed: u64) -> io::Result<Filler> {
    let mut rng = Rng::new(seed);
    let mut f = Filler::default();
    let mut buf = vec![0u8; 4 << 20];
    while f.bytes < target {
        let size = if rng.unit() < 0.95 {
            rng.log_uniform(256.0, 65_536.0)
        } else {
            rng.log_uniform(65_536.0, 4_194_304.0)
        }
        .min(target - f.bytes)
        .max(1);
        let sub = dir.join(format!("d{:03}", f.files / 100));
        if f.files % 100 == 0 {
            std::fs::create_dir_all(&sub)?;
            f.dirs += 1;
        }
        let mut out = std::fs::File::create(sub.join(format!("f{:05}", f.files)))?;
        let data = &mut buf[..size as usize];
        rng.fill(data);
        out.write_all(data)?;
        f.files += 1;
        f.bytes += size;
    }
    Ok(f)
}

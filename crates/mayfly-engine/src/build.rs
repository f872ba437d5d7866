//! Building layers: Debian root filesystems with debootstrap, and layers made by running a
//! script (package installs, patches) in a throwaway container over a template version.
//!
//! A build container is not an instance: it lives under `tmp/build-<id>/` (journalled, so a
//! crash leaves nothing), is on the default network with NAT (to reach the package archive;
//! an address leased for its life, `network/host.rs`), has the
//! host's apt package cache bind-mounted (idmapped) over `/var/cache/apt/archives` so a rebuild
//! does not download again and the packages never end up in the layer, and runs its script as
//! its init with stdout and stderr captured: every line is reported as it comes, and the tail
//! goes into the error when the script fails. Its writable layer — exactly what the script
//! added, changed or deleted — becomes a canonical layer.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mayfly_driver::{
    BindMount, ExitStatus, IdMap, InitStdio, InstanceSpec, NetworkMode, ProcessSpec,
};
use mayfly_image::IdRange;
use mayfly_store::{ID_BASE_START, ID_RANGE, LayerRecord};
use tokio::io::AsyncBufReadExt;

use crate::error::io_err;
use crate::recovery::kind;
use crate::{Engine, EngineError, lock, process};

/// Host ids of build containers: the range just below the instances' ranges.
const BUILD_ID_BASE: u32 = ID_BASE_START - ID_RANGE;

/// The hostname of build containers.
const BUILD_HOSTNAME: &str = "mayfly-build";

/// Lines of output kept for the error of a failed build.
const OUTPUT_TAIL: usize = 40;

/// Longest line of build output reported; a longer one is cut (a script that prints without
/// line ends must not grow the daemon's memory).
const MAX_LINE: usize = 16 * 1024;

/// How long a build (debootstrap, or a build container's script) may run before it is
/// stopped and fails: a script that never ends, or that leaves a process holding its output
/// open, must not hold the template and the package cache forever.
const BUILD_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2 * 3600);

/// Lines of a build's output, each cut at [`MAX_LINE`] bytes.
struct Lines<R> {
    r: tokio::io::BufReader<R>,
    done: bool,
}

impl<R: tokio::io::AsyncRead + Unpin> Lines<R> {
    fn new(r: R) -> Self {
        Lines {
            r: tokio::io::BufReader::new(r),
            done: false,
        }
    }

    /// The next line (without its end), `None` at the end of the output.
    async fn next(&mut self) -> Option<String> {
        if self.done {
            return None;
        }
        let mut line: Vec<u8> = Vec::new();
        loop {
            let (complete, used) = match self.r.fill_buf().await {
                Ok([]) | Err(_) => {
                    self.done = true;
                    return (!line.is_empty()).then(|| String::from_utf8_lossy(&line).into_owned());
                }
                Ok(buf) => {
                    let end = buf.iter().position(|&b| b == b'\n');
                    let take = end.unwrap_or(buf.len());
                    let room = MAX_LINE.saturating_sub(line.len());
                    line.extend_from_slice(&buf[..take.min(room)]);
                    (end.is_some(), end.map_or(buf.len(), |i| i + 1))
                }
            };
            self.r.consume(used);
            if complete {
                return Some(String::from_utf8_lossy(&line).into_owned());
            }
        }
    }
}

/// Where a build reports its output, line by line.
pub type BuildLog = Arc<dyn Fn(&str) + Send + Sync>;

/// A built layer, still in its staging directory.
#[derive(Debug)]
pub(crate) struct BuiltLayer {
    /// The staging directory (remove it after placing the layer).
    pub staging: PathBuf,
    /// The layer tree, inside `staging`.
    pub tree: PathBuf,
    /// Its record.
    pub layer: LayerRecord,
    /// The journal entry that owns `staging`.
    pub journal: i64,
}

/// The packages marked installed in a dpkg status file, as `name version`.
pub(crate) fn installed_packages(status: &str) -> Vec<String> {
    let mut out = Vec::new();
    for para in status.split("\n\n") {
        let field = |name: &str| {
            para.lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
        };
        if field("Status:").is_some_and(|s| s.ends_with(" installed"))
            && let (Some(p), Some(v)) = (field("Package:"), field("Version:"))
        {
            out.push(format!("{p} {v}"));
        }
    }
    out.sort();
    out
}

/// The dpkg status file of a layer stack (from the topmost layer that has one).
pub(crate) fn dpkg_status_of(layers: &[PathBuf]) -> Option<String> {
    layers
        .iter()
        .rev()
        .map(|l| l.join("var/lib/dpkg/status"))
        .find(|p| std::fs::symlink_metadata(p).is_ok())
        .and_then(|p| std::fs::read_to_string(p).ok())
}

/// Script that installs `packages` with apt (or upgrades everything for `upgrade`). The package
/// lists, caches and logs it leaves are cleaned after every build script (`hygiene`). The
/// downloaded archives stay where apt put them: in the host's cache bind-mounted over
/// `/var/cache/apt/archives` (never part of the layer), so that the next build does not
/// download them again (`apt-get clean` would empty it).
pub(crate) fn apt_script(packages: &[String]) -> String {
    let action = if packages.len() == 1 && packages[0] == "upgrade" {
        "apt-get -y -o Dpkg::Options::=--force-confold upgrade".to_owned()
    } else {
        format!(
            "apt-get install -y --no-install-recommends -o Dpkg::Options::=--force-confold {}",
            packages.join(" ")
        )
    };
    format!("set -e\nexport DEBIAN_FRONTEND=noninteractive\napt-get update\n{action}\n")
}

/// Checks package names given by a user.
pub(crate) fn check_packages(packages: &[String]) -> Result<(), EngineError> {
    for p in packages {
        let ok = !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.:=~_".contains(c))
            && !p.starts_with('-');
        if !ok {
            return Err(EngineError::invalid(
                format!("invalid package name `{p}`"),
                "give Debian package names, e.g. `--packages nginx,curl`",
            ));
        }
    }
    Ok(())
}

/// Unmounts whatever is mounted at or below `root` (debootstrap mounts /proc and /sys in its
/// target and leaves them when it fails), deepest first.
fn unmount_below(root: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(root))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        let _ = rustix::mount::unmount(&p, rustix::mount::UnmountFlags::DETACH);
    }
}

impl Engine {
    /// Runs `script` in a build container over `layers` (lowest first) with environment `env`
    /// and turns its writable layer into a layer.
    pub(crate) async fn build_layer(
        self: &Arc<Self>,
        layers: Vec<PathBuf>,
        env: Vec<String>,
        script: String,
        log: BuildLog,
    ) -> Result<BuiltLayer, EngineError> {
        let id = format!("build-{}", crate::random_hex(6));
        let staging = self.layout.tmp().join(&id);
        let journal = self.journal(kind::IMPORT, &id, &staging).await?;
        // The build reaches out through the default network with NAT (not the host's
        // namespace): an interface leased for its life, its rules gone at its end.
        let result = match self.build_net_up(&id).await {
            Ok(_) => {
                let r = self
                    .run_build(&id, &staging, layers, env, script, log)
                    .await;
                self.build_net_down(&id).await;
                r
            }
            Err(e) => Err(e),
        };
        match result {
            Ok((tree, layer)) => Ok(BuiltLayer {
                staging,
                tree,
                layer,
                journal,
            }),
            Err(e) => {
                let _ = self.trash.discard(&staging);
                self.trash.wake();
                self.journal_end(journal).await;
                Err(e)
            }
        }
    }

    async fn run_build(
        self: &Arc<Self>,
        id: &str,
        staging: &Path,
        layers: Vec<PathBuf>,
        env: Vec<String>,
        script: String,
        log: BuildLog,
    ) -> Result<(PathBuf, LayerRecord), EngineError> {
        // Its lease on the default network (`build_net_up`).
        let interfaces = self.interfaces_of(id).await?;
        std::fs::create_dir(staging).map_err(io_err("create", staging))?;
        let writable = staging.join("upper");
        let debian = layers.iter().any(|l| l.join("var/lib/dpkg").is_dir());
        let mut binds = Vec::new();
        // apt refuses to share its archive directory with another apt at work; builds that
        // use the cache (of this daemon, or of another daemon pointed at the same cache) take
        // their turn on a lock file beside it, held until this build's container has ended.
        let mut cache_turn = None;
        if debian {
            let cache = self.config.cache_dir.join("apt/archives");
            std::fs::create_dir_all(cache.join("partial")).map_err(io_err("create", &cache))?;
            let lock_path = self.config.cache_dir.join("apt/lock");
            let f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .map_err(io_err("open", &lock_path))?;
            if rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err()
            {
                log(&format!(
                    "waiting for another build that uses the package cache {} …",
                    cache.display()
                ));
                let f2 = f.try_clone().map_err(io_err("open", &lock_path))?;
                tokio::task::spawn_blocking(move || {
                    rustix::fs::flock(&f2, rustix::fs::FlockOperation::LockExclusive)
                })
                .await
                .map_err(|e| EngineError::Internal(e.to_string()))?
                .map_err(|e| EngineError::Io {
                    action: "lock",
                    path: lock_path.clone(),
                    source: e.into(),
                })?;
            }
            cache_turn = Some(f);
            binds.push(BindMount {
                source: cache,
                target: "/var/cache/apt/archives".into(),
                readonly: false,
                only_over_file: false,
            });
        }
        let idmap = self.userns_off.is_none().then_some(IdMap {
            host_base: BUILD_ID_BASE,
            count: ID_RANGE,
        });
        let mut extra = vec!["DEBIAN_FRONTEND=noninteractive".to_owned()];
        extra.extend(env);
        let lowers = layers.clone();
        let mut layers = layers;
        let files = self
            .etc_files(
                staging.to_owned(),
                BUILD_HOSTNAME.to_owned(),
                NetworkMode::Isolated,
                layers.clone(),
                crate::etc_files::EtcNet::of(&interfaces),
                Vec::new(),
            )
            .await?;
        layers.extend(files.mount_points);
        binds.extend(files.binds);
        let spec = InstanceSpec {
            id: id.to_owned(),
            hostname: BUILD_HOSTNAME.into(),
            layers,
            instance_dir: staging.to_owned(),
            writable: writable.clone(),
            new_identity: false,
            network: NetworkMode::Isolated,
            binds,
            idmap,
            process: ProcessSpec {
                args: crate::hygiene::build_command(script),
                env: process::environment(BUILD_HOSTNAME, false, &[&extra]),
                cwd: "/".into(),
                user: String::new(),
                tty: false,
            },
            init: false,
            interfaces,
            limits: mayfly_api::Limits::default(),
            user_data: None,
        };
        self.prepare_writable(&spec).await?;
        let null =
            std::fs::File::open("/dev/null").map_err(io_err("open", Path::new("/dev/null")))?;
        let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(|e| {
            EngineError::Io {
                action: "create a pipe for",
                path: staging.to_owned(),
                source: e.into(),
            }
        })?;
        let w2 = w.try_clone().map_err(io_err("duplicate", staging))?;
        rustix::io::ioctl_fionbio(&r, true).map_err(|e| EngineError::Io {
            action: "set up the output of",
            path: staging.to_owned(),
            source: e.into(),
        })?;
        let (tx, rx) = tokio::sync::oneshot::channel::<Option<ExitStatus>>();
        lock(&self.build_waiters).insert(id.to_owned(), tx);
        let started = self
            .driver
            .start(spec, InitStdio::Passed(vec![null.into(), w, w2]))
            .await;
        if let Err(e) = started {
            lock(&self.build_waiters).remove(id);
            return Err(crate::error::from_driver(e));
        }
        let reader = tokio::net::unix::pipe::Receiver::from_owned_fd_unchecked(r)
            .map_err(io_err("read the output of", staging))?;
        let mut tail: VecDeque<String> = VecDeque::new();
        let ran = tokio::time::timeout(BUILD_DEADLINE, async {
            let mut lines = Lines::new(reader);
            while let Some(line) = lines.next().await {
                log(&line);
                if tail.len() == OUTPUT_TAIL {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
            rx.await.ok().flatten()
        })
        .await;
        let status = match ran {
            Ok(status) => status,
            Err(_) => {
                let _ = self.driver.kill(id).await;
                lock(&self.build_waiters).remove(id);
                let _ = self.driver.release(id).await;
                return Err(EngineError::BuildFailed {
                    how: format!(
                        "did not finish within {} minutes and was stopped (a script that never ends, or leaves a process holding its output open)",
                        BUILD_DEADLINE.as_secs() / 60
                    ),
                    output: tail.into_iter().collect::<Vec<_>>().join("\n"),
                });
            }
        };
        let _ = self.driver.release(id).await;
        drop(cache_turn);
        match status {
            Some(s) if s.code == 0 => {}
            other => {
                let how = match other {
                    Some(s) => format!("exited with code {}", s.code),
                    None => "ended with an unknown status".to_owned(),
                };
                let output: Vec<String> = tail.into_iter().collect();
                return Err(EngineError::BuildFailed {
                    how,
                    output: output.join("\n"),
                });
            }
        }
        let w = writable.clone();
        let ids = idmap.map(|m| IdRange {
            start: m.host_base,
            count: m.count,
        });
        let layer = self
            .blocking(move || {
                let markers = mayfly_image::upper_to_layer(&w, ids, &lowers)?;
                tracing::debug!(
                    "build layer {}: {} opaque markers kept, {} needless ones dropped",
                    w.display(),
                    markers.kept,
                    markers.dropped
                );
                crate::layer::seal(&w)
            })
            .await?;
        Ok((writable, layer))
    }

    /// Debootstraps a Debian root filesystem into `staging/rootfs`; returns its path.
    pub(crate) async fn debootstrap(
        &self,
        staging: &Path,
        suite: &str,
        variant: &str,
        packages: &[String],
        mirror: &str,
        log: BuildLog,
    ) -> Result<PathBuf, EngineError> {
        let binary = ["/usr/sbin/debootstrap", "/usr/bin/debootstrap"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .ok_or_else(|| {
                EngineError::Unavailable(
                    "debootstrap is not installed (apt-get install debootstrap)".into(),
                )
            })?;
        let ok_word = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        if !ok_word(suite) || !ok_word(variant) {
            return Err(EngineError::invalid(
                format!("invalid suite `{suite}` or variant `{variant}`"),
                "e.g. `--debian bookworm --variant minbase`",
            ));
        }
        if !(mirror.starts_with("http://")
            || mirror.starts_with("https://")
            || mirror.starts_with("file:/"))
        {
            return Err(EngineError::invalid(
                format!("invalid mirror `{mirror}`"),
                "give a URL, e.g. http://deb.debian.org/debian",
            ));
        }
        std::fs::create_dir(staging).map_err(io_err("create", staging))?;
        let rootfs = staging.join("rootfs");
        let cache = self.config.cache_dir.join("debootstrap");
        std::fs::create_dir_all(&cache).map_err(io_err("create", &cache))?;
        let mut cmd = tokio::process::Command::new(binary);
        cmd.arg(format!("--variant={variant}"))
            .arg(format!("--cache-dir={}", cache.display()));
        if !packages.is_empty() {
            cmd.arg(format!("--include={}", packages.join(",")));
        }
        cmd.arg(suite)
            .arg(&rootfs)
            .arg(mirror)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(io_err("run", Path::new(binary)))?;
        let mut tail: VecDeque<String> = VecDeque::new();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let (line_tx, mut line_rx) = tokio::sync::mpsc::channel::<String>(256);
        for stream in [
            stdout.map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            stderr.map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = line_tx.clone();
            tokio::spawn(async move {
                let mut lines = Lines::new(stream);
                while let Some(l) = lines.next().await {
                    if tx.send(l).await.is_err() {
                        break;
                    }
                }
            });
        }
        drop(line_tx);
        let ran = tokio::time::timeout(BUILD_DEADLINE, async {
            while let Some(line) = line_rx.recv().await {
                log(&line);
                if tail.len() == OUTPUT_TAIL {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        })
        .await;
        if ran.is_err() {
            let _ = child.kill().await;
            unmount_below(&rootfs);
            return Err(EngineError::BuildFailed {
                how: format!(
                    "debootstrap did not finish within {} minutes and was stopped",
                    BUILD_DEADLINE.as_secs() / 60
                ),
                output: tail.into_iter().collect::<Vec<_>>().join("\n"),
            });
        }
        let status = child
            .wait()
            .await
            .map_err(io_err("wait for", Path::new(binary)))?;
        unmount_below(&rootfs);
        if !status.success() {
            let output: Vec<String> = tail.into_iter().collect();
            return Err(EngineError::BuildFailed {
                how: format!("debootstrap {status}"),
                output: output.join("\n"),
            });
        }
        // Caches, lists and logs of the build, and the host's name and resolver, do not belong
        // in a template.
        let (r, clean) = (rootfs.clone(), crate::hygiene::OS_TEMPLATE);
        let removed = self
            .blocking(move || Ok(mayfly_image::prune_tree(&r, clean.emptied, clean.removed)?))
            .await?;
        log(&format!(
            "removed {removed} files of package caches, package lists and build logs"
        ));
        Ok(rootfs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installed_packages_are_read_from_dpkg_status() {
        let status = "Package: a\nStatus: install ok installed\nVersion: 1.0\nDescription: x\n more\n\nPackage: b\nStatus: deinstall ok config-files\nVersion: 2\n\nPackage: c\nStatus: install ok installed\nVersion: 3:1-2\n";
        assert_eq!(installed_packages(status), vec!["a 1.0", "c 3:1-2"]);
    }

    #[test]
    fn package_names_are_checked() {
        assert!(check_packages(&["nginx".into(), "libc6:amd64".into(), "g++".into()]).is_ok());
        for bad in ["", "-o", "a b", "a;rm", "$(x)"] {
            assert!(check_packages(&[bad.into()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn apt_scripts_install_or_upgrade_and_clean_up() {
        let s = apt_script(&["nginx".into(), "curl".into()]);
        assert!(s.contains(
            "install -y --no-install-recommends -o Dpkg::Options::=--force-confold nginx curl"
        ));
        assert!(
            !s.contains("rm -rf /var/lib/apt/lists/*"),
            "the lists' directories stay (the clean-up empties them)"
        );
        assert!(
            !s.contains("apt-get clean"),
            "the shared download cache is kept"
        );
        assert!(apt_script(&["upgrade".into()]).contains(" upgrade"));
    }
}

#[cfg(test)]
mod line_tests {
    use super::*;

    #[tokio::test]
    async fn build_output_lines_are_cut_at_the_limit_and_none_is_lost() {
        let mut data = b"one\n".to_vec();
        data.extend(std::iter::repeat_n(b'x', MAX_LINE * 3));
        data.extend_from_slice(b"\ntwo\nlast without end");
        let mut lines = Lines::new(&data[..]);
        assert_eq!(lines.next().await.as_deref(), Some("one"));
        let long = lines.next().await.unwrap();
        assert_eq!(long.len(), MAX_LINE, "a line is cut at the limit");
        assert_eq!(lines.next().await.as_deref(), Some("two"));
        assert_eq!(lines.next().await.as_deref(), Some("last without end"));
        assert_eq!(lines.next().await, None);
    }
}

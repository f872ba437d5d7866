//! Template actions: import (from a host directory or an archive stream), list, info, remove,
//! and the built-in `busybox` template.
//!
//! An import builds the tree under `tmp/` (journalled), digests it, flushes it (`syncfs`),
//! renames it into `layers/` unless that layer exists already (identical trees are stored
//! once), and commits the template in one transaction that also closes the journal entry.
//! Moving layers into place and deleting them are serialised by one lock, so that an import
//! never reuses a layer that a concurrent removal is deleting.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mayfly_api::names::check_template_name;
use mayfly_api::{LayerInfo, TemplateConfig, TemplateInfo, VersionInfo};
use mayfly_image::{CopyOptions, Progress, XattrPolicy};
use mayfly_store::{LayerRecord, NewVersion, StoreError, TemplateRecord, VersionMeta};
use tokio::sync::mpsc;

use crate::error::io_err;
use crate::{Engine, EngineError};

/// Meta key recording that the built-in template was created once (so that removing it
/// sticks).
const BUILTIN_KEY: &str = "builtin_busybox_created";

/// The built-in template's name.
pub const BUILTIN_TEMPLATE: &str = "busybox";

/// A blocking [`Read`] over chunks sent from async code (an HTTP body being uploaded).
#[derive(Debug)]
pub struct ChannelReader {
    rx: mpsc::Receiver<std::io::Result<Vec<u8>>>,
    buf: Vec<u8>,
    pos: usize,
}

impl ChannelReader {
    /// A reader and the sender that feeds it; dropping the sender is end of input.
    pub fn new(depth: usize) -> (mpsc::Sender<std::io::Result<Vec<u8>>>, ChannelReader) {
        let (tx, rx) = mpsc::channel(depth);
        (
            tx,
            ChannelReader {
                rx,
                buf: Vec::new(),
                pos: 0,
            },
        )
    }
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.buf.len() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => {
                    self.buf = chunk;
                    self.pos = 0;
                }
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Where an import reads from.
enum Source {
    /// A host directory, copied.
    Dir(PathBuf),
    /// A tar stream (plain, gzip or zstd), unpacked.
    Archive(Box<dyn Read + Send>),
    /// The built-in rootfs, made from this busybox binary.
    Busybox(PathBuf),
}

/// Writes `source` as a tree at `tmp`, digests it and flushes it.
fn build_tree(
    tmp: &Path,
    source: Source,
    progress: &dyn Progress,
) -> Result<LayerRecord, EngineError> {
    match source {
        Source::Dir(src) => {
            mayfly_image::copy_tree(
                &src,
                tmp,
                CopyOptions {
                    xattrs: XattrPolicy::Portable,
                    one_file_system: true,
                },
                progress,
            )?;
        }
        Source::Archive(reader) => {
            std::fs::create_dir(tmp).map_err(io_err("create", tmp))?;
            mayfly_image::unpack_archive(reader, tmp, progress)?;
            crate::failpoint("import:unpacked");
        }
        Source::Busybox(binary) => {
            std::fs::create_dir(tmp).map_err(io_err("create", tmp))?;
            mayfly_image::build_busybox_rootfs(&binary, tmp)?;
        }
    }
    let digest = mayfly_image::tree_digest(tmp)?;
    let stats = mayfly_image::tree_stats(tmp)?;
    // One syncfs flushes every file of the tree before it is renamed into place.
    let dir = std::fs::File::open(tmp).map_err(io_err("open", tmp))?;
    rustix::fs::syncfs(&dir).map_err(|e| EngineError::Io {
        action: "flush",
        path: tmp.to_owned(),
        source: e.into(),
    })?;
    Ok(LayerRecord {
        digest: digest.as_str().to_owned(),
        size: stats.bytes,
        entries: stats.entries,
    })
}

fn fsync_dir(path: &Path) -> Result<(), EngineError> {
    let f = std::fs::File::open(path).map_err(io_err("open", path))?;
    f.sync_all().map_err(io_err("flush", path))
}

impl Engine {
    /// Imports template `name` from a directory or archive on the daemon's host.
    pub async fn import_template_path(
        self: &Arc<Self>,
        name: &str,
        path: &str,
        command: Option<Vec<String>>,
        message: Option<String>,
        progress: Arc<dyn Progress + Send>,
    ) -> Result<TemplateInfo, EngineError> {
        let p = PathBuf::from(path);
        if !p.is_absolute() {
            return Err(EngineError::invalid(
                format!("invalid source `{path}`: the daemon needs an absolute path"),
                "give the full path, e.g. /srv/rootfs",
            ));
        }
        let meta = std::fs::metadata(&p).map_err(|e| {
            EngineError::invalid(
                format!("cannot read source `{path}`: {e}"),
                "give a root directory or a .tar, .tar.gz or .tar.zst of one",
            )
        })?;
        let source = if meta.is_dir() {
            Source::Dir(p)
        } else if meta.is_file() {
            let f = std::fs::File::open(&p).map_err(io_err("open", &p))?;
            Source::Archive(Box::new(std::io::BufReader::with_capacity(1 << 20, f)))
        } else {
            return Err(EngineError::invalid(
                format!("invalid source `{path}`: it is neither a directory nor a file"),
                "give a root directory or a .tar, .tar.gz or .tar.zst of one",
            ));
        };
        let message = message.unwrap_or_else(|| format!("imported from {path}"));
        self.import(name, source, command, message, false, progress)
            .await
    }

    /// Imports template `name` from an archive read from `reader` (an upload).
    pub async fn import_template_archive(
        self: &Arc<Self>,
        name: &str,
        reader: ChannelReader,
        command: Option<Vec<String>>,
        message: Option<String>,
        progress: Arc<dyn Progress + Send>,
    ) -> Result<TemplateInfo, EngineError> {
        let message = message.unwrap_or_else(|| "imported from an uploaded archive".to_owned());
        self.import(
            name,
            Source::Archive(Box::new(reader)),
            command,
            message,
            false,
            progress,
        )
        .await
    }

    async fn import(
        self: &Arc<Self>,
        name: &str,
        source: Source,
        command: Option<Vec<String>>,
        message: String,
        builtin: bool,
        progress: Arc<dyn Progress + Send>,
    ) -> Result<TemplateInfo, EngineError> {
        check_template_name(name).map_err(|e| {
            EngineError::invalid(e, "e.g. `mayfly template import debian ./rootfs.tar.zst`")
        })?;
        if let Some(cmd) = &command
            && (cmd.is_empty() || cmd.iter().any(|a| a.contains('\0')))
        {
            return Err(EngineError::invalid(
                "invalid default command",
                "e.g. `--cmd /sbin/init`",
            ));
        }
        let n = name.to_owned();
        match self.db(move |s| s.template(&n)).await {
            Ok(_) => {
                return Err(EngineError::Store(StoreError::AlreadyExists {
                    kind: "template",
                    name: name.to_owned(),
                }));
            }
            Err(EngineError::Store(StoreError::NotFound { .. })) => {}
            Err(e) => return Err(e),
        }
        let tmp = self
            .layout
            .tmp()
            .join(format!("import-{}", crate::random_hex(8)));
        let (n, t) = (name.to_owned(), tmp.clone());
        let journal = self
            .db(move |s| s.journal_begin(crate::recovery::kind::IMPORT, &n, &[t]))
            .await?;
        let t = tmp.clone();
        let built = self
            .blocking(move || build_tree(&t, source, progress.as_ref()))
            .await;
        let layer = match built {
            Ok(layer) => layer,
            Err(e) => {
                self.abandon(&tmp, journal).await;
                return Err(e);
            }
        };
        let has_init = std::fs::symlink_metadata(tmp.join("sbin/init")).is_ok();
        let config = TemplateConfig {
            command: command.unwrap_or_else(|| {
                if has_init {
                    vec!["/sbin/init".to_owned()]
                } else {
                    Vec::new()
                }
            }),
            env: Vec::new(),
            workdir: "/".to_owned(),
            stop_signal: "SIGTERM".to_owned(),
        };
        let _commit = self.layers_lock.lock().await;
        let placed = self.place_layer(&tmp, &layer.digest).await;
        if let Err(e) = placed {
            self.abandon(&tmp, journal).await;
            return Err(e);
        }
        let (n, l, c, m) = (name.to_owned(), layer.clone(), config, message);
        let created = self
            .db(move |s| {
                let version = NewVersion {
                    layers: &[l],
                    config: &c,
                    message: &m,
                    meta: &VersionMeta::default(),
                };
                s.create_template(&n, builtin, &version, Some(journal))
            })
            .await;
        if let Err(e) = created {
            self.drop_layer_if_unreferenced(&layer.digest).await;
            self.abandon(&tmp, journal).await;
            return Err(e);
        }
        drop(_commit);
        self.template_info(name).await
    }

    /// Renames the tree at `tmp` to the layer directory of `digest`, or discards it when
    /// that layer exists already.
    pub(crate) async fn place_layer(&self, tmp: &Path, digest: &str) -> Result<(), EngineError> {
        let target = self.layout.layer_dir(digest);
        let layers = self.layout.layers();
        let trash = self.trash.dir().to_owned();
        let tmp = tmp.to_owned();
        self.blocking(move || {
            if target.exists() {
                mayfly_driver::container::move_to_trash(&tmp, &trash).map_err(EngineError::Driver)
            } else {
                std::fs::rename(&tmp, &target).map_err(io_err("move into place", &tmp))?;
                fsync_dir(&layers)
            }
        })
        .await
    }

    pub(crate) async fn drop_layer_if_unreferenced(&self, digest: &str) {
        let d = digest.to_owned();
        if let Ok(false) = self.db(move |s| s.has_layer(&d)).await {
            let dir = self.layout.layer_dir(digest);
            let _ = mayfly_driver::container::move_to_trash(&dir, self.trash.dir());
            self.trash.wake();
        }
    }

    /// Removes an import's temporary tree and closes its journal entry.
    async fn abandon(&self, tmp: &Path, journal: i64) {
        let _ = mayfly_driver::container::move_to_trash(tmp, self.trash.dir());
        self.trash.wake();
        let _ = self.db(move |s| s.journal_end(journal)).await;
    }

    fn to_info(rec: &TemplateRecord, used_by: Vec<String>) -> TemplateInfo {
        TemplateInfo {
            name: rec.name.clone(),
            current_version: rec.current_version,
            builtin: rec.builtin,
            created_at: crate::rfc3339(rec.created_at),
            versions: rec
                .versions
                .iter()
                .map(|v| VersionInfo {
                    version: v.version,
                    created_at: crate::rfc3339(v.created_at),
                    message: v.message.clone(),
                    layers: v
                        .layers
                        .iter()
                        .map(|l| LayerInfo {
                            digest: l.digest.clone(),
                            size: l.size,
                            entries: l.entries,
                        })
                        .collect(),
                    config: v.config.clone(),
                    packages: v.meta.packages.clone(),
                    base: v.meta.base.clone(),
                    app: v.meta.app,
                    used_by: Vec::new(),
                })
                .collect(),
            used_by,
            shadowed: Vec::new(),
        }
    }

    /// Every template.
    pub async fn list_templates(&self) -> Result<Vec<TemplateInfo>, EngineError> {
        self.db(|s| {
            let mut out = Vec::new();
            for rec in s.templates()? {
                let users = s.template_users(&rec.name)?;
                out.push(Engine::to_info(&rec, users));
            }
            Ok(out)
        })
        .await
    }

    /// One template, with who uses each version and what persistent followers shadow.
    pub async fn template_info(&self, name: &str) -> Result<TemplateInfo, EngineError> {
        let n = name.to_owned();
        let (rec, mut info) = self
            .db(move |s| {
                let rec = s.template(&n)?;
                let users = s.template_users(&n)?;
                let mut info = Engine::to_info(&rec, users);
                for v in &mut info.versions {
                    v.used_by = s.version_users(&n, v.version)?;
                }
                Ok((rec, info))
            })
            .await?;
        info.shadowed = self.shadowed(&rec).await?;
        Ok(info)
    }

    /// Removes a template (refused while instances use it) and the layers nothing else uses.
    pub async fn remove_template(&self, name: &str) -> Result<(), EngineError> {
        let _guard = self.layers_lock.lock().await;
        let n = name.to_owned();
        let gone = self
            .db(move |s| {
                s.delete_template(&n)?;
                s.drop_unreferenced_layers()
            })
            .await?;
        for digest in gone {
            let dir = self.layout.layer_dir(&digest);
            if let Err(e) = mayfly_driver::container::move_to_trash(&dir, self.trash.dir()) {
                tracing::warn!(
                    "cannot remove layer {digest}: {}",
                    mayfly_driver::error_chain(&e)
                );
            }
        }
        self.trash.wake();
        Ok(())
    }

    /// Creates the built-in `busybox` template from the host's busybox the first time the
    /// daemon runs on this state directory.
    pub(crate) async fn ensure_builtin_template(self: &Arc<Self>) -> Result<(), EngineError> {
        if self.db(|s| s.meta(BUILTIN_KEY)).await?.is_some() {
            return Ok(());
        }
        let Some(busybox) = self.config.busybox.clone() else {
            return Ok(());
        };
        if !busybox.is_file() {
            tracing::warn!(
                "no built-in template: {} is missing (install it with `apt-get install busybox-static`)",
                busybox.display()
            );
            return Ok(());
        }
        let exists = self.db(|s| s.template(BUILTIN_TEMPLATE)).await.is_ok();
        if !exists {
            self.import(
                BUILTIN_TEMPLATE,
                Source::Busybox(busybox.clone()),
                Some(vec!["/sbin/init".to_owned()]),
                format!("built-in, from {}", busybox.display()),
                true,
                Arc::new(mayfly_image::NoProgress),
            )
            .await?;
        }
        self.db(|s| s.set_meta(BUILTIN_KEY, "1")).await?;
        Ok(())
    }
}

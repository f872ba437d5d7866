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
use mayfly_image::{
    CopyOptions, ImageError, ImportBudget, ImportLimits, OciConfig, Progress, XattrPolicy,
};
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

/// Whether `dir` holds a container image (an OCI image layout, or an unpacked `docker save`)
/// rather than a root filesystem.
fn is_image_dir(dir: &Path) -> bool {
    let file = |name: &str| std::fs::symlink_metadata(dir.join(name)).is_ok_and(|m| m.is_file());
    (file("oci-layout") && file("index.json"))
        || (file("manifest.json") && !dir.join("etc").is_dir())
}

/// Writes `source` under `staging`: a root filesystem becomes `staging/tree`; a container
/// image (a directory, or an archive that turns out to hold one) becomes one tree per image
/// layer (`staging/layer-N`, OCI whiteouts translated). Returns the trees, lowest first, and
/// the image's configuration for an image.
///
/// An archive is unpacked under `limits`; an image's layers under the same limits again, all
/// of them together (the archive that carried them holds their compressed blobs, which the
/// free-space reserve accounts for as they sit on the same filesystem).
fn write_trees(
    staging: &Path,
    source: Source,
    progress: &dyn Progress,
    limits: ImportLimits,
) -> Result<(Vec<PathBuf>, Option<OciConfig>), EngineError> {
    let tree = staging.join("tree");
    let image = match source {
        Source::Dir(src) if is_image_dir(&src) => Some(src),
        Source::Dir(src) => {
            let options = CopyOptions {
                xattrs: XattrPolicy::Portable,
                one_file_system: true,
            };
            mayfly_image::copy_tree(&src, &tree, options, progress)?;
            None
        }
        Source::Archive(reader) => {
            std::fs::create_dir(&tree).map_err(io_err("create", &tree))?;
            mayfly_image::unpack_archive(reader, &tree, progress, &ImportBudget::new(limits))?;
            crate::failpoint("import:unpacked");
            is_image_dir(&tree).then(|| tree.clone())
        }
        Source::Busybox(binary) => {
            std::fs::create_dir(&tree).map_err(io_err("create", &tree))?;
            mayfly_image::build_busybox_rootfs(&binary, &tree)?;
            None
        }
    };
    let Some(dir) = image else {
        return Ok((vec![tree], None));
    };
    let image = mayfly_image::open_image_dir(&dir)?;
    let layers_budget = ImportBudget::new(limits);
    let mut trees = Vec::with_capacity(image.layers.len());
    for (i, layer) in image.layers.iter().enumerate() {
        let blob = mayfly_image::image_layer_path(&dir, layer)?;
        let file = std::fs::File::open(&blob).map_err(io_err("open", &blob))?;
        let dest = staging.join(format!("layer-{i}"));
        std::fs::create_dir(&dest).map_err(io_err("create", &dest))?;
        mayfly_image::unpack_layer_archive(
            std::io::BufReader::with_capacity(1 << 20, file),
            &dest,
            progress,
            &layers_budget,
        )
        .map_err(|e| match e {
            // Say which layer: "the archive" alone would read as the upload.
            ImageError::Limit { limit, what } => ImageError::Limit {
                limit,
                what: format!("layer {} ({}) of the image: {what}", i + 1, layer.digest),
            },
            e => e,
        })?;
        trees.push(dest);
    }
    if trees.is_empty() {
        return Err(EngineError::invalid(
            format!("the image in {} has no layers", dir.display()),
            "give an image with at least one layer",
        ));
    }
    Ok((trees, Some(image.config)))
}

/// Digests and measures each tree, then flushes them all with one `syncfs`.
fn seal_trees(staging: &Path, trees: &[PathBuf]) -> Result<Vec<LayerRecord>, EngineError> {
    let out = trees
        .iter()
        .map(|t| crate::layer::measure(t))
        .collect::<Result<Vec<_>, _>>()?;
    crate::layer::flush(staging)?;
    Ok(out)
}

/// Instance defaults from an explicit command (the whole default command: it replaces an
/// image's entrypoint and cmd), an image's configuration (its `Entrypoint` and `Cmd` kept
/// apart, its `User`), or the tree (`/sbin/init`).
fn import_config(
    command: Option<Vec<String>>,
    image: Option<OciConfig>,
    trees: &[PathBuf],
) -> TemplateConfig {
    let has_init = trees
        .iter()
        .any(|t| std::fs::symlink_metadata(t.join("sbin/init")).is_ok());
    let mut config = TemplateConfig::default();
    if let Some(image) = image {
        config.set_command(image.entrypoint.clone(), image.cmd.clone());
        // Checked when an instance would run as it: `--user` can stand in for a bad one.
        config.user = image.user.unwrap_or_default();
        config.env = image.env.clone();
        if let Some(w) = image.workdir.filter(|w| w.starts_with('/')) {
            config.workdir = w;
        }
        if let Some(s) = image.stop_signal {
            config.stop_signal = s;
        }
    }
    if let Some(cmd) = command {
        config.set_command(Vec::new(), cmd);
    } else if config.command.is_empty() && has_init {
        config.set_command(Vec::new(), vec!["/sbin/init".to_owned()]);
    }
    config
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
        let staging = self
            .layout
            .tmp()
            .join(format!("import-{}", crate::random_hex(8)));
        let journal = self
            .journal(crate::recovery::kind::IMPORT, name, &staging)
            .await?;
        let result = self
            .import_into(
                name, &staging, source, command, message, builtin, progress, journal,
            )
            .await;
        let _ = self.trash.discard(&staging);
        self.trash.wake();
        if result.is_err() {
            self.journal_end(journal).await;
        }
        result?;
        self.template_info(name).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn import_into(
        self: &Arc<Self>,
        name: &str,
        staging: &Path,
        source: Source,
        command: Option<Vec<String>>,
        message: String,
        builtin: bool,
        progress: Arc<dyn Progress + Send>,
        journal: i64,
    ) -> Result<(), EngineError> {
        let s = staging.to_owned();
        let limits = self.config.import_limits;
        let (trees, records, image) = self
            .blocking(move || {
                std::fs::create_dir(&s).map_err(io_err("create", &s))?;
                let (trees, image) = write_trees(&s, source, progress.as_ref(), limits)?;
                let records = seal_trees(&s, &trees)?;
                Ok((trees, records, image))
            })
            .await?;
        let config = import_config(command, image, &trees);
        let _commit = self.layers_lock.lock().await;
        let mut placed: Vec<String> = Vec::new();
        let committed: Result<(), EngineError> = async {
            for (tree, record) in trees.iter().zip(&records) {
                self.place_layer(tree, &record.digest).await?;
                placed.push(record.digest.clone());
            }
            let layers = if records.len() > crate::MAX_LAYERS {
                let squashed = self.squash(&records).await?;
                placed.push(squashed.digest.clone());
                vec![squashed]
            } else {
                records.clone()
            };
            let (n, c, m) = (name.to_owned(), config, message);
            self.db(move |s| {
                let version = NewVersion {
                    layers: &layers,
                    config: &c,
                    message: &m,
                    meta: &VersionMeta::default(),
                };
                s.create_template(&n, builtin, &version, Some(journal))
            })
            .await
        }
        .await;
        if committed.is_err() {
            // Layers moved into place for nothing (unless another template shares them).
            for digest in &placed {
                self.drop_layer_if_unreferenced(digest).await;
            }
        }
        committed
    }

    /// Renames the tree at `tmp` to the layer directory of `digest`, or discards it when
    /// that layer exists already.
    pub(crate) async fn place_layer(&self, tmp: &Path, digest: &str) -> Result<(), EngineError> {
        let target = self.layout.layer_dir(digest);
        if target.exists() {
            return self.trash.discard(tmp);
        }
        let layers = self.layout.layers();
        let tmp = tmp.to_owned();
        self.blocking(move || {
            std::fs::rename(&tmp, &target).map_err(io_err("move into place", &tmp))?;
            fsync_dir(&layers)
        })
        .await
    }

    pub(crate) async fn drop_layer_if_unreferenced(&self, digest: &str) {
        let d = digest.to_owned();
        if let Ok(false) = self.db(move |s| s.has_layer(&d)).await {
            let dir = self.layout.layer_dir(digest);
            let _ = self.trash.discard(&dir);
            self.trash.wake();
        }
    }

    fn to_info(rec: &TemplateRecord, used_by: Vec<String>) -> TemplateInfo {
        TemplateInfo {
            name: rec.name.clone(),
            current_version: rec.current_version,
            previous_version: rec.previous_version,
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
            held_back: Vec::new(),
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

    /// One template, with who uses each version, what persistent followers shadow and which
    /// followers their applications hold back.
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
        info.held_back = self.held_back(&rec).await?;
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
            if let Err(e) = self.trash.discard(&dir) {
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

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

/// What an import takes beside its name and source.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// The image to take from a layout or archive that holds several (a tag, a full name or
    /// the image's digest); refused for a root filesystem.
    pub tag: Option<String>,
    /// Default command of the new template.
    pub command: Option<Vec<String>>,
    /// History message.
    pub message: Option<String>,
}

/// Called at most once, when an import is under way: everything that can be checked before
/// the bulk of the work has been (the request, the name, the source; for an image directory
/// its index, the image chosen, its manifest and config, and every layer blob's presence and
/// size). A client that follows the import's progress is answered then; what fails later
/// reaches it as the stream's last event.
pub type OnAccepted = Box<dyn FnOnce() + Send>;

/// Calls the acceptance callback, if it has not been called yet.
fn accept(accepted: &mut Option<OnAccepted>) {
    if let Some(f) = accepted.take() {
        f();
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
/// the image's configuration for an image. `tag` chooses the image of a layout or archive
/// that holds several, and is refused for a root filesystem. `accepted` is called once the
/// import is under way (see [`OnAccepted`]).
///
/// An archive is unpacked under `limits`; an image's layers under the same limits again, all
/// of them together (the archive that carried them holds their compressed blobs, which the
/// free-space reserve accounts for as they sit on the same filesystem).
fn write_trees(
    staging: &Path,
    source: Source,
    tag: Option<&str>,
    progress: &dyn Progress,
    limits: ImportLimits,
    accepted: &mut Option<OnAccepted>,
) -> Result<(Vec<PathBuf>, Option<OciConfig>), EngineError> {
    let tree = staging.join("tree");
    let image = match source {
        Source::Dir(src) if is_image_dir(&src) => Some(src),
        Source::Dir(src) => {
            refuse_tag(tag, "a root directory")?;
            accept(accepted);
            let options = CopyOptions {
                xattrs: XattrPolicy::Portable,
                one_file_system: true,
            };
            mayfly_image::copy_tree(&src, &tree, options, progress)?;
            None
        }
        Source::Archive(reader) => {
            accept(accepted);
            std::fs::create_dir(&tree).map_err(io_err("create", &tree))?;
            mayfly_image::unpack_archive(reader, &tree, progress, &ImportBudget::new(limits))?;
            crate::failpoint("import:unpacked");
            if is_image_dir(&tree) {
                Some(tree.clone())
            } else {
                refuse_tag(tag, "an archive of a root filesystem")?;
                None
            }
        }
        Source::Busybox(binary) => {
            accept(accepted);
            std::fs::create_dir(&tree).map_err(io_err("create", &tree))?;
            mayfly_image::build_busybox_rootfs(&binary, &tree)?;
            None
        }
    };
    let Some(dir) = image else {
        return Ok((vec![tree], None));
    };
    let image = mayfly_image::open_image_dir(&dir, tag)?;
    if image.layers.is_empty() {
        return Err(EngineError::invalid(
            match &image.name {
                Some(name) => format!("image `{name}` has no layers"),
                None => "the image has no layers".to_owned(),
            },
            "give an image with at least one layer",
        ));
    }
    accept(accepted);
    let layers_budget = ImportBudget::new(limits);
    let count = image.layers.len();
    let mut trees = Vec::with_capacity(count);
    for (i, layer) in image.layers.iter().enumerate() {
        // Say which layer: "the archive" alone would read as the upload.
        let in_layer = |e: ImageError| e.in_layer(i, count, &layer.digest);
        let blob = mayfly_image::image_layer_path(&dir, layer).map_err(in_layer)?;
        let file = std::fs::File::open(&blob).map_err(io_err("open", &blob))?;
        let dest = staging.join(format!("layer-{i}"));
        std::fs::create_dir(&dest).map_err(io_err("create", &dest))?;
        // Directories the layer writes into without describing them keep what the layers
        // below made of them.
        mayfly_image::unpack_layer_archive_over(
            std::io::BufReader::with_capacity(1 << 20, file),
            &dest,
            &trees,
            progress,
            &layers_budget,
        )
        .map_err(in_layer)?;
        trees.push(dest);
    }
    Ok((trees, Some(image.config)))
}

/// Refuses a tag for a source that is not an image (`what` it is instead).
fn refuse_tag(tag: Option<&str>, what: &str) -> Result<(), EngineError> {
    match tag {
        Some(tag) => Err(EngineError::invalid(
            format!(
                "image `{tag}` was asked for, but the source is {what}, not an image: a tag \
                 chooses one image of an OCI layout, a `docker save` or an OCI archive"
            ),
            "import it without the tag (and without `:TAG` after the path)",
        )),
        None => Ok(()),
    }
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

/// What an import does with its trees, beside its name and source.
struct ImportJob {
    tag: Option<String>,
    command: Option<Vec<String>>,
    message: String,
    builtin: bool,
    accepted: Option<OnAccepted>,
}

fn fsync_dir(path: &Path) -> Result<(), EngineError> {
    let f = std::fs::File::open(path).map_err(io_err("open", path))?;
    f.sync_all().map_err(io_err("flush", path))
}

impl Engine {
    /// Imports template `name` from a directory or archive on the daemon's host. `path` may
    /// end in `:TAG` to name an image of a layout or archive that holds several, when the
    /// whole does not exist (see [`mayfly_api::split_image_tag`]).
    pub(crate) async fn import_template_path_unrecorded(
        self: &Arc<Self>,
        name: &str,
        path: &str,
        mut options: ImportOptions,
        progress: Arc<dyn Progress + Send>,
        accepted: Option<OnAccepted>,
    ) -> Result<TemplateInfo, EngineError> {
        let (path, tag) =
            mayfly_api::split_image_tag(path, |p| std::fs::symlink_metadata(p).is_ok());
        if let Some(tag) = tag {
            match &options.tag {
                Some(given) if given != tag => {
                    return Err(EngineError::invalid(
                        format!("two images asked for: `{tag}` after the path, and `{given}`"),
                        "name the image once: `PATH:TAG`, or the tag alone",
                    ));
                }
                _ => options.tag = Some(tag.to_owned()),
            }
        }
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
                "give a root directory or a .tar, .tar.gz or .tar.zst of one, or an image",
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
                "give a root directory or a .tar, .tar.gz or .tar.zst of one, or an image",
            ));
        };
        if options.message.is_none() {
            options.message = Some(match &options.tag {
                Some(tag) => format!("imported from {path} (image {tag})"),
                None => format!("imported from {path}"),
            });
        }
        self.import(name, source, options, false, progress, accepted)
            .await
    }

    /// Imports template `name` from an archive read from `reader` (an upload).
    pub(crate) async fn import_template_archive_unrecorded(
        self: &Arc<Self>,
        name: &str,
        reader: ChannelReader,
        mut options: ImportOptions,
        progress: Arc<dyn Progress + Send>,
        accepted: Option<OnAccepted>,
    ) -> Result<TemplateInfo, EngineError> {
        if options.message.is_none() {
            options.message = Some(match &options.tag {
                Some(tag) => format!("imported from an uploaded archive (image {tag})"),
                None => "imported from an uploaded archive".to_owned(),
            });
        }
        self.import(
            name,
            Source::Archive(Box::new(reader)),
            options,
            false,
            progress,
            accepted,
        )
        .await
    }

    async fn import(
        self: &Arc<Self>,
        name: &str,
        source: Source,
        options: ImportOptions,
        builtin: bool,
        progress: Arc<dyn Progress + Send>,
        accepted: Option<OnAccepted>,
    ) -> Result<TemplateInfo, EngineError> {
        check_template_name(name).map_err(|e| {
            EngineError::invalid(e, "e.g. `mayfly template import debian ./rootfs.tar.zst`")
        })?;
        let ImportOptions {
            tag,
            command,
            message,
        } = options;
        if let Some(cmd) = &command
            && (cmd.is_empty() || cmd.iter().any(|a| a.contains('\0')))
        {
            return Err(EngineError::invalid(
                "invalid default command",
                "e.g. `--cmd /sbin/init`",
            ));
        }
        if let Some(tag) = &tag
            && (tag.is_empty() || tag.len() > 512 || tag.chars().any(char::is_control))
        {
            return Err(EngineError::invalid(
                "invalid image tag: it must be 1 to 512 printable characters",
                "e.g. `--tag 1.36`, `--tag busybox:1.36` or `PATH:TAG`",
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
        let job = ImportJob {
            tag,
            command,
            message: message.unwrap_or_default(),
            builtin,
            accepted,
        };
        let result = self
            .import_into(name, &staging, source, job, progress, journal)
            .await;
        let _ = self.trash.discard(&staging);
        self.trash.wake();
        if result.is_err() {
            self.journal_end(journal).await;
        }
        result?;
        self.template_info(name).await
    }

    async fn import_into(
        self: &Arc<Self>,
        name: &str,
        staging: &Path,
        source: Source,
        job: ImportJob,
        progress: Arc<dyn Progress + Send>,
        journal: i64,
    ) -> Result<(), EngineError> {
        let s = staging.to_owned();
        let limits = self.config.import_limits;
        let ImportJob {
            tag,
            command,
            message,
            builtin,
            mut accepted,
        } = job;
        let (trees, records, image) = self
            .blocking(move || {
                std::fs::create_dir(&s).map_err(io_err("create", &s))?;
                let (trees, image) = write_trees(
                    &s,
                    source,
                    tag.as_deref(),
                    progress.as_ref(),
                    limits,
                    &mut accepted,
                )?;
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
    pub(crate) async fn remove_template_unrecorded(&self, name: &str) -> Result<(), EngineError> {
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
            let options = ImportOptions {
                tag: None,
                command: Some(vec!["/sbin/init".to_owned()]),
                message: Some(format!("built-in, from {}", busybox.display())),
            };
            self.import(
                BUILTIN_TEMPLATE,
                Source::Busybox(busybox.clone()),
                options,
                true,
                Arc::new(mayfly_image::NoProgress),
                None,
            )
            .await?;
        }
        self.db(|s| s.set_meta(BUILTIN_KEY, "1")).await?;
        Ok(())
    }
}

//! The template life cycle: building OS and application templates, patching (version N+1 =
//! version N + one layer), rolling the name back, removing versions, collecting unused
//! layers, squashing stacks that grow too deep, and finding what persistent instances shadow.
//!
//! Versions are immutable; the name is a pointer to one of them (`current_version`). Every
//! move of the pointer (a patch, a build or publish of a new version, a rollback) also records
//! where it pointed before (`previous_version`, in the same statement), which is where a
//! failed rollout points it back. Followers (instances without `@N`) take the current version
//! at their next start or reset, unless their applications hold them back (`apps.rs`); pinned
//! ones keep theirs. Nothing here copies a template: a patch adds one layer, a rollback moves
//! the pointer.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mayfly_api::names::{TemplateRef, check_template_name};
use mayfly_api::{
    BuildTemplate, GcReport, Mode, PatchTemplate, Shadowed, TemplateConfig, TemplateInfo,
};
use mayfly_image::{CopyOptions, XattrPolicy};
use mayfly_store::{
    LayerRecord, NewVersion, StoreError, TemplateRecord, VersionMeta, VersionRecord,
};

use crate::build::{BuildLog, apt_script, check_packages, dpkg_status_of, installed_packages};
use crate::recovery::kind;
use crate::{Engine, EngineError};

/// Deepest stack a non-application template version may have; a patch beyond it squashes the
/// stack into one layer with identical content (each layer costs a mount at every start, and
/// overlayfs stacks at most 500).
pub const MAX_LAYERS: usize = 32;

/// Default package archive for OS templates.
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// The init of a template without `/sbin/init`: idle, and stop at once on SIGTERM.
fn idle_init() -> Vec<String> {
    vec![
        "/bin/sh".into(),
        "-c".into(),
        "trap 'exit 0' TERM INT; while :; do sleep 2147483647 & wait $!; done".into(),
    ]
}

fn default_command(layers: &[PathBuf]) -> Vec<String> {
    let has_init = layers
        .iter()
        .any(|l| std::fs::symlink_metadata(l.join("sbin/init")).is_ok());
    if has_init {
        vec!["/sbin/init".into()]
    } else {
        idle_init()
    }
}

fn packages_of(layers: &[PathBuf]) -> Vec<String> {
    dpkg_status_of(layers)
        .map(|s| installed_packages(&s))
        .unwrap_or_default()
}

/// Paths (not directories) that a layer tree defines, whiteouts included, relative to its
/// root. Never follows symlinks.
pub(crate) fn defined_paths(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![(root.to_owned(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push((e.path(), path)),
                Ok(_) => {
                    out.insert(path);
                }
                Err(_) => {}
            }
        }
    }
    out
}

impl Engine {
    fn layer_dirs(&self, v: &VersionRecord) -> Vec<PathBuf> {
        v.layers
            .iter()
            .map(|l| self.layout.layer_dir(&l.digest))
            .collect()
    }

    /// Places `tree` as the layer `layer` and commits a template version on top of `base`
    /// (a new template when `base_template` is `None`), squashing if the stack gets too deep.
    #[allow(clippy::too_many_arguments)]
    async fn commit_version(
        self: &Arc<Self>,
        name: &str,
        create: bool,
        mut layers: Vec<LayerRecord>,
        tree: &Path,
        layer: LayerRecord,
        config: TemplateConfig,
        message: String,
        mut meta: VersionMeta,
        journal: i64,
    ) -> Result<(), EngineError> {
        let guard = self.layers_lock.lock().await;
        self.place_layer(tree, &layer.digest).await?;
        layers.push(layer.clone());
        if layers.len() > MAX_LAYERS && !meta.app {
            match self.squash(&layers).await {
                Ok(squashed) => {
                    layers = vec![squashed];
                    meta.base = None;
                }
                Err(e) => {
                    self.drop_layer_if_unreferenced(&layer.digest).await;
                    return Err(e);
                }
            }
        }
        let n = name.to_owned();
        let committed = self
            .db(move |st| {
                let new = NewVersion {
                    layers: &layers,
                    config: &config,
                    message: &message,
                    meta: &meta,
                };
                if create {
                    st.create_template(&n, false, &new, Some(journal))
                } else {
                    st.add_template_version(&n, &new, Some(journal)).map(|_| ())
                }
            })
            .await;
        if let Err(e) = committed {
            self.drop_layer_if_unreferenced(&layer.digest).await;
            return Err(e);
        }
        drop(guard);
        Ok(())
    }

    /// Flattens `layers` into one layer with identical content, placed in the layer store.
    /// The caller holds the layers lock.
    pub(crate) async fn squash(&self, layers: &[LayerRecord]) -> Result<LayerRecord, EngineError> {
        let dirs: Vec<PathBuf> = layers
            .iter()
            .map(|l| self.layout.layer_dir(&l.digest))
            .collect();
        let tmp = self
            .layout
            .tmp()
            .join(format!("squash-{}", crate::random_hex(8)));
        let t = tmp.clone();
        let built = self
            .blocking(move || {
                mayfly_image::flatten_layers(&dirs, &t, &mayfly_image::NoProgress)?;
                crate::layer::seal(&t)
            })
            .await;
        let layer = match built {
            Ok(l) => l,
            Err(e) => {
                let _ = self.trash.discard(&tmp);
                return Err(e);
            }
        };
        tracing::info!("squashed {} layers into {}", layers.len(), layer.digest);
        self.place_layer(&tmp, &layer.digest).await?;
        Ok(layer)
    }

    // ---- build ---------------------------------------------------------------------------

    /// Builds an OS template (`debian`) or an application template (`from`). Building an
    /// existing application template again (`from`) adds a version to it: that is how an
    /// application moves to a newer base, releasing the followers it held back.
    pub(crate) async fn build_template_unrecorded(
        self: &Arc<Self>,
        req: BuildTemplate,
        log: BuildLog,
    ) -> Result<TemplateInfo, EngineError> {
        check_template_name(&req.name).map_err(|e| {
            EngineError::invalid(e, "e.g. `mayfly template build debian --debian bookworm`")
        })?;
        check_packages(&req.packages)?;
        if let Some(sig) = &req.stop_signal {
            crate::process::check_stop_signal(sig, "--stop-signal")?;
        }
        let existing = match self.resolve(&req.name).await {
            Ok((_, v)) => Some(v),
            Err(EngineError::Store(StoreError::NotFound { .. })) => None,
            Err(e) => return Err(e),
        };
        if let Some(v) = &existing
            && !(v.meta.app && req.debian.is_none() && req.from.is_some())
        {
            return Err(EngineError::Store(StoreError::AlreadyExists {
                kind: "template",
                name: req.name.clone(),
            }));
        }
        if req.no_init && req.debian.is_none() {
            return Err(EngineError::invalid(
                "--no-init is for OS templates (--debian SUITE)",
                "e.g. `mayfly template build small --debian bookworm --no-init`",
            ));
        }
        match (&req.debian, &req.from) {
            (Some(suite), None) => self.build_os(&req, suite, log).await?,
            (None, Some(base)) => self.build_app(&req, base, existing, log).await?,
            _ => {
                return Err(EngineError::invalid(
                    "give either --debian SUITE (an OS template) or --from BASE (an application template)",
                    "e.g. `mayfly template build debian --debian bookworm`, then `mayfly template build web --from debian --packages nginx`",
                ));
            }
        }
        self.template_info(&req.name).await
    }

    async fn build_os(
        self: &Arc<Self>,
        req: &BuildTemplate,
        suite: &str,
        log: BuildLog,
    ) -> Result<(), EngineError> {
        if req.run.is_some() {
            return Err(EngineError::invalid(
                "--run is for application templates and patches",
                format!(
                    "build the OS template first, then `mayfly template build APP --from {} --run …`",
                    req.name
                ),
            ));
        }
        let variant = req.variant.clone().unwrap_or_else(|| "minbase".into());
        let mirror = req.mirror.clone().unwrap_or_else(|| DEFAULT_MIRROR.into());
        let mut packages = req.packages.clone();
        if !req.no_init {
            crate::boot::add_init_packages(&mut packages);
        }
        let staging = self
            .layout
            .tmp()
            .join(format!("debootstrap-{}", crate::random_hex(6)));
        let journal = self.journal(kind::IMPORT, &req.name, &staging).await?;
        let result: Result<(), EngineError> = async {
            let rootfs = self
                .debootstrap(&staging, suite, &variant, &packages, &mirror, log.clone())
                .await?;
            if !req.no_init {
                let r = rootfs.clone();
                let masked = self.blocking(move || crate::boot::mask_units(&r)).await?;
                if !masked.is_empty() {
                    log(&format!("masked for containers: {}", masked.join(", ")));
                }
            }
            log("computing the layer digest");
            let r = rootfs.clone();
            let layer = self.blocking(move || crate::layer::seal(&r)).await?;
            let dirs = vec![rootfs.clone()];
            let mut config = TemplateConfig {
                command: req
                    .command
                    .clone()
                    .unwrap_or_else(|| default_command(&dirs)),
                ..TemplateConfig::default()
            };
            let meta = VersionMeta {
                packages: packages_of(&dirs),
                ..VersionMeta::default()
            };
            set_stop_signal(&mut config, req.stop_signal.as_deref(), &meta.packages);
            let message = req
                .message
                .clone()
                .unwrap_or_else(|| format!("debootstrap {suite} ({variant}) from {mirror}"));
            self.commit_version(
                &req.name,
                true,
                Vec::new(),
                &rootfs,
                layer,
                config,
                message,
                meta,
                journal,
            )
            .await
        }
        .await;
        let _ = self.trash.discard(&staging);
        self.trash.wake();
        if result.is_err() {
            self.journal_end(journal).await;
        }
        result
    }

    async fn resolve(
        &self,
        reference: &str,
    ) -> Result<(TemplateRecord, VersionRecord), EngineError> {
        let r = TemplateRef::parse(reference)
            .map_err(|e| EngineError::invalid(e, "use NAME or NAME@N"))?;
        let n = r.name.clone();
        let t = self.db(move |s| s.template(&n)).await?;
        let v = r.version.unwrap_or(t.current_version);
        let version = t.version(v).cloned().ok_or_else(|| {
            EngineError::invalid(
                format!("template `{}` has no version {v}", r.name),
                format!("see its versions with `mayfly template history {}`", r.name),
            )
        })?;
        Ok((t, version))
    }

    fn script_of(packages: &[String], run: Option<&String>) -> Option<String> {
        let mut script = String::new();
        if !packages.is_empty() {
            script.push_str(&apt_script(packages));
        }
        if let Some(run) = run {
            script.push_str("set -e\n");
            script.push_str(run);
            script.push('\n');
        }
        (!script.is_empty()).then_some(script)
    }

    /// Builds application template `req.name` over `base`: a new template, or the next
    /// version of the application template whose current version is `existing`.
    async fn build_app(
        self: &Arc<Self>,
        req: &BuildTemplate,
        base: &str,
        existing: Option<VersionRecord>,
        log: BuildLog,
    ) -> Result<(), EngineError> {
        let (bt, bv) = self.resolve(base).await?;
        if bv.meta.app {
            return Err(EngineError::invalid(
                format!("`{base}` is itself an application template"),
                "build applications over an OS template; stack them at launch with `--app`",
            ));
        }
        let script = Self::script_of(&req.packages, req.run.as_ref()).ok_or_else(|| {
            EngineError::invalid(
                "nothing to build: give --packages or --run",
                format!(
                    "e.g. `mayfly template build {} --from {base} --packages nginx`",
                    req.name
                ),
            )
        })?;
        let base_dirs = self.layer_dirs(&bv);
        let built = self
            .build_layer(base_dirs.clone(), bv.config.env.clone(), script, log)
            .await?;
        let mut all = base_dirs;
        all.push(built.tree.clone());
        let meta = VersionMeta {
            packages: packages_of(&all),
            base: Some(format!("{}@{}", bt.name, bv.version)),
            app: true,
        };
        // A rebuild keeps the application's own command (entrypoint and cmd), user and stop
        // signal unless told otherwise; a new application starts from its base's.
        let own = existing.as_ref().map_or(&bv.config, |v| &v.config);
        let mut config = TemplateConfig {
            user: own.user.clone(),
            stop_signal: own.stop_signal.clone(),
            ..bv.config.clone()
        };
        let (entrypoint, cmd) = own.entrypoint_and_cmd();
        config.set_command(entrypoint.to_vec(), cmd.to_vec());
        if let Some(command) = &req.command {
            config.set_command(Vec::new(), command.clone());
        }
        set_stop_signal(&mut config, req.stop_signal.as_deref(), &meta.packages);
        let message = req.message.clone().unwrap_or_else(|| {
            let what = if req.packages.is_empty() {
                "a script".to_owned()
            } else {
                req.packages.join(", ")
            };
            format!("{what} over {}@{}", bt.name, bv.version)
        });
        let result = self
            .commit_version(
                &req.name,
                existing.is_none(),
                bv.layers.clone(),
                &built.tree,
                built.layer.clone(),
                config,
                message,
                meta,
                built.journal,
            )
            .await;
        let _ = self.trash.discard(&built.staging);
        self.trash.wake();
        if result.is_err() {
            let j = built.journal;
            self.journal_end(j).await;
        }
        result
    }

    // ---- patch ---------------------------------------------------------------------------

    /// Makes version N+1 of `name` = version N + one layer (packages, a script, or a
    /// directory laid over it).
    pub(crate) async fn patch_template_unrecorded(
        self: &Arc<Self>,
        name: &str,
        req: PatchTemplate,
        log: BuildLog,
    ) -> Result<TemplateInfo, EngineError> {
        check_packages(&req.packages)?;
        if let Some(sig) = &req.stop_signal {
            crate::process::check_stop_signal(sig, "--stop-signal")?;
        }
        let (t, cur) = self.resolve(name).await?;
        let given = [
            !req.packages.is_empty(),
            req.run.is_some(),
            req.from_dir.is_some(),
        ]
        .iter()
        .filter(|g| **g)
        .count();
        if given != 1 {
            return Err(EngineError::invalid(
                "give exactly one of --packages, --run or --from",
                format!(
                    "e.g. `mayfly template patch {name} --packages upgrade` (--stop-signal goes with one of them)"
                ),
            ));
        }
        let dirs = self.layer_dirs(&cur);
        let (staging, tree, layer, journal) = if let Some(dir) = &req.from_dir {
            let src = PathBuf::from(dir);
            if !src.is_absolute() || !src.is_dir() {
                return Err(EngineError::invalid(
                    format!(
                        "invalid patch source `{dir}`: it must be an absolute path to a directory on the daemon's host"
                    ),
                    "e.g. `mayfly template patch web --from /srv/patch`",
                ));
            }
            let staging = self
                .layout
                .tmp()
                .join(format!("patch-{}", crate::random_hex(8)));
            let journal = self.journal(kind::IMPORT, name, &staging).await?;
            let s = staging.clone();
            let built = self
                .blocking(move || {
                    let options = CopyOptions {
                        xattrs: XattrPolicy::Portable,
                        one_file_system: true,
                    };
                    mayfly_image::copy_tree(&src, &s, options, &mayfly_image::NoProgress)?;
                    crate::layer::seal(&s)
                })
                .await;
            match built {
                Ok(layer) => (staging.clone(), staging, layer, journal),
                Err(e) => {
                    let _ = self.trash.discard(&staging);
                    self.journal_end(journal).await;
                    return Err(e);
                }
            }
        } else {
            let script = Self::script_of(&req.packages, req.run.as_ref()).unwrap_or_default();
            let built = self
                .build_layer(dirs.clone(), cur.config.env.clone(), script, log)
                .await?;
            (built.staging, built.tree, built.layer, built.journal)
        };
        let mut all = dirs;
        all.push(tree.clone());
        let meta = VersionMeta {
            packages: packages_of(&all),
            ..cur.meta.clone()
        };
        let message = req.message.clone().unwrap_or_else(|| {
            if let Some(d) = &req.from_dir {
                format!("patch from {d}")
            } else if !req.packages.is_empty() {
                format!("patch: {}", req.packages.join(", "))
            } else {
                "patch: script".to_owned()
            }
        });
        let result = self
            .commit_version(
                &t.name,
                false,
                cur.layers.clone(),
                &tree,
                layer,
                {
                    let mut config = cur.config.clone();
                    set_stop_signal(&mut config, req.stop_signal.as_deref(), &meta.packages);
                    config
                },
                message,
                meta,
                journal,
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

    // ---- rollback, versions, gc ----------------------------------------------------------

    /// Points template `name` back at version `to` (default: the one before the current).
    /// Instant: followers pick it up at their next start or reset.
    pub(crate) async fn rollback_template_unrecorded(
        &self,
        name: &str,
        to: Option<u32>,
    ) -> Result<TemplateInfo, EngineError> {
        let n = name.to_owned();
        let t = self.db(move |s| s.template(&n)).await?;
        let target = match to {
            Some(v) => v,
            None => t
                .versions
                .iter()
                .map(|v| v.version)
                .filter(|v| *v < t.current_version)
                .max()
                .ok_or_else(|| {
                    EngineError::invalid(
                        format!(
                            "template `{name}` has no version older than {}",
                            t.current_version
                        ),
                        format!("see its versions with `mayfly template history {name}`"),
                    )
                })?,
        };
        let n = name.to_owned();
        self.db(move |s| s.set_current_version(&n, target)).await?;
        self.template_info(name).await
    }

    /// Removes one version of a template (not the current one, not one in use).
    pub(crate) async fn remove_template_version_unrecorded(
        &self,
        name: &str,
        version: u32,
    ) -> Result<(), EngineError> {
        let _guard = self.layers_lock.lock().await;
        let n = name.to_owned();
        let gone = self
            .db(move |s| {
                s.delete_version(&n, version)?;
                s.drop_unreferenced_layers()
            })
            .await?;
        for digest in gone {
            let _ = self.trash.discard(&self.layout.layer_dir(&digest));
        }
        self.trash.wake();
        Ok(())
    }

    /// Removes every layer that no template version references (instances and snapshots hold
    /// versions, so a layer in use is always referenced).
    pub(crate) async fn collect_garbage_unrecorded(&self) -> Result<GcReport, EngineError> {
        let _guard = self.layers_lock.lock().await;
        let before: HashSet<String> = self.db(|s| s.layer_digests()).await?;
        let gone = self.db(|s| s.drop_unreferenced_layers()).await?;
        let mut report = GcReport::default();
        for digest in gone {
            let dir = self.layout.layer_dir(&digest);
            if let Ok(stats) = mayfly_image::tree_stats(&dir) {
                report.bytes += stats.bytes;
            }
            let _ = self.trash.discard(&dir);
            report.removed.push(digest);
        }
        // Trees without a catalogue row (left by a crash between rename and commit).
        if let Ok(entries) = std::fs::read_dir(self.layout.layers()) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let known =
                    mayfly_store::Layout::digest_of_dir(&name).is_some_and(|d| before.contains(&d));
                if !known {
                    let _ = self.trash.discard(&e.path());
                    report.removed.push(name);
                }
            }
        }
        self.trash.wake();
        Ok(report)
    }

    // ---- shadowing -----------------------------------------------------------------------

    /// For every persistent instance that follows `t` and whose writable layer was made on an
    /// older version: the paths that both its own changes and the newer layers touch.
    pub(crate) async fn shadowed(&self, t: &TemplateRecord) -> Result<Vec<Shadowed>, EngineError> {
        let Some(current) = t.version(t.current_version).cloned() else {
            return Ok(Vec::new());
        };
        let name = t.name.clone();
        let followers: Vec<mayfly_store::InstanceRecord> = self
            .db(move |s| {
                Ok(s.instances()?
                    .into_iter()
                    .filter(|i| i.template == name)
                    .collect())
            })
            .await?;
        let mut out = Vec::new();
        for inst in followers {
            if inst.mode != Mode::Persistent || inst.pinned_version.is_some() {
                continue;
            }
            // Measured from where the layer's changes began (a restart onto a newer version
            // does not make them stop hiding it), or, when that version is gone, from the
            // version it last ran on.
            let Some(since) = inst
                .layer_since
                .filter(|v| t.version(*v).is_some())
                .or(inst.writable_version)
                .filter(|v| *v != t.current_version)
            else {
                continue;
            };
            let old: HashSet<&str> = t
                .version(since)
                .map(|v| v.layers.iter().map(|l| l.digest.as_str()).collect())
                .unwrap_or_default();
            let newer: Vec<PathBuf> = current
                .layers
                .iter()
                .filter(|l| !old.contains(l.digest.as_str()))
                .map(|l| self.layout.layer_dir(&l.digest))
                .collect();
            let upper = self.layout.writable_dir(&inst.id, inst.writable_gen);
            let paths = self
                .blocking(move || {
                    let mine = defined_paths(&upper);
                    let mut theirs = BTreeSet::new();
                    for layer in &newer {
                        theirs.extend(defined_paths(layer));
                    }
                    Ok(mine.intersection(&theirs).cloned().collect::<Vec<_>>())
                })
                .await?;
            if !paths.is_empty() {
                out.push(Shadowed {
                    instance: inst.name.clone(),
                    since_version: since,
                    paths,
                });
            }
        }
        Ok(out)
    }
}

/// Sets the stop signal of `config` to `given` (checked before), named as mayfly names it;
/// without one, a default stop signal (SIGTERM) becomes the halt request of the init that
/// the default command and the installed `packages` say it is ([`crate::power::init_stop_signal`]).
fn set_stop_signal(config: &mut TemplateConfig, given: Option<&str>, packages: &[String]) {
    if let Some(n) = given.and_then(crate::process::parse_signal) {
        config.stop_signal = crate::process::signal_name(n);
    } else if crate::process::parse_signal(&config.stop_signal) == Some(libc::SIGTERM)
        && let Some(sig) = crate::power::init_stop_signal(config, packages)
    {
        config.stop_signal = sig.to_owned();
    }
}

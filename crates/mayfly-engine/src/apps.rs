//! Stacking application templates over one base at launch (`--app nginx --app redis`).
//!
//! An application template is its base version's layers plus its own; at start the instance's
//! stack becomes base + each application's own layers, in the order given, + a small merge
//! layer. Two things would go wrong with plain stacking, and are handled here:
//! - **The package database**: each application's `var/lib/dpkg/status` (and apt's
//!   `extended_states`) lists the base's packages plus its own; the topmost would hide the
//!   others'. The merge layer holds the union (a conflict — two applications changing one
//!   package differently — is an error naming it).
//! - **Real conflicts**: two applications that ship the same file with different content
//!   would silently shadow each other; they are refused with the paths named, unless the user
//!   orders them explicitly (`ordered_apps`: the later wins). Volatile paths (logs, caches,
//!   the package database, the linker cache) do not count.
//!
//! The merge layer lives in the instance's directory (`merge-<key>/`), keyed by the digests of
//! the stack, and is rebuilt when a version changes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mayfly_api::names::TemplateRef;
use mayfly_store::{LayerRecord, VersionRecord};

use crate::{Engine, EngineError, lock};

/// Paths that differ between application layers without being a conflict.
pub(crate) const VOLATILE: &[&str] = &[
    "var/lib/dpkg/",
    "var/lib/apt/",
    "var/log/",
    "var/cache/",
    "etc/ld.so.cache",
    "tmp/",
    "run/",
];

/// Package-database files merged across applications.
const MERGED_FILES: &[&str] = &["var/lib/dpkg/status", "var/lib/apt/extended_states"];

/// An application resolved against an instance's base.
struct App {
    name: String,
    /// The application template and the version resolved.
    template: String,
    version: u32,
    /// Its own layers (above the base).
    layers: Vec<LayerRecord>,
}

impl Engine {
    /// Checks, at creation, that `apps` can be stacked over `base` (see [`Self::resolve_apps`]).
    pub(crate) async fn check_apps(
        &self,
        template: &str,
        base: &VersionRecord,
        apps: &[String],
        ordered: bool,
    ) -> Result<(), EngineError> {
        self.resolve_apps(template, base, apps, ordered)
            .await
            .map(drop)
    }

    /// Resolves `apps` over base version `base` of template `template`: checks that each is
    /// an application template built on exactly this base, and that no two conflict (unless
    /// `ordered`). Returns each application's own layers, in order.
    async fn resolve_apps(
        &self,
        template: &str,
        base: &VersionRecord,
        apps: &[String],
        ordered: bool,
    ) -> Result<Vec<App>, EngineError> {
        let mut out = Vec::new();
        for reference in apps {
            let r = TemplateRef::parse(reference)
                .map_err(|e| EngineError::invalid(e, "e.g. `--app nginx`"))?;
            let n = r.name.clone();
            let t = self.db(move |s| s.template(&n)).await?;
            let v = r.version.unwrap_or(t.current_version);
            let av = t.version(v).ok_or_else(|| {
                EngineError::invalid(
                    format!("application `{}` has no version {v}", r.name),
                    format!("see `mayfly template history {}`", r.name),
                )
            })?;
            if !av.meta.app {
                return Err(EngineError::invalid(
                    format!("`{reference}` is not an application template"),
                    format!(
                        "build one with `mayfly template build NAME --from {template} --packages …`"
                    ),
                ));
            }
            let prefix_matches = av.layers.len() > base.layers.len()
                && av.layers[..base.layers.len()]
                    .iter()
                    .zip(&base.layers)
                    .all(|(a, b)| a.digest == b.digest);
            if !prefix_matches {
                return Err(EngineError::invalid(
                    format!(
                        "application `{reference}` was built on {}, not on {template}@{}",
                        av.meta
                            .base
                            .clone()
                            .unwrap_or_else(|| "another base".into()),
                        base.version
                    ),
                    format!(
                        "rebuild it over this version (`mayfly template build {} --from {template} …`) or pin the instance to its base",
                        r.name
                    ),
                ));
            }
            out.push(App {
                name: reference.clone(),
                template: r.name.clone(),
                version: v,
                layers: av.layers[base.layers.len()..].to_vec(),
            });
        }
        if !ordered {
            self.check_conflicts(&out).await?;
        }
        Ok(out)
    }

    async fn check_conflicts(&self, apps: &[App]) -> Result<(), EngineError> {
        let mut found: Vec<String> = Vec::new();
        for (i, a) in apps.iter().enumerate() {
            for b in &apps[i + 1..] {
                for la in &a.layers {
                    for lb in &b.layers {
                        let key = (la.digest.clone(), lb.digest.clone());
                        let cached = lock(&self.conflicts).get(&key).cloned();
                        let paths = match cached {
                            Some(p) => p,
                            None => {
                                let (pa, pb) = (
                                    self.layout.layer_dir(&la.digest),
                                    self.layout.layer_dir(&lb.digest),
                                );
                                let paths = self
                                    .blocking(move || {
                                        mayfly_image::layer_conflicts(&pa, &pb, VOLATILE)
                                            .map_err(EngineError::Image)
                                    })
                                    .await?;
                                lock(&self.conflicts).insert(key, paths.clone());
                                paths
                            }
                        };
                        if !paths.is_empty() {
                            let shown: Vec<&str> =
                                paths.iter().take(10).map(String::as_str).collect();
                            found.push(format!(
                                "`{}` and `{}` both change {}{}",
                                a.name,
                                b.name,
                                shown.join(", "),
                                if paths.len() > 10 {
                                    format!(" and {} more", paths.len() - 10)
                                } else {
                                    String::new()
                                }
                            ));
                        }
                    }
                }
            }
        }
        if found.is_empty() {
            Ok(())
        } else {
            Err(EngineError::invalid(
                format!("application templates conflict: {}", found.join("; ")),
                "if that is intended, order them explicitly with --ordered (the later --app wins)",
            ))
        }
    }

    /// The layer directories of an instance of `base` with `apps` stacked over it: base, each
    /// application's own layers, and (when the applications have package databases) a merge
    /// layer under `instance_dir`; and the application versions they are.
    pub(crate) async fn stack_with_apps(
        self: &Arc<Self>,
        template: &str,
        base: &VersionRecord,
        apps: &[String],
        ordered: bool,
        instance_dir: &Path,
    ) -> Result<(Vec<PathBuf>, Vec<(String, u32)>), EngineError> {
        let base_dirs: Vec<PathBuf> = base
            .layers
            .iter()
            .map(|l| self.layout.layer_dir(&l.digest))
            .collect();
        if apps.is_empty() {
            return Ok((base_dirs, Vec::new()));
        }
        let resolved = self.resolve_apps(template, base, apps, ordered).await?;
        let versions = resolved
            .iter()
            .map(|a| (a.template.clone(), a.version))
            .collect();
        let mut dirs = base_dirs.clone();
        let mut app_stacks: Vec<Vec<PathBuf>> = Vec::new();
        for app in &resolved {
            let own: Vec<PathBuf> = app
                .layers
                .iter()
                .map(|l| self.layout.layer_dir(&l.digest))
                .collect();
            dirs.extend(own.iter().cloned());
            app_stacks.push(own);
        }
        let key_source: Vec<&str> = base
            .layers
            .iter()
            .chain(resolved.iter().flat_map(|a| a.layers.iter()))
            .map(|l| l.digest.as_str())
            .collect();
        let key = short_hash(&key_source.join("|"));
        let merge = instance_dir.join(format!("merge-{key}"));
        let m = merge.clone();
        let has_merge = self
            .blocking(move || write_merge_layer(&m, &base_dirs, &app_stacks))
            .await?;
        if has_merge {
            dirs.push(merge);
        }
        Ok((dirs, versions))
    }
}

/// A short stable hash of `s` (FNV-1a, 64 bits, hex) for naming merge layers.
fn short_hash(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The file `rel` as the stack `layers` shows it (topmost layer that has it).
fn read_in_stack(layers: &[PathBuf], rel: &str) -> Option<Vec<u8>> {
    layers
        .iter()
        .rev()
        .map(|l| l.join(rel))
        .find(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file()))
        .and_then(|p| std::fs::read(p).ok())
}

/// Writes the merge layer at `dir` (if not there already); `false` when nothing needs merging.
fn write_merge_layer(
    dir: &Path,
    base: &[PathBuf],
    apps: &[Vec<PathBuf>],
) -> Result<bool, EngineError> {
    let mut files: HashMap<&str, Vec<u8>> = HashMap::new();
    for rel in MERGED_FILES {
        let Some(base_file) = read_in_stack(base, rel) else {
            continue;
        };
        let app_files: Vec<Vec<u8>> = apps.iter().filter_map(|a| read_in_stack(a, rel)).collect();
        if app_files.is_empty() {
            continue;
        }
        let refs: Vec<&[u8]> = app_files.iter().map(Vec::as_slice).collect();
        let merged = mayfly_image::merge_dpkg_status(&base_file, &refs).map_err(|e| {
            EngineError::invalid(
                format!("application templates conflict in the package database: {e}"),
                "build them over the same base with the same versions of shared packages, or stack fewer",
            )
        })?;
        files.insert(rel, merged);
    }
    // Merge layers of earlier stacks (another version of an application) are stale.
    if let (Some(parent), Some(own)) = (dir.parent(), dir.file_name())
        && let Ok(entries) = std::fs::read_dir(parent)
    {
        for e in entries.flatten() {
            let name = e.file_name();
            if name != own && name.to_string_lossy().starts_with("merge-") {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    if files.is_empty() {
        return Ok(false);
    }
    if dir.is_dir() {
        return Ok(true);
    }
    let tmp = dir.with_extension("new");
    let _ = std::fs::remove_dir_all(&tmp);
    for (rel, content) in &files {
        let path = tmp.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(crate::error::io_err("create", parent))?;
        }
        std::fs::write(&path, content).map_err(crate::error::io_err("write", &path))?;
    }
    std::fs::rename(&tmp, dir).map_err(crate::error::io_err("create", dir))?;
    Ok(true)
}

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
//!
//! **Which versions.** An application version is built on exactly one base version (its layers
//! are that version's plus its own), so an instance that follows its base (no `@N`) cannot
//! simply take the base's current version: its applications may not be built on it yet. It
//! follows the newest base version they are all built on — the current one when they are, else
//! it is *held back* on an older one (reported by `template info` and by rollouts) until they
//! are rebuilt over the current one (`mayfly template build APP --from BASE …` adds a version
//! to an existing application template). Each application that is not pinned (`--app A`, not
//! `A@N`) takes, over the chosen base, its current version if it is built on that base, else
//! its newest version that is. "Newest" prefers versions up to the name's pointer: after a
//! rollback of the base (or of an application) the instance goes back with it whenever its
//! stack exists there; only when nothing at or below the pointer fits does it take a newer one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mayfly_api::HeldBack;
use mayfly_api::names::TemplateRef;
use mayfly_store::{LayerRecord, TemplateRecord, VersionRecord};

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

/// Version numbers of `t` in the order a follower prefers them: the current one, then the
/// older ones newest first, then the newer ones newest first.
fn preference(t: &TemplateRecord) -> Vec<u32> {
    let current = t.current_version;
    let mut older: Vec<u32> = t
        .versions
        .iter()
        .map(|v| v.version)
        .filter(|v| *v < current)
        .collect();
    let mut newer: Vec<u32> = t
        .versions
        .iter()
        .map(|v| v.version)
        .filter(|v| *v > current)
        .collect();
    older.sort_unstable_by(|a, b| b.cmp(a));
    newer.sort_unstable_by(|a, b| b.cmp(a));
    let mut out = Vec::with_capacity(t.versions.len());
    if t.version(current).is_some() {
        out.push(current);
    }
    out.extend(older);
    out.extend(newer);
    out
}

/// Whether application version `app` is built on version `base` of template `base_name`: it
/// says so, and its layers are the base's plus its own. (The layers alone are not enough: an
/// application built on version 2 starts with version 1's layers too, and stacking it over
/// version 1 would run version 2's files under version 1's name.)
fn built_on(app: &VersionRecord, base_name: &str, base: &VersionRecord) -> bool {
    app.meta.app
        && app.meta.base.as_deref() == Some(format!("{base_name}@{}", base.version).as_str())
        && app.layers.len() > base.layers.len()
        && app.layers[..base.layers.len()]
            .iter()
            .zip(&base.layers)
            .all(|(a, b)| a.digest == b.digest)
}

/// An application as an instance names it (`A` or `A@N`), with its template.
struct AppTemplate {
    reference: String,
    pinned: Option<u32>,
    template: TemplateRecord,
}

impl AppTemplate {
    /// The version of this application to stack over `base`: the pinned one, else the
    /// preferred one built on `base`; `None` when none is.
    fn version_on(&self, base_name: &str, base: &VersionRecord) -> Option<u32> {
        let fits = |v: &u32| {
            self.template
                .version(*v)
                .is_some_and(|av| built_on(av, base_name, base))
        };
        match self.pinned {
            Some(v) => Some(v).filter(fits),
            None => preference(&self.template).into_iter().find(fits),
        }
    }
}

/// The base version of `base` a follower with applications `apps` runs (see the module
/// documentation); `None` when no version of `base` carries them all.
fn follow(base: &TemplateRecord, apps: &[AppTemplate]) -> Option<u32> {
    preference(base).into_iter().find(|v| {
        base.version(*v)
            .is_some_and(|bv| apps.iter().all(|a| a.version_on(&base.name, bv).is_some()))
    })
}

impl Engine {
    /// Parses and looks up the application templates `apps` name.
    async fn app_templates(&self, apps: &[String]) -> Result<Vec<AppTemplate>, EngineError> {
        let mut out = Vec::with_capacity(apps.len());
        for reference in apps {
            let r = TemplateRef::parse(reference)
                .map_err(|e| EngineError::invalid(e, "e.g. `--app nginx`"))?;
            let n = r.name.clone();
            let template = self.db(move |s| s.template(&n)).await?;
            out.push(AppTemplate {
                reference: reference.clone(),
                pinned: r.version,
                template,
            });
        }
        Ok(out)
    }

    /// The version of template `t` that a follower (no `@N`) stacked with `apps` starts on:
    /// the current one, unless its applications hold it back (see the module documentation).
    /// When nothing fits, the current one, so that starting it reports why.
    pub(crate) async fn follow_version(
        &self,
        t: &TemplateRecord,
        apps: &[String],
    ) -> Result<u32, EngineError> {
        if apps.is_empty() {
            return Ok(t.current_version);
        }
        // A bad reference is reported by the stacking itself, with its own advice.
        let Ok(apps) = self.app_templates(apps).await else {
            return Ok(t.current_version);
        };
        Ok(follow(t, &apps).unwrap_or(t.current_version))
    }

    /// The followers of `t` (any mode, any state) that its current version does not reach
    /// because their applications are not built on it.
    pub(crate) async fn held_back(&self, t: &TemplateRecord) -> Result<Vec<HeldBack>, EngineError> {
        let name = t.name.clone();
        let followers: Vec<mayfly_store::InstanceRecord> = self
            .db(move |s| {
                Ok(s.instances()?
                    .into_iter()
                    .filter(|i| {
                        i.template == name
                            && i.pinned_version.is_none()
                            && !i.config.apps.is_empty()
                    })
                    .collect())
            })
            .await?;
        let Some(current) = t.version(t.current_version) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for inst in followers {
            let Ok(apps) = self.app_templates(&inst.config.apps).await else {
                continue;
            };
            let Some(version) = follow(t, &apps).filter(|v| *v != t.current_version) else {
                continue;
            };
            let missing: Vec<String> = apps
                .iter()
                .filter(|a| a.version_on(&t.name, current).is_none())
                .map(|a| {
                    format!(
                        "application `{}` has no version built on {}@{} (rebuild it: `mayfly template build {} --from {} …`)",
                        a.reference, t.name, t.current_version, a.template.name, t.name
                    )
                })
                .collect();
            out.push(HeldBack {
                instance: inst.name,
                version,
                reason: missing.join("; "),
            });
        }
        Ok(out)
    }

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

    /// Resolves `apps` over base version `base` of template `template`: picks each one's
    /// version on this base (see [`AppTemplate::version_on`]), checks that it is an
    /// application template built on exactly this base, and that no two conflict (unless
    /// `ordered`). Returns each application's own layers, in order.
    async fn resolve_apps(
        &self,
        template: &str,
        base: &VersionRecord,
        apps: &[String],
        ordered: bool,
    ) -> Result<Vec<App>, EngineError> {
        let mut out = Vec::new();
        for app in self.app_templates(apps).await? {
            let reference = &app.reference;
            let t = &app.template;
            // None fits: say why about the version the user means (the pinned or current one).
            let v = app
                .version_on(template, base)
                .unwrap_or(app.pinned.unwrap_or(t.current_version));
            let av = t.version(v).ok_or_else(|| {
                EngineError::invalid(
                    format!("application `{}` has no version {v}", t.name),
                    format!("see `mayfly template history {}`", t.name),
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
            if !built_on(av, template, base) {
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
                        "rebuild it over this version (`mayfly template build {} --from {template}@{} …` adds a version to it) or pin the instance to its base",
                        t.name, base.version
                    ),
                ));
            }
            out.push(App {
                name: reference.clone(),
                template: t.name.clone(),
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
pub(crate) fn short_hash(s: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use mayfly_api::TemplateConfig;
    use mayfly_store::VersionMeta;

    fn layer(n: u8) -> LayerRecord {
        LayerRecord {
            digest: format!("blake3:{n:064x}"),
            size: 1,
            entries: 1,
        }
    }

    fn version(v: u32, layers: &[u8], base: Option<&str>) -> VersionRecord {
        VersionRecord {
            version: v,
            layers: layers.iter().map(|n| layer(*n)).collect(),
            config: TemplateConfig::default(),
            message: String::new(),
            created_at: 0,
            meta: VersionMeta {
                packages: Vec::new(),
                base: base.map(str::to_owned),
                app: base.is_some(),
            },
        }
    }

    fn template(name: &str, current: u32, versions: Vec<VersionRecord>) -> TemplateRecord {
        TemplateRecord {
            name: name.into(),
            current_version: current,
            previous_version: None,
            builtin: false,
            created_at: 0,
            versions,
        }
    }

    fn app(t: TemplateRecord, pinned: Option<u32>) -> AppTemplate {
        AppTemplate {
            reference: t.name.clone(),
            pinned,
            template: t,
        }
    }

    /// Base `b`: 1 = [1], 2 = [1, 2], 3 = [1, 3] (made on 1 after a rollback).
    fn base(current: u32) -> TemplateRecord {
        template(
            "b",
            current,
            vec![
                version(1, &[1], None),
                version(2, &[1, 2], None),
                version(3, &[1, 3], None),
            ],
        )
    }

    #[test]
    fn a_follower_prefers_the_current_version_then_older_then_newer() {
        assert_eq!(preference(&base(2)), vec![2, 1, 3]);
        assert_eq!(preference(&base(3)), vec![3, 2, 1]);
        assert_eq!(preference(&base(1)), vec![1, 3, 2]);
    }

    #[test]
    fn an_application_is_built_on_the_one_base_version_it_names() {
        let b = base(3);
        let on2 = version(1, &[1, 2, 10], Some("b@2"));
        assert!(built_on(&on2, "b", b.version(2).unwrap()));
        // Its layers start with version 1's, but it holds version 2's layer.
        assert!(!built_on(&on2, "b", b.version(1).unwrap()));
        assert!(!built_on(&on2, "other", b.version(2).unwrap()));
        // A version that says so but whose layers differ (the number was given again).
        let stale = version(1, &[1, 9, 10], Some("b@2"));
        assert!(!built_on(&stale, "b", b.version(2).unwrap()));
    }

    #[test]
    fn applications_hold_a_follower_back_on_the_newest_base_they_are_built_on() {
        // `a` is built on b@1 only: held back on 1 whatever the current version.
        let a = template("a", 1, vec![version(1, &[1, 10], Some("b@1"))]);
        assert_eq!(follow(&base(3), &[app(a.clone(), None)]), Some(1));
        // Rebuilt on b@2 (its version 2): b@2 when current, and still b@2 when b@3 is
        // current (newest older one that fits).
        let mut a2 = a.clone();
        a2.versions.push(version(2, &[1, 2, 11], Some("b@2")));
        a2.current_version = 2;
        assert_eq!(follow(&base(2), &[app(a2.clone(), None)]), Some(2));
        assert_eq!(follow(&base(3), &[app(a2.clone(), None)]), Some(2));
        // The base rolled back to 1: back to 1, with the application's version built on it.
        assert_eq!(follow(&base(1), &[app(a2.clone(), None)]), Some(1));
        let on1 = app(a2.clone(), None);
        assert_eq!(on1.version_on("b", base(1).version(1).unwrap()), Some(1));
        // Pinned to its version 1: only b@1 carries it.
        assert_eq!(follow(&base(3), &[app(a2.clone(), Some(1))]), Some(1));
        // Two applications: the newest base both are built on.
        let c = template("c", 1, vec![version(1, &[1, 12], Some("b@1"))]);
        assert_eq!(follow(&base(2), &[app(a2, None), app(c, None)]), Some(1));
        // Built on a base version that no longer exists: nothing fits.
        let gone = template("g", 1, vec![version(1, &[1, 4, 13], Some("b@4"))]);
        assert_eq!(follow(&base(3), &[app(gone, None)]), None);
    }
}

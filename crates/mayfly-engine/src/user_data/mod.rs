//! User data and metadata: `/run/mayfly/meta.json`, a NoCloud seed for a template's own
//! cloud-init, and mayfly's own runner for scripts and a cloud-config subset.
//!
//! - [`cloud_config`]: parsing (with lines in errors) and the subset.
//! - [`meta`]: the metadata file, written at each start, bound read-only at `/run/mayfly`.
//! - [`nocloud`]: the seed for cloud-init and reading its result.
//! - [`to_sh`]: the subset translated to sh for mayfly's runner.
//! - the runner itself is the forker's (`mayfly_driver::UserDataRun`); here its script and
//!   status file are prepared and the status read back.

pub(crate) mod cloud_config;
mod meta;
mod nocloud;
mod to_sh;

use std::path::{Path, PathBuf};

use mayfly_api::{CreateInstance, UserDataHandler, UserDataKind, UserDataStatus};
use mayfly_store::{InstanceRecord, UserDataSummary, VersionRecord};

use crate::{Engine, EngineError};

/// How long mayfly's runner lets user data run before it kills it (and starts the init),
/// unless `MAYFLY_USER_DATA_TIMEOUT` (seconds) says otherwise.
const DEFAULT_TIMEOUT_SECS: u64 = 600;

/// Where, under an instance's directory, the runner's files are.
const SCRIPT_FILE: &str = "run/user-data.script";
const STATUS_FILE: &str = "run/user-data.status";

/// The kind of user data `bytes` are, from its first line.
fn kind_of(text: &str) -> Result<UserDataKind, String> {
    let first = text.lines().next().unwrap_or("").trim_end();
    if first.starts_with("#!") {
        Ok(UserDataKind::Script)
    } else if first == "#cloud-config" {
        Ok(UserDataKind::CloudConfig)
    } else {
        Err(format!(
            "user data must start with `#!` (a script) or `#cloud-config`; its first line is `{}`",
            first.chars().take(60).collect::<String>()
        ))
    }
}

/// Checks a launch's user data and metadata; returns the user data's summary and bytes.
pub(crate) fn check_request(
    req: &CreateInstance,
) -> Result<Option<(UserDataSummary, Vec<u8>)>, EngineError> {
    mayfly_api::check_meta(&req.meta)
        .map_err(|e| EngineError::invalid(e, "e.g. `--meta role=web`"))?;
    let Some(text) = &req.user_data else {
        return Ok(None);
    };
    if text.len() > mayfly_api::MAX_USER_DATA {
        return Err(EngineError::TooLarge {
            message: format!(
                "the user data is {} bytes; at most {} are accepted",
                text.len(),
                mayfly_api::MAX_USER_DATA
            ),
            hint: Some(
                "keep it small: let the script fetch what it needs, or bake it into the template"
                    .into(),
            ),
        });
    }
    if text.contains('\0') {
        return Err(EngineError::invalid(
            "the user data contains a NUL byte",
            "give a text script or cloud-config",
        ));
    }
    let kind = kind_of(text).map_err(|e| {
        EngineError::invalid(
            e,
            "e.g. a first line `#!/bin/sh`, or `#cloud-config` followed by YAML",
        )
    })?;
    if kind == UserDataKind::CloudConfig {
        cloud_config::parse(text, false).map_err(|e| {
            EngineError::invalid(e, "fix the YAML (see docs/user-data.md for the subset)")
        })?;
    }
    Ok(Some((
        UserDataSummary {
            kind,
            bytes: text.len() as u64,
        },
        text.as_bytes().to_vec(),
    )))
}

/// Whether the template whose layers are `layers` has cloud-init (its program, in any of
/// them).
pub(crate) fn has_cloud_init(layers: &[PathBuf]) -> bool {
    layers.iter().any(|l| {
        ["usr/bin/cloud-init", "usr/local/bin/cloud-init"]
            .iter()
            .any(|p| std::fs::symlink_metadata(l.join(p)).is_ok_and(|m| !m.is_dir()))
    })
}

/// What a start needs for user data and metadata, applied to the instance's spec.
#[derive(Debug, Default)]
pub(crate) struct StartExtras {
    binds: Vec<mayfly_driver::BindMount>,
    run: Option<mayfly_driver::UserDataRun>,
    /// The hostname the user data asks for (`hostname:` of a cloud-config).
    pub hostname: Option<String>,
}

impl StartExtras {
    /// Adds what it holds to the spec of the start.
    pub(crate) fn apply(self, spec: &mut mayfly_driver::InstanceSpec) {
        let mut binds = self.binds.into_iter();
        if let Some(meta) = binds.next() {
            // First: the binds below /run/mayfly (channels) land on it, on mount points
            // made in its (read-only) source.
            for b in &spec.binds {
                if let Some(below) = b.target.strip_prefix(&format!("{}/", meta.target)) {
                    let _ = std::fs::create_dir_all(meta.source.join(below));
                }
            }
            spec.binds.insert(0, meta);
        }
        spec.binds.extend(binds);
        spec.user_data = self.run;
        if let Some(h) = self.hostname {
            spec.hostname = h;
        }
    }
}

/// What the start of an instance is given (see [`Engine::user_data_start`]).
#[derive(Debug)]
#[allow(dead_code)] // read by the user-data work (skeleton)
pub(crate) struct StartContext<'a> {
    /// The instance.
    pub rec: &'a InstanceRecord,
    /// The template version it starts on.
    pub version: u32,
    /// Its layers, lowest first (to find out whether the template has cloud-init).
    pub layers: &'a [std::path::PathBuf],
    /// Its effective limits.
    pub limits: &'a mayfly_api::Limits,
    /// Its network interfaces.
    pub interfaces: &'a [mayfly_net::Interface],
}

fn timeout_secs() -> u64 {
    std::env::var("MAYFLY_USER_DATA_TIMEOUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|v| *v > 0)
        .unwrap_or(DEFAULT_TIMEOUT_SECS)
}

fn write_private(path: &Path, bytes: &[u8], mode: u32) -> Result<(), EngineError> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    std::fs::write(&tmp, bytes).map_err(crate::error::io_err("write", &tmp))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .map_err(crate::error::io_err("set the mode of", &tmp))?;
    std::fs::rename(&tmp, path).map_err(crate::error::io_err("rename", &tmp))
}

impl Engine {
    /// Checks at launch that the template can carry out the user data: without cloud-init
    /// in its layers, a cloud-config may use only mayfly's subset.
    pub(crate) fn check_user_data_for(
        &self,
        vrec: &VersionRecord,
        user_data: Option<&(UserDataSummary, Vec<u8>)>,
    ) -> Result<(), EngineError> {
        let Some((summary, bytes)) = user_data else {
            return Ok(());
        };
        if summary.kind != UserDataKind::CloudConfig {
            return Ok(());
        }
        let layers: Vec<PathBuf> = vrec
            .layers
            .iter()
            .map(|l| self.layout.layer_dir(&l.digest))
            .collect();
        if has_cloud_init(&layers) {
            return Ok(());
        }
        cloud_config::parse(&String::from_utf8_lossy(bytes), true).map_err(|e| {
            EngineError::invalid(
                e,
                "use only those keys, a `#!` script, or a template with cloud-init (`--packages cloud-init`)",
            )
        })?;
        Ok(())
    }

    /// Prepares instance `ctx.rec`'s metadata and user data for a start.
    pub(crate) async fn user_data_start(
        &self,
        ctx: StartContext<'_>,
    ) -> Result<StartExtras, EngineError> {
        let rec = ctx.rec;
        let dir = self.layout.instance_dir(&rec.id);
        let bytes = match &rec.config.user_data {
            Some(_) => {
                let id = rec.id.clone();
                self.db(move |s| s.user_data(&id)).await?
            }
            None => None,
        };
        let text = bytes.map(|b| String::from_utf8_lossy(&b).into_owned());
        let cloud_init = has_cloud_init(ctx.layers);
        let config = match (&rec.config.user_data, &text) {
            (Some(s), Some(t)) if s.kind == UserDataKind::CloudConfig => {
                Some(cloud_config::parse(t, !cloud_init).map_err(|e| {
                    EngineError::invalid(
                        format!("instance `{}` cannot start: {e}", rec.name),
                        "launch it again on a template with cloud-init, or with other user data",
                    )
                })?)
            }
            _ => None,
        };
        let hostname = config.as_ref().and_then(|c| c.hostname.clone());
        let meta = meta::build(&ctx, hostname.as_deref().unwrap_or(&rec.name));
        let seed = cloud_init.then(|| nocloud::Seed {
            meta_data: nocloud::meta_data(&rec.id, hostname.as_deref().unwrap_or(&rec.name), &meta),
            user_data: text
                .clone()
                .unwrap_or_else(|| "#cloud-config\n{}\n".to_owned()),
        });
        let run = text.filter(|_| !cloud_init).map(|t| match &config {
            Some(c) => to_sh::to_script(c),
            None => t,
        });
        let timeout = timeout_secs();
        let extras = self
            .blocking(move || {
                let mut extras = StartExtras {
                    hostname,
                    ..StartExtras::default()
                };
                let run_dir = dir.join("run");
                std::fs::create_dir_all(&run_dir)
                    .map_err(crate::error::io_err("create", &run_dir))?;
                extras.binds.push(meta::write(&dir, &meta)?);
                crate::inject("start:user-data")?;
                let script = dir.join(SCRIPT_FILE);
                let status = dir.join(STATUS_FILE);
                let _ = std::fs::remove_file(&script);
                let _ = std::fs::remove_file(&status);
                match seed {
                    Some(seed) => extras.binds.push(nocloud::write(&dir, &seed)?),
                    None => nocloud::remove(&dir),
                }
                if let Some(program) = run {
                    write_private(&script, program.as_bytes(), 0o600)?;
                    write_private(&status, b"", 0o600)?;
                    extras.run = Some(mayfly_driver::UserDataRun {
                        script,
                        status,
                        timeout_secs: timeout,
                    });
                }
                Ok(extras)
            })
            .await?;
        Ok(extras)
    }

    /// What `info` shows of `rec`'s user data.
    pub(crate) fn user_data_info(&self, rec: &InstanceRecord) -> Option<mayfly_api::UserDataInfo> {
        let u = rec.config.user_data.as_ref()?;
        let dir = self.layout.instance_dir(&rec.id);
        let (handler, status) = if nocloud::seeded(&dir) {
            let status = match &rec.run {
                Some(r) => nocloud::status(r.pid).inspect(|s| nocloud::remember(&dir, s)),
                None => nocloud::remembered(&dir),
            };
            (UserDataHandler::CloudInit, status)
        } else {
            (UserDataHandler::Mayfly, runner_status(&dir))
        };
        Some(mayfly_api::UserDataInfo {
            kind: u.kind,
            handler,
            bytes: u.bytes,
            status,
        })
    }
}

/// The status the forker's runner wrote for the last start of the instance in `dir`.
fn runner_status(dir: &Path) -> Option<UserDataStatus> {
    let bytes = std::fs::read(dir.join(STATUS_FILE)).ok()?;
    let o: mayfly_driver::UserDataOutcome = serde_json::from_slice(&bytes).ok()?;
    Some(UserDataStatus {
        state: o.state,
        code: o.code,
        at: o.at.map(rfc3339),
        errors: o.error.into_iter().collect(),
    })
}

pub(crate) fn rfc3339(unix: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(unix).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

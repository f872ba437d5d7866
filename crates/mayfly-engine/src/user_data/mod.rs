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

/// The kind of user data `text` is, from its first line.
fn kind_of(text: &str) -> UserDataKind {
    let first = text.lines().next().unwrap_or("").trim_end();
    if first.starts_with("#!") {
        UserDataKind::Script
    } else if first == "#cloud-config" {
        UserDataKind::CloudConfig
    } else {
        UserDataKind::Other
    }
}

/// The refusal of user data of another kind for mayfly's own runner.
fn other_kind_refused(text: &str) -> EngineError {
    let first = text.lines().next().unwrap_or("").trim_end();
    EngineError::invalid(
        format!(
            "without cloud-init booting in the instance, user data must start with `#!` (a \
             script) or `#cloud-config`; its first line is `{}`",
            first.chars().take(60).collect::<String>()
        ),
        "give a script or a cloud-config, or use a template with cloud-init whose init boots \
         (`--packages cloud-init`, command /sbin/init)",
    )
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
    let kind = kind_of(text);
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

/// Whether cloud-init carries out the user data of an instance of the template whose layers
/// are `layers`, started with the command `init_args`: it must be in the template and run,
/// i.e. the command boots an init. Anything else gets mayfly's runner.
pub(crate) fn cloud_init_handles(layers: &[PathBuf], boots_init: bool) -> bool {
    boots_init && has_cloud_init(layers)
}

/// Whether the template whose layers are `layers` (lowest first) has cloud-init: its program
/// as the merged layers show it (a whiteout above deletes it; no symlink is followed, so a
/// layer cannot make the host's files count).
pub(crate) fn has_cloud_init(layers: &[PathBuf]) -> bool {
    ["usr/bin/cloud-init", "usr/local/bin/cloud-init"]
        .iter()
        .any(|p| mayfly_image::stack_shows_file(layers, p).unwrap_or(false))
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
    /// The directories it mounts besides `/run/mayfly` (the NoCloud seed), for the
    /// mount-point layer.
    pub(crate) fn mount_dirs(&self) -> impl Iterator<Item = String> + '_ {
        self.binds
            .iter()
            .skip(1)
            .filter(|b| !b.only_over_file && b.source.is_dir())
            .map(|b| b.target.clone())
    }

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
    /// Whether its command boots an init (else a template's cloud-init would never run).
    pub boots_init: bool,
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
        init_args: &[String],
    ) -> Result<(), EngineError> {
        let Some((summary, bytes)) = user_data else {
            return Ok(());
        };
        if summary.kind == UserDataKind::Script {
            return Ok(());
        }
        let layers: Vec<PathBuf> = vrec
            .layers
            .iter()
            .map(|l| self.layout.layer_dir(&l.digest))
            .collect();
        if cloud_init_handles(&layers, mayfly_driver::boots_init(init_args)) {
            return Ok(());
        }
        if summary.kind == UserDataKind::Other {
            return Err(other_kind_refused(&String::from_utf8_lossy(bytes)));
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
        let cloud_init = cloud_init_handles(ctx.layers, ctx.boots_init);
        if !cloud_init
            && let (Some(s), Some(t)) = (&rec.config.user_data, &text)
            && s.kind == UserDataKind::Other
        {
            let e = other_kind_refused(t);
            return Err(EngineError::invalid(
                format!("instance `{}` cannot start: {}", rec.name, e),
                "launch it again on a template with cloud-init, or with other user data",
            ));
        }
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
        let hostname = config
            .as_ref()
            .and_then(cloud_config::CloudConfig::uts_name);
        let meta = meta::build(&ctx, hostname.as_deref().unwrap_or(&rec.name));
        let seed = cloud_init.then(|| nocloud::Seed {
            meta_data: nocloud::meta_data(&rec.id, hostname.as_deref().unwrap_or(&rec.name), &meta),
            user_data: text
                .clone()
                .unwrap_or_else(|| "#cloud-config\n{}\n".to_owned()),
        });
        let run = text.filter(|_| !cloud_init).map(|t| match &config {
            Some(c) => to_sh::to_script(c),
            None => t.into_bytes(),
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
                    write_private(&script, &program, 0o600)?;
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

    /// What `info` shows of `rec`'s user data, from what is on the host (a running
    /// instance's live cloud-init status is read by [`Engine::live_user_data_status`]). A
    /// status still `running` once the instance stopped is shown `interrupted`.
    pub(crate) fn user_data_info(&self, rec: &InstanceRecord) -> Option<mayfly_api::UserDataInfo> {
        let u = rec.config.user_data.as_ref()?;
        let dir = self.layout.instance_dir(&rec.id);
        let (handler, status) = if nocloud::seeded(&dir) {
            (UserDataHandler::CloudInit, nocloud::remembered(&dir))
        } else {
            (UserDataHandler::Mayfly, runner_status(&dir))
        };
        let status = status.map(|s| interrupted_unless_running(s, rec.run.is_some()));
        Some(mayfly_api::UserDataInfo {
            kind: u.kind,
            handler,
            bytes: u.bytes,
            status,
        })
    }

    /// cloud-init's status in the running instance `rec` (read off the async workers), kept
    /// for when it has stopped; `None` when it is not running or cloud-init does not handle
    /// its user data.
    pub(crate) async fn live_user_data_status(
        &self,
        rec: &InstanceRecord,
    ) -> Option<UserDataStatus> {
        rec.config.user_data.as_ref()?;
        let pid = rec.run.as_ref()?.pid;
        let dir = self.layout.instance_dir(&rec.id);
        tokio::task::spawn_blocking(move || {
            if !nocloud::seeded(&dir) {
                return None;
            }
            nocloud::status(pid).inspect(|s| nocloud::remember(&dir, s))
        })
        .await
        .ok()
        .flatten()
    }
}

/// A status left `running` by a run that ended (stopped, killed, the daemon died) is shown as
/// `interrupted`.
fn interrupted_unless_running(mut s: UserDataStatus, running: bool) -> UserDataStatus {
    if !running && s.state == "running" {
        s.state = "interrupted".into();
    }
    s
}

/// When the init of the instance in `dir` began in its current (or last) run that began at
/// `run_started` (Unix seconds): right after mayfly's runner ended the user data, or at the
/// start without a runner. `None` when the run ended before the runner did: all of it was
/// user data, no init ran.
pub(crate) fn init_began(dir: &Path, run_started: i64) -> Option<i64> {
    let Ok(bytes) = std::fs::read(dir.join(STATUS_FILE)) else {
        return Some(run_started); // no user data for mayfly's runner
    };
    let outcome: mayfly_driver::UserDataOutcome = serde_json::from_slice(&bytes).ok()?;
    outcome.at.map(|at| at.max(run_started))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn mknod_whiteout(p: &Path) {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            p,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::empty(),
            0,
        )
        .unwrap();
    }

    #[test]
    fn cloud_init_is_looked_up_in_the_merged_layers_only() {
        let t = tempfile::tempdir().unwrap();
        let (low, high) = (t.path().join("low"), t.path().join("high"));
        std::fs::create_dir_all(low.join("usr/bin")).unwrap();
        std::fs::write(low.join("usr/bin/cloud-init"), "#!/usr/bin/python3\n").unwrap();
        std::fs::create_dir_all(high.join("usr/bin")).unwrap();
        assert!(has_cloud_init(&[low.clone(), high.clone()]));
        // A later layer deleted it.
        mknod_whiteout(&high.join("usr/bin/cloud-init"));
        assert!(!has_cloud_init(&[low.clone(), high.clone()]));
        // A layer's absolute link must not make a host file count.
        let host = t.path().join("host");
        std::fs::create_dir_all(host.join("bin")).unwrap();
        std::fs::write(host.join("bin/cloud-init"), "x").unwrap();
        let evil = t.path().join("evil");
        std::fs::create_dir_all(&evil).unwrap();
        std::os::unix::fs::symlink(&host, evil.join("usr")).unwrap();
        assert!(!has_cloud_init(&[evil]));
    }

    #[test]
    fn a_planted_link_to_kernel_files_is_not_read() {
        // On a tmpfs where there is one (as the instance's /run is), so that plain files are
        // read.
        let t = tempfile::tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .unwrap();
        let d = t.path().join("run/cloud-init");
        std::fs::create_dir_all(&d).unwrap();
        std::os::unix::fs::symlink("/proc/kmsg", d.join("result.json")).unwrap();
        std::os::unix::fs::symlink("/proc/self/status", d.join("status.json")).unwrap();
        let root = std::fs::File::open(t.path()).unwrap();
        assert!(nocloud::read_small_in(&root, "run/cloud-init/result.json").is_none());
        assert!(nocloud::read_small_in(&root, "run/cloud-init/status.json").is_none());
        // A plain file is read (when on a tmpfs or overlay, as /run is).
        let on_tmpfs = rustix::fs::statfs(t.path()).unwrap().f_type as i64 == 0x0102_1994;
        std::fs::remove_file(d.join("result.json")).unwrap();
        std::fs::write(d.join("result.json"), "{}").unwrap();
        assert_eq!(
            nocloud::read_small_in(&root, "run/cloud-init/result.json").is_some(),
            on_tmpfs
        );
        // cloud-init's own layout: a link in /run to /var/lib/cloud/data, not followed, the
        // file read at its place (when that is a tmpfs or overlay).
        let data = t.path().join("var/lib/cloud/data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("result.json"), "{\"v1\": {}}").unwrap();
        std::fs::remove_file(d.join("result.json")).unwrap();
        std::os::unix::fs::symlink(
            "../../var/lib/cloud/data/result.json",
            d.join("result.json"),
        )
        .unwrap();
        assert_eq!(
            nocloud::read_cloud_init(&root, "result.json").is_some(),
            on_tmpfs
        );
        std::fs::remove_file(d.join("result.json")).unwrap();
        assert!(
            nocloud::read_cloud_init(&root, "result.json").is_none(),
            "not of this boot"
        );
        std::os::unix::fs::symlink("/proc/kmsg", d.join("result.json")).unwrap();
        std::fs::remove_file(data.join("result.json")).unwrap();
        std::os::unix::fs::symlink("/proc/kmsg", data.join("result.json")).unwrap();
        assert!(nocloud::read_cloud_init(&root, "result.json").is_none());
        // Files of /proc itself, reached without a link, are refused by their filesystem.
        let proc_root = std::fs::File::open("/proc/self").unwrap();
        assert!(nocloud::read_small_in(&proc_root, "status").is_none());
    }

    #[test]
    fn a_status_left_running_by_an_ended_run_is_interrupted() {
        let s = UserDataStatus {
            state: "running".into(),
            code: None,
            at: None,
            errors: Vec::new(),
        };
        assert_eq!(interrupted_unless_running(s.clone(), true).state, "running");
        assert_eq!(interrupted_unless_running(s, false).state, "interrupted");
    }

    #[test]
    fn the_init_begins_when_the_runner_ended() {
        let t = tempfile::tempdir().unwrap();
        // No runner: the run's start.
        assert_eq!(init_began(t.path(), 100), Some(100));
        std::fs::create_dir_all(t.path().join("run")).unwrap();
        let status = t.path().join(STATUS_FILE);
        // Made at the start, not yet written: no init ran.
        std::fs::write(&status, b"").unwrap();
        assert_eq!(init_began(t.path(), 100), None);
        std::fs::write(&status, br#"{"state":"running"}"#).unwrap();
        assert_eq!(init_began(t.path(), 100), None);
        std::fs::write(&status, br#"{"state":"done","code":0,"at":160}"#).unwrap();
        assert_eq!(init_began(t.path(), 100), Some(160));
    }
}

//! Rolling a template version out to the instances that follow it.
//!
//! The running transient followers (not pinned, not yet on the current version) are reset in
//! waves of K: a reset starts them on the current version. After each wave an optional health
//! check runs inside every instance of the wave. If one fails, the rollout stops, the
//! template's name is pointed back at the previous version — the one most of the due
//! followers ran before the rollout, the newest on a tie (not merely the number below the
//! target: after a rollback and a new patch, that one is the bad version rolled back from) —
//! and every instance already reset is reset again, onto that version. Persistent followers are never reset by a
//! rollout (that would discard their data); the paths where their own changes hide the new
//! version are reported instead.

use std::sync::Arc;
use std::time::Duration;

use mayfly_api::{
    ApiError, ExecRequest, InstanceState, Mode, RolloutEvent, RolloutRequest, StopRequest,
};
use tokio::io::AsyncReadExt;

use crate::{Engine, EngineError, lock};

/// Largest health-check output kept.
const MAX_OUTPUT: usize = 16 * 1024;

/// Where a rollout reports its progress.
pub type RolloutLog = Arc<dyn Fn(RolloutEvent) + Send + Sync>;

impl Engine {
    /// Runs `command` in running instance `name`, with no input and stdout and stderr merged;
    /// returns its exit code (124 when it took longer than `timeout` and was killed) and output.
    pub async fn exec_capture(
        self: &Arc<Self>,
        name: &str,
        command: Vec<String>,
        timeout: Duration,
    ) -> Result<(i32, String), EngineError> {
        let null = std::fs::File::open("/dev/null").map_err(crate::error::io_err(
            "open",
            std::path::Path::new("/dev/null"),
        ))?;
        let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| EngineError::Internal(format!("cannot create a pipe: {e}")))?;
        let w2 = w
            .try_clone()
            .map_err(|e| EngineError::Internal(format!("cannot duplicate a pipe: {e}")))?;
        rustix::io::ioctl_fionbio(&r, true)
            .map_err(|e| EngineError::Internal(format!("pipe: {e}")))?;
        let req = ExecRequest {
            command,
            env: Vec::new(),
            workdir: None,
            tty: false,
            term_size: None,
        };
        let handle = self.exec(name, req, vec![null.into(), w, w2]).await?;
        let mut reader = tokio::net::unix::pipe::Receiver::from_owned_fd_unchecked(r)
            .map_err(|e| EngineError::Internal(format!("pipe: {e}")))?;
        let read_all = async move {
            let mut out = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                if out.len() < MAX_OUTPUT {
                    out.extend_from_slice(&buf[..n]);
                }
            }
            String::from_utf8_lossy(&out).into_owned()
        };
        let exec_id = handle.exec_id;
        let waited = tokio::time::timeout(timeout, async {
            let (output, status) = tokio::join!(read_all, handle.exit);
            (output, status)
        })
        .await;
        match waited {
            Ok((output, status)) => Ok((status.map(|s| s.code).unwrap_or(-1), output)),
            Err(_) => {
                let _ = self.signal_exec(exec_id, libc::SIGKILL).await;
                Ok((124, format!("timed out after {} s", timeout.as_secs())))
            }
        }
    }

    async fn health_check(
        self: &Arc<Self>,
        name: &str,
        check: &str,
        timeout: Duration,
    ) -> Result<(), String> {
        let cmd = vec!["/bin/sh".to_owned(), "-c".to_owned(), check.to_owned()];
        match self.exec_capture(name, cmd, timeout).await {
            Ok((0, _)) => Ok(()),
            Ok((code, output)) => Err(format!("exit code {code}: {}", output.trim_end())),
            Err(e) => Err(mayfly_driver::error_chain(&e)),
        }
    }

    /// Rolls the current version of template `name` out (see the module documentation).
    pub async fn rollout(
        self: &Arc<Self>,
        name: &str,
        req: RolloutRequest,
        log: RolloutLog,
    ) -> Result<(), EngineError> {
        let wave = usize::try_from(req.wave.unwrap_or(1).max(1)).unwrap_or(1);
        let timeout = Duration::from_secs(req.timeout.unwrap_or(30).max(1));
        let n = name.to_owned();
        let template = self.db(move |s| s.template(&n)).await?;
        let target = template.current_version;
        for s in self.shadowed(&template).await? {
            log(RolloutEvent::Shadowed(s));
        }
        let n = name.to_owned();
        let followers: Vec<String> = self
            .db(move |s| {
                Ok(s.instances()?
                    .into_iter()
                    .filter(|i| {
                        i.template == n && i.pinned_version.is_none() && i.mode == Mode::Transient
                    })
                    .map(|i| i.name)
                    .collect())
            })
            .await?;
        let mut ran: std::collections::BTreeMap<u32, usize> = std::collections::BTreeMap::new();
        let due: Vec<String> = followers
            .into_iter()
            .filter(|f| {
                lock(&self.slots).get(f).is_some_and(|slot| {
                    let rt = lock(&slot.rt);
                    let due = rt.state == InstanceState::Running && rt.version != Some(target);
                    if due && let Some(v) = rt.version {
                        *ran.entry(v).or_default() += 1;
                    }
                    due
                })
            })
            .collect();
        // Most followers first, then the newest (max_by_key keeps the last of equals, and the
        // map iterates in ascending version order).
        let previous = ran.iter().max_by_key(|(_, n)| **n).map(|(v, _)| *v);
        let mut reset: Vec<String> = Vec::new();
        for (i, group) in due.chunks(wave).enumerate() {
            log(RolloutEvent::Wave {
                number: u32::try_from(i + 1).unwrap_or(u32::MAX),
                instances: group.to_vec(),
            });
            let mut failure: Option<String> = None;
            for inst in group {
                match self.reset_instance(inst, StopRequest::default()).await {
                    Ok(_) => {
                        reset.push(inst.clone());
                        log(RolloutEvent::Instance {
                            name: inst.clone(),
                            status: "reset".into(),
                            detail: format!("now on version {target}"),
                        });
                    }
                    Err(e) => {
                        let detail = mayfly_driver::error_chain(&e);
                        log(RolloutEvent::Instance {
                            name: inst.clone(),
                            status: "failed".into(),
                            detail: detail.clone(),
                        });
                        failure = Some(format!("resetting `{inst}` failed: {detail}"));
                        break;
                    }
                }
            }
            if failure.is_none()
                && let Some(check) = &req.health
            {
                for inst in group {
                    match self.health_check(inst, check, timeout).await {
                        Ok(()) => log(RolloutEvent::Instance {
                            name: inst.clone(),
                            status: "healthy".into(),
                            detail: String::new(),
                        }),
                        Err(why) => {
                            log(RolloutEvent::Instance {
                                name: inst.clone(),
                                status: "unhealthy".into(),
                                detail: why.clone(),
                            });
                            failure = Some(format!("health check failed on `{inst}` ({why})"));
                            break;
                        }
                    }
                }
            }
            if let Some(why) = failure {
                let Some(prev) = previous else {
                    return Err(EngineError::RolloutFailed(format!(
                        "{why}; template `{name}` has no older version to roll back to"
                    )));
                };
                let n = name.to_owned();
                self.db(move |s| s.set_current_version(&n, prev)).await?;
                log(RolloutEvent::RolledBack { to: prev });
                for inst in &reset {
                    match self.reset_instance(inst, StopRequest::default()).await {
                        Ok(_) => log(RolloutEvent::Instance {
                            name: inst.clone(),
                            status: "reverted".into(),
                            detail: format!("back on version {prev}"),
                        }),
                        Err(e) => log(RolloutEvent::Instance {
                            name: inst.clone(),
                            status: "failed".into(),
                            detail: mayfly_driver::error_chain(&e),
                        }),
                    }
                }
                return Err(EngineError::RolloutFailed(format!(
                    "{why}; template `{name}` rolled back to version {prev} and {} instance(s) returned to it",
                    reset.len()
                )));
            }
        }
        log(RolloutEvent::Done {
            version: target,
            reset,
        });
        Ok(())
    }
}

/// An error event for a failed rollout.
pub fn rollout_error(e: &EngineError) -> RolloutEvent {
    let api: ApiError = e.to_api();
    RolloutEvent::Error(api)
}

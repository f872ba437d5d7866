//! Rolling a template version out to the instances that follow it.
//!
//! The rollout's *target* is the template's current version when it begins. The running
//! transient followers (not pinned, not on the target yet) are reset in waves of K: a reset
//! starts them on the target. After each wave an optional health check runs inside every
//! instance of the wave. Who is not reset, and is reported instead:
//! - persistent followers (a reset would discard their data): the paths where their own
//!   changes hide the new version are reported (`Shadowed`);
//! - followers *held back* by their applications (`launch BASE --app A` where `A` is not built
//!   on the target yet; see `apps.rs`): they keep running the version their applications are
//!   built on, and start on it again, until the applications are rebuilt (`HeldBack`).
//!
//! A failure puts everything back where it was:
//! - an instance whose reset fails is started again, at once, on the version it ran (for
//!   that one run; then it follows the name like any follower);
//! - after a failed reset or health check, the name points back at the version it meant
//!   before the target became current (`previous_version`, remembered by every move of the
//!   name forward: patch, new version; a move back clears it, since the version turned away
//!   from is never a place to go back to) — not at the version most followers ran, which after
//!   an earlier rollback may be a version already rejected — unless someone moved the name
//!   meanwhile;
//! - every running transient follower on the target then follows the name back: the
//!   instances this rollout reset, and those that started on the target after it became
//!   current. One that cannot (its reset fails, or its applications exist only on the
//!   target) is returned to the version it ran before the rollout (or, when it started on the
//!   target, to the version the name points at). Pinned instances are never touched.
//!
//! When the name has no previous version (it never moved forward, or its last move was
//! back), it stays, and the instances reset are returned to the versions they ran.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use mayfly_api::{
    ApiError, ExecRequest, InstanceInfo, InstanceState, Mode, RolloutEvent, RolloutRequest,
    StopRequest,
};
use mayfly_driver::InitStdio;
use mayfly_store::NextRun;
use tokio::io::AsyncReadExt;

use crate::events::Ev;
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
            user: None,
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
            Ok((code, output)) if output.trim().is_empty() => Err(format!("exit code {code}")),
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
        let n = name.to_owned();
        let template = self.db(move |s| s.template(&n)).await?;
        let target = template.current_version;
        // A daemon killed mid-rollout finds this entry and puts things back, as a failed
        // rollout would (see `revert_interrupted`).
        let subject = format!("{name}@{target}");
        let journal = self
            .db(move |s| s.journal_begin(crate::recovery::kind::ROLLOUT, &subject, &[]))
            .await?;
        self.emit(
            Ev::new("rollout.start")
                .on("template", name)
                .details(serde_json::json!({ "version": target, "wave": req.wave })),
        );
        // Every step the client sees is an event too (the final one is `rollout.done`).
        let log: RolloutLog = Arc::new({
            let (bus, name, actor) = (
                self.event_bus().clone(),
                name.to_owned(),
                crate::events::current_actor(),
            );
            move |ev: RolloutEvent| {
                if !matches!(ev, RolloutEvent::Done { .. } | RolloutEvent::Error(_)) {
                    bus.emit(
                        Ev::new("rollout.step")
                            .on("template", &name)
                            .by(&actor)
                            .details(serde_json::to_value(&ev).unwrap_or_default()),
                    );
                }
                log(ev)
            }
        });
        let result = self.rollout_journalled(name, template, req, log).await;
        self.journal_end(journal).await;
        self.emit(
            Ev::new("rollout.done")
                .on("template", name)
                .details(serde_json::json!({ "version": target }))
                .result(&result),
        );
        result
    }

    async fn rollout_journalled(
        self: &Arc<Self>,
        name: &str,
        template: mayfly_store::TemplateRecord,
        req: RolloutRequest,
        log: RolloutLog,
    ) -> Result<(), EngineError> {
        let wave = usize::try_from(req.wave.unwrap_or(1).max(1)).unwrap_or(1);
        let timeout = Duration::from_secs(req.timeout.unwrap_or(30).max(1));
        let target = template.current_version;
        for s in self.shadowed(&template).await? {
            log(RolloutEvent::Shadowed(s));
        }
        let held = self.held_back(&template).await?;
        let held_names: HashSet<String> = held.iter().map(|h| h.instance.clone()).collect();
        for h in &held {
            log(RolloutEvent::HeldBack(h.clone()));
        }
        // (name, the version it runs), in name order.
        let due: Vec<(String, u32)> = self
            .running_followers(name)
            .await?
            .into_iter()
            .filter(|(n, v)| *v != target && !held_names.contains(n))
            .collect();
        let mut reset: Vec<(String, u32)> = Vec::new();
        for (i, group) in due.chunks(wave).enumerate() {
            log(RolloutEvent::Wave {
                number: u32::try_from(i + 1).unwrap_or(u32::MAX),
                instances: group.iter().map(|(n, _)| n.clone()).collect(),
            });
            let mut failure: Option<String> = None;
            for (inst, ran) in group {
                match self.reset_instance(inst, StopRequest::default()).await {
                    Ok(info) => {
                        crate::failpoint("rollout:reset");
                        reset.push((inst.clone(), *ran));
                        log(event(
                            inst,
                            "reset",
                            format!("now on version {}", shown(info.running_version)),
                        ));
                    }
                    Err(e) => {
                        let detail = mayfly_driver::error_chain(&e);
                        log(event(inst, "failed", detail.clone()));
                        self.return_to(inst, *ran, &log).await;
                        failure = Some(format!("resetting `{inst}` failed: {detail}"));
                        break;
                    }
                }
            }
            if failure.is_none()
                && let Some(check) = &req.health
            {
                for (inst, _) in group {
                    match self.health_check(inst, check, timeout).await {
                        Ok(()) => log(event(inst, "healthy", String::new())),
                        Err(why) => {
                            log(event(inst, "unhealthy", why.clone()));
                            failure = Some(format!("health check failed on `{inst}` ({why})"));
                            break;
                        }
                    }
                }
            }
            if let Some(why) = failure {
                let back = match self
                    .put_back(name, target, template.previous_version, &reset, &log)
                    .await
                {
                    Ok(back) => back,
                    Err(e) => format!(
                        "putting things back failed: {}",
                        mayfly_driver::error_chain(&e)
                    ),
                };
                return Err(EngineError::RolloutFailed(format!("{why}; {back}")));
            }
        }
        log(RolloutEvent::Done {
            version: target,
            reset: reset.into_iter().map(|(n, _)| n).collect(),
            held_back: held.into_iter().map(|h| h.instance).collect(),
        });
        Ok(())
    }

    /// Puts back what a rollout of version `target` of template `name`, interrupted by the
    /// end of a daemon, left half done: the name goes back where it pointed before, and the
    /// running followers on `target` with it, exactly as after a failed health check. (The
    /// alternative, finishing the rollout, would reset instances onto a version whose health
    /// checks never ran.)
    /// Returns whether that is done (or there is nothing to do: the template is gone); when
    /// not, the journal entry stays and the next start tries again.
    pub(crate) async fn revert_interrupted(self: &Arc<Self>, subject: &str) -> bool {
        let Some((name, target)) = subject
            .rsplit_once('@')
            .and_then(|(n, v)| Some((n.to_owned(), v.parse::<u32>().ok()?)))
        else {
            return true;
        };
        let n = name.clone();
        let template = match self.db(move |s| s.template(&n)).await {
            Ok(t) => t,
            Err(EngineError::Store(mayfly_store::StoreError::NotFound { .. })) => return true,
            Err(e) => {
                tracing::error!(
                    "cannot put back the interrupted rollout of `{name}` version {target}: {}",
                    mayfly_driver::error_chain(&e)
                );
                return false;
            }
        };
        let log: RolloutLog = Arc::new({
            let name = name.clone();
            move |ev| tracing::info!(template = %name, "interrupted rollout: {ev:?}")
        });
        match self
            .put_back(&name, target, template.previous_version, &[], &log)
            .await
        {
            Ok(what) => {
                tracing::warn!(
                    "the rollout of `{name}` version {target} was interrupted by the end of the daemon: {what}; run it again to roll the version out"
                );
                true
            }
            Err(e) => {
                tracing::error!(
                    "cannot put back the interrupted rollout of `{name}` version {target}: {}",
                    mayfly_driver::error_chain(&e)
                );
                false
            }
        }
    }

    /// Resets instance `name`, waiting (a while) for an action that holds it, such as the
    /// settling of a run that ended while the daemon was away.
    async fn reset_waiting(self: &Arc<Self>, name: &str) -> Result<InstanceInfo, EngineError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            match self.reset_instance(name, StopRequest::default()).await {
                Err(EngineError::Busy { .. }) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                other => return other,
            }
        }
    }

    /// The running transient followers of template `name` (not pinned) and the version
    /// each runs, in name order.
    async fn running_followers(&self, name: &str) -> Result<Vec<(String, u32)>, EngineError> {
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
        Ok(followers
            .into_iter()
            .filter_map(|f| {
                let slot = lock(&self.slots).get(&f)?;
                let rt = lock(&slot.rt);
                match (rt.state, rt.version) {
                    (InstanceState::Running, Some(v)) => Some((f.clone(), v)),
                    _ => None,
                }
            })
            .collect())
    }

    /// After a failure of the rollout of version `target`: points the name back at
    /// `previous` and brings every running follower on `target` back with it (see the module
    /// documentation). Returns what it did, for the error message.
    async fn put_back(
        self: &Arc<Self>,
        name: &str,
        target: u32,
        previous: Option<u32>,
        reset: &[(String, u32)],
        log: &RolloutLog,
    ) -> Result<String, EngineError> {
        let Some(prev) = previous else {
            for (inst, ran) in reset {
                self.return_to(inst, *ran, log).await;
            }
            return Ok(format!(
                "template `{name}` has no earlier version to point back at (it never pointed elsewhere, or that version was removed), so it still means version {target}; the {} instance(s) reset were returned to the versions they ran",
                reset.len()
            ));
        };
        // Only from the target: a move made meanwhile by someone else is theirs to keep.
        let n = name.to_owned();
        let (moved, now) = self
            .db(move |s| {
                let t = s.template(&n)?;
                if t.current_version != target {
                    return Ok((false, t.current_version));
                }
                s.set_current_version(&n, prev)?;
                Ok((true, prev))
            })
            .await?;
        if moved {
            log(RolloutEvent::RolledBack { to: prev });
        }
        let ran: HashMap<&str, u32> = reset.iter().map(|(n, v)| (n.as_str(), *v)).collect();
        // The instances reset first, in the order they were, then those that started on the
        // target by following the name.
        let mut on_target: Vec<String> = reset.iter().map(|(n, _)| n.clone()).collect();
        for (inst, v) in self.running_followers(name).await? {
            if v == target && !ran.contains_key(inst.as_str()) {
                on_target.push(inst);
            }
        }
        let mut back = 0;
        for inst in &on_target {
            let ran_before = ran.get(inst.as_str()).copied();
            let from = match ran_before {
                Some(_) => String::new(),
                None => format!("started on version {target} after it became current; "),
            };
            match self.reset_waiting(inst).await {
                Ok(info) if info.running_version.is_some_and(|v| v != target) => {
                    back += 1;
                    log(event(
                        inst,
                        "reverted",
                        format!("{from}back on version {}", shown(info.running_version)),
                    ));
                    continue;
                }
                Ok(_) => log(event(
                    inst,
                    "failed",
                    format!("{from}its applications keep it on version {target}"),
                )),
                Err(e) => log(event(
                    inst,
                    "failed",
                    format!("{from}{}", mayfly_driver::error_chain(&e)),
                )),
            }
            if self.return_to(inst, ran_before.unwrap_or(now), log).await {
                back += 1;
            }
        }
        let pointer = if moved {
            format!("template `{name}` rolled back to version {prev}")
        } else {
            format!(
                "template `{name}` was moved to version {now} during the rollout and left there"
            )
        };
        let total = on_target.len();
        Ok(match total {
            0 => pointer,
            _ if back == total => {
                format!("{pointer}; the {total} running instance(s) on version {target} left it")
            }
            _ => format!(
                "{pointer}; {back} of the {total} running instance(s) on version {target} left it (see the report for the others)"
            ),
        })
    }

    /// Starts transient follower `name` on `version` for its next run (stopping it first if it
    /// runs another one), reporting it; `true` when it runs there.
    async fn return_to(self: &Arc<Self>, name: &str, version: u32, log: &RolloutLog) -> bool {
        match self.run_version(name, version).await {
            Ok(()) => {
                log(event(
                    name,
                    "returned",
                    format!("running again on version {version}"),
                ));
                true
            }
            Err(e) => {
                log(event(
                    name,
                    "failed",
                    format!(
                        "cannot start it again on version {version}: {}",
                        mayfly_driver::error_chain(&e)
                    ),
                ));
                false
            }
        }
    }

    async fn run_version(self: &Arc<Self>, name: &str, version: u32) -> Result<(), EngineError> {
        let slot = self.slot(name)?;
        let _guard = slot.acquire("rollout").await?;
        self.settle(&slot).await;
        let (state, running) = {
            let rt = lock(&slot.rt);
            (rt.state, rt.version)
        };
        if state == InstanceState::Running && running == Some(version) {
            return Ok(());
        }
        let n = name.to_owned();
        let rec = self.db(move |s| s.instance(&n)).await?;
        // A daemon killed between the stop and the start starts it at its next start-up.
        let journal = self.journal_restart(&slot.id).await?;
        let started: Result<(), EngineError> = async {
            if state != InstanceState::Stopped {
                self.stop_locked(&slot, &StopRequest::default()).await?;
            }
            let next = NextRun {
                version: Some(version),
                ..rec.next_run.clone().unwrap_or_default()
            };
            let id = rec.id.clone();
            self.db(move |s| s.set_next_run(&id, Some(&next))).await?;
            let max = self.config.log_max_bytes;
            self.start_locked(&slot, InitStdio::Log { max_bytes: max }, false)
                .await
        }
        .await;
        if started.is_err() {
            // Not a surprise for whoever starts it next.
            let (id, old) = (rec.id.clone(), rec.next_run.clone());
            let _ = self.db(move |s| s.set_next_run(&id, old.as_ref())).await;
        }
        self.journal_end(journal).await;
        started
    }
}

/// An event about one instance.
fn event(name: &str, status: &str, detail: String) -> RolloutEvent {
    RolloutEvent::Instance {
        name: name.to_owned(),
        status: status.to_owned(),
        detail,
    }
}

/// A version for a message.
fn shown(version: Option<u32>) -> String {
    version.map_or_else(|| "?".to_owned(), |v| v.to_string())
}

/// An error event for a failed rollout.
pub fn rollout_error(e: &EngineError) -> RolloutEvent {
    let api: ApiError = e.to_api();
    RolloutEvent::Error(api)
}

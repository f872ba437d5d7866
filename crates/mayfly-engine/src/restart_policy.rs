//! Restart policies: start an instance again when its init ends unasked, with back-off.
//!
//! - `on-failure[:N]`: a non-zero exit, a signal mayfly did not send (an OOM kill is one) or
//!   an end whose status is unknown; with N, it gives up after N restarts in a row.
//! - `always`: any end mayfly was not asked for (a clean exit and a `poweroff` inside too).
//! - Never after an end mayfly asked for (stop, restart, reset, rm, the stop of a `run`
//!   client), nor after a reboot from inside (started again anyway, or stopped by the reboot
//!   loop guard).
//!
//! Back-off: the first restart waits [`BACKOFF_BASE`], each next one twice as long, at most
//! [`BACKOFF_MAX`]; a run of [`STABLE_RUN`] or more ends the row (the count starts over).
//! Where the policy stands is in the catalogue (`RestartState`): a pending restart is re-armed
//! by the next daemon ([`Engine::rearm_restarts`]); an explicit stop, start or rm cancels it.
//! The timers run on real time (not the schedules' test clock); the base can be shortened for
//! tests with `MAYFLY_TEST_RESTART_BACKOFF_MS`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mayfly_api::{Ending, InstanceState, Mode, RestartPolicy};
use mayfly_driver::{ExitStatus, InitStdio};
use mayfly_store::{InstanceRecord, RestartState};

use crate::slot::Slot;
use crate::{Engine, EngineError, lock};

/// The wait before the first restart of a row.
pub(crate) const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// The longest wait between two restarts.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// A run at least this long (seconds) ends a crash loop: the next failure starts a new row.
pub(crate) const STABLE_RUN: i64 = 10;
/// How often a restart due while the instance is busy is tried again, and how many times.
const BUSY_RETRY: Duration = Duration::from_secs(1);
const BUSY_TRIES: u32 = 120;

/// Refuses a policy that cannot apply to `mode`.
pub(crate) fn check_policy(mode: Mode, policy: RestartPolicy) -> Result<(), EngineError> {
    if mode == Mode::Ephemeral && !policy.is_no() {
        return Err(EngineError::invalid(
            "an ephemeral instance is deleted when it stops: it cannot be restarted",
            "leave --restart out, or launch it transient or persistent",
        ));
    }
    Ok(())
}

/// The pending restarts of this daemon: instance id → its timer.
#[derive(Debug, Default)]
pub(crate) struct RestartTimers {
    next: AtomicU64,
    armed: Mutex<HashMap<String, (u64, tokio::task::AbortHandle)>>,
}

/// What the end of a run leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Leave the state as it is (no policy).
    Nothing,
    /// Not restarted: the state goes (an asked-for or a successful end).
    Clear,
    /// Start it again after `delay`; the new state says so.
    Restart {
        /// The back-off.
        delay: Duration,
        /// The state to record.
        state: RestartState,
    },
    /// `on-failure:N` reached N.
    GiveUp(RestartState),
}

/// The back-off before restart number `restarts + 1` of a row.
pub(crate) fn backoff(base: Duration, restarts: u32) -> Duration {
    let factor = 1u32.checked_shl(restarts.min(31)).unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(BACKOFF_MAX)
}

/// Judges the end of a run by `policy`: `ending`/`code` how it ended (`None`: unknown),
/// `prev` where the policy stood, `ran_for` how long the run lasted (seconds), `now` Unix
/// seconds.
pub(crate) fn decide(
    policy: RestartPolicy,
    ending: Option<Ending>,
    code: Option<i32>,
    prev: Option<&RestartState>,
    ran_for: Option<i64>,
    now: i64,
    base: Duration,
) -> Decision {
    let wanted = match (policy, ending) {
        (RestartPolicy::No, _) => return Decision::Nothing,
        (_, Some(Ending::Stopped | Ending::Killed | Ending::Rebooted)) => false,
        (RestartPolicy::Always, _) => true,
        (RestartPolicy::OnFailure { .. }, Some(Ending::Exited)) => code != Some(0),
        (RestartPolicy::OnFailure { .. }, Some(Ending::Signalled) | None) => true,
        (RestartPolicy::OnFailure { .. }, Some(Ending::Halted)) => false,
    };
    if !wanted {
        return Decision::Clear;
    }
    let mut state = prev.cloned().unwrap_or_default();
    if ran_for.is_some_and(|t| t >= STABLE_RUN) {
        state.restarts = 0;
    }
    state.gave_up = None;
    state.next_at = None;
    if let RestartPolicy::OnFailure { max: Some(max) } = policy
        && state.restarts >= max
    {
        state.gave_up = Some(format!(
            "it failed again after {max} restart(s) in a row (on-failure:{max})"
        ));
        return Decision::GiveUp(state);
    }
    let delay = backoff(base, state.restarts);
    state.restarts += 1;
    let secs = i64::try_from(delay.as_millis().div_ceil(1000)).unwrap_or(i64::MAX);
    state.next_at = Some(now.saturating_add(secs));
    Decision::Restart { delay, state }
}

/// The back-off base of this daemon (`MAYFLY_TEST_RESTART_BACKOFF_MS`, for tests only).
fn backoff_base() -> Duration {
    std::env::var("MAYFLY_TEST_RESTART_BACKOFF_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(BACKOFF_BASE, Duration::from_millis)
}

impl Engine {
    /// Applies instance `slot`'s restart policy to a run that just ended and was settled
    /// (`ending`: how, as mayfly read it; `started_at`: when the run began). Called by the
    /// end of every run that is not started again anyway.
    pub(crate) async fn apply_restart_policy(
        self: &Arc<Self>,
        slot: &Arc<Slot>,
        status: Option<ExitStatus>,
        ending: Option<Ending>,
        started_at: Option<i64>,
    ) {
        let id = slot.id.clone();
        // Gone (ephemeral, removed): nothing to restart.
        let Ok(rec) = self.db(move |s| s.instance_by_id(&id)).await else {
            return;
        };
        if started_at.is_none() && rec.restart_state.is_some() {
            // A second report of a run settled already (at start-up, the forker's state and
            // its event both tell of it): judged once.
            return;
        }
        let now = mayfly_store::now();
        let decision = decide(
            rec.config.restart,
            ending,
            status.map(|s| s.code),
            rec.restart_state.as_ref(),
            started_at.map(|t| now - t),
            now,
            backoff_base(),
        );
        let state = match &decision {
            Decision::Nothing => return,
            Decision::Clear if rec.restart_state.is_none() => return,
            Decision::Clear => None,
            Decision::Restart { state, .. } | Decision::GiveUp(state) => Some(state.clone()),
        };
        if let Err(e) = self.save_restart_state(&rec.id, state).await {
            tracing::error!(instance = %rec.name, "cannot record the restart policy's state: {e}");
            return;
        }
        // Recorded and not armed yet: the next daemon re-arms it.
        crate::failpoint("restart-policy:recorded");
        match decision {
            Decision::Restart { delay, state } => {
                tracing::info!(
                    instance = %rec.name,
                    "restart policy {}: starting it again in {delay:?} (restart {} in a row)",
                    rec.config.restart,
                    state.restarts
                );
                self.arm_restart(&rec.id, delay);
            }
            Decision::GiveUp(state) => {
                tracing::warn!(
                    instance = %rec.name,
                    "restart policy {}: giving up: {}",
                    rec.config.restart,
                    state.gave_up.as_deref().unwrap_or_default()
                );
            }
            _ => {}
        }
    }

    async fn save_restart_state(
        &self,
        id: &str,
        state: Option<RestartState>,
    ) -> Result<(), EngineError> {
        let id = id.to_owned();
        self.db(move |s| s.set_restart_state(&id, state.as_ref()))
            .await
    }

    /// Starts instance `id` again after `delay` (replacing a timer it had).
    fn arm_restart(self: &Arc<Self>, id: &str, delay: Duration) {
        let token = self.restart_timers.next.fetch_add(1, Ordering::Relaxed);
        let mut armed = lock(&self.restart_timers.armed);
        let task = tokio::spawn({
            let (engine, id) = (self.clone(), id.to_owned());
            async move {
                tokio::time::sleep(delay).await;
                engine.restart_due(&id, token).await;
            }
        });
        if let Some((_, old)) = armed.insert(id.to_owned(), (token, task.abort_handle())) {
            old.abort();
        }
    }

    /// Whether timer `token` is still instance `id`'s pending restart.
    fn restart_armed(&self, id: &str, token: u64) -> bool {
        lock(&self.restart_timers.armed)
            .get(id)
            .is_some_and(|(t, _)| *t == token)
    }

    /// Cancels instance `slot`'s pending restart and forgets where its policy stood (an
    /// explicit stop, start or rm). The caller holds its operation lock.
    pub(crate) async fn cancel_restart(&self, slot: &Arc<Slot>) {
        let timer = lock(&self.restart_timers.armed).remove(&slot.id);
        if let Some((_, task)) = timer {
            task.abort();
        }
        let id = slot.id.clone();
        let had = self
            .db(move |s| Ok(s.instance_by_id(&id)?.restart_state.is_some()))
            .await
            .unwrap_or(false);
        if had && let Err(e) = self.save_restart_state(&slot.id, None).await {
            tracing::error!(instance = %slot.name, "cannot clear the restart policy's state: {e}");
        }
    }

    /// The timer of instance `id`'s pending restart went off: start it, unless something
    /// else did or it was cancelled meanwhile.
    async fn restart_due(self: &Arc<Self>, id: &str, token: u64) {
        for _ in 0..BUSY_TRIES {
            let Some(slot) = lock(&self.slots).by_id(id) else {
                return;
            };
            let guard = match slot.acquire("restart (policy)").await {
                Ok(g) => g,
                Err(_) => {
                    // Busy with an action of its own: tried again shortly.
                    tokio::time::sleep(BUSY_RETRY).await;
                    continue;
                }
            };
            if !self.restart_armed(id, token) {
                return; // cancelled while it waited for the lock
            }
            self.settle(&slot).await;
            let result = if slot.state() == InstanceState::Stopped {
                let max = self.config.log_max_bytes;
                match crate::inject("restart-policy:start") {
                    Ok(()) => {
                        self.start_locked(&slot, InitStdio::Log { max_bytes: max }, false)
                            .await
                    }
                    Err(e) => Err(e),
                }
            } else {
                Ok(()) // started by someone else meanwhile
            };
            let i = id.to_owned();
            let current = self.db(move |s| s.instance_by_id(&i)).await;
            if let Ok(rec) = current {
                let mut state = rec.restart_state.unwrap_or_default();
                state.next_at = None;
                if let Err(e) = &result {
                    state.gave_up = Some(format!(
                        "the start failed: {}",
                        mayfly_driver::error_chain(e)
                    ));
                    tracing::warn!(instance = %rec.name, "restart policy: {}", state.gave_up.as_deref().unwrap_or_default());
                }
                // Only if no newer run's end armed a new restart meanwhile.
                if self.restart_armed(id, token)
                    && let Err(e) = self.save_restart_state(id, Some(state)).await
                {
                    tracing::error!(instance = %rec.name, "cannot record the restart: {e}");
                }
            }
            let mut armed = lock(&self.restart_timers.armed);
            if armed.get(id).is_some_and(|(t, _)| *t == token) {
                armed.remove(id);
            }
            drop(armed);
            drop(guard);
            return;
        }
        tracing::warn!(instance = %id, "restart policy: the instance stayed busy; not restarted");
    }

    /// Re-arms the restarts that were pending when the last daemon ended (at start-up).
    pub(crate) async fn rearm_restarts(self: &Arc<Self>) {
        let all = match self.db(|s| s.instances()).await {
            Ok(all) => all,
            Err(e) => {
                tracing::error!("cannot re-arm pending restarts: {e}");
                return;
            }
        };
        let now = mayfly_store::now();
        for rec in all {
            let Some(at) = rec.restart_state.as_ref().and_then(|s| s.next_at) else {
                continue;
            };
            if rec.config.restart.is_no() {
                continue;
            }
            // Already re-armed by this daemon's reconcile (a run that ended while it was down).
            if lock(&self.restart_timers.armed).contains_key(&rec.id) {
                continue;
            }
            let delay = Duration::from_secs(u64::try_from(at - now).unwrap_or(0));
            tracing::info!(instance = %rec.name, "restart policy: a restart is pending, due in {delay:?}");
            self.arm_restart(&rec.id, delay);
        }
    }

    /// What `info` shows of `rec`'s restart policy.
    pub(crate) fn restart_info(&self, rec: &InstanceRecord) -> Option<mayfly_api::RestartInfo> {
        if rec.config.restart.is_no() {
            return None;
        }
        let state = rec.restart_state.clone().unwrap_or_default();
        Some(mayfly_api::RestartInfo {
            restarts: state.restarts,
            next_attempt: state.next_at.map(crate::rfc3339),
            gave_up: state.gave_up,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Duration = Duration::from_secs(1);

    fn restart(d: &Decision) -> (Duration, u32) {
        match d {
            Decision::Restart { delay, state } => (*delay, state.restarts),
            other => panic!("not a restart: {other:?}"),
        }
    }

    #[test]
    fn on_failure_restarts_failures_only() {
        let p = RestartPolicy::OnFailure { max: None };
        let d = decide(p, Some(Ending::Exited), Some(3), None, Some(1), 100, B);
        assert_eq!(restart(&d), (B, 1));
        let Decision::Restart { state, .. } = d else {
            unreachable!()
        };
        assert_eq!(state.next_at, Some(101));
        assert!(matches!(
            decide(p, Some(Ending::Signalled), None, None, None, 0, B),
            Decision::Restart { .. }
        ));
        for ending in [
            Ending::Stopped,
            Ending::Killed,
            Ending::Halted,
            Ending::Rebooted,
        ] {
            assert_eq!(
                decide(p, Some(ending), None, None, None, 0, B),
                Decision::Clear,
                "{ending:?}"
            );
        }
        assert_eq!(
            decide(p, Some(Ending::Exited), Some(0), None, None, 0, B),
            Decision::Clear
        );
        assert_eq!(
            decide(
                RestartPolicy::No,
                Some(Ending::Exited),
                Some(1),
                None,
                None,
                0,
                B
            ),
            Decision::Nothing
        );
    }

    #[test]
    fn always_restarts_any_end_not_asked_for() {
        let p = RestartPolicy::Always;
        for (ending, code) in [
            (Ending::Exited, Some(0)),
            (Ending::Exited, Some(1)),
            (Ending::Halted, None),
            (Ending::Signalled, None),
        ] {
            assert!(matches!(
                decide(p, Some(ending), code, None, None, 0, B),
                Decision::Restart { .. }
            ));
        }
        for ending in [Ending::Stopped, Ending::Killed] {
            assert_eq!(
                decide(p, Some(ending), None, None, None, 0, B),
                Decision::Clear
            );
        }
    }

    #[test]
    fn back_off_doubles_up_to_the_maximum_and_a_long_run_resets_it() {
        let p = RestartPolicy::Always;
        let mut prev = None;
        let mut delays = Vec::new();
        for _ in 0..12 {
            let d = decide(
                p,
                Some(Ending::Exited),
                Some(1),
                prev.as_ref(),
                Some(0),
                0,
                B,
            );
            let Decision::Restart { delay, state } = d else {
                unreachable!()
            };
            delays.push(delay.as_secs());
            prev = Some(state);
        }
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        let d = decide(
            p,
            Some(Ending::Exited),
            Some(1),
            prev.as_ref(),
            Some(STABLE_RUN),
            0,
            B,
        );
        assert_eq!(restart(&d), (B, 1));
        assert_eq!(backoff(B, 1000), BACKOFF_MAX);
    }

    #[test]
    fn on_failure_n_gives_up_after_n_restarts_in_a_row() {
        let p = RestartPolicy::OnFailure { max: Some(2) };
        let mut prev = None;
        for n in 1..=2 {
            let d = decide(
                p,
                Some(Ending::Exited),
                Some(1),
                prev.as_ref(),
                Some(0),
                0,
                B,
            );
            assert_eq!(restart(&d).1, n);
            let Decision::Restart { state, .. } = d else {
                unreachable!()
            };
            prev = Some(state);
        }
        let d = decide(
            p,
            Some(Ending::Exited),
            Some(1),
            prev.as_ref(),
            Some(0),
            0,
            B,
        );
        let Decision::GiveUp(state) = d else {
            panic!("{d:?}")
        };
        assert!(state.gave_up.unwrap().contains("on-failure:2"));
        assert_eq!(state.next_at, None);
    }
}

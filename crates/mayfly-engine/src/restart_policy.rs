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
    /// Set once start-up's own work (interrupted rollouts put back, interrupted restarts
    /// started) is done: no timer starts an instance before (see [`Engine::start_timers`]).
    ready: std::sync::atomic::AtomicBool,
    ready_now: tokio::sync::Notify,
}

impl RestartTimers {
    /// Lets the timers start instances (once, at the end of start-up).
    pub(crate) fn open(&self) {
        self.ready.store(true, Ordering::SeqCst);
        self.ready_now.notify_waiters();
    }

    /// Waits until start-up's own work is done.
    async fn opened(&self) {
        loop {
            let woken = self.ready_now.notified();
            if self.ready.load(Ordering::SeqCst) {
                return;
            }
            woken.await;
        }
    }
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

/// The shortest back-off base a test may ask for (0 would be a tight loop).
const MIN_TEST_BASE: Duration = Duration::from_millis(10);

/// The back-off base of this daemon (`MAYFLY_TEST_RESTART_BACKOFF_MS`, for tests only: at
/// least [`MIN_TEST_BASE`]; its use is said once).
fn backoff_base() -> Duration {
    static BASE: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| {
        let Some(ms) = std::env::var("MAYFLY_TEST_RESTART_BACKOFF_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        else {
            return BACKOFF_BASE;
        };
        let base = Duration::from_millis(ms).max(MIN_TEST_BASE);
        tracing::warn!(
            "MAYFLY_TEST_RESTART_BACKOFF_MS is set: restart policies back off from {base:?} (for tests only)"
        );
        base
    })
}

/// Whether a failed policy start would fail again however long it waits (the template or
/// version is gone, the configuration is invalid); other failures are tried again.
fn permanent(e: &EngineError) -> bool {
    use mayfly_driver::FailureKind;
    match e {
        EngineError::Invalid { .. }
        | EngineError::TooLarge { .. }
        | EngineError::ProgramNotFound(_)
        | EngineError::ProgramNotExecutable(_)
        | EngineError::Store(mayfly_store::StoreError::NotFound { .. }) => true,
        // What the instance's own files or settings make impossible (a mount target, a
        // user, a limit the kernel refuses) stays so until someone changes them.
        EngineError::Driver(d) => matches!(
            d.failure_kind(),
            Some(
                FailureKind::BadMountTarget
                    | FailureKind::BadUser
                    | FailureKind::LimitRefused
                    | FailureKind::ProgramNotFound
                    | FailureKind::ProgramNotExecutable
            )
        ),
        _ => false,
    }
}

/// The restart state to record with the end of a run judged `decision` (`None`: leave it).
pub(crate) fn restart_write(
    decision: Option<&Decision>,
    prev: Option<&RestartState>,
) -> Option<Option<RestartState>> {
    match decision? {
        Decision::Nothing => None,
        Decision::Clear if prev.is_none() => None,
        Decision::Clear => Some(None),
        Decision::Restart { state, .. } | Decision::GiveUp(state) => Some(Some(state.clone())),
    }
}

impl Engine {
    /// Judges the end of `rec`'s current run by its restart policy (`ending`: how, as
    /// mayfly read it), before the end is recorded: the state to write goes into the same
    /// transaction as the end ([`restart_write`]). `None`: nothing to judge (no policy, or
    /// no run left in the catalogue: a second report of a run settled already, as at
    /// start-up, when the forker's state and its event both tell of it).
    pub(crate) fn judge_end(
        &self,
        rec: &InstanceRecord,
        status: Option<ExitStatus>,
        ending: Option<Ending>,
        now: i64,
    ) -> Option<Decision> {
        let run = rec.run.as_ref()?;
        if rec.config.restart.is_no() {
            return None;
        }
        if rec.restart_state.as_ref().is_some_and(|s| s.stop_requested) {
            // Asked to stop, maybe by a daemon that died before it saw the end.
            return Some(Decision::Clear);
        }
        // How long the init ran: a slow user-data script before it is no stable run.
        let began =
            crate::user_data::init_began(&self.layout.instance_dir(&rec.id), run.started_at);
        Some(decide(
            rec.config.restart,
            ending,
            status.map(|s| s.code),
            rec.restart_state.as_ref(),
            Some(began.map_or(0, |b| now - b)),
            now,
            backoff_base(),
        ))
    }

    /// Carries out `decision` on instance `slot` once the end is recorded: arms the timer.
    pub(crate) fn follow_decision(self: &Arc<Self>, slot: &Arc<Slot>, decision: Decision) {
        match decision {
            Decision::Restart { delay, state } => {
                tracing::info!(
                    instance = %slot.name,
                    "restart policy: starting it again in {delay:?} (restart {} in a row)",
                    state.restarts
                );
                self.arm_restart(&slot.id, delay);
            }
            Decision::GiveUp(state) => {
                tracing::warn!(
                    instance = %slot.name,
                    "restart policy: giving up: {}",
                    state.gave_up.as_deref().unwrap_or_default()
                );
            }
            _ => {}
        }
    }

    /// Forgets a stop request of instance `id` whose stop failed (its run goes on).
    pub(crate) async fn clear_stop_requested(&self, id: &str) {
        let id = id.to_owned();
        let _ = self
            .db(move |s| match s.instance_by_id(&id)?.restart_state {
                Some(mut st) if st.stop_requested => {
                    st.stop_requested = false;
                    s.set_restart_state(&id, Some(&st))
                }
                _ => Ok(()),
            })
            .await;
    }

    /// Records that instance `id` is being stopped on request (before its stop signal), so
    /// that its end is never restarted by the policy, even by the next daemon.
    pub(crate) async fn note_stop_requested(&self, id: &str) {
        let id = id.to_owned();
        let result = self
            .db(move |s| {
                let rec = s.instance_by_id(&id)?;
                if rec.config.restart.is_no() || rec.run.is_none() {
                    return Ok(());
                }
                let mut state = rec.restart_state.unwrap_or_default();
                if state.stop_requested {
                    return Ok(());
                }
                state.stop_requested = true;
                s.set_restart_state(&id, Some(&state))
            })
            .await;
        if let Err(e) = result {
            tracing::error!("cannot record the stop request for the restart policy: {e}");
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
                engine.restart_timers.opened().await;
                crate::events::with_actor(
                    crate::events::RESTART_POLICY_ACTOR.to_owned(),
                    engine.restart_due(&id, token),
                )
                .await;
            }
        });
        if let Some((_, old)) = armed.insert(id.to_owned(), (token, task.abort_handle())) {
            old.abort();
        }
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
        {
            let Some(slot) = lock(&self.slots).by_id(id) else {
                return;
            };
            // Busy with an action of its own (a long snapshot, a stop): waits for it; a stop
            // or rm cancels this task (and its wait) through the timer table.
            let guard = slot.acquire_wait("restart (policy)").await;
            {
                // Ours now: a run settled below that arms a new restart must not abort
                // this very task (it would be cut off at its next await).
                let mut armed = lock(&self.restart_timers.armed);
                if armed.get(id).is_none_or(|(t, _)| *t != token) {
                    return; // cancelled while it waited for the lock
                }
                armed.remove(id);
            }
            // Under the lock, the catalogue has the last word: a stop in between (or at
            // start-up, before this timer was re-armed) cleared the pending attempt.
            let i = id.to_owned();
            let pending = self
                .db(move |s| s.instance_by_id(&i))
                .await
                .ok()
                .and_then(|r| r.restart_state)
                .is_some_and(|s| s.next_at.is_some() && !s.stop_requested);
            if !pending {
                return;
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
            self.emit(
                crate::events::Ev::new("restart_policy.restart")
                    .on("instance", &slot.name)
                    .by(crate::events::RESTART_POLICY_ACTOR)
                    .result(&result),
            );
            let i = id.to_owned();
            let current = self.db(move |s| s.instance_by_id(&i)).await;
            // Only if no newer run's end armed a new restart meanwhile.
            let rearmed = lock(&self.restart_timers.armed).contains_key(id);
            if let Ok(rec) = current
                && !rearmed
            {
                let mut state = rec.restart_state.unwrap_or_default();
                state.next_at = None;
                let mut retry = None;
                if let Err(e) = &result {
                    let why = mayfly_driver::error_chain(e);
                    if permanent(e) {
                        state.gave_up = Some(format!("the start failed for good: {why}"));
                    } else if let RestartPolicy::OnFailure { max: Some(max) } = rec.config.restart
                        && state.restarts >= max
                    {
                        state.gave_up = Some(format!(
                            "{max} attempt(s) in a row failed (on-failure:{max}); the last start: {why}"
                        ));
                    } else {
                        // Perhaps passing (admission, the network): tried again later, each
                        // failed attempt counting as a restart (the back-off grows).
                        state.restarts = state.restarts.saturating_add(1);
                        let delay = backoff(backoff_base(), state.restarts);
                        let secs = i64::try_from(delay.as_secs().max(1)).unwrap_or(i64::MAX);
                        state.next_at = Some(mayfly_store::now().saturating_add(secs));
                        tracing::warn!(instance = %rec.name, "restart policy: the start failed ({why}); trying again in {delay:?}");
                        retry = Some(delay);
                    }
                    if let Some(g) = &state.gave_up {
                        tracing::warn!(instance = %rec.name, "restart policy: {g}");
                    }
                }
                if let Err(e) = self.save_restart_state(id, Some(state)).await {
                    tracing::error!(instance = %rec.name, "cannot record the restart: {e}");
                } else if let Some(delay) = retry {
                    self.arm_restart(id, delay);
                }
            }
            drop(guard);
        }
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
    fn only_failures_that_would_recur_end_the_attempts() {
        assert!(permanent(&EngineError::invalid("bad", "fix it")));
        assert!(permanent(&EngineError::ProgramNotFound("x".into())));
        assert!(!permanent(&EngineError::Internal("injected".into())));
        assert!(!permanent(&EngineError::Unavailable("no memory".into())));
        // What the instance's own files or settings make impossible stays so.
        let driver = |kind| {
            EngineError::Driver(mayfly_driver::DriverError::Failed(
                mayfly_driver::protocol::Failure {
                    kind,
                    message: "x".into(),
                },
            ))
        };
        use mayfly_driver::FailureKind;
        for kind in [
            FailureKind::BadMountTarget,
            FailureKind::BadUser,
            FailureKind::LimitRefused,
        ] {
            assert!(permanent(&driver(kind)), "{kind:?}");
        }
        assert!(!permanent(&driver(FailureKind::TimedOut)));
        assert!(!permanent(&driver(FailureKind::Other)));
    }

    #[test]
    fn a_stop_request_or_a_settled_run_is_not_judged_again() {
        let d = Decision::Clear;
        assert_eq!(restart_write(Some(&d), None), None);
        let prev = RestartState {
            restarts: 2,
            ..Default::default()
        };
        assert_eq!(restart_write(Some(&d), Some(&prev)), Some(None));
        assert_eq!(restart_write(None, Some(&prev)), None);
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

//! Schedules: reset, restart or snapshot an instance at the times of a cron expression.
//!
//! Expressions have 5 fields (minute hour day-of-month month day-of-week, parsed by
//! `croner`), in the host's local time; `HH:MM` means every day at that time. One task (the
//! scheduler) sleeps until the next due time (at most [`MAX_SLEEP`] at once, and woken when a
//! schedule is added) and runs what is due through the engine's own actions. A schedule is
//! due when its next occurrence after its last run (or its creation) has passed: a run
//! missed while no daemon ran is run once at start-up, not once per missed occurrence. An
//! instance busy with another action is tried again shortly ([`BUSY_RETRY`]); other failures
//! are recorded (`last_error`) and the schedule goes on.
//!
//! "Now" comes from a [`Clock`]: the real one, or for tests only the file named by
//! `MAYFLY_TEST_CLOCK` (Unix seconds or RFC 3339), re-read every [`TEST_POLL`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Local, TimeZone};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use mayfly_api::{CreateSchedule, InstanceState, ScheduleAction, ScheduleInfo, StopRequest};
use mayfly_store::ScheduleRecord;

use crate::events::Ev;
use crate::{Engine, EngineError, lock};

/// The longest sleep of the scheduler with the real clock.
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// How often the scheduler re-reads a test clock.
const TEST_POLL: Duration = Duration::from_millis(100);
/// How soon a schedule whose instance was busy is tried again.
const BUSY_RETRY: Duration = Duration::from_secs(5);
/// The longest cron expression accepted.
const MAX_CRON_LEN: usize = 128;
/// Most scheduled actions running at once.
const MAX_RUNNING: usize = 4;
/// Most snapshots a schedule may keep.
const MAX_KEEP: u32 = 1000;

/// Where the engine's "now" comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Clock {
    /// The system's clock.
    Real,
    /// Tests only: the time written in this file.
    File(PathBuf),
}

impl Clock {
    /// The real clock, or the test clock of `MAYFLY_TEST_CLOCK` (said once, at start-up).
    pub(crate) fn from_env() -> Clock {
        match std::env::var_os("MAYFLY_TEST_CLOCK") {
            Some(path) if !path.is_empty() => {
                let path = PathBuf::from(path);
                match trusted(&path) {
                    Ok(()) => tracing::warn!(
                        "MAYFLY_TEST_CLOCK is set: schedules follow the time in {} (for tests only)",
                        path.display()
                    ),
                    Err(why) => tracing::error!(
                        "MAYFLY_TEST_CLOCK {} is not used ({why}): schedules follow the real time",
                        path.display()
                    ),
                }
                Clock::File(path)
            }
            _ => Clock::Real,
        }
    }

    /// Now, in Unix seconds. A test clock that cannot be read, or that anybody but root
    /// could have written, gives the real time (said once).
    pub(crate) fn now(&self) -> i64 {
        static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        match self {
            Clock::Real => mayfly_store::now(),
            Clock::File(path) => match trusted(path).and_then(|()| {
                std::fs::read_to_string(path)
                    .ok()
                    .and_then(|s| parse_time(s.trim()))
                    .ok_or_else(|| "unreadable".to_owned())
            }) {
                Ok(t) => t,
                Err(why) => {
                    if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                        tracing::warn!(
                            "test clock {}: {why}: real time (said once)",
                            path.display()
                        );
                    }
                    mayfly_store::now()
                }
            },
        }
    }

    fn poll(&self) -> Duration {
        match self {
            Clock::Real => MAX_SLEEP,
            Clock::File(_) => TEST_POLL,
        }
    }
}

/// Whether the test clock at `path` (and its directory) can only have been written by root:
/// otherwise any local user could fire resets by writing a time into it.
fn trusted(path: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    for p in [path, dir] {
        let m = std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
        if m.uid() != 0 || m.mode() & 0o022 != 0 {
            return Err(format!(
                "{} must be owned by root and not group- or world-writable",
                p.display()
            ));
        }
    }
    Ok(())
}

/// Unix seconds or RFC 3339.
fn parse_time(s: &str) -> Option<i64> {
    s.parse::<i64>()
        .ok()
        .or_else(|| DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp()))
}

/// Parses a 5-field cron expression (or `HH:MM`), with croner's reason when it is not one.
pub(crate) fn parse_cron(expr: &str) -> Result<Cron, EngineError> {
    let parser = CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build();
    parser.parse(expr).map_err(|e| {
        EngineError::invalid(
            format!("invalid cron expression `{expr}`: {e}"),
            "use 5 fields, minute hour day-of-month month day-of-week, e.g. `0 3 * * *` (every day at 03:00) or `*/15 * * * *`; or HH:MM for every day at that time",
        )
    })
}

/// The cron expression a schedule is stored with: `HH:MM` becomes a daily one; anything
/// else must parse.
pub(crate) fn normalize(expr: &str, now: i64) -> Result<String, EngineError> {
    let expr = expr.trim();
    if expr.len() > MAX_CRON_LEN {
        return Err(EngineError::invalid(
            format!(
                "the cron expression is {} bytes long: at most {MAX_CRON_LEN}",
                expr.len()
            ),
            "use 5 fields, minute hour day-of-month month day-of-week, e.g. `0 3 * * *`",
        ));
    }
    if expr.contains(':') {
        return daily_at(expr);
    }
    let cron = parse_cron(expr)?;
    if next_after(&cron, now).is_none() {
        return Err(EngineError::invalid(
            format!("the cron expression `{expr}` never comes round (no such date)"),
            "check the day of the month against the month, e.g. `0 0 28 2 *` rather than `0 0 30 2 *`",
        ));
    }
    Ok(expr.to_owned())
}

/// Refuses `--reset-at` at the launch of an instance of `mode` (ephemeral: it would never
/// be stopped to be reset, only deleted).
pub(crate) fn check_mode(mode: mayfly_api::Mode, reset_at: bool) -> Result<(), EngineError> {
    if mode != mayfly_api::Mode::Ephemeral || !reset_at {
        return Ok(());
    }
    Err(EngineError::invalid(
        "an ephemeral instance is deleted when it stops: it cannot be reset on a schedule",
        "leave --reset-at out, or launch it transient or persistent",
    ))
}

/// Turns `--reset-at HH:MM` into the cron expression of a daily schedule.
pub(crate) fn daily_at(time: &str) -> Result<String, EngineError> {
    let bad = || {
        EngineError::invalid(
            format!("invalid time of day `{time}`"),
            "use HH:MM in 24-hour local time, e.g. `03:00` or `23:30`",
        )
    };
    let (h, m) = time.trim().split_once(':').ok_or_else(bad)?;
    let digits = |s: &str| !s.is_empty() && s.len() <= 2 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(h) || m.len() != 2 || !digits(m) {
        return Err(bad());
    }
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 23 || m > 59 {
        return Err(bad());
    }
    Ok(format!("{m} {h} * * *"))
}

fn local(secs: i64) -> Option<DateTime<Local>> {
    Local.timestamp_opt(secs, 0).earliest()
}

/// The first time of `cron` after `after` (Unix seconds), if any.
pub(crate) fn next_after(cron: &Cron, after: i64) -> Option<i64> {
    let t = local(after)?;
    cron.find_next_occurrence(&t, false)
        .ok()
        .map(|t| t.timestamp())
}

/// When schedule `r` is due next (Unix seconds), the clock reading `now`: the first
/// occurrence after its last run, or after its creation when it never ran; if the clock was
/// set back before that, after `now` (it would otherwise wait for the clock to catch up).
pub(crate) fn due_at(r: &ScheduleRecord, now: i64) -> Option<i64> {
    let cron = parse_cron(&r.cron).ok()?;
    next_after(&cron, r.last_run.unwrap_or(r.created_at).min(now))
}

/// The name of the snapshot schedule `id` makes at `at` (UTC: local stamps repeat when the
/// clocks go back).
pub(crate) fn snapshot_name(id: u64, at: i64) -> String {
    let stamp = chrono::Utc
        .timestamp_opt(at, 0)
        .single()
        .map_or_else(|| at.to_string(), |t| t.format("%Y%m%d-%H%M").to_string());
    format!("sched-{id}-{stamp}")
}

/// The scheduler's run-time state.
#[derive(Debug)]
pub(crate) struct Scheduler {
    /// Told when a schedule is added or removed.
    pub(crate) wake: tokio::sync::Notify,
    /// Schedules running now, and those whose instance was busy: not before this instant.
    held: Mutex<HashMap<u64, Option<Instant>>>,
    /// Bounds the scheduled actions running at once.
    running: tokio::sync::Semaphore,
    /// The clock was seen going back (said once).
    went_back: std::sync::atomic::AtomicBool,
}

impl Default for Scheduler {
    fn default() -> Self {
        Scheduler {
            wake: tokio::sync::Notify::new(),
            held: Mutex::default(),
            running: tokio::sync::Semaphore::new(MAX_RUNNING),
            went_back: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

fn info_of(r: &ScheduleRecord, now: i64) -> ScheduleInfo {
    ScheduleInfo {
        id: r.id,
        instance: r.instance.clone(),
        action: r.action,
        cron: r.cron.clone(),
        keep: r.keep,
        created_at: crate::rfc3339(r.created_at),
        last_run: r.last_run.map(crate::rfc3339),
        next_run: due_at(r, now).map(crate::rfc3339),
        last_error: r.last_error.clone(),
    }
}

impl Engine {
    /// Starts the scheduler and re-arms pending restarts (once, at daemon start).
    pub(crate) fn start_timers(self: &Arc<Self>) {
        self.restart_timers.open();
        tokio::spawn(self.clone().scheduler_loop());
        let engine = self.clone();
        tokio::spawn(async move { engine.rearm_restarts().await });
    }

    /// Adds a schedule to instance `name`.
    pub(crate) async fn add_schedule_unrecorded(
        &self,
        name: &str,
        req: CreateSchedule,
    ) -> Result<ScheduleInfo, EngineError> {
        let now = self.clock.now();
        let cron = normalize(&req.cron, now)?;
        match (req.action, req.keep) {
            (ScheduleAction::Snapshot, Some(k)) if k == 0 || k > MAX_KEEP => {
                return Err(EngineError::invalid(
                    format!("--keep {k} is out of range"),
                    format!(
                        "keep between 1 and {MAX_KEEP} snapshots, or leave --keep out to keep them all"
                    ),
                ));
            }
            (ScheduleAction::Reset | ScheduleAction::Restart, Some(_)) => {
                return Err(EngineError::invalid(
                    format!(
                        "--keep applies to snapshot schedules only, not to {}",
                        req.action
                    ),
                    "leave --keep out",
                ));
            }
            _ => {}
        }
        let n = name.to_owned();
        let rec = self.db(move |s| s.instance(&n)).await?;
        if rec.mode == mayfly_api::Mode::Ephemeral {
            return Err(EngineError::invalid(
                format!(
                    "instance `{name}` is ephemeral: it is deleted when it stops, so it cannot be reset, restarted or snapshotted on a schedule"
                ),
                "launch it transient or persistent to schedule actions on it",
            ));
        }
        let (id, action, keep) = (rec.id.clone(), req.action, req.keep);
        let r = self
            .db(move |s| {
                let sid = s.add_schedule_at(&id, action, &cron, keep, now)?;
                s.schedule(sid)
            })
            .await?;
        self.scheduler.wake.notify_one();
        Ok(info_of(&r, now))
    }

    /// Every schedule, or instance `name`'s.
    pub async fn list_schedules(
        &self,
        name: Option<&str>,
    ) -> Result<Vec<ScheduleInfo>, EngineError> {
        let id = match name {
            Some(n) => {
                let n = n.to_owned();
                Some(self.db(move |s| s.instance(&n)).await?.id)
            }
            None => None,
        };
        let rows = self.db(move |s| s.schedules(id.as_deref())).await?;
        let now = self.clock.now();
        Ok(rows.iter().map(|r| info_of(r, now)).collect())
    }

    /// Removes schedule `id` of instance `name` (its snapshots stay).
    pub(crate) async fn remove_schedule_unrecorded(
        &self,
        name: &str,
        id: u64,
    ) -> Result<(), EngineError> {
        let n = name.to_owned();
        self.db(move |s| {
            let rec = s.instance(&n)?;
            s.remove_schedule(&rec.id, id)
        })
        .await
        .map_err(|e| match e {
            EngineError::Store(mayfly_store::StoreError::NotFound {
                kind: "schedule", ..
            }) => EngineError::Store(mayfly_store::StoreError::NotFound {
                kind: "schedule",
                name: format!("{id} of instance {name}"),
            }),
            other => other,
        })?;
        self.scheduler.wake.notify_one();
        Ok(())
    }

    /// The scheduler: runs due schedules until the daemon ends.
    async fn scheduler_loop(self: Arc<Self>) {
        loop {
            let wait = self.run_due().await;
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.scheduler.wake.notified() => {}
            }
        }
    }

    /// Starts every due schedule that is not running or held back; answers how long to sleep.
    async fn run_due(self: &Arc<Self>) -> Duration {
        let poll = self.clock.poll();
        let rows = match self.db(|s| s.schedules(None)).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!("scheduler: cannot read the schedules: {e}");
                return poll;
            }
        };
        let now = self.clock.now();
        let mut wait = poll;
        for r in rows {
            if r.last_run.unwrap_or(r.created_at) > now
                && !self
                    .scheduler
                    .went_back
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                tracing::warn!(
                    "the clock went back before schedule {}'s last run: its next run is counted from now (said once)",
                    r.id
                );
            }
            let Some(due) = due_at(&r, now) else { continue };
            if due > now {
                let secs = u64::try_from(due - now).unwrap_or(0);
                wait = wait.min(Duration::from_secs(secs));
                continue;
            }
            {
                let mut held = lock(&self.scheduler.held);
                match held.get(&r.id) {
                    Some(None) => continue, // running
                    Some(Some(until)) if Instant::now() < *until => {
                        wait = wait.min(until.saturating_duration_since(Instant::now()));
                        continue;
                    }
                    _ => {}
                }
                held.insert(r.id, None);
            }
            tokio::spawn(self.clone().run_schedule(r, now));
        }
        wait.max(Duration::from_millis(10))
    }

    /// Runs schedule `r`, due at clock time `now`.
    async fn run_schedule(self: Arc<Self>, r: ScheduleRecord, now: i64) {
        // At most MAX_RUNNING at once; the others wait their turn (never closed).
        let _permit = self.scheduler.running.acquire().await.ok();
        tracing::info!(instance = %r.instance, "schedule {}: {} ({})", r.id, r.action, r.cron);
        let result = crate::events::with_actor(
            crate::events::SCHEDULE_ACTOR.to_owned(),
            self.scheduled_action(&r, now),
        )
        .await;
        if let Err(EngineError::Busy { operation, .. }) = &result {
            tracing::info!(instance = %r.instance, "schedule {}: busy with `{operation}`, trying again shortly", r.id);
            let msg = format!("instance busy with `{operation}`: tried again shortly");
            let id = r.id;
            let _ = self.db(move |s| s.set_schedule_error(id, &msg)).await;
            lock(&self.scheduler.held).insert(r.id, Some(Instant::now() + BUSY_RETRY));
            self.scheduler.wake.notify_one();
            return;
        }
        self.emit(
            Ev::new("schedule.run")
                .on("instance", &r.instance)
                .by(crate::events::SCHEDULE_ACTOR)
                .details(serde_json::json!({
                    "id": r.id,
                    "action": r.action,
                    "cron": r.cron,
                }))
                .result(&result),
        );
        let error = result.err().map(|e| {
            let msg = mayfly_driver::error_chain(&e);
            tracing::warn!(instance = %r.instance, "schedule {} failed: {msg}", r.id);
            msg
        });
        // Done and not recorded yet: the next daemon runs it again (at least once).
        crate::failpoint("schedule:ran");
        let id = r.id;
        let recorded = match crate::inject("schedule:record") {
            Ok(()) => {
                self.db(move |s| s.set_schedule_run(id, now, error.as_deref()))
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = recorded {
            // Gone with its instance, or the catalogue failed: not run again before a while
            // (it would otherwise be due again at once).
            tracing::error!("schedule {id}: cannot record its run: {e}");
            lock(&self.scheduler.held).insert(id, Some(Instant::now() + BUSY_RETRY));
            self.scheduler.wake.notify_one();
            return;
        }
        lock(&self.scheduler.held).remove(&r.id);
        self.scheduler.wake.notify_one();
    }

    /// The action of schedule `r` (its instance by id: a rename keeps its schedules).
    async fn scheduled_action(
        self: &Arc<Self>,
        r: &ScheduleRecord,
        now: i64,
    ) -> Result<(), EngineError> {
        let (name, state) = lock(&self.slots)
            .by_id(&r.instance_id)
            .map(|s| (s.name.clone(), lock(&s.rt).shown_state()))
            .ok_or_else(|| {
                EngineError::Store(mayfly_store::StoreError::NotFound {
                    kind: "instance",
                    name: r.instance.clone(),
                })
            })?;
        crate::inject("schedule:action")?;
        // A pause or a stop is the user's: a schedule does not undo it.
        match (r.action, state) {
            (ScheduleAction::Reset | ScheduleAction::Restart, InstanceState::Paused) => {
                return Err(EngineError::invalid(
                    format!("skipped the scheduled {}: `{name}` is paused", r.action),
                    format!("`mayfly resume {name}` lets the next run happen"),
                ));
            }
            (ScheduleAction::Restart, InstanceState::Stopped) => {
                return Err(EngineError::invalid(
                    format!("skipped the scheduled restart: `{name}` is stopped"),
                    format!(
                        "a scheduled restart leaves a stopped instance stopped; `mayfly start {name}`"
                    ),
                ));
            }
            _ => {}
        }
        match r.action {
            ScheduleAction::Reset => {
                self.reset_instance(&name, StopRequest::default()).await?;
            }
            ScheduleAction::Restart => {
                self.restart_instance(&name, StopRequest::default()).await?;
            }
            ScheduleAction::Snapshot => {
                let snap = snapshot_name(r.id, now);
                self.snapshot_as(&name, Some(snap.clone())).await?;
                self.emit(Ev::new("snapshot.create").on("snapshot", &format!("{name}/{snap}")));
                if let Some(keep) = r.keep {
                    self.prune_snapshots(&name, r.id, keep).await?;
                }
            }
        }
        Ok(())
    }

    /// Removes the oldest snapshots schedule `id` made beyond the newest `keep` (by their
    /// creation, not their names: only names `sched-<id>-…`, which users cannot choose).
    async fn prune_snapshots(&self, name: &str, id: u64, keep: u32) -> Result<(), EngineError> {
        let prefix = format!("sched-{id}-");
        let n = name.to_owned();
        let rec = self.db(move |s| s.instance(&n)).await?;
        // Oldest first (created_at, then insertion order).
        let mine: Vec<String> = self
            .db(move |s| s.snapshots(&rec.id))
            .await?
            .into_iter()
            .map(|s| s.name)
            .filter(|n| n.starts_with(&prefix))
            .collect();
        let extra = mine.len().saturating_sub(keep as usize);
        for old in &mine[..extra] {
            self.remove_snapshot(name, old).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        Local
            .from_local_datetime(
                &chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap(),
            )
            .earliest()
            .unwrap()
            .timestamp()
    }

    fn rec(cron: &str, created: i64, last_run: Option<i64>) -> ScheduleRecord {
        ScheduleRecord {
            id: 7,
            instance_id: "i".into(),
            instance: "web".into(),
            action: ScheduleAction::Reset,
            cron: cron.into(),
            keep: None,
            created_at: created,
            last_run,
            last_error: None,
        }
    }

    #[test]
    fn cron_expressions_have_five_fields_and_bad_ones_say_why() {
        assert!(parse_cron("0 3 * * *").is_ok());
        assert!(parse_cron("*/15 * * * 1-5").is_ok());
        for bad in [
            "0 0 3 * * *",
            "0 3 * *",
            "61 * * * *",
            "x * * * *",
            "",
            "0 3 * * * 2030",
        ] {
            let e = parse_cron(bad).unwrap_err().to_string();
            assert!(e.contains("invalid cron expression"), "{bad}: {e}");
        }
        assert!(parse_cron("@daily").is_ok());
        let now = at("2030-01-01 12:00");
        assert!(normalize("nonsense", now).is_err());
        assert_eq!(normalize(" 03:00 ", now).unwrap(), "0 3 * * *");
        let never = normalize("0 0 30 2 *", now).unwrap_err().to_string();
        assert!(never.contains("never comes round"), "{never}");
        let long = format!("0 0 * * {}", "1,".repeat(80) + "2");
        assert!(
            normalize(&long, now)
                .unwrap_err()
                .to_string()
                .contains("at most 128")
        );
    }

    #[test]
    fn daily_at_takes_hh_mm() {
        assert_eq!(daily_at("03:00").unwrap(), "0 3 * * *");
        assert_eq!(daily_at("23:59").unwrap(), "59 23 * * *");
        assert_eq!(daily_at("7:05").unwrap(), "5 7 * * *");
        for bad in [
            "24:00", "12:60", "3", "03:0", "a:bc", "03:00:00", "-1:00", "",
        ] {
            assert!(daily_at(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_schedule_is_due_after_its_last_run_once_however_many_were_missed() {
        let created = at("2030-01-01 12:00");
        let due_at = |r: &ScheduleRecord| super::due_at(r, at("2031-01-01 00:00"));
        let r = rec("0 3 * * *", created, None);
        assert_eq!(due_at(&r), Some(at("2030-01-02 03:00")));
        // Ran on the 2nd: next on the 3rd.
        let r = rec("0 3 * * *", created, Some(at("2030-01-02 03:00")));
        assert_eq!(due_at(&r), Some(at("2030-01-03 03:00")));
        // The daemon was down from the 3rd to the 10th: due (once) at the 3rd; after that
        // run, recorded at the start-up time, the next is on the 11th.
        let r = rec("0 3 * * *", created, Some(at("2030-01-10 09:00")));
        assert_eq!(due_at(&r), Some(at("2030-01-11 03:00")));
        let hourly = rec("0 * * * *", created, Some(at("2030-01-01 12:30")));
        assert_eq!(due_at(&hourly), Some(at("2030-01-01 13:00")));
        // The clock went back a day before the last run: counted from now, not in a day.
        let back = at("2030-01-09 09:00");
        assert_eq!(super::due_at(&r, back), Some(at("2030-01-10 03:00")));
    }

    #[test]
    fn snapshot_names_carry_the_schedule_and_the_minute() {
        let utc = chrono::Utc
            .with_ymd_and_hms(2030, 2, 3, 4, 5, 0)
            .unwrap()
            .timestamp();
        assert_eq!(snapshot_name(3, utc), "sched-3-20300203-0405");
        assert!(
            mayfly_api::names::check_snapshot_name(&snapshot_name(3, at("2030-02-03 04:05")))
                .is_ok()
        );
    }

    #[test]
    fn a_test_clock_others_could_write_is_not_trusted() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let file = dir.path().join("clock");
        std::fs::write(&file, "1000").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let clock = Clock::File(file.clone());
        if rustix::process::geteuid().is_root() {
            assert_eq!(clock.now(), 1000);
        }
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(trusted(&file).unwrap_err().contains("world-writable"));
        assert_ne!(clock.now(), 1000);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(trusted(&file).is_err());
    }

    #[test]
    fn the_test_clock_reads_seconds_or_rfc3339() {
        assert_eq!(parse_time("1700000000"), Some(1_700_000_000));
        assert_eq!(parse_time("2030-01-01T00:00:00Z"), Some(1_893_456_000));
        assert_eq!(parse_time("soon"), None);
    }
}

//! The event log: every life-cycle event and audited API action, numbered in order, bounded
//! to the newest rows. `seq` is an `AUTOINCREMENT` key: SQLite keeps the highest number ever
//! used (in `sqlite_sequence`), so a number is never handed out twice, even after the rows
//! that had it were pruned or the daemon was killed.

use mayfly_api::{EventSubject, Outcome};
use rusqlite::params;

use crate::{Store, StoreError, from_json, i64_of, sql, to_json, to_u64};

/// How many events the log keeps by default (the oldest go first).
pub const EVENTS_KEPT: usize = 10_000;

/// An event to append (the log numbers it).
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// `instance.start`, `api.instance.reset`, …
    pub kind: String,
    /// What it is about.
    pub subject: Option<EventSubject>,
    /// Who caused it.
    pub actor: String,
    /// How it ended.
    pub outcome: Outcome,
    /// What the kind carries.
    pub details: serde_json::Value,
}

/// A logged event.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    /// Its number in the log.
    pub seq: u64,
    /// The event.
    pub event: NewEvent,
}

/// Which events to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only events numbered after this.
    pub after: Option<u64>,
    /// Only events at or after this time (ms since the epoch).
    pub since_ms: Option<i64>,
}

/// A row as stored, before its JSON columns are decoded.
struct Row {
    seq: i64,
    time_ms: i64,
    kind: String,
    subject_kind: Option<String>,
    subject_name: Option<String>,
    actor: String,
    outcome: String,
    details: Option<String>,
}

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        seq: r.get(0)?,
        time_ms: r.get(1)?,
        kind: r.get(2)?,
        subject_kind: r.get(3)?,
        subject_name: r.get(4)?,
        actor: r.get(5)?,
        outcome: r.get(6)?,
        details: r.get(7)?,
    })
}

impl Row {
    fn decode(self) -> Result<EventRecord, StoreError> {
        Ok(EventRecord {
            seq: to_u64(self.seq, "event number")?,
            event: NewEvent {
                time_ms: self.time_ms,
                kind: self.kind,
                subject: match (self.subject_kind, self.subject_name) {
                    (Some(kind), Some(name)) => Some(EventSubject { kind, name }),
                    _ => None,
                },
                actor: self.actor,
                outcome: from_json(&self.outcome, "event outcome")?,
                details: match self.details {
                    Some(d) => from_json(&d, "event details")?,
                    None => serde_json::Value::Null,
                },
            },
        })
    }
}

impl Store {
    /// Appends `events` in one transaction, in order, then prunes the log to its newest
    /// `keep` rows; returns them with their numbers.
    pub fn append_events(
        &mut self,
        events: Vec<NewEvent>,
        keep: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let tx = self.conn.transaction().map_err(sql("begin"))?;
        let mut out = Vec::with_capacity(events.len());
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO events (time, kind, subject_kind, subject_name, actor, outcome, details)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(sql("append event"))?;
            for event in events {
                let details = (!event.details.is_null()).then(|| to_json(&event.details));
                stmt.execute(params![
                    event.time_ms,
                    event.kind,
                    event.subject.as_ref().map(|s| s.kind.as_str()),
                    event.subject.as_ref().map(|s| s.name.as_str()),
                    event.actor,
                    to_json(&event.outcome),
                    details,
                ])
                .map_err(sql("append event"))?;
                let seq = to_u64(tx.last_insert_rowid(), "event number")?;
                out.push(EventRecord { seq, event });
            }
        }
        tx.execute(
            "DELETE FROM events WHERE seq < (SELECT seq FROM events ORDER BY seq DESC LIMIT 1 OFFSET ?1)",
            [i64_of(keep.saturating_sub(1) as u64)],
        )
        .map_err(sql("prune events"))?;
        tx.commit().map_err(sql("commit"))?;
        Ok(out)
    }

    /// At most `limit` logged events matching `filter`, oldest first.
    pub fn events(
        &self,
        filter: EventFilter,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, time, kind, subject_kind, subject_name, actor, outcome, details
                 FROM events WHERE seq > ?1 AND time >= ?2 ORDER BY seq LIMIT ?3",
            )
            .map_err(sql("read events"))?;
        let rows = stmt
            .query_map(
                params![
                    i64_of(filter.after.unwrap_or(0)),
                    filter.since_ms.unwrap_or(i64::MIN),
                    i64_of(limit as u64)
                ],
                from_row,
            )
            .map_err(sql("read events"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql("read events"))?;
        rows.into_iter().map(Row::decode).collect()
    }

    /// How many events the log holds.
    pub fn event_count(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
            .map_err(sql("count events"))?;
        to_u64(n, "event count")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: &str, time_ms: i64) -> NewEvent {
        NewEvent {
            time_ms,
            kind: kind.to_owned(),
            subject: Some(EventSubject {
                kind: "instance".to_owned(),
                name: "web".to_owned(),
            }),
            actor: "unix:uid=0".to_owned(),
            outcome: Outcome::Ok,
            details: serde_json::json!({"code": 0}),
        }
    }

    #[test]
    fn events_are_numbered_in_order_read_back_filtered_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let first = store
            .append_events(
                vec![ev("instance.create", 1000), ev("instance.start", 2000)],
                5,
            )
            .unwrap();
        assert_eq!(first[0].seq + 1, first[1].seq);
        let failed = NewEvent {
            subject: None,
            outcome: Outcome::Failed {
                code: "busy".to_owned(),
                message: "it is busy".to_owned(),
            },
            details: serde_json::Value::Null,
            ..ev("api.instance.stop", 3000)
        };
        store.append_events(vec![failed.clone()], 5).unwrap();
        let all = store.events(EventFilter::default(), 100).unwrap();
        let kinds: Vec<_> = all.iter().map(|r| r.event.kind.as_str()).collect();
        assert_eq!(
            kinds,
            ["instance.create", "instance.start", "api.instance.stop"]
        );
        assert_eq!(all[2].event, failed);
        assert_eq!(all[1].event, ev("instance.start", 2000));
        let after = store
            .events(
                EventFilter {
                    after: Some(first[0].seq),
                    since_ms: None,
                },
                100,
            )
            .unwrap();
        assert_eq!(after.len(), 2);
        let since = store
            .events(
                EventFilter {
                    after: None,
                    since_ms: Some(2500),
                },
                100,
            )
            .unwrap();
        assert_eq!(since.len(), 1);
        assert_eq!(store.events(EventFilter::default(), 2).unwrap().len(), 2);

        // Bounded: only the newest five stay, and numbers go on from the highest ever used,
        // also after a reopen.
        let many: Vec<_> = (0..7).map(|i| ev("instance.stop", 4000 + i)).collect();
        let last = store.append_events(many, 5).unwrap().last().unwrap().seq;
        assert_eq!(store.event_count().unwrap(), 5);
        let kept = store.events(EventFilter::default(), 100).unwrap();
        assert_eq!(kept.first().unwrap().seq, last - 4);
        store.conn.execute("DELETE FROM events", []).unwrap();
        drop(store);
        let mut store = Store::open(dir.path()).unwrap();
        let next = store
            .append_events(vec![ev("instance.start", 9000)], 5)
            .unwrap();
        assert_eq!(next[0].seq, last + 1, "an event number was reused");
    }
}

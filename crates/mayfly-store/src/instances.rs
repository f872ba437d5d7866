//! Instances: their settings, their runs, and their writable layers' generations.

use mayfly_api::Mode;
use rusqlite::{OptionalExtension, params};

use crate::{
    ExitRecord, ID_BASE_START, ID_RANGE, InstanceRecord, NextRun, RunRecord, Store, StoreError,
    from_json, i64_of, sql, to_json, to_u32, to_u64,
};

/// An instance row as SQLite returns it, before decoding.
struct RawInstance {
    id: String,
    name: String,
    template: String,
    pinned: Option<i64>,
    mode: String,
    config: String,
    id_base: Option<i64>,
    created_at: i64,
    run: Option<String>,
    last_exit: Option<String>,
    writable_gen: i64,
    writable_version: Option<i64>,
    next_run: Option<String>,
    layer_since: Option<i64>,
    paused: bool,
    restart_state: Option<String>,
}

impl Store {
    /// Inserts `rec`, allocating it a free user-namespace id range when `want_ids` is set.
    /// Ephemeral instances are written without waiting for the disk (`durable = false`).
    pub fn insert_instance(
        &mut self,
        rec: &mut InstanceRecord,
        want_ids: bool,
    ) -> Result<(), StoreError> {
        self.durable(rec.mode != Mode::Ephemeral)?;
        let result = (|| {
            let tx = self.conn.transaction().map_err(sql("begin"))?;
            let exists = tx
                .query_row(
                    "SELECT 1 FROM instances WHERE name = ?1",
                    [&rec.name],
                    |_| Ok(()),
                )
                .optional()
                .map_err(sql("look up instance"))?
                .is_some();
            if exists {
                return Err(StoreError::AlreadyExists {
                    kind: "instance",
                    name: rec.name.clone(),
                });
            }
            if want_ids {
                rec.id_base = Some(Self::free_id_base(&tx)?);
            }
            tx.execute(
                "INSERT INTO instances (id, name, template, pinned_version, mode, config, id_base, created_at, run, last_exit, writable_gen, writable_version, next_run, layer_since, paused, restart_state)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
                params![
                    rec.id,
                    rec.name,
                    rec.template,
                    rec.pinned_version,
                    rec.mode.as_str(),
                    to_json(&rec.config),
                    rec.id_base,
                    rec.created_at,
                    rec.run.as_ref().map(to_json),
                    rec.last_exit.as_ref().map(to_json),
                    i64_of(rec.writable_gen),
                    rec.writable_version,
                    rec.next_run.as_ref().map(to_json),
                    rec.layer_since,
                    rec.paused,
                    rec.restart_state.as_ref().map(to_json),
                ],
            )
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
                    StoreError::NotFound {
                        kind: "template",
                        name: rec.template.clone(),
                    }
                }
                e => StoreError::Sqlite {
                    context: "insert instance",
                    source: e,
                },
            })?;
            crate::networks::allocate(&tx, &rec.id, &rec.config.networks, false)?;
            crate::volumes::attach_all(&tx, &rec.id, &rec.config.volumes)?;
            tx.commit().map_err(sql("commit"))
        })();
        self.durable(true)?;
        result
    }

    fn free_id_base(tx: &rusqlite::Transaction<'_>) -> Result<u32, StoreError> {
        let mut stmt = tx
            .prepare("SELECT id_base FROM instances WHERE id_base IS NOT NULL ORDER BY id_base")
            .map_err(sql("allocate ids"))?;
        let used: Vec<i64> = stmt
            .query_map([], |r| r.get(0))
            .map_err(sql("allocate ids"))?
            .collect::<Result<_, _>>()
            .map_err(sql("allocate ids"))?;
        let mut candidate = i64::from(ID_BASE_START);
        for base in used {
            if base == candidate {
                candidate += i64::from(ID_RANGE);
            } else if base > candidate {
                break;
            }
        }
        let last_allowed = i64::from(u32::MAX) - i64::from(ID_RANGE);
        if candidate > last_allowed {
            return Err(StoreError::IdRangesExhausted);
        }
        u32::try_from(candidate).map_err(|_| StoreError::IdRangesExhausted)
    }

    fn instance_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawInstance> {
        Ok(RawInstance {
            id: r.get(0)?,
            name: r.get(1)?,
            template: r.get(2)?,
            pinned: r.get(3)?,
            mode: r.get(4)?,
            config: r.get(5)?,
            id_base: r.get(6)?,
            created_at: r.get(7)?,
            run: r.get(8)?,
            last_exit: r.get(9)?,
            writable_gen: r.get(10)?,
            writable_version: r.get(11)?,
            next_run: r.get(12)?,
            layer_since: r.get(13)?,
            paused: r.get(14)?,
            restart_state: r.get(15)?,
        })
    }

    fn decode_instance(raw: RawInstance) -> Result<InstanceRecord, StoreError> {
        Ok(InstanceRecord {
            pinned_version: raw
                .pinned
                .map(|v| to_u32(v, "pinned version"))
                .transpose()?,
            mode: raw.mode.parse().map_err(|e: String| StoreError::Corrupt {
                what: "instance mode",
                detail: e,
            })?,
            config: from_json(&raw.config, "instance config")?,
            id_base: raw.id_base.map(|v| to_u32(v, "id base")).transpose()?,
            run: raw.run.map(|s| from_json(&s, "run record")).transpose()?,
            last_exit: raw
                .last_exit
                .map(|s| from_json(&s, "exit record"))
                .transpose()?,
            writable_gen: to_u64(raw.writable_gen, "writable generation")?,
            writable_version: raw
                .writable_version
                .map(|v| to_u32(v, "writable version"))
                .transpose()?,
            next_run: raw
                .next_run
                .map(|s| from_json(&s, "next run"))
                .transpose()?,
            layer_since: raw
                .layer_since
                .map(|v| to_u32(v, "layer version"))
                .transpose()?,
            paused: raw.paused,
            restart_state: raw
                .restart_state
                .map(|s| from_json(&s, "restart state"))
                .transpose()?,
            id: raw.id,
            name: raw.name,
            template: raw.template,
            created_at: raw.created_at,
        })
    }

    const INSTANCE_COLUMNS: &'static str = "id, name, template, pinned_version, mode, config, id_base, created_at, run, last_exit, writable_gen, writable_version, next_run, layer_since, paused, restart_state";

    /// Every instance, by name.
    pub fn instances(&self) -> Result<Vec<InstanceRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {} FROM instances ORDER BY name",
                Self::INSTANCE_COLUMNS
            ))
            .map_err(sql("list instances"))?;
        let rows = stmt
            .query_map([], Self::instance_from_row)
            .map_err(sql("list instances"))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(Self::decode_instance(row.map_err(sql("list instances"))?)?);
        }
        Ok(out)
    }

    /// Instance `name`.
    pub fn instance(&self, name: &str) -> Result<InstanceRecord, StoreError> {
        let cols = self
            .conn
            .query_row(
                &format!(
                    "SELECT {} FROM instances WHERE name = ?1",
                    Self::INSTANCE_COLUMNS
                ),
                [name],
                Self::instance_from_row,
            )
            .optional()
            .map_err(sql("look up instance"))?;
        match cols {
            Some(cols) => Self::decode_instance(cols),
            None => Err(StoreError::NotFound {
                kind: "instance",
                name: name.to_owned(),
            }),
        }
    }

    /// Instance with id `id`.
    pub fn instance_by_id(&self, id: &str) -> Result<InstanceRecord, StoreError> {
        let cols = self
            .conn
            .query_row(
                &format!(
                    "SELECT {} FROM instances WHERE id = ?1",
                    Self::INSTANCE_COLUMNS
                ),
                [id],
                Self::instance_from_row,
            )
            .optional()
            .map_err(sql("look up instance"))?;
        match cols {
            Some(cols) => Self::decode_instance(cols),
            None => Err(StoreError::NotFound {
                kind: "instance",
                name: id.to_owned(),
            }),
        }
    }

    /// Records that instance `id` runs (`Some`) or stopped (`None`, with how it ended). The
    /// end of a run clears a pause.
    pub fn set_run(
        &mut self,
        id: &str,
        mode: Mode,
        run: Option<&RunRecord>,
        last_exit: Option<&ExitRecord>,
    ) -> Result<(), StoreError> {
        self.durable(mode != Mode::Ephemeral)?;
        let result = match last_exit {
            Some(exit) => self.conn.execute(
                "UPDATE instances SET run = ?2, last_exit = ?3,
                     paused = CASE WHEN ?2 IS NULL THEN 0 ELSE paused END
                 WHERE id = ?1",
                params![id, run.map(to_json), to_json(exit)],
            ),
            None => self.conn.execute(
                "UPDATE instances SET run = ?2,
                     paused = CASE WHEN ?2 IS NULL THEN 0 ELSE paused END
                 WHERE id = ?1",
                params![id, run.map(to_json)],
            ),
        };
        self.durable(true)?;
        result.map(|_| ()).map_err(sql("record instance state"))
    }

    /// Records the end of instance `id`'s run (`last_exit`) and, in the same transaction,
    /// where its restart policy now stands (`restart`: `None` leaves it as it is), so that a
    /// daemon killed in between cannot lose the restart the end calls for.
    pub fn end_run(
        &mut self,
        id: &str,
        mode: Mode,
        last_exit: Option<&ExitRecord>,
        restart: Option<Option<&crate::RestartState>>,
    ) -> Result<(), StoreError> {
        self.durable(mode != Mode::Ephemeral)?;
        let result = (|| {
            let tx = self.conn.transaction()?;
            match last_exit {
                Some(exit) => tx.execute(
                    "UPDATE instances SET run = NULL, last_exit = ?2, paused = 0 WHERE id = ?1",
                    params![id, to_json(exit)],
                )?,
                None => tx.execute(
                    "UPDATE instances SET run = NULL, paused = 0 WHERE id = ?1",
                    params![id],
                )?,
            };
            if let Some(state) = restart {
                tx.execute(
                    "UPDATE instances SET restart_state = ?2 WHERE id = ?1",
                    params![id, state.map(to_json)],
                )?;
            }
            tx.commit()
        })();
        self.durable(true)?;
        result.map_err(sql("record the end of the run"))
    }

    /// Records that instance `id` started with `run`: the writable layer is now of `run`'s
    /// template version, and the one-run settings are used up.
    pub fn record_start(
        &mut self,
        id: &str,
        mode: Mode,
        run: &RunRecord,
    ) -> Result<(), StoreError> {
        self.durable(mode != Mode::Ephemeral)?;
        // A persistent layer that already holds changes keeps the version they began on.
        let kept = mode == Mode::Persistent;
        let result = self.conn.execute(
            "UPDATE instances SET run = ?2, writable_version = ?3, next_run = NULL,
                 layer_since = CASE WHEN ?4 AND layer_since IS NOT NULL THEN layer_since ELSE ?3 END
             WHERE id = ?1",
            params![id, to_json(run), run.version, kept],
        );
        self.durable(true)?;
        result.map(|_| ()).map_err(sql("record instance start"))
    }

    /// Records whether instance `id` is paused by its user.
    pub fn set_paused(&mut self, id: &str, paused: bool) -> Result<(), StoreError> {
        let n = self
            .conn
            .execute(
                "UPDATE instances SET paused = ?2 WHERE id = ?1",
                params![id, paused],
            )
            .map_err(sql("record the pause"))?;
        if n == 0 {
            return Err(StoreError::NotFound {
                kind: "instance",
                name: id.to_owned(),
            });
        }
        Ok(())
    }

    /// Replaces instance `id`'s settings (its limits and flavor changed).
    pub fn set_instance_config(
        &mut self,
        id: &str,
        config: &crate::InstanceConfig,
    ) -> Result<(), StoreError> {
        let n = self
            .conn
            .execute(
                "UPDATE instances SET config = ?2 WHERE id = ?1",
                params![id, to_json(config)],
            )
            .map_err(sql("update instance settings"))?;
        if n == 0 {
            return Err(StoreError::NotFound {
                kind: "instance",
                name: id.to_owned(),
            });
        }
        Ok(())
    }

    /// Sets what the next start of instance `id` must do differently (its writable layer
    /// stays as it is).
    pub fn set_next_run(&mut self, id: &str, next_run: Option<&NextRun>) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE instances SET next_run = ?2 WHERE id = ?1",
                params![id, next_run.map(to_json)],
            )
            .map(|_| ())
            .map_err(sql("set the next run"))
    }

    /// Switches instance `id` to writable-layer generation `generation` (already in place on
    /// disk), made on template version `version`, with `next_run` for its next start — the one
    /// commit point of a restore. Closes `journal` in the same transaction.
    pub fn set_writable(
        &mut self,
        id: &str,
        generation: u64,
        version: Option<u32>,
        next_run: Option<&NextRun>,
        journal: Option<i64>,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction().map_err(sql("begin"))?;
        tx.execute(
            "UPDATE instances SET writable_gen = ?2, writable_version = ?3, next_run = ?4, layer_since = ?3 WHERE id = ?1",
            params![id, i64_of(generation), version, next_run.map(to_json)],
        )
        .map_err(sql("switch writable layer"))?;
        if let Some(j) = journal {
            tx.execute("DELETE FROM journal WHERE id = ?1", [j])
                .map_err(sql("close journal"))?;
        }
        tx.commit().map_err(sql("commit"))
    }

    /// Deletes instance `id`'s row, its snapshots' rows (their trees are the caller's), its
    /// interfaces (releasing their addresses) and its channels' rows.
    pub fn delete_instance(&mut self, id: &str, mode: Mode) -> Result<(), StoreError> {
        self.durable(mode != Mode::Ephemeral)?;
        let result = (|| {
            let tx = self.conn.transaction().map_err(sql("begin"))?;
            tx.execute("DELETE FROM snapshots WHERE instance_id = ?1", [id])
                .map_err(sql("delete snapshots"))?;
            tx.execute("DELETE FROM interfaces WHERE owner = ?1", [id])
                .map_err(sql("release interfaces"))?;
            tx.execute(
                "DELETE FROM channels WHERE server = ?1 OR client = ?1",
                [id],
            )
            .map_err(sql("delete channels"))?;
            crate::volumes::detach_all(&tx, id)?;
            tx.execute("DELETE FROM schedules WHERE instance_id = ?1", [id])
                .map_err(sql("delete schedules"))?;
            tx.execute("DELETE FROM instances WHERE id = ?1", [id])
                .map_err(sql("delete instance"))?;
            tx.commit().map_err(sql("commit"))
        })();
        self.durable(true)?;
        result
    }

    /// Renames instance `id` to `new_name`, refusing a taken name.
    pub fn rename_instance(&mut self, id: &str, new_name: &str) -> Result<(), StoreError> {
        let tx = self.conn.transaction().map_err(sql("begin"))?;
        let taken = tx
            .query_row(
                "SELECT 1 FROM instances WHERE name = ?1",
                [new_name],
                |_| Ok(()),
            )
            .optional()
            .map_err(sql("look up instance"))?
            .is_some();
        if taken {
            return Err(StoreError::AlreadyExists {
                kind: "instance",
                name: new_name.to_owned(),
            });
        }
        tx.execute(
            "UPDATE instances SET name = ?2 WHERE id = ?1",
            params![id, new_name],
        )
        .map_err(sql("rename instance"))?;
        tx.commit().map_err(sql("commit"))
    }

    /// Records where instance `id`'s restart policy stands.
    pub fn set_restart_state(
        &mut self,
        id: &str,
        state: Option<&crate::RestartState>,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE instances SET restart_state = ?2 WHERE id = ?1",
                params![id, state.map(to_json)],
            )
            .map_err(sql("record the restart state"))?;
        Ok(())
    }

    /// Instance `id`'s user data (`None`: it has none).
    pub fn user_data(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.conn
            .query_row("SELECT user_data FROM instances WHERE id = ?1", [id], |r| {
                r.get::<_, Option<Vec<u8>>>(0)
            })
            .optional()
            .map_err(sql("read user data"))
            .map(Option::flatten)
    }

    /// Sets instance `id`'s user data (its summary is in its config, set by the caller).
    pub fn set_user_data(&mut self, id: &str, data: Option<&[u8]>) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE instances SET user_data = ?2 WHERE id = ?1",
                params![id, data],
            )
            .map_err(sql("record user data"))?;
        Ok(())
    }

    /// Deletes an instance row inserted by an operation that is being rolled back (and its
    /// snapshots' rows), if it exists.
    pub fn forget_instance(&mut self, id: &str) -> Result<(), StoreError> {
        self.delete_instance(id, Mode::Transient)
    }
}

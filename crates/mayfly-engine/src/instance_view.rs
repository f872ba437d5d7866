//! What `list` and `info` show of instances: state and run from the slots, settings from the
//! catalogue, and the command and user resolved against the template version the instance
//! runs (or, stopped, would start on).

use mayfly_api::{ExitInfo, InstanceInfo, InstanceState, Isolation};
use mayfly_store::{ID_RANGE, InstanceRecord, InterfaceRecord, TemplateRecord};

use crate::{Engine, EngineError, lock, process};

/// How long `info` waits for a running instance's live figures (its OOM kills).
const LIVE_READ: std::time::Duration = std::time::Duration::from_secs(2);

impl Engine {
    /// What `list` and `info` say of `rec`; `template` is its template's record, from which
    /// the command and user it runs (or would start with) are resolved.
    pub(crate) fn info_of(
        &self,
        rec: &InstanceRecord,
        template: Option<&TemplateRecord>,
        writable_bytes: Option<u64>,
        interfaces: &[InterfaceRecord],
    ) -> InstanceInfo {
        let (state, pid, version, started_at, error) = match lock(&self.slots).get(&rec.name) {
            Some(slot) => {
                let rt = lock(&slot.rt);
                (
                    rt.shown_state(),
                    rt.pid,
                    rt.version,
                    rt.started_at,
                    rt.last_error.clone(),
                )
            }
            None => (InstanceState::Stopped, None, None, None, None),
        };
        let defaults = template.and_then(|t| {
            let next = rec.next_run.as_ref().and_then(|n| n.version);
            t.version(
                version
                    .or(next)
                    .or(rec.pinned_version)
                    .unwrap_or(t.current_version),
            )
        });
        let (command, user) = match defaults {
            Some(v) => (
                process::init_command(&v.config, &rec.config),
                process::init_user(&v.config, &rec.config),
            ),
            None => (
                rec.config.command.clone(),
                rec.config.user.clone().unwrap_or_default(),
            ),
        };
        InstanceInfo {
            id: rec.id.clone(),
            name: rec.name.clone(),
            template: rec.template.clone(),
            pinned_version: rec.pinned_version,
            running_version: version,
            mode: rec.mode,
            state,
            pid,
            command,
            user: Some(user).filter(|u| !u.is_empty()),
            apps: rec.config.apps.clone(),
            env: rec.config.env.clone(),
            created_at: crate::rfc3339(rec.created_at),
            started_at: started_at.map(crate::rfc3339),
            last_exit: rec.last_exit.as_ref().map(|e| ExitInfo {
                code: e.code,
                signal: e.signal,
                at: Some(crate::rfc3339(e.at)),
                ending: e.ending,
                oom_kills: e.oom_kills,
            }),
            isolation: Isolation {
                user_namespace: rec.id_base.is_some(),
                host_id_base: rec.id_base,
                host_id_count: rec.id_base.map(|_| ID_RANGE),
            },
            writable_bytes,
            error,
            init: rec.config.init,
            interfaces: interfaces
                .iter()
                .filter(|i| i.owner == rec.id)
                .map(|i| crate::network::interface_info(&rec.name, &rec.id, i))
                .collect(),
            publish: rec.config.publish.clone(),
            note: None,
            flavor: rec.config.flavor.clone(),
            limits: self.effective_limits(rec),
            // Stopped: the last run's (a running one's is read live by `instance_info`).
            oom_kills: match state {
                InstanceState::Stopped => rec.last_exit.as_ref().map_or(0, |e| e.oom_kills),
                _ => 0,
            },
            volumes: rec.config.volumes.clone(),
            meta: rec.config.meta.clone(),
            user_data: self.user_data_info(rec),
            restart: rec.config.restart,
            restarts: self.restart_info(rec),
        }
    }

    /// Every instance.
    pub async fn list_instances(&self) -> Result<Vec<InstanceInfo>, EngineError> {
        let (recs, templates, ifaces) = self
            .db(|s| Ok((s.instances()?, s.templates()?, s.all_interfaces()?)))
            .await?;
        Ok(recs
            .iter()
            .map(|r| {
                let t = templates.iter().find(|t| t.name == r.template);
                self.info_of(r, t, None, &ifaces)
            })
            .collect())
    }

    /// Instance `name`'s record, its template's (when the template is still there) and its
    /// interfaces: what [`Engine::info_of`] needs.
    pub(crate) async fn instance_and_template(
        &self,
        name: &str,
    ) -> Result<(InstanceRecord, Option<TemplateRecord>, Vec<InterfaceRecord>), EngineError> {
        let n = name.to_owned();
        self.db(move |s| {
            let rec = s.instance(&n)?;
            let template = s.template(&rec.template).ok();
            let ifaces = s.interfaces(&rec.id)?;
            Ok((rec, template, ifaces))
        })
        .await
    }

    /// One instance, with the size of its writable layer.
    pub async fn instance_info(&self, name: &str) -> Result<InstanceInfo, EngineError> {
        let (rec, template, ifaces) = self.instance_and_template(name).await?;
        let upper = self.layout.writable_dir(&rec.id, rec.writable_gen);
        let bytes = self
            .blocking(move || {
                Ok(match mayfly_image::tree_stats(&upper) {
                    Ok(stats) => Some(stats.bytes),
                    Err(_) => None,
                })
            })
            .await?;
        let mut info = self.info_of(&rec, template.as_ref(), bytes, &ifaces);
        if let Some(status) = self.live_user_data_status(&rec).await
            && let Some(u) = info.user_data.as_mut()
        {
            u.status = Some(status);
        }
        if matches!(info.state, InstanceState::Running | InstanceState::Paused)
            && let Ok(Ok(usage)) = tokio::time::timeout(LIVE_READ, self.driver.usage(&rec.id)).await
        {
            info.oom_kills = usage.oom_kills;
        }
        Ok(info)
    }
}

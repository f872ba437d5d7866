//! `mayfly set NAME key=value…`: changes of an instance's limits (and flavor). The changes
//! are parsed on the instance's own limits with the one parser (`Limits::set_key`), the
//! resulting effective limits are checked against the host like at a start, then stored:
//! they are the instance's configuration from now on. A running instance gets them at once
//! where the kernel allows it (cgroup files, the disk quota, the network rate); what it
//! refused, and everything for a stopped instance, takes effect at the next start.

use std::sync::Arc;

use mayfly_api::{InstanceState, Limits, SetLimits, SetOutcome};
use mayfly_store::InstanceRecord;

use crate::{Engine, EngineError, lock};

/// The keys the cgroup driver applies (`disk` and `net-rate` are applied elsewhere).
fn cgroup_key(key: &str) -> bool {
    key != "disk" && key != "net-rate"
}

/// The instance's new flavor and own limits after `req`, or what is wrong with `req`.
pub(crate) fn apply_request(
    rec: &InstanceRecord,
    req: &SetLimits,
) -> Result<(Option<String>, Limits), EngineError> {
    if req.flavor.is_none() && req.changes.is_empty() {
        return Err(EngineError::invalid(
            "nothing to change",
            format!(
                "e.g. `mayfly set {} memory=1G cpus=2`, or `--flavor NAME`",
                rec.name
            ),
        ));
    }
    let flavor = match &req.flavor {
        None => rec.config.flavor.clone(),
        Some(f) if f.is_empty() => None,
        Some(f) => Some(f.clone()),
    };
    let mut own = rec.config.limits.clone();
    for (key, value) in &req.changes {
        own.set_key(key, value).map_err(|e| {
            EngineError::invalid(
                e,
                format!(
                    "write KEY=VALUE with KEY one of {}; `KEY=none` clears a limit",
                    mayfly_api::LIMIT_KEYS.join(", ")
                ),
            )
        })?;
    }
    if own.net_rate.is_some()
        && rec.config.networks.is_empty()
        && req
            .changes
            .iter()
            .any(|(k, _)| k.replace('_', "-") == "net-rate")
    {
        return Err(EngineError::invalid(
            format!(
                "net-rate limits network interfaces, and `{}` has none (--network none)",
                rec.name
            ),
            "leave net-rate out",
        ));
    }
    Ok((flavor, own))
}

impl Engine {
    /// Changes an instance's limits (live where the kernel allows it).
    pub async fn set_limits(
        self: &Arc<Self>,
        name: &str,
        req: SetLimits,
    ) -> Result<SetOutcome, EngineError> {
        let slot = self.slot(name)?;
        let (applied, next_start) = {
            let _guard = slot.acquire("set limits").await?;
            self.settle(&slot).await;
            let n = name.to_owned();
            let rec = self.db(move |s| s.instance(&n)).await?;
            let (flavor, own) = apply_request(&rec, &req)?;
            // Held until the record names the flavor (a removal waits for it).
            let _gate = self.flavor_gate.read().await;
            let flavor_limits = match &flavor {
                Some(f) => Some(self.flavor_limits(f)?),
                None => None,
            };
            let before = self.effective_limits(&rec);
            let after = super::resolve(flavor_limits.as_ref(), &own);
            self.check_limits_here(&after)?;
            let changed = before.changed_keys(&after);
            let running = lock(&slot.rt).state == InstanceState::Running;
            // A larger reservation of a running instance is admitted like a start.
            let admission = if running && after.memory_reserve > before.memory_reserve {
                Some(self.admission.lock().await)
            } else {
                None
            };
            if admission.is_some() {
                self.admit(&slot, after.memory_reserve).await?;
            }
            let mut config = rec.config.clone();
            config.flavor = flavor;
            config.limits = own;
            let (id, c) = (rec.id.clone(), config.clone());
            self.db(move |s| s.set_instance_config(&id, &c)).await?;
            drop(admission);
            if running {
                let rec = InstanceRecord { config, ..rec };
                self.apply_live(&rec, &after, &changed).await
            } else {
                // A dropped disk limit goes now: nothing would lift it before an `rm`.
                if changed.contains(&"disk") && after.disk.is_none() {
                    self.lift_disk_quota(&rec.id).await;
                }
                (
                    Vec::new(),
                    changed
                        .iter()
                        .map(|k| ((*k).to_owned(), "stopped".to_owned()))
                        .collect(),
                )
            }
        };
        self.emit(
            crate::events::Ev::new("instance.limits")
                .on("instance", name)
                .details(serde_json::json!({ "applied": applied, "next_start": next_start })),
        );
        Ok(SetOutcome {
            instance: self.instance_info(name).await?,
            applied,
            next_start,
        })
    }

    /// Applies `limits` to running instance `rec`: the answer's `applied` and `next_start`
    /// for the `changed` keys.
    async fn apply_live(
        &self,
        rec: &InstanceRecord,
        limits: &Limits,
        changed: &[&'static str],
    ) -> (Vec<String>, Vec<(String, String)>) {
        let mut applied = Vec::new();
        let mut later: Vec<(String, String)> = Vec::new();
        if changed.iter().any(|k| cgroup_key(k)) {
            match self.driver.set_limits(&rec.id, limits).await {
                Ok(outcome) => {
                    for k in changed.iter().filter(|k| cgroup_key(k)) {
                        match outcome.refused.iter().find(|(r, _)| r == k) {
                            Some((_, why)) => later.push(((*k).to_owned(), why.clone())),
                            None => applied.push((*k).to_owned()),
                        }
                    }
                }
                Err(e) => {
                    let why = mayfly_driver::error_chain(&e);
                    tracing::warn!(instance = %rec.name, "cannot change its cgroup limits: {why}");
                    for k in changed.iter().filter(|k| cgroup_key(k)) {
                        later.push(((*k).to_owned(), why.clone()));
                    }
                }
            }
        }
        if changed.contains(&"disk") {
            let dir = self.layout.instance_dir(&rec.id);
            let (driver, bytes) = (self.driver.clone(), limits.disk);
            let set = tokio::task::spawn_blocking(move || driver.set_disk_quota(&dir, bytes)).await;
            match set {
                Ok(Ok(())) => applied.push("disk".to_owned()),
                Ok(Err(e)) => later.push(("disk".to_owned(), mayfly_driver::error_chain(&e))),
                Err(e) => later.push(("disk".to_owned(), e.to_string())),
            }
        }
        if changed.contains(&"net-rate") {
            // The network rate is the network code's (`network/rate.rs`).
            match self.apply_net_rate(rec).await {
                Ok(()) => applied.push("net-rate".to_owned()),
                Err(why) => later.push(("net-rate".to_owned(), why)),
            }
        }
        (applied, later)
    }
}

#[cfg(test)]
mod tests {
    use mayfly_api::Mode;
    use mayfly_store::InstanceConfig;

    use super::*;

    fn rec(flavor: Option<&str>) -> InstanceRecord {
        InstanceRecord {
            id: "0123456789abcdef".into(),
            name: "web".into(),
            template: "busybox".into(),
            pinned_version: None,
            mode: Mode::Persistent,
            config: InstanceConfig {
                flavor: flavor.map(str::to_owned),
                limits: Limits {
                    pids: Some(64),
                    ..Limits::default()
                },
                ..InstanceConfig::default()
            },
            id_base: None,
            created_at: 0,
            run: None,
            last_exit: None,
            writable_gen: 1,
            writable_version: None,
            layer_since: None,
            next_run: None,
            paused: false,
            restart_state: None,
        }
    }

    #[test]
    fn a_flavor_change_keeps_the_own_limits_and_an_empty_name_drops_the_flavor() {
        let r = rec(Some("small"));
        let (f, own) = apply_request(
            &r,
            &SetLimits {
                flavor: Some("large".into()),
                changes: Vec::new(),
            },
        )
        .unwrap();
        assert_eq!(f.as_deref(), Some("large"));
        assert_eq!(own, r.config.limits);
        let (f, _) = apply_request(
            &r,
            &SetLimits {
                flavor: Some(String::new()),
                changes: Vec::new(),
            },
        )
        .unwrap();
        assert_eq!(f, None);
    }

    #[test]
    fn an_empty_request_is_refused_with_an_example() {
        let e = apply_request(&rec(None), &SetLimits::default()).unwrap_err();
        let api = e.to_api();
        assert_eq!(api.code, mayfly_api::ErrorCode::InvalidArgument);
        assert!(api.hint.unwrap_or_default().contains("mayfly set web"));
    }

    #[test]
    fn disk_and_net_rate_are_not_the_cgroup_drivers() {
        let cg: Vec<_> = mayfly_api::LIMIT_KEYS
            .iter()
            .filter(|k| cgroup_key(k))
            .collect();
        assert!(!cg.contains(&&"disk") && !cg.contains(&&"net-rate"));
        assert_eq!(cg.len(), mayfly_api::LIMIT_KEYS.len() - 2);
    }

    #[test]
    fn changes_are_parsed_on_the_own_limits_and_a_bad_one_changes_nothing() {
        let r = rec(Some("small"));
        let req = |changes: &[(&str, &str)]| SetLimits {
            flavor: None,
            changes: changes
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        let (f, own) = apply_request(&r, &req(&[("memory", "512M"), ("pids", "none")])).unwrap();
        assert_eq!(f.as_deref(), Some("small"), "the flavor stays");
        assert_eq!((own.memory, own.pids), (Some(512 << 20), None));
        let e = apply_request(&r, &req(&[("memory", "1G"), ("memory", "12XB")])).unwrap_err();
        let api = e.to_api();
        assert_eq!(api.code, mayfly_api::ErrorCode::InvalidArgument);
        assert!(
            api.message.contains("--memory") && api.message.contains("12XB"),
            "{}",
            api.message
        );
        assert!(api.hint.unwrap_or_default().contains("KEY=none"));
        let e = apply_request(&r, &req(&[("colour", "red")])).unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
    }
}

//! Flavors: the built-in presets (`mayfly_api::builtin_flavors`) and those people create,
//! which the catalogue keeps. Flavors are immutable (created, then only removed), so the
//! engine keeps the stored ones in memory too: resolving an instance's limits needs no
//! catalogue read.

use std::collections::HashMap;
use std::sync::Mutex;

use mayfly_api::names::check_instance_name;
use mayfly_api::{CreateFlavor, FlavorInfo, Limits, builtin_flavors};
use mayfly_store::{FlavorRecord, StoreError};

use crate::{Engine, EngineError, lock};

/// The stored flavors, by name (loaded at start, kept in step by create and remove).
#[derive(Debug, Default)]
pub(crate) struct FlavorCache(Mutex<HashMap<String, FlavorRecord>>);

impl FlavorCache {
    pub(crate) fn load(records: Vec<FlavorRecord>) -> FlavorCache {
        FlavorCache(Mutex::new(
            records.into_iter().map(|f| (f.name.clone(), f)).collect(),
        ))
    }
}

/// The refusal of an unknown flavor.
pub(crate) fn unknown_flavor(name: &str) -> EngineError {
    EngineError::Store(StoreError::NotFound {
        kind: "flavor",
        name: name.to_owned(),
    })
}

fn builtin(name: &str) -> Option<FlavorInfo> {
    builtin_flavors().into_iter().find(|f| f.name == name)
}

fn info_of(f: &FlavorRecord, used_by: Vec<String>) -> FlavorInfo {
    FlavorInfo {
        name: f.name.clone(),
        description: f.description.clone(),
        builtin: false,
        limits: f.limits.clone(),
        used_by,
    }
}

impl Engine {
    /// The limits of flavor `name` (built-in or stored); NotFound naming `mayfly flavor list`.
    pub(crate) fn flavor_limits(&self, name: &str) -> Result<Limits, EngineError> {
        if let Some(b) = builtin(name) {
            return Ok(b.limits);
        }
        lock(&self.flavors.0)
            .get(name)
            .map(|f| f.limits.clone())
            .ok_or_else(|| unknown_flavor(name))
    }

    /// Every flavor, built-in ones first, each with the instances that use it.
    pub async fn list_flavors(&self) -> Result<Vec<FlavorInfo>, EngineError> {
        let (stored, instances) = self.db(|s| Ok((s.flavors()?, s.instances()?))).await?;
        let users = |name: &str| -> Vec<String> {
            instances
                .iter()
                .filter(|r| r.config.flavor.as_deref() == Some(name))
                .map(|r| r.name.clone())
                .collect()
        };
        let mut out: Vec<FlavorInfo> = builtin_flavors()
            .into_iter()
            .map(|mut f| {
                f.used_by = users(&f.name);
                f
            })
            .collect();
        out.extend(stored.iter().map(|f| info_of(f, users(&f.name))));
        Ok(out)
    }

    /// One flavor.
    pub async fn flavor_info(&self, name: &str) -> Result<FlavorInfo, EngineError> {
        let n = name.to_owned();
        let users = self.db(move |s| s.flavor_users(&n)).await?;
        if let Some(mut b) = builtin(name) {
            b.used_by = users;
            return Ok(b);
        }
        let n = name.to_owned();
        let stored = self.db(move |s| s.flavor(&n)).await?;
        Ok(info_of(&stored, users))
    }

    /// Creates a flavor: a free name (built-in ones are taken), at least one limit, limits
    /// this host can give.
    pub(crate) async fn create_flavor_unrecorded(
        &self,
        req: CreateFlavor,
    ) -> Result<FlavorInfo, EngineError> {
        check_instance_name(&req.name).map_err(|e| {
            EngineError::invalid(
                e,
                "e.g. `mayfly flavor create web-small --cpus 1 --memory 1G`",
            )
        })?;
        if builtin(&req.name).is_some() {
            return Err(builtin_refusal(&req.name, "created over"));
        }
        if req.limits.is_empty() {
            return Err(EngineError::invalid(
                format!("flavor `{}` would hold no limit", req.name),
                "give at least one, e.g. `--memory 1G` or `--cpus 2`",
            ));
        }
        if req.description.len() > 1024 || req.description.contains(['\n', '\0']) {
            return Err(EngineError::invalid(
                "the description must be one line of at most 1024 bytes",
                "shorten it",
            ));
        }
        self.check_limits_here(&req.limits)?;
        let record = FlavorRecord {
            name: req.name.clone(),
            description: req.description.clone(),
            limits: req.limits.clone(),
            created_at: mayfly_store::now(),
        };
        let r = record.clone();
        self.db(move |s| s.insert_flavor(&r)).await?;
        lock(&self.flavors.0).insert(record.name.clone(), record.clone());
        Ok(info_of(&record, Vec::new()))
    }

    /// Removes a flavor no instance uses (refused naming them; built-in ones always).
    pub(crate) async fn remove_flavor_unrecorded(&self, name: &str) -> Result<(), EngineError> {
        if builtin(name).is_some() {
            return Err(builtin_refusal(name, "removed"));
        }
        let _gate = self.flavor_gate.write().await;
        let n = name.to_owned();
        self.db(move |s| s.delete_flavor(&n)).await?;
        lock(&self.flavors.0).remove(name);
        Ok(())
    }
}

fn builtin_refusal(name: &str, what: &str) -> EngineError {
    EngineError::Conflict {
        message: format!("flavor `{name}` is built in: it cannot be {what}"),
        hint: Some(
            "create a flavor of your own under another name (`mayfly flavor create NAME …`)".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_flavors_resolve_and_cannot_be_replaced_or_removed() {
        assert!(builtin("tiny").is_some() && builtin("nope").is_none());
        let e = builtin_refusal("small", "removed");
        assert!(e.to_string().contains("`small` is built in"), "{e}");
        let api = e.to_api();
        assert_eq!(api.code, mayfly_api::ErrorCode::InUse);
        let e = unknown_flavor("gold");
        let api = e.to_api();
        assert_eq!(api.code, mayfly_api::ErrorCode::NotFound);
        assert!(api.hint.unwrap_or_default().contains("mayfly flavor list"));
    }

    #[test]
    fn the_cache_answers_stored_flavors() {
        let cache = FlavorCache::load(vec![FlavorRecord {
            name: "web".into(),
            description: String::new(),
            limits: Limits {
                pids: Some(99),
                ..Limits::default()
            },
            created_at: 0,
        }]);
        assert_eq!(
            lock(&cache.0).get("web").and_then(|f| f.limits.pids),
            Some(99)
        );
    }
}

//! Resources of instances: flavors, limits (resolution, checks against the host, live
//! changes), admission of memory reservations, pause and resume, and usage figures.
//!
//! One file per concern: `flavors.rs` (the presets and their catalogue), `host.rs` (what the
//! host has: memory, online CPUs), `admission.rs` (memory reservations against the host's
//! capacity), `set.rs` (`mayfly set`), `pause.rs` (pause, resume and what other actions do
//! with a paused instance), `stats.rs` (`mayfly stats`). Here: how an instance's limits are
//! resolved and checked, the part every start shares.
//!
//! An instance's effective limits are its flavor's with its own over them
//! ([`Limits::overlaid`]); its own are, at launch, the template's defaults with the request's
//! over them, and change with `set`. Flavors are immutable, so the effective limits of a
//! catalogued instance are a pure function of its record.

mod admission;
mod flavors;
mod host;
mod pause;
mod set;
mod stats;

use mayfly_api::Limits;
use mayfly_store::InstanceRecord;

use crate::{Engine, EngineError};

pub(crate) use admission::AdmissionLock;
pub(crate) use flavors::FlavorCache;

/// The largest disk limit accepted, for instances and volumes (a disk image for it stays
/// below ext4's 16 TiB file limit).
pub const MAX_DISK_LIMIT: u64 = 15 << 40;

impl Engine {
    /// The limits instance `rec` runs with: its flavor's with its own over them. A flavor
    /// that no longer resolves (it cannot be removed while used) counts as none.
    pub(crate) fn effective_limits(&self, rec: &InstanceRecord) -> Limits {
        resolve(
            rec.config
                .flavor
                .as_deref()
                .and_then(|f| self.flavor_limits(f).ok())
                .as_ref(),
            &rec.config.limits,
        )
    }

    /// The largest disk limit (of an instance or a volume) this host takes: the size of the
    /// state filesystem, at most [`MAX_DISK_LIMIT`]. Unknown when the filesystem cannot be
    /// measured: then only the fixed maximum holds.
    pub(crate) fn largest_disk_limit(&self) -> u64 {
        let fs = rustix::fs::statvfs(self.layout.root())
            .map(|st| st.f_blocks.saturating_mul(st.f_frsize))
            .unwrap_or(u64::MAX);
        MAX_DISK_LIMIT.min(fs)
    }

    /// Refuses limits this host cannot give or enforce (400, nothing changed): their own
    /// consistency, more memory or CPUs than the host has, keys the cgroup driver cannot
    /// enforce here, a disk limit without quotas on the state filesystem.
    pub(crate) fn check_limits_here(&self, limits: &Limits) -> Result<(), EngineError> {
        limits.check().map_err(|e| {
            EngineError::invalid(e, "see docs/resources.md for every limit and its forms")
        })?;
        host::check_against(limits, &host::HostFacts::read())
            .map_err(|(e, hint)| EngineError::invalid(e, hint))?;
        self.driver.check_limits(limits).map_err(|e| {
            EngineError::invalid(
                e,
                "leave those limits out on this host (`KEY=none` with `mayfly set`)",
            )
        })?;
        if let Some(disk) = limits.disk {
            let max = self.largest_disk_limit();
            if disk > max {
                return Err(EngineError::invalid(
                    format!(
                        "a disk limit of {disk} bytes is too large (the most is {} MiB: the state filesystem's size, at most 15 TiB)",
                        max >> 20
                    ),
                    "give a smaller --disk, e.g. `--disk 10G`",
                ));
            }
        }
        if limits.disk.is_some()
            && let Some(why) = self.driver.disk_quota_unsupported()
        {
            return Err(EngineError::invalid(
                format!("--disk cannot be enforced on this host: {why}"),
                "leave --disk out (or `mayfly set NAME disk=none`), or put the state directory on a filesystem with project quotas, or make loop devices and e2fsprogs available (see docs/quotas.md)",
            ));
        }
        Ok(())
    }

    /// Sets instance `id`'s disk limit (before a start). Without one, the start calls
    /// [`Self::lift_disk_quota`]: a disk image whose limit was dropped while the instance ran
    /// is copied out then.
    pub(crate) async fn apply_disk_quota(&self, id: &str, bytes: u64) -> Result<(), EngineError> {
        let dir = self.layout.instance_dir(id);
        let driver = self.driver.clone();
        tokio::task::spawn_blocking(move || driver.set_disk_quota(&dir, Some(bytes)))
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))?
            .map_err(crate::error::from_driver)
    }

    /// Before instance `id`'s directory is removed: drops what holds its disk limit (a
    /// filesystem image is unmounted and deleted, a project quota lifted). Best effort: logged.
    pub(crate) async fn release_disk(&self, id: &str) {
        let dir = self.layout.instance_dir(id);
        let driver = self.driver.clone();
        match tokio::task::spawn_blocking(move || driver.release_disk(&dir)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(
                "cannot release the disk of instance {id}: {}",
                mayfly_driver::error_chain(&e)
            ),
            Err(e) => tracing::warn!("cannot release the disk of instance {id}: {e}"),
        }
    }

    /// Lifts the disk limit of instance `id`'s directory if it has one (when a stopped
    /// instance's limit is dropped, and at a start without one). Best effort: logged.
    pub(crate) async fn lift_disk_quota(&self, id: &str) {
        let dir = self.layout.instance_dir(id);
        let driver = self.driver.clone();
        let lifted = tokio::task::spawn_blocking(move || driver.set_disk_quota(&dir, None)).await;
        match lifted {
            Ok(Err(e)) => tracing::warn!(
                "cannot lift the disk limit of instance {id}: {}",
                mayfly_driver::error_chain(&e)
            ),
            Err(e) => tracing::warn!("cannot lift the disk limit of instance {id}: {e}"),
            Ok(Ok(())) => {}
        }
    }
}

/// The refusal of an unknown instance.
pub(crate) fn not_found_instance(name: &str) -> EngineError {
    EngineError::Store(mayfly_store::StoreError::NotFound {
        kind: "instance",
        name: name.to_owned(),
    })
}

/// The limits of an instance whose flavor holds `flavor` and whose own are `own`.
pub(crate) fn resolve(flavor: Option<&Limits>, own: &Limits) -> Limits {
    match flavor {
        Some(f) => f.overlaid(own),
        None => own.clone(),
    }
}

/// The flavor and own limits of a new instance: the request's flavor (`none`: none), else
/// the template's; own limits are the template's defaults with the request's over them.
pub(crate) fn launch_settings(
    req_flavor: Option<&str>,
    req_limits: &Limits,
    template: &mayfly_api::TemplateConfig,
) -> (Option<String>, Limits) {
    // `none` (or empty) asks for no flavor, even where the template names one.
    let flavor = match req_flavor {
        Some(f) if f.is_empty() || f == "none" => None,
        Some(f) => Some(f.to_owned()),
        None => template.flavor.clone(),
    };
    let own = if template.limits.is_empty() {
        req_limits.clone()
    } else {
        template.limits.overlaid(req_limits)
    };
    (flavor, own)
}

#[cfg(test)]
mod tests {
    use mayfly_api::{Limits, TemplateConfig};

    use super::{launch_settings, resolve};

    #[test]
    fn the_request_names_the_flavor_else_the_template_does() {
        let mut t = TemplateConfig::default();
        let own = Limits::default();
        assert_eq!(launch_settings(None, &own, &t).0, None);
        t.flavor = Some("small".into());
        assert_eq!(launch_settings(None, &own, &t).0.as_deref(), Some("small"));
        assert_eq!(
            launch_settings(Some("large"), &own, &t).0.as_deref(),
            Some("large")
        );
        // `none` drops the template's flavor.
        assert_eq!(launch_settings(Some("none"), &own, &t).0, None);
        // Without template defaults, the request's own limits are taken as they are (no
        // overlay needed).
        let req = Limits {
            pids: Some(64),
            ..Limits::default()
        };
        assert_eq!(
            launch_settings(None, &req, &TemplateConfig::default()).1,
            req
        );
    }

    #[test]
    fn without_a_flavor_the_own_limits_are_the_effective_ones() {
        let own = Limits {
            memory: Some(1 << 30),
            ..Limits::default()
        };
        assert_eq!(resolve(None, &own), own);
    }

    #[test]
    fn the_own_limits_go_over_the_flavor_and_the_request_over_the_template() {
        let flavor = Limits {
            cpus: Some(mayfly_api::Cpus(1000)),
            memory: Some(1 << 30),
            pids: Some(256),
            ..Limits::default()
        };
        let own = Limits {
            memory: Some(2 << 30),
            ..Limits::default()
        };
        let eff = resolve(Some(&flavor), &own);
        assert_eq!(eff.memory, Some(2 << 30));
        assert_eq!((eff.cpus, eff.pids), (flavor.cpus, flavor.pids));

        let t = TemplateConfig {
            flavor: Some("small".into()),
            limits: Limits {
                pids: Some(100),
                memory: Some(1 << 30),
                ..Limits::default()
            },
            ..TemplateConfig::default()
        };
        let req = Limits {
            memory: Some(512 << 20),
            ..Limits::default()
        };
        let (f, own) = launch_settings(Some("tiny"), &req, &t);
        assert_eq!(f.as_deref(), Some("tiny"));
        assert_eq!((own.memory, own.pids), (Some(512 << 20), Some(100)));
    }
}

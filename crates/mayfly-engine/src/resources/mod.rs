//! Resources of instances: flavors, limits (resolution, checks against the host, live
//! changes), admission of memory reservations, pause and resume, and usage figures.

use std::sync::Arc;

use mayfly_api::{CreateFlavor, FlavorInfo, InstanceInfo, InstanceStats, SetLimits, SetOutcome};

use crate::{Engine, EngineError};

impl Engine {
    /// Every flavor, built-in ones first.
    pub async fn list_flavors(&self) -> Result<Vec<FlavorInfo>, EngineError> {
        todo!("resources: list flavors")
    }

    /// One flavor.
    pub async fn flavor_info(&self, name: &str) -> Result<FlavorInfo, EngineError> {
        let _ = name;
        todo!("resources: flavor info")
    }

    /// Creates a flavor.
    pub async fn create_flavor(&self, req: CreateFlavor) -> Result<FlavorInfo, EngineError> {
        let _ = req;
        todo!("resources: create flavor")
    }

    /// Removes a flavor no instance uses.
    pub async fn remove_flavor(&self, name: &str) -> Result<(), EngineError> {
        let _ = name;
        todo!("resources: remove flavor")
    }

    /// Changes an instance's limits (live where the kernel allows it).
    pub async fn set_limits(
        self: &Arc<Self>,
        name: &str,
        req: SetLimits,
    ) -> Result<SetOutcome, EngineError> {
        let _ = (name, req);
        todo!("resources: set limits")
    }

    /// Freezes every process of a running instance.
    pub async fn pause_instance(self: &Arc<Self>, name: &str) -> Result<InstanceInfo, EngineError> {
        let _ = name;
        todo!("resources: pause")
    }

    /// Thaws a paused instance.
    pub async fn resume_instance(
        self: &Arc<Self>,
        name: &str,
    ) -> Result<InstanceInfo, EngineError> {
        let _ = name;
        todo!("resources: resume")
    }

    /// Usage of the named instances (every running one when `names` is empty).
    pub async fn stats(&self, names: Vec<String>) -> Result<Vec<InstanceStats>, EngineError> {
        let _ = names;
        todo!("resources: stats")
    }
}

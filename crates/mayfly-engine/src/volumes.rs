//! Volumes: data that lives outside any instance, attached to one at a time.
//!
//! (Skeleton: filled in by the volumes work.)

use mayfly_api::VolumeMount;
use mayfly_driver::BindMount;
use mayfly_store::InstanceRecord;

use crate::{Engine, EngineError};

impl Engine {
    /// Checks a launch's `--volume` list before anything is made: names exist, paths are
    /// absolute, distinct and not where mayfly mounts its own filesystems.
    pub(crate) async fn check_volume_mounts(
        &self,
        _mounts: &[VolumeMount],
    ) -> Result<(), EngineError> {
        Ok(())
    }

    /// The bind mounts of instance `rec`'s volumes for a start.
    pub(crate) async fn volume_binds(
        &self,
        _rec: &InstanceRecord,
    ) -> Result<Vec<BindMount>, EngineError> {
        Ok(Vec::new())
    }
}

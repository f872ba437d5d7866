//! Attaching to an instance's console (`mayfly console`): the driver's; the engine checks
//! that the instance runs.

use mayfly_api::InstanceState;
use mayfly_driver::{ConsoleAttached, DriverError};

use crate::error::from_driver;
use crate::instance::wrong_state;
use crate::{Engine, EngineError, lock};

impl Engine {
    /// Attaches a client to the console of running instance `name`; also returns its id (the
    /// stream follows the instance by id).
    pub async fn console(&self, name: &str) -> Result<(String, ConsoleAttached), EngineError> {
        let slot = self.slot(name)?;
        let state = lock(&slot.rt).shown_state();
        if state != InstanceState::Running {
            return Err(wrong_state(&slot, state, "attach to its console"));
        }
        // The driver knows the instance by id; the user, by name.
        let attached = self.driver.console(&slot.id).await.map_err(|e| match e {
            DriverError::Failed(mut f) => {
                f.message = f.message.replace(&slot.id, &slot.name);
                from_driver(DriverError::Failed(f))
            }
            e => from_driver(e),
        })?;
        Ok((slot.id.clone(), attached))
    }

    /// Whether the instance with id `id` still runs (the same instance: not a later one of
    /// the same name).
    pub fn runs_id(&self, id: &str) -> bool {
        lock(&self.slots)
            .by_id(id)
            .is_some_and(|slot| lock(&slot.rt).state == InstanceState::Running)
    }
}

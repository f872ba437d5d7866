//! Networks, their instances' interfaces, published ports, channels and renames: what the
//! API offers. (Skeleton: the engine helper fills these in.)

use std::sync::Arc;

use mayfly_api::{ChannelInfo, CreateChannel, CreateNetwork, InstanceInfo, NetworkInfo};

use crate::{Engine, EngineError};

fn todo() -> EngineError {
    EngineError::invalid("networks are not built yet", "wait for issue 21")
}

impl Engine {
    /// Creates a network (bridge, firewall, name server), refusing a taken name or an
    /// overlapping subnet.
    pub async fn create_network(
        self: &Arc<Self>,
        req: CreateNetwork,
    ) -> Result<NetworkInfo, EngineError> {
        let _ = req;
        Err(todo())
    }

    /// Every network, by name.
    pub async fn networks(self: &Arc<Self>) -> Result<Vec<NetworkInfo>, EngineError> {
        Err(todo())
    }

    /// One network.
    pub async fn network_info(self: &Arc<Self>, name: &str) -> Result<NetworkInfo, EngineError> {
        let _ = name;
        Err(todo())
    }

    /// Removes a network; refused while instances have an interface on it (naming them).
    pub async fn remove_network(self: &Arc<Self>, name: &str) -> Result<(), EngineError> {
        let _ = name;
        Err(todo())
    }

    /// Creates a channel between two instances.
    pub async fn create_channel(
        self: &Arc<Self>,
        req: CreateChannel,
    ) -> Result<ChannelInfo, EngineError> {
        let _ = req;
        Err(todo())
    }

    /// Every channel, by name.
    pub async fn channels(self: &Arc<Self>) -> Result<Vec<ChannelInfo>, EngineError> {
        Err(todo())
    }

    /// Removes a channel.
    pub async fn remove_channel(self: &Arc<Self>, name: &str) -> Result<(), EngineError> {
        let _ = name;
        Err(todo())
    }

    /// Renames an instance (running or not): its names on its networks follow at once, its
    /// hostname inside at its next start.
    pub async fn rename_instance(
        self: &Arc<Self>,
        name: &str,
        new_name: &str,
    ) -> Result<InstanceInfo, EngineError> {
        let _ = (name, new_name);
        Err(todo())
    }
}

//! Channels: a directory on the host (`<state_dir>/channels/NAME`, root's, 0755) bind-mounted
//! read-write into its server and read-only into its client at `/run/mayfly/channels/NAME`,
//! at each start of either. A service in the server creates a unix socket there; the client
//! connects to it. No network is needed.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use mayfly_api::{CHANNELS_DIR, ChannelInfo, CreateChannel, InstanceState, check_network_name};
use mayfly_driver::BindMount;
use mayfly_store::{ChannelRecord, Layout};

use crate::error::io_err;
use crate::{Engine, EngineError};

/// The binds of instance `id`'s channels (`channels`: those it serves or uses).
pub(crate) fn channel_binds(
    layout: &Layout,
    id: &str,
    channels: &[ChannelRecord],
) -> Vec<BindMount> {
    channels
        .iter()
        .filter(|c| c.server == id || c.client == id)
        .map(|c| BindMount {
            source: layout.channel_dir(&c.name),
            target: format!("{CHANNELS_DIR}/{}", c.name),
            readonly: c.server != id,
            only_over_file: false,
        })
        .collect()
}

impl Engine {
    fn channel_info(&self, rec: &ChannelRecord, names: &[(String, String)]) -> ChannelInfo {
        let name_of = |id: &str| {
            names
                .iter()
                .find(|(i, _)| i == id)
                .map_or_else(|| id.to_owned(), |(_, n)| n.clone())
        };
        ChannelInfo {
            name: rec.name.clone(),
            server: name_of(&rec.server),
            client: name_of(&rec.client),
            path: format!("{CHANNELS_DIR}/{}", rec.name),
            created_at: crate::rfc3339(rec.created_at),
            note: None,
        }
    }

    /// Creates a channel between two instances.
    pub(crate) async fn channel_create(
        self: &Arc<Self>,
        req: CreateChannel,
    ) -> Result<ChannelInfo, EngineError> {
        check_network_name(&req.name).map_err(|e| {
            EngineError::invalid(
                e.replace("network name", "channel name"),
                "e.g. `mayfly channel create db --server pg --client app`",
            )
        })?;
        if req.server == req.client {
            return Err(EngineError::invalid(
                format!("the server and the client are both `{}`", req.server),
                "a channel joins two different instances",
            ));
        }
        let (s, c) = (req.server.clone(), req.client.clone());
        let (server, client) = self
            .db(move |st| Ok((st.instance(&s)?, st.instance(&c)?)))
            .await?;
        let dir = self.layout.channel_dir(&req.name);
        let rec = ChannelRecord {
            name: req.name.clone(),
            server: server.id.clone(),
            client: client.id.clone(),
            created_at: mayfly_store::now(),
        };
        let exists = {
            let r = rec.name.clone();
            self.db(move |st| Ok(st.channels()?.iter().any(|c| c.name == r)))
                .await?
        };
        if exists {
            return Err(EngineError::Store(
                mayfly_store::StoreError::AlreadyExists {
                    kind: "channel",
                    name: rec.name.clone(),
                },
            ));
        }
        self.blocking({
            let dir = dir.clone();
            move || {
                let parent = dir
                    .parent()
                    .map(std::path::Path::to_owned)
                    .unwrap_or_default();
                std::fs::create_dir_all(&parent).map_err(io_err("create", &parent))?;
                if dir.exists() {
                    // Left by an interrupted creation or removal: not anyone's.
                    let _ = std::fs::remove_dir_all(&dir);
                }
                std::fs::create_dir(&dir).map_err(io_err("create", &dir))?;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
                    .map_err(io_err("set permissions of", &dir))
            }
        })
        .await?;
        let r = rec.clone();
        if let Err(e) = self.db(move |st| st.create_channel(&r)).await {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        let names = vec![
            (server.id.clone(), server.name.clone()),
            (client.id.clone(), client.name.clone()),
        ];
        let mut info = self.channel_info(&rec, &names);
        let running: Vec<&str> = [&server.name, &client.name]
            .into_iter()
            .filter(|n| {
                self.slot(n)
                    .is_ok_and(|s| s.state() != InstanceState::Stopped)
            })
            .map(String::as_str)
            .collect();
        if !running.is_empty() {
            info.note = Some(format!(
                "{} already running: the channel appears there at the next start (`mayfly restart NAME`)",
                running.join(" and ")
            ));
        }
        Ok(info)
    }

    /// Every channel, by name.
    pub(crate) async fn channel_list(&self) -> Result<Vec<ChannelInfo>, EngineError> {
        let (chans, names) = self
            .db(|s| {
                let names: Vec<(String, String)> =
                    s.instances()?.into_iter().map(|r| (r.id, r.name)).collect();
                Ok((s.channels()?, names))
            })
            .await?;
        Ok(chans.iter().map(|c| self.channel_info(c, &names)).collect())
    }

    /// Removes a channel (running instances keep their mount until they stop).
    pub(crate) async fn channel_remove(&self, name: &str) -> Result<(), EngineError> {
        let n = name.to_owned();
        let rec = self.db(move |s| s.delete_channel(&n)).await?;
        self.trash.discard(&self.layout.channel_dir(&rec.name))
    }
}

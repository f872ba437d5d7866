//! Channels: a directory on the host (`<state_dir>/channels/NAME`, root's, 0755) bind-mounted
//! read-write into its server and read-only into its client at `/run/mayfly/channels/NAME`,
//! at each start of either. A service in the server creates a unix socket there; the client
//! connects to it. No network is needed.
//!
//! The mount points (`/run/mayfly/channels/NAME`) come from a small layer of the instance's
//! own (`<instance dir>/channels-<key>/`), stacked right under the writable layer as the
//! mount points of `/etc/hosts` are, so that they never land in the writable layer (nor in
//! snapshots and published templates). Its `run` directory takes the owner and mode of the
//! `/run` the stack shows.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
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

/// The layer of mount points for channels `names` over the stack `layers` (lowest first) of
/// the instance whose directory is `dir`: made once per stack and set of channels, `None` when
/// there are no channels or the stack's `/run` is not a directory (a symlink, a whiteout).
/// Blocking.
pub(crate) fn channel_layer(
    dir: &Path,
    layers: &[PathBuf],
    names: &[String],
) -> Result<Option<PathBuf>, EngineError> {
    let old_layers = || {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("channels-"))
    };
    if names.is_empty() {
        for e in old_layers() {
            let _ = std::fs::remove_dir_all(e.path());
        }
        return Ok(None);
    }
    // The /run the stack shows: the topmost layer's entry there.
    let shown = layers
        .iter()
        .rev()
        .find_map(|l| std::fs::symlink_metadata(l.join("run")).ok());
    let (mode, uid, gid) = match shown {
        Some(m) if m.is_dir() => (m.mode() & 0o7777, m.uid(), m.gid()),
        Some(_) => return Ok(None),
        None => (0o755, 0, 0),
    };
    let mut key_source: Vec<String> = layers.iter().map(|l| l.display().to_string()).collect();
    key_source.extend(names.iter().cloned());
    let key = crate::apps::short_hash(&key_source.join("|"));
    let layer = dir.join(format!("channels-{key}"));
    if layer.is_dir() {
        return Ok(Some(layer));
    }
    for e in old_layers() {
        let _ = std::fs::remove_dir_all(e.path());
    }
    let tmp = layer.with_extension("new");
    let run = tmp.join("run");
    let parent = run.join("mayfly/channels");
    for name in names {
        let d = parent.join(name);
        std::fs::create_dir_all(&d).map_err(io_err("create", &d))?;
    }
    for d in [tmp.clone(), run.join("mayfly"), parent.clone()]
        .into_iter()
        .chain(names.iter().map(|n| parent.join(n)))
    {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755))
            .map_err(io_err("set permissions of", &d))?;
    }
    std::os::unix::fs::chown(&run, Some(uid), Some(gid))
        .map_err(io_err("set the owner of", &run))?;
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(mode))
        .map_err(io_err("set permissions of", &run))?;
    std::fs::rename(&tmp, &layer).map_err(io_err("create", &layer))?;
    Ok(Some(layer))
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
        // One creation at a time: the directory of a name is only made (or replaced, when an
        // interrupted creation left one) by the creation that then catalogues it.
        let _g = self.net.apply.lock().await;
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
                // Private (as the layout makes it): the servers write there as the host's root.
                std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o700))
                    .map_err(io_err("set permissions of", &parent))?;
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
        let _g = self.net.apply.lock().await;
        let n = name.to_owned();
        let rec = self.db(move |s| s.delete_channel(&n)).await?;
        self.trash.discard(&self.layout.channel_dir(&rec.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_writes_and_the_client_reads() {
        let layout = Layout::new(Path::new("/state"));
        let chans = [
            ChannelRecord {
                name: "db".into(),
                server: "a".into(),
                client: "b".into(),
                created_at: 0,
            },
            ChannelRecord {
                name: "other".into(),
                server: "c".into(),
                client: "d".into(),
                created_at: 0,
            },
        ];
        let a = channel_binds(&layout, "a", &chans);
        let b = channel_binds(&layout, "b", &chans);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].target, "/run/mayfly/channels/db");
        assert_eq!(a[0].source, Path::new("/state/channels/db"));
        assert!(!a[0].readonly && b[0].readonly);
        assert!(channel_binds(&layout, "x", &chans).is_empty());
    }

    #[test]
    fn channel_mount_points_are_a_layer_that_keeps_the_stacks_run() {
        let t = tempfile::tempdir().unwrap();
        let (low, high, inst) = (
            t.path().join("low"),
            t.path().join("high"),
            t.path().join("i"),
        );
        for d in [&low, &high, &inst] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::create_dir(low.join("run")).unwrap();
        std::fs::set_permissions(low.join("run"), std::fs::Permissions::from_mode(0o700)).unwrap();
        let stack = vec![low.clone(), high.clone()];
        let names = vec!["db".to_owned(), "log".to_owned()];
        let layer = channel_layer(&inst, &stack, &names).unwrap().unwrap();
        let run = std::fs::metadata(layer.join("run")).unwrap();
        assert_eq!(run.mode() & 0o7777, 0o700, "the stack's /run mode is kept");
        for n in &names {
            assert!(layer.join("run/mayfly/channels").join(n).is_dir());
        }
        // Same stack and channels: the same layer; fewer channels: a new one, the old gone.
        assert_eq!(
            channel_layer(&inst, &stack, &names).unwrap().unwrap(),
            layer
        );
        let one = channel_layer(&inst, &stack, &names[..1]).unwrap().unwrap();
        assert_ne!(one, layer);
        assert!(!layer.exists());
        assert!(!one.join("run/mayfly/channels/log").exists());
        // No channels: no layer, and none left.
        assert_eq!(channel_layer(&inst, &stack, &[]).unwrap(), None);
        assert!(!one.exists());
        // A /run that is a symlink higher up: nothing to mount on.
        std::os::unix::fs::symlink("/elsewhere", high.join("run")).unwrap();
        assert_eq!(channel_layer(&inst, &stack, &names).unwrap(), None);
    }
}

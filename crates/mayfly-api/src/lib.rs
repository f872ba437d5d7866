//! mayfly's REST API as data: what clients send, what the daemon answers, how errors look, and
//! the framing of the interactive streams (`exec`, `run`).
//!
//! The daemon, the CLI and (later) the web page share these types, so they cannot drift apart.
//! Inputs carry `#[serde(deny_unknown_fields)]`: a misspelt field is an error, not a silent
//! default. Paths of the API are in [`paths`].
#![forbid(unsafe_code)]

pub mod actions;
mod error;
mod events;
mod instance;
pub mod names;
mod network;
mod resources;
pub mod size;
mod state;
pub mod stream;
mod template;
pub mod text;

pub use actions::{ACTIONS, Action, ActionSpec, Answer};
pub use error::{ApiError, ErrorBody, ErrorCode};
pub use events::{
    CreateToken, CreatedToken, Event, EventSubject, EventsQuery, LoginRequest, Outcome, TokenInfo,
};
pub use instance::{
    CloneRequest, ConsoleRequest, CreateInstance, CreateSnapshot, Ending, ExecRequest, ExitInfo,
    InstanceInfo, InstanceState, Isolation, LogsQuery, MAX_ARG_BYTES, MAX_PROCESS_BYTES, Mode,
    PublishRequest, RemoveQuery, SnapshotInfo, StopRequest, check_process_size,
};
pub use network::{
    CHANNELS_DIR, ChannelInfo, CreateChannel, CreateNetwork, DEFAULT_NETWORK, InterfaceInfo,
    NO_NETWORK, NetworkInfo, PortProto, PublishPort, RenameRequest, check_network_name,
};
pub use resources::{
    Cpus, CreateFlavor, FlavorInfo, InstanceStats, IoMax, LIMIT_KEYS, Limits, SetLimits,
    SetOutcome, StatsQuery, builtin_flavors, parse_cpus,
};
pub use state::{
    AttachVolume, CreateSchedule, CreateVolume, DetachVolume, MAX_META_BYTES, MAX_META_PAIRS,
    MAX_USER_DATA, META_PATH, RestartInfo, RestartPolicy, ScheduleAction, ScheduleInfo,
    UserDataHandler, UserDataInfo, UserDataKind, UserDataStatus, VolumeAttachment, VolumeInfo,
    VolumeMount, check_meta, parse_meta_pair,
};
pub use template::{
    BuildTemplate, GcReport, HeldBack, ImportEvent, ImportQuery, ImportTemplate, LayerInfo, NDJSON,
    PatchTemplate, RollbackRequest, RolloutEvent, RolloutRequest, Shadowed, TemplateConfig,
    TemplateInfo, VersionInfo, split_image_tag,
};

use serde::{Deserialize, Serialize};

/// The version prefix of every path.
pub const API_PREFIX: &str = "/v1";

/// What `GET /v1/info` answers: the daemon and the host it runs on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DaemonInfo {
    /// mayfly's version.
    pub version: String,
    /// The state directory the daemon owns.
    pub state_dir: String,
    /// `v2`, `v1` or `hybrid` (v1 controllers beside a cgroup2 mount).
    pub cgroup_mode: String,
    /// Whether instances get a user namespace with idmapped template layers.
    pub user_namespaces: bool,
    /// Why user namespaces are off, when they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_namespaces_off_reason: Option<String>,
    /// Process id of the forker helper that parents container processes.
    pub forker_pid: Option<i32>,
    /// Number of instances, and of those running.
    pub instances: u32,
    /// Number of running instances.
    pub running: u32,
    /// Number of templates.
    pub templates: u32,
    /// SHA-256 fingerprint (lowercase hex) of the TLS certificate the TCP listener serves,
    /// when one does: what `mayfly remote add` shows and pins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_fingerprint: Option<String>,
}

/// API paths, in one place for the server's router and the client.
pub mod paths {
    /// `GET`: [`super::DaemonInfo`].
    pub const INFO: &str = "/v1/info";
    /// `GET`: list; `POST`: import (JSON [`super::ImportTemplate`], or an archive body with
    /// `?name=`): answers a stream of [`super::ImportEvent`] lines.
    pub const TEMPLATES: &str = "/v1/templates";
    /// `GET`: list; `POST`: create (and start) from [`super::CreateInstance`].
    pub const INSTANCES: &str = "/v1/instances";
    /// `POST` with `Upgrade: mayfly-stream`: create an ephemeral instance attached to the
    /// caller's stream, start it, and remove it when it exits (`mayfly run --rm`).
    pub const RUN: &str = "/v1/run";
    /// `GET`: list; `POST`: create from [`super::CreateNetwork`].
    pub const NETWORKS: &str = "/v1/networks";
    /// `GET`: list; `POST`: create from [`super::CreateChannel`].
    pub const CHANNELS: &str = "/v1/channels";
    /// `GET`: list (built-in ones first); `POST`: create from [`super::CreateFlavor`].
    pub const FLAVORS: &str = "/v1/flavors";
    /// `GET`: [`super::InstanceStats`] of the instances named in `?instances=a,b` (every
    /// running one without it).
    pub const STATS: &str = "/v1/stats";
    /// `GET`: list; `POST`: create from [`super::CreateVolume`].
    pub const VOLUMES: &str = "/v1/volumes";
    /// `GET`: every schedule of every instance.
    pub const SCHEDULES: &str = "/v1/schedules";

    /// `/v1/volumes/{name}`: `GET` info, `DELETE` remove (refused while attached); with
    /// `/attach` and `/detach` (`POST`).
    pub fn volume(name: &str) -> String {
        format!("{VOLUMES}/{name}")
    }

    /// `/v1/instances/{name}/schedules`: `GET` list, `POST` add ([`super::CreateSchedule`]);
    /// `/{id}`: `DELETE` remove.
    pub fn schedules(instance: &str) -> String {
        format!("{INSTANCES}/{instance}/schedules")
    }

    /// `/v1/flavors/{name}`: `GET` info, `DELETE` remove (refused for built-in flavors and
    /// while instances use it).
    pub fn flavor(name: &str) -> String {
        format!("{FLAVORS}/{name}")
    }

    /// `/v1/networks/{name}`: `GET` info, `DELETE` remove (refused while instances use it).
    pub fn network(name: &str) -> String {
        format!("{NETWORKS}/{name}")
    }
    /// `/v1/channels/{name}`: `DELETE` remove.
    pub fn channel(name: &str) -> String {
        format!("{CHANNELS}/{name}")
    }

    /// `/v1/templates/{name}`: `GET` info, `DELETE` remove.
    pub fn template(name: &str) -> String {
        format!("{TEMPLATES}/{name}")
    }
    /// `/v1/instances/{name}`: `GET` info, `DELETE` remove (`?force=true`).
    pub fn instance(name: &str) -> String {
        format!("{INSTANCES}/{name}")
    }
    /// `/v1/instances/{name}/{action}`, action one of start, stop, restart, reset, exec, logs,
    /// snapshots (`GET` list, `POST` create), clone, publish, rename, pause, resume, limits
    /// (`PATCH` with [`super::SetLimits`]).
    pub fn instance_action(name: &str, action: &str) -> String {
        format!("{INSTANCES}/{name}/{action}")
    }
    /// `/v1/instances/{name}/snapshots/{snap}`: `GET` info, `DELETE` remove; with
    /// `/restore` appended, `POST` rewinds the instance to it.
    pub fn snapshot(name: &str, snap: &str) -> String {
        format!("{INSTANCES}/{name}/snapshots/{snap}")
    }
}

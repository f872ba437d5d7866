//! mayfly's REST API as data: what clients send, what the daemon answers, how errors look, and
//! the framing of the interactive streams (`exec`, `run`).
//!
//! The daemon, the CLI and (later) the web page share these types, so they cannot drift apart.
//! Inputs carry `#[serde(deny_unknown_fields)]`: a misspelt field is an error, not a silent
//! default. Every operation (method, path, answer) is in the action table, [`actions::ACTIONS`];
//! the OpenAPI document generated from it is [`openapi::document`].
#![forbid(unsafe_code)]

pub mod actions;
mod error;
mod events;
mod instance;
pub mod names;
mod network;
pub mod openapi;
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
    PublishRequest, RemoveQuery, SnapshotInfo, StopRequest, TerminalQuery, check_process_size,
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
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
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

//! Every operation of the API, described once: its method, its path, what it answers and
//! whether it changes anything. The daemon's router, the OpenAPI document, the CLI's request
//! paths, the audit log and the metrics are all derived from [`ACTIONS`] (after Firecracker's
//! parsed request → `VmmAction`: a request is first resolved to an [`Action`], and everything
//! else keys on that).

/// An operation of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Info,
    OpenApi,
    Metrics,
    Events,
    ListTemplates,
    ImportTemplate,
    TemplateInfo,
    RemoveTemplate,
    BuildTemplate,
    PatchTemplate,
    RollbackTemplate,
    Rollout,
    CollectGarbage,
    ListInstances,
    CreateInstance,
    InstanceInfo,
    RemoveInstance,
    StartInstance,
    StopInstance,
    RestartInstance,
    ResetInstance,
    PauseInstance,
    ResumeInstance,
    RenameInstance,
    SetLimits,
    Exec,
    Terminal,
    Console,
    Logs,
    Run,
    ListSnapshots,
    CreateSnapshot,
    SnapshotInfo,
    RemoveSnapshot,
    RestoreSnapshot,
    CloneInstance,
    Publish,
    ListNetworks,
    CreateNetwork,
    NetworkInfo,
    RemoveNetwork,
    ListChannels,
    CreateChannel,
    RemoveChannel,
    ListFlavors,
    CreateFlavor,
    FlavorInfo,
    RemoveFlavor,
    Stats,
    ListVolumes,
    CreateVolume,
    VolumeInfo,
    RemoveVolume,
    AttachVolume,
    DetachVolume,
    ListAllSchedules,
    ListSchedules,
    AddSchedule,
    RemoveSchedule,
    ListTokens,
    CreateToken,
    RevokeToken,
    Login,
    Logout,
}

/// An HTTP method of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Post,
    Patch,
    Delete,
}

impl Method {
    /// The method's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

/// What an action answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Answer {
    /// A JSON object or list with this status (200 or 201).
    Json(u16),
    /// `204 No Content`.
    Empty,
    /// `200` with `application/x-ndjson`: one JSON event per line until the job ends.
    Ndjson,
    /// `101 Switching Protocols` to [`crate::stream::UPGRADE_PROTOCOL`] (`exec`, `run`,
    /// `console`).
    Upgrade,
    /// `101 Switching Protocols` to a WebSocket (the web page's terminal).
    WebSocket,
    /// `200` with raw bytes (`application/octet-stream`), streamed while following.
    Bytes,
    /// `200` with text (the Prometheus exposition format).
    Text,
}

/// The description of one action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActionSpec {
    pub action: Action,
    /// Stable name: the OpenAPI `operationId`, the audit log's and the metrics' label.
    pub id: &'static str,
    pub method: Method,
    /// The path template: `{name}` placeholders, filled in order by [`Action::path`].
    pub path: &'static str,
    pub answer: Answer,
    /// Whether it changes state: such actions are written to the audit log.
    pub changes: bool,
    /// One line for the OpenAPI document and `--help`.
    pub summary: &'static str,
}

const fn spec(
    action: Action,
    id: &'static str,
    method: Method,
    path: &'static str,
    answer: Answer,
    changes: bool,
    summary: &'static str,
) -> ActionSpec {
    ActionSpec {
        action,
        id,
        method,
        path,
        answer,
        changes,
        summary,
    }
}

use Action as A;
use Answer::{Bytes, Empty, Json, Ndjson, Text, Upgrade, WebSocket};
use Method::{Delete, Get, Patch, Post};

/// Every action, each once.
#[rustfmt::skip]
pub const ACTIONS: &[ActionSpec] = &[
    spec(A::Info, "info", Get, "/v1/info", Json(200), false, "The daemon and its host"),
    spec(A::OpenApi, "openapi", Get, "/v1/openapi.json", Json(200), false, "This API's OpenAPI 3 document"),
    spec(A::Metrics, "metrics", Get, "/metrics", Text, false, "Prometheus metrics"),
    spec(A::Events, "events", Get, "/v1/events", Ndjson, false, "The event log (`?since=`), then live events (`?follow=true`)"),
    spec(A::ListTemplates, "template.list", Get, "/v1/templates", Json(200), false, "List templates"),
    spec(A::ImportTemplate, "template.import", Post, "/v1/templates", Ndjson, true, "Import a template (JSON source, or an archive body with `?name=`)"),
    spec(A::TemplateInfo, "template.info", Get, "/v1/templates/{name}", Json(200), false, "A template and its versions"),
    spec(A::RemoveTemplate, "template.remove", Delete, "/v1/templates/{name}", Empty, true, "Remove a template, or one version (`NAME@N`)"),
    spec(A::BuildTemplate, "template.build", Post, "/v1/templates/{name}/build", Ndjson, true, "Build a template (debootstrap)"),
    spec(A::PatchTemplate, "template.patch", Post, "/v1/templates/{name}/patch", Ndjson, true, "Patch a template into a new version"),
    spec(A::RollbackTemplate, "template.rollback", Post, "/v1/templates/{name}/rollback", Json(200), true, "Make an earlier version current"),
    spec(A::Rollout, "template.rollout", Post, "/v1/templates/{name}/rollout", Ndjson, true, "Move instances to the current version"),
    spec(A::CollectGarbage, "layer.gc", Post, "/v1/layers/gc", Json(200), true, "Remove unused layers"),
    spec(A::ListInstances, "instance.list", Get, "/v1/instances", Json(200), false, "List instances"),
    spec(A::CreateInstance, "instance.create", Post, "/v1/instances", Json(201), true, "Create (and start) an instance"),
    spec(A::InstanceInfo, "instance.info", Get, "/v1/instances/{name}", Json(200), false, "An instance"),
    spec(A::RemoveInstance, "instance.remove", Delete, "/v1/instances/{name}", Empty, true, "Remove an instance (`?force=true` stops it first)"),
    spec(A::StartInstance, "instance.start", Post, "/v1/instances/{name}/start", Json(200), true, "Start an instance"),
    spec(A::StopInstance, "instance.stop", Post, "/v1/instances/{name}/stop", Json(200), true, "Stop an instance"),
    spec(A::RestartInstance, "instance.restart", Post, "/v1/instances/{name}/restart", Json(200), true, "Restart an instance"),
    spec(A::ResetInstance, "instance.reset", Post, "/v1/instances/{name}/reset", Json(200), true, "Reset an instance to its template (or persistent base)"),
    spec(A::PauseInstance, "instance.pause", Post, "/v1/instances/{name}/pause", Json(200), true, "Freeze an instance"),
    spec(A::ResumeInstance, "instance.resume", Post, "/v1/instances/{name}/resume", Json(200), true, "Thaw an instance"),
    spec(A::RenameInstance, "instance.rename", Post, "/v1/instances/{name}/rename", Json(200), true, "Rename an instance"),
    spec(A::SetLimits, "instance.limits", Patch, "/v1/instances/{name}/limits", Json(200), true, "Change an instance's limits"),
    spec(A::Exec, "instance.exec", Post, "/v1/instances/{name}/exec", Upgrade, true, "Run a command in an instance, attached"),
    spec(A::Terminal, "instance.terminal", Get, "/v1/instances/{name}/terminal", WebSocket, true, "A shell in an instance over a WebSocket (the web page's terminal)"),
    spec(A::Console, "instance.console", Post, "/v1/instances/{name}/console", Upgrade, true, "Attach to an instance's console"),
    spec(A::Logs, "instance.logs", Get, "/v1/instances/{name}/logs", Bytes, false, "An instance's console log (`?tail=N`, `?follow=true`)"),
    spec(A::Run, "instance.run", Post, "/v1/run", Upgrade, true, "Create an ephemeral instance attached to the caller, removed when it exits"),
    spec(A::ListSnapshots, "snapshot.list", Get, "/v1/instances/{name}/snapshots", Json(200), false, "List an instance's snapshots"),
    spec(A::CreateSnapshot, "snapshot.create", Post, "/v1/instances/{name}/snapshots", Json(201), true, "Snapshot an instance"),
    spec(A::SnapshotInfo, "snapshot.info", Get, "/v1/instances/{name}/snapshots/{snapshot}", Json(200), false, "A snapshot"),
    spec(A::RemoveSnapshot, "snapshot.remove", Delete, "/v1/instances/{name}/snapshots/{snapshot}", Empty, true, "Remove a snapshot"),
    spec(A::RestoreSnapshot, "snapshot.restore", Post, "/v1/instances/{name}/snapshots/{snapshot}/restore", Json(200), true, "Rewind an instance to a snapshot"),
    spec(A::CloneInstance, "instance.clone", Post, "/v1/instances/{name}/clone", Json(201), true, "Clone an instance (or one of its snapshots)"),
    spec(A::Publish, "instance.publish", Post, "/v1/instances/{name}/publish", Json(201), true, "Publish an instance as a template"),
    spec(A::ListNetworks, "network.list", Get, "/v1/networks", Json(200), false, "List networks"),
    spec(A::CreateNetwork, "network.create", Post, "/v1/networks", Json(201), true, "Create a network"),
    spec(A::NetworkInfo, "network.info", Get, "/v1/networks/{name}", Json(200), false, "A network"),
    spec(A::RemoveNetwork, "network.remove", Delete, "/v1/networks/{name}", Empty, true, "Remove a network"),
    spec(A::ListChannels, "channel.list", Get, "/v1/channels", Json(200), false, "List channels"),
    spec(A::CreateChannel, "channel.create", Post, "/v1/channels", Json(201), true, "Create a channel"),
    spec(A::RemoveChannel, "channel.remove", Delete, "/v1/channels/{name}", Empty, true, "Remove a channel"),
    spec(A::ListFlavors, "flavor.list", Get, "/v1/flavors", Json(200), false, "List flavors"),
    spec(A::CreateFlavor, "flavor.create", Post, "/v1/flavors", Json(201), true, "Create a flavor"),
    spec(A::FlavorInfo, "flavor.info", Get, "/v1/flavors/{name}", Json(200), false, "A flavor"),
    spec(A::RemoveFlavor, "flavor.remove", Delete, "/v1/flavors/{name}", Empty, true, "Remove a flavor"),
    spec(A::Stats, "stats", Get, "/v1/stats", Json(200), false, "Resource use of running instances (`?instances=a,b`)"),
    spec(A::ListVolumes, "volume.list", Get, "/v1/volumes", Json(200), false, "List volumes"),
    spec(A::CreateVolume, "volume.create", Post, "/v1/volumes", Json(201), true, "Create a volume"),
    spec(A::VolumeInfo, "volume.info", Get, "/v1/volumes/{name}", Json(200), false, "A volume"),
    spec(A::RemoveVolume, "volume.remove", Delete, "/v1/volumes/{name}", Empty, true, "Remove a volume"),
    spec(A::AttachVolume, "volume.attach", Post, "/v1/volumes/{name}/attach", Json(200), true, "Attach a volume to a stopped instance"),
    spec(A::DetachVolume, "volume.detach", Post, "/v1/volumes/{name}/detach", Json(200), true, "Detach a volume from a stopped instance"),
    spec(A::ListAllSchedules, "schedule.list_all", Get, "/v1/schedules", Json(200), false, "Every schedule of every instance"),
    spec(A::ListSchedules, "schedule.list", Get, "/v1/instances/{name}/schedules", Json(200), false, "An instance's schedules"),
    spec(A::AddSchedule, "schedule.add", Post, "/v1/instances/{name}/schedules", Json(201), true, "Add a schedule"),
    spec(A::RemoveSchedule, "schedule.remove", Delete, "/v1/instances/{name}/schedules/{id}", Empty, true, "Remove a schedule"),
    spec(A::ListTokens, "token.list", Get, "/v1/tokens", Json(200), false, "List API tokens (never their secrets)"),
    spec(A::CreateToken, "token.create", Post, "/v1/tokens", Json(201), true, "Create an API token (its secret is shown once)"),
    spec(A::RevokeToken, "token.revoke", Delete, "/v1/tokens/{name}", Empty, true, "Revoke an API token"),
    spec(A::Login, "login", Post, "/v1/login", Empty, true, "Trade a token for a session cookie (the web page)"),
    spec(A::Logout, "logout", Post, "/v1/logout", Empty, true, "End the web page's session"),
];

impl Action {
    /// This action's description.
    pub fn spec(self) -> &'static ActionSpec {
        ACTIONS
            .iter()
            .find(|s| s.action == self)
            .unwrap_or(&ACTIONS[0])
    }

    /// The action's stable name.
    pub fn id(self) -> &'static str {
        self.spec().id
    }

    /// The action's method.
    pub fn method(self) -> Method {
        self.spec().method
    }

    /// The path of this action with its placeholders filled, in order, by `args`, each
    /// percent-encoded (a missing argument leaves an empty segment, which the daemon refuses).
    pub fn path(self, args: &[&str]) -> String {
        let template = self.spec().path;
        let mut out = String::with_capacity(template.len() + 16);
        let mut args = args.iter();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let close = rest[open..].find('}').map_or(rest.len(), |c| open + c + 1);
            if let Some(arg) = args.next() {
                out.push_str(&encode(arg));
            }
            rest = &rest[close.min(rest.len())..];
        }
        out.push_str(rest);
        out
    }
}

/// Percent-encodes a path segment or query value (everything but `A-Za-z0-9-._~`).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_is_described_once_with_a_unique_route_and_id() {
        let mut seen = std::collections::HashSet::new();
        let mut ids = std::collections::HashSet::new();
        for s in ACTIONS {
            assert!(
                seen.insert((s.method, s.path)),
                "{} {} twice",
                s.method.as_str(),
                s.path
            );
            assert!(ids.insert(s.id), "id {} twice", s.id);
            assert_eq!(
                s.action.spec(),
                s,
                "{:?} is not found by its own spec",
                s.action
            );
        }
        assert_eq!(ACTIONS.len(), ids.len());
    }

    #[test]
    fn paths_are_filled_in_order_and_encoded() {
        assert_eq!(Action::Info.path(&[]), "/v1/info");
        assert_eq!(
            Action::StartInstance.path(&["web"]),
            "/v1/instances/web/start"
        );
        assert_eq!(
            Action::RestoreSnapshot.path(&["a b", "s/1"]),
            "/v1/instances/a%20b/snapshots/s%2F1/restore"
        );
        assert_eq!(
            Action::RemoveTemplate.path(&["debian@2"]),
            "/v1/templates/debian%402"
        );
    }
}

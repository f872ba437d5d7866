//! Per-instance state: user data, metadata, volumes, schedules and the restart policy.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Most bytes of user data an instance may be given (OpenStack's limit is 64 KiB; scripts
/// that need more fetch the rest themselves).
pub const MAX_USER_DATA: usize = 256 * 1024;

/// Most `--meta` pairs, and most bytes of one key or value.
pub const MAX_META_PAIRS: usize = 128;
/// Most bytes of one metadata key or value.
pub const MAX_META_BYTES: usize = 4096;

/// Where the metadata file is inside every instance.
pub const META_PATH: &str = "/run/mayfly/meta.json";

/// Checks `--meta` pairs: keys are 1–64 of `[A-Za-z0-9._-]`, values at most
/// [`MAX_META_BYTES`], at most [`MAX_META_PAIRS`] pairs.
pub fn check_meta(meta: &BTreeMap<String, String>) -> Result<(), String> {
    if meta.len() > MAX_META_PAIRS {
        return Err(format!(
            "{} metadata pairs given; at most {MAX_META_PAIRS} are accepted",
            meta.len()
        ));
    }
    for (k, v) in meta {
        if k.is_empty()
            || k.len() > 64
            || !k
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(format!(
                "invalid metadata key `{}`: use 1 to 64 letters, digits, `.`, `_` or `-`",
                k.chars().take(70).collect::<String>()
            ));
        }
        if v.len() > MAX_META_BYTES {
            return Err(format!(
                "the value of metadata key `{k}` is {} bytes long; at most {MAX_META_BYTES} are accepted",
                v.len()
            ));
        }
    }
    Ok(())
}

/// Parses `KEY=VALUE` (`--meta`).
pub fn parse_meta_pair(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!(
            "invalid metadata `{text}`: use KEY=VALUE, e.g. `--meta role=web`"
        )),
    }
}

// ---- user data ---------------------------------------------------------------------------

/// What kind of user data an instance has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UserDataKind {
    /// A script (`#!…`), run as root before the init.
    Script,
    /// A cloud-config (`#cloud-config`).
    CloudConfig,
    /// Another format only cloud-init understands (`## template: jinja`, `#include`, MIME
    /// multipart, …): accepted only for a template whose cloud-init boots.
    Other,
}

/// Who carries out an instance's user data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UserDataHandler {
    /// The template's own cloud-init, from a NoCloud seed mayfly provides.
    CloudInit,
    /// mayfly itself, before the init (scripts, and the documented cloud-config subset).
    Mayfly,
}

/// An instance's user data, as `info` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserDataInfo {
    /// Script or cloud-config.
    pub kind: UserDataKind,
    /// Who carries it out (decided at each start from the template's content).
    pub handler: UserDataHandler,
    /// Its size in bytes.
    pub bytes: u64,
    /// How its last run ended (the current run's, else the last one's), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<UserDataStatus>,
}

/// How the user data's last run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserDataStatus {
    /// `running`, `done` (exit 0) or `failed`.
    pub state: String,
    /// The exit code (mayfly's runner), when it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// When it ended (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// What went wrong (cloud-init's own errors, or mayfly's runner's), when something did.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

// ---- volumes -----------------------------------------------------------------------------

/// A volume mounted into an instance (`--volume NAME:/path[:ro]`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeMount {
    /// The volume's name.
    pub volume: String,
    /// Absolute path inside the instance.
    pub path: String,
    /// Mounted read-only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub readonly: bool,
}

impl std::str::FromStr for VolumeMount {
    type Err = String;

    /// `NAME:/path`, `NAME:/path:ro` or `NAME:/path:rw`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| {
            format!(
                "invalid volume `{s}`: {why}; use NAME:/path or NAME:/path:ro, e.g. `--volume data:/srv/data`"
            )
        };
        let (volume, rest) = s.split_once(':').ok_or_else(|| bad("no path"))?;
        let (path, readonly) = match rest.rsplit_once(':') {
            Some((p, "ro")) => (p, true),
            Some((p, "rw")) => (p, false),
            Some((_, other)) if !other.contains('/') => {
                return Err(bad(&format!("unknown option `{other}`")));
            }
            _ => (rest, false),
        };
        if volume.is_empty() {
            return Err(bad("no volume name"));
        }
        if !path.starts_with('/') {
            return Err(bad("the path must be absolute"));
        }
        Ok(VolumeMount {
            volume: volume.to_owned(),
            path: path.to_owned(),
            readonly,
        })
    }
}

impl std::fmt::Display for VolumeMount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.volume, self.path)?;
        if self.readonly {
            f.write_str(":ro")?;
        }
        Ok(())
    }
}

/// Where a volume is attached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VolumeAttachment {
    /// The instance holding it.
    pub instance: String,
    /// Its path inside.
    pub path: String,
    /// Mounted read-only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub readonly: bool,
}

/// A volume as `volume list` and `volume info` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VolumeInfo {
    /// Unique name.
    pub name: String,
    /// Stable random id.
    pub id: String,
    /// Its size limit in bytes, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Bytes used (only in `info`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used: Option<u64>,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// The instance it is attached to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached: Option<VolumeAttachment>,
}

/// `POST /v1/volumes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVolume {
    /// Unique name (a DNS label).
    #[schema(pattern = "^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: String,
    /// Size limit in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// `POST /v1/volumes/{name}/attach`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachVolume {
    /// The instance.
    pub instance: String,
    /// Absolute path inside it.
    pub path: String,
    /// Mount it read-only.
    #[serde(default)]
    pub readonly: bool,
}

/// `POST /v1/volumes/{name}/detach`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DetachVolume {
    /// The instance it must be attached to (a check against detaching the wrong one).
    pub instance: String,
}

// ---- restart policy ----------------------------------------------------------------------

/// What mayfly does when an instance's init ends unasked (`--restart`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RestartPolicy {
    /// Never start it again.
    #[default]
    No,
    /// Start it again when it failed (non-zero exit, killed by a signal), at most `max`
    /// times in a row when given.
    OnFailure {
        /// Most restarts in a row (`on-failure:N`).
        max: Option<u32>,
    },
    /// Start it again whenever it ends, unless mayfly was asked to stop it.
    Always,
}

impl RestartPolicy {
    /// Whether it is [`RestartPolicy::No`].
    pub fn is_no(&self) -> bool {
        *self == RestartPolicy::No
    }
}

impl std::fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestartPolicy::No => f.write_str("no"),
            RestartPolicy::OnFailure { max: None } => f.write_str("on-failure"),
            RestartPolicy::OnFailure { max: Some(n) } => write!(f, "on-failure:{n}"),
            RestartPolicy::Always => f.write_str("always"),
        }
    }
}

impl std::str::FromStr for RestartPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "unknown restart policy `{s}`: use no, on-failure, on-failure:N (N ≥ 1) or always"
            )
        };
        match s {
            "no" => Ok(RestartPolicy::No),
            "always" => Ok(RestartPolicy::Always),
            "on-failure" => Ok(RestartPolicy::OnFailure { max: None }),
            _ => match s.strip_prefix("on-failure:").map(str::parse::<u32>) {
                Some(Ok(n)) if n >= 1 => Ok(RestartPolicy::OnFailure { max: Some(n) }),
                _ => Err(bad()),
            },
        }
    }
}

impl Serialize for RestartPolicy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RestartPolicy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// On the wire a string: `no`, `on-failure`, `on-failure:N` or `always`.
impl utoipa::PartialSchema for RestartPolicy {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::openapi::pattern_schema(
            "When mayfly starts the instance again: `no`, `on-failure`, `on-failure:N` \
             (N ≥ 1) or `always`",
            "^(no|always|on-failure(:[1-9][0-9]*)?)$",
        )
    }
}

impl utoipa::ToSchema for RestartPolicy {}

/// Where an instance with a restart policy stands (in `info`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
pub struct RestartInfo {
    /// Restarts in a row by the policy (reset once a run lasts long enough, and by an
    /// explicit start).
    pub restarts: u32,
    /// When the next attempt is due (RFC 3339), while it waits in back-off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt: Option<String>,
    /// Why the policy gave up, when it did (`on-failure:N` reached N, or a start failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gave_up: Option<String>,
}

// ---- schedules ---------------------------------------------------------------------------

/// What a schedule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleAction {
    /// `mayfly reset`.
    Reset,
    /// `mayfly restart`.
    Restart,
    /// `mayfly snapshot create`, keeping the newest `keep` of the schedule's snapshots.
    Snapshot,
}

impl ScheduleAction {
    /// The lowercase name used on the wire and in the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            ScheduleAction::Reset => "reset",
            ScheduleAction::Restart => "restart",
            ScheduleAction::Snapshot => "snapshot",
        }
    }
}

impl std::fmt::Display for ScheduleAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ScheduleAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "reset" => Ok(ScheduleAction::Reset),
            "restart" => Ok(ScheduleAction::Restart),
            "snapshot" => Ok(ScheduleAction::Snapshot),
            other => Err(format!(
                "unknown scheduled action `{other}`: use reset, restart or snapshot"
            )),
        }
    }
}

/// A schedule as `schedule list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScheduleInfo {
    /// Its id (unique on the host).
    pub id: u64,
    /// The instance.
    pub instance: String,
    /// What it does.
    pub action: ScheduleAction,
    /// The cron expression (5 fields, local time), as given.
    pub cron: String,
    /// Snapshots kept (snapshot schedules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<u32>,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// When it last ran (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<String>,
    /// When it runs next (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run: Option<String>,
    /// What went wrong at its last run, if anything did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// `POST /v1/instances/{name}/schedules`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSchedule {
    /// What to do.
    pub action: ScheduleAction,
    /// When: a 5-field cron expression (`0 3 * * *`), or `HH:MM` for every day at that time.
    pub cron: String,
    /// Snapshot schedules: keep only the newest N snapshots this schedule made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_mounts_parse_and_print_back() {
        let m: VolumeMount = "data:/srv/data:ro".parse().unwrap();
        assert_eq!(
            m,
            VolumeMount {
                volume: "data".into(),
                path: "/srv/data".into(),
                readonly: true
            }
        );
        assert_eq!(m.to_string(), "data:/srv/data:ro");
        let m: VolumeMount = "data:/srv/data".parse().unwrap();
        assert!(!m.readonly);
        assert_eq!(m.to_string(), "data:/srv/data");
        for bad in ["data", "data:srv", ":/srv", "data:/srv:xx"] {
            assert!(bad.parse::<VolumeMount>().is_err(), "{bad}");
        }
    }

    #[test]
    fn restart_policies_round_trip_through_text_and_json() {
        for text in ["no", "always", "on-failure", "on-failure:3"] {
            let p: RestartPolicy = text.parse().unwrap();
            assert_eq!(p.to_string(), text);
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(serde_json::from_str::<RestartPolicy>(&json).unwrap(), p);
        }
        for bad in ["yes", "on-failure:0", "on-failure:x", "always:2"] {
            assert!(bad.parse::<RestartPolicy>().is_err(), "{bad}");
        }
    }

    #[test]
    fn metadata_keys_and_values_are_bounded() {
        let mut m = BTreeMap::new();
        m.insert("role".to_owned(), "web".to_owned());
        assert!(check_meta(&m).is_ok());
        m.insert("bad key".to_owned(), "x".to_owned());
        assert!(check_meta(&m).unwrap_err().contains("bad key"));
        assert_eq!(
            parse_meta_pair("a=b=c").unwrap(),
            ("a".to_owned(), "b=c".to_owned())
        );
        assert!(parse_meta_pair("=x").is_err());
    }
}

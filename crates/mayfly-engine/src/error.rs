//! The engine's errors, and how each one reads through the API.
//!
//! Every variant says what failed and on what; [`EngineError::to_api`] adds the stable code and,
//! where there is one, what the user can do.

use mayfly_api::{ApiError, ErrorCode};
use mayfly_driver::{DriverError, FailureKind};
use mayfly_image::ImageError;
use mayfly_store::StoreError;

/// An engine action that failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A value in the request is not acceptable.
    #[error("{message}")]
    Invalid {
        /// What is wrong.
        message: String,
        /// What to do.
        hint: Option<String>,
    },
    /// A value in the request is larger than mayfly accepts.
    #[error("{message}")]
    TooLarge {
        /// What is too large, and the limit.
        message: String,
        /// What to do.
        hint: Option<String>,
    },
    /// The instance is in the wrong state for the action.
    #[error("instance `{name}` is {state}: cannot {action}")]
    WrongState {
        /// Instance name.
        name: String,
        /// Its state.
        state: &'static str,
        /// The refused action.
        action: &'static str,
        /// What to do.
        hint: Option<String>,
    },
    /// Another action holds the instance.
    #[error("instance `{name}` is busy with `{operation}`")]
    Busy {
        /// Instance name.
        name: String,
        /// The action in progress.
        operation: String,
    },
    /// The instance has snapshots, which a plain removal keeps.
    #[error("instance `{name}` has snapshots: {}", snapshots.join(", "))]
    HasSnapshots {
        /// Instance name.
        name: String,
        /// Their names.
        snapshots: Vec<String>,
    },
    /// A build script (or debootstrap) failed; `output` is the end of what it printed.
    #[error("the build {how}; its last output:\n{output}")]
    BuildFailed {
        /// How it ended.
        how: String,
        /// Its last lines of output.
        output: String,
    },
    /// A rollout stopped because a health check failed.
    #[error("{0}")]
    RolloutFailed(String),
    /// The program to run does not exist in the instance.
    #[error("{0}")]
    ProgramNotFound(String),
    /// The program exists but cannot be executed.
    #[error("{0}")]
    ProgramNotExecutable(String),
    /// The catalogue refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading or writing a tree failed (or an archive was refused).
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The driver failed.
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// The request conflicts with what exists (a taken port, an overlapping subnet).
    #[error("{message}")]
    Conflict {
        /// What conflicts with what.
        message: String,
        /// What to do.
        hint: Option<String>,
    },
    /// Host networking failed (a bridge, the firewall, a name server).
    #[error(transparent)]
    Net(#[from] mayfly_net::NetError),
    /// The host lacks something.
    #[error("{0}")]
    Unavailable(String),
    /// A file operation of the engine failed.
    #[error("cannot {action} `{path}`")]
    Io {
        /// What.
        action: &'static str,
        /// Where.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A background task died.
    #[error("internal error: {0}")]
    Internal(String),
}

impl EngineError {
    /// An invalid-argument error with a hint.
    pub fn invalid(message: impl Into<String>, hint: impl Into<String>) -> Self {
        EngineError::Invalid {
            message: message.into(),
            hint: Some(hint.into()),
        }
    }

    /// The error as the API reports it: code, full message (with causes), hint.
    pub fn to_api(&self) -> ApiError {
        let message = mayfly_driver::error_chain(self);
        let (code, hint): (ErrorCode, Option<String>) = match self {
            EngineError::Invalid { hint, .. } => (ErrorCode::InvalidArgument, hint.clone()),
            EngineError::TooLarge { hint, .. } => (ErrorCode::TooLarge, hint.clone()),
            EngineError::WrongState { hint, .. } => (ErrorCode::WrongState, hint.clone()),
            EngineError::Busy { .. } => (
                ErrorCode::Busy,
                Some("wait for it to finish, then retry".into()),
            ),
            EngineError::HasSnapshots { name, .. } => (
                ErrorCode::InUse,
                Some(format!(
                    "delete them with the instance (`mayfly rm --force {name}`), or one by one (`mayfly snapshot rm {name} SNAP`)"
                )),
            ),
            EngineError::BuildFailed { .. } => (
                ErrorCode::InvalidArgument,
                Some("nothing was created; fix the script or package list and build again".into()),
            ),
            EngineError::RolloutFailed(_) => (
                ErrorCode::WrongState,
                Some("the template was rolled back; fix the version and roll out again".into()),
            ),
            EngineError::ProgramNotFound(_) => (
                ErrorCode::NotFound,
                Some("check the program name and the instance's PATH (`mayfly exec NAME -- sh -c 'echo $PATH'`)".into()),
            ),
            EngineError::ProgramNotExecutable(_) => (
                ErrorCode::InvalidArgument,
                Some("give an executable file: one with its x bit set, or a script through its interpreter (`sh FILE`)".into()),
            ),
            EngineError::Store(StoreError::NotFound { kind, .. }) => (
                ErrorCode::NotFound,
                Some(match *kind {
                    "template" => "list templates with `mayfly template list`".into(),
                    "instance" => "list instances with `mayfly list`".into(),
                    "template version" => {
                        "see a template's versions with `mayfly template history NAME`".into()
                    }
                    "snapshot" => {
                        "list an instance's snapshots with `mayfly snapshot list NAME`".into()
                    }
                    "network" => "create it with `mayfly network create NAME` (see `mayfly network list`)".into(),
                    "channel" => "list channels with `mayfly channel list`".into(),
                    "flavor" => "see the flavors with `mayfly flavor list`".into(),
                    "volume" => "create it with `mayfly volume create NAME` (see `mayfly volume list`)".into(),
                    _ => "check the name".into(),
                }),
            ),
            EngineError::Store(StoreError::AlreadyExists { kind, .. }) => (
                ErrorCode::AlreadyExists,
                Some(format!("choose another name, or remove the existing {kind} first")),
            ),
            EngineError::Store(StoreError::InUse { users, .. }) => (
                ErrorCode::InUse,
                Some(in_use_hint(users)),
            ),
            EngineError::Store(StoreError::FlavorInUse { flavor, .. }) => (
                ErrorCode::InUse,
                Some(format!(
                    "remove those instances first (`mayfly rm NAME`), or move them to another flavor (`mayfly set NAME --flavor OTHER`, or `--flavor none`), and publish template versions without it, before removing `{flavor}`"
                )),
            ),
            EngineError::Store(StoreError::IdRangesExhausted) => (ErrorCode::Unavailable, None),
            EngineError::Store(StoreError::SubnetExhausted { network, .. }) => (
                ErrorCode::InUse,
                Some(format!(
                    "remove instances from network `{network}`, or use another network (`mayfly network create NAME --subnet CIDR` with a larger subnet)"
                )),
            ),
            EngineError::Store(StoreError::SubnetOverlaps { .. }) => (
                ErrorCode::InUse,
                Some("choose another subnet with `--subnet`, or leave it out to get a free one".into()),
            ),
            EngineError::Store(StoreError::NetworkInUse { .. }) => (
                ErrorCode::InUse,
                Some("remove those instances first (`mayfly rm NAME`)".into()),
            ),
            EngineError::Store(StoreError::VolumeAttached { volume, holder }) => (
                ErrorCode::InUse,
                Some(format!(
                    "detach it first (`mayfly volume detach {volume} {holder}`, with `{holder}` stopped), or use another volume"
                )),
            ),
            EngineError::Conflict { hint, .. } => (ErrorCode::InUse, hint.clone()),
            EngineError::Net(mayfly_net::NetError::Invalid(_)) => {
                (ErrorCode::InvalidArgument, None)
            }
            EngineError::Net(_) => (
                ErrorCode::Unavailable,
                Some("the host's networking refused; the daemon's log says more".into()),
            ),
            EngineError::Store(_) => (ErrorCode::Internal, None),
            EngineError::Image(e) => image_error(e),
            EngineError::Driver(DriverError::TooLarge(_)) => (
                ErrorCode::TooLarge,
                Some("shorten the command line or environment".into()),
            ),
            EngineError::Driver(DriverError::TimedOut { .. }) => (
                ErrorCode::Unavailable,
                Some("the daemon's helper is stuck; other requests may still work, and its log says more".into()),
            ),
            EngineError::Driver(e) => match e.failure_kind() {
                Some(FailureKind::UnknownContainer) => (ErrorCode::WrongState, None),
                Some(FailureKind::ProgramNotFound) => (ErrorCode::NotFound, None),
                Some(FailureKind::ProgramNotExecutable) => (ErrorCode::InvalidArgument, None),
                Some(FailureKind::BadUser) => (
                    ErrorCode::InvalidArgument,
                    Some("give a user or group that the instance's /etc/passwd or /etc/group has, or numeric ids (they need no entry) within those the instance maps, e.g. `--user 1000:1000`".into()),
                ),
                Some(FailureKind::Frozen) => (
                    ErrorCode::WrongState,
                    Some("it is paused (`mayfly resume NAME`), or a snapshot, clone or publish is copying it (retry once that is done)".into()),
                ),
                Some(FailureKind::TimedOut) => (ErrorCode::Unavailable, None),
                Some(FailureKind::LimitRefused) => (
                    ErrorCode::InvalidArgument,
                    Some("change or lift that limit (`mayfly set NAME KEY=VALUE` or `KEY=none`), then start it again".into()),
                ),
                Some(FailureKind::BadMountTarget) => (
                    ErrorCode::InvalidArgument,
                    Some("the instance's own files make that path unusable as a mount point (a symbolic link to nothing, a file where a directory is needed): fix it inside the instance (`mayfly reset NAME` discards a persistent instance's changes), or mount at another path".into()),
                ),
                Some(FailureKind::Busy) => (
                    ErrorCode::Busy,
                    Some("detach the other client first (Ctrl-a q in `mayfly console`), or end its connection".into()),
                ),
                _ => (ErrorCode::Internal, None),
            },
            EngineError::Unavailable(_) => (ErrorCode::Unavailable, None),
            EngineError::Io { .. } | EngineError::Internal(_) => (ErrorCode::Internal, None),
        };
        // Text from outside (entry names, a decoder's complaint about garbage) never drives
        // the client's terminal.
        ApiError {
            code,
            message: mayfly_api::text::printable(&message).into_owned(),
            hint: hint.map(|h| mayfly_api::text::printable(&h).into_owned()),
        }
    }

    /// The shell-style exit code a CLI should use when running a program failed this way
    /// (127: not found, 126: cannot execute, 125: mayfly itself failed).
    pub fn exec_exit_code(&self) -> i32 {
        match self {
            EngineError::ProgramNotFound(_) => 127,
            EngineError::ProgramNotExecutable(_) => 126,
            _ => 125,
        }
    }
}

/// The code and hint of an image error: what an archive or image holds is the user's to fix
/// (4xx); only the host's own failures (a full disk aside, which has its limit) are internal.
fn image_error(e: &ImageError) -> (ErrorCode, Option<String>) {
    let in_layer = matches!(e, ImageError::Layer { .. });
    match e.cause() {
        ImageError::UnsafeEntry { .. } => (
            ErrorCode::InvalidArgument,
            Some("the archive tries to write outside its root; nothing was imported".into()),
        ),
        ImageError::UnsupportedEntry { .. } | ImageError::BadArchive { .. } if in_layer => (
            ErrorCode::InvalidArgument,
            Some(
                "the image's layer is not a valid tar (plain, gzip or zstd): the image is \
                 damaged; copy or save it again. Nothing was imported"
                    .into(),
            ),
        ),
        ImageError::UnsupportedEntry { .. } | ImageError::BadArchive { .. } => (
            ErrorCode::InvalidArgument,
            Some("give a root directory or a .tar, .tar.gz or .tar.zst of one, or an image".into()),
        ),
        ImageError::Limit { limit, .. } => (
            if *limit == mayfly_image::Limit::FreeSpace {
                ErrorCode::Unavailable
            } else {
                ErrorCode::TooLarge
            },
            Some("nothing was imported".into()),
        ),
        ImageError::BadImage { .. }
        | ImageError::Missing { .. }
        | ImageError::BlobMismatch { .. }
        | ImageError::BadBlobDigest(_) => (
            ErrorCode::InvalidArgument,
            Some(
                "the image is incomplete, damaged or not supported: copy or save it again \
                 (e.g. `skopeo copy`, `docker save`); nothing was imported"
                    .into(),
            ),
        ),
        ImageError::ImageChoice { .. } => (
            ErrorCode::InvalidArgument,
            Some(
                "name the image: `mayfly template import NAME SOURCE:TAG` or `--tag TAG` (the \
                 API's `tag`); nothing was imported"
                    .into(),
            ),
        ),
        _ => (ErrorCode::Internal, None),
    }
}

/// A driver error, with "program not found / not executable" lifted to their own variants.
pub(crate) fn from_driver(e: DriverError) -> EngineError {
    match e {
        DriverError::Failed(f) if f.kind == FailureKind::ProgramNotFound => {
            EngineError::ProgramNotFound(f.message)
        }
        DriverError::Failed(f) if f.kind == FailureKind::ProgramNotExecutable => {
            EngineError::ProgramNotExecutable(f.message)
        }
        e => EngineError::Driver(e),
    }
}

/// Maps an I/O error of `action` on `path` to [`EngineError::Io`].
pub(crate) fn io_err<'a>(
    action: &'static str,
    path: &'a std::path::Path,
) -> impl FnOnce(std::io::Error) -> EngineError + 'a {
    move |source| EngineError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// What to do about the users of a template or version that is in use: remove (or, for a
/// running follower of an application, restart) the instances, remove the snapshots, or
/// point the name elsewhere.
fn in_use_hint(users: &[String]) -> String {
    let mut hints = Vec::new();
    if users
        .iter()
        .any(|u| !u.contains('/') && !u.starts_with("the name"))
    {
        hints.push("remove those instances (`mayfly rm NAME`), or restart the ones that follow it onto another version");
    }
    if users.iter().any(|u| u.contains('/')) {
        hints.push("remove those snapshots (`mayfly snapshot rm INSTANCE SNAP`)");
    }
    if users.iter().any(|u| u.starts_with("the name")) {
        hints.push(
            "point the name at another version first (`mayfly template rollback NAME --to N`)",
        );
    }
    hints.join("; ")
}

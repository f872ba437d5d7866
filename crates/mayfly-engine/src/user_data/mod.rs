//! User data and metadata: `/run/mayfly/meta.json`, a NoCloud seed for a template's own
//! cloud-init, and mayfly's own runner for scripts and a cloud-config subset.
//!
//! (Skeleton: filled in by the user-data work.)

use mayfly_api::CreateInstance;
use mayfly_store::{InstanceRecord, UserDataSummary};

use crate::{Engine, EngineError};

/// Checks a launch's user data and metadata; returns the user data's summary and bytes.
pub(crate) fn check_request(
    req: &CreateInstance,
) -> Result<Option<(UserDataSummary, Vec<u8>)>, EngineError> {
    mayfly_api::check_meta(&req.meta)
        .map_err(|e| EngineError::invalid(e, "e.g. `--meta role=web`"))?;
    Ok(None)
}

/// What a start needs for user data and metadata, applied to the instance's spec.
#[derive(Debug, Default)]
pub(crate) struct StartExtras {}

impl StartExtras {
    /// Adds what it holds to the spec of the start.
    pub(crate) fn apply(self, _spec: &mut mayfly_driver::InstanceSpec) {}
}

/// What the start of an instance is given (see [`Engine::user_data_start`]).
#[derive(Debug)]
#[allow(dead_code)] // skeleton: read by the user-data work
pub(crate) struct StartContext<'a> {
    /// The instance.
    pub rec: &'a InstanceRecord,
    /// The template version it starts on.
    pub version: u32,
    /// Its layers, lowest first (to find out whether the template has cloud-init).
    pub layers: &'a [std::path::PathBuf],
    /// Its effective limits.
    pub limits: &'a mayfly_api::Limits,
    /// Its network interfaces.
    pub interfaces: &'a [mayfly_net::Interface],
}

impl Engine {
    /// Prepares instance `ctx.rec`'s metadata and user data for a start.
    pub(crate) async fn user_data_start(
        &self,
        _ctx: StartContext<'_>,
    ) -> Result<StartExtras, EngineError> {
        Ok(StartExtras::default())
    }

    /// What `info` shows of `rec`'s user data.
    pub(crate) fn user_data_info(&self, rec: &InstanceRecord) -> Option<mayfly_api::UserDataInfo> {
        rec.config
            .user_data
            .as_ref()
            .map(|u| mayfly_api::UserDataInfo {
                kind: u.kind,
                handler: mayfly_api::UserDataHandler::Mayfly,
                bytes: u.bytes,
                status: None,
            })
    }
}

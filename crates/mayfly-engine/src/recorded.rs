//! The public actions whose success is an event: each runs its body (`*_unrecorded`, in the
//! file of its concern) and emits its event when it worked. A failure is not an engine event:
//! the API's audit record (`api.<action>`) carries it with the caller.

use std::sync::Arc;

use mayfly_api::{
    AttachVolume, BuildTemplate, CloneRequest, CreateFlavor, CreateSchedule, CreateVolume,
    DetachVolume, FlavorInfo, GcReport, InstanceInfo, PatchTemplate, PublishRequest, ScheduleInfo,
    SnapshotInfo, TemplateInfo, VolumeInfo,
};
use mayfly_image::Progress;
use serde_json::json;

use crate::events::Ev;
use crate::{BuildLog, ChannelReader, Engine, EngineError, ImportOptions, OnAccepted};

fn snapshot_name(instance: &str, snap: &str) -> String {
    format!("{instance}/{snap}")
}

impl Engine {
    /// Snapshots instance `name` (a generated name when `snap` is `None`).
    pub async fn create_snapshot(
        self: &Arc<Self>,
        name: &str,
        snap: Option<String>,
    ) -> Result<SnapshotInfo, EngineError> {
        let info = self.create_snapshot_unrecorded(name, snap).await?;
        self.emit(Ev::new("snapshot.create").on("snapshot", &snapshot_name(name, &info.name)));
        Ok(info)
    }

    /// Removes snapshot `snap` of instance `name`.
    pub async fn remove_snapshot(&self, name: &str, snap: &str) -> Result<(), EngineError> {
        self.remove_snapshot_unrecorded(name, snap).await?;
        self.emit(Ev::new("snapshot.remove").on("snapshot", &snapshot_name(name, snap)));
        Ok(())
    }

    /// Rewinds instance `name` to snapshot `snap`.
    pub async fn restore_snapshot(
        self: &Arc<Self>,
        name: &str,
        snap: &str,
    ) -> Result<InstanceInfo, EngineError> {
        let info = self.restore_snapshot_unrecorded(name, snap).await?;
        self.emit(
            Ev::new("snapshot.restore")
                .on("snapshot", &snapshot_name(name, snap))
                .details(json!({ "instance": name })),
        );
        Ok(info)
    }

    /// Clones instance `src` (or one of its snapshots) as a new instance.
    pub async fn clone_instance(
        self: &Arc<Self>,
        src: &str,
        req: CloneRequest,
    ) -> Result<InstanceInfo, EngineError> {
        let snapshot = req.snapshot.clone();
        let info = self.clone_instance_unrecorded(src, req).await?;
        self.emit(
            Ev::new("instance.clone")
                .on("instance", &info.name)
                .details(json!({ "from": src, "snapshot": snapshot })),
        );
        Ok(info)
    }

    /// Publishes instance `name` (or one of its snapshots) as a template version.
    pub async fn publish(
        self: &Arc<Self>,
        name: &str,
        req: PublishRequest,
    ) -> Result<TemplateInfo, EngineError> {
        let snapshot = req.snapshot.clone();
        let info = self.publish_unrecorded(name, req).await?;
        self.emit(
            Ev::new("instance.publish")
                .on("template", &info.name)
                .details(json!({
                    "instance": name,
                    "snapshot": snapshot,
                    "version": info.current_version,
                })),
        );
        Ok(info)
    }

    /// Imports a template from a path on the host.
    pub async fn import_template_path(
        self: &Arc<Self>,
        name: &str,
        path: &str,
        options: ImportOptions,
        progress: Arc<dyn Progress + Send>,
        accepted: Option<OnAccepted>,
    ) -> Result<TemplateInfo, EngineError> {
        let info = self
            .import_template_path_unrecorded(name, path, options, progress, accepted)
            .await?;
        self.emit_template("template.import", &info, json!({ "source": path }));
        Ok(info)
    }

    /// Imports a template from an archive streamed by the client.
    pub async fn import_template_archive(
        self: &Arc<Self>,
        name: &str,
        reader: ChannelReader,
        options: ImportOptions,
        progress: Arc<dyn Progress + Send>,
        accepted: Option<OnAccepted>,
    ) -> Result<TemplateInfo, EngineError> {
        let info = self
            .import_template_archive_unrecorded(name, reader, options, progress, accepted)
            .await?;
        self.emit_template("template.import", &info, json!({ "source": "archive" }));
        Ok(info)
    }

    /// Removes a template.
    pub async fn remove_template(&self, name: &str) -> Result<(), EngineError> {
        self.remove_template_unrecorded(name).await?;
        self.emit(Ev::new("template.remove").on("template", name));
        Ok(())
    }

    /// Builds a template.
    pub async fn build_template(
        self: &Arc<Self>,
        req: BuildTemplate,
        log: BuildLog,
    ) -> Result<TemplateInfo, EngineError> {
        let info = self.build_template_unrecorded(req, log).await?;
        self.emit_template("template.build", &info, serde_json::Value::Null);
        Ok(info)
    }

    /// Patches a template into a new version.
    pub async fn patch_template(
        self: &Arc<Self>,
        name: &str,
        req: PatchTemplate,
        log: BuildLog,
    ) -> Result<TemplateInfo, EngineError> {
        let info = self.patch_template_unrecorded(name, req, log).await?;
        self.emit_template("template.patch", &info, serde_json::Value::Null);
        Ok(info)
    }

    /// Makes an earlier version of a template current.
    pub async fn rollback_template(
        &self,
        name: &str,
        to: Option<u32>,
    ) -> Result<TemplateInfo, EngineError> {
        let info = self.rollback_template_unrecorded(name, to).await?;
        self.emit_template("template.rollback", &info, serde_json::Value::Null);
        Ok(info)
    }

    /// Removes one version of a template.
    pub async fn remove_template_version(
        &self,
        name: &str,
        version: u32,
    ) -> Result<(), EngineError> {
        self.remove_template_version_unrecorded(name, version)
            .await?;
        self.emit(
            Ev::new("template.remove")
                .on("template", name)
                .details(json!({ "version": version })),
        );
        Ok(())
    }

    /// Removes the layers no template version uses.
    pub async fn collect_garbage(&self) -> Result<GcReport, EngineError> {
        let report = self.collect_garbage_unrecorded().await?;
        self.emit(Ev::new("layer.gc").details(json!({
            "removed": report.removed.len(),
            "bytes": report.bytes,
        })));
        Ok(report)
    }

    fn emit_template(&self, kind: &str, info: &TemplateInfo, mut details: serde_json::Value) {
        if details.is_null() {
            details = json!({});
        }
        details["version"] = json!(info.current_version);
        self.emit(Ev::new(kind).on("template", &info.name).details(details));
    }

    /// Creates a volume.
    pub async fn create_volume(&self, req: CreateVolume) -> Result<VolumeInfo, EngineError> {
        let info = self.create_volume_unrecorded(req).await?;
        self.emit(Ev::new("volume.create").on("volume", &info.name));
        Ok(info)
    }

    /// Removes a volume.
    pub async fn remove_volume(&self, name: &str) -> Result<(), EngineError> {
        self.remove_volume_unrecorded(name).await?;
        self.emit(Ev::new("volume.remove").on("volume", name));
        Ok(())
    }

    /// Attaches a volume to a stopped instance.
    pub async fn attach_volume(
        self: &Arc<Self>,
        name: &str,
        req: AttachVolume,
    ) -> Result<VolumeInfo, EngineError> {
        let details = serde_json::to_value(&req).unwrap_or_default();
        let info = self.attach_volume_unrecorded(name, req).await?;
        self.emit(Ev::new("volume.attach").on("volume", name).details(details));
        Ok(info)
    }

    /// Detaches a volume from a stopped instance.
    pub async fn detach_volume(
        self: &Arc<Self>,
        name: &str,
        req: DetachVolume,
    ) -> Result<VolumeInfo, EngineError> {
        let details = serde_json::to_value(&req).unwrap_or_default();
        let info = self.detach_volume_unrecorded(name, req).await?;
        self.emit(Ev::new("volume.detach").on("volume", name).details(details));
        Ok(info)
    }

    /// Creates a flavor.
    pub async fn create_flavor(&self, req: CreateFlavor) -> Result<FlavorInfo, EngineError> {
        let info = self.create_flavor_unrecorded(req).await?;
        self.emit(Ev::new("flavor.create").on("flavor", &info.name));
        Ok(info)
    }

    /// Removes a flavor.
    pub async fn remove_flavor(&self, name: &str) -> Result<(), EngineError> {
        self.remove_flavor_unrecorded(name).await?;
        self.emit(Ev::new("flavor.remove").on("flavor", name));
        Ok(())
    }

    /// Adds a schedule to instance `name`.
    pub async fn add_schedule(
        &self,
        name: &str,
        req: CreateSchedule,
    ) -> Result<ScheduleInfo, EngineError> {
        let info = self.add_schedule_unrecorded(name, req).await?;
        self.emit(
            Ev::new("schedule.add")
                .on("instance", name)
                .details(serde_json::to_value(&info).unwrap_or_default()),
        );
        Ok(info)
    }

    /// Removes schedule `id` of instance `name`.
    pub async fn remove_schedule(&self, name: &str, id: u64) -> Result<(), EngineError> {
        self.remove_schedule_unrecorded(name, id).await?;
        self.emit(
            Ev::new("schedule.remove")
                .on("instance", name)
                .details(json!({ "id": id })),
        );
        Ok(())
    }
}

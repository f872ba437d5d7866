//! `clone --copy-volumes`: the clone gets a copy of each of the source's volumes, named
//! `<clone>-<volume>`, with the same size limit, mounted at the same paths. The source is
//! held stopped by the clone (its operation lock), so the copies are consistent.

use mayfly_api::{InstanceState, VolumeMount};
use mayfly_store::{InstanceRecord, StoreError, VolumeRecord};

use crate::{Engine, EngineError, lock};

impl Engine {
    /// Copies the volumes of `src` (stopped, its operation lock held by the caller) into new
    /// free volumes for clone `clone`; returns the clone's mounts. On failure none is left.
    pub(crate) async fn copy_volumes(
        &self,
        slot: &crate::slot::Slot,
        src: &InstanceRecord,
        clone: &str,
    ) -> Result<Vec<VolumeMount>, EngineError> {
        if src.config.volumes.is_empty() {
            return Ok(Vec::new());
        }
        let state = lock(&slot.rt).state;
        if state != InstanceState::Stopped {
            return Err(EngineError::WrongState {
                name: src.name.clone(),
                state: state.as_str(),
                action: "copy its volumes",
                hint: Some(format!(
                    "stop it first (`mayfly stop {}`) so that its volumes are copied whole, or clone it without --copy-volumes",
                    src.name
                )),
            });
        }
        let mut made: Vec<String> = Vec::new();
        let mut mounts = Vec::new();
        for m in &src.config.volumes {
            let name = format!("{clone}-{}", m.volume);
            let result = async {
                super::check_volume_name(&name)?;
                let n = m.volume.clone();
                let from = self.db(move |s| s.volume(&n)).await?;
                let n = name.clone();
                if self.db(move |s| Ok(s.volume(&n).is_ok())).await? {
                    return Err(EngineError::Store(StoreError::AlreadyExists {
                        kind: "volume",
                        name: name.clone(),
                    }));
                }
                let rec = VolumeRecord {
                    id: crate::random_hex(8),
                    name: name.clone(),
                    size: from.size,
                    created_at: mayfly_store::now(),
                    instance_id: None,
                    path: None,
                    readonly: false,
                };
                self.add_volume(rec, Some(self.layout.volume_data(&from.id)))
                    .await
            }
            .await;
            if let Err(e) = result {
                self.remove_copies(&made).await;
                return Err(e);
            }
            made.push(name.clone());
            mounts.push(VolumeMount {
                volume: name,
                path: m.path.clone(),
                readonly: m.readonly,
            });
        }
        Ok(mounts)
    }

    /// Removes the volumes `names` made for a clone that failed. Best effort: logged.
    pub(crate) async fn remove_copies(&self, names: &[String]) {
        for n in names {
            if let Err(e) = self.remove_volume(n).await {
                tracing::warn!(
                    "cannot remove volume `{n}` of a failed clone: {}",
                    mayfly_driver::error_chain(&e)
                );
            }
        }
    }
}

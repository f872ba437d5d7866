//! Renaming an instance: the catalogue and the slot at once; a running instance's names on
//! its networks follow at once, its hostname inside at its next start.

use std::sync::Arc;

use mayfly_api::InstanceInfo;
use mayfly_api::names::check_instance_name;

use crate::{Engine, EngineError, lock};

impl Engine {
    /// Renames instance `name` to `new_name`.
    pub(crate) async fn instance_rename(
        self: &Arc<Self>,
        name: &str,
        new_name: &str,
    ) -> Result<InstanceInfo, EngineError> {
        check_instance_name(new_name)
            .map_err(|e| EngineError::invalid(e, "e.g. `mayfly rename web web-old`"))?;
        let slot = self.slot(name)?;
        let _guard = slot.acquire("rename").await?;
        if new_name == name {
            drop(_guard);
            return self.instance_info(name).await;
        }
        if lock(&self.slots).get(new_name).is_some() {
            return Err(EngineError::Store(
                mayfly_store::StoreError::AlreadyExists {
                    kind: "instance",
                    name: new_name.to_owned(),
                },
            ));
        }
        let (id, n) = (slot.id.clone(), new_name.to_owned());
        self.db(move |s| s.rename_instance(&id, &n)).await?;
        {
            let mut slots = lock(&self.slots);
            slots.remove(&slot);
            slots.insert(slot.renamed(new_name));
        }
        let entry = {
            let mut active = lock(&self.net.active);
            active.get_mut(&slot.id).map(|a| {
                a.name = new_name.to_owned();
                a.clone()
            })
        };
        if let Some(a) = entry
            && let Err(e) = self.set_names(&slot.id, &a).await
        {
            tracing::error!(instance = %new_name, "cannot update its name on its networks: {e}");
        }
        drop(_guard);
        let mut info = self.instance_info(new_name).await?;
        if slot.state() != mayfly_api::InstanceState::Stopped {
            info.note = Some("its hostname inside changes at its next start".into());
        }
        Ok(info)
    }
}

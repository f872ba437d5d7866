//! Instance names on their networks' name servers: `NAME` (and `NAME.mayfly`) resolve to the
//! instance's address on that network while it runs. Records are keyed by instance id, so a
//! rename replaces the record and a later instance of the same name never meets a stale one.

use mayfly_net::dns;

use super::Active;
use crate::{Engine, EngineError};

impl Engine {
    /// Publishes instance `id`'s name (`a.name`) on each of its networks.
    pub(crate) async fn set_names(&self, id: &str, a: &Active) -> Result<(), EngineError> {
        for i in &a.interfaces {
            let dir = self.layout.net_dir(&i.network);
            let (key, ip, ip6, name) = (id.to_owned(), i.ipv4, i.ipv6, a.name.clone());
            self.blocking(move || Ok(dns::set_host(&dir, &key, ip, ip6, &name)?))
                .await?;
        }
        Ok(())
    }

    /// Removes instance (or build) `id`'s names from every network (best effort, logged).
    pub(crate) async fn remove_names(&self, id: &str) {
        let nets = self.db(|s| s.networks()).await.unwrap_or_default();
        for n in nets {
            let dir = self.layout.net_dir(&n.name);
            let key = id.to_owned();
            if let Err(e) = self
                .blocking(move || Ok(dns::remove_host(&dir, &key)?))
                .await
            {
                tracing::error!(network = %n.name, owner = %id, "cannot remove a name: {e}");
            }
        }
    }
}

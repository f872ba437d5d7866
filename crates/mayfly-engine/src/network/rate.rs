//! The bandwidth limit of an instance's interfaces (`--net-rate`, bytes per second each way,
//! per interface): part of the instance's effective limits, put in the firewall with its
//! interfaces when its network comes up ([`Engine::instance_net_up`]), changed on a running
//! instance by [`Engine::apply_net_rate`], and gone with its interfaces at the end of its run.
//! The policing itself is `mayfly_net::firewall::rate`.

use mayfly_store::InstanceRecord;

use crate::{Engine, lock};

impl Engine {
    /// The bandwidth limit of `rec`'s interfaces (`None`: unlimited): its effective limits'
    /// (a flavor's rate counts too).
    pub(super) fn net_rate_of(&self, rec: &InstanceRecord) -> Option<u64> {
        self.effective_limits(rec).net_rate
    }

    /// Makes the firewall police running instance `rec`'s interfaces at its (new) effective
    /// rate, or stop policing them: `set` calls it after storing the new limits. Nothing to
    /// do for an instance whose network is not up (stopped, or `--network none`): its next
    /// start reads the rate. On failure the previous rate stays in force and the error says
    /// why.
    pub(crate) async fn apply_net_rate(&self, rec: &InstanceRecord) -> Result<(), String> {
        let rate = self.net_rate_of(rec);
        let _g = self.net.apply.lock().await;
        let previous = {
            let mut active = lock(&self.net.active);
            let Some(a) = active.get_mut(&rec.id) else {
                return Ok(());
            };
            if a.rate == rate {
                return Ok(());
            }
            std::mem::replace(&mut a.rate, rate)
        };
        let applied = match crate::inject("net-rate:apply") {
            Ok(()) => self.apply_firewall_locked().await,
            Err(e) => Err(e),
        };
        if let Err(e) = applied {
            if let Some(a) = lock(&self.net.active).get_mut(&rec.id) {
                a.rate = previous;
            }
            if let Err(e2) = self.apply_firewall_locked().await {
                tracing::error!(instance = %rec.name, "cannot put the firewall back: {e2}");
            }
            return Err(format!(
                "cannot change the network rate in the firewall: {e}"
            ));
        }
        Ok(())
    }
}

//! Admission: a launch or start that would push the memory reserved by instances that are
//! not stopped past the host's memory times `--memory-overcommit` is refused, naming the
//! shortfall and every instance that holds a reservation.
//!
//! Checks and starts are serialised by one engine-wide lock, held from the check until the
//! instance is `starting` (from then on it counts as a holder), so two starts cannot both
//! take the last free share.

use mayfly_api::InstanceState;
use mayfly_api::size::format_size;

use crate::slot::Slot;
use crate::{Engine, EngineError, lock};

/// The engine-wide admission lock (see the module's text).
#[derive(Debug, Default)]
pub(crate) struct AdmissionLock(tokio::sync::Mutex<()>);

impl AdmissionLock {
    pub(crate) async fn lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.0.lock().await
    }
}

/// Why `want` bytes cannot be reserved for `name` when `holders` (name, bytes) hold theirs and
/// the capacity is `mem_total × overcommit`; `None` when they can.
pub(crate) fn refusal(
    name: &str,
    want: u64,
    holders: &[(String, u64)],
    mem_total: u64,
    overcommit: f64,
) -> Option<String> {
    if want == 0 {
        return None;
    }
    let capacity = capacity(mem_total, overcommit);
    let held: u64 = holders.iter().map(|(_, b)| *b).fold(0, u64::saturating_add);
    let total = held.saturating_add(want);
    if total <= capacity {
        return None;
    }
    let short = total - capacity;
    let mut holders: Vec<&(String, u64)> = holders.iter().filter(|(_, b)| *b > 0).collect();
    holders.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let list = if holders.is_empty() {
        "none".to_owned()
    } else {
        holders
            .iter()
            .map(|(n, b)| format!("{n} ({})", format_size(*b)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Some(format!(
        "cannot reserve {} of memory for `{name}`: {} short (reserved by instances that are not stopped: {} of {} = host memory {} × overcommit {overcommit}); holders: {list}",
        format_size(want),
        format_size(short),
        format_size(held),
        format_size(capacity),
        format_size(mem_total),
    ))
}

/// `mem_total × overcommit`, in bytes.
// The product is checked for NaN, sign and range before the cast.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn capacity(mem_total: u64, overcommit: f64) -> u64 {
    let c = mem_total as f64 * overcommit;
    if c.is_nan() || c <= 0.0 {
        0
    } else if c >= u64::MAX as f64 {
        u64::MAX
    } else {
        c as u64
    }
}

impl Engine {
    /// Refuses to start `slot`'s instance when its memory reservation `want` does not fit
    /// beside those of the instances that are not stopped. The caller holds the admission
    /// lock until the instance is `starting`.
    pub(crate) async fn admit(&self, slot: &Slot, want: Option<u64>) -> Result<(), EngineError> {
        let Some(want) = want.filter(|w| *w > 0) else {
            return Ok(());
        };
        let active: Vec<String> = lock(&self.slots)
            .all()
            .filter(|s| s.id != slot.id && s.state() != InstanceState::Stopped)
            .map(|s| s.id.clone())
            .collect();
        let holders: Vec<(String, u64)> = if active.is_empty() {
            Vec::new()
        } else {
            self.db(|s| s.instances())
                .await?
                .iter()
                .filter(|r| active.contains(&r.id))
                .map(|r| {
                    (
                        r.name.clone(),
                        self.effective_limits(r).memory_reserve.unwrap_or(0),
                    )
                })
                .collect()
        };
        let host = super::host::HostFacts::read();
        match refusal(
            &slot.name,
            want,
            &holders,
            host.mem_total,
            self.config.memory_overcommit,
        ) {
            None => Ok(()),
            Some(message) => Err(EngineError::Conflict {
                message,
                hint: Some(format!(
                    "stop an instance that holds a reservation, lower this one's (`mayfly set {} memory-reserve=SIZE`), or start the daemon with a higher --memory-overcommit",
                    slot.name
                )),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn holders(list: &[(&str, u64)]) -> Vec<(String, u64)> {
        list.iter().map(|(n, b)| ((*n).to_owned(), *b)).collect()
    }

    #[test]
    fn a_reservation_that_fits_is_admitted_up_to_the_capacity_exactly() {
        let h = holders(&[("a", 3 * GIB), ("b", GIB)]);
        assert_eq!(refusal("c", 4 * GIB, &h, 8 * GIB, 1.0), None);
        assert!(refusal("c", 4 * GIB + 1, &h, 8 * GIB, 1.0).is_some());
        // Overcommit stretches the capacity.
        assert_eq!(refusal("c", 8 * GIB, &h, 8 * GIB, 1.5), None);
        assert!(refusal("c", 8 * GIB + 1, &h, 8 * GIB, 1.5).is_some());
        // Nothing reserved, nothing refused, even when the others are past the capacity.
        assert_eq!(
            refusal("c", 0, &holders(&[("a", 20 * GIB)]), 8 * GIB, 1.0),
            None
        );
    }

    #[test]
    fn the_refusal_names_the_shortfall_and_each_holder_with_its_reservation() {
        let h = holders(&[("small", GIB), ("idle", 0), ("big", 6 * GIB)]);
        let msg = refusal("web", 2 * GIB, &h, 8 * GIB, 1.0).unwrap();
        assert!(
            msg.contains("cannot reserve 2 GiB of memory for `web`"),
            "{msg}"
        );
        assert!(msg.contains("1 GiB short"), "{msg}");
        assert!(msg.contains("7 GiB of 8 GiB"), "{msg}");
        // Largest first; instances without a reservation are not holders.
        assert!(
            msg.ends_with("holders: big (6 GiB), small (1 GiB)"),
            "{msg}"
        );
        assert!(!msg.contains("idle"), "{msg}");
        // A reservation larger than the whole capacity, with nobody else.
        let msg = refusal("web", 10 * GIB, &[], 8 * GIB, 1.0).unwrap();
        assert!(
            msg.contains("2 GiB short") && msg.ends_with("holders: none"),
            "{msg}"
        );
    }

    #[test]
    fn the_capacity_is_memory_times_overcommit_without_overflow() {
        assert_eq!(capacity(8 * GIB, 0.5), 4 * GIB);
        assert_eq!(capacity(u64::MAX, 4.0), u64::MAX);
        assert_eq!(capacity(8 * GIB, f64::NAN), 0);
    }
}

//! Bandwidth limits of instances' interfaces (`--net-rate`), policed in `bridge mayfly`.
//!
//! Each limited host end (`mv…`) has two named limit objects, one per direction
//! (`<port>-out-<rate>` for what the instance sends, `<port>-in-<rate>` for what it
//! receives), found through two maps keyed by the port's name: `rates_out` in chain
//! `rate_out` (hook prerouting: frames entering the bridge from the port) and `rates_in` in
//! chain `rate_in` (hook postrouting: frames the bridge sends out of the port, whether they
//! come from another port or from the host). A frame over its port's rate is dropped; a
//! port absent from a map is not limited. The two rules do not grow with instances, and a
//! start, an end or a change of rate only adds or deletes objects and map elements
//! ([`changes`]). The rate is in the object's name, so a change adds a new object rather
//! than updating one in place (which the kernel does not do for limits).
//!
//! The token bucket: the kernel's byte limit holds `rate + burst` bytes. `burst` tops it up
//! to [`MIN_BUCKET`] for slow rates, so that one full-size segment of a TCP sender (up to
//! 64 KiB with GSO on the veth) always fits; a frame larger than the bucket could never pass.
//! So the bucket holds at least one second of the rate, which TCP needs to keep its window
//! open under a policer instead of collapsing into retransmission timeouts.

use serde_json::{Value, json};

use super::render::TABLE;
use crate::FirewallState;

/// The chain policing what instances send (prerouting, after the anti-spoofing chain).
pub const CHAIN_OUT: &str = "rate_out";
/// The chain policing what instances receive (postrouting).
pub const CHAIN_IN: &str = "rate_in";
/// Port name to its sending limit.
pub const MAP_OUT: &str = "rates_out";
/// Port name to its receiving limit.
pub const MAP_IN: &str = "rates_in";
/// The smallest token bucket, in bytes (see the module's comment).
pub const MIN_BUCKET: u64 = 128 * 1024;
/// The highest rate the kernel's limit takes in bytes per second (its bucket is computed in
/// nanoseconds × bytes in 64 bits; 16 GiB/s, 137 Gbit/s); above it, this rate applies,
/// which no veth reaches.
pub const MAX_RATE: u64 = 16 << 30;

/// The directions: (chain, hook, priority, map, the port's meta key, the object's infix).
const DIRECTIONS: [(&str, &str, i32, &str, &str, &str); 2] = [
    (CHAIN_OUT, "prerouting", -190, MAP_OUT, "iifname", "out"),
    (CHAIN_IN, "postrouting", 0, MAP_IN, "oifname", "in"),
];

/// The rate and the burst the kernel gets for `rate` bytes per second.
pub fn bucket(rate: u64) -> (u64, u64) {
    let rate = rate.clamp(1, MAX_RATE);
    (rate, MIN_BUCKET.saturating_sub(rate))
}

/// The name of port `port`'s limit object for direction `infix` at `rate`.
pub fn object_name(port: &str, infix: &str, rate: u64) -> String {
    format!("{port}-{infix}-{rate}")
}

fn object(port: &str, infix: &str, rate: u64) -> Value {
    let (r, burst) = bucket(rate);
    json!({
        "family": "bridge", "table": TABLE, "name": object_name(port, infix, rate),
        "rate": r, "per": "second", "rate_unit": "bytes",
        "burst": burst, "burst_unit": "bytes", "inv": true,
    })
}

fn elements<'a>(rates: impl Iterator<Item = (&'a String, &'a u64)>, infix: &str) -> Vec<Value> {
    rates
        .map(|(port, rate)| json!([port, object_name(port, infix, *rate)]))
        .collect()
}

/// Declares the limit objects, the maps and the two chains with their rule in the bridge
/// table (after the table itself; the objects before the maps that name them).
pub fn declare(state: &FirewallState, cmds: &mut Vec<Value>) {
    for (port, rate) in &state.rates {
        for (.., infix) in DIRECTIONS {
            cmds.push(json!({"add": {"limit": object(port, infix, *rate)}}));
        }
    }
    for (chain, hook, prio, map, key, infix) in DIRECTIONS {
        let mut m = json!({
            "family": "bridge", "table": TABLE, "name": map, "type": "ifname", "map": "limit",
        });
        let elems = elements(state.rates.iter(), infix);
        if !elems.is_empty() {
            m["elem"] = Value::Array(elems);
        }
        cmds.push(json!({"add": {"map": m}}));
        cmds.push(json!({"add": {"chain": {
            "family": "bridge", "table": TABLE, "name": chain,
            "type": "filter", "hook": hook, "prio": prio, "policy": "accept",
        }}}));
        cmds.push(json!({"add": {"rule": {
            "family": "bridge", "table": TABLE, "chain": chain, "expr": [
                {"limit": {"map": {"key": {"meta": {"key": key}}, "data": format!("@{map}")}}},
                {"drop": null},
            ],
        }}}));
    }
}

/// The commands that turn the rates of `prev` into those of `next`: (deletions: map
/// elements, then their objects; additions: objects, then map elements). A port whose rate
/// changed is in both (its element is deleted and added again, naming the new object).
pub fn changes(prev: &FirewallState, next: &FirewallState) -> (Vec<Value>, Vec<Value>) {
    let gone = differ(prev, next);
    let new = differ(next, prev);
    let mut deletes = Vec::new();
    let mut adds = Vec::new();
    if !gone.is_empty() {
        for (.., map, _, infix) in DIRECTIONS {
            let keys: Vec<Value> = gone.iter().map(|(port, _)| json!(port)).collect();
            deletes.push(json!({"delete": {"element": {
                "family": "bridge", "table": TABLE, "name": map, "elem": keys
            }}}));
            for (port, rate) in &gone {
                deletes.push(json!({"delete": {"limit": {
                    "family": "bridge", "table": TABLE, "name": object_name(port, infix, **rate)
                }}}));
            }
        }
    }
    if !new.is_empty() {
        for (.., infix) in DIRECTIONS {
            for (port, rate) in &new {
                adds.push(json!({"add": {"limit": object(port, infix, **rate)}}));
            }
        }
        for (.., map, _, infix) in DIRECTIONS {
            adds.push(json!({"add": {"element": {
                "family": "bridge", "table": TABLE, "name": map,
                "elem": elements(new.iter().copied(), infix)
            }}}));
        }
    }
    (deletes, adds)
}

/// The rates of `a` that `b` does not have (another rate, or none).
fn differ<'a>(a: &'a FirewallState, b: &FirewallState) -> Vec<(&'a String, &'a u64)> {
    a.rates
        .iter()
        .filter(|(port, rate)| b.rates.get(*port) != Some(*rate))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(rates: &[(&str, u64)]) -> FirewallState {
        FirewallState {
            rates: rates.iter().map(|(p, r)| ((*p).to_owned(), *r)).collect(),
            ..FirewallState::default()
        }
    }

    fn cmds(v: &[Value], verb: &str, kind: &str) -> Vec<Value> {
        v.iter()
            .filter_map(|c| c.get(verb).and_then(|x| x.get(kind)).cloned())
            .collect()
    }

    #[test]
    fn each_port_gets_a_limit_each_way_through_two_constant_rules() {
        let mut v = Vec::new();
        declare(
            &state(&[("mv0123456789ab0", 262_144), ("mvfedcba9876540", 1 << 30)]),
            &mut v,
        );
        let limits = cmds(&v, "add", "limit");
        assert_eq!(limits.len(), 4, "{limits:?}");
        assert_eq!(
            limits[0],
            json!({"family": "bridge", "table": "mayfly", "name": "mv0123456789ab0-out-262144",
                   "rate": 262_144, "per": "second", "rate_unit": "bytes",
                   "burst": 0, "burst_unit": "bytes", "inv": true}),
            "over the rate (inv): 256 KiB/s already fills the minimal bucket"
        );
        assert_eq!(limits[1]["name"], "mv0123456789ab0-in-262144");
        let maps = cmds(&v, "add", "map");
        assert_eq!(maps.len(), 2);
        assert_eq!(maps[0]["name"], MAP_OUT);
        assert_eq!(maps[0]["map"], "limit");
        assert_eq!(
            maps[1]["elem"],
            json!([
                ["mv0123456789ab0", "mv0123456789ab0-in-262144"],
                ["mvfedcba9876540", "mvfedcba9876540-in-1073741824"]
            ])
        );
        let chains = cmds(&v, "add", "chain");
        assert_eq!(
            (&chains[0]["hook"], &chains[1]["hook"]),
            (&json!("prerouting"), &json!("postrouting"))
        );
        let rules = cmds(&v, "add", "rule");
        assert_eq!(rules.len(), 2, "one rule per direction, whatever the ports");
        let text = serde_json::to_string(&rules).unwrap();
        assert!(
            text.contains(r#"{"limit":{"map":{"data":"@rates_out","key":{"meta":{"key":"iifname"}}}}},{"drop":null}"#),
            "{text}"
        );
        assert!(text.contains(r#""data":"@rates_in","key":{"meta":{"key":"oifname"}}"#));
        // Without rates: the maps and rules are there, empty.
        let mut v = Vec::new();
        declare(&FirewallState::default(), &mut v);
        assert!(cmds(&v, "add", "limit").is_empty());
        assert!(
            cmds(&v, "add", "map")
                .iter()
                .all(|m| m.get("elem").is_none())
        );
        assert_eq!(cmds(&v, "add", "rule").len(), 2);
    }

    #[test]
    fn slow_rates_get_a_bucket_for_a_whole_segment_and_fast_ones_a_kernel_bound() {
        assert_eq!(bucket(1000), (1000, MIN_BUCKET - 1000));
        assert_eq!(bucket(MIN_BUCKET), (MIN_BUCKET, 0));
        assert_eq!(bucket(10 << 20), (10 << 20, 0));
        assert_eq!(bucket(u64::MAX), (MAX_RATE, 0));
        // The kernel computes nanoseconds × (rate + burst) in 64 bits.
        assert!(1_000_000_000u64.checked_mul(MAX_RATE).is_some());
    }

    #[test]
    fn changes_delete_elements_before_objects_and_add_objects_before_elements() {
        let a = ("mv0000000000010", 100_000);
        let b = ("mv0000000000020", 200_000);
        let b2 = ("mv0000000000020", 300_000);
        assert_eq!(
            changes(&state(&[a, b]), &state(&[b, a])),
            (vec![], vec![]),
            "nothing changed"
        );
        // A start of b.
        let (del, add) = changes(&state(&[a]), &state(&[a, b]));
        assert!(del.is_empty());
        let names: Vec<String> = add
            .iter()
            .map(|c| {
                let (kind, x) = c["add"].as_object().unwrap().iter().next().unwrap();
                format!("{kind} {}", x["name"].as_str().unwrap())
            })
            .collect();
        assert_eq!(
            names,
            [
                "limit mv0000000000020-out-200000",
                "limit mv0000000000020-in-200000",
                "element rates_out",
                "element rates_in"
            ]
        );
        // A change of b's rate: its element and objects go, new ones come; a is untouched.
        let (del, add) = changes(&state(&[a, b]), &state(&[a, b2]));
        let text = serde_json::to_string(&del).unwrap();
        assert!(!text.contains("mv0000000000010"), "{text}");
        let kinds: Vec<&str> = del
            .iter()
            .map(|c| {
                c["delete"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .next()
                    .unwrap()
                    .as_str()
            })
            .collect();
        assert_eq!(kinds, ["element", "limit", "element", "limit"]);
        assert_eq!(
            del[0]["delete"]["element"]["elem"],
            json!(["mv0000000000020"])
        );
        assert_eq!(
            del[1]["delete"]["limit"]["name"],
            "mv0000000000020-out-200000"
        );
        assert_eq!(
            add[2]["add"]["element"]["elem"],
            json!([["mv0000000000020", "mv0000000000020-out-300000"]])
        );
        // An end of a.
        let (del, add) = changes(&state(&[a, b]), &state(&[b]));
        assert!(add.is_empty());
        assert_eq!(del.len(), 4);
    }
}

//! Bad limit values, at launch, through the API and with `mayfly set`: each exits non-zero
//! with an error that names the flag and what is accepted (the API answers 4xx with its JSON
//! error body, never 500), and creates or changes nothing: no instance, no directory, no
//! cgroup, the other instance's limits as they were.

mod common;
mod limits_common;

use serde_json::json;

use common::TestDaemon;
use limits_common::{assert_clear_error, held, instance_groups, launch_idle};

#[test]
fn bad_limit_values_are_refused_clearly_and_create_nothing() {
    let d = TestDaemon::start();
    launch_idle(&d, "ref", &[]);
    let groups = instance_groups(&d);
    let cases: &[(&[&str], &[&str])] = &[
        (&["--memory", "12XB"], &["--memory", "12XB", "512M"]),
        (&["--memory=-1"], &["--memory"]),
        (&["--memory", "0"], &["--memory"]),
        (&["--memory", "1K"], &["--memory"]),
        (&["--cpus", "0"], &["--cpus"]),
        (&["--cpus=-2"], &["--cpus"]),
        (&["--cpus", "lots"], &["--cpus"]),
        (&["--pids", "0"], &["--pids"]),
        // Above what the host has.
        (&["--memory", "100T"], &["memory"]),
        (&["--cpus", "512"], &["cpus"]),
        // More than the state filesystem holds (and than an image file may be).
        (&["--disk", "20T"], &["disk", "too large"]),
        (&["--memory-reserve", "100T"], &["memory-reserve"]),
        // Against each other.
        (
            &["--memory", "64M", "--memory-reserve", "128M"],
            &["memory-reserve"],
        ),
        (
            &["--flavor", "no-such-flavor"],
            &["no-such-flavor", "mayfly flavor list"],
        ),
    ];
    for (i, (flags, mentions)) in cases.iter().enumerate() {
        let name = format!("bad{i}");
        let mut args = vec!["launch", "busybox", "--name", name.as_str()];
        args.extend_from_slice(flags);
        let out = d.mayfly(&args);
        let what = format!("launch {}", flags.join(" "));
        assert_clear_error(&out, &what, mentions);
        assert!(d.state_of(&name).is_none(), "{what} created {name}");
        // Nor a stopped one.
        args.push("--no-start");
        let out = d.mayfly(&args);
        assert_clear_error(&out, &format!("{what} --no-start"), mentions);
        assert!(
            d.state_of(&name).is_none(),
            "{what} --no-start created {name}"
        );
    }
    assert_eq!(d.instance_names(), vec!["ref".to_owned()]);
    d.wait_instance_dirs(1);
    assert_eq!(
        instance_groups(&d),
        groups,
        "a refused launch left a cgroup"
    );

    // The API: 400 with its error body, never 500.
    let bodies = [
        json!({"template": "busybox", "name": "api1", "limits": {"memory": 1u64 << 50}}),
        json!({"template": "busybox", "name": "api2", "limits": {"memory": 1u64 << 30, "memory_reserve": 1u64 << 31}}),
        json!({"template": "busybox", "name": "api3", "limits": {"cpus": 0}}),
        json!({"template": "busybox", "name": "api4", "limits": {"pids": 1}}),
        json!({"template": "busybox", "name": "api5", "limits": {"memory": "12XB"}}),
        json!({"template": "busybox", "name": "api6", "limits": {"disk": u64::MAX}}),
    ];
    for body in &bodies {
        let (status, answer) = d.api("POST", "/v1/instances", Some(body));
        assert!(
            (400..500).contains(&status),
            "POST {body}: expected 4xx, got {status} {answer}"
        );
        assert!(
            answer["error"]["code"].is_string() && answer["error"]["message"].is_string(),
            "POST {body}: no error body: {answer}"
        );
    }
    assert_eq!(d.instance_names(), vec!["ref".to_owned()]);
    d.wait_instance_dirs(1);

    // `set`: the same refusals, and the running instance keeps what it had.
    let before = held(&d, "ref");
    let sets: &[(&[&str], &[&str])] = &[
        (&["memory=12XB"], &["memory", "12XB"]),
        (&["memory=-1"], &["memory"]),
        (&["cpus=0"], &["cpus"]),
        (&["memory=100T"], &["memory"]),
        (&["memory=64M", "memory-reserve=128M"], &["memory-reserve"]),
        (&["no-such-key=1"], &["no-such-key"]),
        (&["memory"], &["memory"]),
    ];
    for (changes, mentions) in sets {
        let mut args = vec!["set", "ref"];
        args.extend_from_slice(changes);
        let out = d.mayfly(&args);
        assert_clear_error(&out, &format!("set {}", changes.join(" ")), mentions);
        assert_eq!(
            held(&d, "ref"),
            before,
            "set {} changed the kernel's limits",
            changes.join(" ")
        );
        let limits = d.info("ref")["limits"].clone();
        assert!(
            limits.as_object().is_none_or(|o| o.is_empty()),
            "set {} changed the instance's limits: {limits}",
            changes.join(" ")
        );
    }
    let out = d.mayfly(&["set", "nobody", "memory=64M"]);
    assert_clear_error(&out, "set of an unknown instance", &["nobody"]);
    d.finish();
}

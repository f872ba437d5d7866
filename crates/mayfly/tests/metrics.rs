//! `GET /metrics`: Prometheus text that parses, describes every sample, and moves with what
//! the daemon does (instances by state and mode, requests by action, per-instance use,
//! template disk use, the forker).

mod common;

use std::collections::HashMap;

use common::TestDaemon;

/// One scrape: every sample by its full name with labels (`name{a="b",c="d"}`, labels in the
/// order given), and the `# TYPE` of every family.
struct Scrape {
    samples: HashMap<String, f64>,
    types: HashMap<String, String>,
}

impl Scrape {
    fn get(&self, key: &str) -> Option<f64> {
        self.samples.get(key).copied()
    }

    fn value(&self, key: &str) -> f64 {
        self.get(key).unwrap_or_else(|| {
            let mut keys: Vec<_> = self.samples.keys().collect();
            keys.sort();
            panic!("no sample {key}; samples: {keys:#?}")
        })
    }
}

/// Parses the text exposition format strictly enough to catch a malformed line: every
/// sample line is `NAME[{LABELS}] VALUE`, its family has a `# TYPE`, values are numbers.
fn parse(text: &str) -> Scrape {
    let mut samples = HashMap::new();
    let mut types = HashMap::new();
    let mut helped = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE NAME KIND");
            assert!(
                ["counter", "gauge", "histogram", "unknown"].contains(&kind),
                "{line}"
            );
            types.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.push(rest.split(' ').next().unwrap_or_default().to_owned());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (key, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|e| panic!("bad value in {line:?}: {e}"));
        let name = key.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        if let Some(labels) = key.strip_prefix(name)
            && !labels.is_empty()
        {
            assert!(
                labels.starts_with('{') && labels.ends_with('}'),
                "bad labels in {line:?}"
            );
        }
        let family = types
            .keys()
            .filter(|f| name.starts_with(f.as_str()))
            .max_by_key(|f| f.len())
            .unwrap_or_else(|| panic!("sample {name} has no # TYPE"));
        assert!(helped.contains(family), "family {family} has no # HELP");
        samples.insert(key.to_owned(), value);
    }
    assert!(text.ends_with("# EOF\n"), "no # EOF at the end");
    Scrape { samples, types }
}

fn scrape(d: &TestDaemon) -> Scrape {
    let r = d.api_raw("GET", "/metrics", "text/plain", b"");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/openmetrics-text")),
        "{:?}",
        r.headers
    );
    parse(&String::from_utf8_lossy(&r.body))
}

#[test]
fn metrics_parse_and_move_with_operations() {
    let d = TestDaemon::start();
    let before = scrape(&d);
    for family in [
        "mayfly_instances",
        "mayfly_api_requests",
        "mayfly_api_request_duration_seconds",
        "mayfly_template_disk_bytes",
        "mayfly_layers_disk_bytes",
        "mayfly_forker_up",
        "mayfly_forker_restarts",
        "mayfly_events_dropped",
    ] {
        assert!(before.types.contains_key(family), "no family {family}");
    }
    let running = r#"mayfly_instances{state="running",mode="transient"}"#;
    assert_eq!(before.value(running), 0.0);
    assert_eq!(before.value("mayfly_forker_up"), 1.0);
    assert_eq!(before.value("mayfly_events_dropped_total"), 0.0);
    assert!(before.value(r#"mayfly_template_disk_bytes{template="busybox"}"#) > 0.0);
    assert!(before.value("mayfly_layers_disk_bytes") > 0.0);
    let created = r#"mayfly_api_requests_total{action="instance.create",status="201"}"#;
    assert_eq!(before.get(created), None);

    common::launch(
        &d,
        "mt-box",
        &["--memory", "64M"],
        Some("head -c 8000000 /dev/zero > /tmp/fill; while :; do sleep 1; done"),
    );
    d.fails(&["start", "mt-nosuch"]);
    let after = scrape(&d);
    // Per-instance families exist once an instance runs.
    for family in [
        "mayfly_instance_cpu_seconds",
        "mayfly_instance_memory_bytes",
    ] {
        assert!(after.types.contains_key(family), "no family {family}");
    }
    assert_eq!(after.value(running), 1.0);
    assert_eq!(after.value(created), 1.0);
    assert_eq!(
        after.value(r#"mayfly_api_requests_total{action="instance.start",status="404"}"#),
        1.0
    );
    let count = r#"mayfly_api_request_duration_seconds_count{action="instance.create"}"#;
    assert_eq!(after.value(count), 1.0);
    assert!(
        after.value(r#"mayfly_api_request_duration_seconds_sum{action="instance.create"}"#) > 0.0
    );
    assert_eq!(
        after.value(
            r#"mayfly_api_request_duration_seconds_bucket{le="+Inf",action="instance.create"}"#
        ),
        1.0
    );
    assert!(after.value(r#"mayfly_instance_memory_bytes{instance="mt-box"}"#) > 0.0);
    assert_eq!(
        after.value(r#"mayfly_instance_memory_limit_bytes{instance="mt-box"}"#),
        64.0 * 1024.0 * 1024.0
    );
    assert!(
        after
            .get(r#"mayfly_instance_cpu_seconds_total{instance="mt-box"}"#)
            .is_some()
    );
    // The scrapes count themselves (one before this one).
    assert!(after.value(r#"mayfly_api_requests_total{action="metrics",status="200"}"#) >= 1.0);

    d.ok(&["stop", "mt-box"]);
    let stopped = scrape(&d);
    assert_eq!(stopped.value(running), 0.0);
    assert_eq!(
        stopped.value(r#"mayfly_instances{state="stopped",mode="transient"}"#),
        1.0
    );
    assert_eq!(
        stopped.get(r#"mayfly_instance_memory_bytes{instance="mt-box"}"#),
        None,
        "a stopped instance has no memory sample"
    );
    d.finish();
}

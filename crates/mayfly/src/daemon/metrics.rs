//! `GET /metrics`: Prometheus text (the `prometheus-client` crate's encoding).
//!
//! Two kinds of metrics. Request counts and latencies are kept as the requests happen (by
//! [`super::audit::around`], keyed by the action table's ids) in families that live as long as
//! the daemon. Everything else is read at the scrape from what the engine already holds: the
//! instances' states and modes, the running instances' cgroup counters (`mayfly stats`), the
//! catalogue's layer sizes (measured when each layer was made: no disk walk per scrape), the
//! forker's pid and restarts, the events dropped by the event log.

use std::collections::{BTreeMap, HashSet};
use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::Response;
use mayfly_api::{ApiError, ErrorCode};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use super::api::{ApiFailure, AppState};

/// The content type of the OpenMetrics text format (what `prometheus-client` writes).
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(&'static str, String)>;

/// The metrics kept as requests happen.
struct Requests {
    /// By action id and HTTP status.
    count: Family<Labels, Counter>,
    /// By action id: time to the response's head (for a stream: until it starts).
    latency: Family<Labels, Histogram, fn() -> Histogram>,
}

fn latency_histogram() -> Histogram {
    // 1 ms to about 4.4 minutes.
    Histogram::new(exponential_buckets(0.001, 4.0, 10))
}

fn requests() -> &'static Requests {
    static REQUESTS: OnceLock<Requests> = OnceLock::new();
    REQUESTS.get_or_init(|| Requests {
        count: Family::default(),
        latency: Family::new_with_constructor(latency_histogram),
    })
}

/// Counts a request of action `id` that was answered `status` after `elapsed`.
pub(crate) fn observe(id: &'static str, status: u16, elapsed: Duration) {
    let r = requests();
    r.count
        .get_or_create(&vec![
            ("action", id.to_owned()),
            ("status", status.to_string()),
        ])
        .inc();
    r.latency
        .get_or_create(&vec![("action", id.to_owned())])
        .observe(elapsed.as_secs_f64());
}

fn gauge(value: f64) -> Gauge<f64, AtomicU64> {
    let g = Gauge::<f64, AtomicU64>::default();
    g.set(value);
    g
}

fn counter(value: f64) -> Counter<f64, AtomicU64> {
    let c = Counter::<f64, AtomicU64>::default();
    c.inc_by(value);
    c
}

#[allow(clippy::cast_precision_loss)] // byte counts far below 2^53
fn f(v: u64) -> f64 {
    v as f64
}

/// `GET /metrics`.
pub(crate) async fn metrics(State(engine): State<AppState>) -> Result<Response, ApiFailure> {
    let mut registry = Registry::with_prefix("mayfly");

    // Instances by state and mode (every combination that exists, zeros included).
    let instances = engine.list_instances().await?;
    let by_state: Family<Labels, Gauge> = Family::default();
    for state in ["stopped", "starting", "running", "paused", "stopping"] {
        for mode in ["transient", "persistent", "ephemeral"] {
            let _ = by_state.get_or_create(&vec![
                ("state", state.to_owned()),
                ("mode", mode.to_owned()),
            ]);
        }
    }
    for i in &instances {
        by_state
            .get_or_create(&vec![
                ("state", i.state.as_str().to_owned()),
                ("mode", i.mode.as_str().to_owned()),
            ])
            .inc();
    }
    registry.register("instances", "Instances by state and mode", by_state);

    // Requests.
    let r = requests();
    registry.register(
        "api_requests",
        "API requests by action id and HTTP status",
        r.count.clone(),
    );
    registry.register_with_unit(
        "api_request_duration",
        "Time to answer an API request by action id (for a stream: until its head)",
        Unit::Seconds,
        r.latency.clone(),
    );

    // Per running instance: CPU and memory, from its cgroup.
    let stats = engine.usage_now().await?;
    let cpu: Family<Labels, Counter<f64, AtomicU64>> = Family::default();
    let memory: Family<Labels, Gauge<f64, AtomicU64>> = Family::default();
    let memory_limit: Family<Labels, Gauge<f64, AtomicU64>> = Family::default();
    let pids: Family<Labels, Gauge<f64, AtomicU64>> = Family::default();
    for s in &stats {
        let l = vec![("instance", s.name.clone())];
        #[allow(clippy::cast_precision_loss)]
        cpu.get_or_create(&l).inc_by(s.cpu_usage_ns as f64 / 1e9);
        memory.get_or_create(&l).set(f(s.memory_bytes));
        if let Some(limit) = s.memory_limit {
            memory_limit.get_or_create(&l).set(f(limit));
        }
        pids.get_or_create(&l).set(f(s.pids));
    }
    registry.register_with_unit(
        "instance_cpu",
        "CPU time used by a running instance's current run",
        Unit::Seconds,
        cpu,
    );
    registry.register_with_unit(
        "instance_memory",
        "Memory used by a running instance",
        Unit::Bytes,
        memory,
    );
    registry.register_with_unit(
        "instance_memory_limit",
        "Memory limit of a running instance (when it has one)",
        Unit::Bytes,
        memory_limit,
    );
    registry.register("instance_pids", "Processes of a running instance", pids);

    // Templates and layers, from the sizes the catalogue holds.
    let templates = engine.list_templates().await?;
    let template_bytes: Family<Labels, Gauge<f64, AtomicU64>> = Family::default();
    let mut all_layers: BTreeMap<String, u64> = BTreeMap::new();
    for t in &templates {
        let mut seen = HashSet::new();
        let mut bytes = 0u64;
        for l in t.versions.iter().flat_map(|v| v.layers.iter()) {
            if seen.insert(l.digest.as_str()) {
                bytes = bytes.saturating_add(l.size);
            }
            all_layers.insert(l.digest.clone(), l.size);
        }
        template_bytes
            .get_or_create(&vec![("template", t.name.clone())])
            .set(f(bytes));
    }
    registry.register_with_unit(
        "template_disk",
        "File content of a template's layers, every version (layers shared between versions counted once)",
        Unit::Bytes,
        template_bytes,
    );
    registry.register_with_unit(
        "layers_disk",
        "File content of every layer the templates use (each counted once)",
        Unit::Bytes,
        gauge(f(all_layers.values().sum())),
    );
    registry.register(
        "layers",
        "Layers the templates use",
        gauge(f(all_layers.len() as u64)),
    );

    // The forker and the event log.
    registry.register(
        "forker_up",
        "Whether the forker helper runs",
        gauge(if engine.forker_pid().is_some() {
            1.0
        } else {
            0.0
        }),
    );
    registry.register(
        "forker_restarts",
        "Times the forker helper was lost and a new one started",
        counter(f(engine.forker_restarts())),
    );
    registry.register(
        "events_dropped",
        "Events the event log could not keep (it fell behind or could not be written)",
        counter(f(engine.event_bus().dropped())),
    );

    let mut text = String::new();
    encode(&mut text, &registry).map_err(|e| {
        ApiFailure(ApiError::new(
            ErrorCode::Internal,
            format!("cannot encode the metrics: {e}"),
        ))
    })?;
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, CONTENT_TYPE)
        .body(axum::body::Body::from(text))
        .unwrap_or_default())
}

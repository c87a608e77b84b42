//! `/metrics` in the Prometheus text format: requests and their latencies by verb and
//! resource (upstream's `apiserver_request_total` and `apiserver_request_duration_seconds`),
//! open watches, and the storage's revisions.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    durations: Family<Labels, Histogram, fn() -> Histogram>,
    watchers: Family<Labels, Gauge>,
    revision: Gauge,
    compact_revision: Gauge,
    batches: Counter,
    writes: Counter,
}

/// The storage's figures as `/metrics` shows them.
pub struct StorageFigures {
    pub revision: i64,
    pub compact_revision: i64,
    pub writes: kelp_storage::WriteStats,
}

/// What a request was, for its labels.
pub struct RequestLabels<'a> {
    pub verb: &'a str,
    pub group: &'a str,
    pub version: &'a str,
    pub resource: &'a str,
}

impl RequestLabels<'_> {
    fn labels(&self) -> Labels {
        vec![
            ("verb".into(), self.verb.to_uppercase()),
            ("group".into(), self.group.into()),
            ("version".into(), self.version.into()),
            ("resource".into(), self.resource.into()),
        ]
    }
}

fn latency_histogram() -> Histogram {
    // 1 ms to about 33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<Labels, Counter>::default();
        let durations =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let watchers = Family::<Labels, Gauge>::default();
        let (revision, compact_revision) = (Gauge::default(), Gauge::default());
        let (batches, writes) = (Counter::default(), Counter::default());
        registry.register(
            "apiserver_request",
            "Requests by verb, resource and HTTP code",
            requests.clone(),
        );
        registry.register(
            "apiserver_request_duration_seconds",
            "Request latency by verb and resource",
            durations.clone(),
        );
        registry.register(
            "apiserver_registered_watchers",
            "Open watches by resource",
            watchers.clone(),
        );
        registry.register(
            "kelp_storage_revision",
            "The storage's head revision",
            revision.clone(),
        );
        registry.register(
            "kelp_storage_compact_revision",
            "The storage's compact revision",
            compact_revision.clone(),
        );
        registry.register(
            "kelp_storage_write_batches",
            "Write transactions this process committed (group commit's batches)",
            batches.clone(),
        );
        registry.register(
            "kelp_storage_writes",
            "Writes this process committed",
            writes.clone(),
        );
        Metrics {
            registry,
            requests,
            durations,
            watchers,
            revision,
            compact_revision,
            batches,
            writes,
        }
    }

    pub fn observe(&self, request: &RequestLabels<'_>, code: u16, elapsed: Duration) {
        let mut labels = request.labels();
        self.durations
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        labels.push(("code".into(), code.to_string()));
        self.requests.get_or_create(&labels).inc();
    }

    /// Counts an open watch until the guard is dropped.
    pub fn watcher(self: &Arc<Self>, group: &str, version: &str, resource: &str) -> WatchGuard {
        let labels: Labels = vec![
            ("group".into(), group.into()),
            ("version".into(), version.into()),
            ("resource".into(), resource.into()),
        ];
        self.watchers.get_or_create(&labels).inc();
        WatchGuard {
            metrics: self.clone(),
            labels,
        }
    }

    pub fn encode(&self, storage: &StorageFigures) -> String {
        self.revision.set(storage.revision);
        self.compact_revision.set(storage.compact_revision);
        // Counters only go up: each takes what its storage figure gained since.
        for (counter, now) in [
            (&self.batches, storage.writes.batches),
            (&self.writes, storage.writes.writes),
        ] {
            counter.inc_by(now.saturating_sub(counter.get()));
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

pub struct WatchGuard {
    metrics: Arc<Metrics>,
    labels: Labels,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.metrics.watchers.get_or_create(&self.labels).dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_watches_are_counted() {
        let m = Arc::new(Metrics::new());
        let req = RequestLabels {
            verb: "list",
            group: "",
            version: "v1",
            resource: "pods",
        };
        m.observe(&req, 200, Duration::from_millis(3));
        let guard = m.watcher("apps", "v1", "deployments");
        let figures = |batches, writes| StorageFigures {
            revision: 42,
            compact_revision: 7,
            writes: kelp_storage::WriteStats { batches, writes },
        };
        let text = m.encode(&figures(3, 10));
        assert!(text.contains(r#"apiserver_request_total{verb="LIST",group="",version="v1",resource="pods",code="200"} 1"#), "{text}");
        assert!(text.contains(r#"apiserver_registered_watchers{group="apps",version="v1",resource="deployments"} 1"#), "{text}");
        assert!(text.contains("kelp_storage_revision 42"), "{text}");
        assert!(
            text.contains("kelp_storage_write_batches_total 3"),
            "{text}"
        );
        drop(guard);
        let text = m.encode(&figures(5, 12));
        assert!(text.contains("kelp_storage_writes_total 12"), "{text}");
        assert!(text.contains(
            r#"apiserver_registered_watchers{group="apps",version="v1",resource="deployments"} 0"#
        ));
    }
}

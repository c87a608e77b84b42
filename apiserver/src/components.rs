//! ComponentStatus (core/v1, deprecated since v1.19 and still served): the control plane's
//! health, computed on each read and never stored (upstream's
//! pkg/registry/core/componentstatus).
//!
//! Upstream probes the scheduler's and the controller-manager's `/healthz` and its etcd
//! servers. Kelp's scheduler and controller-manager run inside `kelp server` or as processes of
//! their own, anywhere, with standbys; what shows one of them at work is its leader Lease. So
//! each is Healthy while a holder renews its Lease (kube-system/kube-scheduler,
//! kube-system/kube-controller-manager) within the lease duration, as a standby judges it.
//! The storage is probed as upstream probes etcd, under upstream's name `etcd-0`: the name
//! `kubectl get cs` readers and health tooling look for, and the one Kelp's `/readyz` already
//! gives its storage check.

use std::time::Duration;

use kelp_storage::Backend;
use serde_json::{Map, Value, json};

use crate::registry;

/// How long a probe may take (upstream's probeTimeOut).
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// The components, in the order a list shows them: name, and the leader Lease in
/// kube-system that stands for it (None: the storage).
const COMPONENTS: [(&str, Option<&str>); 3] = [
    ("scheduler", Some("kube-scheduler")),
    ("controller-manager", Some("kube-controller-manager")),
    ("etcd-0", None),
];

/// A probe's outcome as upstream's ComponentCondition records it: Unknown when the probe
/// itself failed (its error says why), False when the component is unhealthy.
#[derive(Debug, PartialEq, Eq)]
struct Health {
    status: &'static str,
    message: String,
    error: String,
}

impl Health {
    /// Upstream's message for a healthy `/healthz`.
    fn ok() -> Health {
        Health {
            status: "True",
            message: "ok".into(),
            error: String::new(),
        }
    }

    fn unhealthy(message: String) -> Health {
        Health {
            status: "False",
            message,
            error: String::new(),
        }
    }

    fn unknown(error: String) -> Health {
        Health {
            status: "Unknown",
            message: String::new(),
            error,
        }
    }
}

/// Every component's status, in [`COMPONENTS`] order; the probes run at once.
pub async fn statuses(backend: &Backend) -> Vec<Value> {
    let probes = COMPONENTS
        .map(|(name, lease)| async move { status_object(name, probe(backend, lease).await) });
    futures::future::join_all(probes).await
}

/// One component's status; None if there is no such component.
pub async fn status(backend: &Backend, name: &str) -> Option<Value> {
    let (name, lease) = COMPONENTS.into_iter().find(|(n, _)| *n == name)?;
    Some(status_object(name, probe(backend, lease).await))
}

fn status_object(name: &str, health: Health) -> Value {
    // Message and error are omitted when empty, as upstream's JSON omits them.
    let mut condition = Map::new();
    condition.insert("type".into(), json!("Healthy"));
    condition.insert("status".into(), json!(health.status));
    if !health.message.is_empty() {
        condition.insert("message".into(), json!(health.message));
    }
    if !health.error.is_empty() {
        condition.insert("error".into(), json!(health.error));
    }
    json!({
        "kind": "ComponentStatus",
        "apiVersion": "v1",
        "metadata": {"name": name, "creationTimestamp": null},
        "conditions": [condition],
    })
}

async fn probe(backend: &Backend, lease: Option<&str>) -> Health {
    let probed = tokio::time::timeout(PROBE_TIMEOUT, async {
        match lease {
            Some(lease) => leader(backend, lease).await,
            None => storage(backend).await,
        }
    })
    .await;
    probed.unwrap_or_else(|_| {
        Health::unknown(format!("no answer within {}s", PROBE_TIMEOUT.as_secs()))
    })
}

/// The storage answers a read (upstream's etcd probe: failure carries the error).
async fn storage(backend: &Backend) -> Health {
    match backend.revisions().await {
        Ok(_) => Health::ok(),
        Err(e) => Health {
            status: "False",
            message: String::new(),
            error: e.to_string(),
        },
    }
}

/// Whether the component's leader Lease is held and renewed in time.
async fn leader(backend: &Backend, lease: &str) -> Health {
    let Some(leases) = registry::lookup("coordination.k8s.io", "v1", "leases") else {
        return Health::unknown("coordination.k8s.io/v1 leases are not served".into());
    };
    let stored = match backend.get(leases.key(Some("kube-system"), lease)).await {
        Ok((stored, _)) => stored,
        Err(e) => return Health::unknown(e.to_string()),
    };
    let Some(kv) = stored else {
        return Health::unhealthy(format!("no leader: Lease kube-system/{lease} not found"));
    };
    match serde_json::from_slice::<Value>(&kv.value) {
        Ok(object) => judge(lease, &object, jiff::Timestamp::now()),
        Err(e) => Health::unknown(format!("Lease kube-system/{lease} cannot be read: {e}")),
    }
}

/// Healthy while a holder renewed the Lease no longer ago than its lease duration: past that,
/// a standby candidate would take the lease (client-go's leaderelection), so no instance is
/// known to be at work.
fn judge(lease: &str, object: &Value, now: jiff::Timestamp) -> Health {
    let spec = |field: &str| object.pointer(&format!("/spec/{field}"));
    let holder = spec("holderIdentity").and_then(Value::as_str).unwrap_or("");
    if holder.is_empty() {
        return Health::unhealthy(format!(
            "no leader: Lease kube-system/{lease} has no holder"
        ));
    }
    let renewed = spec("renewTime")
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
    let Some(renewed) = renewed else {
        return Health::unhealthy(format!(
            "leader {holder} has never renewed Lease kube-system/{lease}"
        ));
    };
    let duration = spec("leaseDurationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let silent_ms = now.as_millisecond() - renewed.as_millisecond();
    if silent_ms > duration.saturating_mul(1000) {
        return Health::unhealthy(format!(
            "leader {holder} last renewed Lease kube-system/{lease} {}s ago, longer than its {duration}s lease duration",
            silent_ms / 1000
        ));
    }
    Health::ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed: &str, duration: i64) -> Value {
        json!({"spec": {"holderIdentity": holder, "renewTime": renewed, "leaseDurationSeconds": duration}})
    }

    #[test]
    fn a_leader_is_healthy_until_its_lease_duration_passes_unrenewed() {
        let now: jiff::Timestamp = "2025-05-01T12:00:30Z".parse().unwrap();
        let fresh = lease("kelp-1", "2025-05-01T12:00:20.000000Z", 15);
        assert_eq!(judge("kube-scheduler", &fresh, now), Health::ok());
        let stale = lease("kelp-1", "2025-05-01T12:00:10.000000Z", 15);
        let health = judge("kube-scheduler", &stale, now);
        assert_eq!(health.status, "False");
        assert_eq!(
            health.message,
            "leader kelp-1 last renewed Lease kube-system/kube-scheduler 20s ago, longer than its 15s lease duration"
        );
        let released = lease("", "2025-05-01T12:00:29.000000Z", 15);
        assert_eq!(
            judge("kube-scheduler", &released, now).message,
            "no leader: Lease kube-system/kube-scheduler has no holder"
        );
    }

    #[test]
    fn conditions_omit_an_empty_message_or_error() {
        let healthy = status_object("scheduler", Health::ok());
        assert_eq!(
            healthy["conditions"],
            json!([{"type": "Healthy", "status": "True", "message": "ok"}])
        );
        let failed = status_object("etcd-0", Health::unknown("timeout".into()));
        assert_eq!(
            failed["conditions"],
            json!([{"type": "Healthy", "status": "Unknown", "error": "timeout"}])
        );
    }
}

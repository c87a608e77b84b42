//! What a pod asks of a node and what a node offers, as upstream's scheduler counts them:
//! CPU in millicores, memory and ephemeral storage in bytes, other (extended) resources as
//! whole units.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as KQuantity;
use kelp_admission::quantity::Quantity;

/// Upstream's defaults for containers that request nothing, used when spreading by score
/// (so that many request-less pods do not pile onto one node).
pub const DEFAULT_MILLI_CPU: i64 = 100;
pub const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    pub scalar: BTreeMap<String, i64>,
}

fn value(name: &str, q: &KQuantity) -> i64 {
    let Some(q) = Quantity::parse(&q.0) else {
        return 0;
    };
    if name == "cpu" {
        q.milli_ceil()
    } else {
        q.value_ceil()
    }
}

impl Resources {
    /// From a resource list (requests, allocatable); `pods` is not a resource here.
    pub fn from_list(list: Option<&BTreeMap<String, KQuantity>>) -> Resources {
        let mut r = Resources::default();
        for (name, q) in list.into_iter().flatten() {
            r.set(name, value(name, q));
        }
        r
    }

    fn set(&mut self, name: &str, v: i64) {
        match name {
            "cpu" => self.milli_cpu = v,
            "memory" => self.memory = v,
            "ephemeral-storage" => self.ephemeral_storage = v,
            "pods" => {}
            other => {
                self.scalar.insert(other.to_string(), v);
            }
        }
    }

    pub fn add(&mut self, other: &Resources) {
        self.milli_cpu += other.milli_cpu;
        self.memory += other.memory;
        self.ephemeral_storage += other.ephemeral_storage;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_default() += v;
        }
    }

    pub fn sub(&mut self, other: &Resources) {
        self.milli_cpu -= other.milli_cpu;
        self.memory -= other.memory;
        self.ephemeral_storage -= other.ephemeral_storage;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_default() -= v;
        }
    }

    /// Each resource the larger of the two.
    fn max_with(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        for (k, v) in &other.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }

    pub fn is_zero(&self) -> bool {
        self.milli_cpu == 0
            && self.memory == 0
            && self.ephemeral_storage == 0
            && self.scalar.values().all(|v| *v == 0)
    }
}

/// A container's requests; a resource with a limit but no request requests its limit (the
/// API server defaults it so; old objects may lack it).
fn container_requests(c: &Container) -> Resources {
    let res = c.resources.as_ref();
    let mut r = Resources::from_list(res.and_then(|r| r.limits.as_ref()));
    for (name, q) in res.and_then(|r| r.requests.as_ref()).into_iter().flatten() {
        r.set(name, value(name, q));
    }
    r
}

/// The pod's effective request (upstream's PodRequests): the containers' sum with the
/// restartable init containers (sidecars), or the largest init container's need while it
/// runs beside the sidecars started before it, whichever is larger, plus the overhead.
pub fn pod_requests(pod: &Pod) -> Resources {
    let Some(spec) = pod.spec.as_ref() else {
        return Resources::default();
    };
    let mut total = Resources::default();
    for c in &spec.containers {
        total.add(&container_requests(c));
    }
    let mut sidecars = Resources::default();
    let mut init_peak = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let r = container_requests(c);
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars.add(&r);
            init_peak.max_with(&sidecars);
        } else {
            let mut during = sidecars.clone();
            during.add(&r);
            init_peak.max_with(&during);
        }
    }
    total.add(&sidecars);
    total.max_with(&init_peak);
    total.add(&Resources::from_list(spec.overhead.as_ref()));
    total
}

/// CPU and memory as scoring counts them: containers that request none count upstream's
/// defaults.
pub fn non_zero_requests(pod: &Pod) -> (i64, i64) {
    let Some(spec) = pod.spec.as_ref() else {
        return (0, 0);
    };
    let mut cpu = 0;
    let mut memory = 0;
    for c in &spec.containers {
        let r = container_requests(c);
        let has = |name: &str| {
            let res = c.resources.as_ref();
            [
                res.and_then(|r| r.requests.as_ref()),
                res.and_then(|r| r.limits.as_ref()),
            ]
            .into_iter()
            .flatten()
            .any(|l| l.contains_key(name))
        };
        cpu += if has("cpu") {
            r.milli_cpu
        } else {
            DEFAULT_MILLI_CPU
        };
        memory += if has("memory") {
            r.memory
        } else {
            DEFAULT_MEMORY
        };
    }
    let overhead = Resources::from_list(spec.overhead.as_ref());
    (cpu + overhead.milli_cpu, memory + overhead.memory)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).expect("pod")
    }

    #[test]
    fn pod_requests_count_sidecars_and_the_init_peak() {
        let p = pod(serde_json::json!({"spec": {
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}},
                {"name": "b", "resources": {"limits": {"cpu": "1"}}}
            ],
            "initContainers": [
                {"name": "big", "resources": {"requests": {"cpu": "4", "example.com/gpu": "1"}}},
                {"name": "side", "restartPolicy": "Always", "resources": {"requests": {"memory": "512Mi"}}}
            ],
            "overhead": {"cpu": "100m"}
        }}));
        let r = pod_requests(&p);
        assert_eq!(r.milli_cpu, 4100);
        assert_eq!(r.memory, (1 << 30) + (512 << 20));
        assert_eq!(r.scalar.get("example.com/gpu"), Some(&1));
        // Container b names no memory: it counts upstream's 200Mi default.
        assert_eq!(non_zero_requests(&p), (1600, (1 << 30) + DEFAULT_MEMORY));
        let empty = pod(serde_json::json!({"spec": {"containers": [{"name": "a"}]}}));
        assert!(pod_requests(&empty).is_zero());
        assert_eq!(
            non_zero_requests(&empty),
            (DEFAULT_MILLI_CPU, DEFAULT_MEMORY)
        );
    }
}

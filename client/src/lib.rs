//! What Kelp's API clients share: a client from a kubeconfig, shared informers (one watch
//! per resource, a cache and a change feed for every controller that reads it) and leader
//! election by Lease. These components reach the cluster only over HTTPS, like upstream's.

pub mod events;
pub mod informer;
pub mod leader;

use std::path::Path;

use anyhow::Context;
use kube::config::{KubeConfigOptions, Kubeconfig};

pub use informer::Informer;

/// A client configuration from a kubeconfig file (its current context).
pub async fn config_from_file(path: &Path) -> anyhow::Result<kube::Config> {
    let kubeconfig =
        Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("loading {}", path.display()))
}

/// Configures a component's client as upstream's clients are:
/// - the component is named in every request's User-Agent
///   (`kube-controller-manager/v1.33.0 (linux/amd64) kelp`): the API server takes the part
///   before the first '/' as the field manager of its writes;
/// - a 429, 503 or 504 is returned to the caller, not retried by the client. kube-rs retries
///   them up to 15 times with a back-off of up to 1000 s by default, where client-go retries
///   only when the server sends Retry-After: an aggregated API whose server is down (503)
///   would hold a reconcile for minutes, and an eviction a budget refuses (429) would be
///   retried instead of reported.
pub fn configure(config: &mut kube::Config, component: &str) {
    config.default_retry = false;
    let agent = format!("{component}/v1.33.0 (linux/amd64) kelp");
    if let Ok(value) = http::HeaderValue::from_str(&agent) {
        config
            .headers
            .retain(|(name, _)| name != http::header::USER_AGENT);
        config.headers.push((http::header::USER_AGENT, value));
    }
}

/// A name for this process among its peers: host name and a random suffix, as upstream's
/// leader election identities are.
pub fn identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let host = if host.is_empty() { "kelp".into() } else { host };
    format!("{host}_{}", uuid::Uuid::new_v4())
}

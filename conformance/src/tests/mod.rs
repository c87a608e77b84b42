//! The ported tests, one module per upstream area. Each test says which upstream file it
//! ports; assertions follow the original's.

mod admission_api;
mod apimachinery;
mod apps;
mod apps_api;
mod apps_controllers;
mod apps_workloads;
mod auth;
mod crd;
mod crd_openapi;
mod cronjob;
mod flowcontrol;
mod jobs;
mod kubectl;
mod kubectl_more;
mod more_workloads;
mod network_storage;
mod networking_api;
mod node;
mod node_more;
mod node_probes;
mod pods;
mod quota;
mod scheduling;
mod serviceaccounts;
mod webhook;
mod webhook_cr;
mod webhook_more;

use crate::Test;

macro_rules! tests {
    ($($name:literal => $f:path),* $(,)?) => {
        vec![$(Test { name: $name, run: |ctx| Box::pin($f(ctx)), clocked: false }),*]
    };
}
pub(crate) use tests;

/// Ported tests Kelp does not pass yet, kept out of [`all`].
pub fn pending() -> Vec<Test> {
    let mut pending = apps_workloads::pending();
    pending.extend(apps_controllers::pending());
    pending
}

pub fn all() -> Vec<Test> {
    let mut all = Vec::new();
    all.extend(apimachinery::tests());
    all.extend(apimachinery::namespace_tests());
    all.extend(crd::tests());
    all.extend(crd::discovery_tests());
    all.extend(crd_openapi::tests());
    all.extend(flowcontrol::tests());
    all.extend(node::tests());
    all.extend(node_more::tests());
    all.extend(node_probes::tests());
    all.extend(pods::tests());
    all.extend(auth::tests());
    all.extend(serviceaccounts::tests());
    all.extend(webhook::tests());
    all.extend(webhook_more::tests());
    all.extend(webhook_cr::tests());
    all.extend(admission_api::tests());
    all.extend(apps::tests());
    all.extend(apps_api::tests());
    all.extend(apps_controllers::tests());
    all.extend(apps_workloads::tests());
    all.extend(cronjob::tests());
    all.extend(jobs::tests());
    all.extend(kubectl::tests());
    all.extend(kubectl_more::tests());
    all.extend(more_workloads::tests());
    all.extend(network_storage::tests());
    all.extend(networking_api::tests());
    all.extend(quota::tests());
    all.extend(scheduling::tests());
    all
}

//! The namespace controller: a namespace being deleted (phase Terminating, the `kubernetes`
//! finalizer in its spec) is emptied of every namespaced resource the API serves, custom
//! resources included; then the finalizer is removed, which lets the namespace go.
//!
//! As upstream's with OrderedNamespaceDeletion (on by default since v1.33), pods go first:
//! nothing else is deleted while a pod is left, so a workload never loses the ConfigMaps,
//! Secrets or policies it still runs with. Each pass reports in the namespace's status
//! conditions what it found (upstream's five deletion conditions: discovery, group versions,
//! content deletion, content remaining, finalizers remaining).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::discovery::{ApiCapabilities, Discovery, Scope, verbs};
use kube::runtime::controller::{Action, Controller};

use crate::Informers;
use crate::util::{Error, api_message, drive, is_status};

const FINALIZER: &str = "kubernetes";

struct Ctx {
    client: kube::Client,
}

pub async fn run(client: kube::Client, informers: Arc<Informers>) -> anyhow::Result<()> {
    let controller =
        Controller::for_stream(informers.namespaces.changes(), informers.namespaces.store());
    drive("namespace", controller, reconcile, Arc::new(Ctx { client })).await
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let finalizers = ns
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.clone())
        .unwrap_or_default();
    if ns.metadata.deletion_timestamp.is_none() || !finalizers.iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let name = ns.metadata.name.clone().unwrap_or_default();
    let pass = delete_content(&ctx.client, &name).await;
    report(&ctx.client, &ns, &pass).await?;
    if !pass.done() {
        // Pods wait for their kubelets, objects for their finalizers: look again soon.
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    let mut finalized = (*ns).clone();
    if let Some(spec) = finalized.spec.as_mut() {
        spec.finalizers = Some(finalizers.into_iter().filter(|f| f != FINALIZER).collect());
    }
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    match api
        .replace_subresource("finalize", &name, &PostParams::default(), &finalized)
        .await
    {
        Ok(_) => Ok(Action::await_change()),
        Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}

/// What one pass over a namespace's content found.
#[derive(Default)]
struct Pass {
    /// Discovery failed: nothing could be looked at.
    discovery: Option<String>,
    /// Why a resource's content could not be deleted, one message per resource.
    errors: Vec<String>,
    /// Objects left, by `<resource>.<group>`.
    remaining: BTreeMap<String, usize>,
    /// Objects left, by finalizer.
    finalizers: BTreeMap<String, usize>,
}

impl Pass {
    fn done(&self) -> bool {
        self.discovery.is_none() && self.errors.is_empty() && self.remaining.is_empty()
    }

    /// The namespace's deletion conditions this pass calls for: each type's failure, or its
    /// "ok" variant (upstream's namespaceConditionUpdater).
    fn conditions(&self) -> Vec<(&'static str, bool, &'static str, String)> {
        let ok = |type_, reason, message: &str| (type_, false, reason, message.to_string());
        let joined = |m: &BTreeMap<String, usize>, what: &str| {
            m.iter()
                .map(|(k, n)| format!("{k} {what} {n} resource instances"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut errors = self.errors.clone();
        errors.sort();
        vec![
            match &self.discovery {
                Some(e) => (
                    "NamespaceDeletionDiscoveryFailure",
                    true,
                    "DiscoveryFailed",
                    e.clone(),
                ),
                None => ok(
                    "NamespaceDeletionDiscoveryFailure",
                    "ResourcesDiscovered",
                    "All resources successfully discovered",
                ),
            },
            ok(
                "NamespaceDeletionGroupVersionParsingFailure",
                "ParsedGroupVersions",
                "All legacy kube types successfully parsed",
            ),
            if errors.is_empty() {
                ok(
                    "NamespaceDeletionContentFailure",
                    "ContentDeleted",
                    "All content successfully deleted, may be waiting on finalization",
                )
            } else {
                (
                    "NamespaceDeletionContentFailure",
                    true,
                    "ContentDeletionFailed",
                    format!(
                        "Failed to delete all resource types, {} remaining: {}",
                        errors.len(),
                        errors.join(", ")
                    ),
                )
            },
            if self.remaining.is_empty() {
                ok(
                    "NamespaceContentRemaining",
                    "ContentRemoved",
                    "All content successfully removed",
                )
            } else {
                (
                    "NamespaceContentRemaining",
                    true,
                    "SomeResourcesRemain",
                    format!(
                        "Some resources are remaining: {}",
                        joined(&self.remaining, "has")
                    ),
                )
            },
            if self.finalizers.is_empty() {
                ok(
                    "NamespaceFinalizersRemaining",
                    "ContentRemoved",
                    "All content successfully removed",
                )
            } else {
                (
                    "NamespaceFinalizersRemaining",
                    true,
                    "SomeFinalizerRemain",
                    format!(
                        "Some finalizers are remaining: {}",
                        joined(&self.finalizers, "in")
                    ),
                )
            },
        ]
    }
}

/// Writes the pass's conditions into the namespace's status when they changed (a condition's
/// transition time moves only when its status does).
async fn report(client: &kube::Client, ns: &Namespace, pass: &Pass) -> Result<(), Error> {
    let mut updated = ns.clone();
    let status = updated.status.get_or_insert_default();
    let conditions = status.conditions.get_or_insert_default();
    let mut changed = false;
    for (type_, failing, reason, message) in pass.conditions() {
        let value = if failing { "True" } else { "False" };
        match conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) => {
                if c.status != value
                    || c.reason.as_deref() != Some(reason)
                    || c.message.as_deref() != Some(message.as_str())
                {
                    if c.status != value {
                        c.last_transition_time = Some(Time(jiff::Timestamp::now()));
                    }
                    c.status = value.into();
                    c.reason = Some(reason.into());
                    c.message = Some(message);
                    changed = true;
                }
            }
            None => {
                conditions.push(NamespaceCondition {
                    type_: type_.into(),
                    status: value.into(),
                    reason: Some(reason.into()),
                    message: Some(message),
                    last_transition_time: Some(Time(jiff::Timestamp::now())),
                });
                changed = true;
            }
        }
    }
    if !changed {
        return Ok(());
    }
    let api: Api<Namespace> = Api::all(client.clone());
    let name = ns.metadata.name.clone().unwrap_or_default();
    match api
        .replace_status(&name, &PostParams::default(), &updated)
        .await
    {
        Ok(_) => Ok(()),
        // A newer version, or gone: the next pass writes again.
        Err(e) if is_status(&e, 409) || is_status(&e, 404) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Deletes what the namespace holds, pods first and the rest only once no pod is left.
async fn delete_content(client: &kube::Client, ns: &str) -> Pass {
    let mut pass = Pass::default();
    let discovery = match Discovery::new(client.clone()).run().await {
        Ok(d) => d,
        Err(e) => {
            pass.discovery = Some(e.to_string());
            return pass;
        }
    };
    let deletable: Vec<(ApiResource, ApiCapabilities)> = discovery
        .groups()
        .flat_map(|g| g.recommended_resources())
        .filter(|(_, caps)| {
            caps.scope == Scope::Namespaced
                && caps.supports_operation(verbs::LIST)
                && caps.supports_operation(verbs::DELETE)
        })
        .collect();
    let is_pods = |ar: &ApiResource| ar.group.is_empty() && ar.plural == "pods";
    for (ar, caps) in deletable.iter().filter(|(ar, _)| is_pods(ar)) {
        delete_resource(client, ns, ar, caps, &mut pass).await;
    }
    if !pass.remaining.is_empty() {
        return pass;
    }
    for (ar, caps) in deletable.iter().filter(|(ar, _)| !is_pods(ar)) {
        delete_resource(client, ns, ar, caps, &mut pass).await;
    }
    pass
}

/// Deletes one resource's objects in the namespace, noting in `pass` what failed and what is
/// left.
async fn delete_resource(
    client: &kube::Client,
    ns: &str,
    ar: &ApiResource,
    caps: &ApiCapabilities,
    pass: &mut Pass,
) {
    let resource = format!("{}.{}", ar.plural, ar.group);
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, ar);
    let outcome = async {
        let listed = api.list_metadata(&ListParams::default()).await?;
        if listed.items.is_empty() {
            return Ok(Vec::new());
        }
        if caps.supports_operation(verbs::DELETE_COLLECTION) {
            api.delete_collection(&DeleteParams::background(), &ListParams::default())
                .await?;
        } else {
            for item in &listed.items {
                let name = item.metadata.name.clone().unwrap_or_default();
                match api.delete(&name, &DeleteParams::background()).await {
                    Ok(_) => {}
                    Err(e) if is_status(&e, 404) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(api.list_metadata(&ListParams::default()).await?.items)
    }
    .await;
    match outcome {
        Ok(left) if left.is_empty() => {}
        Ok(left) => {
            pass.remaining.insert(resource, left.len());
            for finalizer in left
                .iter()
                .flat_map(|o| o.metadata.finalizers.iter().flatten())
            {
                *pass.finalizers.entry(finalizer.clone()).or_default() += 1;
            }
        }
        Err(e) => pass
            .errors
            .push(format!("failed to delete {resource}: {}", api_message(&e))),
    }
}

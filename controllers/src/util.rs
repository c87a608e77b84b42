//! What the controllers share: their error type, owner references, and the reconcile
//! runner.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use kube::runtime::controller::{Action, Controller};

/// A reconcile's failure: logged, then retried with back-off.
#[derive(Debug)]
pub struct Error(pub anyhow::Error);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for Error {}

impl From<anyhow::Error> for Error {
    fn from(e: anyhow::Error) -> Self {
        Error(e)
    }
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error(e.into())
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error(e.into())
    }
}

/// The back-off of a failed reconcile (the controller runtime's queue retries it).
pub fn retry<K, C>(_: Arc<K>, e: &Error, _: Arc<C>) -> Action {
    tracing::debug!(error = %e, "reconcile failed, retrying");
    Action::requeue(Duration::from_secs(1))
}

/// Drives a controller until its streams end, logging failures.
pub async fn drive<K, C, F, Fut>(
    name: &'static str,
    controller: Controller<K>,
    reconcile: F,
    ctx: Arc<C>,
) -> anyhow::Result<()>
where
    K: Resource + Clone + fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + fmt::Debug + Unpin,
    C: Send + Sync + 'static,
    F: FnMut(Arc<K>, Arc<C>) -> Fut,
    Fut: std::future::Future<Output = Result<Action, Error>> + Send + 'static,
{
    controller
        .run(reconcile, retry, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(controller = name, error = %e, "reconcile");
            }
        })
        .await;
    Err(anyhow::anyhow!("{name}: its watches ended"))
}

/// A controller reference to `owner` (controller and blockOwnerDeletion set), as upstream's
/// controllers put on what they make.
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    let meta = owner.meta();
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The controller reference of an object, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|r| r.controller == Some(true))
}

/// Whether a kube error is the API's answer with this HTTP code.
pub fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// Whether a label selector selects these labels (an empty selector selects everything; a
/// missing one nothing, as upstream's LabelSelectorAsSelector).
pub fn selects(
    selector: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
    labels: Option<&std::collections::BTreeMap<String, String>>,
) -> bool {
    let Some(selector) = selector else {
        return false;
    };
    let empty = std::collections::BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    let by_labels = selector
        .match_labels
        .as_ref()
        .is_none_or(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)));
    by_labels
        && selector
            .match_expressions
            .as_deref()
            .unwrap_or_default()
            .iter()
            .all(|e| {
                let values = e.values.as_deref().unwrap_or_default();
                let value = labels.get(&e.key);
                match e.operator.as_str() {
                    "In" => value.is_some_and(|v| values.contains(v)),
                    "NotIn" => value.is_none_or(|v| !values.contains(v)),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    _ => false,
                }
            })
}

/// Whether a pod counts as a replica: not being deleted and not finished.
pub fn is_active(pod: &k8s_openapi::api::core::v1::Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// When the pod became Ready, if it is.
pub fn ready_since(pod: &k8s_openapi::api::core::v1::Pod) -> Option<jiff::Timestamp> {
    let ready = pod
        .status
        .as_ref()?
        .conditions
        .as_deref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?;
    Some(
        ready
            .last_transition_time
            .as_ref()
            .map(|t| t.0)
            .unwrap_or_else(jiff::Timestamp::now),
    )
}

/// Whether a pod has been Ready for `min_ready_seconds`; else, when it will be (if Ready).
pub fn available(
    pod: &k8s_openapi::api::core::v1::Pod,
    min_ready_seconds: i32,
) -> Result<(), Option<Duration>> {
    let Some(since) = ready_since(pod) else {
        return Err(None);
    };
    if min_ready_seconds <= 0 {
        return Ok(());
    }
    let at = since + jiff::SignedDuration::from_secs(min_ready_seconds as i64);
    let now = jiff::Timestamp::now();
    if at <= now {
        Ok(())
    } else {
        Err(Some(at.duration_since(now).unsigned_abs()))
    }
}

/// Takes an orphan the selector matches (upstream's ClaimPods), unless the owner is going.
pub(crate) async fn adopt(
    api: &kube::Api<k8s_openapi::api::core::v1::Pod>,
    pod: &k8s_openapi::api::core::v1::Pod,
    owner: OwnerReference,
) -> anyhow::Result<bool> {
    let mut refs = pod.metadata.owner_references.clone().unwrap_or_default();
    refs.push(owner);
    match set_owners(api, pod, refs).await {
        Ok(()) => Ok(true),
        Err(e) if is_status(&e, 404) || is_status(&e, 409) || is_status(&e, 422) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Lets go of a pod whose labels no longer match.
pub(crate) async fn release(
    api: &kube::Api<k8s_openapi::api::core::v1::Pod>,
    pod: &k8s_openapi::api::core::v1::Pod,
    uid: &str,
) -> anyhow::Result<()> {
    let mut refs = pod.metadata.owner_references.clone().unwrap_or_default();
    refs.retain(|r| r.uid != uid);
    match set_owners(api, pod, refs).await {
        Err(e) if !is_status(&e, 404) && !is_status(&e, 409) => Err(e.into()),
        _ => Ok(()),
    }
}

/// A pod's owner references replaced, on the pod as it was read (its uid and
/// resourceVersion are the patch's preconditions).
async fn set_owners(
    api: &kube::Api<k8s_openapi::api::core::v1::Pod>,
    pod: &k8s_openapi::api::core::v1::Pod,
    refs: Vec<OwnerReference>,
) -> Result<(), kube::Error> {
    let patch = serde_json::json!({"metadata": {
        "ownerReferences": refs,
        "uid": pod.metadata.uid,
        "resourceVersion": pod.metadata.resource_version,
    }});
    api.patch(
        &kube::ResourceExt::name_any(pod),
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .map(|_| ())
}

/// How many pod writes a controller has in flight at once.
pub(crate) const BURST: usize = 16;

/// The object a controller's pod writes are reported about, and the recorder that reports
/// them, in upstream's words (RealPodControl): `Created pod: <name>`, `Error creating: <why>`,
/// `Deleted pod: <name>`, `Error deleting: <why>`.
pub(crate) struct Report<'a> {
    pub events: &'a kelp_client::events::Recorder,
    pub regarding: k8s_openapi::api::core::v1::ObjectReference,
}

impl Report<'_> {
    pub fn event(&self, type_: &'static str, reason: &str, message: String) {
        self.events
            .record(self.regarding.clone(), type_, reason, "", message);
    }

    pub fn created(&self, name: &str) {
        self.event("Normal", "SuccessfulCreate", format!("Created pod: {name}"));
    }

    pub fn not_created(&self, e: &kube::Error) {
        self.event(
            "Warning",
            "FailedCreate",
            format!("Error creating: {}", api_message(e)),
        );
    }

    pub fn deleted(&self, name: &str) {
        self.event("Normal", "SuccessfulDelete", format!("Deleted pod: {name}"));
    }

    pub fn not_deleted(&self, e: &kube::Error) {
        self.event(
            "Warning",
            "FailedDelete",
            format!("Error deleting: {}", api_message(e)),
        );
    }
}

/// An API error as client-go prints it: the Status message the server sent.
pub(crate) fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        other => other.to_string(),
    }
}

/// Creates the pods, [`BURST`] at a time, reporting each: the names of those made, and the
/// errors of those that were not.
pub(crate) async fn create_pods<P>(
    api: &kube::Api<k8s_openapi::api::core::v1::Pod>,
    pods: P,
    report: &Report<'_>,
) -> (Vec<String>, Vec<kube::Error>)
where
    P: IntoIterator<Item = k8s_openapi::api::core::v1::Pod>,
    P::IntoIter: Send,
{
    let post = kube::api::PostParams::default();
    // Pods are made as they are sent, and only the names of those created are kept.
    let results: Vec<_> = futures::stream::iter(pods)
        .map(|pod| {
            let post = post.clone();
            async move {
                let made = api.create(&post, &pod).await?;
                Ok::<_, kube::Error>(kube::ResourceExt::name_any(&made))
            }
        })
        .buffer_unordered(BURST)
        .collect()
        .await;
    let mut made = Vec::new();
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(name) => {
                report.created(&name);
                made.push(name);
            }
            Err(e) => {
                report.not_created(&e);
                errors.push(e);
            }
        }
    }
    (made, errors)
}

/// Deletes the pods by name, [`BURST`] at a time (one already gone is deleted), reporting
/// each: the errors.
pub(crate) async fn delete_pods(
    api: &kube::Api<k8s_openapi::api::core::v1::Pod>,
    names: Vec<String>,
    report: &Report<'_>,
) -> Vec<kube::Error> {
    let results: Vec<_> = futures::stream::iter(names)
        .map(|n| async move {
            api.delete(&n, &kube::api::DeleteParams::default())
                .await
                .map(|_| n)
        })
        .buffer_unordered(BURST)
        .collect()
        .await;
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(name) => report.deleted(&name),
            Err(e) if is_status(&e, 404) => {}
            Err(e) => {
                report.not_deleted(&e);
                errors.push(e);
            }
        }
    }
    errors
}

//! The admissionregistration.k8s.io API itself, rather than admission done through it:
//! ValidatingAdmissionPolicy and ValidatingAdmissionPolicyBinding API operations
//! (test/e2e/apimachinery/validatingadmissionpolicy.go), and the AdmissionWebhook tests that
//! only read discovery or store webhook configurations (test/e2e/apimachinery/webhook.go).
//!
//! Upstream's AdmissionWebhook BeforeEach deploys its sample webhook for every test; none of
//! the webhook tests here sends a request any of their webhooks match (nothing is created in a
//! namespace their selectors pick), so the configurations name upstream's service without one
//! running, as upstream's fixtures do, with a CA made for the test as their caBundle.

use std::fmt::Debug;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail, ensure};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures::StreamExt;
use k8s_openapi::ClusterResourceScope;
use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, MutatingWebhookConfiguration, ValidatingAdmissionPolicy,
    ValidatingAdmissionPolicyBinding, ValidatingWebhookConfiguration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::tests;
use crate::framework::{Events, api_discovered, from, retry_on_conflict};
use crate::{Ctx, Test};

pub fn tests() -> Vec<Test> {
    tests![
        "[sig-api-machinery] ValidatingAdmissionPolicy [Privileged:ClusterAdmin] should support ValidatingAdmissionPolicy API operations" => vap_api,
        "[sig-api-machinery] ValidatingAdmissionPolicy [Privileged:ClusterAdmin] should support ValidatingAdmissionPolicyBinding API operations" => vap_binding_api,
        "[sig-api-machinery] AdmissionWebhook [Privileged:ClusterAdmin] should include webhook resources in discovery documents" => webhook_discovery,
        "[sig-api-machinery] AdmissionWebhook [Privileged:ClusterAdmin] should be able to create and update mutating webhook configurations with match conditions" => mutating_match_conditions,
        "[sig-api-machinery] AdmissionWebhook [Privileged:ClusterAdmin] should be able to create and update validating webhook configurations with match conditions" => validating_match_conditions,
        "[sig-api-machinery] AdmissionWebhook [Privileged:ClusterAdmin] should reject mutating webhook configurations with invalid match conditions" => mutating_invalid_match_conditions,
        "[sig-api-machinery] AdmissionWebhook [Privileged:ClusterAdmin] should reject validating webhook configurations with invalid match conditions" => validating_invalid_match_conditions,
    ]
}

const GROUP: &str = "admissionregistration.k8s.io";
const VERSION: &str = "v1";

// ---------------------------------------------------------------------------------------
// ValidatingAdmissionPolicy and ValidatingAdmissionPolicyBinding API operations
// ---------------------------------------------------------------------------------------

/// What the two API-operations tests do differently: the template, the spec field the patch
/// and the update change, what discovery must list, and (the policy only) the status steps.
trait PolicyKind:
    kube::Resource<Scope = ClusterResourceScope, DynamicType = ()>
    + Clone
    + Debug
    + DeserializeOwned
    + Serialize
    + Send
    + Sync
    + 'static
{
    const LABEL_KEY: &'static str;
    const GENERATE_NAME: &'static str;
    /// The resources /apis/admissionregistration.k8s.io/v1 must list.
    const RESOURCES: &'static [&'static str];
    /// Whether the kind has the /status steps (get, patch, update).
    const STATUS: bool;
    fn template_spec() -> Value;
    /// The spec half of the merge patch.
    fn spec_patch() -> Value;
    /// The field the patch and the update change, as JSON.
    fn field(&self) -> Value;
    /// Its value after the patch, and after the update.
    fn patched() -> Value;
    fn updated() -> Value;
    /// What the update changes in the spec.
    fn set_updated(&mut self);
    /// A status condition of this type is there.
    fn has_condition(&self, _type: &str) -> bool {
        false
    }
    fn add_condition(&mut self, _condition: Condition) {}
}

impl PolicyKind for ValidatingAdmissionPolicy {
    const LABEL_KEY: &'static str = "example-e2e-vap-label";
    const GENERATE_NAME: &'static str = "e2e-example-vap-";
    const RESOURCES: &'static [&'static str] = &[
        "validatingadmissionpolicies",
        "validatingadmissionpolicies/status",
    ];
    const STATUS: bool = true;

    fn template_spec() -> Value {
        json!({
            "validations": [{"expression": "object.spec.replicas <= 100"}],
            "matchConstraints": {
                "resourceRules": [{
                    "operations": ["CREATE"],
                    "apiGroups": ["apps"],
                    "apiVersions": ["v1"],
                    "resources": ["deployments"],
                }],
            },
        })
    }

    fn spec_patch() -> Value {
        json!({"failurePolicy": "Ignore"})
    }

    fn field(&self) -> Value {
        json!(self.spec.as_ref().and_then(|s| s.failure_policy.as_ref()))
    }

    fn patched() -> Value {
        json!("Ignore")
    }

    fn updated() -> Value {
        json!("Fail")
    }

    fn set_updated(&mut self) {
        self.spec.get_or_insert_default().failure_policy = Some("Fail".into());
    }

    fn has_condition(&self, type_: &str) -> bool {
        self.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == type_)
    }

    fn add_condition(&mut self, condition: Condition) {
        self.status
            .get_or_insert_default()
            .conditions
            .get_or_insert_default()
            .push(condition);
    }
}

impl PolicyKind for ValidatingAdmissionPolicyBinding {
    const LABEL_KEY: &'static str = "example-e2e-vapb-label";
    const GENERATE_NAME: &'static str = "e2e-example-vapb-";
    const RESOURCES: &'static [&'static str] = &["validatingadmissionpolicybindings"];
    const STATUS: bool = false;

    fn template_spec() -> Value {
        json!({
            "policyName": "replicalimit-policy.example.com",
            "validationActions": ["Deny"],
        })
    }

    fn spec_patch() -> Value {
        json!({"validationActions": ["Warn"]})
    }

    fn field(&self) -> Value {
        json!(
            self.spec
                .as_ref()
                .and_then(|s| s.validation_actions.as_ref())
        )
    }

    fn patched() -> Value {
        json!(["Warn"])
    }

    fn updated() -> Value {
        json!(["Deny"])
    }

    fn set_updated(&mut self) {
        self.spec.get_or_insert_default().validation_actions = Some(vec!["Deny".into()]);
    }
}

async fn vap_api(ctx: Ctx) -> anyhow::Result<()> {
    api_operations::<ValidatingAdmissionPolicy>(ctx).await
}

async fn vap_binding_api(ctx: Ctx) -> anyhow::Result<()> {
    api_operations::<ValidatingAdmissionPolicyBinding>(ctx).await
}

/// Whether a discovery `versions` array holds v1.
fn has_v1(versions: &Value) -> bool {
    versions
        .as_array()
        .into_iter()
        .flatten()
        .any(|v| v["version"] == VERSION)
}

/// Discovery, then create three labelled objects, get, list, watch, patch, update, (the
/// policy: get, patch and update /status), delete and deletecollection; whatever is left is
/// deleted by label after (upstream's DeferCleanup).
async fn api_operations<K: PolicyKind>(ctx: Ctx) -> anyhow::Result<()> {
    let kind = K::kind(&()).to_string();
    api_discovered(&ctx, GROUP, VERSION, K::RESOURCES, &kind).await?;

    let api: Api<K> = ctx.cluster();
    // utilrand.String(8)
    let label_value: String = (0..8)
        .map(|_| char::from(b'a' + rand::random_range(0..26u8)))
        .collect();
    let label_key = K::LABEL_KEY;
    let label = format!("{label_key}={label_value}");
    let template: K = from(json!({
        "metadata": {"generateName": K::GENERATE_NAME, "labels": {label_key: label_value}},
        "spec": K::template_spec(),
    }))
    .context("building the template")?;

    let result = operations(&ctx, &api, &label, &template).await;
    let cleanup = api
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels(&label),
        )
        .await;
    result?;
    cleanup.context("deleting the test's objects")?;
    Ok(())
}

/// Reads the watch until an object annotated `patched: "true"` arrives; every event must be
/// a MODIFIED one, each within wait.ForeverTestTimeout (30s).
async fn await_patched_event<K: PolicyKind>(events: &mut Events<K>) -> anyhow::Result<()> {
    loop {
        let next = tokio::time::timeout(Duration::from_secs(30), events.next())
            .await
            .map_err(|_| anyhow!("timed out waiting for watch event"))?;
        let Some(event) = next else {
            bail!("watch channel should not close");
        };
        match event.context("reading the watch")? {
            WatchEvent::Modified(o)
                if o.annotations().get("patched").map(String::as_str) == Some("true") =>
            {
                return Ok(());
            }
            WatchEvent::Modified(_) => {}
            other => bail!("expected a MODIFIED event, got {other:?}"),
        }
    }
}

fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404 || s.reason == "NotFound")
}

/// Deleted, or waiting on finalizers with its deletionTimestamp set.
fn blocked_by_finalizers(o: &impl kube::Resource) -> bool {
    o.meta().deletion_timestamp.is_some()
        && o.meta().finalizers.as_ref().is_some_and(|f| !f.is_empty())
}

async fn operations<K: PolicyKind>(
    ctx: &Ctx,
    api: &Api<K>,
    label: &str,
    template: &K,
) -> anyhow::Result<()> {
    let kind = K::kind(&()).to_string();
    let plural = K::plural(&()).to_string();
    let by_label = ListParams::default().labels(label);
    let pp = PostParams::default();

    // creating
    api.create(&pp, template).await.context("creating")?;
    api.create(&pp, template).await.context("creating")?;
    let created = api.create(&pp, template).await.context("creating")?;
    let name = created.name_any();

    // getting
    let read = api.get(&name).await.context("getting")?;
    ensure!(
        read.uid() == created.uid(),
        "the read uid {:?} is not the created {:?}",
        read.uid(),
        created.uid()
    );

    // listing
    let list = api.list(&by_label).await.context("listing")?;

    // watching
    let rv = list.metadata.resource_version.clone().unwrap_or_default();
    let mut events: Events<K> = api
        .watch(
            &WatchParams::default().labels(label).disable_bookmarks(),
            &rv,
        )
        .await
        .context("watching")?
        .boxed();

    // patching
    let patch = json!({"metadata": {"annotations": {"patched": "true"}}, "spec": K::spec_patch()});
    let patched = api
        .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .context("patching")?;
    ensure!(
        patched.annotations().get("patched").map(String::as_str) == Some("true"),
        "patched object should have the applied annotation: {:?}",
        patched.annotations()
    );
    ensure!(
        patched.field() == K::patched(),
        "patched object should have the applied spec: {} (want {})",
        patched.field(),
        K::patched()
    );

    // updating
    let updated = retry_on_conflict(|| {
        let (api, name) = (api.clone(), name.clone());
        async move {
            let mut o = api.get(&name).await?;
            o.annotations_mut().insert("updated".into(), "true".into());
            o.set_updated();
            api.replace(&name, &PostParams::default(), &o).await
        }
    })
    .await
    .with_context(|| format!("failed to update {} {name:?}", kind.to_lowercase()))?;
    ensure!(
        updated.annotations().get("updated").map(String::as_str) == Some("true"),
        "updated object should have the applied annotation: {:?}",
        updated.annotations()
    );
    ensure!(
        updated.field() == K::updated(),
        "updated object should have the applied spec: {} (want {})",
        updated.field(),
        K::updated()
    );

    await_patched_event(&mut events).await?;
    drop(events);

    if K::STATUS {
        // getting /status
        let status: Value = ctx
            .get_json(&format!("/apis/{GROUP}/{VERSION}/{plural}/{name}/status"))
            .await
            .context("getting /status")?;
        ensure!(
            status["apiVersion"] == format!("{GROUP}/{VERSION}").as_str()
                && status["kind"] == kind.as_str(),
            "expected {GROUP}/{VERSION}, Kind={kind}, got {}, Kind={}",
            status["apiVersion"],
            status["kind"]
        );
        ensure!(
            status["metadata"]["uid"].as_str() == created.uid().as_deref(),
            "the /status uid {} is not the created {:?}",
            status["metadata"]["uid"],
            created.uid()
        );

        // patching /status
        let patch = json!({"status": {"conditions": [{
            "type": "PatchStatusFailed",
            "status": "False",
            "reason": "e2e",
            "message": "Set from an e2e test",
            "lastTransitionTime": "2024-01-01T00:00:00Z",
        }]}});
        let status_patched = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .context("patching /status")?;
        ensure!(
            status_patched.has_condition("PatchStatusFailed"),
            "expect the patched status exist: {status_patched:?}"
        );

        // updating /status
        let status_updated = retry_on_conflict(|| {
            let (api, name) = (api.clone(), name.clone());
            async move {
                let mut o = api.get(&name).await?;
                o.add_condition(Condition {
                    type_: "StatusUpdateFailed".into(),
                    status: "False".into(),
                    reason: "E2E".into(),
                    message: "Set from an e2e test".into(),
                    last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
                    observed_generation: None,
                });
                api.replace_status(&name, &PostParams::default(), &o).await
            }
        })
        .await
        .with_context(|| {
            format!(
                "failed to update status of {} {name:?}",
                kind.to_lowercase()
            )
        })?;
        ensure!(
            status_updated.has_condition("StatusUpdateFailed"),
            "expect the updated status exist: {status_updated:?}"
        );
    }

    // deleting
    api.delete(&name, &DeleteParams::default())
        .await
        .context("deleting")?;
    match api.get(&name).await {
        Ok(o) if blocked_by_finalizers(&o) => {}
        Ok(o) => bail!("expected deleted object, got {o:?}"),
        Err(e) if not_found(&e) => {}
        Err(e) => bail!("expected 404, got {e:?}"),
    }
    let list = api.list(&by_label).await.context("listing")?;
    let without_finalizer = list
        .items
        .iter()
        .filter(|o| o.finalizers().is_empty())
        .count();
    ensure!(
        without_finalizer == 2,
        "filtered list should have 2 items, has {without_finalizer}"
    );

    // deleting a collection
    api.delete_collection(&DeleteParams::default(), &by_label)
        .await
        .context("deleting a collection")?;
    let list = api.list(&by_label).await.context("listing")?;
    let left: Vec<String> = list
        .items
        .iter()
        .filter(|o| !blocked_by_finalizers(*o))
        .map(|o| o.name_any())
        .collect();
    ensure!(
        left.is_empty(),
        "filtered list should have 0 items, has {left:?}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// AdmissionWebhook: discovery and webhook configurations with matchConditions
// ---------------------------------------------------------------------------------------

/// The /apis document lists admissionregistration.k8s.io with v1; the group's document names
/// itself and lists v1; v1's resources hold both webhook configuration kinds.
async fn webhook_discovery(ctx: Ctx) -> anyhow::Result<()> {
    // fetching the /apis discovery document
    let groups: Value = ctx.get_json("/apis").await.context("fetching /apis")?;
    let group = groups["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|g| g["name"] == GROUP)
        .with_context(|| format!("{GROUP} API group not found in /apis discovery document"))?;
    ensure!(
        has_v1(&group["versions"]),
        "{GROUP}/{VERSION} API group version not found in /apis discovery document"
    );

    // fetching the /apis/admissionregistration.k8s.io discovery document
    let group: Value = ctx
        .get_json(&format!("/apis/{GROUP}"))
        .await
        .with_context(|| format!("fetching /apis/{GROUP}"))?;
    ensure!(
        group["name"] == GROUP,
        "verifying API group name in /apis/{GROUP} discovery document: got {}",
        group["name"]
    );
    ensure!(
        has_v1(&group["versions"]),
        "{GROUP}/{VERSION} API group version not found in /apis/{GROUP} discovery document"
    );

    // fetching the /apis/admissionregistration.k8s.io/v1 discovery document
    let list: Value = ctx
        .get_json(&format!("/apis/{GROUP}/{VERSION}"))
        .await
        .with_context(|| format!("fetching /apis/{GROUP}/{VERSION}"))?;
    ensure!(
        list["groupVersion"] == format!("{GROUP}/{VERSION}").as_str(),
        "verifying API group/version in /apis/{GROUP}/{VERSION} discovery document: got {}",
        list["groupVersion"]
    );
    for wanted in [
        "mutatingwebhookconfigurations",
        "validatingwebhookconfigurations",
    ] {
        let found = list["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r["name"] == wanted);
        ensure!(
            found,
            "{wanted} resource not found in /apis/{GROUP}/{VERSION} discovery document"
        );
    }
    Ok(())
}

/// Upstream's serviceName and servicePort: the sample webhook's service.
const SERVICE_NAME: &str = "e2e-test-webhook";
const SERVICE_PORT: i32 = 8443;

/// A CA certificate, base64 as a caBundle (upstream's certCtx.signingCert).
fn signing_cert() -> anyhow::Result<String> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "e2e-server-cert-ca");
    let cert = params.self_signed(&key)?;
    Ok(STANDARD.encode(cert.pem()))
}

/// A clientConfig naming the sample webhook's service at `path`.
fn client_config(ctx: &Ctx, path: &str, ca: &str) -> Value {
    json!({
        "service": {
            "namespace": ctx.namespace,
            "name": SERVICE_NAME,
            "path": path,
            "port": SERVICE_PORT,
        },
        "caBundle": ca,
    })
}

/// CREATE of v1 configmaps.
fn configmap_create_rule() -> Value {
    json!([{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"]}])
}

/// newValidatingIsReadyWebhookFixture / newMutatingIsReadyWebhookFixture: the marker webhook,
/// failing open, scoped to the markers namespace and to objects labelled with the test's name.
fn is_ready_hook(ctx: &Ctx, name: &str, ca: &str) -> Value {
    let unique = ctx.namespace.clone();
    json!({
        "name": name,
        "rules": configmap_create_rule(),
        "clientConfig": client_config(ctx, "/always-deny", ca),
        "failurePolicy": "Ignore",
        "sideEffects": "None",
        "admissionReviewVersions": ["v1", "v1beta1"],
        "namespaceSelector": {"matchLabels": {format!("{unique}-markers"): "true"}},
        "objectSelector": {"matchLabels": {unique: "true"}},
    })
}

/// What the two webhook configuration kinds do differently.
trait WebhookConfig:
    kube::Resource<Scope = ClusterResourceScope, DynamicType = ()>
    + Clone
    + Debug
    + DeserializeOwned
    + Serialize
    + Send
    + Sync
    + 'static
{
    /// The configuration upstream's new{Validating,Mutating}WebhookWithMatchConditions builds:
    /// the webhook with these match conditions, then the is-ready marker webhook.
    fn with_match_conditions(ctx: &Ctx, ca: &str, conditions: &[MatchCondition]) -> Value;
    /// The first webhook's matchConditions.
    fn conditions(&self) -> Option<Vec<MatchCondition>>;
    fn set_conditions(&mut self, conditions: Vec<MatchCondition>);
}

impl WebhookConfig for ValidatingWebhookConfiguration {
    fn with_match_conditions(ctx: &Ctx, ca: &str, conditions: &[MatchCondition]) -> Value {
        let unique = ctx.namespace.clone();
        json!({
            "metadata": {"name": unique},
            "webhooks": [
                {
                    "name": "validation-webhook-with-match-conditions.k8s.io",
                    "rules": configmap_create_rule(),
                    "clientConfig": client_config(ctx, "/always-deny", ca),
                    "sideEffects": "None",
                    "matchPolicy": "Equivalent",
                    "admissionReviewVersions": ["v1"],
                    "namespaceSelector": {"matchLabels": {unique: "true"}},
                    "matchConditions": conditions,
                },
                is_ready_hook(ctx, "validating-is-webhook-configuration-ready.k8s.io", ca),
            ],
        })
    }

    fn conditions(&self) -> Option<Vec<MatchCondition>> {
        self.webhooks
            .as_ref()
            .and_then(|w| w.first())
            .and_then(|h| h.match_conditions.clone())
    }

    fn set_conditions(&mut self, conditions: Vec<MatchCondition>) {
        if let Some(h) = self.webhooks.as_mut().and_then(|w| w.first_mut()) {
            h.match_conditions = Some(conditions);
        }
    }
}

impl WebhookConfig for MutatingWebhookConfiguration {
    fn with_match_conditions(ctx: &Ctx, ca: &str, conditions: &[MatchCondition]) -> Value {
        let unique = ctx.namespace.clone();
        json!({
            "metadata": {"name": unique},
            "webhooks": [
                {
                    "name": "adding-configmap-data.k8s.io",
                    "rules": configmap_create_rule(),
                    "clientConfig": client_config(ctx, "/mutating-configmaps", ca),
                    "sideEffects": "None",
                    "admissionReviewVersions": ["v1", "v1beta1"],
                    "namespaceSelector": {"matchLabels": {unique: "true"}},
                    "matchConditions": conditions,
                },
                is_ready_hook(ctx, "mutating-is-webhook-configuration-ready.k8s.io", ca),
            ],
        })
    }

    fn conditions(&self) -> Option<Vec<MatchCondition>> {
        self.webhooks
            .as_ref()
            .and_then(|w| w.first())
            .and_then(|h| h.match_conditions.clone())
    }

    fn set_conditions(&mut self, conditions: Vec<MatchCondition>) {
        if let Some(h) = self.webhooks.as_mut().and_then(|w| w.first_mut()) {
            h.match_conditions = Some(conditions);
        }
    }
}

fn condition(name: &str, expression: &str) -> MatchCondition {
    MatchCondition {
        name: name.into(),
        expression: expression.into(),
    }
}

/// create{Validating,Mutating}WebhookConfiguration: every webhook must select by the test's
/// name (its namespace or objects labelled `<name>=true`) so it cannot interfere with other
/// tests; then the configuration is created. The outer error is the test's, the inner the
/// server's answer.
async fn create_config<K: WebhookConfig>(
    ctx: &Ctx,
    config: Value,
) -> anyhow::Result<Result<K, kube::Error>> {
    let unique = ctx.namespace.as_str();
    let config_name = config["metadata"]["name"].as_str().unwrap_or_default();
    for hook in config["webhooks"].as_array().into_iter().flatten() {
        let selects = |selector: &str| hook[selector]["matchLabels"][unique] == "true";
        ensure!(
            selects("namespaceSelector") || selects("objectSelector"),
            "webhook {} in config {config_name} has no namespace or object selector with \
             {unique}=\"true\", and can interfere with other tests",
            hook["name"].as_str().unwrap_or_default()
        );
    }
    let config: K = from(config).context("building the webhook configuration")?;
    Ok(ctx
        .cluster::<K>()
        .create(&PostParams::default(), &config)
        .await)
}

async fn validating_match_conditions(ctx: Ctx) -> anyhow::Result<()> {
    create_and_update_match_conditions::<ValidatingWebhookConfiguration>(ctx).await
}

async fn mutating_match_conditions(ctx: Ctx) -> anyhow::Result<()> {
    create_and_update_match_conditions::<MutatingWebhookConfiguration>(ctx).await
}

async fn validating_invalid_match_conditions(ctx: Ctx) -> anyhow::Result<()> {
    invalid_match_conditions::<ValidatingWebhookConfiguration>(ctx).await
}

async fn mutating_invalid_match_conditions(ctx: Ctx) -> anyhow::Result<()> {
    invalid_match_conditions::<MutatingWebhookConfiguration>(ctx).await
}

/// Creates the configuration with one match condition, reads it back, updates it to two and
/// reads those back; the configuration is deleted after.
async fn create_and_update_match_conditions<K: WebhookConfig>(ctx: Ctx) -> anyhow::Result<()> {
    let kind = K::kind(&()).to_lowercase();
    let initial = vec![condition(
        "expression-1",
        "object.metadata.namespace == 'production'",
    )];
    // creating a webhook with match conditions
    let ca = signing_cert()?;
    create_config::<K>(&ctx, K::with_match_conditions(&ctx, &ca, &initial))
        .await?
        .with_context(|| format!("creating the {kind}"))?;

    let api: Api<K> = ctx.cluster();
    let name = ctx.namespace.clone();
    let result = update_match_conditions(&api, &name, initial).await;
    let deleted = api.delete(&name, &DeleteParams::default()).await;
    result?;
    deleted.with_context(|| format!("deleting the {kind}"))?;
    Ok(())
}

async fn update_match_conditions<K: WebhookConfig>(
    api: &Api<K>,
    name: &str,
    initial: Vec<MatchCondition>,
) -> anyhow::Result<()> {
    // verifying the webhook match conditions
    let mut config = api.get(name).await.context("getting the configuration")?;
    ensure!(
        config.conditions().as_ref() == Some(&initial),
        "verifying that match conditions are created: got {:?}, want {initial:?}",
        config.conditions()
    );

    // updating the webhook match conditions
    let updated = vec![
        condition("expression-1", "object.metadata.namespace == 'production'"),
        condition("expression-2", "object.metadata.namespace == 'staging'"),
    ];
    config.set_conditions(updated.clone());
    api.replace(name, &PostParams::default(), &config)
        .await
        .context("updating the configuration")?;

    // verifying the webhook match conditions
    let config = api.get(name).await.context("getting the configuration")?;
    ensure!(
        config.conditions().as_ref() == Some(&updated),
        "verifying that match conditions are updated: got {:?}, want {updated:?}",
        config.conditions()
    );
    Ok(())
}

/// A configuration whose match condition is not CEL is refused, with "compilation failed".
async fn invalid_match_conditions<K: WebhookConfig>(ctx: Ctx) -> anyhow::Result<()> {
    let kind = K::kind(&()).to_lowercase();
    let conditions = vec![condition("invalid-expression-1", "... [] bad expression")];
    // creating a webhook with match conditions
    let ca = signing_cert()?;
    let created =
        create_config::<K>(&ctx, K::with_match_conditions(&ctx, &ca, &conditions)).await?;
    let error = match created {
        Ok(config) => {
            let _ = ctx
                .cluster::<K>()
                .delete(&config.name_any(), &DeleteParams::default())
                .await;
            bail!("create {kind} should have been denied by the api-server");
        }
        Err(kube::Error::Api(status)) => status.message.clone(),
        Err(other) => other.to_string(),
    };
    let expected = "compilation failed";
    ensure!(
        error.contains(expected),
        "expected an error containing {expected:?}, got {error:?}"
    );
    Ok(())
}

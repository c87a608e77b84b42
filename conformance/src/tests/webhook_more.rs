//! More sig-api-machinery AdmissionWebhook tests (test/e2e/apimachinery/webhook.go): listing,
//! patching mutating webhooks, pod mutation with defaulting, webhook configuration objects
//! exempt from admission, CRD denial and matchConditions. As in `webhook.rs`, the sample
//! webhook runs in this process (`webhook::start`), registered by URL; the handlers the
//! sample webhook serves at /mutating-pods, /always-deny, /add-label and /crd live here.
//! Upstream's "is ready" fixture (a webhook that refuses marker objects) is the `/configmaps`
//! hook here, probed by `webhook::wait_until_denied`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, ensure};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::tests;
use super::webhook::{
    DISALLOWED, Server, configmap, hook, mark_namespace, parse, register, review_response, start,
    unregister, wait_until_denied,
};
use crate::framework::eventually;
use crate::{Ctx, Test};

pub fn tests() -> Vec<Test> {
    tests![
        "[sig-api-machinery] AdmissionWebhook [Privileged:ClusterAdmin] listing mutating webhooks should work" => listing_mutating,
        "[sig-api-machinery] AdmissionWebhook [Privileged:ClusterAdmin] listing validating webhooks should work" => listing_validating,
        "[sig-api-machinery] AdmissionWebhook [Privileged:ClusterAdmin] patching/updating a mutating webhook should work" => patch_mutating,
        "[sig-api-machinery] AdmissionWebhook [Privileged:ClusterAdmin] should mutate pod and apply defaults after mutation" => mutate_pod,
        "[sig-api-machinery] AdmissionWebhook [Privileged:ClusterAdmin] should not be able to mutate or prevent deletion of webhook configuration objects" => webhook_configurations_exempt,
        "[sig-api-machinery] AdmissionWebhook [Privileged:ClusterAdmin] should deny crd creation" => deny_crd,
        "[sig-api-machinery] AdmissionWebhook [Privileged:ClusterAdmin] should mutate everything except 'skip-me' configmaps" => skip_me,
    ]
}

// ---- the sample webhook's handlers (test/images/agnhost/webhook) ----

/// /mutating-pods: adds the init container `webhook-added-init-container` to the pod named
/// `webhook-to-be-mutated`, unless it is there already.
pub(super) async fn mutating_pods(body: axum::body::Bytes) -> String {
    let review = parse(&body);
    let pod = &review["request"]["object"];
    let has = pod["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["name"] == "webhook-added-init-container");
    let patch = (pod["metadata"]["name"] == "webhook-to-be-mutated" && !has).then(|| {
        json!([{"op": "add", "path": "/spec/initContainers", "value": [
            {"image": "webhook-added-image", "name": "webhook-added-init-container", "resources": {}}
        ]}])
    });
    review_response(&review, true, "", patch)
}

/// /always-deny.
pub(super) async fn always_deny(body: axum::body::Bytes) -> String {
    review_response(
        &parse(&body),
        false,
        "this webhook denies all requests",
        None,
    )
}

/// /add-label: sets the label `added-label: yes`.
pub(super) async fn add_label(body: axum::body::Bytes) -> String {
    let review = parse(&body);
    let labels = &review["request"]["object"]["metadata"]["labels"];
    let patch = match labels.as_object() {
        None => Some(
            json!([{"op": "add", "path": "/metadata/labels", "value": {"added-label": "yes"}}]),
        ),
        Some(l) if l.is_empty() => Some(
            json!([{"op": "add", "path": "/metadata/labels", "value": {"added-label": "yes"}}]),
        ),
        Some(l) => match l.get("added-label") {
            None => {
                Some(json!([{"op": "add", "path": "/metadata/labels/added-label", "value": "yes"}]))
            }
            Some(v) if v != "yes" => Some(
                json!([{"op": "replace", "path": "/metadata/labels/added-label", "value": "yes"}]),
            ),
            Some(_) => None,
        },
    };
    review_response(&review, true, "", patch)
}

/// /crd: CRDs labelled `webhook-e2e-test: webhook-disallow` are refused.
pub(super) async fn crd(body: axum::body::Bytes) -> String {
    let review = parse(&body);
    let unwanted =
        review["request"]["object"]["metadata"]["labels"]["webhook-e2e-test"] == DISALLOWED;
    review_response(&review, !unwanted, "the crd contains unwanted label", None)
}

// ---- fixtures ----

type Selector = (String, String);

/// newValidatingIsReadyWebhookFixture / newMutatingIsReadyWebhookFixture: refuses the
/// non-compliant marker configmaps `wait_until_denied` creates.
pub(super) fn ready_hook(server: &Server, selector: &Selector) -> Value {
    hook(
        "validating-is-webhook-configuration-ready.k8s.io",
        &format!("{}/configmaps", server.base),
        &server.ca,
        &["configmaps"],
        selector,
    )
}

/// newMutateConfigMapWebhookFixture(stage 1).
fn mutate_configmap_hook(server: &Server, selector: &Selector) -> Value {
    let mut h = hook(
        "adding-configmap-data-stage-1.k8s.io",
        &format!("{}/mutating-configmaps", server.base),
        &server.ca,
        &["configmaps"],
        selector,
    );
    h["rules"][0]["operations"] = json!(["CREATE"]);
    h
}

/// newDenyConfigMapWebhookFixture.
fn deny_configmap_hook(server: &Server, selector: &Selector) -> Value {
    let mut h = hook(
        "deny-unwanted-configmap-data.k8s.io",
        &format!("{}/configmaps", server.base),
        &server.ca,
        &["configmaps"],
        selector,
    );
    h["rules"][0]["operations"] = json!(["CREATE", "UPDATE", "DELETE"]);
    h
}

pub(super) fn disallowed() -> Value {
    json!({"webhook-e2e-test": DISALLOWED})
}

/// Creates a configuration and returns the object the server answered with.
async fn create_config(
    ctx: &Ctx,
    kind: &str,
    plural: &str,
    name: &str,
    hooks: Vec<Value>,
) -> anyhow::Result<Value> {
    let body = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": name},
        "webhooks": hooks,
    });
    let raw = ctx
        .request(
            "POST",
            &format!("/apis/admissionregistration.k8s.io/v1/{plural}"),
            "application/json",
            "application/json",
            serde_json::to_vec(&body)?,
        )
        .await?;
    ensure!(
        raw.status == 201,
        "registering {name}: {} {}",
        raw.status,
        String::from_utf8_lossy(&raw.body)
    );
    raw.json()
}

/// Polls creating a `mutation-start: yes` configmap (deleting it again) until its having
/// `mutation-stage-1` is `mutated`; a failed create ends the wait.
async fn until_mutated(ctx: &Ctx, mutated: bool, what: &str) -> anyhow::Result<()> {
    let api = ctx.namespaced::<ConfigMap>();
    eventually(Duration::from_secs(30), what, || {
        let api = api.clone();
        async move {
            let name = crate::framework::unique("to-be-mutated");
            let created = api
                .create(
                    &PostParams::default(),
                    &configmap(&name, json!({"mutation-start": "yes"}))?,
                )
                .await?;
            api.delete(&name, &DeleteParams::default()).await?;
            let has = created
                .data
                .unwrap_or_default()
                .contains_key("mutation-stage-1");
            Ok((has == mutated).then_some(()))
        }
    })
    .await
}

/// Polls creating a non-compliant configmap until it is refused (`denied`) or admitted
/// (`!denied`); an error other than a denial ends the wait.
async fn until_denied(ctx: &Ctx, denied: bool, what: &str) -> anyhow::Result<()> {
    let api = ctx.namespaced::<ConfigMap>();
    eventually(Duration::from_secs(30), what, || {
        let api = api.clone();
        async move {
            let name = crate::framework::unique("non-compliant");
            match api
                .create(&PostParams::default(), &configmap(&name, disallowed())?)
                .await
            {
                Ok(_) => {
                    api.delete(&name, &DeleteParams::default()).await?;
                    Ok((!denied).then_some(()))
                }
                Err(kube::Error::Api(e)) if e.message.contains("denied") => {
                    Ok(denied.then_some(()))
                }
                Err(e) => bail!("creating a non-compliant configmap: {e}"),
            }
        }
    })
    .await
}

const LIST_SIZE: usize = 10;
pub(super) const VALIDATING: (&str, &str) = (
    "ValidatingWebhookConfiguration",
    "validatingwebhookconfigurations",
);
pub(super) const MUTATING: (&str, &str) = (
    "MutatingWebhookConfiguration",
    "mutatingwebhookconfigurations",
);

/// `register` labels every configuration `e2e-list-test-uuid=<namespace>`.
fn by_test(ctx: &Ctx) -> ListParams {
    ListParams::default().labels(&format!("e2e-list-test-uuid={}", ctx.namespace))
}

async fn listing_mutating(ctx: Ctx) -> anyhow::Result<()> {
    let server = start().await?;
    let selector = mark_namespace(&ctx).await?;
    let result = async {
        for i in 0..LIST_SIZE {
            register(
                &ctx,
                MUTATING.0,
                MUTATING.1,
                &format!("{}-{i}", ctx.namespace),
                vec![
                    mutate_configmap_hook(&server, &selector),
                    ready_hook(&server, &selector),
                ],
            )
            .await?;
        }
        let configs = ctx.cluster::<MutatingWebhookConfiguration>();
        let list = configs.list(&by_test(&ctx)).await?;
        ensure!(
            list.items.len() == LIST_SIZE,
            "listing by label found {} mutating webhook configurations, want {LIST_SIZE}",
            list.items.len()
        );
        wait_until_denied(&ctx, disallowed()).await?;
        until_mutated(&ctx, true, "the configmap to be mutated").await?;
        configs
            .delete_collection(&DeleteParams::default(), &by_test(&ctx))
            .await?;
        until_mutated(
            &ctx,
            false,
            "the configmap not to be mutated after deletecollection",
        )
        .await
    }
    .await;
    for i in 0..LIST_SIZE {
        unregister(&ctx, MUTATING.1, &format!("{}-{i}", ctx.namespace)).await;
    }
    result
}

async fn listing_validating(ctx: Ctx) -> anyhow::Result<()> {
    let server = start().await?;
    let selector = mark_namespace(&ctx).await?;
    let result = async {
        for i in 0..LIST_SIZE {
            register(
                &ctx,
                VALIDATING.0,
                VALIDATING.1,
                &format!("{}-{i}", ctx.namespace),
                vec![
                    deny_configmap_hook(&server, &selector),
                    ready_hook(&server, &selector),
                ],
            )
            .await?;
        }
        let configs = ctx.cluster::<ValidatingWebhookConfiguration>();
        let list = configs.list(&by_test(&ctx)).await?;
        ensure!(
            list.items.len() == LIST_SIZE,
            "listing by label found {} validating webhook configurations, want {LIST_SIZE}",
            list.items.len()
        );
        wait_until_denied(&ctx, disallowed()).await?;
        until_denied(&ctx, true, "the configmap to be denied").await?;
        configs
            .delete_collection(&DeleteParams::default(), &by_test(&ctx))
            .await?;
        until_denied(
            &ctx,
            false,
            "the configmap to be admitted after deletecollection",
        )
        .await
    }
    .await;
    for i in 0..LIST_SIZE {
        unregister(&ctx, VALIDATING.1, &format!("{}-{i}", ctx.namespace)).await;
    }
    result
}

async fn patch_mutating(ctx: Ctx) -> anyhow::Result<()> {
    let server = start().await?;
    let selector = mark_namespace(&ctx).await?;
    let name = ctx.namespace.clone();
    register(
        &ctx,
        MUTATING.0,
        MUTATING.1,
        &name,
        vec![
            mutate_configmap_hook(&server, &selector),
            ready_hook(&server, &selector),
        ],
    )
    .await?;
    let result = async {
        wait_until_denied(&ctx, disallowed()).await?;
        let configs = ctx.cluster::<MutatingWebhookConfiguration>();
        // Updating the rules to leave out CREATE: configmaps are not mutated.
        let mut config = configs.get(&name).await?;
        let rules = config
            .webhooks
            .as_mut()
            .and_then(|w| w.first_mut())
            .and_then(|w| w.rules.as_mut())
            .and_then(|r| r.first_mut());
        let Some(rule) = rules else {
            bail!("the stored mutating webhook configuration {name} has no rules");
        };
        rule.operations = Some(vec!["UPDATE".into()]);
        configs
            .replace(&name, &PostParams::default(), &config)
            .await?;
        until_mutated(&ctx, false, "the configmap not to be mutated").await?;
        // Patching CREATE back in: mutated again.
        configs
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Json::<()>(serde_json::from_value(json!([
                    {"op": "replace", "path": "/webhooks/0/rules/0/operations", "value": ["CREATE"]}
                ]))?),
            )
            .await?;
        until_mutated(&ctx, true, "the configmap to be mutated").await
    }
    .await;
    unregister(&ctx, MUTATING.1, &name).await;
    result
}

async fn mutate_pod(ctx: Ctx) -> anyhow::Result<()> {
    let server = start().await?;
    let selector = mark_namespace(&ctx).await?;
    let name = ctx.namespace.clone();
    let mut add_init = hook(
        "adding-init-container.k8s.io",
        &format!("{}/mutating-pods", server.base),
        &server.ca,
        &["pods"],
        &selector,
    );
    add_init["rules"][0]["operations"] = json!(["CREATE"]);
    register(
        &ctx,
        MUTATING.0,
        MUTATING.1,
        &name,
        vec![add_init, ready_hook(&server, &selector)],
    )
    .await?;
    let result = async {
        wait_until_denied(&ctx, disallowed()).await?;
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "webhook-to-be-mutated"},
            "spec": {"containers": [{"name": "example", "image": "registry.k8s.io/pause:3.10"}]},
        }))?;
        let mutated = ctx
            .namespaced::<Pod>()
            .create(&PostParams::default(), &pod)
            .await?;
        let init = mutated
            .spec
            .as_ref()
            .and_then(|s| s.init_containers.clone())
            .unwrap_or_default();
        ensure!(
            init.len() == 1,
            "expect pod to have 1 init container, got {init:?}"
        );
        ensure!(
            init[0].name == "webhook-added-init-container",
            "expect the init container name to be \"webhook-added-init-container\", got {:?}",
            init[0].name
        );
        ensure!(
            init[0].termination_message_policy.as_deref() == Some("File"),
            "expect the init terminationMessagePolicy to be defaulted to \"File\", got {:?}",
            init[0].termination_message_policy
        );
        anyhow::Ok(())
    }
    .await;
    unregister(&ctx, MUTATING.1, &name).await;
    result
}

/// A hook matching nothing real, at a path the server does not serve, without a CA, under
/// Ignore: it never has an effect.
fn dummy_hook(name: &str, server: &Server, selector: &Selector) -> Value {
    let mut h = hook(name, &server.base, "", &["invalid"], selector);
    h["rules"][0]["operations"] = json!(["CREATE"]);
    h["clientConfig"] = json!({"url": server.base});
    h["failurePolicy"] = json!("Ignore");
    h
}

async fn webhook_configurations_exempt(ctx: Ctx) -> anyhow::Result<()> {
    let server = start().await?;
    let selector = mark_namespace(&ctx).await?;
    let blocking = format!("{}blocking", ctx.namespace);
    let name = ctx.namespace.clone();
    let on_configs = |ops: &str| {
        json!([{
            "operations": [ops],
            "apiGroups": ["admissionregistration.k8s.io"],
            "apiVersions": ["*"],
            "resources": ["validatingwebhookconfigurations", "mutatingwebhookconfigurations"],
        }])
    };
    let result = async {
        // A validating webhook refusing every deletion of webhook configurations.
        let mut deny = hook(
            "deny-webhook-configuration-deletions.k8s.io",
            &format!("{}/always-deny", server.base),
            &server.ca,
            &[],
            &selector,
        );
        deny["rules"] = on_configs("DELETE");
        deny["failurePolicy"] = json!("Fail");
        register(
            &ctx,
            VALIDATING.0,
            VALIDATING.1,
            &blocking,
            vec![deny, ready_hook(&server, &selector)],
        )
        .await?;
        wait_until_denied(&ctx, disallowed()).await?;
        // A mutating webhook labelling every created webhook configuration.
        let mut label = hook(
            "add-label-to-webhook-configurations.k8s.io",
            &format!("{}/add-label", server.base),
            &server.ca,
            &[],
            &selector,
        );
        label["rules"] = on_configs("CREATE");
        label["failurePolicy"] = json!("Fail");
        register(
            &ctx,
            MUTATING.0,
            MUTATING.1,
            &blocking,
            vec![label, ready_hook(&server, &selector)],
        )
        .await?;
        wait_until_denied(&ctx, disallowed()).await?;

        // A dummy validating configuration: created unmutated, and deletable.
        let created = create_config(
            &ctx,
            VALIDATING.0,
            VALIDATING.1,
            &name,
            vec![
                dummy_hook("dummy-validating-webhook.k8s.io", &server, &selector),
                ready_hook(&server, &selector),
            ],
        )
        .await?;
        ensure!(
            created["metadata"]["labels"]["added-label"] != "yes",
            "expected {name} not to be mutated by mutating webhooks but it was: {}",
            created["metadata"]
        );
        wait_until_denied(&ctx, disallowed()).await?;
        ctx.cluster::<ValidatingWebhookConfiguration>()
            .delete(&name, &DeleteParams::default())
            .await
            .map_err(|e| anyhow::anyhow!("deleting validating webhook config {name}: {e}"))?;

        // The same for a dummy mutating configuration.
        let created = create_config(
            &ctx,
            MUTATING.0,
            MUTATING.1,
            &name,
            vec![
                dummy_hook("dummy-mutating-webhook.k8s.io", &server, &selector),
                ready_hook(&server, &selector),
            ],
        )
        .await?;
        ensure!(
            created["metadata"]["labels"]["added-label"] != "yes",
            "expected {name} not to be mutated by mutating webhooks but it was: {}",
            created["metadata"]
        );
        wait_until_denied(&ctx, disallowed()).await?;
        ctx.cluster::<MutatingWebhookConfiguration>()
            .delete(&name, &DeleteParams::default())
            .await
            .map_err(|e| anyhow::anyhow!("deleting mutating webhook config {name}: {e}"))?;
        anyhow::Ok(())
    }
    .await;
    unregister(&ctx, VALIDATING.1, &name).await;
    unregister(&ctx, MUTATING.1, &name).await;
    unregister(&ctx, VALIDATING.1, &blocking).await;
    unregister(&ctx, MUTATING.1, &blocking).await;
    result
}

async fn deny_crd(ctx: Ctx) -> anyhow::Result<()> {
    let server = start().await?;
    let selector = mark_namespace(&ctx).await?;
    let name = ctx.namespace.clone();
    // Scoped to this test by an object selector (CRDs are cluster-scoped).
    let mut h = hook(
        "deny-crd-with-unwanted-label.k8s.io",
        &format!("{}/crd", server.base),
        &server.ca,
        &[],
        &selector,
    );
    h["rules"] = json!([{
        "operations": ["CREATE"],
        "apiGroups": ["apiextensions.k8s.io"],
        "apiVersions": ["*"],
        "resources": ["customresourcedefinitions"],
    }]);
    if let Some(o) = h.as_object_mut() {
        o.remove("namespaceSelector");
    }
    h["objectSelector"] = json!({"matchLabels": {selector.0.clone(): selector.1.clone()}});
    register(
        &ctx,
        VALIDATING.0,
        VALIDATING.1,
        &name,
        vec![h, ready_hook(&server, &selector)],
    )
    .await?;
    let result = async {
        wait_until_denied(&ctx, disallowed()).await?;
        let (crd_name, kind, group) = (
            "e2e-test-webhook-deny-crd",
            "E2e-test-webhook-deny-crd",
            "webhook.example.com",
        );
        let full = format!("{crd_name}s.{group}");
        let crd = json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {
                "name": full,
                "labels": {selector.0.clone(): "true", "webhook-e2e-test": DISALLOWED},
            },
            "spec": {
                "group": group,
                "versions": [{
                    "name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                }],
                "names": {"singular": crd_name, "kind": kind, "listKind": format!("{kind}List"), "plural": format!("{crd_name}s")},
                "scope": "Namespaced",
            },
        });
        let raw = ctx
            .request(
                "POST",
                "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                "application/json",
                "application/json",
                serde_json::to_vec(&crd)?,
            )
            .await?;
        if raw.status == 201 {
            let _ = ctx
                .request(
                    "DELETE",
                    &format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{full}"),
                    "application/json",
                    "",
                    Vec::new(),
                )
                .await;
            bail!("create custom resource definition {full} should be denied by webhook");
        }
        let body = String::from_utf8_lossy(&raw.body);
        ensure!(
            body.contains("the crd contains unwanted label"),
            "expect error contains \"the crd contains unwanted label\", got {} {body}",
            raw.status
        );
        anyhow::Ok(())
    }
    .await;
    unregister(&ctx, VALIDATING.1, &name).await;
    result
}

async fn skip_me(ctx: Ctx) -> anyhow::Result<()> {
    let server = start().await?;
    let selector = mark_namespace(&ctx).await?;
    let name = ctx.namespace.clone();
    let mut h = mutate_configmap_hook(&server, &selector);
    h["matchConditions"] =
        json!([{"name": "skip-me", "expression": "object.metadata.name != 'skip-me'"}]);
    register(
        &ctx,
        MUTATING.0,
        MUTATING.1,
        &name,
        vec![h, ready_hook(&server, &selector)],
    )
    .await?;
    let result = async {
        wait_until_denied(&ctx, disallowed()).await?;
        let api = ctx.namespaced::<ConfigMap>();
        let want = |pairs: &[&str]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|k| (k.to_string(), "yes".to_string()))
                .collect()
        };
        let mutated = api
            .create(
                &PostParams::default(),
                &configmap(
                    &crate::framework::unique("cm"),
                    json!({"mutation-start": "yes"}),
                )?,
            )
            .await?;
        ensure!(
            mutated.data.clone().unwrap_or_default()
                == want(&["mutation-start", "mutation-stage-1"]),
            "a configmap with a random name is mutated: {:?}",
            mutated.data
        );
        let skipped = api
            .create(
                &PostParams::default(),
                &configmap("skip-me", json!({"mutation-start": "yes"}))?,
            )
            .await?;
        ensure!(
            skipped.data.clone().unwrap_or_default() == want(&["mutation-start"]),
            "the 'skip-me' configmap is not mutated: {:?}",
            skipped.data
        );
        anyhow::Ok(())
    }
    .await;
    unregister(&ctx, MUTATING.1, &name).await;
    result
}

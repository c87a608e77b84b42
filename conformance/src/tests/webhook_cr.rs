//! The AdmissionWebhook tests on custom resources (test/e2e/apimachinery/webhook.go): a
//! validating webhook denying their creation, update and deletion, and mutating webhooks
//! adding to them — also through a CRD whose storage version changes, and through one whose
//! structural schema prunes part of what the webhooks add. As in `webhook.rs`, the sample
//! webhook runs in this process, registered by URL; the handlers it serves at /custom-resource
//! and /mutating-custom-resource (agnhost's webhook/customresource.go) live here.
//!
//! The test CRDs are those of crd.CreateTestCRD and of
//! createAdmissionWebhookMultiVersionTestCRDWithV1Storage: namespaced, in the group
//! `webhook.example.com`, their resources made in the test namespace.

use std::time::Duration;

use anyhow::{bail, ensure};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use serde_json::{Value, json};

use super::crd::{delete_crd, wait_discovery};
use super::tests;
use super::webhook::{
    Server, hook, mark_namespace, parse, register, review_response, start, unregister,
    wait_until_denied,
};
use super::webhook_more::{MUTATING, VALIDATING, disallowed, ready_hook};
use crate::framework::{api_error, from, unique};
use crate::{Ctx, Test};

pub fn tests() -> Vec<Test> {
    tests![
        "[sig-api-machinery] AdmissionWebhook [Privileged:ClusterAdmin] should be able to deny custom resource creation, update and deletion" => deny_custom_resource,
        "[sig-api-machinery] AdmissionWebhook [Privileged:ClusterAdmin] should mutate custom resource" => mutate_custom_resource,
        "[sig-api-machinery] AdmissionWebhook [Privileged:ClusterAdmin] should mutate custom resource with different stored version" => mutate_custom_resource_stored_version,
        "[sig-api-machinery] AdmissionWebhook [Privileged:ClusterAdmin] should mutate custom resource with pruning" => mutate_custom_resource_pruning,
    ]
}

// ---- the sample webhook's handlers ----

const UNWANTED_DATA: &str = "the custom resource contains unwanted data";
const UNDELETABLE: &str =
    "the custom resource cannot be deleted because it contains unwanted key and value";

/// /custom-resource (admitCustomResource): `data.webhook-e2e-test: webhook-disallow` is refused
/// on create and update, `webhook-nondeletable` on delete (judged on the old object). Like
/// agnhost, the refusal is given as the status's reason, with no message.
pub(super) async fn custom_resource(body: axum::body::Bytes) -> String {
    let review = parse(&body);
    let request = &review["request"];
    let operation = request["operation"].as_str().unwrap_or("");
    let object = if operation == "DELETE" {
        &request["oldObject"]
    } else {
        &request["object"]
    };
    let refusal = match (operation, object["data"]["webhook-e2e-test"].as_str()) {
        ("CREATE" | "UPDATE", Some("webhook-disallow")) => Some(UNWANTED_DATA),
        ("DELETE", Some("webhook-nondeletable")) => Some(UNDELETABLE),
        _ => None,
    };
    let mut response = json!({"uid": request["uid"], "allowed": refusal.is_none()});
    if let Some(reason) = refusal {
        response["status"] = json!({"reason": reason});
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
        .to_string()
}

/// /mutating-custom-resource (mutateCustomResource): adds `data.mutation-stage-1: yes` to a
/// resource with `mutation-start: yes`, and `mutation-stage-2: yes` to one with stage 1 — so
/// two hooks in a row add both.
pub(super) async fn mutating_custom_resource(body: axum::body::Bytes) -> String {
    let review = parse(&body);
    let data = &review["request"]["object"]["data"];
    let stage = if data["mutation-stage-1"] == "yes" {
        Some(2)
    } else if data["mutation-start"] == "yes" {
        Some(1)
    } else {
        None
    };
    let patch = stage.map(
        |n| json!([{"op": "add", "path": format!("/data/mutation-stage-{n}"), "value": "yes"}]),
    );
    review_response(&review, true, "", patch)
}

// ---- the test CRDs ----

const GROUP: &str = "webhook.example.com";

/// genRandomCRD: a namespaced CRD of `versions` in [`GROUP`], its kind the same as its
/// singular name. Upstream puts the framework's unique name in it; the test namespaces here
/// are longer, and the plural must stay a DNS label, so a random `e2e-test-webhook-*` stands.
fn test_crd(versions: Value) -> Value {
    let name = format!("{}-crd", unique("e2e-test-webhook"));
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{name}s.{GROUP}")},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "plural": format!("{name}s"),
                "singular": name,
                "kind": name,
                "listKind": format!("{name}List"),
            },
            "versions": versions,
        },
    })
}

/// A served version whose schema keeps every field.
fn preserving_version(name: &str, storage: bool) -> Value {
    json!({
        "name": name, "served": true, "storage": storage,
        "schema": {"openAPIV3Schema": {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": true,
        }},
    })
}

/// The pruning test's schema: of what the webhooks add, only `mutation-stage-1` is declared.
fn pruning_version(name: &str, storage: bool) -> Value {
    json!({
        "name": name, "served": true, "storage": storage,
        "schema": {"openAPIV3Schema": {
            "type": "object",
            "properties": {"data": {
                "type": "object",
                "properties": {
                    "mutation-start": {"type": "string"},
                    "mutation-stage-1": {"type": "string"},
                },
            }},
        }},
    })
}

/// CreateMultiVersionTestCRD: the CRD made, and served in each of its versions.
async fn create_test_crd(ctx: &Ctx, crd: &Value) -> anyhow::Result<()> {
    ctx.cluster::<CustomResourceDefinition>()
        .create(&PostParams::default(), &from(crd.clone())?)
        .await
        .map_err(|e| anyhow::anyhow!("creating the CustomResourceDefinition: {e}"))?;
    wait_discovery(ctx, crd, true).await
}

/// servedAPIVersions.
fn served_versions(crd: &Value) -> Vec<&str> {
    crd["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["served"] == true)
        .filter_map(|v| v["name"].as_str())
        .collect()
}

fn plural(crd: &Value) -> &str {
    crd["spec"]["names"]["plural"].as_str().unwrap_or("")
}

/// The custom resources of `version` in the test namespace (a TestCrd's DynamicClients).
fn custom_resources(ctx: &Ctx, crd: &Value, version: &str) -> Api<DynamicObject> {
    let kind = crd["spec"]["names"]["kind"].as_str().unwrap_or("");
    let gvk = GroupVersionKind::gvk(GROUP, version, kind);
    let resource = ApiResource::from_gvk_with_plural(&gvk, plural(crd));
    Api::namespaced_with(ctx.client.clone(), &ctx.namespace, &resource)
}

/// A v1 custom resource with this `data`.
fn custom_resource_object(
    ctx: &Ctx,
    crd: &Value,
    name: &str,
    data: Value,
) -> anyhow::Result<DynamicObject> {
    from(json!({
        "kind": crd["spec"]["names"]["kind"],
        "apiVersion": format!("{GROUP}/v1"),
        "metadata": {"name": name, "namespace": ctx.namespace},
        "data": data,
    }))
}

/// A rule on the CRD's resources in each served version.
fn custom_resource_rules(crd: &Value, operations: &[&str]) -> Value {
    json!([{
        "operations": operations,
        "apiGroups": [GROUP],
        "apiVersions": served_versions(crd),
        "resources": [plural(crd)],
    }])
}

/// Runs `body` between making the CRD and deleting it (the test's DeferCleanups, last first):
/// the webhook configuration named `ctx.namespace`, of `config_plural`, is unregistered before
/// the CRD goes.
async fn with_test_crd<F, Fut>(
    ctx: &Ctx,
    crd: &Value,
    config_plural: &str,
    body: F,
) -> anyhow::Result<()>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    create_test_crd(ctx, crd).await?;
    let result = body().await;
    unregister(ctx, config_plural, &ctx.namespace).await;
    let cleanup = delete_crd(ctx, crd).await;
    result.and(cleanup)
}

/// The text of a request's error, as client-go's err.Error(): an API error's message.
fn error_text(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}

/// updateCustomResource: gets the resource, changes it and updates it, again every 2 s for a
/// minute while the update conflicts; otherwise the update's (or the get's) error text.
async fn update_custom_resource<F>(
    api: &Api<DynamicObject>,
    name: &str,
    change: F,
) -> Result<DynamicObject, String>
where
    F: Fn(&mut DynamicObject),
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut cr = api.get(name).await.map_err(|e| error_text(&e))?;
        change(&mut cr);
        match api.replace(name, &PostParams::default(), &cr).await {
            Ok(updated) => return Ok(updated),
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(e) => return Err(error_text(&e)),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err("timed out waiting for the condition".into());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Sets `data.webhook-e2e-test`, making `data` first when the resource has none.
fn set_test_data(value: &'static str) -> impl Fn(&mut DynamicObject) {
    move |cr: &mut DynamicObject| {
        if !cr.data["data"].is_object() {
            cr.data["data"] = json!({});
        }
        cr.data["data"]["webhook-e2e-test"] = json!(value);
    }
}

// ---- the tests ----

async fn deny_custom_resource(ctx: Ctx) -> anyhow::Result<()> {
    let server = start().await?;
    let selector = mark_namespace(&ctx).await?;
    let crd = test_crd(json!([preserving_version("v1", true)]));
    with_test_crd(&ctx, &crd, VALIDATING.1, || async {
        // Registering the custom resource webhook via the AdmissionRegistration API
        let mut deny = hook(
            "deny-unwanted-custom-resource-data.k8s.io",
            &format!("{}/custom-resource", server.base),
            &server.ca,
            &[],
            &selector,
        );
        deny["rules"] = custom_resource_rules(&crd, &["CREATE", "UPDATE", "DELETE"]);
        register(
            &ctx,
            VALIDATING.0,
            VALIDATING.1,
            &ctx.namespace,
            vec![deny, ready_hook(&server, &selector)],
        )
        .await?;
        wait_until_denied(&ctx, disallowed()).await?;
        let api = custom_resources(&ctx, &crd, "v1");

        // Creating a custom resource that should be denied by the webhook
        let cr = custom_resource_object(
            &ctx,
            &crd,
            "cr-instance-1",
            json!({"webhook-e2e-test": "webhook-disallow"}),
        )?;
        let Err(e) = api.create(&PostParams::default(), &cr).await else {
            bail!(
                "create custom resource cr-instance-1 in namespace {} should be denied by webhook",
                ctx.namespace
            );
        };
        let text = error_text(&e);
        ensure!(
            text.contains(UNWANTED_DATA),
            "expect error contains {UNWANTED_DATA:?}, got {text:?}"
        );

        // Creating a custom resource whose deletion would be denied by the webhook
        let name = "cr-instance-2";
        let cr = custom_resource_object(
            &ctx,
            &crd,
            name,
            json!({"webhook-e2e-test": "webhook-nondeletable"}),
        )?;
        api.create(&PostParams::default(), &cr).await.map_err(|e| {
            anyhow::anyhow!(
                "failed to create custom resource {name} in namespace: {}: {e}",
                ctx.namespace
            )
        })?;

        // Updating the custom resource with disallowed data should be denied
        let Err(text) = update_custom_resource(&api, name, set_test_data("webhook-disallow")).await
        else {
            bail!(
                "updating custom resource {name} in namespace: {} should be denied",
                ctx.namespace
            );
        };
        ensure!(
            text.contains(UNWANTED_DATA),
            "expect error contains {UNWANTED_DATA:?}, got {text:?}"
        );

        // Deleting the custom resource should be denied
        let denied = api_error(api.delete(name, &DeleteParams::default()).await)?;
        ensure!(
            denied.message.contains(UNDELETABLE),
            "expect error contains {UNDELETABLE:?}, got {:?}",
            denied.message
        );

        // Remove the offending key and value from the custom resource data
        update_custom_resource(&api, name, set_test_data("webhook-allow"))
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "failed to update custom resource {name} in namespace: {}: {e}",
                    ctx.namespace
                )
            })?;

        // Deleting the updated custom resource should be successful
        api.delete(name, &DeleteParams::default())
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "failed to delete custom resource {name} in namespace: {}: {e}",
                    ctx.namespace
                )
            })?;
        anyhow::Ok(())
    })
    .await
}

/// registerMutatingWebhookForCustomResource: stage 1 on create and update, stage 2 on create,
/// both at /mutating-custom-resource, with the "is ready" hook.
async fn register_mutating_for_custom_resource(
    ctx: &Ctx,
    server: &Server,
    selector: &(String, String),
    crd: &Value,
) -> anyhow::Result<()> {
    let stage = |n: u8, operations: &[&str]| {
        let mut h = hook(
            &format!("mutate-custom-resource-data-stage-{n}.k8s.io"),
            &format!("{}/mutating-custom-resource", server.base),
            &server.ca,
            &[],
            selector,
        );
        h["rules"] = custom_resource_rules(crd, operations);
        h
    };
    register(
        ctx,
        MUTATING.0,
        MUTATING.1,
        &ctx.namespace,
        vec![
            stage(1, &["CREATE", "UPDATE"]),
            stage(2, &["CREATE"]),
            ready_hook(server, selector),
        ],
    )
    .await?;
    wait_until_denied(ctx, disallowed()).await
}

/// testMutatingCustomResourceWebhook: a resource made with `mutation-start` comes back with
/// both stages' data, or only stage 1's when the schema prunes stage 2's.
async fn expect_mutated_on_create(ctx: &Ctx, crd: &Value, prune: bool) -> anyhow::Result<()> {
    // Creating a custom resource that should be mutated by the webhook
    let name = "cr-instance-1";
    let cr = custom_resource_object(ctx, crd, name, json!({"mutation-start": "yes"}))?;
    let mutated = custom_resources(ctx, crd, "v1")
        .create(&PostParams::default(), &cr)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "failed to create custom resource {name} in namespace: {}: {e}",
                ctx.namespace
            )
        })?;
    let mut expected = json!({"mutation-start": "yes", "mutation-stage-1": "yes"});
    if !prune {
        expected["mutation-stage-2"] = json!("yes");
    }
    ensure!(
        mutated.data["data"] == expected,
        "\nexpected {expected}\n, got {}\n",
        mutated.data["data"]
    );
    Ok(())
}

async fn mutate_custom_resource(ctx: Ctx) -> anyhow::Result<()> {
    let server = start().await?;
    let selector = mark_namespace(&ctx).await?;
    let crd = test_crd(json!([preserving_version("v1", true)]));
    with_test_crd(&ctx, &crd, MUTATING.1, || async {
        // Registering the mutating webhook for the custom resource via the AdmissionRegistration
        // API
        register_mutating_for_custom_resource(&ctx, &server, &selector, &crd).await?;
        expect_mutated_on_create(&ctx, &crd, false).await
    })
    .await
}

async fn mutate_custom_resource_stored_version(ctx: Ctx) -> anyhow::Result<()> {
    let server = start().await?;
    let selector = mark_namespace(&ctx).await?;
    let crd = test_crd(json!([
        preserving_version("v1", true),
        preserving_version("v2", false),
    ]));
    with_test_crd(&ctx, &crd, MUTATING.1, || async {
        register_mutating_for_custom_resource(&ctx, &server, &selector, &crd).await?;

        // Creating a custom resource while v1 is storage version
        let name = "cr-instance-1";
        let cr = custom_resource_object(&ctx, &crd, name, json!({"mutation-start": "yes"}))?;
        custom_resources(&ctx, &crd, "v1")
            .create(&PostParams::default(), &cr)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "failed to create custom resource {name} in namespace: {}: {e}",
                    ctx.namespace
                )
            })?;

        // Patching Custom Resource Definition to set v2 as storage
        let crd_name = crd["metadata"]["name"].as_str().unwrap_or("");
        let v2_storage = json!({"spec": {"versions": [
            preserving_version("v1", false),
            preserving_version("v2", true),
        ]}});
        ctx.cluster::<CustomResourceDefinition>()
            .patch(
                crd_name,
                &PatchParams::default(),
                &Patch::Strategic(v2_storage),
            )
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "failed to patch custom resource definition {crd_name} in namespace: {}: {e}",
                    ctx.namespace
                )
            })?;

        // Patching the custom resource while v2 is storage version
        let dummy = json!([{"op": "add", "path": "/dummy", "value": "test"}]);
        let mutated = custom_resources(&ctx, &crd, "v2")
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Json::<()>(serde_json::from_value(dummy)?),
            )
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "failed to patch custom resource {name} in namespace: {}: {e}",
                    ctx.namespace
                )
            })?;
        let expected =
            json!({"mutation-start": "yes", "mutation-stage-1": "yes", "mutation-stage-2": "yes"});
        ensure!(
            mutated.data["data"] == expected,
            "\nexpected {expected}\n, got {}\n",
            mutated.data["data"]
        );
        ensure!(
            mutated.data["dummy"] == "test",
            "\nexpected \"test\"\n, got {}\n",
            mutated.data["dummy"]
        );
        anyhow::Ok(())
    })
    .await
}

async fn mutate_custom_resource_pruning(ctx: Ctx) -> anyhow::Result<()> {
    let server = start().await?;
    let selector = mark_namespace(&ctx).await?;
    // mutation-stage-2 is left out of the schema, so that it is pruned.
    let crd = test_crd(json!([
        pruning_version("v1", true),
        pruning_version("v2", false),
    ]));
    with_test_crd(&ctx, &crd, MUTATING.1, || async {
        register_mutating_for_custom_resource(&ctx, &server, &selector, &crd).await?;
        expect_mutated_on_create(&ctx, &crd, true).await
    })
    .await
}

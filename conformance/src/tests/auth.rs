//! sig-auth and the admission side of sig-api-machinery: SubjectReview
//! (test/e2e/auth/subjectreviews.go), ResourceQuota updates (test/e2e/apimachinery/
//! resource_quota.go) and ValidatingAdmissionPolicy (test/e2e/apimachinery/
//! validatingadmissionpolicy.go).

use std::time::Duration;

use anyhow::{Context as _, ensure};
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{LocalSubjectAccessReview, SubjectAccessReview};
use k8s_openapi::api::core::v1::{Namespace, ResourceQuota, ServiceAccount};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use super::tests;
use crate::framework::{api_error, eventually};
use crate::{Ctx, Test};

pub fn tests() -> Vec<Test> {
    tests![
        "[sig-auth] SubjectReview should support SubjectReview API operations" => subject_review,
        "[sig-api-machinery] ResourceQuota should be able to update and delete ResourceQuota." => quota_update_delete,
        "[sig-api-machinery] ValidatingAdmissionPolicy [Privileged:ClusterAdmin] should validate against a Deployment" => vap_deployment,
    ]
}

fn from<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> anyhow::Result<T> {
    serde_json::from_value(v).context("building the object")
}

async fn subject_review(ctx: Ctx) -> anyhow::Result<()> {
    let ns = ctx.namespace.clone();
    let pp = PostParams::default();
    ctx.namespaced::<ServiceAccount>()
        .create(&pp, &from(json!({"metadata": {"name": "e2e"}}))?)
        .await?;
    let user = format!("system:serviceaccount:{ns}:e2e");
    let attributes =
        json!({"verb": "list", "resource": "configmaps", "namespace": ns, "version": "v1"});
    let sar = ctx
        .cluster::<SubjectAccessReview>()
        .create(
            &pp,
            &from(json!({"spec": {"resourceAttributes": attributes, "user": user}}))?,
        )
        .await?;
    let status = sar
        .status
        .context("the SubjectAccessReview has no status")?;
    // What the review said is what the user gets.
    let listed = ctx
        .request_as(&user, "GET", &format!("/api/v1/namespaces/{ns}/configmaps"))
        .await?;
    if status.allowed {
        ensure!(
            listed.status == 200,
            "allowed, but the list got {}",
            listed.status
        );
    } else {
        ensure!(
            listed.status == 403,
            "not allowed, but the list got {}",
            listed.status
        );
    }
    let lsar = ctx
        .namespaced::<LocalSubjectAccessReview>()
        .create(
            &pp,
            &from(json!({"metadata": {"namespace": ns}, "spec": {"resourceAttributes": attributes, "user": user}}))?,
        )
        .await?;
    let local = lsar
        .status
        .context("the LocalSubjectAccessReview has no status")?;
    ensure!(
        local.allowed == status.allowed,
        "LocalSubjectAccessReview allowed differs"
    );
    ensure!(
        local.denied == status.denied,
        "LocalSubjectAccessReview denied differs"
    );
    ensure!(
        local.reason == status.reason,
        "LocalSubjectAccessReview reason differs"
    );
    Ok(())
}

async fn quota_update_delete(ctx: Ctx) -> anyhow::Result<()> {
    let api = ctx.namespaced::<ResourceQuota>();
    let name = "test-quota";
    api.create(
        &PostParams::default(),
        &from(
            json!({"metadata": {"name": name}, "spec": {"hard": {"cpu": "1", "memory": "500Mi"}}}),
        )?,
    )
    .await?;
    let mut quota = api.get(name).await?;
    let hard = quota
        .spec
        .as_ref()
        .and_then(|s| s.hard.clone())
        .context("no hard limits")?;
    ensure!(
        hard["cpu"].0 == "1" && hard["memory"].0 == "500Mi",
        "hard limits {hard:?}"
    );
    let spec = quota.spec.as_mut().context("no spec")?;
    spec.hard = Some(from(json!({"cpu": "2", "memory": "1Gi"}))?);
    api.replace(name, &PostParams::default(), &quota).await?;
    let updated = api.get(name).await?;
    let hard = updated
        .spec
        .and_then(|s| s.hard)
        .context("no hard limits")?;
    ensure!(
        hard["cpu"].0 == "2" && hard["memory"].0 == "1Gi",
        "updated limits {hard:?}"
    );
    api.delete(name, &DeleteParams::default()).await?;
    let gone = api_error(api.get(name).await)?;
    ensure!(gone.code == 404, "the deleted quota answered {}", gone.code);
    Ok(())
}

async fn vap_deployment(ctx: Ctx) -> anyhow::Result<()> {
    let unique = ctx.namespace.clone();
    // Match only this test's namespace, by a label unique to it.
    ctx.cluster::<Namespace>()
        .patch(
            &unique,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {unique.clone(): "true"}}})),
        )
        .await?;
    let policy_name = format!("{unique}.policy.example.com");
    let policies = ctx.cluster::<ValidatingAdmissionPolicy>();
    policies
        .create(
            &PostParams::default(),
            &from(json!({
                "metadata": {"name": policy_name},
                "spec": {
                    "matchConstraints": {
                        "namespaceSelector": {"matchLabels": {unique.clone(): "true"}},
                        "resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"], "resources": ["deployments"]}],
                    },
                    "validations": [
                        {"expression": "object.spec.replicas > 1", "messageExpression": "'wants replicas > 1, got ' + string(object.spec.replicas)"},
                        {"expression": format!("namespaceObject.metadata.name == '{unique}'"), "message": "Internal error! Other namespace should not be allowed."},
                    ],
                },
            }))?,
        )
        .await?;
    let bindings = ctx.cluster::<ValidatingAdmissionPolicyBinding>();
    bindings
        .create(
            &PostParams::default(),
            &from(json!({
                "metadata": {"name": format!("{unique}.binding.example.com")},
                "spec": {
                    "policyName": policy_name,
                    "validationActions": ["Deny"],
                    "matchResources": {"namespaceSelector": {"matchLabels": {unique.clone(): "true"}}},
                },
            }))?,
        )
        .await?;
    let deployments = ctx.namespaced::<Deployment>();
    let deployment = |name: &str, replicas: i32| {
        from::<Deployment>(json!({
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}},
            },
        }))
    };
    // Until the policy is in force, a marker goes through (and is removed).
    let denial = eventually(Duration::from_secs(30), "the policy to deny", || async {
        let marker = deployment("marker", 1)?;
        Ok(
            match deployments.create(&PostParams::default(), &marker).await {
                Err(kube::Error::Api(e)) => Some(e),
                Ok(_) => {
                    let _ = deployments.delete("marker", &DeleteParams::default()).await;
                    None
                }
                Err(_) => None,
            },
        )
    })
    .await?;
    ensure!(
        denial.message.contains("wants replicas > 1, got 1"),
        "denied with {:?}",
        denial.message
    );
    deployments
        .create(&PostParams::default(), &deployment("replicated", 2)?)
        .await
        .context("a replicated Deployment is allowed")?;
    let denied = api_error(
        deployments
            .create(&PostParams::default(), &deployment("single", 1)?)
            .await,
    )?;
    ensure!(
        denied.message.contains("wants replicas > 1, got 1"),
        "denied with {:?}",
        denied.message
    );
    let _ = bindings
        .delete(
            &format!("{unique}.binding.example.com"),
            &DeleteParams::default(),
        )
        .await;
    let _ = policies
        .delete(&policy_name, &DeleteParams::default())
        .await;
    Ok(())
}

//! sig-auth and the admission side of sig-api-machinery: SubjectReview
//! (test/e2e/auth/subjectreviews.go), ResourceQuota updates (test/e2e/apimachinery/
//! resource_quota.go) and ValidatingAdmissionPolicy (test/e2e/apimachinery/
//! validatingadmissionpolicy.go).

use std::time::Duration;

use anyhow::{Context as _, ensure};
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
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
        "[sig-api-machinery] ValidatingAdmissionPolicy [Privileged:ClusterAdmin] should allow expressions to refer variables." => vap_variables,
        "[sig-auth] Certificates API [Privileged:ClusterAdmin] should support CSR API operations" => csr_api,
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

/// The test's ValidatingAdmissionPolicy over Deployments in its own namespace (matched by a
/// label unique to it) with these `variables` and `validations`, bound with Deny: upstream's
/// newValidatingAdmissionPolicyBuilder(...).MatchUniqueNamespace(...) and createBinding.
/// Returns the policy's and the binding's names.
async fn deployment_policy(
    ctx: &Ctx,
    rules: serde_json::Value,
) -> anyhow::Result<(String, String)> {
    let unique = ctx.namespace.clone();
    ctx.cluster::<Namespace>()
        .patch(
            &unique,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {unique.clone(): "true"}}})),
        )
        .await?;
    let names = (
        format!("{unique}.policy.example.com"),
        format!("{unique}.binding.example.com"),
    );
    let mut spec = json!({
        "matchConstraints": {
            "namespaceSelector": {"matchLabels": {unique.clone(): "true"}},
            "resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"], "resources": ["deployments"]}],
        },
    });
    for part in ["variables", "validations"] {
        if let Some(v) = rules.get(part) {
            spec[part] = v.clone();
        }
    }
    ctx.cluster::<ValidatingAdmissionPolicy>()
        .create(
            &PostParams::default(),
            &from(json!({"metadata": {"name": names.0}, "spec": spec}))?,
        )
        .await?;
    ctx.cluster::<ValidatingAdmissionPolicyBinding>()
        .create(
            &PostParams::default(),
            &from(json!({
                "metadata": {"name": names.1},
                "spec": {
                    "policyName": names.0,
                    "validationActions": ["Deny"],
                    "matchResources": {"namespaceSelector": {"matchLabels": {unique: "true"}}},
                },
            }))?,
        )
        .await?;
    Ok(names)
}

async fn remove_policy(ctx: &Ctx, (policy, binding): &(String, String)) {
    let _ = ctx
        .cluster::<ValidatingAdmissionPolicyBinding>()
        .delete(binding, &DeleteParams::default())
        .await;
    let _ = ctx
        .cluster::<ValidatingAdmissionPolicy>()
        .delete(policy, &DeleteParams::default())
        .await;
}

/// Upstream's basicDeployment: `replicas` nginx pods labelled app=<name>.
pub(super) fn basic_deployment(name: &str, replicas: i32) -> anyhow::Result<Deployment> {
    from(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}},
        },
    }))
}

async fn vap_deployment(ctx: Ctx) -> anyhow::Result<()> {
    let unique = ctx.namespace.clone();
    let names = deployment_policy(
        &ctx,
        json!({"validations": [
            {"expression": "object.spec.replicas > 1", "messageExpression": "'wants replicas > 1, got ' + string(object.spec.replicas)"},
            {"expression": format!("namespaceObject.metadata.name == '{unique}'"), "message": "Internal error! Other namespace should not be allowed."},
        ]}),
    )
    .await?;
    let result = vap_deployment_checks(&ctx).await;
    remove_policy(&ctx, &names).await;
    result
}

async fn vap_deployment_checks(ctx: &Ctx) -> anyhow::Result<()> {
    let deployments = ctx.namespaced::<Deployment>();
    // Until the policy is in force, a marker goes through (and is removed).
    let denial = eventually(Duration::from_secs(30), "the policy to deny", || async {
        let marker = basic_deployment("marker", 1)?;
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
        .create(&PostParams::default(), &basic_deployment("replicated", 2)?)
        .await
        .context("a replicated Deployment is allowed")?;
    let denied = api_error(
        deployments
            .create(&PostParams::default(), &basic_deployment("single", 1)?)
            .await,
    )?;
    ensure!(
        denied.message.contains("wants replicas > 1, got 1"),
        "denied with {:?}",
        denied.message
    );
    Ok(())
}

async fn vap_variables(ctx: Ctx) -> anyhow::Result<()> {
    let names = deployment_policy(
        &ctx,
        json!({
            "variables": [
                {"name": "replicas", "expression": "object.spec.replicas"},
                {"name": "oddReplicas", "expression": "variables.replicas % 2 == 1"},
            ],
            "validations": [
                {"expression": "variables.replicas > 1"},
                {"expression": "variables.oddReplicas"},
            ],
        }),
    )
    .await?;
    let result = vap_variables_checks(&ctx).await;
    remove_policy(&ctx, &names).await;
    result
}

/// test/e2e/auth/certificates.go: discovery, CRUD, watch, and the /approval and /status
/// subresources of CertificateSigningRequests, with a signer of the test's own (so no
/// controller acts on them).
async fn csr_api(ctx: Ctx) -> anyhow::Result<()> {
    use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
    use kube::api::{ListParams, WatchParams};
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec!["e2e.example.com".to_string()])?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "e2e.example.com");
    let request = params.serialize_request(&key)?.pem()?;
    let certificate = params.self_signed(&key)?.pem();
    let b64 = |s: &str| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, s);
    let signer = format!("example.com/e2e-{}", ctx.namespace);
    let template: CertificateSigningRequest = from(json!({
        "metadata": {"generateName": "e2e-example-csr-"},
        "spec": {
            "request": b64(&request),
            "signerName": signer,
            "expirationSeconds": 3600,
            "usages": ["digital signature", "key encipherment", "server auth"],
        },
    }))?;

    // Discovery.
    let groups: serde_json::Value = ctx.get_json("/apis").await?;
    let group = groups["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|g| g["name"] == "certificates.k8s.io")
        .context("certificates.k8s.io is not in /apis")?;
    ensure!(
        group["preferredVersion"]["version"] == "v1",
        "preferred {}",
        group["preferredVersion"]
    );
    let group: serde_json::Value = ctx.get_json("/apis/certificates.k8s.io").await?;
    ensure!(
        group["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|v| v["version"] == "v1"),
        "v1 is not among {}",
        group["versions"]
    );
    let resources: serde_json::Value = ctx.get_json("/apis/certificates.k8s.io/v1").await?;
    for wanted in [
        "certificatesigningrequests",
        "certificatesigningrequests/approval",
        "certificatesigningrequests/status",
    ] {
        ensure!(
            resources["resources"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|r| r["name"] == wanted),
            "{wanted} is not discovered"
        );
    }

    // Create, get, list, watch, patch, update.
    let csrs = ctx.cluster::<CertificateSigningRequest>();
    let pp = PostParams::default();
    csrs.create(&pp, &template).await?;
    csrs.create(&pp, &template).await?;
    let created = csrs.create(&pp, &template).await?;
    let name = created.metadata.name.clone().context("no name generated")?;
    let gotten = csrs.get(&name).await?;
    ensure!(gotten.metadata.uid == created.metadata.uid, "another uid");
    ensure!(
        gotten.spec.expiration_seconds == Some(3600),
        "expirationSeconds {:?}",
        gotten.spec.expiration_seconds
    );
    let by_signer = ListParams::default().fields(&format!("spec.signerName={signer}"));
    let listed = csrs.list(&by_signer).await?;
    ensure!(
        listed.items.len() == 3,
        "filtered list has {} items",
        listed.items.len()
    );
    let rv = listed.metadata.resource_version.clone().unwrap_or_default();
    let mut events = Box::pin(
        csrs.watch(
            &WatchParams::default().fields(&format!("metadata.name={name}")),
            &rv,
        )
        .await?,
    );
    let patched = csrs
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"patched": "true"}}})),
        )
        .await?;
    ensure!(
        annotation(&patched.metadata, "patched") == Some("true"),
        "patched annotation missing"
    );
    let mut update = patched.clone();
    update
        .metadata
        .annotations
        .get_or_insert_default()
        .insert("updated".into(), "true".into());
    let updated = csrs.replace(&name, &pp, &update).await?;
    ensure!(
        annotation(&updated.metadata, "updated") == Some("true"),
        "updated annotation missing"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let event = tokio::time::timeout_at(deadline, futures::StreamExt::next(&mut events))
            .await
            .context("timed out waiting for the watch event")?
            .context("the watch closed")??;
        match event {
            kube::api::WatchEvent::Modified(o)
                if annotation(&o.metadata, "patched") == Some("true") =>
            {
                break;
            }
            kube::api::WatchEvent::Modified(_) => {}
            other => anyhow::bail!("expected MODIFIED, got {other:?}"),
        }
    }

    // The /approval subresource.
    let path = format!("/apis/certificates.k8s.io/v1/certificatesigningrequests/{name}");
    let approval: serde_json::Value = ctx.get_json(&format!("{path}/approval")).await?;
    ensure!(
        approval["kind"] == "CertificateSigningRequest"
            && approval["apiVersion"] == "certificates.k8s.io/v1",
        "GET /approval: {} {}",
        approval["apiVersion"],
        approval["kind"]
    );
    ensure!(
        approval["metadata"]["uid"] == json!(created.metadata.uid),
        "GET /approval: another uid"
    );
    let patched = csrs
        .patch_subresource(
            "approval",
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"patchedapproval": "true"}}, "status": {"conditions": [{"type": "ApprovalPatch", "status": "True", "reason": "e2e"}]}})),
        )
        .await?;
    let conditions = patched
        .status
        .clone()
        .unwrap_or_default()
        .conditions
        .unwrap_or_default();
    ensure!(
        conditions.len() == 1 && conditions[0].type_ == "ApprovalPatch",
        "patched conditions {conditions:?}"
    );
    ensure!(
        annotation(&patched.metadata, "patchedapproval") == Some("true"),
        "approval patch annotation missing"
    );
    let mut approve = serde_json::to_value(&patched)?;
    approve["status"]["conditions"]
        .as_array_mut()
        .context("no conditions")?
        .push(json!({"type": "Approved", "status": "True", "reason": "E2E", "message": "Set from an e2e test"}));
    let approved: CertificateSigningRequest = serde_json::from_slice(
        &ctx.request(
            "PUT",
            &format!("{path}/approval"),
            "application/json",
            "application/json",
            serde_json::to_vec(&approve)?,
        )
        .await?
        .body,
    )
    .context("the approval update's answer")?;
    let conditions = approved
        .status
        .clone()
        .unwrap_or_default()
        .conditions
        .unwrap_or_default();
    ensure!(
        conditions.len() == 2 && conditions[1].type_ == "Approved",
        "approved conditions {conditions:?}"
    );

    // The /status subresource.
    let status: serde_json::Value = ctx.get_json(&format!("{path}/status")).await?;
    ensure!(
        status["metadata"]["uid"] == json!(created.metadata.uid),
        "GET /status: another uid"
    );
    let patched = csrs
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"patchedstatus": "true"}}, "status": {"certificate": b64(&certificate)}})),
        )
        .await?;
    let issued = patched
        .status
        .clone()
        .unwrap_or_default()
        .certificate
        .map(|c| c.0);
    ensure!(
        issued.as_deref() == Some(certificate.as_bytes()),
        "the patched certificate differs"
    );
    ensure!(
        annotation(&patched.metadata, "patchedstatus") == Some("true"),
        "status patch annotation missing"
    );
    let mut with_condition = serde_json::to_value(&patched)?;
    with_condition["status"]["conditions"]
        .as_array_mut()
        .context("no conditions")?
        .push(json!({"type": "StatusUpdate", "status": "True", "reason": "E2E", "message": "Set from an e2e test"}));
    let updated = csrs
        .replace_status(&name, &pp, &from(with_condition)?)
        .await?;
    let conditions = updated
        .status
        .unwrap_or_default()
        .conditions
        .unwrap_or_default();
    ensure!(
        conditions.len() == 3 && conditions[2].type_ == "StatusUpdate",
        "status-updated conditions {conditions:?}"
    );

    // Delete, then the collection.
    csrs.delete(&name, &DeleteParams::default()).await?;
    let gone = api_error(csrs.get(&name).await)?;
    ensure!(gone.code == 404, "a deleted CSR answers {}", gone.code);
    let listed = csrs.list(&by_signer).await?;
    ensure!(
        listed.items.len() == 2,
        "filtered list has {} items",
        listed.items.len()
    );
    csrs.delete_collection(&DeleteParams::default(), &by_signer)
        .await?;
    let listed = csrs.list(&by_signer).await?;
    ensure!(
        listed.items.is_empty(),
        "filtered list has {} items",
        listed.items.len()
    );
    Ok(())
}

fn annotation<'a>(
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

async fn vap_variables_checks(ctx: &Ctx) -> anyhow::Result<()> {
    let deployments = ctx.namespaced::<Deployment>();
    let pp = PostParams::default();
    // The marker is denied (Invalid) once the policy is in force.
    eventually(
        Duration::from_secs(30),
        "the marker to be denied",
        || async {
            let marker = basic_deployment("marker-deployment", 1)?;
            match deployments.create(&pp, &marker).await {
                Err(kube::Error::Api(e)) if e.code == 422 => Ok(Some(())),
                Err(e) => Err(e.into()),
                Ok(_) => {
                    let _ = deployments
                        .delete("marker-deployment", &DeleteParams::default())
                        .await;
                    Ok(None)
                }
            }
        },
    )
    .await?;
    deployments
        .create(&pp, &basic_deployment("replicated", 3)?)
        .await
        .context("a replicated Deployment (3, odd) is allowed")?;
    let even = api_error(deployments.create(&pp, &basic_deployment("even", 2)?).await)?;
    ensure!(
        even.code == 422
            && even
                .message
                .contains("failed expression: variables.oddReplicas"),
        "an even Deployment: {} {:?}",
        even.code,
        even.message
    );
    // The policy matches deployments only.
    ctx.namespaced::<ReplicaSet>()
        .create(
            &pp,
            &from(json!({
                "metadata": {"name": "non-replicated"},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "non-replicated"}}, "template": {"metadata": {"labels": {"app": "non-replicated"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
            }))?,
        )
        .await
        .context("a non-replicated ReplicaSet is not denied")?;
    Ok(())
}

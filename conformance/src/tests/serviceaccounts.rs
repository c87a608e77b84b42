//! sig-auth's ServiceAccounts (test/e2e/auth/service_accounts.go): automount opt-out, token
//! issuance reviewed by TokenReview, the root-CA ConfigMap, and issuer discovery.

use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenReview};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{DeleteParams, PostParams};
use serde_json::{Value, json};

use super::tests;
use crate::framework::eventually;
use crate::{Ctx, Test};

const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
const ROOT_CA: &str = "kube-root-ca.crt";

pub fn tests() -> Vec<Test> {
    tests![
        "[sig-auth] ServiceAccounts should allow opting out of API token automount" => automount_opt_out,
        "[sig-auth] ServiceAccounts should create a serviceAccountToken and ensure a successful TokenReview" => token_review,
        "[sig-auth] ServiceAccounts should guarantee kube-root-ca.crt exist in any namespace" => root_ca_configmap,
        "[sig-auth] ServiceAccounts ServiceAccountIssuerDiscovery should support OIDC discovery of service account issuer" => oidc_discovery,
    ]
}

fn from<T: serde::de::DeserializeOwned>(v: Value) -> anyhow::Result<T> {
    serde_json::from_value(v).context("building the object")
}

async fn automount_opt_out(ctx: Ctx) -> anyhow::Result<()> {
    let pp = PostParams::default();
    let accounts = ctx.namespaced::<ServiceAccount>();
    for (name, automount) in [("mount", true), ("nomount", false)] {
        accounts
            .create(
                &pp,
                &from(
                    json!({"metadata": {"name": name}, "automountServiceAccountToken": automount}),
                )?,
            )
            .await?;
    }
    let cases: [(&str, &str, Option<bool>, bool); 9] = [
        ("pod-service-account-defaultsa", "default", None, true),
        ("pod-service-account-mountsa", "mount", None, true),
        ("pod-service-account-nomountsa", "nomount", None, false),
        // The pod's choice wins when it opts in...
        (
            "pod-service-account-defaultsa-mountspec",
            "default",
            Some(true),
            true,
        ),
        (
            "pod-service-account-mountsa-mountspec",
            "mount",
            Some(true),
            true,
        ),
        (
            "pod-service-account-nomountsa-mountspec",
            "nomount",
            Some(true),
            true,
        ),
        // ...and when it opts out.
        (
            "pod-service-account-defaultsa-nomountspec",
            "default",
            Some(false),
            false,
        ),
        (
            "pod-service-account-mountsa-nomountspec",
            "mount",
            Some(false),
            false,
        ),
        (
            "pod-service-account-nomountsa-nomountspec",
            "nomount",
            Some(false),
            false,
        ),
    ];
    let pods = ctx.namespaced::<Pod>();
    for (pod, account, automount, expected) in cases {
        let mut spec = json!({
            "containers": [{"name": "token-test", "image": "registry.k8s.io/e2e-test-images/agnhost:2.53"}],
            "restartPolicy": "Never",
            "serviceAccountName": account,
        });
        if let Some(a) = automount {
            spec["automountServiceAccountToken"] = json!(a);
        }
        let created = pods
            .create(
                &pp,
                &from(json!({"metadata": {"name": pod}, "spec": spec}))?,
            )
            .await
            .with_context(|| format!("creating {pod}"))?;
        let mounted = created
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .flat_map(|c| c.volume_mounts.iter().flatten())
            .any(|m| m.mount_path == TOKEN_MOUNT_PATH);
        ensure!(
            mounted == expected,
            "{pod}: expected volume={expected}, got {mounted}"
        );
    }
    Ok(())
}

async fn token_review(ctx: Ctx) -> anyhow::Result<()> {
    let ns = &ctx.namespace;
    let name = ctx.unique("e2e-sa");
    let pp = PostParams::default();
    let sa = ctx
        .namespaced::<ServiceAccount>()
        .create(&pp, &from(json!({"metadata": {"name": name}}))?)
        .await?;
    let requested: TokenRequest = from(json!({"spec": {"audiences": []}}))?;
    let issued = ctx
        .namespaced::<ServiceAccount>()
        .create_token_request(&name, &pp, &requested)
        .await?;
    let token = issued
        .status
        .context("the TokenRequest has no status")?
        .token;
    let review = ctx
        .cluster::<TokenReview>()
        .create(&pp, &from(json!({"spec": {"token": token}}))?)
        .await?;
    let status = review.status.context("the TokenReview has no status")?;
    ensure!(
        status.authenticated == Some(true),
        "the token is not authenticated: {:?}",
        status.error
    );
    ensure!(
        status.error.as_deref().unwrap_or("").is_empty(),
        "error {:?}",
        status.error
    );
    let user = status.user.context("the TokenReview names no user")?;
    ensure!(
        user.username.as_deref() == Some(&format!("system:serviceaccount:{ns}:{name}")),
        "username {:?}",
        user.username
    );
    ensure!(
        user.uid == sa.metadata.uid,
        "uid {:?}, the account's is {:?}",
        user.uid,
        sa.metadata.uid
    );
    Ok(())
}

async fn root_ca_configmap(ctx: Ctx) -> anyhow::Result<()> {
    let configmaps = ctx.namespaced::<ConfigMap>();
    let wait = Duration::from_secs(30);
    eventually(wait, "the root CA configmap", || async {
        Ok(configmaps.get_opt(ROOT_CA).await?)
    })
    .await?;
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    configmaps.delete(ROOT_CA, &now).await?;
    eventually(wait, "a new root CA configmap", || async {
        Ok(configmaps.get_opt(ROOT_CA).await?)
    })
    .await?;
    // An unconditional update that empties it is put right.
    configmaps
        .replace(
            ROOT_CA,
            &PostParams::default(),
            &from(json!({"metadata": {"name": ROOT_CA}, "data": {"ca.crt": ""}}))?,
        )
        .await?;
    eventually(wait, "the root CA configmap reconciled", || async {
        let cm = configmaps.get(ROOT_CA).await?;
        let ca = cm
            .data
            .unwrap_or_default()
            .remove("ca.crt")
            .unwrap_or_default();
        Ok((!ca.is_empty()).then_some(()))
    })
    .await
}

/// Upstream runs agnhost's `test-service-account-issuer-discovery` in a pod with a projected
/// token; its checks are made here from the test process with the same token: the account
/// (authorized by the bootstrap `system:service-account-issuer-discovery` role, bound for the
/// test as upstream's is) reads the discovery document, its issuer is the token's, and the
/// token verifies against the published JWKS for its audience.
async fn oidc_discovery(ctx: Ctx) -> anyhow::Result<()> {
    let ns = &ctx.namespace;
    let binding = ctx.unique("oidc-discovery");
    ctx.cluster::<ClusterRoleBinding>()
        .create(
            &PostParams::default(),
            &from(json!({
                "metadata": {"name": binding},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:service-account-issuer-discovery"},
                "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": ns}],
            }))?,
        )
        .await?;
    let result = oidc_checks(&ctx).await;
    let _ = ctx
        .cluster::<ClusterRoleBinding>()
        .delete(&binding, &DeleteParams::default())
        .await;
    result
}

async fn oidc_checks(ctx: &Ctx) -> anyhow::Result<()> {
    let ns = &ctx.namespace;
    let audience = "oidc-discovery-test";
    let sas = ctx.namespaced::<ServiceAccount>();
    eventually(
        Duration::from_secs(30),
        "the default service account",
        || async { Ok(sas.get_opt("default").await?) },
    )
    .await?;
    let requested: TokenRequest =
        from(json!({"spec": {"audiences": [audience], "expirationSeconds": 600}}))?;
    let token = sas
        .create_token_request("default", &PostParams::default(), &requested)
        .await?
        .status
        .context("no token")?
        .token;
    let user = format!("system:serviceaccount:{ns}:default");
    let discovery = ctx
        .request_as(&user, "GET", "/.well-known/openid-configuration")
        .await?;
    ensure!(
        discovery.status == 200,
        "discovery as the service account: {} {}",
        discovery.status,
        String::from_utf8_lossy(&discovery.body)
    );
    let config = discovery.json()?;
    let issuer = config["issuer"].as_str().context("no issuer")?.to_string();
    let jwks_uri = config["jwks_uri"].as_str().context("no jwks_uri")?;
    ensure!(
        config["response_types_supported"] == json!(["id_token"])
            && config["subject_types_supported"] == json!(["public"])
            && config["id_token_signing_alg_values_supported"]
                .as_array()
                .is_some_and(|a| !a.is_empty()),
        "discovery document {config}"
    );
    // In-cluster discovery: the JWKS path read from the API server itself.
    let path = jwks_uri
        .find("/openid/")
        .map(|i| &jwks_uri[i..])
        .context("jwks_uri has no /openid/ path")?;
    let keys = ctx.request_as(&user, "GET", path).await?;
    ensure!(keys.status == 200, "GET {path}: {}", keys.status);
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(&keys.body)?;
    let header = jsonwebtoken::decode_header(&token)?;
    let jwk = match &header.kid {
        Some(kid) => jwks.find(kid),
        None => jwks.keys.first(),
    }
    .context("no published key matches the token's kid")?;
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk)?;
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[&issuer]);
    let claims = jsonwebtoken::decode::<Value>(&token, &key, &validation)
        .context("the token does not verify against the discovered keys")?
        .claims;
    if claims["sub"] != json!(user) {
        bail!("the token's subject is {}", claims["sub"]);
    }
    Ok(())
}

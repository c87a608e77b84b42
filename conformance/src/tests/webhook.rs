//! sig-api-machinery AdmissionWebhook (test/e2e/apimachinery/webhook.go). Upstream deploys
//! its sample webhook as a pod behind a service; here the test runs the same webhook logic in
//! its own process, over HTTPS with a CA it makes, and registers it by URL — so the cluster
//! must reach this process on 127.0.0.1 (a local cluster such as `kelp server`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::tests;
use crate::framework::{api_error, eventually};
use crate::{Ctx, Test};

pub fn tests() -> Vec<Test> {
    tests![
        "[sig-api-machinery] AdmissionWebhook [Privileged:ClusterAdmin] should be able to deny pod and configmap creation" => deny_pod_and_configmap,
        "[sig-api-machinery] AdmissionWebhook [Privileged:ClusterAdmin] should mutate configmap" => mutate_configmap,
        "[sig-api-machinery] AdmissionWebhook [Privileged:ClusterAdmin] should unconditionally reject operations on fail closed webhook" => fail_closed,
        "[sig-api-machinery] AdmissionWebhook [Privileged:ClusterAdmin] should honor timeout" => honor_timeout,
        "[sig-api-machinery] AdmissionWebhook [Privileged:ClusterAdmin] patching/updating a validating webhook should work" => patch_validating,
    ]
}

pub(crate) fn review_response(
    review: &Value,
    allowed: bool,
    message: &str,
    patch: Option<Value>,
) -> String {
    let mut response = json!({"uid": review["request"]["uid"], "allowed": allowed});
    if !allowed {
        response["status"] = json!({"message": message, "code": 400});
    }
    if let Some(p) = patch {
        response["patchType"] = json!("JSONPatch");
        response["patch"] = json!(STANDARD.encode(p.to_string()));
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
        .to_string()
}

pub(crate) fn parse(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or_default()
}

/// The sample webhook's /pods: containers named `webhook-disallow` are refused.
async fn pods(body: axum::body::Bytes) -> String {
    let review = parse(&body);
    let unwanted = review["request"]["object"]["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["name"] == "webhook-disallow");
    review_response(
        &review,
        !unwanted,
        "the pod contains unwanted container name: webhook-disallow",
        None,
    )
}

/// The sample webhook's /configmaps: `webhook-e2e-test: webhook-disallow` is refused.
async fn configmaps(body: axum::body::Bytes) -> String {
    let review = parse(&body);
    let unwanted = review["request"]["object"]["data"]["webhook-e2e-test"] == "webhook-disallow";
    review_response(
        &review,
        !unwanted,
        "the configmap contains unwanted key and value",
        None,
    )
}

/// The sample webhook's /mutating-configmaps: adds `mutation-stage-1: yes`.
async fn mutating_configmaps(body: axum::body::Bytes) -> String {
    let review = parse(&body);
    let patch = if review["request"]["object"]["data"].is_object() {
        json!([{"op": "add", "path": "/data/mutation-stage-1", "value": "yes"}])
    } else {
        json!([{"op": "add", "path": "/data", "value": {"mutation-stage-1": "yes"}}])
    };
    review_response(&review, true, "", Some(patch))
}

/// The sample webhook's /always-allow-delay-5s.
async fn slow(body: axum::body::Bytes) -> String {
    tokio::time::sleep(Duration::from_secs(5)).await;
    review_response(&parse(&body), true, "", None)
}

/// A webhook server on a free loopback port; stops when dropped.
pub(crate) struct Server {
    pub(crate) base: String,
    pub(crate) ca: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) async fn start() -> anyhow::Result<Server> {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "e2e-webhook-ca");
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, &ca_key);
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()])?;
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress("127.0.0.1".parse()?));
    let cert = params.signed_by(&key, &issuer)?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der())
            .map_err(anyhow::Error::msg)?,
    )?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let app = axum::Router::new()
        .route("/pods", post(pods))
        .route("/configmaps", post(configmaps))
        .route("/mutating-configmaps", post(mutating_configmaps))
        .route("/always-allow-delay-5s", post(slow))
        .route("/mutating-pods", post(super::webhook_more::mutating_pods))
        .route("/always-deny", post(super::webhook_more::always_deny))
        .route("/add-label", post(super::webhook_more::add_label))
        .route("/crd", post(super::webhook_more::crd))
        .route("/custom-resource", post(super::webhook_cr::custom_resource))
        .route(
            "/mutating-custom-resource",
            post(super::webhook_cr::mutating_custom_resource),
        );
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
            });
        }
    });
    Ok(Server {
        base: format!("https://127.0.0.1:{port}"),
        ca: ca_cert.pem(),
        task,
    })
}

/// Labels the test namespace so that only its objects go to the test's webhooks.
pub(crate) async fn mark_namespace(ctx: &Ctx) -> anyhow::Result<(String, String)> {
    let (key, value) = (format!("{}-webhook", ctx.namespace), "true".to_string());
    ctx.cluster::<Namespace>()
        .patch(
            &ctx.namespace,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {key.clone(): value}}})),
        )
        .await?;
    Ok((key, "true".into()))
}

pub(crate) fn hook(
    name: &str,
    url: &str,
    ca: &str,
    resources: &[&str],
    selector: &(String, String),
) -> Value {
    json!({
        "name": name,
        "clientConfig": {"url": url, "caBundle": STANDARD.encode(ca)},
        "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": resources}],
        "namespaceSelector": {"matchLabels": {selector.0.clone(): selector.1.clone()}},
        "sideEffects": "None",
        "admissionReviewVersions": ["v1", "v1beta1"],
        "timeoutSeconds": 10,
    })
}

pub(crate) async fn register(
    ctx: &Ctx,
    kind: &str,
    plural: &str,
    name: &str,
    hooks: Vec<Value>,
) -> anyhow::Result<()> {
    let body = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": name, "labels": {"e2e-list-test-uuid": ctx.namespace}},
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
    Ok(())
}

pub(crate) async fn unregister(ctx: &Ctx, plural: &str, name: &str) {
    let _ = ctx
        .request(
            "DELETE",
            &format!("/apis/admissionregistration.k8s.io/v1/{plural}/{name}"),
            "application/json",
            "",
            Vec::new(),
        )
        .await;
}

pub(crate) fn configmap(name: &str, data: Value) -> anyhow::Result<ConfigMap> {
    Ok(serde_json::from_value(
        json!({"metadata": {"name": name}, "data": data}),
    )?)
}

/// Waits until a marker configmap that the webhook refuses is refused (the registration is
/// in force), as upstream's waitWebhookConfigurationReady does.
pub(crate) async fn wait_until_denied(ctx: &Ctx, data: Value) -> anyhow::Result<()> {
    let api = ctx.namespaced::<ConfigMap>();
    eventually(
        Duration::from_secs(30),
        "the webhook to be in force",
        || {
            let (api, data) = (api.clone(), data.clone());
            async move {
                let name = crate::framework::unique("marker");
                match api
                    .create(&PostParams::default(), &configmap(&name, data)?)
                    .await
                {
                    Ok(_) => {
                        let _ = api.delete(&name, &DeleteParams::default()).await;
                        Ok(None)
                    }
                    Err(_) => Ok(Some(())),
                }
            }
        },
    )
    .await
}

pub(crate) const DISALLOWED: &str = "webhook-disallow";

async fn deny_pod_and_configmap(ctx: Ctx) -> anyhow::Result<()> {
    let server = start().await?;
    let selector = mark_namespace(&ctx).await?;
    let name = format!("{}-deny", ctx.namespace);
    register(
        &ctx,
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        &name,
        vec![
            hook(
                "deny-unwanted-pod-container-name-and-label.k8s.io",
                &format!("{}/pods", server.base),
                &server.ca,
                &["pods"],
                &selector,
            ),
            hook(
                "deny-unwanted-configmap-data.k8s.io",
                &format!("{}/configmaps", server.base),
                &server.ca,
                &["configmaps"],
                &selector,
            ),
        ],
    )
    .await?;
    wait_until_denied(&ctx, json!({"webhook-e2e-test": DISALLOWED})).await?;
    let pods = ctx.namespaced::<k8s_openapi::api::core::v1::Pod>();
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "metadata": {"name": "disallowed-pod"},
        "spec": {"containers": [{"name": DISALLOWED, "image": "registry.k8s.io/pause:3.10"}]},
    }))?;
    let denied = api_error(pods.create(&PostParams::default(), &pod).await)?;
    ensure!(
        denied
            .message
            .contains("the pod contains unwanted container name"),
        "pod denied with {:?}",
        denied.message
    );
    let api = ctx.namespaced::<ConfigMap>();
    let denied = api_error(
        api.create(
            &PostParams::default(),
            &configmap(
                "disallowed-configmap",
                json!({"webhook-e2e-test": DISALLOWED}),
            )?,
        )
        .await,
    )?;
    ensure!(
        denied
            .message
            .contains("the configmap contains unwanted key and value"),
        "configmap denied with {:?}",
        denied.message
    );
    // An allowed configmap cannot be updated or patched into a disallowed one.
    api.create(
        &PostParams::default(),
        &configmap("allowed-configmap", json!({"admit": "this"}))?,
    )
    .await?;
    let mut cm = api.get("allowed-configmap").await?;
    cm.data
        .get_or_insert_default()
        .insert("webhook-e2e-test".into(), DISALLOWED.into());
    let denied = api_error(
        api.replace("allowed-configmap", &PostParams::default(), &cm)
            .await,
    )?;
    ensure!(
        denied
            .message
            .contains("the configmap contains unwanted key and value"),
        "update denied with {:?}",
        denied.message
    );
    let denied = api_error(
        api.patch(
            "allowed-configmap",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"webhook-e2e-test": DISALLOWED}})),
        )
        .await,
    )?;
    ensure!(
        denied
            .message
            .contains("the configmap contains unwanted key and value"),
        "patch denied with {:?}",
        denied.message
    );
    unregister(&ctx, "validatingwebhookconfigurations", &name).await;
    Ok(())
}

async fn mutate_configmap(ctx: Ctx) -> anyhow::Result<()> {
    let server = start().await?;
    let selector = mark_namespace(&ctx).await?;
    let name = format!("{}-mutate", ctx.namespace);
    register(
        &ctx,
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        &name,
        vec![hook(
            "adding-configmap-data-stage-1.k8s.io",
            &format!("{}/mutating-configmaps", server.base),
            &server.ca,
            &["configmaps"],
            &selector,
        )],
    )
    .await?;
    let api = ctx.namespaced::<ConfigMap>();
    let mutated = eventually(
        Duration::from_secs(30),
        "the configmap to be mutated",
        || {
            let api = api.clone();
            async move {
                let name = crate::framework::unique("to-be-mutated");
                let created = api
                    .create(
                        &PostParams::default(),
                        &configmap(&name, json!({"mutation-start": "yes"}))?,
                    )
                    .await?;
                let data = created.data.unwrap_or_default();
                Ok(data.contains_key("mutation-stage-1").then_some(data))
            }
        },
    )
    .await?;
    ensure!(
        mutated.get("mutation-start").map(String::as_str) == Some("yes"),
        "the original data is kept: {mutated:?}"
    );
    ensure!(
        mutated.get("mutation-stage-1").map(String::as_str) == Some("yes"),
        "mutated: {mutated:?}"
    );
    unregister(&ctx, "mutatingwebhookconfigurations", &name).await;
    Ok(())
}

async fn fail_closed(ctx: Ctx) -> anyhow::Result<()> {
    let selector = mark_namespace(&ctx).await?;
    // Nothing listens here: the call fails, and the policy is Fail.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await?
        .local_addr()?
        .port();
    let mut h = hook(
        "fail-closed.k8s.io",
        &format!("https://127.0.0.1:{closed}/configmaps"),
        "",
        &["configmaps"],
        &selector,
    );
    h["failurePolicy"] = json!("Fail");
    h["clientConfig"] = json!({"url": format!("https://127.0.0.1:{closed}/configmaps")});
    let name = format!("{}-fail-closed", ctx.namespace);
    register(
        &ctx,
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        &name,
        vec![h],
    )
    .await?;
    wait_until_denied(&ctx, json!({"any": "thing"})).await?;
    let api = ctx.namespaced::<ConfigMap>();
    let refused = api_error(
        api.create(
            &PostParams::default(),
            &configmap("foo", json!({"foo": "bar"}))?,
        )
        .await,
    )?;
    ensure!(
        refused.code == 500,
        "a failed call under Fail is an internal error, got {}",
        refused.code
    );
    ensure!(
        refused.message.contains("failed calling webhook"),
        "{:?}",
        refused.message
    );
    unregister(&ctx, "validatingwebhookconfigurations", &name).await;
    Ok(())
}

async fn honor_timeout(ctx: Ctx) -> anyhow::Result<()> {
    let server = start().await?;
    let selector = mark_namespace(&ctx).await?;
    let api = ctx.namespaced::<ConfigMap>();
    let slow_hook = |timeout: u64, policy: &str| {
        let mut h = hook(
            "allow-configmap-with-delay-webhook.k8s.io",
            &format!("{}/always-allow-delay-5s", server.base),
            &server.ca,
            &["configmaps"],
            &selector,
        );
        h["timeoutSeconds"] = json!(timeout);
        h["failurePolicy"] = json!(policy);
        h
    };
    // A 1 s timeout under Fail refuses.
    let name = format!("{}-timeout", ctx.namespace);
    register(
        &ctx,
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        &name,
        vec![slow_hook(1, "Fail")],
    )
    .await?;
    let refused = eventually(
        Duration::from_secs(30),
        "the slow webhook to time out",
        || {
            let api = api.clone();
            async move {
                let name = crate::framework::unique("slow");
                Ok(api_error(
                    api.create(&PostParams::default(), &configmap(&name, json!({}))?)
                        .await,
                )
                .ok())
            }
        },
    )
    .await?;
    ensure!(
        refused.message.contains("deadline"),
        "expected a deadline error: {:?}",
        refused.message
    );
    unregister(&ctx, "validatingwebhookconfigurations", &name).await;
    // Under Ignore, the same timeout lets the request through.
    let name = format!("{}-timeout-ignore", ctx.namespace);
    register(
        &ctx,
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        &name,
        vec![slow_hook(1, "Ignore")],
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    api.create(&PostParams::default(), &configmap("passes", json!({}))?)
        .await
        .context("a timed-out webhook under Ignore lets the request through")?;
    unregister(&ctx, "validatingwebhookconfigurations", &name).await;
    Ok(())
}

async fn patch_validating(ctx: Ctx) -> anyhow::Result<()> {
    let server = start().await?;
    let selector = mark_namespace(&ctx).await?;
    let name = format!("{}-patch", ctx.namespace);
    register(
        &ctx,
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        &name,
        vec![hook(
            "deny-unwanted-configmap-data.k8s.io",
            &format!("{}/configmaps", server.base),
            &server.ca,
            &["configmaps"],
            &selector,
        )],
    )
    .await?;
    let disallowed = json!({"webhook-e2e-test": DISALLOWED});
    wait_until_denied(&ctx, disallowed.clone()).await?;
    let configs = ctx.cluster::<ValidatingWebhookConfiguration>();
    // Updating the rules to leave out CREATE: the configmap is admitted.
    let mut config = configs.get(&name).await?;
    if let Some(rules) = config.webhooks.as_mut().and_then(|w| w[0].rules.as_mut()) {
        rules[0].operations = Some(vec!["UPDATE".into()]);
    }
    configs
        .replace(&name, &PostParams::default(), &config)
        .await?;
    let api = ctx.namespaced::<ConfigMap>();
    eventually(Duration::from_secs(30), "CREATE to be left alone", || {
        let (api, data) = (api.clone(), disallowed.clone());
        async move {
            let name = crate::framework::unique("created");
            Ok(api
                .create(&PostParams::default(), &configmap(&name, data)?)
                .await
                .ok()
                .map(|_| ()))
        }
    })
    .await?;
    // Patching CREATE back in: refused again.
    configs
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Json::<()>(serde_json::from_value(json!([{"op": "replace", "path": "/webhooks/0/rules/0/operations", "value": ["CREATE"]}]))?),
        )
        .await?;
    wait_until_denied(&ctx, disallowed).await?;
    let listed = configs
        .list(&ListParams::default().labels(&format!("e2e-list-test-uuid={}", ctx.namespace)))
        .await?;
    ensure!(
        listed.items.len() == 1,
        "listing by label finds the configuration"
    );
    unregister(&ctx, "validatingwebhookconfigurations", &name).await;
    Ok(())
}

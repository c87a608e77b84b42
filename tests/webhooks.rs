//! Admission webhooks through the real kubectl, with a webhook server the test runs: a
//! mutating webhook labels config maps, a validating one refuses some, one that is down
//! refuses under `failurePolicy: Fail` and is skipped under `Ignore`.

mod support;

use std::sync::Arc;

use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use support::KelpServer;

async fn mutate(body: axum::body::Bytes) -> String {
    let review: Value = serde_json::from_slice(&body).unwrap_or_default();
    let uid = review["request"]["uid"].clone();
    let has_labels = review["request"]["object"]["metadata"]["labels"].is_object();
    let patch = if has_labels {
        json!([{"op": "add", "path": "/metadata/labels/mutated", "value": "yes"}])
    } else {
        json!([{"op": "add", "path": "/metadata/labels", "value": {"mutated": "yes"}}])
    };
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {
            "uid": uid,
            "allowed": true,
            "patchType": "JSONPatch",
            "patch": STANDARD.encode(patch.to_string()),
            "warnings": [format!("mutated by the test for {}", review["request"]["userInfo"]["username"].as_str().unwrap_or("?"))],
        },
    })
    .to_string()
}

async fn validate(body: axum::body::Bytes) -> String {
    let review: Value = serde_json::from_slice(&body).unwrap_or_default();
    let uid = review["request"]["uid"].clone();
    let forbidden = review["request"]["object"]["data"]
        .get("forbidden")
        .is_some();
    let mut response = json!({"uid": uid, "allowed": !forbidden});
    if forbidden {
        response["status"] =
            json!({"code": 403, "reason": "Forbidden", "message": "no forbidden keys"});
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
        .to_string()
}

fn patched(review: &Value, patch: Value) -> String {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {
            "uid": review["request"]["uid"],
            "allowed": true,
            "patchType": "JSONPatch",
            "patch": STANDARD.encode(patch.to_string()),
        },
    })
    .to_string()
}

/// Annotates what label `b` says when it is called (reinvoked if it changes after).
async fn copy_b(body: axum::body::Bytes) -> String {
    let review: Value = serde_json::from_slice(&body).unwrap_or_default();
    let saw = review["request"]["object"]["metadata"]["labels"]["b"]
        .as_str()
        .unwrap_or("none")
        .to_string();
    let op = if review["request"]["object"]["metadata"]["annotations"].is_object() {
        json!([{"op": "add", "path": "/metadata/annotations/a-saw", "value": saw}])
    } else {
        json!([{"op": "add", "path": "/metadata/annotations", "value": {"a-saw": saw}}])
    };
    patched(&review, op)
}

/// Sets label `b`.
async fn set_b(body: axum::body::Bytes) -> String {
    let review: Value = serde_json::from_slice(&body).unwrap_or_default();
    let op = if review["request"]["object"]["metadata"]["labels"].is_object() {
        json!([{"op": "add", "path": "/metadata/labels/b", "value": "set"}])
    } else {
        json!([{"op": "add", "path": "/metadata/labels", "value": {"b": "set"}}])
    };
    patched(&review, op)
}

/// Refuses deleting what is labelled keep=true (the object of a DELETE is null; the one
/// deleted is oldObject).
async fn guard_delete(body: axum::body::Bytes) -> String {
    let review: Value = serde_json::from_slice(&body).unwrap_or_default();
    let request = &review["request"];
    let kept = request["operation"] == "DELETE"
        && request["object"].is_null()
        && request["oldObject"]["metadata"]["labels"]["keep"] == "true";
    let mut response = json!({"uid": request["uid"], "allowed": !kept});
    if kept {
        response["status"] = json!({"code": 403, "reason": "Forbidden", "message": format!("{} is kept", request["name"].as_str().unwrap_or(""))});
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
        .to_string()
}

/// Serves the test's webhooks over HTTPS on a free port; returns the port and the CA (PEM).
fn start_webhooks(dir: &std::path::Path) -> (u16, String) {
    let (certs, key, ca) = support::serving_cert(dir, &["localhost", "webhook-svc.svc-ns.svc"]);
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let app = axum::Router::new()
        .route("/mutate", post(mutate))
        .route("/validate", post(validate))
        .route("/copy-b", post(copy_b))
        .route("/set-b", post(set_b))
        .route("/guard-delete", post(guard_delete));
    (support::serve_tls(app, config), ca)
}

fn hook(name: &str, url: &str, ca: &str, resources: &[&str], failure: &str) -> Value {
    json!({
        "name": name,
        "clientConfig": {"url": url, "caBundle": STANDARD.encode(ca)},
        "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": resources}],
        "namespaceSelector": {"matchLabels": {"webhooks": "on"}},
        "failurePolicy": failure,
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        "timeoutSeconds": 5,
    })
}

#[test]
fn webhooks_mutate_deny_and_follow_their_failure_policy() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let (port, ca) = start_webhooks(&dir.path().join("webhook-ca"));
    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = KelpServer::start(&dir.path().join("data"), &[]);
    let v = "1.33";
    let create = |obj: &Value| {
        let out = server.kubectl_with_stdin(v, &["create", "-f", "-"], Some(&obj.to_string()));
        assert!(out.ok, "{}", out.stderr);
    };
    let base = format!("https://127.0.0.1:{port}");
    let down_url = format!("https://127.0.0.1:{down}/validate");
    create(&json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "label-configmaps"},
        "webhooks": [hook("label.example.com", &format!("{base}/mutate"), &ca, &["configmaps"], "Fail")],
    }));
    let mut deny = hook(
        "deny.example.com",
        &format!("{base}/validate"),
        &ca,
        &["configmaps"],
        "Fail",
    );
    deny["matchConditions"] =
        json!([{"name": "not-exempt", "expression": "object.metadata.name != 'exempt'"}]);
    create(&json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "checks"},
        "webhooks": [
            deny,
            hook("down.example.com", &down_url, &ca, &["secrets"], "Fail"),
            hook("down-ignored.example.com", &down_url, &ca, &["services"], "Ignore"),
        ],
    }));
    let ok = |args: &[&str]| {
        let out = server.kubectl(v, args);
        assert!(out.ok, "kubectl {args:?}: {}", out.stderr);
        out
    };
    ok(&["create", "namespace", "hooked"]);
    ok(&["label", "namespace", "hooked", "webhooks=on"]);
    ok(&["create", "namespace", "plain"]);

    // Give the cache a moment to hand the configurations to the admission chain.
    let mut created = None;
    for _ in 0..50 {
        let out = server.kubectl(
            v,
            &[
                "create",
                "configmap",
                "a",
                "-n",
                "hooked",
                "--from-literal=k=v",
            ],
        );
        if out.ok && out.stderr.contains("Warning") {
            created = Some(out);
            break;
        }
        let _ = server.kubectl(
            v,
            &[
                "delete",
                "configmap",
                "a",
                "-n",
                "hooked",
                "--ignore-not-found",
            ],
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let created = created.expect("the mutating webhook was called");
    assert_eq!(created.stdout.trim(), "configmap/a created");
    assert_eq!(
        created.stderr.trim(),
        "Warning: mutated by the test for system:admin"
    );
    let labels = ok(&[
        "get",
        "configmap",
        "a",
        "-n",
        "hooked",
        "-o",
        "jsonpath={.metadata.labels.mutated}",
    ]);
    assert_eq!(labels.stdout, "yes");

    // Outside the selected namespaces nothing is called.
    ok(&[
        "create",
        "configmap",
        "b",
        "-n",
        "plain",
        "--from-literal=forbidden=x",
    ]);
    let untouched = ok(&[
        "get",
        "configmap",
        "b",
        "-n",
        "plain",
        "-o",
        "jsonpath={.metadata.labels}",
    ]);
    assert_eq!(untouched.stdout, "");

    // The validating webhook refuses, with its message and code.
    let denied = server.kubectl(
        v,
        &[
            "create",
            "configmap",
            "bad",
            "-n",
            "hooked",
            "--from-literal=forbidden=x",
        ],
    );
    assert!(!denied.ok);
    assert!(
        denied.stderr.contains(
            "admission webhook \"deny.example.com\" denied the request: no forbidden keys"
        ),
        "{}",
        denied.stderr
    );
    assert!(
        !server
            .kubectl(v, &["get", "configmap", "bad", "-n", "hooked"])
            .ok,
        "nothing was stored"
    );
    // A match condition that does not hold skips the webhook.
    ok(&[
        "create",
        "configmap",
        "exempt",
        "-n",
        "hooked",
        "--from-literal=forbidden=x",
    ]);

    // A webhook that is down: Fail refuses, Ignore lets the request through.
    let failed = server.kubectl(v, &["create", "secret", "generic", "s", "-n", "hooked"]);
    assert!(!failed.ok);
    assert!(
        failed.stderr.contains(&format!(
            "Internal error occurred: failed calling webhook \"down.example.com\": failed to call webhook: Post \"{down_url}\""
        )),
        "{}",
        failed.stderr
    );
    ok(&[
        "create",
        "service",
        "clusterip",
        "svc",
        "--tcp=80",
        "-n",
        "hooked",
    ]);

    // A webhook by service reference: the API server goes to the service's endpoints and
    // checks the certificate for <service>.<namespace>.svc.
    ok(&["create", "namespace", "svc-ns"]);
    ok(&["label", "namespace", "svc-ns", "svc=on"]);
    let service = json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "webhook-svc", "namespace": "svc-ns"},
        "spec": {"ports": [{"port": 443, "targetPort": port}]},
    });
    let endpoints = json!({
        "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "webhook-svc", "namespace": "svc-ns"},
        "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"port": port}]}],
    });
    create(&service);
    create(&endpoints);
    let mut by_service = hook("svc.example.com", "unused", &ca, &["configmaps"], "Fail");
    by_service["clientConfig"] = json!({
        "service": {"namespace": "svc-ns", "name": "webhook-svc", "path": "/validate"},
        "caBundle": STANDARD.encode(&ca),
    });
    by_service["namespaceSelector"] = json!({"matchLabels": {"svc": "on"}});
    create(&json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "via-service"},
        "webhooks": [by_service],
    }));
    let mut refused = None;
    for _ in 0..50 {
        let out = server.kubectl(
            v,
            &[
                "create",
                "configmap",
                "bad",
                "-n",
                "svc-ns",
                "--from-literal=forbidden=x",
            ],
        );
        if !out.ok {
            refused = Some(out);
            break;
        }
        let _ = server.kubectl(v, &["delete", "configmap", "bad", "-n", "svc-ns"]);
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let refused = refused.expect("the service's webhook refused");
    assert!(
        refused.stderr.contains(
            "admission webhook \"svc.example.com\" denied the request: no forbidden keys"
        ),
        "{}",
        refused.stderr
    );
    ok(&[
        "create",
        "configmap",
        "fine",
        "-n",
        "svc-ns",
        "--from-literal=k=v",
    ]);

    // Dry runs reach webhooks without side effects, and are mutated too.
    let dry = ok(&[
        "create",
        "configmap",
        "dry",
        "-n",
        "hooked",
        "--dry-run=server",
        "-o",
        "jsonpath={.metadata.labels.mutated}",
    ]);
    assert_eq!(dry.stdout, "yes");
    assert!(
        !server
            .kubectl(v, &["get", "configmap", "dry", "-n", "hooked"])
            .ok
    );

    // Reinvocation: a webhook with reinvocationPolicy IfNeeded is called again when a later
    // one changed the object after it; deletes reach webhooks registered for DELETE.
    ok(&["create", "namespace", "again"]);
    ok(&["label", "namespace", "again", "reinvoke=on"]);
    let mut copy = hook(
        "copy-b.example.com",
        &format!("{base}/copy-b"),
        &ca,
        &["configmaps"],
        "Fail",
    );
    copy["reinvocationPolicy"] = json!("IfNeeded");
    copy["namespaceSelector"] = json!({"matchLabels": {"reinvoke": "on"}});
    let mut set = hook(
        "set-b.example.com",
        &format!("{base}/set-b"),
        &ca,
        &["configmaps"],
        "Fail",
    );
    set["namespaceSelector"] = json!({"matchLabels": {"reinvoke": "on"}});
    create(&json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "reinvoked"},
        "webhooks": [copy, set],
    }));
    let mut guard = hook(
        "guard.example.com",
        &format!("{base}/guard-delete"),
        &ca,
        &["configmaps"],
        "Fail",
    );
    guard["rules"][0]["operations"] = json!(["DELETE"]);
    guard["namespaceSelector"] = json!({"matchLabels": {"reinvoke": "on"}});
    create(&json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "guard-deletes"},
        "webhooks": [guard],
    }));
    let mut saw = String::new();
    for i in 0..50 {
        let name = format!("c{i}");
        ok(&["create", "configmap", &name, "-n", "again"]);
        saw = ok(&[
            "get",
            "configmap",
            &name,
            "-n",
            "again",
            "-o",
            "jsonpath={.metadata.annotations.a-saw}",
        ])
        .stdout;
        if !saw.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        saw, "set",
        "the IfNeeded webhook saw the later webhook's label on its second call"
    );
    ok(&["create", "configmap", "kept", "-n", "again"]);
    ok(&["label", "configmap", "kept", "-n", "again", "keep=true"]);
    let mut refused = None;
    for _ in 0..50 {
        let out = server.kubectl(v, &["delete", "configmap", "kept", "-n", "again"]);
        if !out.ok {
            refused = Some(out);
            break;
        }
        ok(&["create", "configmap", "kept", "-n", "again"]);
        ok(&["label", "configmap", "kept", "-n", "again", "keep=true"]);
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let refused = refused.expect("the delete webhook refused");
    assert!(
        refused
            .stderr
            .contains("admission webhook \"guard.example.com\" denied the request: kept is kept"),
        "{}",
        refused.stderr
    );
    ok(&["label", "configmap", "kept", "-n", "again", "keep-"]);
    ok(&["delete", "configmap", "kept", "-n", "again"]);
}

//! The aggregation layer end to end: the test runs an extension API server for
//! `metrics.k8s.io` (as metrics-server does, it trusts only clients whose certificate the
//! front-proxy CA of `kube-system/extension-apiserver-authentication` signed, and takes who
//! asked from `X-Remote-User`/`X-Remote-Group`), registers it with an APIService, and drives
//! it through the real kubectl: availability, discovery, proxying with RBAC, `kubectl top`,
//! and the horizontal pod autoscaler scaling on the CPU it reports.

mod support;

use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::get;
use base64::Engine;
use kube::api::{Api, ListParams};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};
use support::{KelpServer, Simulated, wait_for};

/// What the extension server saw and serves.
#[derive(Clone)]
struct Metrics {
    kube: kube::Config,
    /// `user groups` of each request, in order.
    seen: Arc<Mutex<Vec<String>>>,
}

fn record(m: &Metrics, headers: &HeaderMap) {
    let all = |name: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(",")
    };
    let entry = format!("{} {}", all("x-remote-user"), all("x-remote-group"));
    m.seen.lock().unwrap().push(entry);
}

async fn resources(State(m): State<Metrics>, headers: HeaderMap) -> Reply {
    record(&m, &headers);
    reply(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": "metrics.k8s.io/v1beta1",
        "resources": [
            {"name": "nodes", "singularName": "", "namespaced": false, "kind": "NodeMetrics", "verbs": ["get", "list"]},
            {"name": "pods", "singularName": "", "namespaced": true, "kind": "PodMetrics", "verbs": ["get", "list"]},
        ],
    }))
}

type Reply = ([(axum::http::HeaderName, &'static str); 1], String);

fn reply(v: Value) -> Reply {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
}

/// Every pod at 200m of CPU and 10Mi of memory per container, measured now.
fn pod_metrics(pod: &k8s_openapi::api::core::v1::Pod) -> Value {
    let now = jiff::Timestamp::now().to_string();
    let containers: Vec<Value> = pod
        .spec
        .as_ref()
        .map(|s| {
            s.containers
                .iter()
                .map(|c| c.name.clone())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .map(|name| json!({"name": name, "usage": {"cpu": "200m", "memory": "10Mi"}}))
        .collect();
    json!({
        "kind": "PodMetrics",
        "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": {
            "name": pod.metadata.name,
            "namespace": pod.metadata.namespace,
            "labels": pod.metadata.labels,
            "creationTimestamp": now,
        },
        "timestamp": now,
        "window": "30s",
        "containers": containers,
    })
}

/// The running pods of the namespace that the selector picks, as the admin sees them.
async fn running_pods(
    m: &Metrics,
    ns: &str,
    selector: Option<&String>,
) -> Vec<k8s_openapi::api::core::v1::Pod> {
    let client = kube::Client::try_from(m.kube.clone()).unwrap();
    let api: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client, ns);
    let mut params = ListParams::default();
    if let Some(selector) = selector {
        params = params.labels(selector);
    }
    api.list(&params)
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .collect()
}

async fn pods(
    State(m): State<Metrics>,
    Path(ns): Path<String>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Reply {
    record(&m, &headers);
    let items: Vec<Value> = running_pods(&m, &ns, query.get("labelSelector"))
        .await
        .iter()
        .map(pod_metrics)
        .collect();
    reply(json!({
        "kind": "PodMetricsList",
        "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": {},
        "items": items,
    }))
}

async fn pod(
    State(m): State<Metrics>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Reply {
    record(&m, &headers);
    let client = kube::Client::try_from(m.kube.clone()).unwrap();
    let api: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client, &ns);
    reply(pod_metrics(&api.get(&name).await.unwrap()))
}

/// The server's OpenAPI v3: an index, and the group version's document.
async fn openapi_index() -> Reply {
    reply(json!({"paths": {"apis/metrics.k8s.io/v1beta1": {
        "serverRelativeURL": "/openapi/v3/apis/metrics.k8s.io/v1beta1?hash=1"
    }}}))
}

async fn openapi_document() -> Reply {
    let usage = json!({"type": "object", "additionalProperties": {"type": "string"}});
    reply(json!({
        "openapi": "3.0.0",
        "info": {"title": "metrics", "version": "v1beta1"},
        "paths": {"/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods/{name}": {"get": {
            "x-kubernetes-action": "get",
            "x-kubernetes-group-version-kind": {"group": "metrics.k8s.io", "version": "v1beta1", "kind": "PodMetrics"},
            "responses": {"200": {"content": {"application/json": {"schema": {
                "$ref": "#/components/schemas/io.k8s.metrics.pkg.apis.metrics.v1beta1.PodMetrics"
            }}}}},
        }}},
        "components": {"schemas": {
            "io.k8s.metrics.pkg.apis.metrics.v1beta1.PodMetrics": {
                "description": "PodMetrics sets resource usage metrics of a pod.",
                "type": "object",
                "properties": {
                    "containers": {
                        "description": "Metrics for all containers are collected within the same time window.",
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/io.k8s.metrics.pkg.apis.metrics.v1beta1.ContainerMetrics"},
                    },
                    "window": {"type": "string"},
                },
                "x-kubernetes-group-version-kind": [{"group": "metrics.k8s.io", "kind": "PodMetrics", "version": "v1beta1"}],
            },
            "io.k8s.metrics.pkg.apis.metrics.v1beta1.ContainerMetrics": {
                "description": "ContainerMetrics sets resource usage metrics of a container.",
                "type": "object",
                "properties": {"name": {"type": "string"}, "usage": usage},
            },
        }},
    }))
}

/// The TLS configuration of an extension server named `host`: a serving certificate of a CA
/// of its own (returned, PEM), and client certificates only from the front-proxy CA.
fn extension_tls(
    dir: &std::path::Path,
    front_proxy_ca: &str,
    host: &str,
) -> (rustls::ServerConfig, String) {
    let (certs, key, ca) = support::serving_cert(dir, &[host]);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(front_proxy_ca.as_bytes()).unwrap())
        .unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .unwrap();
    (config, ca)
}

/// The admin's client configuration, for an extension server to read the cluster with.
fn admin_config(server: &KelpServer) -> kube::Config {
    let kubeconfig = kube::config::Kubeconfig::read_from(&server.kubeconfig).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        ))
        .unwrap()
}

/// Starts the extension server; returns its port, its CA (PEM) and what it saw.
fn start_metrics_api(
    dir: &std::path::Path,
    front_proxy_ca: &str,
    server: &KelpServer,
) -> (u16, String, Arc<Mutex<Vec<String>>>) {
    let (config, ca) = extension_tls(dir, front_proxy_ca, "metrics-server.kube-system.svc");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let state = Metrics {
        kube: admin_config(server),
        seen: seen.clone(),
    };
    let app = axum::Router::new()
        .route("/apis/metrics.k8s.io/v1beta1", get(resources))
        .route("/openapi/v3", get(openapi_index))
        .route(
            "/openapi/v3/apis/metrics.k8s.io/v1beta1",
            get(openapi_document),
        )
        .route(
            "/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods",
            get(pods),
        )
        .route(
            "/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods/{name}",
            get(pod),
        )
        .with_state(state);
    (support::serve_tls(app, config), ca, seen)
}

/// The rows of a kubectl table without its header, as words.
fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[test]
fn an_extension_api_server_is_proxied_discovered_and_feeds_top_and_the_autoscaler() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let server = KelpServer::start(&dir.path().join("data"), &[]);
    let run = |v: &str, args: &[&str], stdin: Option<&str>| {
        let out = server.kubectl_with_stdin(v, args, stdin);
        assert!(out.ok, "kubectl {args:?} failed: {}", out.stderr);
        out.stdout
    };
    let k = |args: &[&str]| run("1.33", args, None);
    let apply = |yaml: &str| run("1.33", &["apply", "-f", "-"], Some(yaml));

    // What an extension server reads to trust the proxy.
    let auth = |key: &str| {
        k(&[
            "get",
            "configmap",
            "-n",
            "kube-system",
            "extension-apiserver-authentication",
            "-o",
            &format!("jsonpath={{.data.{key}}}"),
        ])
    };
    let front_proxy_ca = auth("requestheader-client-ca-file");
    assert!(
        front_proxy_ca.contains("BEGIN CERTIFICATE"),
        "{front_proxy_ca}"
    );
    assert_ne!(front_proxy_ca, auth("client-ca-file"), "a CA of its own");
    assert_eq!(
        auth("requestheader-allowed-names"),
        r#"["front-proxy-client"]"#
    );
    assert_eq!(
        auth("requestheader-username-headers"),
        r#"["X-Remote-User"]"#
    );
    assert_eq!(auth("requestheader-group-headers"), r#"["X-Remote-Group"]"#);

    let (port, ca, seen) =
        start_metrics_api(&dir.path().join("metrics-ca"), &front_proxy_ca, &server);
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(&ca);
    apply(&format!(
        "apiVersion: v1
kind: Service
metadata: {{name: metrics-server, namespace: kube-system}}
spec:
  ports: [{{name: https, port: 443, targetPort: 4443}}]
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {{name: v1beta1.metrics.k8s.io}}
spec:
  group: metrics.k8s.io
  version: v1beta1
  groupPriorityMinimum: 100
  versionPriority: 100
  caBundle: {ca_bundle}
  service: {{namespace: kube-system, name: metrics-server}}
"
    ));
    let available = |want: &[&str]| {
        wait_for(&format!("the APIService to be {want:?}"), 30, || {
            let row = k(&[
                "get",
                "apiservice",
                "v1beta1.metrics.k8s.io",
                "--no-headers",
            ]);
            let cells: Vec<&str> = row.split_whitespace().collect();
            if cells.len() > 2 && cells[1..cells.len() - 1] == *want {
                Ok(())
            } else {
                Err(row)
            }
        })
    };
    // No endpoints yet: not available, and requests get 503.
    available(&["kube-system/metrics-server", "False", "(EndpointsNotFound)"]);
    let unavailable = server.kubectl("1.33", &["get", "--raw", "/apis/metrics.k8s.io/v1beta1"]);
    assert!(!unavailable.ok);
    assert!(
        unavailable
            .stderr
            .contains("the server is currently unable to handle the request"),
        "{}",
        unavailable.stderr
    );
    let message = k(&[
        "get",
        "apiservice",
        "v1beta1.metrics.k8s.io",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Available\")].message}",
    ]);
    assert_eq!(
        message,
        "cannot find endpoints for service/metrics-server in \"kube-system\""
    );

    apply(&format!(
        "apiVersion: v1
kind: Endpoints
metadata: {{name: metrics-server, namespace: kube-system}}
subsets: [{{addresses: [{{ip: 127.0.0.1}}], ports: [{{name: https, port: {port}}}]}}]
"
    ));
    available(&["kube-system/metrics-server", "True"]);
    assert_eq!(
        k(&[
            "get",
            "apiservice",
            "v1beta1.metrics.k8s.io",
            "-o",
            "jsonpath={.status.conditions[0].reason} {.status.conditions[0].message}",
        ]),
        "Passed all checks passed"
    );
    // The availability check asks as the aggregator.
    assert!(
        seen.lock()
            .unwrap()
            .contains(&"system:kube-aggregator system:masters".to_string())
    );

    // Discovery: both kubectl versions (aggregated discovery) list the remote resources.
    for v in ["1.32", "1.33"] {
        let listed = run(v, &["api-resources", "--api-group=metrics.k8s.io"], None);
        assert_eq!(
            rows(&listed),
            [
                ["nodes", "metrics.k8s.io/v1beta1", "false", "NodeMetrics"],
                ["pods", "metrics.k8s.io/v1beta1", "true", "PodMetrics"],
            ],
            "kubectl {v}: {listed}"
        );
        let versions = run(v, &["api-versions"], None);
        assert!(
            versions.lines().any(|l| l == "metrics.k8s.io/v1beta1"),
            "{versions}"
        );
    }
    // The extension server's OpenAPI is served with the others: kubectl explain reads it.
    let explained = wait_for("kubectl explain to find PodMetrics", 30, || {
        let out = server.kubectl("1.33", &["explain", "podmetrics.containers"]);
        if out.ok {
            Ok(out.stdout)
        } else {
            Err(out.stderr)
        }
    });
    let explained = explained.split_whitespace().collect::<Vec<_>>().join(" ");
    for want in [
        "GROUP: metrics.k8s.io",
        "KIND: PodMetrics",
        "VERSION: v1beta1",
        "FIELD: containers <[]ContainerMetrics>",
        "Metrics for all containers are collected within the same time window.",
    ] {
        assert!(explained.contains(want), "{want:?} not in {explained}");
    }
    let group: Value = serde_json::from_str(&k(&["get", "--raw", "/apis/metrics.k8s.io"])).unwrap();
    assert_eq!(group["kind"], "APIGroup");
    assert_eq!(
        group["preferredVersion"]["groupVersion"],
        "metrics.k8s.io/v1beta1"
    );
    let legacy: Value = serde_json::from_str(&k(&["get", "--raw", "/apis"])).unwrap();
    assert!(
        legacy["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "metrics.k8s.io")
    );

    // Proxied, as the user who asked: kubectl top.
    let _nodes = Simulated::start(&server.kubeconfig, 2);
    apply(
        "apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: nginx
        resources: {requests: {cpu: 100m}}
",
    );
    let top = wait_for("kubectl top to show the pod", 60, || {
        let out = server.kubectl("1.33", &["top", "pod", "-l", "app=web"]);
        let table = rows(&out.stdout);
        if out.ok && table.len() == 1 {
            Ok(table)
        } else {
            Err(format!("{}{}", out.stdout, out.stderr))
        }
    });
    assert!(top[0][0].starts_with("web-"), "{top:?}");
    assert_eq!(top[0][1..], ["200m", "10Mi"]);
    let admin = k(&[
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]);
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|s| s.starts_with(&format!("{admin} ")) && s.contains("system:authenticated")),
        "{:?}",
        seen.lock().unwrap()
    );

    // Authorized here before it is proxied: jane may not, until a role lets her.
    let path = "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods";
    let denied = server.kubectl("1.33", &["get", "--raw", path, "--as=jane"]);
    assert!(!denied.ok);
    assert!(
        denied.stderr.contains(
            "pods.metrics.k8s.io is forbidden: User \"jane\" cannot list resource \"pods\" in API group \"metrics.k8s.io\" in the namespace \"default\""
        ),
        "{}",
        denied.stderr
    );
    assert!(!seen.lock().unwrap().iter().any(|s| s.starts_with("jane ")));
    k(&[
        "create",
        "role",
        "metrics-reader",
        "--verb=list",
        "--resource=pods.metrics.k8s.io",
    ]);
    k(&[
        "create",
        "rolebinding",
        "jane-metrics",
        "--role=metrics-reader",
        "--user=jane",
    ]);
    let listed: Value =
        serde_json::from_str(&k(&["get", "--raw", path, "--as=jane", "--as-group=devs"])).unwrap();
    assert_eq!(listed["kind"], "PodMetricsList");
    assert!(
        seen.lock()
            .unwrap()
            .contains(&"jane devs,system:authenticated".to_string()),
        "{:?}",
        seen.lock().unwrap()
    );

    // The autoscaler reads the same API: 200m used of 100m requested is 200% against a 50%
    // target, so it scales to its maximum.
    k(&[
        "autoscale",
        "deployment",
        "web",
        "--min=1",
        "--max=3",
        "--cpu-percent=50",
    ]);
    wait_for("the autoscaler to scale to 3", 90, || {
        let r = k(&[
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.spec.replicas}",
        ]);
        if r == "3" { Ok(()) } else { Err(r) }
    });
    let described = k(&["describe", "hpa", "web"]);
    let described = described.split_whitespace().collect::<Vec<_>>().join(" ");
    for line in [
        "ScalingActive True ValidMetricFound",
        "200% (200m) / 50%",
        "SuccessfulRescale",
    ] {
        assert!(described.contains(line), "{line:?} not in {described}");
    }

    // Without endpoints it is unavailable again.
    k(&["delete", "endpoints", "metrics-server", "-n", "kube-system"]);
    available(&["kube-system/metrics-server", "False", "(EndpointsNotFound)"]);
    let gone = server.kubectl("1.33", &["top", "pod", "-l", "app=web"]);
    assert!(!gone.ok, "{}", gone.stdout);
    // The autoscaler says so at its next pass (every 15 s), and keeps the replicas.
    wait_for("the autoscaler to report the metrics API down", 45, || {
        let described = k(&["describe", "hpa", "web"]);
        let described = described.split_whitespace().collect::<Vec<_>>().join(" ");
        let want = "ScalingActive False FailedGetResourceMetric the HPA was unable to compute the replica count: failed to get cpu utilization: unable to get metrics for resource cpu: unable to fetch metrics from resource metrics API: the server is currently unable to handle the request (get pods.metrics.k8s.io)";
        if described.contains(want) {
            Ok(())
        } else {
            Err(described)
        }
    });
    assert_eq!(
        k(&[
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.spec.replicas}"
        ]),
        "3"
    );
}

// ---------------------------------------------------------------------------------------------
// Custom and external metrics (as a Prometheus adapter or KEDA serves them).

/// The custom metrics API's resources: a per-pod metric and a metric of services.
async fn custom_resources(State(m): State<Metrics>, headers: HeaderMap) -> Reply {
    record(&m, &headers);
    reply(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": "custom.metrics.k8s.io/v1beta2",
        "resources": [
            {"name": "pods/queue_depth", "singularName": "", "namespaced": true, "kind": "MetricValueList", "verbs": ["get"]},
            {"name": "services/requests_per_second", "singularName": "", "namespaced": true, "kind": "MetricValueList", "verbs": ["get"]},
        ],
    }))
}

/// `queue_depth` is 15 for each selected running pod; `requests_per_second` is 200 for any
/// service.
async fn custom_metric(
    State(m): State<Metrics>,
    Path((ns, resource, name, metric)): Path<(String, String, String, String)>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Reply {
    record(&m, &headers);
    m.seen.lock().unwrap().push(uri.to_string());
    let now = jiff::Timestamp::now().to_string();
    let item = |kind: &str, name: &str, value: &str| {
        json!({
            "describedObject": {"kind": kind, "namespace": ns, "name": name, "apiVersion": "/v1"},
            "metric": {"name": metric},
            "timestamp": now,
            "windowSeconds": 60,
            "value": value,
        })
    };
    let items: Vec<Value> = match (resource.as_str(), name.as_str(), metric.as_str()) {
        ("pods", "*", "queue_depth") => running_pods(&m, &ns, query.get("labelSelector"))
            .await
            .iter()
            .map(|p| item("Pod", p.metadata.name.as_deref().unwrap(), "15"))
            .collect(),
        ("services", service, "requests_per_second") => vec![item("Service", service, "200")],
        _ => Vec::new(),
    };
    reply(json!({
        "kind": "MetricValueList",
        "apiVersion": "custom.metrics.k8s.io/v1beta2",
        "metadata": {},
        "items": items,
    }))
}

async fn external_resources(State(m): State<Metrics>, headers: HeaderMap) -> Reply {
    record(&m, &headers);
    reply(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": "external.metrics.k8s.io/v1beta1",
        "resources": [
            {"name": "queue_messages", "singularName": "", "namespaced": true, "kind": "ExternalMetricValueList", "verbs": ["get"]},
        ],
    }))
}

/// `queue_messages`: three series, of which the `queue=jobs` ones hold 20 and 30.
async fn external_metric(
    State(m): State<Metrics>,
    Path((_ns, metric)): Path<(String, String)>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Reply {
    record(&m, &headers);
    m.seen.lock().unwrap().push(uri.to_string());
    let now = jiff::Timestamp::now().to_string();
    let series = [
        ("jobs", "a", "20"),
        ("jobs", "b", "30"),
        ("mail", "a", "1k"),
    ];
    let wanted: Vec<(&str, &str)> = query
        .get("labelSelector")
        .map(|s| s.split(',').filter_map(|t| t.split_once('=')).collect())
        .unwrap_or_default();
    let items: Vec<Value> = series
        .iter()
        .filter(|(queue, shard, _)| {
            wanted
                .iter()
                .all(|(k, v)| (*k == "queue" && v == queue) || (*k == "shard" && v == shard))
        })
        .map(|(queue, shard, value)| {
            json!({
                "metricName": metric,
                "metricLabels": {"queue": queue, "shard": shard},
                "timestamp": now,
                "value": value,
            })
        })
        .collect();
    reply(json!({
        "kind": "ExternalMetricValueList",
        "apiVersion": "external.metrics.k8s.io/v1beta1",
        "metadata": {},
        "items": items,
    }))
}

/// Starts a custom and external metrics server; returns its port, its CA (PEM) and what it
/// saw (who asked, and each metric request's path and query).
fn start_custom_metrics_api(
    dir: &std::path::Path,
    front_proxy_ca: &str,
    server: &KelpServer,
) -> (u16, String, Arc<Mutex<Vec<String>>>) {
    let (config, ca) = extension_tls(dir, front_proxy_ca, "adapter.monitoring.svc");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let state = Metrics {
        kube: admin_config(server),
        seen: seen.clone(),
    };
    let app = axum::Router::new()
        .route("/apis/custom.metrics.k8s.io/v1beta2", get(custom_resources))
        .route(
            "/apis/custom.metrics.k8s.io/v1beta2/namespaces/{ns}/{resource}/{name}/{metric}",
            get(custom_metric),
        )
        .route(
            "/apis/external.metrics.k8s.io/v1beta1",
            get(external_resources),
        )
        .route(
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/{metric}",
            get(external_metric),
        )
        .with_state(state);
    (support::serve_tls(app, config), ca, seen)
}

#[test]
fn the_autoscaler_follows_pods_object_and_external_metrics() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let server = KelpServer::start(&dir.path().join("data"), &[]);
    let k = |args: &[&str]| {
        let out = server.kubectl("1.33", args);
        assert!(out.ok, "kubectl {args:?} failed: {}", out.stderr);
        out.stdout
    };
    let apply = |yaml: &str| {
        let out = server.kubectl_with_stdin("1.33", &["apply", "-f", "-"], Some(yaml));
        assert!(out.ok, "kubectl apply failed: {}", out.stderr);
    };
    let described = || {
        k(&["describe", "hpa", "worker"])
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let _nodes = Simulated::start(&server.kubeconfig, 2);
    // Each metric recommends its own count: 15 per pod against 10 on 2 pods is 3; 200
    // against 100 on 2 ready pods is 4; 20 + 30 against 10 per replica is 5 (the most).
    apply(
        "apiVersion: apps/v1
kind: Deployment
metadata: {name: worker}
spec:
  replicas: 2
  selector: {matchLabels: {app: worker}}
  template:
    metadata: {labels: {app: worker}}
    spec:
      containers: [{name: worker, image: nginx}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: worker}
  ports: [{port: 80}]
",
    );
    wait_for("2 running workers", 60, || {
        let ready = k(&[
            "get",
            "deployment",
            "worker",
            "-o",
            "jsonpath={.status.readyReplicas}",
        ]);
        if ready == "2" { Ok(()) } else { Err(ready) }
    });
    let hpa = "apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: worker}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: worker}
  minReplicas: 1
  maxReplicas: 5
  metrics:
  - type: Pods
    pods:
      metric: {name: queue_depth}
      target: {type: AverageValue, averageValue: '10'}
  - type: Object
    object:
      describedObject: {apiVersion: v1, kind: Service, name: web}
      metric: {name: requests_per_second}
      target: {type: Value, value: '100'}
  - type: External
    external:
      metric: {name: queue_messages, selector: {matchLabels: {queue: jobs}}}
      target: {type: AverageValue, averageValue: '10'}
";
    apply(hpa);
    // No metrics APIs yet: upstream's messages, and nothing scaled.
    wait_for("the autoscaler to find no custom metrics API", 30, || {
        let d = described();
        let want = "ScalingActive False FailedGetPodsMetric the HPA was unable to compute the replica count: unable to get metric queue_depth: unable to fetch metrics from custom metrics API: no custom metrics API (custom.metrics.k8s.io) registered";
        if d.contains(want) { Ok(()) } else { Err(d) }
    });
    assert_eq!(
        k(&[
            "get",
            "deployment",
            "worker",
            "-o",
            "jsonpath={.spec.replicas}"
        ]),
        "2"
    );
    // Recreated once the APIs are there, so that its first look sees all three metrics.
    k(&["delete", "hpa", "worker"]);

    // The adapter, registered for both groups.
    let front_proxy_ca = k(&[
        "get",
        "configmap",
        "-n",
        "kube-system",
        "extension-apiserver-authentication",
        "-o",
        "jsonpath={.data.requestheader-client-ca-file}",
    ]);
    let (port, ca, seen) =
        start_custom_metrics_api(&dir.path().join("adapter-ca"), &front_proxy_ca, &server);
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(&ca);
    let mut registration = format!(
        "apiVersion: v1
kind: Namespace
metadata: {{name: monitoring}}
---
apiVersion: v1
kind: Service
metadata: {{name: adapter, namespace: monitoring}}
spec:
  ports: [{{name: https, port: 443, targetPort: {port}}}]
---
apiVersion: v1
kind: Endpoints
metadata: {{name: adapter, namespace: monitoring}}
subsets: [{{addresses: [{{ip: 127.0.0.1}}], ports: [{{name: https, port: {port}}}]}}]
"
    );
    for (group, version) in [
        ("custom.metrics.k8s.io", "v1beta2"),
        ("external.metrics.k8s.io", "v1beta1"),
    ] {
        registration += &format!(
            "---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {{name: {version}.{group}}}
spec:
  group: {group}
  version: {version}
  groupPriorityMinimum: 100
  versionPriority: 100
  caBundle: {ca_bundle}
  service: {{namespace: monitoring, name: adapter}}
"
        );
    }
    apply(&registration);
    wait_for("both APIServices to be available", 30, || {
        let statuses = k(&[
            "get",
            "apiservice",
            "v1beta2.custom.metrics.k8s.io",
            "v1beta1.external.metrics.k8s.io",
            "-o",
            "jsonpath={.items[*].status.conditions[0].status}",
        ]);
        if statuses == "True True" {
            Ok(())
        } else {
            Err(statuses)
        }
    });
    apply(hpa);

    // The largest recommendation wins, and says which metric it came from. From 2 replicas
    // at most 4 (upstream's limit without `behavior`: twice, at least 4); 15 s later, on 4
    // pods the service's metric recommends 8, the maximum is 5.
    wait_for("the autoscaler to scale to 5", 90, || {
        let r = k(&[
            "get",
            "deployment",
            "worker",
            "-o",
            "jsonpath={.spec.replicas}",
        ]);
        if r == "5" { Ok(()) } else { Err(r) }
    });
    let selector = "&LabelSelector{MatchLabels:map[string]string{queue: jobs,},MatchExpressions:[]LabelSelectorRequirement{},}";
    let d = described();
    for want in [
        format!("horizontal-pod-autoscaler New size: 4; reason: external metric queue_messages({selector}) above target"),
        "horizontal-pod-autoscaler New size: 5; reason: Service metric requests_per_second above target".to_string(),
        "ScalingLimited True TooManyReplicas".to_string(),
        "\"queue_depth\" on pods: 15 / 10".to_string(),
        "\"requests_per_second\" on Service/web (target value): 200 / 100".to_string(),
    ] {
        assert!(d.contains(&want), "{want:?} not in {d}");
    }
    // The external value is shared among the replicas the target has now.
    wait_for("the external metric per replica of 5", 60, || {
        let d = described();
        if d.contains("\"queue_messages\" (target average value): 10 / 10") {
            Ok(())
        } else {
            Err(d)
        }
    });
    // What the adapter was asked: the target's pods by its selector, the service by name,
    // and the external series by the metric's selector.
    let seen = seen.lock().unwrap().clone();
    for want in [
        "/apis/custom.metrics.k8s.io/v1beta2/namespaces/default/pods/*/queue_depth?labelSelector=app%3Dworker",
        "/apis/custom.metrics.k8s.io/v1beta2/namespaces/default/services/web/requests_per_second",
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/queue_messages?labelSelector=queue%3Djobs",
    ] {
        assert!(seen.iter().any(|s| s == want), "{want} not in {seen:?}");
    }
}

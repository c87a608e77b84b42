//! The API's answers to well-formed and malformed requests, through the router (no TLS):
//! media types, size limits, validation, and that refused input changes nothing.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use kelp_storage::{Backend, Endpoint, KeyRange, Options, RangeRequest};
use serde_json::{Value, json};
use tower::ServiceExt;

struct Api {
    app: axum::Router,
    backend: Backend,
    _dir: tempfile::TempDir,
}

impl Api {
    async fn new() -> Api {
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            compact_interval: None,
            ..Options::default()
        };
        let backend = Backend::open(&Endpoint::default_for(dir.path()), options)
            .await
            .unwrap();
        kelp_apiserver::bootstrap(&backend).await;
        let app = kelp_apiserver::app(backend.clone(), "127.0.0.1:6443".into());
        Api {
            app,
            backend,
            _dir: dir,
        }
    }

    async fn call(
        &self,
        method: &str,
        uri: &str,
        content_type: &str,
        accept: &str,
        body: impl Into<Body>,
    ) -> (StatusCode, String, Vec<u8>) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, content_type)
            .header(header::ACCEPT, accept)
            .body(body.into())
            .unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let ct = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec();
        (status, ct, bytes)
    }

    async fn json(&self, method: &str, uri: &str, body: &str) -> (StatusCode, Value) {
        let (status, _, bytes) = self
            .call(
                method,
                uri,
                "application/json",
                "application/json",
                body.to_string(),
            )
            .await;
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Every key in the store: what must not change when input is refused.
    async fn stored(&self) -> Vec<(Vec<u8>, i64)> {
        let all = self
            .backend
            .range(RangeRequest::new(KeyRange::prefix("/")))
            .await
            .unwrap();
        all.kvs
            .into_iter()
            .map(|kv| (kv.key, kv.mod_revision))
            .collect()
    }
}

const CM: &str = "/api/v1/namespaces/default/configmaps";

fn cm(name: &str) -> String {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}).to_string()
}

#[tokio::test]
async fn yaml_goes_in_and_comes_out() {
    let api = Api::new().await;
    let yaml =
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  key: value\n";
    let (status, _, _) = api
        .call("POST", CM, "application/yaml", "application/json", yaml)
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, ct, body) = api
        .call(
            "GET",
            &format!("{CM}/from-yaml"),
            "",
            "application/yaml",
            "",
        )
        .await;
    assert_eq!((status, ct.as_str()), (StatusCode::OK, "application/yaml"));
    let back: Value = serde_saphyr::from_slice(&body).unwrap();
    assert_eq!(back["data"]["key"], "value");
    assert_eq!(back["metadata"]["namespace"], "default");
}

#[tokio::test]
async fn bad_input_gets_upstreams_status_and_changes_nothing() {
    let api = Api::new().await;
    let before = api.stored().await;

    let (status, body) = api.json("POST", CM, "{not json").await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (StatusCode::BAD_REQUEST, Some("BadRequest"))
    );
    assert_eq!(body["kind"], "Status");

    let (status, _, body) = api
        .call("POST", CM, "text/plain", "application/json", "name: x")
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["reason"],
        "UnsupportedMediaType"
    );
    let protobuf = "application/vnd.kubernetes.protobuf";
    let (status, _, _) = api
        .call(
            "POST",
            CM,
            protobuf,
            "application/json",
            &b"k8s\0\x0a\x7f"[..],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a truncated protobuf body");

    let big = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"},
        "data": {"k": "x".repeat(3 * 1024 * 1024)}});
    let (status, body) = api.json("POST", CM, &big.to_string()).await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("RequestEntityTooLarge"))
    );

    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}});
    let (status, body) = api.json("POST", CM, &secret.to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["message"],
        "the kind in the data (Secret) does not match the expected kind (ConfigMap)"
    );

    let elsewhere = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "other"}});
    let (status, body) = api.json("POST", CM, &elsewhere.to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["message"],
        "the namespace of the provided object does not match the namespace sent on the request"
    );

    let (status, body) = api.json("POST", CM, &cm("Not_Valid")).await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("Invalid"))
    );
    assert_eq!(body["details"]["causes"][0]["field"], "metadata.name");
    assert_eq!(body["details"]["kind"], "ConfigMap");

    let dotted = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a.b"}});
    let (status, body) = api
        .json("POST", "/api/v1/namespaces", &dotted.to_string())
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "namespace names are labels: {body}"
    );

    let (status, body) = api
        .json("POST", "/api/v1/namespaces/missing/configmaps", &cm("x"))
        .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (
            StatusCode::NOT_FOUND,
            Some("namespaces \"missing\" not found")
        )
    );

    let (status, _) = api.json("GET", "/api/v1/widgets", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = api.json("GET", &format!("{CM}?continue=garbage"), "").await;
    assert_eq!(
        (status, body["message"].as_str()),
        (StatusCode::BAD_REQUEST, Some("continue key is not valid"))
    );
    let (status, body) = api
        .json("GET", &format!("{CM}?labelSelector=a%20in%20b"), "")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // A PATCH must say which kind of patch it is.
    let (status, body) = api.json("PATCH", &format!("{CM}/x"), "{}").await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
    let merge = "application/merge-patch+json";
    let (status, _, _) = api
        .call("PATCH", &format!("{CM}/x"), merge, "application/json", "{}")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    assert_eq!(
        api.stored().await,
        before,
        "refused input changed the store"
    );
}

#[tokio::test]
async fn create_update_and_delete_follow_resource_versions() {
    let api = Api::new().await;
    let body = r#"{"metadata":{"generateName":"web-"},"data":{"a":"1"}}"#;
    let (status, created) = api.json("POST", CM, body).await;
    assert_eq!(status, StatusCode::CREATED);
    let name = created["metadata"]["name"].as_str().unwrap().to_string();
    assert!(name.starts_with("web-") && name.len() == 9, "{name}");
    let rv = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();

    let mut changed = created.clone();
    changed["data"]["a"] = json!("2");
    let (status, updated) = api
        .json("PUT", &format!("{CM}/{name}"), &changed.to_string())
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(updated["metadata"]["resourceVersion"], json!(rv));
    assert_eq!(updated["metadata"]["uid"], created["metadata"]["uid"]);

    // The same body again names a stale resourceVersion.
    let (status, body) = api
        .json("PUT", &format!("{CM}/{name}"), &changed.to_string())
        .await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (StatusCode::CONFLICT, Some("Conflict"))
    );

    let (status, list) = api.json("GET", CM, "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["kind"], "ConfigMapList");
    assert_eq!(list["items"][0]["data"]["a"], "2");

    let (status, body) = api.json("DELETE", &format!("{CM}/{name}"), "").await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("Success"))
    );
    let (status, _) = api.json("GET", &format!("{CM}/{name}"), "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn discovery_is_aggregated_or_legacy_by_accept() {
    let api = Api::new().await;
    let kubectl = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,\
                   application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
    let (status, ct, body) = api.call("GET", "/api", "", kubectl, "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        ct,
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    );
    let list: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (list["kind"].as_str(), list["apiVersion"].as_str()),
        (
            Some("APIGroupDiscoveryList"),
            Some("apidiscovery.k8s.io/v2")
        )
    );
    assert_eq!(list["items"][0]["metadata"]["name"], "");

    let (_, ct, body) = api
        .call("GET", "/api", "", "application/json, */*", "")
        .await;
    assert_eq!(ct, "application/json");
    let legacy: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(legacy["kind"], "APIVersions");
    assert_eq!(legacy["versions"], json!(["v1"]));

    let (_, _, body) = api.call("GET", "/api/v1", "", kubectl, "").await;
    let resources: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(resources["kind"], "APIResourceList");
    assert!(
        resources["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "namespaces" && r["namespaced"] == false)
    );

    let (status, ct, _) = api
        .call("GET", "/openapi/v3/api/v1", "", "application/json", "")
        .await;
    assert_eq!((status, ct.as_str()), (StatusCode::OK, "application/json"));
}

#[tokio::test]
async fn finalizers_hold_deletion_until_the_last_one_goes() {
    let api = Api::new().await;
    let body = json!({"metadata": {"name": "held", "finalizers": ["example.com/keep"]}, "data": {"a": "1"}});
    let (status, _) = api.json("POST", CM, &body.to_string()).await;
    assert_eq!(status, StatusCode::CREATED);

    let (status, marked) = api
        .json(
            "DELETE",
            &format!("{CM}/held"),
            r#"{"propagationPolicy":"Background"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        marked["metadata"]["deletionTimestamp"].is_string(),
        "{marked}"
    );
    let (_, still) = api.json("GET", &format!("{CM}/held"), "").await;
    assert_eq!(
        still["metadata"]["deletionTimestamp"],
        marked["metadata"]["deletionTimestamp"]
    );

    // A client cannot clear the deletion; removing the finalizer completes it.
    let merge = "application/merge-patch+json";
    let uri = format!("{CM}/held");
    let (status, _, _) = api
        .call(
            "PATCH",
            &uri,
            merge,
            "application/json",
            r#"{"metadata":{"deletionTimestamp":null}}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, still) = api.json("GET", &uri, "").await;
    assert!(still["metadata"]["deletionTimestamp"].is_string());
    let (status, _, _) = api
        .call(
            "PATCH",
            &uri,
            merge,
            "application/json",
            r#"{"metadata":{"finalizers":null}}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = api.json("GET", &uri, "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn delete_preconditions_and_collections() {
    let api = Api::new().await;
    for (name, tier) in [("a", "x"), ("b", "x"), ("c", "y")] {
        let body = json!({"metadata": {"name": name, "labels": {"tier": tier}}});
        api.json("POST", CM, &body.to_string()).await;
    }
    let (status, body) = api
        .json(
            "DELETE",
            &format!("{CM}/a"),
            r#"{"preconditions":{"uid":"not-it"}}"#,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("Precondition failed: UID in precondition: not-it")
    );
    let (status, body) = api
        .json(
            "DELETE",
            &format!("{CM}/a"),
            r#"{"preconditions":{"resourceVersion":"1"}}"#,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    let (status, deleted) = api
        .json("DELETE", &format!("{CM}?labelSelector=tier%3Dx"), "")
        .await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = deleted["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"]);
    let (_, left) = api.json("GET", CM, "").await;
    assert_eq!(left["items"].as_array().unwrap().len(), 1);
    assert_eq!(left["items"][0]["metadata"]["name"], "c");
}

#[tokio::test]
async fn services_get_cluster_ips_and_node_ports_exclusively() {
    let api = Api::new().await;
    const SVC: &str = "/api/v1/namespaces/default/services";
    let (_, kubernetes) = api.json("GET", &format!("{SVC}/kubernetes"), "").await;
    assert_eq!(kubernetes["spec"]["clusterIP"], "10.96.0.1");
    assert_eq!(kubernetes["spec"]["ports"][0]["port"], 443);

    let svc =
        |name: &str, spec: Value| json!({"metadata": {"name": name}, "spec": spec}).to_string();
    let (status, web) = api
        .json("POST", SVC, &svc("web", json!({"ports": [{"port": 80}]})))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let ip = web["spec"]["clusterIP"].as_str().unwrap().to_string();
    assert!(ip.starts_with("10.96.") && ip != "10.96.0.1", "{ip}");
    assert_eq!(web["spec"]["clusterIPs"], json!([ip]));
    assert_eq!(web["spec"]["ports"][0]["targetPort"], 80);

    let (status, body) = api
        .json(
            "POST",
            SVC,
            &svc("copy", json!({"clusterIP": ip, "ports": [{"port": 80}]})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("provided IP is already allocated"),
        "{body}"
    );
    // Outside every ServiceCIDR, and the range's network and broadcast addresses: upstream
    // v1.33's messages, nothing stored.
    for (name, ip, reason) in [
        (
            "far",
            "192.168.1.1",
            "failed to allocate IP 192.168.1.1: the provided network does not match the current range".to_string(),
        ),
        (
            "base",
            "10.96.0.0",
            format!("failed to allocate IP 10.96.0.0: the provided IP (10.96.0.0) is not in the valid range. The range of valid IPs is {}", "10.96.0.0/16"),
        ),
        (
            "broadcast",
            "10.96.255.255",
            format!("failed to allocate IP 10.96.255.255: the provided IP (10.96.255.255) is not in the valid range. The range of valid IPs is {}", "10.96.0.0/16"),
        ),
    ] {
        let (status, body) = api
            .json(
                "POST",
                SVC,
                &svc(name, json!({"clusterIP": ip, "ports": [{"port": 80}]})),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(
            body["message"],
            format!(
                "Service \"{name}\" is invalid: spec.clusterIPs: Invalid value: []string{{\"{ip}\"}}: {reason}"
            ),
        );
        let (status, _) = api.json("GET", &format!("{SVC}/{name}"), "").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    let (status, np) = api
        .json(
            "POST",
            SVC,
            &svc("np", json!({"type": "NodePort", "ports": [{"port": 80}]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let port = np["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    assert!((30000..=32767).contains(&port));
    let (status, _) = api
        .json(
            "POST",
            SVC,
            &svc(
                "np2",
                json!({"type": "NodePort", "ports": [{"port": 81, "nodePort": port}]}),
            ),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "the NodePort is taken"
    );

    // Updates keep the allocations; changing the ClusterIP is refused.
    let merge = "application/merge-patch+json";
    let (status, _, _) = api
        .call(
            "PATCH",
            &format!("{SVC}/web"),
            merge,
            "application/json",
            r#"{"spec":{"clusterIP":"10.96.9.9"}}"#,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let mut replaced = web.clone();
    replaced["spec"]
        .as_object_mut()
        .unwrap()
        .remove("clusterIP");
    replaced["spec"]
        .as_object_mut()
        .unwrap()
        .remove("clusterIPs");
    let (status, updated) = api
        .json("PUT", &format!("{SVC}/web"), &replaced.to_string())
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["spec"]["clusterIP"], json!(ip));

    // Deleting releases them.
    api.json("DELETE", &format!("{SVC}/web"), "").await;
    let (status, _) = api
        .json(
            "POST",
            SVC,
            &svc("again", json!({"clusterIP": ip, "ports": [{"port": 80}]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn cluster_ips_are_ip_addresses_of_their_services() {
    let api = Api::new().await;
    const SVC: &str = "/api/v1/namespaces/default/services";
    const IPS: &str = "/apis/networking.k8s.io/v1/ipaddresses";
    let labels = json!({
        "ipaddress.kubernetes.io/ip-family": "IPv4",
        "ipaddress.kubernetes.io/managed-by": "ipallocator.k8s.io",
    });
    let parent = |name: &str| json!({"resource": "services", "namespace": "default", "name": name});

    // The bootstrap `kubernetes` Service's.
    let (status, kubernetes) = api.json("GET", &format!("{IPS}/10.96.0.1"), "").await;
    assert_eq!(status, StatusCode::OK, "{kubernetes}");
    assert_eq!(kubernetes["spec"]["parentRef"], parent("kubernetes"));
    assert_eq!(kubernetes["metadata"]["labels"], labels);

    let svc =
        |name: &str, spec: Value| json!({"metadata": {"name": name}, "spec": spec}).to_string();
    let (status, web) = api
        .json("POST", SVC, &svc("web", json!({"ports": [{"port": 80}]})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{web}");
    let ip = web["spec"]["clusterIP"].as_str().unwrap().to_string();
    let (status, address) = api.json("GET", &format!("{IPS}/{ip}"), "").await;
    assert_eq!(status, StatusCode::OK, "{address}");
    assert_eq!(address["apiVersion"], "networking.k8s.io/v1");
    assert_eq!(address["kind"], "IPAddress");
    assert_eq!(address["metadata"]["name"], json!(ip));
    assert_eq!(address["metadata"]["labels"], labels);
    assert_eq!(address["spec"]["parentRef"], parent("web"));
    assert!(address["metadata"]["uid"].is_string(), "{address}");
    assert!(
        address["metadata"]["creationTimestamp"].is_string(),
        "{address}"
    );
    let (_, listed) = api.json("GET", IPS, "").await;
    let names: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"10.96.0.1") && names.contains(&ip.as_str()),
        "{names:?}"
    );

    // An IPAddress a user created holds its IP.
    let user = json!({"apiVersion": "networking.k8s.io/v1", "kind": "IPAddress",
        "metadata": {"name": "10.96.0.50"},
        "spec": {"parentRef": {"group": "example.com", "resource": "gateways", "namespace": "default", "name": "gw"}}});
    let (status, body) = api.json("POST", IPS, &user.to_string()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = api
        .json(
            "POST",
            SVC,
            &svc(
                "fixed",
                json!({"clusterIP": "10.96.0.50", "ports": [{"port": 80}]}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        body["message"],
        "Service \"fixed\" is invalid: spec.clusterIPs: Invalid value: []string{\"10.96.0.50\"}: \
         failed to allocate IP 10.96.0.50: provided IP is already allocated"
    );
    let (status, kept) = api.json("GET", &format!("{IPS}/10.96.0.50"), "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(kept["spec"]["parentRef"]["name"], "gw");

    // Deleting the Service deletes its IPAddress.
    let (status, _) = api.json("DELETE", &format!("{SVC}/web"), "").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = api.json("GET", &format!("{IPS}/{ip}"), "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // So does making it ExternalName.
    let (status, other) = api
        .json("POST", SVC, &svc("other", json!({"ports": [{"port": 80}]})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{other}");
    let other_ip = other["spec"]["clusterIP"].as_str().unwrap().to_string();
    let (status, _, body) = api
        .call(
            "PATCH",
            &format!("{SVC}/other"),
            "application/merge-patch+json",
            "application/json",
            r#"{"spec":{"type":"ExternalName","externalName":"example.com"}}"#,
        )
        .await;
    let external: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    assert_eq!(status, StatusCode::OK, "{external}");
    assert_eq!(external["spec"].get("clusterIP"), None, "{external}");
    let (status, _) = api.json("GET", &format!("{IPS}/{other_ip}"), "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn watches_stream_initial_events_then_a_bookmark_then_changes() {
    let api = Api::new().await;
    for name in ["one", "two"] {
        api.json("POST", CM, &json!({"metadata": {"name": name}}).to_string())
            .await;
    }
    let app = api.app.clone();
    let watch = tokio::spawn(async move {
        let uri = format!(
            "{CM}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=2"
        );
        let req = Request::builder().uri(uri).body(Body::empty()).unwrap();
        let resp = app.oneshot(req).await.unwrap();
        axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap()
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    api.json(
        "POST",
        CM,
        &json!({"metadata": {"name": "three"}}).to_string(),
    )
    .await;
    let body = watch.await.unwrap();
    let events: Vec<Value> = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    let summary: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                e["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    let expect = [
        ("ADDED", "one"),
        ("ADDED", "two"),
        ("BOOKMARK", ""),
        ("ADDED", "three"),
    ];
    assert_eq!(summary, expect.map(|(t, n)| (t.to_string(), n.to_string())));
    assert_eq!(
        events[2]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    assert_eq!(
        events[2]["object"]["metadata"]["resourceVersion"],
        events[1]["object"]["metadata"]["resourceVersion"]
    );

    let (status, _) = api
        .json(
            "GET",
            &format!("{CM}?watch=true&sendInitialEvents=true"),
            "",
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn pods_are_bound_once_and_evicted_only_as_their_budget_allows() {
    let api = Api::new().await;
    const PODS: &str = "/api/v1/namespaces/default/pods";
    const PDBS: &str = "/apis/policy/v1/namespaces/default/poddisruptionbudgets";
    let pod = |name: &str| {
        json!({"metadata": {"name": name, "labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
            .to_string()
    };
    api.json("POST", PODS, &pod("web-1")).await;
    api.json("POST", PODS, &pod("web-2")).await;

    let binding = |node: &str| {
        json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "web-1"}, "target": {"kind": "Node", "name": node}}).to_string()
    };
    let (status, _) = api
        .json("POST", &format!("{PODS}/web-1/binding"), &binding("node-a"))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, bound) = api.json("GET", &format!("{PODS}/web-1"), "").await;
    assert_eq!(bound["spec"]["nodeName"], "node-a");
    assert_eq!(bound["status"]["conditions"][0]["type"], "PodScheduled");
    let (status, body) = api
        .json("POST", &format!("{PODS}/web-1/binding"), &binding("node-b"))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        body["message"],
        "pod web-1 is already assigned to node \"node-a\""
    );

    // A budget that allows no disruption refuses the eviction.
    let pdb = json!({"metadata": {"name": "web"}, "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}});
    api.json("POST", PDBS, &pdb.to_string()).await;
    let status_body = json!({"status": {"observedGeneration": 1, "disruptionsAllowed": 0, "currentHealthy": 2, "desiredHealthy": 2, "expectedPods": 2}});
    let merge = "application/merge-patch+json";
    api.call(
        "PATCH",
        &format!("{PDBS}/web/status"),
        merge,
        "application/json",
        status_body.to_string(),
    )
    .await;
    let eviction = |name: &str| {
        json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name}})
            .to_string()
    };
    let (status, body) = api
        .json(
            "POST",
            &format!("{PODS}/web-1/eviction"),
            &eviction("web-1"),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(
        body["message"],
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    assert_eq!(
        body["details"]["causes"][0]["message"],
        "The disruption budget web needs 2 healthy pods and has 2 currently"
    );

    // With one disruption allowed, the pod goes and the budget is spent.
    let allow = json!({"status": {"disruptionsAllowed": 1}});
    api.call(
        "PATCH",
        &format!("{PDBS}/web/status"),
        merge,
        "application/json",
        allow.to_string(),
    )
    .await;
    let (status, body) = api
        .json(
            "POST",
            &format!("{PODS}/web-1/eviction"),
            &eviction("web-1"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // A bound pod's eviction is a graceful deletion: it is Terminating until its kubelet
    // confirms (none runs here).
    let (status, evicted) = api.json("GET", &format!("{PODS}/web-1"), "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        evicted["metadata"]["deletionTimestamp"].is_string(),
        "{evicted}"
    );
    assert_eq!(evicted["metadata"]["deletionGracePeriodSeconds"], 30);
    let (_, spent) = api.json("GET", &format!("{PDBS}/web"), "").await;
    assert_eq!(spent["status"]["disruptionsAllowed"], 0);
    let (status, _) = api
        .json(
            "POST",
            &format!("{PODS}/web-2/eviction"),
            &eviction("web-2"),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);

    let (_, _, body) = api.call("GET", "/api/v1", "", "application/json", "").await;
    let list: Value = serde_json::from_slice(&body).unwrap();
    let names: Vec<&str> = list["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    for sub in ["pods/binding", "pods/eviction", "pods/status"] {
        assert!(names.contains(&sub), "{sub} missing from {names:?}");
    }
}

#[tokio::test]
async fn server_side_apply_creates_merges_and_refuses_bad_configurations() {
    let api = Api::new().await;
    let apply = |uri: String, body: &str| {
        let body = body.to_string();
        let api = &api;
        async move {
            let (status, _, bytes) = api
                .call(
                    "PATCH",
                    &uri,
                    "application/apply-patch+yaml",
                    "application/json",
                    body,
                )
                .await;
            (
                status,
                serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null),
            )
        }
    };
    // YAML configurations create (201), then merge.
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  a: \"1\"\n";
    let (status, created) = apply(format!("{CM}/applied?fieldManager=ci"), yaml).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["metadata"]["managedFields"][0]["manager"], "ci");
    let (status, merged) = apply(
        format!("{CM}/applied?fieldManager=other"),
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"applied"},"data":{"b":"2"}}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{merged}");
    assert_eq!(merged["data"], json!({"a": "1", "b": "2"}));

    let before = api.stored().await;
    for (uri, body, code, message) in [
        (
            format!("{CM}/applied"),
            yaml.to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        ),
        (
            format!("{CM}/applied?fieldManager=ci"),
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"applied","managedFields":[]}}"#.into(),
            StatusCode::BAD_REQUEST,
            "metadata.managedFields must be nil",
        ),
        (
            format!("{CM}/applied?fieldManager=ci"),
            r#"{"apiVersion":"v1","metadata":{"name":"applied"}}"#.into(),
            StatusCode::BAD_REQUEST,
            "Object 'Kind' is missing in '{\"apiVersion\":\"v1\",\"metadata\":{\"name\":\"applied\"}}'",
        ),
        (
            format!("{CM}/applied?fieldManager=ci"),
            "{a: [".into(),
            StatusCode::BAD_REQUEST,
            "",
        ),
        (
            format!("{CM}/applied?fieldManager=ci"),
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"other"}}"#.into(),
            StatusCode::BAD_REQUEST,
            "the name of the object (other) does not match the name on the URL (applied)",
        ),
        (
            format!("{CM}/applied?fieldManager=ci"),
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"applied","resourceVersion":"1"},"data":{"a":"1"}}"#.into(),
            StatusCode::CONFLICT,
            "Operation cannot be fulfilled on configmaps \"applied\": the object has been modified; please apply your changes to the latest version and try again",
        ),
        (
            format!("{CM}/applied?fieldManager=ci"),
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"applied"},"data":{"b":"3"}}"#.into(),
            StatusCode::CONFLICT,
            "Apply failed with 1 conflict: conflict with \"other\": .data.b",
        ),
    ] {
        let (status, body) = apply(uri.clone(), &body).await;
        assert_eq!(status, code, "{uri}: {body}");
        assert_eq!(body["kind"], "Status", "{body}");
        if !message.is_empty() {
            assert_eq!(body["message"], message, "{uri}");
        }
    }
    let (status, _) = api
        .json(
            "PATCH",
            &format!("{CM}/applied?force=true"),
            r#"{"data":{"c":"3"}}"#,
        )
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (status, _, _) = api
        .call(
            "PATCH",
            &format!("{CM}/applied?force=true"),
            "application/merge-patch+json",
            "application/json",
            r#"{"data":{"c":"3"}}"#,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        api.stored().await,
        before,
        "refused applies changed nothing"
    );

    // Status is applied through /status alone, and owned there.
    let deploy = "/apis/apps/v1/namespaces/default/deployments";
    let d = r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d"},
        "spec":{"selector":{"matchLabels":{"a":"b"}},"template":{"metadata":{"labels":{"a":"b"}},"spec":{"containers":[{"name":"c","image":"i"}]}}},
        "status":{"replicas":5}}"#;
    let (status, created) = apply(format!("{deploy}/d?fieldManager=ci"), d).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert!(created["status"].get("replicas").is_none(), "{created}");
    assert!(
        created["metadata"]["managedFields"][0]["fieldsV1"]
            .get("f:status")
            .is_none()
    );
    let (status, s) = apply(
        format!("{deploy}/d/status?fieldManager=controller"),
        r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d"},"status":{"replicas":2}}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{s}");
    assert_eq!(s["status"]["replicas"], 2);
    let entry = s["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == "controller")
        .unwrap();
    assert_eq!(entry["subresource"], "status");
    assert_eq!(entry["fieldsV1"], json!({"f:status": {"f:replicas": {}}}));
    assert_eq!(s["metadata"]["generation"], 1);
}

/// Polls until `ok` holds for a GET's answer (a CRD is served once the process's watch sees it).
async fn eventually(api: &Api, uri: &str, ok: impl Fn(StatusCode, &Value) -> bool) -> Value {
    for _ in 0..200 {
        let (status, body) = api.json("GET", uri, "").await;
        if ok(status, &body) {
            return body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{uri} never became as expected");
}

fn crontab_crd() -> Value {
    let schema = json!({"type": "object", "properties": {
        "spec": {"type": "object", "required": ["cronSpec"],
          "x-kubernetes-validations": [{"rule": "self.replicas <= 5", "message": "at most 5 replicas"}],
          "properties": {
            "cronSpec": {"type": "string", "pattern": "^(\\d+|\\*)(/\\d+)?(\\s+(\\d+|\\*)(/\\d+)?){4}$",
                "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "cronSpec is immutable"}]},
            "image": {"type": "string"},
            "replicas": {"type": "integer", "minimum": 0, "maximum": 10, "default": 1}}},
        "status": {"type": "object", "properties": {"replicas": {"type": "integer"}, "selector": {"type": "string"}}}}});
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "crontabs.stable.example.com"},
        "spec": {"group": "stable.example.com", "scope": "Namespaced",
            "names": {"plural": "crontabs", "singular": "crontab", "kind": "CronTab", "shortNames": ["ct"]},
            "versions": [
                {"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": schema},
                 "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas",
                    "statusReplicasPath": ".status.replicas", "labelSelectorPath": ".status.selector"}},
                 "additionalPrinterColumns": [
                    {"name": "Spec", "type": "string", "jsonPath": ".spec.cronSpec"},
                    {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"}]},
                {"name": "v1beta1", "served": true, "storage": false, "schema": {"openAPIV3Schema": schema}}]}})
}

#[tokio::test]
async fn custom_resources_are_served_like_built_in_kinds() {
    let api = Api::new().await;
    let crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
    let (status, body) = api.json("POST", crds, &crontab_crd().to_string()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["spec"]["names"]["listKind"], "CronTabList");
    // Served, then established.
    let discovery = eventually(&api, "/apis/stable.example.com/v1", |s, _| {
        s == StatusCode::OK
    })
    .await;
    let crontabs = discovery["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect::<Vec<_>>();
    assert_eq!(crontabs, ["crontabs", "crontabs/status", "crontabs/scale"]);
    let crd = eventually(
        &api,
        &format!("{crds}/crontabs.stable.example.com"),
        |_, b| {
            b["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Established" && c["status"] == "True")
            })
        },
    )
    .await;
    assert_eq!(crd["status"]["storedVersions"], json!(["v1"]));
    let (_, groups) = api.json("GET", "/apis", "").await;
    let group = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "stable.example.com")
        .unwrap();
    assert_eq!(group["preferredVersion"]["version"], "v1");
    assert_eq!(group["versions"].as_array().unwrap().len(), 2);

    // Writes are pruned, defaulted and validated by the schema.
    let tabs = "/apis/stable.example.com/v1/namespaces/default/crontabs";
    let tab = |spec: Value| {
        json!({"apiVersion": "stable.example.com/v1", "kind": "CronTab", "metadata": {"name": "nightly"}, "spec": spec}).to_string()
    };
    let before = api.stored().await;
    let (status, body) = api
        .json(
            "POST",
            &format!("{tabs}?fieldValidation=Strict"),
            &tab(json!({"cronSpec": "* * * * */5", "bogus": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["message"],
        "CronTab in version \"v1\" cannot be handled as a CronTab: strict decoding error: unknown field \"spec.bogus\""
    );
    let (status, body) = api
        .json(
            "POST",
            tabs,
            &tab(json!({"cronSpec": "bad", "replicas": 20})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body["message"],
        "CronTab.stable.example.com \"nightly\" is invalid: [spec.cronSpec: Invalid value: \"bad\": spec.cronSpec in body should match '^(\\d+|\\*)(/\\d+)?(\\s+(\\d+|\\*)(/\\d+)?){4}$', spec.replicas: Invalid value: 20: spec.replicas in body should be less than or equal to 10]"
    );
    assert_eq!(body["details"]["causes"].as_array().unwrap().len(), 2);
    // CEL rules of the schema.
    let (status, body) = api
        .json(
            "POST",
            tabs,
            &tab(json!({"cronSpec": "* * * * */5", "replicas": 7})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        body["message"],
        "CronTab.stable.example.com \"nightly\" is invalid: spec: Invalid value: \"object\": at most 5 replicas"
    );
    assert_eq!(api.stored().await, before, "refused writes store nothing");
    let (status, _, bytes) = api
        .call(
            "POST",
            tabs,
            "application/json",
            "application/json",
            tab(json!({"cronSpec": "* * * * */5", "image": "cron:1", "bogus": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let created: Value = serde_json::from_slice(&bytes).unwrap();
    assert!(created["spec"].get("bogus").is_none());
    assert_eq!(created["spec"]["replicas"], 1);
    assert_eq!(created["metadata"]["generation"], 1);

    // Transition rules compare with the object before the update.
    let (status, body) = api
        .json(
            "PATCH",
            &format!("{tabs}/nightly"),
            r#"{"spec":{"cronSpec":"*/1 * * * *"}}"#,
        )
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
    let (status, _, bytes) = api
        .call(
            "PATCH",
            &format!("{tabs}/nightly"),
            "application/merge-patch+json",
            "application/json",
            r#"{"spec":{"cronSpec":"*/1 * * * *"}}"#,
        )
        .await;
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        body["message"],
        "CronTab.stable.example.com \"nightly\" is invalid: spec.cronSpec: Invalid value: \"string\": cronSpec is immutable"
    );

    // Stored in the storage version under upstream's key; served in the version asked for.
    let (kv, _) = api
        .backend
        .get("/registry/stable.example.com/crontabs/default/nightly")
        .await
        .unwrap();
    let stored: Value = serde_json::from_slice(&kv.unwrap().value).unwrap();
    assert_eq!(stored["apiVersion"], "stable.example.com/v1");
    let (_, beta) = api
        .json(
            "GET",
            "/apis/stable.example.com/v1beta1/namespaces/default/crontabs/nightly",
            "",
        )
        .await;
    assert_eq!(beta["apiVersion"], "stable.example.com/v1beta1");

    // Table rows show the printer columns.
    let (_, _, table) = api
        .call(
            "GET",
            tabs,
            "",
            "application/json;as=Table;g=meta.k8s.io;v=v1",
            "",
        )
        .await;
    let table: Value = serde_json::from_slice(&table).unwrap();
    let headers: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(headers, ["Name", "Spec", "Replicas"]);
    assert_eq!(
        table["rows"][0]["cells"],
        json!(["nightly", "* * * * */5", 1])
    );

    // Status and scale subresources.
    let (_, mut with_status) = api.json("GET", &format!("{tabs}/nightly"), "").await;
    with_status["status"] = json!({"replicas": 1, "selector": "app=cron"});
    let (status, body) = api
        .json(
            "PUT",
            &format!("{tabs}/nightly/status"),
            &with_status.to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["metadata"]["generation"], 1);
    let (_, scale) = api.json("GET", &format!("{tabs}/nightly/scale"), "").await;
    assert_eq!(scale["spec"]["replicas"], 1);
    assert_eq!(
        scale["status"],
        json!({"replicas": 1, "selector": "app=cron"})
    );
    let mut scale_up = scale.clone();
    scale_up["spec"]["replicas"] = json!(3);
    let (status, body) = api
        .json(
            "PUT",
            &format!("{tabs}/nightly/scale"),
            &scale_up.to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, scaled) = api.json("GET", &format!("{tabs}/nightly"), "").await;
    assert_eq!(scaled["spec"]["replicas"], 3);
    assert_eq!(scaled["metadata"]["generation"], 2);
    assert_eq!(scaled["status"]["replicas"], 1);

    // OpenAPI publishes the kind's schema for kubectl's validation and explain.
    let (_, index) = api.json("GET", "/openapi/v3", "").await;
    let url = index["paths"]["apis/stable.example.com/v1"]["serverRelativeURL"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, doc) = api.json("GET", &url, "").await;
    assert_eq!(status, StatusCode::OK);
    let schema = &doc["components"]["schemas"]["com.example.stable.v1.CronTab"];
    assert_eq!(
        schema["x-kubernetes-group-version-kind"],
        json!([{"group": "stable.example.com", "version": "v1", "kind": "CronTab"}])
    );
    assert_eq!(
        schema["properties"]["spec"]["properties"]["replicas"]["maximum"],
        10
    );
    assert!(
        doc["paths"]["/apis/stable.example.com/v1/namespaces/{namespace}/crontabs/{name}"]["patch"]
            .is_object()
    );

    // Deleting the definition deletes its objects, then the definition.
    let (status, body) = api
        .json("DELETE", &format!("{crds}/crontabs.stable.example.com"), "")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    eventually(
        &api,
        &format!("{crds}/crontabs.stable.example.com"),
        |s, _| s == StatusCode::NOT_FOUND,
    )
    .await;
    let (status, _) = api.json("GET", "/apis/stable.example.com/v1", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (kv, _) = api
        .backend
        .get("/registry/stable.example.com/crontabs/default/nightly")
        .await
        .unwrap();
    assert!(
        kv.is_none(),
        "the custom resources went with their definition"
    );
}

#[tokio::test]
async fn lists_at_the_head_come_from_the_watch_cache_and_see_every_write() {
    let api = Api::new().await;
    // A list right after a write sees it: the cache is waited for up to the head.
    for i in 0..30 {
        let (status, created) = api.json("POST", CM, &cm(&format!("c{i}"))).await;
        assert_eq!(status, StatusCode::CREATED);
        let (_, list) = api.json("GET", CM, "").await;
        let names: Vec<&str> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names.len(), i + 1, "{names:?}");
        let rv: i64 = list["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let created_rv: i64 = created["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(rv >= created_rv);
    }
    // Items written from the stored bytes are the objects a GET returns.
    let (_, list) = api.json("GET", CM, "").await;
    for item in list["items"].as_array().unwrap() {
        let name = item["metadata"]["name"].as_str().unwrap();
        let (_, got) = api.json("GET", &format!("{CM}/{name}"), "").await;
        assert_eq!(item, &got);
    }
    assert_eq!(list["kind"], "ConfigMapList");
    assert_eq!(list["apiVersion"], "v1");
    let (_, labelled) = api
        .json("GET", &format!("{CM}?labelSelector=missing%3Dx"), "")
        .await;
    assert_eq!(labelled["items"], json!([]));
    // resourceVersion=0 takes the cache whole, as upstream ignores the limit there.
    let (_, any) = api
        .json("GET", &format!("{CM}?resourceVersion=0&limit=5"), "")
        .await;
    assert_eq!(any["items"].as_array().unwrap().len(), 30);
    assert!(any["metadata"].get("continue").is_none());
    // A limit alone pages from storage.
    let (_, page) = api.json("GET", &format!("{CM}?limit=5"), "").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 5);
    assert_eq!(page["metadata"]["remainingItemCount"], 25);
    // Deletes leave the cache too, and selectors apply.
    let (status, _) = api.json("DELETE", &format!("{CM}/c0"), "").await;
    assert_eq!(status, StatusCode::OK);
    let (_, list) = api
        .json("GET", &format!("{CM}?fieldSelector=metadata.name%3Dc0"), "")
        .await;
    assert_eq!(list["items"], json!([]));
    let (_, list) = api.json("GET", CM, "").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 29);
}

#[tokio::test]
async fn autoscaling_v1_and_v2_are_one_object_in_two_versions() {
    let api = Api::new().await;
    let v1 = "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers";
    let v2 = "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers";
    let hpa = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "maxReplicas": 4, "targetCPUUtilizationPercentage": 60}});
    let (status, created) = api.json("POST", v1, &hpa.to_string()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["spec"]["minReplicas"], 1);
    let (_, as_v2) = api.json("GET", &format!("{v2}/web"), "").await;
    assert_eq!(as_v2["apiVersion"], "autoscaling/v2");
    assert_eq!(
        as_v2["spec"]["metrics"][0]["resource"],
        json!({"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}})
    );
    let (_, list) = api.json("GET", v1, "").await;
    assert_eq!(
        list["items"][0]["spec"]["targetCPUUtilizationPercentage"],
        60
    );
    assert_eq!(list["items"][0]["apiVersion"], "autoscaling/v1");
    let (_, groups) = api.json("GET", "/apis/autoscaling", "").await;
    assert_eq!(groups["preferredVersion"]["version"], "v2");
}

#[tokio::test]
async fn the_default_service_cidr_is_ready_and_ip_addresses_are_named_by_their_ip() {
    let api = Api::new().await;
    const CIDRS: &str = "/apis/networking.k8s.io/v1/servicecidrs";
    const IPS: &str = "/apis/networking.k8s.io/v1/ipaddresses";
    let cause = |body: &Value| {
        (
            body["details"]["causes"][0]["field"].clone(),
            body["details"]["causes"][0]["message"].clone(),
        )
    };

    let (status, default) = api.json("GET", &format!("{CIDRS}/kubernetes"), "").await;
    assert_eq!(status, StatusCode::OK, "{default}");
    assert_eq!(default["spec"]["cidrs"], json!(["10.96.0.0/16"]));
    let ready = &default["status"]["conditions"][0];
    assert_eq!(ready["type"], "Ready");
    assert_eq!(ready["status"], "True");
    assert_eq!(ready["message"], "Kubernetes default Service CIDR is ready");

    // Its CIDR stays; a CIDR of the other family may join it.
    let mut moved = default.clone();
    moved["spec"]["cidrs"] = json!(["10.97.0.0/16"]);
    let (status, body) = api
        .json("PUT", &format!("{CIDRS}/kubernetes"), &moved.to_string())
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        cause(&body),
        (
            json!("spec.cidrs[0]"),
            json!("Invalid value: \"10.97.0.0/16\": field is immutable")
        )
    );
    let mut dual = default.clone();
    dual["spec"]["cidrs"] = json!(["10.96.0.0/16", "fd00:10:96::/112"]);
    let (status, body) = api
        .json("PUT", &format!("{CIDRS}/kubernetes"), &dual.to_string())
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], default["status"], "the status stays");

    let cidr = |cidrs: Value| json!({"metadata": {"name": "extra"}, "spec": {"cidrs": cidrs}});
    let (status, body) = api
        .json("POST", CIDRS, &cidr(json!(["10.0.0.1/24"])).to_string())
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        cause(&body),
        (
            json!("spec.cidrs[0]"),
            json!(
                "Invalid value: \"10.0.0.1/24\": must not have bits set beyond the prefix length"
            )
        )
    );
    let (status, body) = api
        .json("POST", CIDRS, &cidr(json!(["203.0.113.0/24"])).to_string())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let ip = |name: &str| {
        json!({"metadata": {"name": name}, "spec": {"parentRef": {
            "resource": "services", "namespace": "default", "name": "web"}}})
        .to_string()
    };
    let name = "fe80::42:1dff:fe84:f9e2";
    let (status, created) = api.json("POST", IPS, &ip(name)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, body) = api.json("POST", IPS, &ip("2001:DB8::1")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        cause(&body),
        (
            json!("metadata.name"),
            json!("Invalid value: \"2001:DB8::1\": must be in canonical form (\"2001:db8::1\")")
        )
    );

    // Its parent stays.
    let mut reparented = created.clone();
    reparented["spec"]["parentRef"]["name"] = json!("other");
    let (status, body) = api
        .json("PUT", &format!("{IPS}/{name}"), &reparented.to_string())
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(cause(&body).0, json!("spec.parentRef"));

    let (_, _, table) = api
        .call(
            "GET",
            IPS,
            "application/json",
            "application/json;as=Table;g=meta.k8s.io;v=v1",
            "",
        )
        .await;
    let table: Value = serde_json::from_slice(&table).unwrap();
    // The `kubernetes` Service's ClusterIP is an IPAddress too.
    let rows: Vec<&Value> = table["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| &row["cells"])
        .collect();
    assert_eq!(
        rows,
        [
            &json!(["10.96.0.1", "services/default/kubernetes"]),
            &json!([name, "services/default/web"])
        ]
    );
}

#[tokio::test]
async fn bindings_bind_pods_and_component_statuses_follow_the_leader_leases() {
    let api = Api::new().await;
    const PODS: &str = "/api/v1/namespaces/default/pods";
    const BINDINGS: &str = "/api/v1/namespaces/default/bindings";
    const CS: &str = "/api/v1/componentstatuses";
    const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases";

    // Discovery lists both, legacy and aggregated, as upstream does.
    let (_, _, body) = api.call("GET", "/api/v1", "", "application/json", "").await;
    let legacy: Value = serde_json::from_slice(&body).unwrap();
    let listed = |name: &str| {
        let r = legacy["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing from /api/v1"));
        (
            r["kind"].clone(),
            r["namespaced"].clone(),
            r["verbs"].clone(),
            r["shortNames"].clone(),
        )
    };
    assert_eq!(
        listed("bindings"),
        (json!("Binding"), json!(true), json!(["create"]), json!([]))
    );
    assert_eq!(
        listed("componentstatuses"),
        (
            json!("ComponentStatus"),
            json!(false),
            json!(["get", "list"]),
            json!(["cs"])
        )
    );
    let kubectl =
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json";
    let (_, _, body) = api.call("GET", "/api", "", kubectl, "").await;
    let aggregated: Value = serde_json::from_slice(&body).unwrap();
    let core = aggregated["items"][0]["versions"][0]["resources"]
        .as_array()
        .unwrap();
    let entry = |name: &str| {
        let r = core
            .iter()
            .find(|r| r["resource"] == name)
            .unwrap_or_else(|| panic!("{name} missing from aggregated discovery"));
        (
            r["responseKind"]["kind"].clone(),
            r["scope"].clone(),
            r["verbs"].clone(),
        )
    };
    assert_eq!(
        entry("bindings"),
        (json!("Binding"), json!("Namespaced"), json!(["create"]))
    );
    assert_eq!(
        entry("componentstatuses"),
        (
            json!("ComponentStatus"),
            json!("Cluster"),
            json!(["get", "list"])
        )
    );

    // A Binding posted to the collection binds the pod it names, once.
    let pod = json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    api.json("POST", PODS, &pod.to_string()).await;
    let binding = |pod: &str, node: &str| {
        json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": pod}, "target": {"kind": "Node", "name": node}}).to_string()
    };
    let (status, body) = api.json("POST", BINDINGS, &binding("web", "node-a")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"], "Success");
    let (_, bound) = api.json("GET", &format!("{PODS}/web"), "").await;
    assert_eq!(bound["spec"]["nodeName"], "node-a");
    let (status, body) = api.json("POST", BINDINGS, &binding("web", "node-b")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        body["message"],
        "pod web is already assigned to node \"node-a\""
    );
    let (status, body) = api
        .json("POST", BINDINGS, &binding("missing", "node-a"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["message"], "pods \"missing\" not found");
    // The subresource's Binding must name the pod its path names.
    let (status, body) = api
        .json(
            "POST",
            &format!("{PODS}/web/binding"),
            &binding("other", "n"),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["message"],
        "name in URL does not match name in Binding object"
    );
    // A dry run checks the Binding and binds nothing.
    let pod = json!({"metadata": {"name": "dry"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    api.json("POST", PODS, &pod.to_string()).await;
    for uri in [
        format!("{BINDINGS}?dryRun=All"),
        format!("{PODS}/dry/binding?dryRun=All"),
    ] {
        let (status, body) = api.json("POST", &uri, &binding("dry", "node-a")).await;
        assert_eq!(status, StatusCode::CREATED, "{uri}: {body}");
        assert_eq!(body["status"], "Success");
    }
    let (_, unbound) = api.json("GET", &format!("{PODS}/dry"), "").await;
    assert_eq!(unbound["spec"].get("nodeName"), None, "{unbound}");
    let (status, _) = api
        .json(
            "POST",
            &format!("{BINDINGS}?dryRun=All"),
            &binding("web", "node-b"),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a dry run is checked as a binding is"
    );
    // Nothing but create is served on bindings.
    let (status, body) = api.json("GET", BINDINGS, "").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["reason"], "MethodNotAllowed");

    // No leader Lease yet: the scheduler and controller-manager are Unhealthy and say why;
    // the storage answers.
    let health = |list: &Value, name: &str| {
        let item = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing from {list}"));
        assert_eq!(item["conditions"][0]["type"], "Healthy");
        (
            item["conditions"][0]["status"]
                .as_str()
                .unwrap()
                .to_string(),
            item["conditions"][0]["message"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        )
    };
    let (status, list) = api.json("GET", CS, "").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["kind"], "ComponentStatusList");
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, ["scheduler", "controller-manager", "etcd-0"]);
    assert_eq!(
        health(&list, "etcd-0"),
        ("True".to_string(), "ok".to_string())
    );
    assert_eq!(
        health(&list, "scheduler"),
        (
            "False".to_string(),
            "no leader: Lease kube-system/kube-scheduler not found".to_string()
        )
    );

    // A held, freshly renewed Lease is a Healthy component; one renewed longer ago than its
    // duration is not.
    let lease = |name: &str, renewed: &str| {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name},
            "spec": {"holderIdentity": "kelp-1", "leaseDurationSeconds": 15,
                "acquireTime": renewed, "renewTime": renewed}})
        .to_string()
    };
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    let (status, body) = api
        .json("POST", LEASES, &lease("kube-scheduler", &now))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let stale = "2020-01-01T00:00:00.000000Z";
    let (status, body) = api
        .json("POST", LEASES, &lease("kube-controller-manager", stale))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, list) = api.json("GET", CS, "").await;
    assert_eq!(
        health(&list, "scheduler"),
        ("True".to_string(), "ok".to_string())
    );
    let (status, message) = health(&list, "controller-manager");
    assert_eq!(status, "False");
    assert!(
        message.starts_with("leader kelp-1 last renewed Lease kube-system/kube-controller-manager")
            && message.ends_with("longer than its 15s lease duration"),
        "{message}"
    );

    // Renewed, it is Healthy too; one component reads alone, with upstream's deprecation
    // warning.
    let renewal = json!({"spec": {"renewTime": now}});
    let (status, _, body) = api
        .call(
            "PATCH",
            &format!("{LEASES}/kube-controller-manager"),
            "application/merge-patch+json",
            "application/json",
            renewal.to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let req = Request::builder()
        .uri(format!("{CS}/controller-manager"))
        .header(header::ACCEPT, "application/json")
        .body(Body::empty())
        .unwrap();
    let resp = api.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()
            .get(header::WARNING)
            .and_then(|v| v.to_str().ok()),
        Some("299 - \"v1 ComponentStatus is deprecated in v1.19+\"")
    );
    // v1 Endpoints is deprecated since v1.33, with upstream's pointer to EndpointSlices.
    let req = Request::builder()
        .uri("/api/v1/namespaces/default/endpoints")
        .header(header::ACCEPT, "application/json")
        .body(Body::empty())
        .unwrap();
    let listed = api.app.clone().oneshot(req).await.unwrap();
    assert_eq!(listed.status(), StatusCode::OK);
    assert_eq!(
        listed
            .headers()
            .get(header::WARNING)
            .and_then(|v| v.to_str().ok()),
        Some(
            "299 - \"v1 Endpoints is deprecated in v1.33+; use discovery.k8s.io/v1 EndpointSlice\""
        )
    );
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let one: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(one["kind"], "ComponentStatus");
    assert_eq!(
        one["conditions"],
        json!([{"type": "Healthy", "status": "True", "message": "ok"}])
    );
    let (status, body) = api.json("GET", &format!("{CS}/kube-proxy"), "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["message"], "componentstatus \"kube-proxy\" not found");

    // `kubectl get cs` prints upstream's columns.
    let (_, _, table) = api
        .call(
            "GET",
            CS,
            "",
            "application/json;as=Table;g=meta.k8s.io;v=v1",
            "",
        )
        .await;
    let table: Value = serde_json::from_slice(&table).unwrap();
    let columns: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(columns, ["Name", "Status", "Message", "Error"]);
    assert_eq!(
        table["rows"][0]["cells"],
        json!(["scheduler", "Healthy", "ok", ""])
    );
}

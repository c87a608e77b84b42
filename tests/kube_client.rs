//! kube-rs, the client Kelp's own controllers will use, against `kelp server`: CRUD, label
//! selectors, optimistic concurrency, patches, the status subresource, and the watcher
//! (list+watch and streaming lists).

mod support;

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher::{self, Event};
use serde_json::json;
use support::KelpServer;

async fn client(server: &KelpServer) -> kube::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = Kubeconfig::read_from(&server.kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

fn configmap(name: &str, tier: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"tier": tier}},
        "data": {"k": "v"},
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_lists_watches_patches_and_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let server = KelpServer::start(dir.path(), &[]);
    let client = client(&server).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

    // The watcher lists, then watches; it sees everything created after it started, once.
    let mut events =
        watcher::watcher(cms.clone(), watcher::Config::default().labels("tier")).boxed();
    let first = tokio::time::timeout(Duration::from_secs(10), events.try_next())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(first, Some(Event::Init)), "{first:?}");

    let created = cms
        .create(&PostParams::default(), &configmap("front", "web"))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &configmap("back", "db"))
        .await
        .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(10), events.try_next())
            .await
            .unwrap()
            .unwrap()
        {
            // The list may or may not have run before the creates.
            Some(Event::Apply(cm) | Event::InitApply(cm)) => seen.push(cm.metadata.name.unwrap()),
            Some(_) => {}
            None => panic!("watcher ended"),
        }
    }
    // A list returns them by name, a watch by revision.
    seen.sort();
    assert_eq!(seen, ["back", "front"]);

    let web = cms
        .list(&ListParams::default().labels("tier=web"))
        .await
        .unwrap();
    assert_eq!(web.items.len(), 1);
    assert_eq!(web.items[0].metadata.name.as_deref(), Some("front"));

    // Patches of all three kinds.
    let pp = PatchParams::default();
    cms.patch("front", &pp, &Patch::Merge(json!({"data": {"a": "1"}})))
        .await
        .unwrap();
    cms.patch("front", &pp, &Patch::Strategic(json!({"data": {"b": "2"}})))
        .await
        .unwrap();
    let ops: json_patch::Patch =
        serde_json::from_value(json!([{"op": "remove", "path": "/data/k"}])).unwrap();
    let patched = cms
        .patch("front", &pp, &Patch::Json::<()>(ops))
        .await
        .unwrap();
    assert_eq!(
        patched.data.unwrap().keys().cloned().collect::<Vec<_>>(),
        ["a", "b"]
    );

    // Replacing from a stale copy is a 409 Conflict.
    let err = cms
        .replace("front", &PostParams::default(), &created)
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(status) => {
            assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"))
        }
        other => panic!("{other}"),
    }

    // Streaming lists (sendInitialEvents) end their initial events with InitDone.
    let mut streaming =
        watcher::watcher(cms.clone(), watcher::Config::default().streaming_lists()).boxed();
    let mut initial = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), streaming.try_next())
            .await
            .unwrap()
            .unwrap()
        {
            Some(Event::InitApply(cm)) => initial.push(cm.metadata.name.unwrap()),
            Some(Event::InitDone) => break,
            Some(_) => {}
            None => panic!("watcher ended"),
        }
    }
    initial.sort();
    assert_eq!(initial, ["back", "front"]);

    cms.delete("back", &DeleteParams::default()).await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events.try_next())
            .await
            .unwrap()
            .unwrap()
        {
            Some(Event::Delete(cm)) => {
                assert_eq!(cm.metadata.name.as_deref(), Some("back"));
                break;
            }
            Some(_) => {}
            None => panic!("watcher ended"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_writes_status_through_the_subresource() {
    let dir = tempfile::tempdir().unwrap();
    let server = KelpServer::start(dir.path(), &[]);
    let client = client(&server).await;
    let deployments: Api<Deployment> = Api::namespaced(client, "default");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx"}]}}},
    }))
    .unwrap();
    let created = deployments
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    let status = json!({"status": {"replicas": 2, "readyReplicas": 2, "observedGeneration": 1}});
    let patched = deployments
        .patch_status("web", &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
    assert_eq!(
        patched.status.as_ref().and_then(|s| s.ready_replicas),
        Some(2)
    );
    assert_eq!(
        patched.metadata.generation,
        Some(1),
        "status writes are not generations"
    );
    let scaled = deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    assert_eq!(scaled.metadata.generation, Some(2));
    assert_eq!(
        scaled.status.and_then(|s| s.ready_replicas),
        Some(2),
        "spec writes keep the status"
    );
}

/// Server-side apply as kube-rs controllers use it: `Patch::Apply` with a field manager,
/// conflicts between managers, `force`, and applies of status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_applies_server_side() {
    let dir = tempfile::tempdir().unwrap();
    let server = KelpServer::start(dir.path(), &[]);
    let client = client(&server).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let config = |data: serde_json::Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": data});
    let ci = PatchParams::apply("ci");
    let created = cms
        .patch("settings", &ci, &Patch::Apply(config(json!({"a": "1"}))))
        .await
        .unwrap();
    let entries = created.metadata.managed_fields.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(
        (
            entries[0].manager.as_deref(),
            entries[0].operation.as_deref()
        ),
        (Some("ci"), Some("Apply"))
    );

    let other = PatchParams::apply("other");
    let err = cms
        .patch("settings", &other, &Patch::Apply(config(json!({"a": "2"}))))
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(status) => {
            assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
            assert_eq!(
                status.message,
                "Apply failed with 1 conflict: conflict with \"ci\": .data.a"
            );
        }
        other => panic!("{other}"),
    }
    let forced = cms
        .patch(
            "settings",
            &other.clone().force(),
            &Patch::Apply(config(json!({"a": "2"}))),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.unwrap()["a"], "2");
    let managers: Vec<String> = forced
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .filter_map(|e| e.manager)
        .collect();
    assert_eq!(managers, ["other"], "ci owned only what it lost");

    // A controller applies status through the subresource; the spec's owner keeps the spec.
    let deployments: Api<Deployment> = Api::namespaced(client, "default");
    let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "api"}},
                 "template": {"metadata": {"labels": {"app": "api"}}, "spec": {"containers": [{"name": "api", "image": "api:1"}]}}}});
    deployments
        .patch("api", &ci, &Patch::Apply(d))
        .await
        .unwrap();
    let status = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api"},
        "status": {"replicas": 1, "observedGeneration": 1}});
    let with_status = deployments
        .patch_status(
            "api",
            &PatchParams::apply("controller"),
            &Patch::Apply(status),
        )
        .await
        .unwrap();
    assert_eq!(with_status.status.and_then(|s| s.replicas), Some(1));
    let entries = with_status.metadata.managed_fields.unwrap();
    let controller = entries
        .iter()
        .find(|e| e.manager.as_deref() == Some("controller"))
        .unwrap();
    assert_eq!(controller.subresource.as_deref(), Some("status"));
}

/// A raw request's status, message (or body) and `Warning` header texts.
async fn raw(
    client: &kube::Client,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> (u16, String, Vec<String>) {
    use http_body_util::BodyExt;
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(kube::client::Body::from(body.as_bytes().to_vec()))
        .unwrap();
    let resp = client.send(req).await.unwrap();
    let status = resp.status().as_u16();
    // `299 - "text"`, the text quoted with Go's escapes.
    let warnings = resp
        .headers()
        .get_all("warning")
        .iter()
        .map(|v| {
            let v = v.to_str().unwrap();
            let quoted = v.strip_prefix("299 - ").unwrap();
            serde_json::from_str::<String>(quoted).unwrap()
        })
        .collect();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let message = body["message"].as_str().unwrap_or("").to_string();
    (status, message, warnings)
}

/// Field validation of repeated and unknown fields (upstream's
/// test/integration/apiserver/field_validation_test.go bodies and expected messages): JSON and
/// YAML creates, patches, server-side apply and a custom resource with an embedded object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_validation_reports_repeated_and_unknown_fields_as_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let server = KelpServer::start(dir.path(), &[]);
    let client = client(&server).await;
    let deployments = "/apis/apps/v1/namespaces/default/deployments";
    let invalid_json = |name: &str| {
        format!(
            r#"{{"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {{"name": "dupename", "name": "{name}", "labels": {{"app": "nginx"}},
                          "unknownMeta": "metaVal"}},
            "spec": {{"unknown1": "val1", "unknownDupe": "valDupe", "unknownDupe": "valDupe2",
                "paused": true, "paused": false,
                "selector": {{"matchLabels": {{"app": "nginx"}}}},
                "template": {{"metadata": {{"labels": {{"app": "nginx"}}}},
                    "spec": {{"containers": [{{"name": "nginx", "image": "nginx:latest",
                        "unknownNested": "val1", "imagePullPolicy": "Always",
                        "imagePullPolicy": "Never"}}]}}}}}}}}"#
        )
    };
    let typed_json = [
        r#"duplicate field "metadata.name""#,
        r#"unknown field "metadata.unknownMeta""#,
        r#"unknown field "spec.unknown1""#,
        r#"unknown field "spec.unknownDupe""#,
        r#"duplicate field "spec.paused""#,
        r#"unknown field "spec.template.spec.containers[0].unknownNested""#,
        r#"duplicate field "spec.template.spec.containers[0].imagePullPolicy""#,
    ];

    // JSON: Strict refuses in document order and stores nothing; Warn (the default) creates
    // with the last of each repeated key and sends every message as a warning.
    let (status, message, _) = raw(
        &client,
        "POST",
        &format!("{deployments}?fieldValidation=Strict"),
        "application/json",
        &invalid_json("strict"),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        message,
        format!(
            "Deployment in version \"v1\" cannot be handled as a Deployment: strict decoding error: {}",
            typed_json.join(", ")
        )
    );
    let (status, _, _) = raw(&client, "GET", &format!("{deployments}/strict"), "", "").await;
    assert_eq!(status, 404, "a refused create stores nothing");
    let (status, _, warnings) = raw(
        &client,
        "POST",
        deployments,
        "application/json",
        &invalid_json("warned"),
    )
    .await;
    assert_eq!(
        (status, warnings),
        (201, typed_json.map(String::from).to_vec())
    );
    let stored: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let warned = stored.get("warned").await.unwrap();
    let spec = warned.spec.unwrap();
    assert_eq!(spec.paused, Some(false));
    assert_eq!(
        spec.template.spec.unwrap().containers[0]
            .image_pull_policy
            .as_deref(),
        Some("Never")
    );
    let (status, _, warnings) = raw(
        &client,
        "POST",
        &format!("{deployments}?fieldValidation=Ignore"),
        "application/json",
        &invalid_json("ignored"),
    )
    .await;
    assert_eq!((status, warnings.len()), (201, 0));

    // YAML: the repeated keys are one yaml.v2 error (a warning per line), then the unknown fields.
    let invalid_yaml = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: dupename\n  name: yaml\n  unknownMeta: metaVal\n  labels:\n    app: nginx\nspec:\n  unknown1: val1\n  unknownDupe: valDupe\n  unknownDupe: valDupe2\n  paused: true\n  paused: false\n  selector:\n    matchLabels:\n      app: nginx\n  template:\n    metadata:\n      labels:\n        app: nginx\n    spec:\n      containers:\n      - name: nginx\n        image: nginx:latest\n        unknownNested: val1\n        imagePullPolicy: Always\n        imagePullPolicy: Never";
    let (status, message, _) = raw(
        &client,
        "POST",
        &format!("{deployments}?fieldValidation=Strict"),
        "application/yaml",
        invalid_yaml,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        message.ends_with("strict decoding error: yaml: unmarshal errors:\n  line 5: key \"name\" already set in map\n  line 12: key \"unknownDupe\" already set in map\n  line 14: key \"paused\" already set in map\n  line 28: key \"imagePullPolicy\" already set in map, unknown field \"metadata.unknownMeta\", unknown field \"spec.template.spec.containers[0].unknownNested\", unknown field \"spec.unknown1\", unknown field \"spec.unknownDupe\""),
        "{message}"
    );
    let (status, _, warnings) = raw(
        &client,
        "POST",
        deployments,
        "application/yaml",
        invalid_yaml,
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(warnings[0], "line 5: key \"name\" already set in map");
    assert_eq!(warnings.len(), 8, "{warnings:?}");

    // Patches: the patch's repeated keys first, then the patched object's unknown fields.
    let merge = r#"{"spec": {"unknown1": "val1", "unknownDupe": "valDupe", "unknownDupe": "valDupe2",
        "paused": true, "paused": false}}"#;
    let (status, message, _) = raw(
        &client,
        "PATCH",
        &format!("{deployments}/warned?fieldValidation=Strict"),
        "application/merge-patch+json",
        merge,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        message.ends_with(r#"strict decoding error: duplicate field "spec.unknownDupe", duplicate field "spec.paused", unknown field "spec.unknown1", unknown field "spec.unknownDupe""#),
        "{message}"
    );
    let json_patch = r#"[{"op": "add", "path": "/spec/unknown1", "value": "val1", "foo": "bar"},
        {"op": "add", "path": "/spec/unknown2", "path": "/spec/unknown3", "value": "val1"}]"#;
    let (status, _, warnings) = raw(
        &client,
        "PATCH",
        &format!("{deployments}/warned"),
        "application/json-patch+json",
        json_patch,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        warnings,
        [
            r#"json patch unknown field "[0].foo""#,
            r#"json patch duplicate field "[1].path""#,
            r#"unknown field "spec.unknown1""#,
            r#"unknown field "spec.unknown3""#,
        ]
    );

    // Server-side apply: upstream's own error after the apply, a warning per line.
    let apply = r#"{"apiVersion": "apps/v1", "kind": "Deployment",
		"metadata": {"name": "applied", "labels": {"app": "nginx"}},
		"spec": {
			"paused": false,
			"paused": true,
			"selector": {"matchLabels": {"app": "nginx"}},
			"template": {
				"metadata": {"labels": {"app": "nginx"}},
				"spec": {"containers": [{"name": "nginx", "image": "nginx:latest",
					"imagePullPolicy": "Never", "imagePullPolicy": "Always"}]}}}}"#;
    let (status, message, _) = raw(
        &client,
        "PATCH",
        &format!("{deployments}/applied?fieldManager=mgr&fieldValidation=Strict"),
        "application/apply-patch+yaml",
        apply,
    )
    .await;
    assert_eq!(
        (status, message.as_str()),
        (
            400,
            "error strict decoding YAML: error converting YAML to JSON: yaml: unmarshal errors:\n  line 5: key \"paused\" already set in map\n  line 10: key \"imagePullPolicy\" already set in map"
        )
    );
    let (status, _, warnings) = raw(
        &client,
        "PATCH",
        &format!("{deployments}/applied?fieldManager=mgr"),
        "application/apply-patch+yaml",
        apply,
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(
        warnings,
        [
            "line 5: key \"paused\" already set in map",
            "line 10: key \"imagePullPolicy\" already set in map"
        ]
    );

    // A custom resource: the repeated keys first, then the unknown fields, those of an embedded
    // resource's metadata last.
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    let crd = serde_json::from_value(json!({
        "metadata": {"name": "noxus.schema.example.com"},
        "spec": {"group": "schema.example.com", "scope": "Namespaced",
            "names": {"plural": "noxus", "singular": "noxu", "kind": "Noxu", "listKind": "NoxuList"},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                "type": "object", "properties": {"spec": {"type": "object", "properties": {
                    "knownField1": {"type": "string"},
                    "embeddedObj": {"type": "object", "x-kubernetes-embedded-resource": true,
                        "properties": {"apiversion": {"type": "string"}, "kind": {"type": "string"},
                                       "metadata": {"type": "object"}}},
                    "ports": {"type": "array", "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": ["containerPort", "protocol"],
                        "items": {"type": "object", "required": ["containerPort", "protocol"],
                            "properties": {"containerPort": {"type": "integer", "format": "int32"},
                                "hostPort": {"type": "integer", "format": "int32"},
                                "name": {"type": "string"}, "protocol": {"type": "string"}}}}}}}}}}]}
    }))
    .unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let cr = r#"{"apiVersion": "schema.example.com/v1", "kind": "Noxu",
        "metadata": {"name": "dupename", "name": "cr", "unknownMeta": "metaVal"},
        "spec": {"unknown1": "val1", "unknownDupe": "valDupe", "unknownDupe": "valDupe2",
            "knownField1": "val1", "knownField1": "val2",
            "ports": [{"name": "portName", "containerPort": 8080, "protocol": "TCP",
                "hostPort": 8081, "hostPort": 8082, "unknownNested": "val"}],
            "embeddedObj": {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "my-cm", "namespace": "my-ns", "unknownEmbeddedMeta": "foo"}}}}"#;
    let noxus = "/apis/schema.example.com/v1/namespaces/default/noxus";
    let mut answer = (0, String::new(), Vec::new());
    for _ in 0..50 {
        answer = raw(
            &client,
            "POST",
            &format!("{noxus}?fieldValidation=Strict"),
            "application/json",
            cr,
        )
        .await;
        if answer.0 != 404 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(answer.0, 400, "{}", answer.1);
    assert!(
        answer.1.ends_with(r#"strict decoding error: duplicate field "metadata.name", duplicate field "spec.unknownDupe", duplicate field "spec.knownField1", duplicate field "spec.ports[0].hostPort", unknown field "metadata.unknownMeta", unknown field "spec.ports[0].unknownNested", unknown field "spec.unknown1", unknown field "spec.unknownDupe", unknown field "spec.embeddedObj.metadata.unknownEmbeddedMeta""#),
        "{}",
        answer.1
    );
    let (status, _, warnings) = raw(&client, "POST", noxus, "application/json", cr).await;
    assert_eq!((status, warnings.len()), (201, 9), "{warnings:?}");
    let resource = kube::api::ApiResource {
        group: "schema.example.com".into(),
        version: "v1".into(),
        api_version: "schema.example.com/v1".into(),
        kind: "Noxu".into(),
        plural: "noxus".into(),
    };
    let noxus: Api<kube::api::DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &resource);
    let stored = noxus.get("cr").await.unwrap();
    assert_eq!(stored.data["spec"]["knownField1"], "val2");
    assert_eq!(stored.data["spec"]["ports"][0]["hostPort"], 8082);
    assert_eq!(
        stored.data["spec"]["embeddedObj"]["metadata"],
        json!({"name": "my-cm", "namespace": "my-ns"}),
        "an embedded resource's metadata is pruned to ObjectMeta"
    );
}

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

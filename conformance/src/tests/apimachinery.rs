//! [sig-api-machinery]: server version, watchers, API chunking.

use std::time::Duration;

use anyhow::{bail, ensure};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, PodTemplate, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchParams};
use serde_json::json;

use super::tests;
use crate::framework::{Events, eventually, expect_event, expect_no_event};
use crate::{Ctx, Test};

pub fn tests() -> Vec<Test> {
    tests![
        "[sig-api-machinery] server version should find the server version" => server_version,
        "[sig-api-machinery] Watchers should observe add, update, and delete watch notifications on configmaps" => watch_add_update_delete,
        "[sig-api-machinery] Watchers should be able to start watching from a specific resource version" => watch_from_resource_version,
        "[sig-api-machinery] Watchers should be able to restart watching from the last resource version observed by the previous watch" => watch_restart,
        "[sig-api-machinery] Watchers should observe an object deletion if it stops meeting the requirements of the selector" => watch_selector_transitions,
        "[sig-api-machinery] Watchers should receive events on concurrent watches in same order" => watch_concurrent_order,
        "[sig-api-machinery] Servers with support for API chunking should return chunks of results for list calls" => chunking,
        "[sig-api-machinery] Servers with support for Table transformation should return a 406 for a backend which does not implement metadata" => table_406,
    ]
}

/// test/e2e/apimachinery/table_conversion.go: a SelfSubjectAccessReview has no Table form.
async fn table_406(ctx: Ctx) -> anyhow::Result<()> {
    let review = json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"nonResourceAttributes": {"path": "/", "verb": "get"}},
    });
    let answer = ctx
        .request(
            "POST",
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            "application/json;as=Table;v=v1;g=meta.k8s.io",
            "application/json",
            serde_json::to_vec(&review)?,
        )
        .await?;
    ensure!(
        answer.status == 406,
        "expected 406, got {} {}",
        answer.status,
        String::from_utf8_lossy(&answer.body)
    );
    Ok(())
}

/// test/e2e/apimachinery/server_version.go
async fn server_version(ctx: Ctx) -> anyhow::Result<()> {
    let version = ctx.client.apiserver_version().await?;
    let major = regex::Regex::new("[1-9]")?;
    ensure!(
        major.find(&version.major).map(|m| m.as_str()) == Some(version.major.as_str()),
        "unable to find major version in {:?}",
        version.major
    );
    let clean_minor = regex::Regex::new("[^0-9]+")?.replace_all(&version.minor, "");
    let first_digits = regex::Regex::new("[0-9]+")?
        .find(&version.minor)
        .map(|m| m.as_str().to_string());
    ensure!(
        first_digits.as_deref() == Some(clean_minor.as_ref()),
        "unable to find minor version in {:?}",
        version.minor
    );
    Ok(())
}

const WATCH_LABEL: &str = "watch-this-configmap";

/// A watch of the namespace's configmaps whose label is one of `values` (watch.go's
/// watchConfigMaps), from `rv` ("" for now).
async fn watch_configmaps(
    api: &Api<ConfigMap>,
    rv: &str,
    values: &[&str],
) -> anyhow::Result<Events<ConfigMap>> {
    let mut values = values.to_vec();
    values.sort_unstable();
    let wp = WatchParams::default().labels(&format!("{WATCH_LABEL} in ({})", values.join(",")));
    Ok(api
        .watch(&wp, if rv.is_empty() { "0" } else { rv })
        .await?
        .boxed())
}

fn labelled_configmap(name: &str, value: &str) -> anyhow::Result<ConfigMap> {
    Ok(serde_json::from_value(
        json!({"metadata": {"name": name, "labels": {WATCH_LABEL: value}}}),
    )?)
}

/// GET, change and PUT, retrying conflicts every 2s for a minute (watch.go's updateConfigMap).
async fn update_configmap(
    api: &Api<ConfigMap>,
    name: &str,
    change: impl Fn(&mut ConfigMap),
) -> anyhow::Result<ConfigMap> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut cm = api.get(name).await?;
        change(&mut cm);
        match api.replace(name, &PostParams::default(), &cm).await {
            Ok(updated) => return Ok(updated),
            Err(kube::Error::Api(e)) if e.code == 409 && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn set_data(key: &'static str, value: &'static str) -> impl Fn(&mut ConfigMap) {
    move |cm| {
        cm.data
            .get_or_insert_with(Default::default)
            .insert(key.into(), value.into());
    }
}

/// The watch of "" starts now: upstream leaves resourceVersion unset, which sends the
/// existing objects first; these tests' objects do not exist yet, so "0" is the same.
async fn watch_add_update_delete(ctx: Ctx) -> anyhow::Result<()> {
    let api: Api<ConfigMap> = ctx.namespaced();
    let (a, b) = ("multiple-watchers-A", "multiple-watchers-B");
    let mut watch_a = watch_configmaps(&api, "", &[a]).await?;
    let mut watch_b = watch_configmaps(&api, "", &[b]).await?;
    let mut watch_ab = watch_configmaps(&api, "", &[a, b]).await?;

    let pp = PostParams::default();
    let cm_a = api
        .create(&pp, &labelled_configmap("e2e-watch-test-configmap-a", a)?)
        .await?;
    expect_event(&mut watch_a, "ADDED", Some(&cm_a)).await?;
    expect_event(&mut watch_ab, "ADDED", Some(&cm_a)).await?;
    for mutation in ["1", "2"] {
        let cm = update_configmap(
            &api,
            "e2e-watch-test-configmap-a",
            set_data("mutation", mutation),
        )
        .await?;
        expect_event(&mut watch_a, "MODIFIED", Some(&cm)).await?;
        expect_event(&mut watch_ab, "MODIFIED", Some(&cm)).await?;
    }
    api.delete("e2e-watch-test-configmap-a", &DeleteParams::default())
        .await?;
    expect_event(&mut watch_a, "DELETED", None).await?;
    expect_event(&mut watch_ab, "DELETED", None).await?;

    let cm_b = api
        .create(&pp, &labelled_configmap("e2e-watch-test-configmap-b", b)?)
        .await?;
    expect_event(&mut watch_b, "ADDED", Some(&cm_b)).await?;
    expect_event(&mut watch_ab, "ADDED", Some(&cm_b)).await?;
    expect_no_event(&mut watch_a, "ADDED", Some(&cm_b), Duration::from_secs(10)).await?;
    api.delete("e2e-watch-test-configmap-b", &DeleteParams::default())
        .await?;
    expect_event(&mut watch_b, "DELETED", None).await?;
    expect_event(&mut watch_ab, "DELETED", None).await?;
    expect_no_event(&mut watch_a, "DELETED", None, Duration::from_secs(10)).await?;
    Ok(())
}

async fn watch_from_resource_version(ctx: Ctx) -> anyhow::Result<()> {
    let api: Api<ConfigMap> = ctx.namespaced();
    let (name, label) = ("e2e-watch-test-resource-version", "from-resource-version");
    api.create(&PostParams::default(), &labelled_configmap(name, label)?)
        .await?;
    let first = update_configmap(&api, name, set_data("mutation", "1")).await?;
    let second = update_configmap(&api, name, set_data("mutation", "2")).await?;
    api.delete(name, &DeleteParams::default()).await?;
    let rv = first.metadata.resource_version.clone().unwrap_or_default();
    let mut watch = watch_configmaps(&api, &rv, &[label]).await?;
    expect_event(&mut watch, "MODIFIED", Some(&second)).await?;
    expect_event(&mut watch, "DELETED", None).await?;
    Ok(())
}

async fn watch_restart(ctx: Ctx) -> anyhow::Result<()> {
    let api: Api<ConfigMap> = ctx.namespaced();
    let (name, label) = ("e2e-watch-test-watch-closed", "watch-closed-and-restarted");
    let mut watch = watch_configmaps(&api, "", &[label]).await?;
    let created = api
        .create(&PostParams::default(), &labelled_configmap(name, label)?)
        .await?;
    update_configmap(&api, name, set_data("mutation", "1")).await?;
    expect_event(&mut watch, "ADDED", Some(&created)).await?;
    let last = expect_event(&mut watch, "MODIFIED", None).await?;
    drop(watch);
    let second = update_configmap(&api, name, set_data("mutation", "2")).await?;
    let rv = last.metadata.resource_version.clone().unwrap_or_default();
    let mut restarted = watch_configmaps(&api, &rv, &[label]).await?;
    api.delete(name, &DeleteParams::default()).await?;
    expect_event(&mut restarted, "MODIFIED", Some(&second)).await?;
    expect_event(&mut restarted, "DELETED", None).await?;
    Ok(())
}

async fn watch_selector_transitions(ctx: Ctx) -> anyhow::Result<()> {
    let api: Api<ConfigMap> = ctx.namespaced();
    let (name, label) = ("e2e-watch-test-label-changed", "label-changed-and-restored");
    let mut watch = watch_configmaps(&api, "", &[label]).await?;
    let created = api
        .create(&PostParams::default(), &labelled_configmap(name, label)?)
        .await?;
    let first = update_configmap(&api, name, set_data("mutation", "1")).await?;
    let set_label = |value: &'static str| {
        move |cm: &mut ConfigMap| {
            cm.metadata
                .labels
                .get_or_insert_with(Default::default)
                .insert(WATCH_LABEL.into(), value.into());
        }
    };
    update_configmap(&api, name, set_label("wrong-value")).await?;
    expect_event(&mut watch, "ADDED", Some(&created)).await?;
    expect_event(&mut watch, "MODIFIED", Some(&first)).await?;
    expect_event(&mut watch, "DELETED", None).await?;
    let unseen = update_configmap(&api, name, set_data("mutation", "2")).await?;
    expect_no_event(
        &mut watch,
        "MODIFIED",
        Some(&unseen),
        Duration::from_secs(10),
    )
    .await?;
    let restored = update_configmap(&api, name, set_label("label-changed-and-restored")).await?;
    let third = update_configmap(&api, name, set_data("mutation", "3")).await?;
    api.delete(name, &DeleteParams::default()).await?;
    expect_event(&mut watch, "ADDED", Some(&restored)).await?;
    expect_event(&mut watch, "MODIFIED", Some(&third)).await?;
    expect_event(&mut watch, "DELETED", None).await?;
    Ok(())
}

/// A watch that re-watches from the last resourceVersion it saw when the stream ends, and
/// passes over bookmarks (client-go's RetryWatcher).
struct RetryWatcher {
    api: Api<ConfigMap>,
    rv: String,
    events: Events<ConfigMap>,
}

impl RetryWatcher {
    async fn start(api: Api<ConfigMap>, rv: String) -> anyhow::Result<Self> {
        let events = api.watch(&WatchParams::default(), &rv).await?.boxed();
        Ok(RetryWatcher { api, rv, events })
    }

    /// The next event's object resourceVersion, within 10 seconds.
    async fn next_rv(&mut self) -> anyhow::Result<String> {
        use kube::api::WatchEvent::*;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, self.events.next()).await {
                Err(_) => bail!("timed out waiting for the next event"),
                Ok(None) => {
                    self.events = self
                        .api
                        .watch(&WatchParams::default(), &self.rv)
                        .await?
                        .boxed();
                }
                Ok(Some(e)) => match e? {
                    Added(o) | Modified(o) | Deleted(o) => {
                        self.rv = o.metadata.resource_version.unwrap_or_default();
                        return Ok(self.rv.clone());
                    }
                    Bookmark(_) => {}
                    Error(e) => bail!("watch error: {e:?}"),
                },
            }
        }
    }
}

async fn watch_concurrent_order(ctx: Ctx) -> anyhow::Result<()> {
    let api: Api<ConfigMap> = ctx.namespaced();
    let list = api.list(&ListParams::default()).await?;
    let mut rv = list.metadata.resource_version.unwrap_or_default();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = {
        let (api, stop) = (api.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut created, mut updates) = (0usize, 0usize);
            let mut existing: Vec<String> = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                let op = if existing.is_empty() {
                    0
                } else {
                    rand::random_range(0..3)
                };
                match op {
                    0 => {
                        let name = format!("cm-{created}");
                        created += 1;
                        let cm: ConfigMap =
                            serde_json::from_value(json!({"metadata": {"name": name}}))?;
                        api.create(&PostParams::default(), &cm).await?;
                        existing.push(name);
                    }
                    1 => {
                        let name = existing[rand::random_range(0..existing.len())].clone();
                        updates += 1;
                        let cm: ConfigMap = serde_json::from_value(
                            json!({"metadata": {"name": name, "labels": {"mutated": updates.to_string()}}}),
                        )?;
                        api.replace(&name, &PostParams::default(), &cm).await?;
                    }
                    _ => {
                        let i = rand::random_range(0..existing.len());
                        let name = existing.swap_remove(i);
                        api.delete(&name, &DeleteParams::default()).await?;
                    }
                }
            }
            anyhow::Ok(())
        })
    };
    let result = async {
        let mut watchers: Vec<RetryWatcher> = Vec::new();
        for _ in 0..100 {
            watchers.push(RetryWatcher::start(api.clone(), rv.clone()).await?);
            rv = watchers[0].next_rv().await?;
            for w in &mut watchers[1..] {
                let got = w.next_rv().await?;
                ensure!(
                    got == rv,
                    "resource version mismatch, expected {rv} but got {got}"
                );
            }
        }
        anyhow::Ok(())
    }
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    producer.await??;
    result
}

/// test/e2e/apimachinery/chunking.go
async fn chunking(ctx: Ctx) -> anyhow::Result<()> {
    let api: Api<PodTemplate> = ctx.namespaced();
    const TOTAL: usize = 400;
    futures::stream::iter(0..TOTAL)
        .map(|i| {
            let api = api.clone();
            async move {
                let t: PodTemplate = serde_json::from_value(json!({
                    "metadata": {"name": format!("template-{i:04}")},
                    "template": {"spec": {"containers": [{"name": "test", "image": "test2"}]}},
                }))?;
                let mut last = None;
                for _ in 0..4 {
                    match api.create(&PostParams::default(), &t).await {
                        Ok(_) => return anyhow::Ok(()),
                        Err(e) => last = Some(e),
                    }
                }
                Err(anyhow::anyhow!("creating template-{i:04}: {last:?}"))
            }
        })
        .buffer_unordered(20)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<()>>>()?;
    for _ in 0..3 {
        let (mut found, mut token, mut first_rv) = (0usize, None::<String>, None::<String>);
        loop {
            let mut lp = ListParams::default().limit(17);
            if let Some(t) = &token {
                lp = lp.continue_token(t);
            }
            let page = api.list(&lp).await?;
            ensure!(
                page.items.len() <= 17,
                "a page of {} items",
                page.items.len()
            );
            let rv = page.metadata.resource_version.clone();
            match &first_rv {
                None => first_rv = rv,
                Some(first) => ensure!(
                    rv.as_ref() == Some(first),
                    "pages at different resourceVersions"
                ),
            }
            let remaining = page.metadata.remaining_item_count;
            let cont = page.metadata.continue_.clone().filter(|c| !c.is_empty());
            match &cont {
                None => ensure!(remaining.is_none(), "remainingItemCount on the last page"),
                Some(_) => {
                    let r = remaining.ok_or_else(|| anyhow::anyhow!("no remainingItemCount"))?;
                    ensure!(
                        r as usize + page.items.len() + found == TOTAL,
                        "remainingItemCount {r} with {found} found and {} on the page",
                        page.items.len()
                    );
                }
            }
            for item in &page.items {
                let want = format!("template-{found:04}");
                ensure!(
                    item.metadata.name.as_deref() == Some(want.as_str()),
                    "expected {want}, got {:?}",
                    item.metadata.name
                );
                found += 1;
            }
            match cont {
                Some(c) => token = Some(c),
                None => break,
            }
        }
        ensure!(found == TOTAL, "found {found} of {TOTAL}");
    }
    let all = api
        .list(&ListParams::default().limit(TOTAL as u32 + 1))
        .await?;
    ensure!(
        all.items.len() == TOTAL,
        "{} items in one page",
        all.items.len()
    );
    Ok(())
}

/// test/e2e/apimachinery/namespace.go: the [Serial] namespace tests.
pub(super) fn namespace_tests() -> Vec<Test> {
    tests![
        "[sig-api-machinery] Namespaces [Serial] should patch a Namespace" => namespace_patch,
        "[sig-api-machinery] Namespaces [Serial] should apply an update to a Namespace" => namespace_update,
        "[sig-api-machinery] Namespaces [Serial] should apply changes to a namespace status" => namespace_status,
        "[sig-api-machinery] Namespaces [Serial] should apply a finalizer to a Namespace" => namespace_finalizer,
        "[sig-api-machinery] OrderedNamespaceDeletion namespace deletion should delete pod first" => ordered_namespace_deletion,
    ]
}

/// namespace.go ensurePodsAreRemovedFirstInOrderedNamespaceDeletion: a pod with a finalizer
/// holds back the deletion of everything else in its namespace (the ConfigMap stays, not
/// even marked), until the finalizer goes; then the namespace goes. The waits are upstream's
/// DefaultNamespaceDeletionTimeout (10 minutes) cut to 60 s.
async fn ordered_namespace_deletion(ctx: Ctx) -> anyhow::Result<()> {
    const WAIT: Duration = Duration::from_secs(60);
    let namespaces: Api<Namespace> = ctx.cluster();
    // Creating a test namespace
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": ctx.unique("nsdeletetest")}}))?;
    let created = namespaces.create(&PostParams::default(), &ns).await?;
    let ns = created.metadata.name.clone().unwrap_or_default();
    let result = ordered_deletion_in(&ctx, &ns, WAIT).await;
    if result.is_err() {
        // Let the namespace go whatever failed.
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
        let _ = pods
            .patch(
                "test-pod",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": null}})),
            )
            .await;
        let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
    }
    result
}

async fn ordered_deletion_in(ctx: &Ctx, ns: &str, wait: Duration) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = ctx.cluster();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    // Waiting for a default service account to be provisioned in namespace
    let accounts: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), ns);
    eventually(wait, "the default service account", || async {
        Ok(accounts.get_opt("default").await?.map(|_| ()))
    })
    .await?;
    // Creating a pod with finalizer in the namespace
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "test-pod", "finalizers": ["e2e.example.com/finalizer"]},
        "spec": {"containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10"}]},
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    // Waiting for the pod to have running status
    eventually(wait, "the pod to be running", || async {
        let pod = pods.get("test-pod").await?;
        let phase = pod.status.and_then(|s| s.phase).unwrap_or_default();
        Ok((phase == "Running").then_some(()))
    })
    .await?;
    let config_map: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "test-configmap"},
        "data": {"key": "value"},
    }))?;
    config_maps
        .create(&PostParams::default(), &config_map)
        .await?;
    // Deleting the namespace
    namespaces.delete(ns, &DeleteParams::default()).await?;
    // wait until namespace controller had time to process
    eventually(
        wait,
        "the namespace controller to process the namespace",
        || async {
            let Some(got) = namespaces.get_opt(ns).await? else {
                bail!("namespace {ns} was deleted unexpectedly");
            };
            let status = got.status.unwrap_or_default();
            let processed = status.phase.as_deref() == Some("Terminating")
                && status
                    .conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "NamespaceDeletionContentFailure");
            Ok(processed.then_some(()))
        },
    )
    .await?;
    // the pod should be deleted before processing deletion for other resources
    eventually(
        wait,
        "the pod to be deleted before the configmap",
        || async {
            let Some(cm) = config_maps.get_opt("test-configmap").await? else {
                bail!("configmap \"test-configmap\" should still exist in namespace {ns:?}");
            };
            ensure!(
                cm.metadata.deletion_timestamp.is_none(),
                "configmap \"test-configmap\" is being deleted while the pod is left"
            );
            let Some(pod) = pods.get_opt("test-pod").await? else {
                bail!("failed to get pod \"test-pod\" in namespace {ns:?}");
            };
            Ok(pod.metadata.deletion_timestamp.is_some().then_some(()))
        },
    )
    .await?;
    // Removing finalizer from pod
    crate::framework::retry_on_conflict(|| async {
        let mut pod = pods.get("test-pod").await?;
        pod.metadata.finalizers = Some(Vec::new());
        pods.replace("test-pod", &PostParams::default(), &pod).await
    })
    .await?;
    // Waiting for the pod to not be present in the namespace
    eventually(wait, "the pod to be gone", || async {
        Ok(pods.get_opt("test-pod").await?.is_none().then_some(()))
    })
    .await?;
    // Waiting for the namespace to be removed.
    eventually(wait, "the namespace to be removed", || async {
        Ok(namespaces.get_opt(ns).await?.is_none().then_some(()))
    })
    .await
}

fn rv(o: &impl kube::Resource) -> anyhow::Result<u128> {
    Ok(o.meta()
        .resource_version
        .as_deref()
        .unwrap_or("")
        .parse::<u128>()?)
}

/// A namespace of the test's own besides its framework namespace, deleted after `body`.
async fn with_namespace<F, Fut>(ctx: &Ctx, base: &str, body: F) -> anyhow::Result<()>
where
    F: FnOnce(Namespace) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let api: Api<Namespace> = ctx.cluster();
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": ctx.unique(base)}}))?;
    let created = api.create(&PostParams::default(), &ns).await?;
    let name = created.metadata.name.clone().unwrap_or_default();
    let result = body(created).await;
    let _ = api.delete(&name, &DeleteParams::default()).await;
    result
}

async fn namespace_patch(ctx: Ctx) -> anyhow::Result<()> {
    let api: Api<Namespace> = ctx.cluster();
    with_namespace(&ctx, "nspatchtest", |created| async move {
        let name = created.metadata.name.clone().unwrap_or_default();
        let patched = api
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Strategic(json!({"metadata": {"labels": {"testLabel": "testValue"}}})),
            )
            .await?;
        ensure!(
            rv(&patched)? > rv(&created)?,
            "the resourceVersion did not increase"
        );
        let got = api.get(&name).await?;
        ensure!(
            got.metadata
                .labels
                .unwrap_or_default()
                .get("testLabel")
                .map(String::as_str)
                == Some("testValue"),
            "namespace not patched"
        );
        Ok(())
    })
    .await
}

async fn namespace_update(ctx: Ctx) -> anyhow::Result<()> {
    let api: Api<Namespace> = ctx.cluster();
    let mut ns = api.get(&ctx.namespace).await?;
    ns.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert(ctx.namespace.clone(), "updated".into());
    let updated = api
        .replace(&ctx.namespace, &PostParams::default(), &ns)
        .await?;
    ensure!(
        updated
            .metadata
            .labels
            .unwrap_or_default()
            .get(&ctx.namespace)
            .map(String::as_str)
            == Some("updated"),
        "the label was not updated"
    );
    Ok(())
}

async fn namespace_status(ctx: Ctx) -> anyhow::Result<()> {
    let api: Api<Namespace> = ctx.cluster();
    let ns = &ctx.namespace;
    let status: Namespace = ctx
        .get_json(&format!("/api/v1/namespaces/{ns}/status"))
        .await?;
    ensure!(
        status.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Active"),
        "the namespace is not Active"
    );
    let patch = json!({"metadata": {"annotations": {"e2e-patched-ns-status": ns}},
        "status": {"conditions": [{"type": "StatusPatch", "status": "True", "lastTransitionTime": null,
            "reason": "E2E", "message": "Patched by an e2e test"}]}});
    let patched = api
        .patch_status(ns, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    ensure!(
        patched
            .metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .get("e2e-patched-ns-status")
            == Some(ns),
        "the status patch did not annotate the namespace"
    );
    let last = patched
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.last())
        .cloned();
    ensure!(
        last.as_ref().and_then(|c| c.reason.as_deref()) == Some("E2E")
            && last.as_ref().and_then(|c| c.message.as_deref()) == Some("Patched by an e2e test"),
        "the patched condition is missing: {last:?}"
    );
    let mut current: Namespace = ctx
        .get_json(&format!("/api/v1/namespaces/{ns}/status"))
        .await?;
    let conditions = current
        .status
        .get_or_insert_with(Default::default)
        .conditions
        .get_or_insert_with(Default::default);
    conditions.push(serde_json::from_value(
        json!({"type": "StatusUpdate", "status": "True",
        "reason": "E2E", "message": "Updated by an e2e test"}),
    )?);
    let updated = api
        .replace_status(ns, &PostParams::default(), &current)
        .await?;
    let last = updated
        .status
        .and_then(|s| s.conditions)
        .and_then(|c| c.last().cloned());
    ensure!(
        last.as_ref().map(|c| c.type_.as_str()) == Some("StatusUpdate")
            && last.as_ref().and_then(|c| c.message.as_deref()) == Some("Updated by an e2e test"),
        "the updated condition is missing: {last:?}"
    );
    Ok(())
}

async fn namespace_finalizer(ctx: Ctx) -> anyhow::Result<()> {
    const FAKE: &str = "e2e.example.com/fakeFinalizer";
    let api: Api<Namespace> = ctx.cluster();
    let finalize = |ns: Namespace| {
        let ctx = ctx.clone();
        async move {
            let name = ns.metadata.name.clone().unwrap_or_default();
            let raw = ctx
                .request(
                    "PUT",
                    &format!("/api/v1/namespaces/{name}/finalize"),
                    "application/json",
                    "application/json",
                    serde_json::to_vec(&ns)?,
                )
                .await?;
            ensure!(
                raw.status == 200,
                "finalize: {} {}",
                raw.status,
                String::from_utf8_lossy(&raw.body)
            );
            anyhow::Ok(serde_json::from_slice::<Namespace>(&raw.body)?)
        }
    };
    with_namespace(&ctx, "e2e-ns", |created| async move {
        let name = created.metadata.name.clone().unwrap_or_default();
        let mut ns = api.get(&name).await?;
        ns.spec
            .get_or_insert_with(Default::default)
            .finalizers
            .get_or_insert_with(Default::default)
            .push(FAKE.into());
        let with = finalize(ns).await?;
        let finalizers = with.spec.and_then(|s| s.finalizers).unwrap_or_default();
        ensure!(
            finalizers.iter().any(|f| f == FAKE),
            "Finalizer {FAKE:?} was not found in {finalizers:?}"
        );
        let mut ns = api.get(&name).await?;
        if let Some(f) = ns.spec.as_mut().and_then(|s| s.finalizers.as_mut()) {
            f.retain(|f| f != FAKE);
        }
        let without = finalize(ns).await?;
        let finalizers = without.spec.and_then(|s| s.finalizers).unwrap_or_default();
        ensure!(
            !finalizers.iter().any(|f| f == FAKE),
            "Finalizer {FAKE:?} was not removed"
        );
        Ok(())
    })
    .await
}

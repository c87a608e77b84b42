//! [sig-node], [sig-storage], [sig-scheduling], [sig-auth], [sig-instrumentation] API tests:
//! ConfigMaps, Secrets, Leases, PodTemplates, LimitRanges, ServiceAccounts and Events.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Event, LimitRange, Namespace, PodTemplate, Secret, ServiceAccount,
};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchParams};
use serde_json::json;

use super::tests;
use crate::framework::from;
use crate::framework::{api_error, eventually};
use crate::{Ctx, Test};

pub fn tests() -> Vec<Test> {
    tests![
        "[sig-node] ConfigMap should run through a ConfigMap lifecycle" => configmap_lifecycle,
        "[sig-node] ConfigMap should update ConfigMap successfully" => configmap_update,
        "[sig-node] ConfigMap should fail to create ConfigMap with empty key" => configmap_empty_key,
        "[sig-storage] ConfigMap should be immutable if `immutable` field is set" => configmap_immutable,
        "[sig-node] Secrets should patch a secret" => secret_patch,
        "[sig-node] Secrets should fail to create secret due to empty secret key" => secret_empty_key,
        "[sig-storage] Secrets should be immutable if `immutable` field is set" => secret_immutable,
        "[sig-node] Lease lease API should be available" => lease_api,
        "[sig-node] PodTemplates should run the lifecycle of PodTemplates" => podtemplate_lifecycle,
        "[sig-node] PodTemplates should delete a collection of pod templates" => podtemplate_collection,
        "[sig-node] PodTemplates should replace a pod template" => podtemplate_replace,
        "[sig-scheduling] LimitRange should list, patch and delete a LimitRange by collection" => limitrange_collection,
        "[sig-auth] ServiceAccounts should run through the lifecycle of a ServiceAccount" => serviceaccount_lifecycle,
        "[sig-auth] ServiceAccounts should update a ServiceAccount" => serviceaccount_update,
        "[sig-instrumentation] Events should manage the lifecycle of an event" => event_lifecycle,
        "[sig-instrumentation] Events should delete a collection of events" => event_collection,
        "[sig-instrumentation] Events API should ensure that an event can be fetched, patched, deleted, and listed" => events_api_lifecycle,
        "[sig-instrumentation] Events API should delete a collection of events" => events_api_collection,
    ]
}

fn uuid() -> String {
    format!(
        "{:08x}-{:04x}-{:04x}",
        rand::random::<u32>(),
        rand::random::<u16>(),
        rand::random::<u16>()
    )
}

fn strategic(v: serde_json::Value) -> Patch<serde_json::Value> {
    Patch::Strategic(v)
}

fn rv_of(m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> anyhow::Result<u128> {
    m.resource_version
        .as_deref()
        .unwrap_or("")
        .parse::<u128>()
        .context("resourceVersion is not a non-negative integer")
}

/// GET, change, PUT; retried on conflicts (client-go's RetryOnConflict).
async fn retry_update<K, F>(api: &Api<K>, name: &str, change: F) -> anyhow::Result<K>
where
    K: Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
    F: Fn(&mut K),
{
    for _ in 0..5 {
        let mut obj = api.get(name).await?;
        change(&mut obj);
        match api.replace(name, &PostParams::default(), &obj).await {
            Ok(o) => return Ok(o),
            Err(kube::Error::Api(e)) if e.code == 409 => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Err(e) => return Err(e.into()),
        }
    }
    bail!("conflicts on every retry")
}

/// test/e2e/common/node/configmap.go
async fn configmap_lifecycle(ctx: Ctx) -> anyhow::Result<()> {
    let api: Api<ConfigMap> = ctx.namespaced();
    let name = format!("test-configmap{}", uuid());
    let cm = from(
        json!({"metadata": {"name": name, "labels": {"test-configmap-static": "true"}},
        "data": {"valueName": "value"}}),
    )?;
    api.create(&PostParams::default(), &cm).await?;
    let got = api.get(&name).await?;
    ensure!(
        got.data
            .as_ref()
            .and_then(|d| d.get("valueName"))
            .map(String::as_str)
            == Some("value")
    );
    ensure!(
        got.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("test-configmap-static"))
            .map(String::as_str)
            == Some("true")
    );
    api.patch(
        &name,
        &PatchParams::default(),
        &strategic(json!({"metadata": {"labels": {"test-configmap": "patched"}}, "data": {"valueName": "value1"}})),
    )
    .await?;
    let all: Api<ConfigMap> = ctx.all();
    let found = all
        .list(&ListParams::default().labels("test-configmap=patched"))
        .await?
        .items
        .into_iter()
        .any(|c| {
            let labels = c.metadata.labels.clone().unwrap_or_default();
            c.metadata.name.as_deref() == Some(&name)
                && c.metadata.namespace.as_deref() == Some(&ctx.namespace)
                && labels.get("test-configmap-static").map(String::as_str) == Some("true")
                && labels.get("test-configmap").map(String::as_str) == Some("patched")
                && c.data
                    .as_ref()
                    .and_then(|d| d.get("valueName"))
                    .map(String::as_str)
                    == Some("value1")
        });
    ensure!(
        found,
        "failed to find ConfigMap {}/{name} by label selector",
        ctx.namespace
    );
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("test-configmap-static=true"),
    )
    .await?;
    let left = api
        .list(&ListParams::default().labels("test-configmap-static=true"))
        .await?;
    ensure!(
        left.items.is_empty(),
        "ConfigMap is still present after being deleted by collection"
    );
    Ok(())
}

async fn configmap_update(ctx: Ctx) -> anyhow::Result<()> {
    let api: Api<ConfigMap> = ctx.namespaced();
    let name = format!("configmap-test-{}", uuid());
    let mut cm: ConfigMap = from(json!({"metadata": {"name": name},
        "data": {"data-1": "value-1", "data-2": "value-2", "data-3": "value-3"}}))?;
    api.create(&PostParams::default(), &cm).await?;
    cm.data = Some(BTreeMap::from([("data".to_string(), "value".to_string())]));
    api.replace(&name, &PostParams::default(), &cm).await?;
    let got = api.get(&name).await?;
    ensure!(
        got.data == Some(BTreeMap::from([("data".to_string(), "value".to_string())])),
        "data is {:?}",
        got.data
    );
    Ok(())
}

async fn configmap_empty_key(ctx: Ctx) -> anyhow::Result<()> {
    let api: Api<ConfigMap> = ctx.namespaced();
    let cm = from(
        json!({"metadata": {"name": format!("configmap-test-emptykey-{}", uuid())}, "data": {"": "value-1"}}),
    )?;
    api_error(api.create(&PostParams::default(), &cm).await)?;
    Ok(())
}

/// The immutable-field checks that ConfigMaps and Secrets share (common/storage).
async fn immutable<K>(
    api: Api<K>,
    obj: K,
    set: fn(&mut K, &str, &str),
    immutable: fn(&mut K, bool),
    is_immutable: fn(&K) -> bool,
) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let pp = PostParams::default();
    let mut cur = api.create(&pp, &obj).await?;
    set(&mut cur, "data-4", "value-4");
    let mut cur = api.replace("immutable", &pp, &cur).await?;
    immutable(&mut cur, true);
    let mut cur = api.replace("immutable", &pp, &cur).await?;
    set(&mut cur, "data-5", "value-5");
    let e = api_error(api.replace("immutable", &pp, &cur).await)?;
    ensure!(
        e.code == 422,
        "expected 'invalid' as error, got instead: {e:?}"
    );
    let mut cur = api.get("immutable").await?;
    ensure!(is_immutable(&cur), "immutable is not set");
    immutable(&mut cur, false);
    let e = api_error(api.replace("immutable", &pp, &cur).await)?;
    ensure!(
        e.code == 422,
        "expected 'invalid' as error, got instead: {e:?}"
    );
    let mut cur = api.get("immutable").await?;
    cur.meta_mut().labels = Some(BTreeMap::from([(
        "label1".to_string(),
        "value1".to_string(),
    )]));
    api.replace("immutable", &pp, &cur).await?;
    api.delete("immutable", &DeleteParams::default()).await?;
    Ok(())
}

async fn configmap_immutable(ctx: Ctx) -> anyhow::Result<()> {
    let cm = from(json!({"metadata": {"name": "immutable"},
        "data": {"data-1": "value-1", "data-2": "value-2", "data-3": "value-3"}}))?;
    immutable::<ConfigMap>(
        ctx.namespaced(),
        cm,
        |c, k, v| {
            c.data
                .get_or_insert_with(Default::default)
                .insert(k.into(), v.into());
        },
        |c, i| c.immutable = Some(i),
        |c| c.immutable == Some(true),
    )
    .await
}

async fn secret_immutable(ctx: Ctx) -> anyhow::Result<()> {
    let s = from(json!({"metadata": {"name": "immutable"},
        "stringData": {"data-1": "value-1\n", "data-2": "value-2\n", "data-3": "value-3\n"}}))?;
    immutable::<Secret>(
        ctx.namespaced(),
        s,
        |s, k, v| {
            s.data
                .get_or_insert_with(Default::default)
                .insert(k.into(), ByteString(format!("{v}\n").into_bytes()));
        },
        |s, i| s.immutable = Some(i),
        |s| s.immutable == Some(true),
    )
    .await
}

/// test/e2e/common/node/secrets.go
async fn secret_patch(ctx: Ctx) -> anyhow::Result<()> {
    let api: Api<Secret> = ctx.namespaced();
    let name = format!("test-secret-{}", uuid());
    let s: Secret = from(
        json!({"metadata": {"name": name, "labels": {"testsecret-constant": "true"}},
        "data": {"key": "dmFsdWU="}, "type": "Opaque"}),
    )?;
    let created = api.create(&PostParams::default(), &s).await?;
    let created_rv = rv_of(&created.metadata)?;
    let all: Api<Secret> = ctx.all();
    let listed = all
        .list(&ListParams::default().labels("testsecret-constant=true"))
        .await?;
    ensure!(!listed.items.is_empty(), "no secrets found");
    ensure!(
        listed
            .items
            .iter()
            .any(|s| s.metadata.name.as_deref() == Some(&name)
                && s.metadata.namespace.as_deref() == Some(&ctx.namespace)),
        "unable to find secret {}/{name} by name",
        ctx.namespace
    );
    // Go marshals the base64 of "value1" as bytes: base64 twice on the wire.
    api.patch(
        &name,
        &PatchParams::default(),
        &strategic(json!({"data": {"key": "ZG1Gc2RXVXg="}, "metadata": {"labels": {"testsecret": "true"}}})),
    )
    .await?;
    let got = api.get(&name).await?;
    ensure!(
        rv_of(&got.metadata)? > created_rv,
        "the resourceVersion did not increase"
    );
    let bytes = got
        .data
        .as_ref()
        .and_then(|d| d.get("key"))
        .map(|b| b.0.clone())
        .unwrap_or_default();
    use base64::Engine;
    let decoded = base64::engine::general_purpose::STANDARD.decode(bytes)?;
    ensure!(
        decoded == b"value1",
        "found secret, but the data wasn't updated from the patch"
    );
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("testsecret=true"),
    )
    .await?;
    let listed = all
        .list(&ListParams::default().labels("testsecret-constant=true"))
        .await?;
    ensure!(
        !listed
            .items
            .iter()
            .any(|s| s.metadata.name.as_deref() == Some(&name)
                && s.metadata.namespace.as_deref() == Some(&ctx.namespace)),
        "secret {}/{name} was not deleted successfully",
        ctx.namespace
    );
    Ok(())
}

async fn secret_empty_key(ctx: Ctx) -> anyhow::Result<()> {
    let api: Api<Secret> = ctx.namespaced();
    let s = from(
        json!({"metadata": {"name": format!("secret-emptykey-test-{}", uuid())}, "data": {"": "dmFsdWUtMQo="}}),
    )?;
    api_error(api.create(&PostParams::default(), &s).await)?;
    Ok(())
}

fn lease_spec(
    holder: &str,
    duration: i32,
    transitions: i32,
    acquire: &str,
    renew: &str,
) -> serde_json::Value {
    json!({"holderIdentity": holder, "leaseDurationSeconds": duration, "leaseTransitions": transitions,
        "acquireTime": format!("0001-01-01T00:{acquire}.000000Z"), "renewTime": format!("0001-01-01T00:{renew}.000000Z")})
}

/// test/e2e/common/node/lease.go
async fn lease_api(ctx: Ctx) -> anyhow::Result<()> {
    let api: Api<Lease> = ctx.namespaced();
    let spec = lease_spec("holder", 30, 0, "00:02", "00:05");
    let created = api
        .create(
            &PostParams::default(),
            &from(json!({"metadata": {"name": "lease"}, "spec": spec}))?,
        )
        .await?;
    let created_rv = rv_of(&created.metadata)?;
    let same = |lease: &Lease, want: &serde_json::Value| -> anyhow::Result<()> {
        let got = serde_json::to_value(&lease.spec)?;
        let want: k8s_openapi::api::coordination::v1::LeaseSpec =
            serde_json::from_value(want.clone())?;
        ensure!(
            lease.spec.as_ref() == Some(&want),
            "lease spec {got} is not {want:?}"
        );
        Ok(())
    };
    same(&api.get("lease").await?, &spec)?;
    let updated_spec = lease_spec("holder2", 30, 1, "00:20", "00:50");
    let mut update = created.clone();
    update.spec = Some(serde_json::from_value(updated_spec.clone())?);
    api.replace("lease", &PostParams::default(), &update)
        .await?;
    same(&api.get("lease").await?, &updated_spec)?;
    let patched_spec = lease_spec("holder3", 60, 2, "00:50", "01:10");
    api.patch(
        "lease",
        &PatchParams::default(),
        &strategic(json!({"spec": patched_spec})),
    )
    .await?;
    let patched = api.get("lease").await?;
    same(&patched, &patched_spec)?;
    ensure!(
        rv_of(&patched.metadata)? > created_rv,
        "the resourceVersion did not increase"
    );
    api.create(
        &PostParams::default(),
        &from(json!({"metadata": {"name": "lease2", "labels": {"deletecollection": "true"}}, "spec": spec}))?,
    )
    .await?;
    ensure!(
        api.list(&ListParams::default()).await?.items.len() == 2,
        "expected 2 leases"
    );
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("deletecollection=true"),
    )
    .await?;
    ensure!(
        api.list(&ListParams::default()).await?.items.len() == 1,
        "expected 1 lease"
    );
    api.delete("lease", &DeleteParams::default()).await?;
    let e = api_error(api.get("lease").await)?;
    ensure!(e.code == 404, "expected IsNotFound error, got {e:?}");
    ctx.all::<Lease>().list(&ListParams::default()).await?;
    Ok(())
}

/// test/e2e/common/node/podtemplates.go
async fn podtemplate_lifecycle(ctx: Ctx) -> anyhow::Result<()> {
    let api: Api<PodTemplate> = ctx.namespaced();
    let all: Api<PodTemplate> = ctx.all();
    let selector = ListParams::default().labels("podtemplate-static=true");
    ensure!(
        all.list(&selector).await?.items.is_empty(),
        "pod templates exist before the test"
    );
    let name = format!("nginx-pod-template-{}", uuid());
    api.create(
        &PostParams::default(),
        &from(
            json!({"metadata": {"name": name, "labels": {"podtemplate-static": "true"}},
        "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}]}}}),
        )?,
    )
    .await?;
    let got = api.get(&name).await?;
    ensure!(got.metadata.name.as_deref() == Some(name.as_str()));
    let got_rv = rv_of(&got.metadata)?;
    let patched = api
        .patch(
            &name,
            &PatchParams::default(),
            &strategic(json!({"metadata": {"labels": {"podtemplate": "patched"}}})),
        )
        .await?;
    ensure!(
        rv_of(&patched.metadata)? > got_rv,
        "the resourceVersion did not increase"
    );
    let got = api.get(&name).await?;
    ensure!(
        got.metadata
            .labels
            .unwrap_or_default()
            .get("podtemplate")
            .map(String::as_str)
            == Some("patched"),
        "failed to patch template, new label not found"
    );
    api.delete(&name, &DeleteParams::default()).await?;
    ensure!(
        all.list(&selector).await?.items.is_empty(),
        "the pod template is still listed"
    );
    Ok(())
}

async fn podtemplate_collection(ctx: Ctx) -> anyhow::Result<()> {
    let api: Api<PodTemplate> = ctx.namespaced();
    for i in 1..=3 {
        api.create(&PostParams::default(), &from(json!({"metadata": {"name": format!("test-podtemplate-{i}"), "labels": {"podtemplate-set": "true"}},
            "template": {"spec": {"containers": [{"name": "token-test", "image": "agnhost"}]}}}))?).await?;
    }
    let selector = ListParams::default().labels("podtemplate-set=true");
    ensure!(
        api.list(&selector).await?.items.len() == 3,
        "expected 3 pod templates"
    );
    api.delete_collection(&DeleteParams::default(), &selector)
        .await?;
    eventually(
        Duration::from_secs(60),
        "the pod templates to go",
        || async { Ok(api.list(&selector).await?.items.is_empty().then_some(())) },
    )
    .await
}

async fn podtemplate_replace(ctx: Ctx) -> anyhow::Result<()> {
    let api: Api<PodTemplate> = ctx.namespaced();
    let name = ctx.unique("podtemplate");
    api.create(
        &PostParams::default(),
        &from(json!({"metadata": {"name": name},
        "template": {"spec": {"containers": [{"name": "e2e-test", "image": "agnhost"}]}}}))?,
    )
    .await?;
    let updated = retry_update(&api, &name, |t: &mut PodTemplate| {
        t.metadata.annotations = Some(BTreeMap::from([(
            "updated".to_string(),
            "true".to_string(),
        )]));
    })
    .await?;
    ensure!(
        updated
            .metadata
            .annotations
            .unwrap_or_default()
            .get("updated")
            .map(String::as_str)
            == Some("true"),
        "the annotation is missing"
    );
    Ok(())
}

/// test/e2e/scheduling/limit_range.go
async fn limitrange_collection(ctx: Ctx) -> anyhow::Result<()> {
    let name = ctx.unique("e2e-limitrange");
    let limits = |min: serde_json::Value| {
        json!([{"type": "Container", "min": min,
            "max": {"cpu": "500m", "memory": "500Mi", "ephemeral-storage": "500Gi"},
            "default": {"cpu": "500m", "memory": "500Mi", "ephemeral-storage": "500Gi"},
            "defaultRequest": {"cpu": "100m", "memory": "200Mi", "ephemeral-storage": "200Gi"},
            "maxLimitRequestRatio": {}}])
    };
    let lr: LimitRange = from(
        json!({"metadata": {"name": name, "labels": {"e2e-test": name, name.clone(): "created"}},
        "spec": {"limits": limits(json!({"cpu": "50m", "memory": "100Mi", "ephemeral-storage": "100Gi"}))}}),
    )?;
    let api: Api<LimitRange> = ctx.namespaced();
    let created = api.create(&PostParams::default(), &lr).await?;
    let created_rv = rv_of(&created.metadata)?;
    // A second namespace with the same LimitRange.
    let namespaces: Api<Namespace> = ctx.cluster();
    let other = ctx.unique(&name);
    namespaces
        .create(
            &PostParams::default(),
            &from(json!({"metadata": {"name": other}}))?,
        )
        .await?;
    let result = async {
        Api::<LimitRange>::namespaced(ctx.client.clone(), &other)
            .create(&PostParams::default(), &lr)
            .await?;
        let all: Api<LimitRange> = ctx.all();
        let by_test = ListParams::default().labels(&format!("e2e-test={name}"));
        ensure!(
            all.list(&by_test).await?.items.len() == 2,
            "expected 2 LimitRanges"
        );
        let min = json!({"cpu": "9m", "memory": "49Mi", "ephemeral-storage": "49Gi"});
        let patched = api
            .patch(
                &name,
                &PatchParams::default(),
                &strategic(json!({"metadata": {"labels": {name.clone(): "patched"}},
                "spec": {"limits": limits(min.clone())}})),
            )
            .await?;
        ensure!(
            patched
                .metadata
                .labels
                .clone()
                .unwrap_or_default()
                .get(&name)
                .map(String::as_str)
                == Some("patched")
        );
        let got_min = serde_json::to_value(
            patched
                .spec
                .as_ref()
                .and_then(|s| s.limits.first())
                .map(|l| &l.min),
        )?;
        ensure!(got_min == min, "min is {got_min}, not {min}");
        ensure!(
            rv_of(&patched.metadata)? > created_rv,
            "the resourceVersion did not increase"
        );
        let by_patch = ListParams::default().labels(&format!("{name}=patched"));
        api.delete_collection(&DeleteParams::default(), &by_patch)
            .await?;
        eventually(
            Duration::from_secs(10),
            "the patched LimitRange to go",
            || async { Ok(api.list(&by_patch).await?.items.is_empty().then_some(())) },
        )
        .await?;
        let left = all.list(&by_test).await?.items;
        ensure!(
            left.len() == 1,
            "expected 1 LimitRange left, found {}",
            left.len()
        );
        ensure!(left[0].metadata.namespace.as_deref() == Some(other.as_str()));
        anyhow::Ok(())
    }
    .await;
    let _ = namespaces.delete(&other, &DeleteParams::default()).await;
    result
}

/// test/e2e/auth/service_accounts.go
async fn serviceaccount_lifecycle(ctx: Ctx) -> anyhow::Result<()> {
    use kube::api::WatchEvent;
    let api: Api<ServiceAccount> = ctx.namespaced();
    let created = api
        .create(
            &PostParams::default(),
            &from(json!({"metadata": {"name": "testserviceaccount",
        "labels": {"test-serviceaccount-static": "true"}}}))?,
        )
        .await?;
    let got = api.get("testserviceaccount").await?;
    ensure!(got.metadata.uid == created.metadata.uid, "the UID changed");
    let wp = WatchParams::default()
        .labels("test-serviceaccount-static=true")
        .timeout(180);
    let mut events = api.watch(&wp, "0").await?.boxed();
    let mut wait_for = async |kind: &str| -> anyhow::Result<()> {
        while let Some(e) = events.next().await {
            let matched = matches!(
                (kind, e?),
                ("ADDED", WatchEvent::Added(_))
                    | ("MODIFIED", WatchEvent::Modified(_))
                    | ("DELETED", WatchEvent::Deleted(_))
            );
            if matched {
                return Ok(());
            }
        }
        bail!("failed to find {kind} event")
    };
    wait_for("ADDED").await?;
    api.patch(
        "testserviceaccount",
        &PatchParams::default(),
        &strategic(json!({"automountServiceAccountToken": false})),
    )
    .await?;
    wait_for("MODIFIED").await?;
    let all: Api<ServiceAccount> = ctx.all();
    let found = all
        .list(&ListParams::default().labels("test-serviceaccount-static=true"))
        .await?
        .items
        .into_iter()
        .any(|s| {
            s.metadata.name.as_deref() == Some("testserviceaccount")
                && s.metadata.namespace.as_deref() == Some(&ctx.namespace)
                && s.automount_service_account_token == Some(false)
        });
    ensure!(found, "failed to find the created ServiceAccount");
    api.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await?;
    wait_for("DELETED").await?;
    Ok(())
}

async fn serviceaccount_update(ctx: Ctx) -> anyhow::Result<()> {
    let api: Api<ServiceAccount> = ctx.namespaced();
    let name = ctx.unique("e2e-sa");
    let created = api
        .create(
            &PostParams::default(),
            &from(json!({"metadata": {"name": name},
        "automountServiceAccountToken": false}))?,
        )
        .await?;
    ensure!(created.automount_service_account_token == Some(false));
    let updated = retry_update(&api, &name, |s: &mut ServiceAccount| {
        s.automount_service_account_token = Some(true)
    })
    .await?;
    ensure!(
        updated.automount_service_account_token == Some(true),
        "the update did not take"
    );
    Ok(())
}

/// test/e2e/instrumentation/core_events.go
async fn event_lifecycle(ctx: Ctx) -> anyhow::Result<()> {
    let api: Api<Event> = ctx.namespaced();
    let all: Api<Event> = ctx.all();
    api.create(
        &PostParams::default(),
        &from(
            json!({"metadata": {"name": "event-test", "labels": {"testevent-constant": "true"}},
        "message": "This is a test event", "reason": "Test", "type": "Normal", "count": 1,
        "involvedObject": {"namespace": ctx.namespace}}),
        )?,
    )
    .await?;
    let selector = ListParams::default().labels("testevent-constant=true");
    let listed = all.list(&selector).await?.items;
    ensure!(
        listed
            .iter()
            .any(|e| e.metadata.name.as_deref() == Some("event-test")
                && e.metadata.namespace.as_deref() == Some(&ctx.namespace)),
        "unable to find test event"
    );
    api.patch(
        "event-test",
        &PatchParams::default(),
        &strategic(json!({"message": "This is a test event - patched"})),
    )
    .await?;
    let got = api.get("event-test").await?;
    ensure!(
        got.message.as_deref() == Some("This is a test event - patched"),
        "the patch did not take"
    );
    let mut event = api.get("event-test").await?;
    event.series = Some(from(
        json!({"count": 100, "lastObservedTime": "2017-09-19T13:49:16.000000Z"}),
    )?);
    event.metadata.resource_version = None;
    event.metadata.managed_fields = None;
    api.replace("event-test", &PostParams::default(), &event)
        .await?;
    let mut got = api.get("event-test").await?;
    got.metadata.resource_version = None;
    got.metadata.managed_fields = None;
    ensure!(
        got == event,
        "test event wasn't properly updated: {got:?} vs {event:?}"
    );
    api.delete("event-test", &DeleteParams::default()).await?;
    let listed = all.list(&selector).await?.items;
    ensure!(
        !listed
            .iter()
            .any(|e| e.metadata.name.as_deref() == Some("event-test")
                && e.metadata.namespace.as_deref() == Some(&ctx.namespace)),
        "the event was not deleted"
    );
    Ok(())
}

async fn event_collection(ctx: Ctx) -> anyhow::Result<()> {
    let api: Api<Event> = ctx.namespaced();
    for i in 1..=3 {
        let name = format!("test-event-{i}");
        api.create(
            &PostParams::default(),
            &from(
                json!({"metadata": {"name": name, "labels": {"testevent-set": "true"}},
            "message": format!("This is {name}"), "reason": "Test", "type": "Normal", "count": 1,
            "involvedObject": {"namespace": ctx.namespace}}),
            )?,
        )
        .await?;
    }
    let selector = ListParams::default().labels("testevent-set=true");
    ensure!(
        api.list(&selector).await?.items.len() == 3,
        "expected 3 events"
    );
    api.delete_collection(&DeleteParams::default(), &selector)
        .await?;
    eventually(Duration::from_secs(60), "the events to go", || async {
        Ok(api.list(&selector).await?.items.is_empty().then_some(()))
    })
    .await
}

/// test/e2e/instrumentation/events.go's newTestEvent.
fn new_test_event(ns: &str, name: &str, label: &str) -> anyhow::Result<EventsV1> {
    from(
        json!({"metadata": {"name": name, "labels": {label: "true"}}, "regarding": {"namespace": ns},
        "eventTime": "2017-09-19T13:49:16.000000Z", "note": format!("This is {name}"), "action": "Do",
        "reason": "Test", "type": "Normal", "reportingController": "test-controller", "reportingInstance": "test-node"}),
    )
}

type EventsV1 = k8s_openapi::api::events::v1::Event;

fn named(items: &[EventsV1], name: &str, ns: &str) -> bool {
    items.iter().any(|e| {
        e.metadata.name.as_deref() == Some(name) && e.metadata.namespace.as_deref() == Some(ns)
    })
}

/// test/e2e/instrumentation/events.go
async fn events_api_lifecycle(ctx: Ctx) -> anyhow::Result<()> {
    let api: Api<EventsV1> = ctx.namespaced();
    let all: Api<EventsV1> = ctx.all();
    let ns = ctx.namespace.clone();
    api.create(
        &PostParams::default(),
        &new_test_event(&ns, "event-test", "testevent-constant")?,
    )
    .await?;
    let selector = ListParams::default().labels("testevent-constant=true");
    ensure!(
        named(&all.list(&selector).await?.items, "event-test", &ns),
        "not listed across namespaces"
    );
    ensure!(
        named(&api.list(&selector).await?.items, "event-test", &ns),
        "not listed in the namespace"
    );
    let core: Api<Event> = ctx.namespaced();
    let by_source = core
        .list(&ListParams::default().fields("source=test-controller"))
        .await?
        .items;
    ensure!(
        by_source.len() == 1 && by_source[0].metadata.name.as_deref() == Some("event-test"),
        "expected single event, got {:?}",
        by_source
            .iter()
            .map(|e| &e.metadata.name)
            .collect::<Vec<_>>()
    );
    let by_controller = api
        .list(&ListParams::default().fields("reportingController=test-controller"))
        .await?
        .items;
    ensure!(
        by_controller.len() == 1 && by_controller[0].metadata.name.as_deref() == Some("event-test"),
        "expected single event, got {} events",
        by_controller.len()
    );
    let mut event = api.get("event-test").await?;
    let series: k8s_openapi::api::events::v1::EventSeries =
        from(json!({"count": 2, "lastObservedTime": "2017-09-19T13:49:11.000000Z"}))?;
    api.patch(
        "event-test",
        &PatchParams::default(),
        &strategic(json!({"series": series})),
    )
    .await?;
    let mut got = api.get("event-test").await?;
    for e in [&mut got, &mut event] {
        e.metadata.resource_version = None;
        e.metadata.managed_fields = None;
    }
    event.series = Some(series);
    ensure!(
        got == event,
        "test event wasn't properly patched: {got:?} vs {event:?}"
    );
    event.series = Some(from(
        json!({"count": 100, "lastObservedTime": "2017-09-19T13:49:16.000000Z"}),
    )?);
    api.replace("event-test", &PostParams::default(), &event)
        .await?;
    let mut got = api.get("event-test").await?;
    got.metadata.resource_version = None;
    got.metadata.managed_fields = None;
    ensure!(
        got == event,
        "test event wasn't properly updated: {got:?} vs {event:?}"
    );
    api.delete("event-test", &DeleteParams::default()).await?;
    ensure!(
        !named(&all.list(&selector).await?.items, "event-test", &ns),
        "still listed across namespaces"
    );
    ensure!(
        !named(&api.list(&selector).await?.items, "event-test", &ns),
        "still listed in the namespace"
    );
    Ok(())
}

async fn events_api_collection(ctx: Ctx) -> anyhow::Result<()> {
    let api: Api<EventsV1> = ctx.namespaced();
    for i in 1..=3 {
        api.create(
            &PostParams::default(),
            &new_test_event(&ctx.namespace, &format!("test-event-{i}"), "testevent-set")?,
        )
        .await?;
    }
    let selector = ListParams::default().labels("testevent-set=true");
    ensure!(
        api.list(&selector).await?.items.len() == 3,
        "expected 3 events"
    );
    api.delete_collection(&DeleteParams::default(), &selector)
        .await?;
    ensure!(
        api.list(&selector).await?.items.is_empty(),
        "events are left after the collection delete"
    );
    Ok(())
}

//! [sig-api-machinery] API priority and fairness (test/e2e/apimachinery/flowcontrol.go): the
//! FlowSchema and PriorityLevelConfiguration API operations, discovery to deletecollection.

use std::fmt::Debug;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail, ensure};
use futures::StreamExt;
use k8s_openapi::ClusterResourceScope;
use k8s_openapi::api::flowcontrol::v1::{
    FlowSchema, FlowSchemaCondition, PriorityLevelConfiguration,
    PriorityLevelConfigurationCondition,
};
use kube::ResourceExt;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::tests;
use crate::framework::{Events, api_discovered, api_error};
use crate::{Ctx, Test};

pub fn tests() -> Vec<Test> {
    tests![
        "[sig-api-machinery] API priority and fairness should support FlowSchema API operations" => flowschema_api,
        "[sig-api-machinery] API priority and fairness should support PriorityLevelConfiguration API operations" => priority_level_api,
    ]
}

const GROUP: &str = "flowcontrol.apiserver.k8s.io";
const VERSION: &str = "v1";

/// What the two API-operations tests do differently: the template, the spec field the patch
/// and the update change, and the kind's status conditions.
trait FlowKind:
    kube::Resource<Scope = ClusterResourceScope, DynamicType = ()>
    + Clone
    + Debug
    + DeserializeOwned
    + Serialize
    + Send
    + Sync
    + 'static
{
    const LABEL_KEY: &'static str;
    const GENERATE_NAME: &'static str;
    /// The spec field's value after the patch, and after the update.
    const PATCHED: i32;
    const UPDATED: i32;
    /// The template's spec.
    fn template_spec() -> Value;
    /// The spec half of the merge patch that sets the field to `value`.
    fn spec_patch(value: i32) -> Value;
    /// The field the patch and the update change.
    fn field(&self) -> Option<i32>;
    fn set_field(&mut self, value: i32);
    /// getFlowSchemaConditionByType / getPriorityLevelConfigurationConditionByType found one.
    fn has_condition(&self, type_: &str) -> bool;
    fn add_condition(&mut self, type_: &str, status: &str, reason: &str, message: &str);
}

impl FlowKind for FlowSchema {
    const LABEL_KEY: &'static str = "example-e2e-fs-label";
    const GENERATE_NAME: &'static str = "e2e-example-fs-";
    const PATCHED: i32 = 9999;
    const UPDATED: i32 = 9000;

    fn template_spec() -> Value {
        json!({
            "matchingPrecedence": 10000,
            "priorityLevelConfiguration": {"name": "global-default"},
            "distinguisherMethod": {"type": "ByUser"},
            "rules": [{
                "subjects": [{"kind": "User", "user": {"name": "example-e2e-non-existent-user"}}],
                "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            }],
        })
    }

    fn spec_patch(value: i32) -> Value {
        json!({"matchingPrecedence": value})
    }

    fn field(&self) -> Option<i32> {
        self.spec.as_ref().and_then(|s| s.matching_precedence)
    }

    fn set_field(&mut self, value: i32) {
        self.spec.get_or_insert_default().matching_precedence = Some(value);
    }

    fn has_condition(&self, type_: &str) -> bool {
        self.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_.as_deref() == Some(type_))
    }

    fn add_condition(&mut self, type_: &str, status: &str, reason: &str, message: &str) {
        self.status
            .get_or_insert_default()
            .conditions
            .get_or_insert_default()
            .push(FlowSchemaCondition {
                type_: Some(type_.into()),
                status: Some(status.into()),
                reason: Some(reason.into()),
                message: Some(message.into()),
                last_transition_time: None,
            });
    }
}

impl FlowKind for PriorityLevelConfiguration {
    const LABEL_KEY: &'static str = "example-e2e-pl-label";
    const GENERATE_NAME: &'static str = "e2e-example-pl-";
    const PATCHED: i32 = 4;
    const UPDATED: i32 = 6;

    fn template_spec() -> Value {
        json!({
            "type": "Limited",
            "limited": {"nominalConcurrencyShares": 2, "limitResponse": {"type": "Reject"}},
        })
    }

    fn spec_patch(value: i32) -> Value {
        json!({"limited": {"nominalConcurrencyShares": value}})
    }

    fn field(&self) -> Option<i32> {
        self.spec
            .as_ref()
            .and_then(|s| s.limited.as_ref())
            .and_then(|l| l.nominal_concurrency_shares)
    }

    fn set_field(&mut self, value: i32) {
        self.spec
            .get_or_insert_default()
            .limited
            .get_or_insert_default()
            .nominal_concurrency_shares = Some(value);
    }

    fn has_condition(&self, type_: &str) -> bool {
        self.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_.as_deref() == Some(type_))
    }

    fn add_condition(&mut self, type_: &str, status: &str, reason: &str, message: &str) {
        self.status
            .get_or_insert_default()
            .conditions
            .get_or_insert_default()
            .push(PriorityLevelConfigurationCondition {
                type_: Some(type_.into()),
                status: Some(status.into()),
                reason: Some(reason.into()),
                message: Some(message.into()),
                last_transition_time: None,
            });
    }
}

async fn flowschema_api(ctx: Ctx) -> anyhow::Result<()> {
    api_operations::<FlowSchema>(ctx).await
}

async fn priority_level_api(ctx: Ctx) -> anyhow::Result<()> {
    api_operations::<PriorityLevelConfiguration>(ctx).await
}

/// HaveValidResourceVersion: a non-zero unsigned integer of at most 128 bits.
pub(super) fn valid_resource_version(o: &impl kube::Resource) -> anyhow::Result<()> {
    let rv = o.meta().resource_version.as_deref().unwrap_or("");
    let n: u128 = rv.parse().map_err(|_| {
        anyhow!("Expected resource version to be a valid uint128, but got {rv:?}: the resource version is not a valid integer")
    })?;
    ensure!(
        n != 0,
        "Expected resource version to be a valid uint128, but got {rv:?}: the resource version is zero which is not valid"
    );
    Ok(())
}

/// apimachinery's resourceversion.CompareResourceVersion: both must be integers without
/// leading zeros; the longer is greater, equal lengths compare digit by digit.
pub(super) fn compare_resource_versions(a: &str, b: &str) -> anyhow::Result<std::cmp::Ordering> {
    let well_formed =
        |s: &str| !s.is_empty() && !s.starts_with('0') && s.bytes().all(|c| c.is_ascii_digit());
    for rv in [a, b] {
        ensure!(well_formed(rv), "resource version is not well formed: {rv}");
    }
    Ok(a.len().cmp(&b.len()).then_with(|| a.cmp(b)))
}

/// client-go's RetryOnConflict with DefaultRetry (five tries, 10ms apart): GET, change, then
/// PUT the object (or, with `status`, its /status).
async fn update_retrying<K: FlowKind>(
    api: &Api<K>,
    name: &str,
    status: bool,
    change: impl Fn(&mut K),
) -> Result<K, kube::Error> {
    let mut tries = 0;
    loop {
        let mut obj = api.get(name).await?;
        change(&mut obj);
        let result = if status {
            api.replace_status(name, &PostParams::default(), &obj).await
        } else {
            api.replace(name, &PostParams::default(), &obj).await
        };
        match result {
            Err(kube::Error::Api(e)) if e.code == 409 && tries < 4 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => return other,
        }
    }
}

/// Reads the watch until an object annotated `patched: "true"` arrives; every event must be
/// a MODIFIED one, each within wait.ForeverTestTimeout (30s).
async fn await_patched_event<K: FlowKind>(events: &mut Events<K>) -> anyhow::Result<()> {
    loop {
        let next = tokio::time::timeout(Duration::from_secs(30), events.next())
            .await
            .map_err(|_| anyhow!("timed out waiting for watch event"))?;
        let Some(event) = next else {
            bail!("watch channel should not close");
        };
        match event? {
            WatchEvent::Modified(o)
                if o.annotations().get("patched").map(String::as_str) == Some("true") =>
            {
                return Ok(());
            }
            WatchEvent::Modified(_) => {}
            other => bail!("expected a MODIFIED event, got {other:?}"),
        }
    }
}

/// Create three labelled objects, get, list, watch, patch, update, the /status get, patch
/// and update, delete, and deletecollection; whatever is left is deleted by label after.
async fn api_operations<K: FlowKind>(ctx: Ctx) -> anyhow::Result<()> {
    let plural = K::plural(&()).to_string();
    let status = format!("{plural}/status");
    api_discovered(&ctx, GROUP, VERSION, &[&plural, &status], "flowcontrol").await?;

    let api: Api<K> = ctx.cluster();
    let label_value: String = (0..8)
        .map(|_| char::from(b'a' + rand::random_range(0..26u8)))
        .collect();
    let label = format!("{}={label_value}", K::LABEL_KEY);
    let label_key = K::LABEL_KEY;
    let template: K = serde_json::from_value(json!({
        "metadata": {"generateName": K::GENERATE_NAME, "labels": {label_key: label_value}},
        "spec": K::template_spec(),
    }))
    .context("building the template")?;

    let result = operations(&ctx, &api, &plural, &label, &template).await;
    let cleanup = api
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels(&label),
        )
        .await;
    result?;
    cleanup.context("deleting the test's objects")?;
    Ok(())
}

async fn operations<K: FlowKind>(
    ctx: &Ctx,
    api: &Api<K>,
    plural: &str,
    label: &str,
    template: &K,
) -> anyhow::Result<()> {
    let kind = K::kind(&()).to_string();
    let by_label = ListParams::default().labels(label);

    // creating
    let pp = PostParams::default();
    api.create(&pp, template).await.context("creating")?;
    api.create(&pp, template).await.context("creating")?;
    let created = api.create(&pp, template).await.context("creating")?;
    let name = created.name_any();

    // getting
    let read = api.get(&name).await.context("getting")?;
    ensure!(
        read.uid() == created.uid(),
        "the read uid {:?} is not the created {:?}",
        read.uid(),
        created.uid()
    );
    valid_resource_version(&read)?;

    // listing
    let list = api.list(&by_label).await.context("listing")?;
    ensure!(
        list.items.len() == 3,
        "filtered list should have 3 items, has {}",
        list.items.len()
    );

    // watching
    let rv = list.metadata.resource_version.clone().unwrap_or_default();
    let mut events: Events<K> = api
        .watch(
            &WatchParams::default().labels(label).disable_bookmarks(),
            &rv,
        )
        .await
        .context("watching")?
        .boxed();

    // patching
    let patch = json!({"metadata": {"annotations": {"patched": "true"}}, "spec": K::spec_patch(K::PATCHED)});
    let patched = api
        .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .context("patching")?;
    ensure!(
        patched.annotations().get("patched").map(String::as_str) == Some("true"),
        "patched object should have the applied annotation: {:?}",
        patched.annotations()
    );
    ensure!(
        patched.field() == Some(K::PATCHED),
        "patched object should have the applied spec: {:?}",
        patched.field()
    );
    let order = compare_resource_versions(
        created.meta().resource_version.as_deref().unwrap_or(""),
        patched.meta().resource_version.as_deref().unwrap_or(""),
    )?;
    ensure!(
        order == std::cmp::Ordering::Less,
        "patched object should have a larger resource version: {:?} then {:?}",
        created.meta().resource_version,
        patched.meta().resource_version
    );

    // updating
    let updated = update_retrying(api, &name, false, |o: &mut K| {
        o.annotations_mut().insert("updated".into(), "true".into());
        o.set_field(K::UPDATED);
    })
    .await
    .with_context(|| format!("failed to update {} {name:?}", kind.to_lowercase()))?;
    ensure!(
        updated.annotations().get("updated").map(String::as_str) == Some("true"),
        "updated object should have the applied annotation: {:?}",
        updated.annotations()
    );
    ensure!(
        updated.field() == Some(K::UPDATED),
        "updated object should have the applied spec: {:?}",
        updated.field()
    );

    await_patched_event(&mut events).await?;
    drop(events);

    // getting /status
    let status: Value = ctx
        .get_json(&format!("/apis/{GROUP}/{VERSION}/{plural}/{name}/status"))
        .await
        .context("getting /status")?;
    ensure!(
        status["apiVersion"] == format!("{GROUP}/{VERSION}").as_str()
            && status["kind"] == kind.as_str(),
        "expected {GROUP}/{VERSION}, Kind={kind}, got {}, Kind={}",
        status["apiVersion"],
        status["kind"]
    );
    ensure!(
        status["metadata"]["uid"].as_str() == created.uid().as_deref(),
        "the /status uid {} is not the created {:?}",
        status["metadata"]["uid"],
        created.uid()
    );

    // patching /status
    let patch = json!({"status": {"conditions": [{"type": "PatchStatusFailed", "status": "False", "reason": "e2e"}]}});
    let status_patched = api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .context("patching /status")?;
    ensure!(
        status_patched.has_condition("PatchStatusFailed"),
        "no PatchStatusFailed condition after the /status patch: {status_patched:?}"
    );

    // updating /status
    let status_updated = update_retrying(api, &name, true, |o: &mut K| {
        o.add_condition("StatusUpdateFailed", "False", "E2E", "Set from an e2e test");
    })
    .await
    .with_context(|| {
        format!(
            "failed to update status of {} {name:?}",
            kind.to_lowercase()
        )
    })?;
    ensure!(
        status_updated.has_condition("StatusUpdateFailed"),
        "no StatusUpdateFailed condition after the /status update: {status_updated:?}"
    );

    // deleting
    api.delete(&name, &DeleteParams::default())
        .await
        .context("deleting")?;
    let gone = api_error(api.get(&name).await)?;
    ensure!(
        gone.reason == "NotFound" || gone.code == 404,
        "expected 404, got {gone:?}"
    );
    let list = api.list(&by_label).await.context("listing")?;
    ensure!(
        list.items.len() == 2,
        "filtered list should have 2 items, has {}",
        list.items.len()
    );

    // deleting a collection
    api.delete_collection(&DeleteParams::default(), &by_label)
        .await
        .context("deleting a collection")?;
    let list = api.list(&by_label).await.context("listing")?;
    ensure!(
        list.items.is_empty(),
        "filtered list should have 0 items, has {}",
        list.items.len()
    );
    Ok(())
}

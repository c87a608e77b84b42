//! [sig-api-machinery] CustomResourceDefinition, CustomResourceDefinition Watch and
//! FieldValidation (test/e2e/apimachinery/custom_resource_definition.go, crd_watch.go,
//! field_validation.go), with the fixtures of apiextensions-apiserver/test/integration.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceDefinitionSpec,
};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, WatchEvent, WatchParams,
};
use serde_json::{Value, json};

use super::tests;
use crate::framework::{Events, eventually, expect_event, expect_no_event};
use crate::{Ctx, Test};

pub fn tests() -> Vec<Test> {
    tests![
        "[sig-api-machinery] CustomResourceDefinition resources [Privileged:ClusterAdmin] Simple CustomResourceDefinition creating/deleting custom resource definition objects works" => create_delete,
        "[sig-api-machinery] CustomResourceDefinition resources [Privileged:ClusterAdmin] Simple CustomResourceDefinition listing custom resource definition objects works" => listing,
        "[sig-api-machinery] CustomResourceDefinition resources [Privileged:ClusterAdmin] Simple CustomResourceDefinition getting/updating/patching custom resource definition status sub-resource works" => status_subresource,
        "[sig-api-machinery] CustomResourceDefinition resources [Privileged:ClusterAdmin] custom resource defaulting for requests and from storage works" => defaulting,
        "[sig-api-machinery] CustomResourceDefinition resources [Privileged:ClusterAdmin] should include custom resource definition resources in discovery documents" => discovery_documents,
        "[sig-api-machinery] CustomResourceDefinition Watch [Privileged:ClusterAdmin] CustomResourceDefinition Watch watch on custom resource definition objects" => crd_watch,
        "[sig-api-machinery] FieldValidation should create/apply a CR with unknown fields for CRD with no validation schema" => unknown_fields_without_schema,
        "[sig-api-machinery] FieldValidation should create/apply a valid CR for CRD with validation schema" => valid_cr_with_schema,
        "[sig-api-machinery] FieldValidation should create/apply an invalid CR with extra properties for CRD with validation schema" => extra_properties_with_schema,
        "[sig-api-machinery] FieldValidation should detect unknown metadata fields of a typed object" => unknown_metadata_typed,
        "[sig-api-machinery] FieldValidation should detect unknown and duplicate fields of a typed object" => unknown_and_duplicate_typed,
        "[sig-api-machinery] FieldValidation should detect unknown metadata fields in both the root and embedded object of a CR" => unknown_metadata_cr,
        "[sig-api-machinery] FieldValidation should detect duplicates in a CR when preserving unknown fields" => duplicates_preserving_unknown,
    ]
}

const GROUP: &str = "mygroup.example.com";

fn allow_all() -> Value {
    json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

/// NewRandomNameV1CustomResourceDefinition: cluster-scoped, one served version v1beta1.
fn random_crd() -> Value {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mid: String = (0..5)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect();
    let g = format!("foo{mid}a");
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{g}s.{GROUP}")},
        "spec": {"group": GROUP, "scope": "Cluster",
            "names": {"plural": format!("{g}s"), "singular": g, "kind": g, "listKind": format!("{g}List")},
            "versions": [{"name": "v1beta1", "served": true, "storage": true, "schema": {"openAPIV3Schema": allow_all()}}]}})
}

/// The same with two served versions, v1beta1 and v1 (storage), both with /status.
fn random_multiversion_crd(schema: Value) -> Value {
    let mut crd = random_crd();
    crd["spec"]["versions"] = json!([
        {"name": "v1beta1", "served": true, "storage": false, "subresources": {"status": {}}, "schema": {"openAPIV3Schema": schema}},
        {"name": "v1", "served": true, "storage": true, "subresources": {"status": {}}, "schema": {"openAPIV3Schema": schema}},
    ]);
    crd
}

fn plural(crd: &Value) -> String {
    crd["spec"]["names"]["plural"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn served_versions(crd: &Value) -> Vec<String> {
    crd["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["served"] == json!(true))
        .filter_map(|v| v["name"].as_str().map(str::to_string))
        .collect()
}

/// existsInDiscoveryV1: the plural in `/apis/<group>/<version>` (a 404 is absence).
async fn in_discovery(ctx: &Ctx, group: &str, version: &str, plural: &str) -> anyhow::Result<bool> {
    let raw = ctx
        .get_raw(&format!("/apis/{group}/{version}"), "application/json")
        .await?;
    if raw.status == 404 {
        return Ok(false);
    }
    let doc = raw.json()?;
    Ok(doc["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|r| r["name"] == plural))
}

pub(super) async fn wait_discovery(ctx: &Ctx, crd: &Value, present: bool) -> anyhow::Result<()> {
    let (group, plural) = (crd["spec"]["group"].as_str().unwrap_or(""), plural(crd));
    for v in served_versions(crd) {
        eventually(
            Duration::from_secs(30),
            "the definition's discovery",
            || async {
                Ok((in_discovery(ctx, group, &v, &plural).await? == present).then_some(()))
            },
        )
        .await?;
    }
    Ok(())
}

fn crds(ctx: &Ctx) -> Api<CustomResourceDefinition> {
    ctx.cluster()
}

/// CreateNewV1CustomResourceDefinitionWatchUnsafe: create, then wait until it is served.
async fn create_crd_unsafe(ctx: &Ctx, crd: &Value) -> anyhow::Result<CustomResourceDefinition> {
    let created = crds(ctx)
        .create(
            &PostParams::default(),
            &serde_json::from_value(crd.clone())?,
        )
        .await
        .context("creating the CustomResourceDefinition")?;
    wait_discovery(ctx, crd, true).await?;
    Ok(created)
}

/// The custom resources of a served version.
fn resources(ctx: &Ctx, crd: &Value, version: &str) -> Api<DynamicObject> {
    let names = &crd["spec"]["names"];
    let gvk = GroupVersionKind::gvk(GROUP, version, names["kind"].as_str().unwrap_or(""));
    let ar = ApiResource::from_gvk_with_plural(&gvk, names["plural"].as_str().unwrap_or(""));
    if crd["spec"]["scope"] == "Namespaced" {
        Api::namespaced_with(ctx.client.clone(), "default", &ar)
    } else {
        Api::all_with(ctx.client.clone(), &ar)
    }
}

fn object(v: Value) -> anyhow::Result<DynamicObject> {
    Ok(serde_json::from_value(v)?)
}

/// CreateNewV1CustomResourceDefinition: served, then the watch cache primed with a created
/// and deleted instance, watched from its resourceVersion.
async fn create_crd(ctx: &Ctx, crd: &Value) -> anyhow::Result<CustomResourceDefinition> {
    let created = create_crd_unsafe(ctx, crd).await?;
    let first = served_versions(crd).first().cloned().unwrap_or_default();
    let api = resources(ctx, crd, &first);
    eventually(Duration::from_secs(30), "the watch cache to be primed", || async {
        let instance = object(json!({"apiVersion": format!("{GROUP}/{first}"), "kind": crd["spec"]["names"]["kind"],
            "metadata": {"name": "setup-instance"}, "alpha": "foo_123", "beta": 10, "gamma": "bar",
            "delta": "hello", "epsilon": "foobar", "spec": {}}))?;
        let made = api.create(&PostParams::default(), &instance).await?;
        api.delete("setup-instance", &DeleteParams::default()).await?;
        let rv = made.metadata.resource_version.unwrap_or_default();
        for v in served_versions(crd) {
            let mut events = resources(ctx, crd, &v).watch(&WatchParams::default(), &rv).await?.boxed();
            match tokio::time::timeout(Duration::from_secs(5), events.next()).await {
                Ok(Some(Ok(WatchEvent::Deleted(_)))) => {}
                Ok(Some(Ok(WatchEvent::Error(_)))) | Err(_) => return Ok(None),
                other => bail!("unexpected event while priming: {other:?}"),
            }
        }
        Ok(Some(()))
    })
    .await?;
    Ok(created)
}

pub(super) async fn delete_crd(ctx: &Ctx, crd: &Value) -> anyhow::Result<()> {
    let name = crd["metadata"]["name"].as_str().unwrap_or("");
    crds(ctx).delete(name, &DeleteParams::default()).await?;
    wait_discovery(ctx, crd, false).await
}

async fn create_delete(ctx: Ctx) -> anyhow::Result<()> {
    let crd = random_crd();
    create_crd_unsafe(&ctx, &crd).await?;
    delete_crd(&ctx, &crd).await
}

async fn listing(ctx: Ctx) -> anyhow::Result<()> {
    let label = format!("{:x}", rand::random::<u64>());
    let mut made = Vec::new();
    for _ in 0..10 {
        let mut crd = random_crd();
        crd["metadata"]["labels"] = json!({"e2e-list-test-uuid": label});
        made.push((crd.clone(), create_crd_unsafe(&ctx, &crd).await?));
    }
    let unlabelled = random_crd();
    create_crd_unsafe(&ctx, &unlabelled).await?;
    let result = async {
        let selector = ListParams::default().labels(&format!("e2e-list-test-uuid={label}"));
        let listed = crds(&ctx).list(&selector).await?.items;
        ensure!(
            listed.len() == 10,
            "listed {} of 10 definitions",
            listed.len()
        );
        for item in &listed {
            let Some((_, created)) = made
                .iter()
                .find(|(_, c)| c.metadata.name == item.metadata.name)
            else {
                bail!("{:?} was not created by the test", item.metadata.name);
            };
            ensure!(
                item.spec == created.spec,
                "the listed spec of {:?} differs",
                item.metadata.name
            );
        }
        crds(&ctx)
            .delete_collection(&DeleteParams::default(), &selector)
            .await?;
        for (crd, _) in &made {
            wait_discovery(&ctx, crd, false).await?;
        }
        crds(&ctx)
            .get(unlabelled["metadata"]["name"].as_str().unwrap_or(""))
            .await
            .context("the unlabelled definition went too")?;
        anyhow::Ok(())
    }
    .await;
    delete_crd(&ctx, &unlabelled).await?;
    result
}

/// A Go CustomResourceDefinitionCondition with only its message set, as client-go writes it:
/// type and status even when empty, and the zero lastTransitionTime as null.
fn go_crd_condition(message: &str) -> Value {
    json!({"type": "", "status": "", "lastTransitionTime": null, "message": message})
}

/// expectCondition: one of the object's conditions equals `expected` field by field, an absent
/// field reading as Go's zero value.
fn expect_crd_condition(crd: &Value, expected: &Value) -> anyhow::Result<()> {
    let fields = |c: &Value| {
        ["type", "status", "lastTransitionTime", "reason", "message"]
            .map(|f| c[f].as_str().unwrap_or("").to_string())
    };
    let found = crd["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| fields(c) == fields(expected));
    ensure!(
        found,
        "Condition {expected} not found in conditions {}",
        crd["status"]["conditions"]
    );
    Ok(())
}

/// The status sub-resource is read (its spec the created one's), updated with a condition
/// appended, and JSON-patched; each write's answer holds its condition. Raw requests, as
/// upstream reads it with the dynamic client: a patched condition carries no type.
async fn status_subresource(ctx: Ctx) -> anyhow::Result<()> {
    let crd = random_crd();
    let created = create_crd_unsafe(&ctx, &crd).await?;
    let result = async {
        let name = created.metadata.name.clone().unwrap_or_default();
        let path = format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}/status");
        let update_condition = go_crd_condition("updated");
        // RetryOnConflict with DefaultRetry: five tries, 10ms apart.
        let mut tries = 0;
        let updated = loop {
            let mut status: Value = ctx
                .get_json(&path)
                .await
                .context("getting CustomResourceDefinition status")?;
            let spec: CustomResourceDefinitionSpec = serde_json::from_value(status["spec"].clone())
                .context("converting the status sub-resource to a CustomResourceDefinition")?;
            ensure!(
                spec == created.spec,
                "Expected CustomResourceDefinition Spec to match status sub-resource Spec, \
                 but got:\n{spec:?}\ninstead of\n{:?}",
                created.spec
            );
            let conditions = &mut status["status"]["conditions"];
            if !conditions.is_array() {
                *conditions = json!([]);
            }
            if let Some(list) = conditions.as_array_mut() {
                list.push(update_condition.clone());
            }
            let raw = ctx
                .request(
                    "PUT",
                    &path,
                    "application/json",
                    "application/json",
                    serde_json::to_vec(&status)?,
                )
                .await?;
            match raw.status {
                200..=299 => break raw.json()?,
                409 if tries < 4 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                code => bail!(
                    "updating CustomResourceDefinition status: {code} {}",
                    String::from_utf8_lossy(&raw.body)
                ),
            }
        };
        expect_crd_condition(&updated, &update_condition)?;

        let patch =
            json!([{"op": "add", "path": "/status/conditions", "value": [{"message": "patched"}]}]);
        let raw = ctx
            .request(
                "PATCH",
                &path,
                "application/json",
                "application/json-patch+json",
                serde_json::to_vec(&patch)?,
            )
            .await?;
        ensure!(
            (200..300).contains(&raw.status),
            "patching CustomResourceDefinition status: {} {}",
            raw.status,
            String::from_utf8_lossy(&raw.body)
        );
        let patched = raw.json()?;
        expect_crd_condition(&updated, &update_condition)?;
        expect_crd_condition(&patched, &go_crd_condition("patched"))
    }
    .await;
    delete_crd(&ctx, &crd)
        .await
        .context("deleting CustomResourceDefinition")?;
    result
}

async fn defaulting(ctx: Ctx) -> anyhow::Result<()> {
    let mut crd = random_crd();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"] =
        json!({"a": {"type": "string"}, "b": {"type": "string"}});
    create_crd_unsafe(&ctx, &crd).await?;
    let result = async {
        let name = crd["metadata"]["name"].as_str().unwrap_or("").to_string();
        let api = resources(&ctx, &crd, "v1beta1");
        let instance = |name: &str| {
            object(json!({"apiVersion": format!("{GROUP}/v1beta1"), "kind": crd["spec"]["names"]["kind"], "metadata": {"name": name}}))
        };
        let name1 = format!("cr-1{}", &ctx.unique("x")[2..]);
        api.create(&PostParams::default(), &instance(&name1)?).await?;
        let json_patch = |ops: Value| -> anyhow::Result<Patch<()>> {
            Ok(Patch::Json::<()>(serde_json::from_value(ops)?))
        };
        crds(&ctx)
            .patch(&name, &PatchParams::default(), &json_patch(json!([{"op": "add",
                "path": "/spec/versions/0/schema/openAPIV3Schema/properties/a/default", "value": "A"}]))?)
            .await?;
        eventually(Duration::from_secs(30), "a to be defaulted from storage", || async {
            let got = api.get(&name1).await?;
            match got.data.get("a").and_then(Value::as_str) {
                None => Ok(None),
                Some("A") => Ok(Some(())),
                Some(other) => bail!("expected a:\"A\", but got a:{other:?}"),
            }
        })
        .await?;
        let name2 = format!("cr-2{}", &ctx.unique("x")[2..]);
        let made = api.create(&PostParams::default(), &instance(&name2)?).await?;
        ensure!(made.data.get("a") == Some(&json!("A")), "a was not defaulted on the request: {:?}", made.data);
        crds(&ctx)
            .patch(&name, &PatchParams::default(), &json_patch(json!([
                {"op": "remove", "path": "/spec/versions/0/schema/openAPIV3Schema/properties/a/default"},
                {"op": "add", "path": "/spec/versions/0/schema/openAPIV3Schema/properties/b/default", "value": "B"}]))?)
            .await?;
        eventually(Duration::from_secs(30), "b to be defaulted from storage", || async {
            let got = api.get(&name2).await?;
            let b = got.data.get("b").and_then(Value::as_str);
            match b {
                None => return Ok(None),
                Some("B") => {}
                Some(other) => bail!("expected b:\"B\", but got b:{other:?}"),
            }
            match got.data.get("a").and_then(Value::as_str) {
                None => bail!("expected a:\"A\" to be unchanged, but it was removed"),
                Some("A") => Ok(Some(())),
                Some(other) => bail!("expected a:\"A\" to be unchanged, but it changed to {other:?}"),
            }
        })
        .await
    }
    .await;
    delete_crd(&ctx, &crd).await?;
    result
}

async fn discovery_documents(ctx: Ctx) -> anyhow::Result<()> {
    let groups: Value = ctx.get_json("/apis").await?;
    let group = groups["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|g| g["name"] == "apiextensions.k8s.io")
        .context("apiextensions.k8s.io is not in /apis")?;
    ensure!(
        group["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|v| v["version"] == "v1")
    );
    let group: Value = ctx.get_json("/apis/apiextensions.k8s.io").await?;
    ensure!(
        group["name"] == "apiextensions.k8s.io",
        "the group document names {}",
        group["name"]
    );
    ensure!(
        group["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|v| v["version"] == "v1")
    );
    let resources: Value = ctx.get_json("/apis/apiextensions.k8s.io/v1").await?;
    ensure!(resources["groupVersion"] == "apiextensions.k8s.io/v1");
    ensure!(
        resources["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r["name"] == "customresourcedefinitions"),
        "customresourcedefinitions is not in apiextensions.k8s.io/v1"
    );
    Ok(())
}

/// NewNoxuV1CustomResourceDefinition (cluster-scoped).
fn noxu() -> Value {
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("noxus.{GROUP}")},
        "spec": {"group": GROUP, "scope": "Cluster",
            "names": {"plural": "noxus", "singular": "nonenglishnoxu", "kind": "WishIHadChosenNoxu",
                "shortNames": ["foo", "bar", "abc", "def"], "listKind": "NoxuItemList", "categories": ["all"]},
            "versions": [{"name": "v1beta1", "served": true, "storage": true, "schema": {"openAPIV3Schema": allow_all()}}]}})
}

async fn crd_watch(ctx: Ctx) -> anyhow::Result<()> {
    let crd = noxu();
    create_crd(&ctx, &crd).await?;
    let result = async {
        let api = resources(&ctx, &crd, "v1beta1");
        let watch = |name: &'static str| {
            let api = api.clone();
            async move {
                let wp = WatchParams::default()
                    .fields(&format!("metadata.name={name}"))
                    .timeout(600);
                anyhow::Ok(api.watch(&wp, "0").await?.boxed())
            }
        };
        let (mut a, mut b): (Events<DynamicObject>, Events<DynamicObject>) =
            (watch("name1").await?, watch("name2").await?);
        let instance = |name: &str| {
            object(
                json!({"apiVersion": format!("{GROUP}/v1beta1"), "kind": "WishIHadChosenNoxu",
                "metadata": {"name": name}, "content": {"key": "value"},
                "num": {"num1": 9223372036854775807i64, "num2": 1000000}}),
            )
        };
        let window = Duration::from_secs(10);
        let created_a = api
            .create(&PostParams::default(), &instance("name1")?)
            .await?;
        ensure!(
            created_a
                .metadata
                .uid
                .as_deref()
                .is_some_and(|u| !u.is_empty()),
            "no UID"
        );
        ensure!(
            created_a
                .types
                .as_ref()
                .map(|t| (t.api_version.as_str(), t.kind.as_str()))
                == Some(("mygroup.example.com/v1beta1", "WishIHadChosenNoxu"))
        );
        expect_event(&mut a, "ADDED", Some(&created_a)).await?;
        expect_no_event(&mut b, "ADDED", Some(&created_a), window).await?;
        let created_b = api
            .create(&PostParams::default(), &instance("name2")?)
            .await?;
        expect_event(&mut b, "ADDED", Some(&created_b)).await?;
        expect_no_event(&mut a, "ADDED", Some(&created_b), window).await?;
        let dummy: Patch<()> = Patch::Json(serde_json::from_value(
            json!([{"op": "add", "path": "/dummy", "value": "test"}]),
        )?);
        api.patch("name1", &PatchParams::default(), &dummy).await?;
        expect_event(&mut a, "MODIFIED", None).await?;
        expect_no_event(&mut b, "MODIFIED", None, window).await?;
        api.patch("name2", &PatchParams::default(), &dummy).await?;
        expect_event(&mut b, "MODIFIED", None).await?;
        expect_no_event(&mut a, "MODIFIED", None, window).await?;
        api.delete("name1", &DeleteParams::default()).await?;
        expect_event(&mut a, "DELETED", None).await?;
        expect_no_event(&mut b, "DELETED", None, window).await?;
        api.delete("name2", &DeleteParams::default()).await?;
        expect_event(&mut b, "DELETED", None).await?;
        expect_no_event(&mut a, "DELETED", None, window).await?;
        anyhow::Ok(())
    }
    .await;
    delete_crd(&ctx, &crd).await?;
    result
}

/// The schema field_validation.go gives its CRDs.
fn validation_schema() -> Value {
    json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "foo": {"type": "string"},
        "cronSpec": {"type": "string", "pattern": "^(\\d+|\\*)(/\\d+)?(\\s+(\\d+|\\*)(/\\d+)?){4}$"},
        "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["containerPort", "protocol"],
            "items": {"type": "object", "required": ["containerPort", "protocol"], "properties": {
                "containerPort": {"type": "integer", "format": "int32"}, "hostIP": {"type": "string"},
                "hostPort": {"type": "integer", "format": "int32"}, "name": {"type": "string"},
                "protocol": {"type": "string"}}}}}}}})
}

/// A server-side apply of a YAML body to `mytest` with Strict validation; the raw answer.
async fn apply_cr(ctx: &Ctx, crd: &Value, yaml: &str) -> anyhow::Result<crate::framework::Raw> {
    ctx.request(
        "PATCH",
        &format!("/apis/{GROUP}/v1beta1/{}/mytest?fieldManager=field_validation_mgr&fieldValidation=Strict", plural(crd)),
        "application/json",
        "application/apply-patch+yaml",
        yaml.as_bytes().to_vec(),
    )
    .await
}

fn cr_yaml(crd: &Value, top: &str, spec_extra: &str) -> String {
    format!(
        "apiVersion: {GROUP}/v1beta1\nkind: {}\nmetadata:\n  name: mytest\n{top}spec:\n{spec_extra}  cronSpec: \"* * * * */5\"\n  ports:\n  - name: x\n    containerPort: 80\n    protocol: TCP\n",
        crd["spec"]["names"]["kind"].as_str().unwrap_or("")
    )
}

async fn with_crd<F, Fut>(ctx: &Ctx, crd: Value, body: F) -> anyhow::Result<()>
where
    F: FnOnce(Value) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    create_crd(ctx, &crd).await?;
    let result = body(crd.clone()).await;
    delete_crd(ctx, &crd).await?;
    result
}

/// A strict apply of a CR with `spec_extra` to a CRD of this schema succeeds.
async fn strict_apply_succeeds(
    ctx: Ctx,
    schema: Value,
    spec_extra: &'static str,
) -> anyhow::Result<()> {
    let crd = random_multiversion_crd(schema);
    let c = ctx.clone();
    with_crd(&ctx, crd, |crd| async move {
        let raw = apply_cr(&c, &crd, &cr_yaml(&crd, "", spec_extra)).await?;
        ensure!(
            (200..300).contains(&raw.status),
            "{} {}",
            raw.status,
            String::from_utf8_lossy(&raw.body)
        );
        Ok(())
    })
    .await
}

async fn unknown_fields_without_schema(ctx: Ctx) -> anyhow::Result<()> {
    strict_apply_succeeds(ctx, allow_all(), "  unknown: uk1\n").await
}

async fn valid_cr_with_schema(ctx: Ctx) -> anyhow::Result<()> {
    strict_apply_succeeds(ctx, validation_schema(), "  foo: foo1\n").await
}

async fn extra_properties_with_schema(ctx: Ctx) -> anyhow::Result<()> {
    let crd = random_multiversion_crd(validation_schema());
    let c = ctx.clone();
    with_crd(&ctx, crd, |crd| async move {
        let raw = apply_cr(
            &c,
            &crd,
            &cr_yaml(&crd, "unknownField: unknown\n", "  foo: foo1\n"),
        )
        .await?;
        let body = String::from_utf8_lossy(&raw.body);
        ensure!(
            body.contains(".unknownField: field not declared in schema"),
            "error missing unknown field: {body}"
        );
        Ok(())
    })
    .await
}

async fn unknown_metadata_typed(ctx: Ctx) -> anyhow::Result<()> {
    let body = r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"my-dep","unknownMeta":"foo","labels":{"app":"nginx"}},"spec":{"selector":{"matchLabels":{"app":"nginx"}},"template":{"metadata":{"labels":{"app":"nginx"}},"spec":{"containers":[{"name":"nginx","image":"nginx:latest"}]}}}}"#;
    let raw = ctx
        .request(
            "POST",
            &format!("/apis/apps/v1/namespaces/{}/deployments?fieldManager=field_validation_mgr&fieldValidation=Strict", ctx.namespace),
            "application/json",
            "application/json",
            body.as_bytes().to_vec(),
        )
        .await?;
    ensure!(raw.status >= 400, "the create succeeded");
    let message = raw.json()?["message"].as_str().unwrap_or("").to_string();
    ensure!(
        message.contains(r#"strict decoding error: unknown field "metadata.unknownMeta""#),
        "unexpected error: {message}"
    );
    Ok(())
}

/// A strict create of a Deployment from a raw JSON body; the error message.
async fn strict_deployment_error(ctx: &Ctx, body: &str) -> anyhow::Result<String> {
    let raw = ctx
        .request(
            "POST",
            &format!("/apis/apps/v1/namespaces/{}/deployments?fieldManager=field_validation_mgr&fieldValidation=Strict", ctx.namespace),
            "application/json",
            "application/json",
            body.as_bytes().to_vec(),
        )
        .await?;
    ensure!(raw.status >= 400, "the create succeeded");
    Ok(raw.json()?["message"].as_str().unwrap_or("").to_string())
}

async fn unknown_and_duplicate_typed(ctx: Ctx) -> anyhow::Result<()> {
    // The body as upstream writes it, key repeated and all.
    let body = r#"{
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "my-dep", "labels": {"app": "nginx"}},
        "spec": {
            "unknownField": "foo",
            "replicas": 2,
            "replicas": 3,
            "selector": {"matchLabels": {"app": "nginx"}},
            "template": {
                "metadata": {"labels": {"app": "nginx"}},
                "spec": {"containers": [{"name": "nginx", "image": "nginx:latest"}]}
            }
        }
    }"#;
    let message = strict_deployment_error(&ctx, body).await?;
    ensure!(
        message.contains(r#"strict decoding error: unknown field "spec.unknownField", duplicate field "spec.replicas""#),
        "error missing unknown/duplicate field field, got: {message}"
    );
    Ok(())
}

/// field_validation.go's schema with `spec` preserving unknown fields, and (`embedded`) a
/// `template` embedded resource.
fn preserving_schema(embedded: bool) -> Value {
    let mut schema = validation_schema();
    schema["properties"]["spec"]["x-kubernetes-preserve-unknown-fields"] = json!(true);
    if embedded {
        schema["properties"]["spec"]["properties"]["template"] = json!({
            "type": "object", "x-kubernetes-embedded-resource": true, "properties": {
                "metadata": {"type": "object", "properties": {"name": {"type": "string"}}},
                "spec": {"type": "object"}}});
    }
    schema
}

async fn unknown_metadata_cr(ctx: Ctx) -> anyhow::Result<()> {
    let crd = random_multiversion_crd(preserving_schema(true));
    let c = ctx.clone();
    with_crd(&ctx, crd, |crd| async move {
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap_or("");
        let yaml = format!(
            "\napiVersion: {GROUP}/v1beta1\nkind: {kind}\nmetadata:\n  name: mytest\n  unknownMeta: unknown\n  finalizers:\n  - test-finalizer\nspec:\n  template:\n    apiversion: foo/v1\n    kind: Sub\n    metadata:\n        unknownSubMeta: unknown\n        name: subobject\n        namespace: {}\n  foo: foo1\n  cronSpec: \"* * * * */5\"\n  ports:\n  - name: x\n    containerPort: 80\n    protocol: TCP",
            c.namespace
        );
        let raw = apply_cr(&c, &crd, &yaml).await?;
        let body = String::from_utf8_lossy(&raw.body);
        ensure!(
            body.contains(".spec.template.metadata.unknownSubMeta: field not declared in schema")
                || body.contains(".metadata.unknownMeta: field not declared in schema"),
            "error missing duplicate field: {body}"
        );
        Ok(())
    })
    .await
}

async fn duplicates_preserving_unknown(ctx: Ctx) -> anyhow::Result<()> {
    let crd = random_multiversion_crd(preserving_schema(false));
    let c = ctx.clone();
    with_crd(&ctx, crd, |crd| async move {
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap_or("");
        let yaml = format!(
            "\napiVersion: {GROUP}/v1beta1\nkind: {kind}\nmetadata:\n  name: mytest\n  finalizers:\n  - test-finalizer\nspec:\n  unknown: uk1\n  foo: foo1\n  foo: foo2\n  cronSpec: \"* * * * */5\"\n  ports:\n  - name: x\n    containerPort: 80\n    protocol: TCP"
        );
        let raw = apply_cr(&c, &crd, &yaml).await?;
        let body = String::from_utf8_lossy(&raw.body);
        ensure!(
            body.contains(r#"line 11: key \"foo\" already set in map"#),
            "error missing duplicate field: {body}"
        );
        Ok(())
    })
    .await
}

/// test/e2e/apimachinery/aggregated_discovery.go and discovery.go: the tests that need only
/// what is served.
pub(super) fn discovery_tests() -> Vec<Test> {
    tests![
        "[sig-api-machinery] AggregatedDiscovery should support raw aggregated discovery endpoint Accept headers" => aggregated_raw,
        "[sig-api-machinery] AggregatedDiscovery should support raw aggregated discovery request for CRDs" => aggregated_raw_crd,
        "[sig-api-machinery] AggregatedDiscovery should support aggregated discovery interface" => aggregated_interface,
        "[sig-api-machinery] AggregatedDiscovery should support aggregated discovery interface for CRDs" => aggregated_interface_crd,
        "[sig-api-machinery] Discovery should validate PreferredVersion for each APIGroup" => preferred_versions,
        "[sig-api-machinery] Discovery should locate the groupVersion and a resource within each APIGroup" => group_version_resources,
    ]
}

const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// The aggregated discovery list has group/version/resource (isGVRPresentAPIDiscovery; an
/// item without a name is the core group, as upstream serves it at `/api`).
fn aggregated_has(list: &Value, group: &str, version: &str, resource: &str) -> bool {
    list["items"].as_array().into_iter().flatten().any(|g| {
        g["metadata"]["name"].as_str().unwrap_or("") == group
            && g["versions"].as_array().into_iter().flatten().any(|v| {
                v["version"] == version
                    && v["resources"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|r| r["resource"] == resource)
            })
    })
}

/// The aggregated discovery fixture's CRD: namespaced `testcrds` in a random group.
fn testcrd() -> Value {
    let group = format!("group{}.example.com", &framework_suffix());
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("testcrds.{group}")},
        "spec": {"group": group, "scope": "Namespaced",
            "names": {"plural": "testcrds", "singular": "testcrd", "kind": "testcrd", "listKind": "testcrdList"},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": allow_all()}}]}})
}

fn framework_suffix() -> String {
    crate::framework::unique("x")[2..].to_string()
}

/// The fixture's create for a CRD of its own group (priming included).
async fn create_group_crd(ctx: &Ctx, crd: &Value) -> anyhow::Result<()> {
    let group = crd["spec"]["group"].as_str().unwrap_or("").to_string();
    crds(ctx)
        .create(
            &PostParams::default(),
            &serde_json::from_value(crd.clone())?,
        )
        .await?;
    eventually(
        Duration::from_secs(30),
        "the definition's discovery",
        || async {
            Ok(in_discovery(ctx, &group, "v1", "testcrds")
                .await?
                .then_some(()))
        },
    )
    .await
}

async fn delete_group_crd(ctx: &Ctx, crd: &Value) -> anyhow::Result<()> {
    let group = crd["spec"]["group"].as_str().unwrap_or("").to_string();
    crds(ctx)
        .delete(
            crd["metadata"]["name"].as_str().unwrap_or(""),
            &DeleteParams::default(),
        )
        .await?;
    eventually(
        Duration::from_secs(30),
        "the definition to leave discovery",
        || async { Ok((!in_discovery(ctx, &group, "v1", "testcrds").await?).then_some(())) },
    )
    .await
}

async fn aggregated_raw_crd(ctx: Ctx) -> anyhow::Result<()> {
    let crd = testcrd();
    create_group_crd(&ctx, &crd).await?;
    let group = crd["spec"]["group"].as_str().unwrap_or("").to_string();
    let result = eventually(
        Duration::from_secs(30),
        "the CRD in aggregated discovery",
        || async {
            let raw = ctx.get_raw("/apis", AGGREGATED).await?;
            Ok(aggregated_has(&raw.json()?, &group, "v1", "testcrds").then_some(()))
        },
    )
    .await
    .map_err(|_| {
        anyhow::anyhow!("timed out waiting for CustomResourceDefinition GVR to appear in Discovery")
    });
    delete_group_crd(&ctx, &crd).await?;
    result
}

/// aggregated_discovery.go's expectedLegacyGVR and expectedGVR (discovery.go walks the same
/// list): (group, version, resource).
const EXPECTED_LEGACY_GVR: [(&str, &str, &str); 1] = [("", "v1", "namespaces")];
const EXPECTED_GVR: [(&str, &str, &str); 18] = [
    (
        "admissionregistration.k8s.io",
        "v1",
        "validatingwebhookconfigurations",
    ),
    ("apiextensions.k8s.io", "v1", "customresourcedefinitions"),
    ("apiregistration.k8s.io", "v1", "apiservices"),
    ("apps", "v1", "deployments"),
    ("authentication.k8s.io", "v1", "tokenreviews"),
    ("authorization.k8s.io", "v1", "selfsubjectaccessreviews"),
    ("autoscaling", "v1", "horizontalpodautoscalers"),
    ("autoscaling", "v2", "horizontalpodautoscalers"),
    ("batch", "v1", "jobs"),
    ("certificates.k8s.io", "v1", "certificatesigningrequests"),
    ("coordination.k8s.io", "v1", "leases"),
    ("discovery.k8s.io", "v1", "endpointslices"),
    ("events.k8s.io", "v1", "events"),
    ("networking.k8s.io", "v1", "ingresses"),
    ("node.k8s.io", "v1", "runtimeclasses"),
    ("policy", "v1", "poddisruptionbudgets"),
    ("scheduling.k8s.io", "v1", "priorityclasses"),
    ("storage.k8s.io", "v1", "csinodes"),
];

/// A raw GET of `path` with the aggregated Accept header, parsed as an APIGroupDiscoveryList
/// (RESTClient().Get().AbsPath(path).SetHeader("Accept", ...).Do().Raw(), then Unmarshal).
async fn raw_aggregated(ctx: &Ctx, path: &str) -> anyhow::Result<Value> {
    let raw = ctx.get_raw(path, AGGREGATED).await?;
    ensure!(
        (200..300).contains(&raw.status),
        "Failed to get raw aggregated discovery document: {path}: {} {}",
        raw.status,
        String::from_utf8_lossy(&raw.body)
    );
    let list = raw.json().context("Failed to parse discovery")?;
    ensure!(
        list.get("items")
            .is_none_or(|i| i.is_null() || i.is_array()),
        "Failed to parse discovery: items is not a list: {}",
        list["items"]
    );
    Ok(list)
}

async fn aggregated_raw(ctx: Ctx) -> anyhow::Result<()> {
    let list = raw_aggregated(&ctx, "/apis").await?;
    for (group, version, resource) in EXPECTED_GVR {
        ensure!(
            aggregated_has(&list, group, version, resource),
            "Expected gvr {group} {version} {resource} to exist in discovery"
        );
    }
    let legacy = raw_aggregated(&ctx, "/api").await?;
    for (group, version, resource) in EXPECTED_LEGACY_GVR {
        ensure!(
            aggregated_has(&legacy, group, version, resource),
            "Expected legacy gvr api {version} {resource} to exist in discovery"
        );
    }
    Ok(())
}

/// client-go's acceptDiscoveryFormats: aggregated v2, then v2beta1, then plain JSON.
const DISCOVERY_ACCEPT: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";

/// client-go's ContentTypeIsGVK for `apidiscovery.k8s.io/<version>, APIGroupDiscoveryList`:
/// the media type is application/json and its g, v and as parameters name the list, in any
/// order and among any other parameters.
fn is_aggregated_content_type(content_type: &str, version: &str) -> bool {
    let mut parts = content_type.split(';');
    let base = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let params: BTreeMap<String, String> = parts
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_ascii_lowercase(),
                v.trim().trim_matches('"').to_string(),
            )
        })
        .collect();
    let param = |k: &str| params.get(k).map(String::as_str);
    base == "application/json"
        && param("g") == Some("apidiscovery.k8s.io")
        && param("v") == Some(version)
        && param("as") == Some("APIGroupDiscoveryList")
}

/// A group and version, as client-go keys resources (the core group is "").
type GroupVersion = (String, String);

/// What client-go's GroupsAndMaybeResources gives back: every group with its versions (the
/// core group first), and the resources of each group version — only when both `/api` and
/// `/apis` answered in the aggregated form.
struct Discovered {
    groups: Vec<(String, Vec<String>)>,
    resources: Option<BTreeMap<GroupVersion, Vec<String>>>,
}

impl Discovered {
    /// isGVRPresent
    fn has_resource(&self, group: &str, version: &str, resource: &str) -> bool {
        self.resources
            .as_ref()
            .and_then(|all| all.get(&(group.to_string(), version.to_string())))
            .is_some_and(|names| names.iter().any(|n| n == resource))
    }

    /// isGVPresent
    fn has_group_version(&self, group: &str, version: &str) -> bool {
        self.groups
            .iter()
            .any(|(name, versions)| name == group && versions.iter().any(|v| v == version))
    }
}

/// A response kind client-go accepts: present and not all empty.
fn has_response_kind(kind: &Value) -> bool {
    kind.is_object()
        && ["group", "version", "kind"]
            .iter()
            .any(|f| !kind[*f].as_str().unwrap_or("").is_empty())
}

/// Each group/version's resources (subresources as `name/sub`).
type GroupResources = BTreeMap<GroupVersion, Vec<String>>;

/// client-go's SplitGroupsAndResources: an APIGroupDiscoveryList as groups and resources.
/// Stale versions are left out; resources and subresources without a response kind too.
fn split_groups_and_resources(list: &Value) -> (Vec<(String, Vec<String>)>, GroupResources) {
    let mut groups = Vec::new();
    let mut resources = BTreeMap::new();
    for item in list["items"].as_array().into_iter().flatten() {
        let name = item["metadata"]["name"].as_str().unwrap_or("").to_string();
        let mut versions = Vec::new();
        for v in item["versions"].as_array().into_iter().flatten() {
            if v["freshness"] == "Stale" {
                continue;
            }
            let version = v["version"].as_str().unwrap_or("").to_string();
            let mut names = Vec::new();
            for r in v["resources"].as_array().into_iter().flatten() {
                let resource = r["resource"].as_str().unwrap_or("");
                if has_response_kind(&r["responseKind"]) {
                    names.push(resource.to_string());
                }
                for sub in r["subresources"].as_array().into_iter().flatten() {
                    if has_response_kind(&sub["responseKind"]) {
                        let sub = sub["subresource"].as_str().unwrap_or("");
                        names.push(format!("{resource}/{sub}"));
                    }
                }
            }
            resources.insert((name.clone(), version.clone()), names);
            versions.push(version);
        }
        groups.push((name, versions));
    }
    (groups, resources)
}

/// One of client-go's downloadLegacy (`/api`) and downloadAPIs (`/apis`): the groups, and the
/// resources when the answer was aggregated. A 404 at `/api` is an empty answer.
async fn download_discovery(
    ctx: &Ctx,
    path: &str,
) -> anyhow::Result<(
    Vec<(String, Vec<String>)>,
    Option<BTreeMap<GroupVersion, Vec<String>>>,
)> {
    let raw = ctx.get_raw(path, DISCOVERY_ACCEPT).await?;
    if path == "/api" && raw.status == 404 {
        return Ok((Vec::new(), Some(BTreeMap::new())));
    }
    ensure!(
        (200..300).contains(&raw.status),
        "GET {path}: {} {}",
        raw.status,
        String::from_utf8_lossy(&raw.body)
    );
    let doc = raw.json()?;
    if is_aggregated_content_type(&raw.content_type, "v2")
        || is_aggregated_content_type(&raw.content_type, "v2beta1")
    {
        let (groups, resources) = split_groups_and_resources(&doc);
        return Ok((groups, Some(resources)));
    }
    let versions_of = |g: &Value| -> Vec<String> {
        g["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["version"].as_str().map(str::to_string))
            .collect()
    };
    let groups = if path == "/api" {
        // APIVersions: the core group, its versions plain names.
        let versions = doc["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        vec![(String::new(), versions)]
    } else {
        doc["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|g| (g["name"].as_str().unwrap_or("").to_string(), versions_of(g)))
            .collect()
    };
    Ok((groups, None))
}

/// client-go's GroupsAndMaybeResources: `/api` then `/apis`, merged; the resources only if
/// both answered with them.
async fn groups_and_maybe_resources(ctx: &Ctx) -> anyhow::Result<Discovered> {
    let (mut groups, legacy_resources) = download_discovery(ctx, "/api").await?;
    let (api_groups, api_resources) = download_discovery(ctx, "/apis").await?;
    groups.extend(api_groups);
    let resources = match (legacy_resources, api_resources) {
        (Some(mut legacy), Some(apis)) => {
            legacy.extend(apis);
            Some(legacy)
        }
        _ => None,
    };
    Ok(Discovered { groups, resources })
}

async fn aggregated_interface(ctx: Ctx) -> anyhow::Result<()> {
    let discovered = groups_and_maybe_resources(&ctx)
        .await
        .context("Failed to get api groups and resources")?;
    let expected: Vec<(&str, &str, &str)> = EXPECTED_GVR
        .iter()
        .chain(&EXPECTED_LEGACY_GVR)
        .copied()
        .collect();
    for &(group, version, resource) in &expected {
        ensure!(
            discovered.has_resource(group, version, resource),
            "Expected {{Group:{group} Version:{version} Resource:{resource}}} to be present"
        );
    }
    // serverGroups is never nil here: a failed download was an error above.
    for &(group, version, _) in &expected {
        ensure!(
            discovered.has_group_version(group, version),
            "Expected {{Group:{group} Version:{version}}} to be present"
        );
    }
    Ok(())
}

async fn aggregated_interface_crd(ctx: Ctx) -> anyhow::Result<()> {
    let crd = testcrd();
    create_group_crd(&ctx, &crd).await?;
    let group = crd["spec"]["group"].as_str().unwrap_or("").to_string();
    let result = eventually(
        Duration::from_secs(30),
        "the CRD in aggregated discovery",
        || async {
            let found = groups_and_maybe_resources(&ctx)
                .await?
                .has_resource(&group, "v1", "testcrds");
            Ok(found.then_some(()))
        },
    )
    .await
    .map_err(|_| {
        anyhow::anyhow!("timed out waiting for CustomResourceDefinition GVR to appear in Discovery")
    });
    delete_group_crd(&ctx, &crd).await?;
    result
}

/// Each listed group version's resource list names itself and holds the resource.
async fn group_version_resources(ctx: Ctx) -> anyhow::Result<()> {
    for &(group, version, resource) in EXPECTED_LEGACY_GVR.iter().chain(&EXPECTED_GVR) {
        let base = if group.is_empty() { "/api" } else { "/apis" };
        let path = if group.is_empty() {
            format!("{base}/{version}")
        } else {
            format!("{base}/{group}/{version}")
        };
        let list: serde_json::Value = ctx.get_json(&path).await?;
        let group_version = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        ensure!(
            list["groupVersion"] == group_version.as_str(),
            "{path}: groupVersion {}",
            list["groupVersion"]
        );
        let found = list["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r["name"] == resource);
        ensure!(
            found,
            "Resource {resource:?} was not found inside of {path}"
        );
    }
    Ok(())
}

async fn preferred_versions(ctx: Ctx) -> anyhow::Result<()> {
    let groups: Value = ctx.get_json("/apis/").await?;
    let groups = groups["groups"].as_array().cloned().unwrap_or_default();
    ensure!(!groups.is_empty(), "no API groups");
    for g in groups {
        let name = g["name"].as_str().unwrap_or("");
        if name.ends_with(".example.com") {
            continue;
        }
        let group: Value = ctx.get_json(&format!("/apis/{name}/")).await?;
        let versions = group["versions"].as_array().cloned().unwrap_or_default();
        ensure!(!versions.is_empty(), "{name} has no versions");
        let preferred = &group["preferredVersion"]["groupVersion"];
        ensure!(
            versions.iter().any(|v| &v["groupVersion"] == preferred),
            "Failed to find a valid version for PreferredVersion {preferred} in versions {versions:?}"
        );
    }
    Ok(())
}

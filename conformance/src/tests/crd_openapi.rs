//! [sig-api-machinery] CustomResourcePublishOpenAPI (test/e2e/apimachinery/crd_publish_openapi.go,
//! with test/utils/crd's CreateMultiVersionTestCRD): a CRD version's schema is published in
//! `/openapi/v2` under the definition name upstream gives it, follows renames and unserving,
//! leaves with the CRD, and kubectl validates and explains custom resources by it.

use std::time::Duration;

use anyhow::{Context as _, anyhow, bail, ensure};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::crd::{delete_crd, wait_discovery};
use super::tests;
use crate::{Ctx, Test};

pub fn tests() -> Vec<Test> {
    tests![
        "[sig-api-machinery] CustomResourcePublishOpenAPI [Privileged:ClusterAdmin] works for CRD with validation schema" => with_validation_schema,
        "[sig-api-machinery] CustomResourcePublishOpenAPI [Privileged:ClusterAdmin] works for CRD without validation schema" => without_validation_schema,
        "[sig-api-machinery] CustomResourcePublishOpenAPI [Privileged:ClusterAdmin] works for CRD preserving unknown fields at the schema root" => preserving_unknown_at_root,
        "[sig-api-machinery] CustomResourcePublishOpenAPI [Privileged:ClusterAdmin] works for CRD preserving unknown fields in an embedded object" => preserving_unknown_in_nested,
        "[sig-api-machinery] CustomResourcePublishOpenAPI [Privileged:ClusterAdmin] works for multiple CRDs of different groups" => different_groups,
        "[sig-api-machinery] CustomResourcePublishOpenAPI [Privileged:ClusterAdmin] works for multiple CRDs of same group but different versions" => same_group_different_versions,
        "[sig-api-machinery] CustomResourcePublishOpenAPI [Privileged:ClusterAdmin] works for multiple CRDs of same group and version but different kinds" => same_group_version_different_kinds,
        "[sig-api-machinery] CustomResourcePublishOpenAPI [Privileged:ClusterAdmin] updates the published spec when one version gets renamed" => version_renamed,
        "[sig-api-machinery] CustomResourcePublishOpenAPI [Privileged:ClusterAdmin] removes definition from spec when one version gets changed to not be served" => version_unserved,
    ]
}

/// The framework's base name (NewDefaultFramework("crd-publish-openapi")).
const BASE_NAME: &str = "crd-publish-openapi";

// ---------------------------------------------------------------------------------------------
// The schemas (upstream's YAML, as JSON).

fn schema_foo() -> Value {
    json!({
        "description": "Foo CRD for Testing",
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "description": "Specification of Foo",
                "properties": {
                    "bars": {
                        "description": "List of Bars and their specs.",
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name"],
                            "properties": {
                                "name": {"description": "Name of Bar.", "type": "string"},
                                "age": {"description": "Age of Bar.", "type": "string"},
                                "feeling": {
                                    "description": "Whether Bar is feeling great.",
                                    "type": "string",
                                    "enum": ["Great", "Down"]
                                },
                                "bazs": {
                                    "description": "List of Bazs.",
                                    "items": {"type": "string"},
                                    "type": "array"
                                }
                            }
                        }
                    }
                }
            },
            "status": {
                "description": "Status of Foo",
                "type": "object",
                "properties": {
                    "bars": {
                        "description": "List of Bars and their statuses.",
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "name": {"description": "Name of Bar.", "type": "string"},
                                "available": {
                                    "description": "Whether the Bar is installed.",
                                    "type": "boolean"
                                },
                                "quxType": {
                                    "description": "Indicates to external qux type.",
                                    "pattern": "in-tree|out-of-tree",
                                    "type": "string"
                                }
                            }
                        }
                    }
                }
            }
        }
    })
}

/// The `spec` and `status` of schemaWaldo, schemaPreserveRoot and schemaPreserveNested.
fn waldo_properties() -> Value {
    json!({
        "spec": {
            "description": "Specification of Waldo",
            "type": "object",
            "properties": {
                "dummy": {"description": "Dummy property.", "type": "object"}
            }
        },
        "status": {
            "description": "Status of Waldo",
            "type": "object",
            "properties": {
                "bars": {
                    "description": "List of Bars and their statuses.",
                    "type": "array",
                    "items": {"type": "object"}
                }
            }
        }
    })
}

fn schema_waldo() -> Value {
    json!({
        "description": "Waldo CRD for Testing",
        "type": "object",
        "properties": waldo_properties(),
    })
}

fn schema_preserve_root() -> Value {
    json!({
        "description": "preserve-unknown-properties at root for Testing",
        "x-kubernetes-preserve-unknown-fields": true,
        "type": "object",
        "properties": waldo_properties(),
    })
}

fn schema_preserve_nested() -> Value {
    let mut properties = waldo_properties();
    properties["spec"]["x-kubernetes-preserve-unknown-fields"] = json!(true);
    json!({
        "description": "preserve-unknown-properties in nested field for Testing",
        "type": "object",
        "properties": properties,
    })
}

// ---------------------------------------------------------------------------------------------
// The CRDs of a test (test/utils/crd and setupCRD/cleanupCRD).

/// A CRD a test made (upstream's crd.TestCrd).
struct TestCrd {
    /// The CRD as the create returned it: what CleanUp deletes and waits to leave discovery.
    created: Value,
    /// Its version names now (Crd.Spec.Versions, which the tests update as they change them).
    versions: Vec<String>,
}

impl TestCrd {
    fn field(&self, path: &[&str]) -> &str {
        let mut v = &self.created;
        for p in path {
            v = &v[*p];
        }
        v.as_str().unwrap_or("")
    }

    fn name(&self) -> &str {
        self.field(&["metadata", "name"])
    }

    fn group(&self) -> &str {
        self.field(&["spec", "group"])
    }

    fn kind(&self) -> &str {
        self.field(&["spec", "names", "kind"])
    }

    fn plural(&self) -> &str {
        self.field(&["spec", "names", "plural"])
    }
}

/// openapiutil.ToRESTFriendlyName: `group/version/kind` with the group's dotted parts reversed,
/// then all joined by dots.
fn to_rest_friendly_name(name: &str) -> String {
    let mut parts: Vec<String> = name.split('/').map(str::to_string).collect();
    if let Some(first) = parts.first_mut()
        && first.contains('.')
    {
        let mut dotted: Vec<&str> = first.split('.').collect();
        dotted.reverse();
        *first = dotted.join(".");
    }
    parts.join(".")
}

/// definitionName: the OpenAPI definition name of the CRD's kind in `version`.
fn definition_name(crd: &TestCrd, version: &str) -> String {
    to_rest_friendly_name(&format!("{}/{version}/{}", crd.group(), crd.kind()))
}

/// metaPattern: kind, apiVersion (the first version) and name, as a JSON fragment.
fn meta(crd: &TestCrd, name: &str) -> String {
    format!(
        r#""kind":"{}","apiVersion":"{}/{}","metadata":{{"name":"{name}"}}"#,
        crd.kind(),
        crd.group(),
        crd.versions.first().map(String::as_str).unwrap_or("")
    )
}

/// genRandomCRD: a namespaced CRD named and kinded `e2e-test-<unique name>-<random>-crd`.
fn gen_random_crd(unique: &str, group: &str, versions: &[Value]) -> Value {
    // framework.RandomSuffix: a random number below 10000.
    let suffix = rand::random_range(0..10000u32);
    let name = format!("e2e-test-{unique}-{suffix}-crd");
    let kind = name.clone();
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{name}s.{group}")},
        "spec": {"group": group, "scope": "Namespaced",
            "names": {"plural": format!("{name}s"), "singular": name, "kind": kind,
                "listKind": format!("{kind}List")},
            "versions": versions}})
}

/// A test's framework: its context, its unique name (f.UniqueName), and the CRDs it made and
/// has not deleted — deleted when it ends, whatever happened.
struct Fixture {
    ctx: Ctx,
    unique: String,
    live: Vec<Value>,
}

impl Fixture {
    fn new(ctx: Ctx) -> Fixture {
        Fixture {
            ctx,
            unique: crate::framework::unique(BASE_NAME),
            live: Vec::new(),
        }
    }

    /// Deletes what a failed test left (without waiting on it: the failure is the news), and
    /// gives back its result.
    async fn finish(self, result: anyhow::Result<()>) -> anyhow::Result<()> {
        let api: Api<CustomResourceDefinition> = self.ctx.cluster();
        for crd in &self.live {
            let name = crd["metadata"]["name"].as_str().unwrap_or("");
            let _ = api.delete(name, &DeleteParams::default()).await;
        }
        result
    }

    /// CreateMultiVersionTestCRD: created (a new name whenever the name is taken, retried
    /// every 2s for up to 30s), then waited for in discovery.
    async fn create_multi_version_test_crd(
        &mut self,
        group: &str,
        versions: &[Value],
    ) -> anyhow::Result<TestCrd> {
        const POLL: Duration = Duration::from_secs(2);
        let api: Api<CustomResourceDefinition> = self.ctx.cluster();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut crd = gen_random_crd(&self.unique, group, versions);
        let created = loop {
            let last = match api
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(crd.clone())?,
                )
                .await
            {
                Ok(created) => break created,
                Err(kube::Error::Api(status)) if status.reason == "AlreadyExists" => {
                    let taken = crd["metadata"]["name"].as_str().unwrap_or("").to_string();
                    crd = gen_random_crd(&self.unique, group, versions);
                    format!("CustomResourceDefinition name {taken:?} was already taken")
                }
                Err(e) => format!("Unexpected error while creating CustomResourceDefinition: {e}"),
            };
            if Instant::now() + POLL > deadline {
                bail!("timed out after 30s creating the CustomResourceDefinition: {last}");
            }
            tokio::time::sleep(POLL).await;
        };
        let created = serde_json::to_value(&created)?;
        self.live.push(created.clone());
        wait_discovery(&self.ctx, &created, true).await?;
        let versions = created["spec"]["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| v["name"].as_str().unwrap_or("").to_string())
            .collect();
        Ok(TestCrd { created, versions })
    }

    /// setupCRD: with no schema the CRD preserves unknown fields, published as `type: object`.
    async fn setup_crd(
        &mut self,
        schema: Option<Value>,
        group_suffix: &str,
        versions: &[&str],
    ) -> anyhow::Result<TestCrd> {
        let expect = schema.clone().unwrap_or_else(|| json!({"type": "object"}));
        self.setup_crd_and_verify_schema(schema, Some(expect), group_suffix, versions)
            .await
    }

    /// setupCRDAndVerifySchema: a CRD in `<base name>-test-<suffix>.example.com` with these
    /// versions (the first the storage one), each with the schema; then each version's
    /// definition waited for, holding `expect` (present only, when None).
    async fn setup_crd_and_verify_schema(
        &mut self,
        schema: Option<Value>,
        expect: Option<Value>,
        group_suffix: &str,
        versions: &[&str],
    ) -> anyhow::Result<TestCrd> {
        let group = format!("{BASE_NAME}-test-{group_suffix}.example.com");
        ensure!(!versions.is_empty(), "require at least one version for CRD");
        let props = schema.unwrap_or_else(
            || json!({"x-kubernetes-preserve-unknown-fields": true, "type": "object"}),
        );
        let versions: Vec<Value> = versions
            .iter()
            .enumerate()
            .map(|(i, v)| {
                json!({"name": v, "served": true, "storage": i == 0,
                    "schema": {"openAPIV3Schema": props}})
            })
            .collect();
        let crd = self
            .create_multi_version_test_crd(&group, &versions)
            .await
            .context("failed to create CRD")?;
        for v in &crd.versions {
            wait_for_definition(&self.ctx, &definition_name(&crd, v), expect.as_ref()).await?;
        }
        Ok(crd)
    }

    /// cleanupCRD: the CRD deleted (and gone from discovery), then each of its versions'
    /// definitions waited out of `/openapi/v2`.
    async fn cleanup_crd(&mut self, crd: &TestCrd) -> anyhow::Result<()> {
        delete_crd(&self.ctx, &crd.created).await.with_context(|| {
            format!("failed to delete CustomResourceDefinition({})", crd.name())
        })?;
        self.live.retain(|c| c["metadata"]["name"] != crd.name());
        for v in &crd.versions {
            wait_for_definition_cleanup(&self.ctx, &definition_name(crd, v)).await?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// `/openapi/v2` (waitForOpenAPISchema, waitForDefinition, waitForDefinitionCleanup).

/// How often, how long, and how many successive successes (waitSuccessThreshold).
const OPENAPI_POLL: Duration = Duration::from_millis(500);
const OPENAPI_TIMEOUT: Duration = Duration::from_secs(60);
const WAIT_SUCCESS_THRESHOLD: usize = 10;

/// The spec as last downloaded, and its ETag.
#[derive(Default)]
struct OpenApiV2 {
    etag: String,
    definitions: Option<Map<String, Value>>,
}

impl OpenApiV2 {
    /// A download of `/openapi/v2` with ETag support: `If-None-Match: "<etag>"` once there is
    /// one, a 304 reusing the spec it names; anything but 200 and 304 is an error.
    async fn definitions(&mut self, ctx: &Ctx) -> anyhow::Result<&Map<String, Value>> {
        let if_none_match = format!("\"{}\"", self.etag);
        let headers: Vec<(&str, &str)> = if self.etag.is_empty() {
            Vec::new()
        } else {
            vec![("If-None-Match", if_none_match.as_str())]
        };
        let raw = ctx.get_with_headers("/openapi/v2", &headers).await?;
        match raw.status {
            304 => {}
            200 => {
                let mut doc: Value =
                    serde_json::from_slice(&raw.body).context("decoding /openapi/v2")?;
                ensure!(doc.is_object(), "/openapi/v2 is not a JSON object");
                let definitions = match doc.get_mut("definitions").map(Value::take) {
                    None | Some(Value::Null) => Map::new(),
                    Some(Value::Object(m)) => m,
                    Some(other) => bail!("/openapi/v2: definitions is not an object: {other}"),
                };
                self.etag = raw
                    .headers
                    .get(http::header::ETAG)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .trim_matches('"')
                    .to_string();
                self.definitions = Some(definitions);
            }
            code => bail!("unexpected response: {code}"),
        }
        self.definitions
            .as_ref()
            .context("a 304 Not Modified before any spec was downloaded")
    }
}

/// waitForOpenAPISchema: every 500ms for up to 60s, `pred` must hold for ten downloads in a
/// row (mustSucceedMultipleTimes); a failed download ends the wait.
async fn wait_for_openapi_schema<P>(ctx: &Ctx, mut pred: P) -> anyhow::Result<()>
where
    P: FnMut(&Map<String, Value>) -> (bool, String),
{
    let mut spec = OpenApiV2::default();
    let mut last_msg = String::new();
    let deadline = Instant::now() + OPENAPI_TIMEOUT;
    loop {
        tokio::time::sleep(OPENAPI_POLL).await;
        let mut ok = true;
        for _ in 0..WAIT_SUCCESS_THRESHOLD {
            let definitions = match spec.definitions(ctx).await {
                Ok(d) => d,
                Err(e) => bail!(
                    "failed to wait for OpenAPI spec validating condition: {e:#}; lastMsg: {last_msg}"
                ),
            };
            let (good, msg) = pred(definitions);
            last_msg = msg;
            if !good {
                ok = false;
                break;
            }
        }
        if ok {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "failed to wait for OpenAPI spec validating condition: timed out waiting for the \
                 condition; lastMsg: {last_msg}"
            );
        }
    }
}

/// waitForDefinition: the definition is served, and — given a schema — equals it: the
/// definition without what the server adds (dropDefaults) against the schema as
/// convertJSONSchemaProps makes it, compared as apiequality.Semantic.DeepEqual compares the
/// two kube-openapi spec.Schema values they decode to.
async fn wait_for_definition(ctx: &Ctx, name: &str, schema: Option<&Value>) -> anyhow::Result<()> {
    let expect = match schema {
        Some(s) => Some(canonical_schema(&convert_json_schema_props(s)?)),
        None => None,
    };
    wait_for_openapi_schema(ctx, |definitions| {
        let Some(d) = definitions.get(name) else {
            return (
                false,
                format!("spec.SwaggerProps.Definitions[\"{name}\"] not found"),
            );
        };
        if let Some(expect) = &expect {
            let mut d = d.clone();
            drop_defaults(&mut d);
            let actual = canonical_schema(&d);
            if *expect != actual {
                return (
                    false,
                    format!(
                        "spec.SwaggerProps.Definitions[\"{name}\"] not match; expect: {expect}, actual: {actual}"
                    ),
                );
            }
        }
        (true, String::new())
    })
    .await
    .map_err(|e| {
        anyhow!(
            "failed to wait for definition {name:?} to be served with the right OpenAPI schema: {e:#}"
        )
    })
}

/// waitForDefinitionCleanup: the definition is no longer served.
async fn wait_for_definition_cleanup(ctx: &Ctx, name: &str) -> anyhow::Result<()> {
    wait_for_openapi_schema(ctx, |definitions| {
        if definitions.contains_key(name) {
            (
                false,
                format!("spec.SwaggerProps.Definitions[\"{name}\"] still exists"),
            )
        } else {
            (true, String::new())
        }
    })
    .await
    .map_err(|e| anyhow!("failed to wait for definition {name:?} not to be served anymore: {e:#}"))
}

/// dropDefaults: the properties and extensions the server adds to a CRD's schema.
fn drop_defaults(d: &mut Value) {
    if let Some(properties) = d.get_mut("properties").and_then(Value::as_object_mut) {
        for p in ["metadata", "apiVersion", "kind"] {
            properties.remove(p);
        }
    }
    if let Some(d) = d.as_object_mut() {
        d.remove("x-kubernetes-group-version-kind");
        d.remove("x-kubernetes-selectable-fields");
    }
}

/// convertJSONSchemaProps: a JSONSchemaProps (strictly decoded: an unknown field is an error)
/// converted to the internal version and then, by validation.ConvertJSONSchemaPropsWithPostProcess,
/// to a kube-openapi spec.Schema, here in its JSON form. Upstream's post-processing strips the
/// formats the server does not support; no fixture here has a format, so one is refused rather
/// than guessed at.
fn convert_json_schema_props(props: &Value) -> anyhow::Result<Value> {
    let Some(obj) = props.as_object() else {
        bail!("a JSONSchemaProps must be an object: {props}");
    };
    let mut out = Map::new();
    let mut extensions = Map::new();
    let mut int_or_string = false;
    let schema_list = |v: &Value| -> anyhow::Result<Value> {
        match v {
            Value::Null => Ok(Value::Null),
            Value::Array(items) => Ok(Value::Array(
                items
                    .iter()
                    .map(convert_json_schema_props)
                    .collect::<anyhow::Result<Vec<Value>>>()?,
            )),
            other => bail!("expected a list of schemas: {other}"),
        }
    };
    let schema_map = |v: &Value| -> anyhow::Result<Value> {
        match v {
            Value::Null => Ok(Value::Null),
            Value::Object(m) => Ok(Value::Object(
                m.iter()
                    .map(|(k, s)| -> anyhow::Result<(String, Value)> {
                        Ok((k.clone(), convert_json_schema_props(s)?))
                    })
                    .collect::<anyhow::Result<Map<String, Value>>>()?,
            )),
            other => bail!("expected a map of schemas: {other}"),
        }
    };
    for (k, v) in obj {
        match k.as_str() {
            "id" | "$schema" | "$ref" | "description" | "title" | "nullable" | "maximum"
            | "exclusiveMaximum" | "minimum" | "exclusiveMinimum" | "maxLength" | "minLength"
            | "pattern" | "maxItems" | "minItems" | "uniqueItems" | "multipleOf"
            | "maxProperties" | "minProperties" | "required" | "default" | "example" | "enum"
            | "externalDocs" => {
                out.insert(k.clone(), v.clone());
            }
            "type" => {
                if v.as_str().is_some_and(|t| !t.is_empty()) {
                    out.insert(k.clone(), json!([v]));
                }
            }
            "format" => {
                ensure!(
                    v.as_str().unwrap_or("").is_empty(),
                    "the fixture has a format ({v}): port the supported formats before using one"
                );
            }
            "allOf" | "oneOf" | "anyOf" => {
                out.insert(k.clone(), schema_list(v)?);
            }
            "properties" | "patternProperties" | "definitions" => {
                out.insert(k.clone(), schema_map(v)?);
            }
            "not" => {
                out.insert(k.clone(), convert_json_schema_props(v)?);
            }
            "items" => {
                let items = if v.is_array() {
                    schema_list(v)?
                } else {
                    convert_json_schema_props(v)?
                };
                out.insert(k.clone(), items);
            }
            "additionalProperties" | "additionalItems" => {
                let converted = match v {
                    Value::Bool(_) | Value::Null => v.clone(),
                    _ => convert_json_schema_props(v)?,
                };
                out.insert(k.clone(), converted);
            }
            "dependencies" => {
                let Some(deps) = v.as_object() else {
                    bail!("dependencies must be a map: {v}");
                };
                let mut converted = Map::new();
                for (name, dep) in deps {
                    let dep = if dep.is_array() {
                        dep.clone()
                    } else {
                        convert_json_schema_props(dep)?
                    };
                    converted.insert(name.clone(), dep);
                }
                out.insert(k.clone(), Value::Object(converted));
            }
            "x-kubernetes-preserve-unknown-fields"
            | "x-kubernetes-list-type"
            | "x-kubernetes-map-type" => {
                if !v.is_null() {
                    extensions.insert(k.clone(), v.clone());
                }
            }
            "x-kubernetes-embedded-resource" => {
                if v == &Value::Bool(true) {
                    extensions.insert(k.clone(), v.clone());
                }
            }
            "x-kubernetes-int-or-string" => {
                if v == &Value::Bool(true) {
                    extensions.insert(k.clone(), v.clone());
                    int_or_string = true;
                }
            }
            "x-kubernetes-list-map-keys" | "x-kubernetes-validations" => {
                if v.as_array().is_some_and(|a| !a.is_empty()) {
                    extensions.insert(k.clone(), v.clone());
                }
            }
            other => bail!("unknown field {other:?} in a JSONSchemaProps"),
        }
    }
    if int_or_string {
        out.insert("type".into(), json!(["integer", "string"]));
    }
    out.extend(extensions);
    Ok(Value::Object(out))
}

/// spec.Schema's boolean, string and optional-number fields.
const SCHEMA_BOOLS: [&str; 5] = [
    "nullable",
    "exclusiveMaximum",
    "exclusiveMinimum",
    "uniqueItems",
    "readOnly",
];
const SCHEMA_STRINGS: [&str; 8] = [
    "id",
    "$schema",
    "$ref",
    "description",
    "format",
    "title",
    "pattern",
    "discriminator",
];
const SCHEMA_NUMBERS: [&str; 9] = [
    "maximum",
    "minimum",
    "maxLength",
    "minLength",
    "maxItems",
    "minItems",
    "multipleOf",
    "maxProperties",
    "minProperties",
];

fn is_empty_list_or_map(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        _ => false,
    }
}

/// A schema in the one JSON form of what it decodes to as a kube-openapi spec.Schema, so two
/// schemas are apiequality.Semantic.DeepEqual exactly when their forms are equal: a false
/// boolean field or empty string field is as absent; a null, empty list or empty map field as
/// absent (Semantic equality takes nil and empty slices and maps as equal); a single `type` is
/// a list of one; numbers are compared as the float64 they decode to; extensions and unknown
/// fields (Extensions and ExtraProps) are kept as they are.
fn canonical_schema(v: &Value) -> Value {
    let Some(obj) = v.as_object() else {
        return canonical_value(v);
    };
    let mut out = Map::new();
    for (k, val) in obj {
        let kept = match k.as_str() {
            "type" => match val {
                Value::String(s) => Some(json!([s])),
                v if is_empty_list_or_map(v) => None,
                other => Some(canonical_value(other)),
            },
            k if SCHEMA_BOOLS.contains(&k) => {
                (!val.is_null() && val != &Value::Bool(false)).then(|| val.clone())
            }
            k if SCHEMA_STRINGS.contains(&k) => {
                (!val.is_null() && val.as_str() != Some("")).then(|| val.clone())
            }
            k if SCHEMA_NUMBERS.contains(&k) => (!val.is_null()).then(|| canonical_value(val)),
            "required" | "enum" => (!is_empty_list_or_map(val)).then(|| canonical_value(val)),
            "allOf" | "oneOf" | "anyOf" => match val {
                v if is_empty_list_or_map(v) => None,
                Value::Array(a) => Some(Value::Array(a.iter().map(canonical_schema).collect())),
                other => Some(canonical_value(other)),
            },
            "properties" | "patternProperties" | "definitions" | "dependencies" => match val {
                v if is_empty_list_or_map(v) => None,
                Value::Object(m) => Some(Value::Object(
                    m.iter()
                        .map(|(name, s)| {
                            let s = if s.is_object() {
                                canonical_schema(s)
                            } else {
                                canonical_value(s)
                            };
                            (name.clone(), s)
                        })
                        .collect(),
                )),
                other => Some(canonical_value(other)),
            },
            "not" | "items" | "additionalProperties" | "additionalItems" => match val {
                Value::Null => None,
                Value::Object(_) => Some(canonical_schema(val)),
                Value::Array(a) => Some(Value::Array(a.iter().map(canonical_schema).collect())),
                other => Some(other.clone()),
            },
            "default" | "example" => (!val.is_null()).then(|| canonical_value(val)),
            "externalDocs" | "xml" => match val {
                Value::Null => None,
                Value::Object(m) => Some(Value::Object(
                    m.iter()
                        .filter(|(_, v)| {
                            !v.is_null() && v.as_str() != Some("") && v != &&Value::Bool(false)
                        })
                        .map(|(k, v)| (k.clone(), canonical_value(v)))
                        .collect(),
                )),
                other => Some(canonical_value(other)),
            },
            _ => Some(canonical_value(val)),
        };
        if let Some(kept) = kept {
            out.insert(k.clone(), kept);
        }
    }
    Value::Object(out)
}

/// A JSON value as Go decodes it into an interface{}: every number a float64.
fn canonical_value(v: &Value) -> Value {
    match v {
        Value::Number(n) => n.as_f64().map(Value::from).unwrap_or_else(|| v.clone()),
        Value::Array(a) => Value::Array(a.iter().map(canonical_value).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), canonical_value(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

// ---------------------------------------------------------------------------------------------
// kubectl (e2ekubectl.RunKubectl, RunKubectlInput, verifyKubectlExplain).

/// kubectl with the builder's `--namespace=<test namespace>` before `args`: Ok(stdout) when it
/// succeeded, else Err with the text of the builder's error — the command, its stdout and its
/// stderr — which the tests search for messages. The outer error: kubectl could not be run.
pub(crate) async fn run_kubectl(
    ctx: &Ctx,
    input: Option<&str>,
    args: &[&str],
) -> anyhow::Result<Result<String, String>> {
    let ns = format!("--namespace={}", ctx.namespace);
    let mut all = vec![ns.as_str()];
    all.extend_from_slice(args);
    let (ok, stdout, stderr) = ctx.kubectl(&all, input).await?;
    if ok {
        return Ok(Ok(stdout));
    }
    Ok(Err(format!(
        "error running kubectl {}:\nCommand stdout:\n{stdout}\nstderr:\n{stderr}\nerror:\nkubectl exited unsuccessfully",
        all.join(" ")
    )))
}

/// A kubectl run that must succeed; otherwise `what` and its error.
async fn kubectl_ok(
    ctx: &Ctx,
    input: Option<&str>,
    args: &[&str],
    what: &str,
) -> anyhow::Result<()> {
    match run_kubectl(ctx, input, args).await? {
        Ok(_) => Ok(()),
        Err(e) => bail!("{what}: {e}"),
    }
}

/// A kubectl run that must fail with one of `wanted` in its error; otherwise `what` and the
/// error (`<nil>` when it succeeded).
async fn kubectl_fails(
    ctx: &Ctx,
    input: Option<&str>,
    args: &[&str],
    wanted: &[&str],
    what: &str,
) -> anyhow::Result<()> {
    match run_kubectl(ctx, input, args).await? {
        Ok(_) => bail!("{what}: <nil>"),
        Err(e) if wanted.iter().any(|w| e.contains(w)) => Ok(()),
        Err(e) => bail!("{what}: {e}"),
    }
}

/// verifyKubectlExplain: `kubectl explain <name>` succeeds and its output matches `pattern`.
async fn verify_kubectl_explain(ctx: &Ctx, name: &str, pattern: &str) -> anyhow::Result<()> {
    let result = match run_kubectl(ctx, None, &["explain", name]).await? {
        Ok(out) => out,
        Err(e) => bail!("failed to explain {name}: {e}"),
    };
    let r = regex::Regex::new(pattern)?;
    ensure!(
        r.is_match(&result),
        "kubectl explain {name} result {{{result}}} doesn't match pattern {{{pattern}}}"
    );
    Ok(())
}

/// The create, delete, apply, delete of a custom resource that kubectl validation must allow;
/// the messages: of a failed create, delete and apply.
async fn create_and_apply(
    ctx: &Ctx,
    crd: &TestCrd,
    cr: &str,
    name: &str,
    failed: [String; 3],
) -> anyhow::Result<()> {
    let [create_failed, delete_failed, apply_failed] = failed;
    let (create_failed, delete_failed, apply_failed) = (
        create_failed.as_str(),
        delete_failed.as_str(),
        apply_failed.as_str(),
    );
    let ns = format!("--namespace={}", ctx.namespace);
    let ns = ns.as_str();
    let plural = crd.plural();
    kubectl_ok(ctx, Some(cr), &[ns, "create", "-f", "-"], create_failed).await?;
    kubectl_ok(ctx, None, &[ns, "delete", plural, name], delete_failed).await?;
    kubectl_ok(ctx, Some(cr), &[ns, "apply", "-f", "-"], apply_failed).await?;
    kubectl_ok(ctx, None, &[ns, "delete", plural, name], delete_failed).await
}

// ---------------------------------------------------------------------------------------------
// The tests.

/// Each test body runs on a fixture that deletes, at the end, whatever CRD it left.
macro_rules! with_fixture {
    ($($test:ident => $body:ident),* $(,)?) => {
        $(
            async fn $test(ctx: Ctx) -> anyhow::Result<()> {
                let mut f = Fixture::new(ctx);
                let result = $body(&mut f).await;
                f.finish(result).await
            }
        )*
    };
}

with_fixture! {
    with_validation_schema => with_validation_schema_body,
    without_validation_schema => without_validation_schema_body,
    preserving_unknown_at_root => preserving_unknown_at_root_body,
    preserving_unknown_in_nested => preserving_unknown_in_nested_body,
    different_groups => different_groups_body,
    same_group_different_versions => same_group_different_versions_body,
    same_group_version_different_kinds => same_group_version_different_kinds_body,
    version_renamed => version_renamed_body,
    version_unserved => version_unserved_body,
}

async fn with_validation_schema_body(f: &mut Fixture) -> anyhow::Result<()> {
    let crd = f.setup_crd(Some(schema_foo()), "foo", &["v1"]).await?;
    let ctx = f.ctx.clone();
    let meta = meta(&crd, "test-foo");
    let ns = format!("--namespace={}", ctx.namespace);
    let plural = crd.plural().to_string();
    let create: &[&str] = &[ns.as_str(), "create", "-f", "-"];
    let apply: &[&str] = &[ns.as_str(), "apply", "-f", "-"];

    // kubectl validation (kubectl create and apply) allows request with known and required
    // properties
    let valid_cr = format!(r#"{{{meta},"spec":{{"bars":[{{"name":"test-bar"}}]}}}}"#);
    create_and_apply(
        &ctx,
        &crd,
        &valid_cr,
        "test-foo",
        [
            format!("failed to create valid CR {valid_cr}"),
            "failed to delete valid CR".to_string(),
            format!("failed to apply valid CR {valid_cr}"),
        ],
    )
    .await?;

    // kubectl validation (kubectl create and apply) rejects request with value outside defined
    // enum values
    let bad_enum_value_cr = format!(
        r#"{{{meta},"spec":{{"bars":[{{"name":"test-bar", "feeling":"NonExistentValue"}}]}}}}"#
    );
    kubectl_fails(
        &ctx,
        Some(bad_enum_value_cr.as_str()),
        create,
        &[r#"Unsupported value: "NonExistentValue""#],
        "unexpected no error when creating CR with unknown enum value",
    )
    .await?;

    // kubectl validation (kubectl create and apply) rejects request with unknown properties
    // when disallowed by the schema
    let unknown_cr = format!(r#"{{{meta},"spec":{{"foo":true}}}}"#);
    let unknown = [r#"unknown field "foo""#, r#"unknown field "spec.foo""#];
    kubectl_fails(
        &ctx,
        Some(unknown_cr.as_str()),
        create,
        &unknown,
        "unexpected no error when creating CR with unknown field",
    )
    .await?;
    kubectl_fails(
        &ctx,
        Some(unknown_cr.as_str()),
        apply,
        &unknown,
        "unexpected no error when applying CR with unknown field",
    )
    .await?;

    // kubectl validation (kubectl create and apply) rejects request without required
    // properties
    let no_require_cr = format!(r#"{{{meta},"spec":{{"bars":[{{"age":"10"}}]}}}}"#);
    let required = [
        r#"missing required field "name""#,
        r#"spec.bars[0].name: Required value"#,
    ];
    kubectl_fails(
        &ctx,
        Some(no_require_cr.as_str()),
        create,
        &required,
        "unexpected no error when creating CR without required field",
    )
    .await?;
    kubectl_fails(
        &ctx,
        Some(no_require_cr.as_str()),
        apply,
        &required,
        "unexpected no error when applying CR without required field",
    )
    .await?;

    // kubectl explain works to explain CR properties
    verify_kubectl_explain(
        &ctx,
        &plural,
        r"(?s)DESCRIPTION:.*Foo CRD for Testing.*FIELDS:.*apiVersion.*<string>.*APIVersion defines.*spec.*<Object>.*Specification of Foo",
    )
    .await?;

    // kubectl explain works to explain CR properties recursively
    verify_kubectl_explain(
        &ctx,
        &format!("{plural}.metadata"),
        r"(?s)DESCRIPTION:.*Standard object's metadata.*FIELDS:.*creationTimestamp.*<string>.*CreationTimestamp is a timestamp",
    )
    .await?;
    verify_kubectl_explain(
        &ctx,
        &format!("{plural}.spec"),
        r"(?s)DESCRIPTION:.*Specification of Foo.*FIELDS:.*bars.*<\[\]Object>.*List of Bars and their specs",
    )
    .await?;
    verify_kubectl_explain(
        &ctx,
        &format!("{plural}.spec.bars"),
        r"(?s)(FIELD|RESOURCE):.*bars.*<\[\]Object>.*DESCRIPTION:.*List of Bars and their specs.*FIELDS:.*bazs.*<\[\]string>.*List of Bazs.*name.*<string>.*Name of Bar",
    )
    .await?;

    // kubectl explain works to return error when explain is called on property that doesn't
    // exist
    let bars2 = format!("{plural}.spec.bars2");
    kubectl_fails(
        &ctx,
        None,
        &["explain", bars2.as_str()],
        &[r#"field "bars2" does not exist"#],
        "unexpected no error when explaining property that doesn't exist",
    )
    .await?;

    f.cleanup_crd(&crd).await
}

async fn without_validation_schema_body(f: &mut Fixture) -> anyhow::Result<()> {
    let crd = f.setup_crd(None, "empty", &["v1"]).await?;
    let ctx = f.ctx.clone();
    let meta = meta(&crd, "test-cr");

    // kubectl validation (kubectl create and apply) allows request with any unknown properties
    let random_cr = format!(r#"{{{meta},"a":{{"b":[{{"c":"d"}}]}}}}"#);
    create_and_apply(
        &ctx,
        &crd,
        &random_cr,
        "test-cr",
        [
            format!("failed to create random CR {random_cr} for CRD without schema"),
            "failed to delete random CR".to_string(),
            format!("failed to apply random CR {random_cr} for CRD without schema"),
        ],
    )
    .await?;

    // kubectl explain works to explain CR without validation schema
    verify_kubectl_explain(&ctx, crd.plural(), r"(?s)DESCRIPTION:.*<empty>").await?;

    f.cleanup_crd(&crd).await
}

async fn preserving_unknown_at_root_body(f: &mut Fixture) -> anyhow::Result<()> {
    let crd = f
        .setup_crd_and_verify_schema(
            Some(schema_preserve_root()),
            None,
            "unknown-at-root",
            &["v1"],
        )
        .await?;
    let ctx = f.ctx.clone();
    let meta = meta(&crd, "test-cr");

    // kubectl validation (kubectl create and apply) allows request with any unknown properties
    let random_cr = format!(r#"{{{meta},"a":{{"b":[{{"c":"d"}}]}}}}"#);
    create_and_apply(
        &ctx,
        &crd,
        &random_cr,
        "test-cr",
        [
            format!(
                "failed to create random CR {random_cr} for CRD that allows unknown properties \
                 at the root"
            ),
            "failed to delete random CR".to_string(),
            format!("failed to apply random CR {random_cr} for CRD without schema"),
        ],
    )
    .await?;

    // kubectl explain works to explain CR
    verify_kubectl_explain(&ctx, crd.plural(), &format!("(?s)KIND:.*{}", crd.kind())).await?;

    f.cleanup_crd(&crd).await
}

async fn preserving_unknown_in_nested_body(f: &mut Fixture) -> anyhow::Result<()> {
    let crd = f
        .setup_crd_and_verify_schema(
            Some(schema_preserve_nested()),
            None,
            "unknown-in-nested",
            &["v1"],
        )
        .await?;
    let ctx = f.ctx.clone();
    let meta = meta(&crd, "test-cr");

    // kubectl validation (kubectl create and apply) allows request with any unknown properties
    let random_cr = format!(r#"{{{meta},"spec":{{"a":null,"b":[{{"c":"d"}}]}}}}"#);
    create_and_apply(
        &ctx,
        &crd,
        &random_cr,
        "test-cr",
        [
            format!(
                "failed to create random CR {random_cr} for CRD that allows unknown properties \
                 in a nested object"
            ),
            "failed to delete random CR".to_string(),
            format!("failed to apply random CR {random_cr} for CRD without schema"),
        ],
    )
    .await?;

    // kubectl explain works to explain CR
    verify_kubectl_explain(
        &ctx,
        crd.plural(),
        r"(?s)DESCRIPTION:.*preserve-unknown-properties in nested field for Testing",
    )
    .await?;

    f.cleanup_crd(&crd).await
}

async fn different_groups_body(f: &mut Fixture) -> anyhow::Result<()> {
    // CRs in different groups (two CRDs) show up in OpenAPI documentation
    let crd_foo = f.setup_crd(Some(schema_foo()), "foo", &["v1"]).await?;
    let crd_waldo = f
        .setup_crd(Some(schema_waldo()), "waldo", &["v1beta1"])
        .await?;
    ensure!(
        crd_foo.group() != crd_waldo.group(),
        "unexpected: CRDs should be of different group {}, {}",
        crd_foo.group(),
        crd_waldo.group()
    );
    let ctx = f.ctx.clone();
    wait_for_definition(
        &ctx,
        &definition_name(&crd_waldo, "v1beta1"),
        Some(&schema_waldo()),
    )
    .await?;
    wait_for_definition(&ctx, &definition_name(&crd_foo, "v1"), Some(&schema_foo())).await?;
    f.cleanup_crd(&crd_foo).await?;
    f.cleanup_crd(&crd_waldo).await
}

async fn same_group_different_versions_body(f: &mut Fixture) -> anyhow::Result<()> {
    let ctx = f.ctx.clone();

    // CRs in the same group but different versions (one multiversion CRD) show up in OpenAPI
    // documentation
    let crd_multi_ver = f
        .setup_crd(Some(schema_foo()), "multi-ver", &["v2", "v3"])
        .await?;
    wait_for_definition(
        &ctx,
        &definition_name(&crd_multi_ver, "v3"),
        Some(&schema_foo()),
    )
    .await?;
    wait_for_definition(
        &ctx,
        &definition_name(&crd_multi_ver, "v2"),
        Some(&schema_foo()),
    )
    .await?;
    f.cleanup_crd(&crd_multi_ver).await?;

    // CRs in the same group but different versions (two CRDs) show up in OpenAPI documentation
    let crd_foo = f
        .setup_crd(Some(schema_foo()), "common-group", &["v4"])
        .await?;
    let crd_waldo = f
        .setup_crd(Some(schema_waldo()), "common-group", &["v5"])
        .await?;
    ensure!(
        crd_foo.group() == crd_waldo.group(),
        "unexpected: CRDs should be of the same group {}, {}",
        crd_foo.group(),
        crd_waldo.group()
    );
    wait_for_definition(
        &ctx,
        &definition_name(&crd_waldo, "v5"),
        Some(&schema_waldo()),
    )
    .await?;
    wait_for_definition(&ctx, &definition_name(&crd_foo, "v4"), Some(&schema_foo())).await?;
    f.cleanup_crd(&crd_foo).await?;
    f.cleanup_crd(&crd_waldo).await
}

async fn same_group_version_different_kinds_body(f: &mut Fixture) -> anyhow::Result<()> {
    // CRs in the same group and version but different kinds (two CRDs) show up in OpenAPI
    // documentation
    let crd_foo = f
        .setup_crd(Some(schema_foo()), "common-group", &["v6"])
        .await?;
    let crd_waldo = f
        .setup_crd(Some(schema_waldo()), "common-group", &["v6"])
        .await?;
    ensure!(
        crd_foo.group() == crd_waldo.group(),
        "unexpected: CRDs should be of the same group {}, {}",
        crd_foo.group(),
        crd_waldo.group()
    );
    let ctx = f.ctx.clone();
    wait_for_definition(
        &ctx,
        &definition_name(&crd_waldo, "v6"),
        Some(&schema_waldo()),
    )
    .await?;
    wait_for_definition(&ctx, &definition_name(&crd_foo, "v6"), Some(&schema_foo())).await?;
    f.cleanup_crd(&crd_foo).await?;
    f.cleanup_crd(&crd_waldo).await
}

async fn version_renamed_body(f: &mut Fixture) -> anyhow::Result<()> {
    let ctx = f.ctx.clone();

    // set up a multi version CRD
    let mut crd_multi_ver = f
        .setup_crd(Some(schema_foo()), "multi-ver", &["v2", "v3"])
        .await?;
    wait_for_definition(
        &ctx,
        &definition_name(&crd_multi_ver, "v3"),
        Some(&schema_foo()),
    )
    .await?;
    wait_for_definition(
        &ctx,
        &definition_name(&crd_multi_ver, "v2"),
        Some(&schema_foo()),
    )
    .await?;

    // rename a version
    let patch: Patch<()> = Patch::Json(serde_json::from_value(json!([
        {"op": "test", "path": "/spec/versions/1/name", "value": "v3"},
        {"op": "replace", "path": "/spec/versions/1/name", "value": "v4"}
    ]))?);
    let api: Api<CustomResourceDefinition> = ctx.cluster();
    let name = crd_multi_ver.name().to_string();
    let patched = api.patch(&name, &PatchParams::default(), &patch).await?;
    crd_multi_ver.versions = patched
        .spec
        .versions
        .iter()
        .map(|v| v.name.clone())
        .collect();

    // check the new version name is served
    wait_for_definition(
        &ctx,
        &definition_name(&crd_multi_ver, "v4"),
        Some(&schema_foo()),
    )
    .await?;
    // check the old version name is removed
    wait_for_definition_cleanup(&ctx, &definition_name(&crd_multi_ver, "v3")).await?;
    // check the other version is not changed
    wait_for_definition(
        &ctx,
        &definition_name(&crd_multi_ver, "v2"),
        Some(&schema_foo()),
    )
    .await?;

    // As upstream sets Crd.Spec.Versions[1].Name for cleanupCRD.
    if let Some(v) = crd_multi_ver.versions.get_mut(1) {
        *v = "v4".to_string();
    }
    f.cleanup_crd(&crd_multi_ver).await
}

async fn version_unserved_body(f: &mut Fixture) -> anyhow::Result<()> {
    let ctx = f.ctx.clone();

    // set up a multi version CRD
    let mut crd = f
        .setup_crd(
            Some(schema_foo()),
            "multi-to-single-ver",
            &["v5", "v6alpha1"],
        )
        .await?;
    // just double check. setupCRD() checked this for us already
    wait_for_definition(
        &ctx,
        &definition_name(&crd, "v6alpha1"),
        Some(&schema_foo()),
    )
    .await?;
    wait_for_definition(&ctx, &definition_name(&crd, "v5"), Some(&schema_foo())).await?;

    // mark a version not served
    let api: Api<CustomResourceDefinition> = ctx.cluster();
    let name = crd.name().to_string();
    let mut got = api.get(&name).await?;
    got.spec
        .versions
        .get_mut(1)
        .with_context(|| format!("{name} has fewer than two versions"))?
        .served = false;
    let updated = api.replace(&name, &PostParams::default(), &got).await?;
    crd.versions = updated
        .spec
        .versions
        .iter()
        .map(|v| v.name.clone())
        .collect();

    // check the unserved version gets removed
    wait_for_definition_cleanup(&ctx, &definition_name(&crd, "v6alpha1")).await?;
    // check the other version is not changed
    wait_for_definition(&ctx, &definition_name(&crd, "v5"), Some(&schema_foo())).await?;

    f.cleanup_crd(&crd).await
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn definition_names_reverse_the_group() {
        assert_eq!(
            to_rest_friendly_name("crd-publish-openapi-test-foo.example.com/v1/e2e-test-x-1-crd"),
            "com.example.crd-publish-openapi-test-foo.v1.e2e-test-x-1-crd"
        );
    }

    /// What upstream's builder publishes for schemaFoo, and what the comparison forgives.
    #[test]
    fn a_published_definition_matches_its_schema() {
        let expect = canonical_schema(&convert_json_schema_props(&schema_foo()).unwrap());
        let mut published = schema_foo();
        published["properties"]["metadata"] =
            json!({"$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"});
        published["properties"]["apiVersion"] = json!({"type": "string"});
        published["properties"]["kind"] = json!({"type": "string"});
        published["x-kubernetes-group-version-kind"] =
            json!([{"group": "g", "kind": "k", "version": "v1"}]);
        published["properties"]["spec"]["required"] = json!([]);
        published["properties"]["spec"]["nullable"] = json!(false);
        drop_defaults(&mut published);
        assert_eq!(expect, canonical_schema(&published));

        published["properties"]["spec"]["x-kubernetes-preserve-unknown-fields"] = json!(true);
        assert_ne!(expect, canonical_schema(&published));
    }

    /// A CRD without a schema is published as `type: object` alone.
    #[test]
    fn an_empty_schema_is_an_object() {
        let expect =
            canonical_schema(&convert_json_schema_props(&json!({"type": "object"})).unwrap());
        let mut published = json!({"type": "object",
            "x-kubernetes-group-version-kind": [{"group": "g", "kind": "k", "version": "v1"}]});
        drop_defaults(&mut published);
        assert_eq!(expect, canonical_schema(&published));
        published["x-kubernetes-preserve-unknown-fields"] = json!(true);
        assert_ne!(expect, canonical_schema(&published));
    }
}

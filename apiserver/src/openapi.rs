//! OpenAPI v3: the index at `/openapi/v3` and one document per group/version, generated from
//! the registry and the kinds' `k8s-openapi` schemas. kubectl reads them to learn that the
//! server validates fields (`create -f`, `apply`, `replace`, `edit`) and for `explain`.
//! OpenAPI v2 (`/openapi/v2`, Swagger 2.0 JSON) is the same documents merged and converted.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use crate::registry::{self, Resource};

/// The documents, built once at start-up.
pub struct OpenApi {
    /// "api/v1" or "apis/<group>/<version>" -> (hash, JSON document)
    docs: BTreeMap<String, (String, Vec<u8>)>,
    /// The built-in kinds' part of the v2 document.
    v2_base: Swagger,
    /// The last v2 document served, for the custom documents' hashes it was built from:
    /// (those hashes, (ETag, JSON)).
    v2_last: Mutex<Option<(String, Served)>>,
}

/// A document as served: its hash (the ETag) and JSON bytes.
type Served = Arc<(String, Vec<u8>)>;

/// The paths and definitions of a Swagger 2.0 document.
#[derive(Clone, Default)]
struct Swagger {
    paths: Map<String, Value>,
    definitions: Map<String, Value>,
}

impl Swagger {
    /// Adds a v3 document: schemas become definitions, operations take v2's shape. A custom
    /// resources' document also loses what v2 clients cannot read in a structural schema.
    fn add(&mut self, v3: &Value, custom: bool) {
        if let Some(schemas) = v3.pointer("/components/schemas").and_then(Value::as_object) {
            for (name, schema) in schemas {
                let mut schema = schema.clone();
                if custom {
                    structural_v2(&mut schema);
                }
                v2_schema(&mut schema);
                self.definitions.insert(name.clone(), schema);
            }
        }
        if let Some(paths) = v3.get("paths").and_then(Value::as_object) {
            for (path, item) in paths {
                let Some(item) = item.as_object() else {
                    continue;
                };
                let ops: Map<String, Value> = item
                    .iter()
                    .map(|(method, op)| (method.clone(), v2_operation(op)))
                    .collect();
                self.paths.insert(path.clone(), Value::Object(ops));
            }
        }
    }

    fn document(self) -> Value {
        json!({
            "swagger": "2.0",
            "info": {"title": "Kubernetes", "version": crate::KUBERNETES_VERSION},
            "paths": self.paths,
            "definitions": self.definitions,
            "securityDefinitions": {"BearerToken": {"description": "Bearer Token authentication", "type": "apiKey", "name": "authorization", "in": "header"}},
            "security": [{"BearerToken": []}],
        })
    }
}

/// A custom resource's structural schema as upstream publishes it in v2
/// (apiextensions' ToStructuralOpenAPIV2): no `nullable` (a nullable value loses its type,
/// properties and items), nothing under a value that keeps unknown fields, no items beside
/// properties; the extension itself is not published.
fn structural_v2(v: &mut Value) {
    match v {
        Value::Object(m) => {
            let flag =
                |m: &Map<String, Value>, k: &str| m.get(k).and_then(Value::as_bool) == Some(true);
            if flag(m, "nullable") {
                for k in ["type", "items", "properties"] {
                    m.remove(k);
                }
            }
            m.remove("nullable");
            if flag(m, "x-kubernetes-preserve-unknown-fields") {
                // What a client must not check: the kind's own fields stay (apiVersion, kind
                // and metadata are added to a custom resource's root after this).
                for k in ["items", "properties", "additionalProperties"] {
                    m.remove(k);
                }
                m.remove("x-kubernetes-preserve-unknown-fields");
            }
            if m.contains_key("properties") {
                m.remove("items");
            }
            for k in ["properties", "patternProperties"] {
                if let Some(Value::Object(props)) = m.get_mut(k) {
                    props.values_mut().for_each(structural_v2);
                }
            }
            for k in ["items", "additionalProperties"] {
                if let Some(child) = m.get_mut(k) {
                    structural_v2(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(structural_v2),
        _ => {}
    }
}

/// A v3 schema as v2 has it: references into `definitions`, no v3-only keywords.
fn v2_schema(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get_mut("$ref")
                && let Some(name) = r.strip_prefix("#/components/schemas/")
            {
                *r = format!("#/definitions/{name}");
            }
            for k in ["nullable", "oneOf", "anyOf", "not"] {
                m.remove(k);
            }
            m.values_mut().for_each(v2_schema);
        }
        Value::Array(items) => items.iter_mut().for_each(v2_schema),
        _ => {}
    }
}

/// A v3 operation as v2 has it: parameters typed in place, the request body a `body`
/// parameter with the media types it consumes, the response schema under the response.
fn v2_operation(op: &Value) -> Value {
    let mut out = Map::new();
    for k in [
        "operationId",
        "description",
        "x-kubernetes-action",
        "x-kubernetes-group-version-kind",
    ] {
        if let Some(v) = op.get(k) {
            out.insert(k.into(), v.clone());
        }
    }
    let mut params: Vec<Value> = op
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| {
            let mut p = p.clone();
            if let Some(Value::Object(schema)) = p.as_object_mut().and_then(|m| m.remove("schema"))
                && let Some(m) = p.as_object_mut()
            {
                m.extend(schema);
            }
            p
        })
        .collect();
    if let Some(content) = op
        .pointer("/requestBody/content")
        .and_then(Value::as_object)
    {
        let mut schema = content
            .values()
            .find_map(|c| c.get("schema").cloned())
            .unwrap_or_else(|| json!({"type": "object"}));
        v2_schema(&mut schema);
        params.push(json!({"name": "body", "in": "body", "required": true, "schema": schema}));
        out.insert("consumes".into(), json!(content.keys().collect::<Vec<_>>()));
    }
    out.insert("parameters".into(), Value::Array(params));
    out.insert(
        "produces".into(),
        json!([
            "application/json",
            "application/yaml",
            "application/vnd.kubernetes.protobuf"
        ]),
    );
    out.insert("schemes".into(), json!(["https"]));
    let mut responses = Map::new();
    for (code, response) in op
        .get("responses")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let mut r =
            json!({"description": response.get("description").cloned().unwrap_or(json!(""))});
        if let Some(mut schema) = response
            .get("content")
            .and_then(Value::as_object)
            .and_then(|c| c.values().find_map(|c| c.get("schema").cloned()))
        {
            v2_schema(&mut schema);
            r["schema"] = schema;
        }
        responses.insert(code.clone(), r);
    }
    out.insert("responses".into(), Value::Object(responses));
    Value::Object(out)
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

impl OpenApi {
    pub fn build() -> OpenApi {
        let mut docs = BTreeMap::new();
        let mut v2_base = Swagger::default();
        for (group, version) in registry::group_versions(&registry::served(None)) {
            let doc = document(group, version);
            v2_base.add(&doc, false);
            docs.insert(gv_path(group, version), hashed(&doc));
        }
        OpenApi {
            docs,
            v2_base,
            v2_last: Mutex::new(None),
        }
    }

    /// The v2 document with the custom resources' v3 documents given (their hashes and JSON
    /// bytes): its ETag and JSON. Rebuilt only when those change.
    pub fn v2(&self, custom: &[(String, Vec<u8>)]) -> Served {
        let key: String = custom
            .iter()
            .map(|(h, _)| h.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let mut last = self.v2_last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((k, doc)) = last.as_ref()
            && *k == key
        {
            return Arc::clone(doc);
        }
        let mut swagger = self.v2_base.clone();
        for (_, bytes) in custom {
            if let Ok(doc) = serde_json::from_slice::<Value>(bytes) {
                swagger.add(&doc, true);
            }
        }
        let doc = Arc::new(hashed(&swagger.document()));
        *last = Some((key, Arc::clone(&doc)));
        doc
    }

    /// The index: the built-in documents and the custom ones given as (path, hash).
    pub fn index(&self, custom: &[(String, String)]) -> Value {
        let paths: Map<String, Value> = self
            .docs
            .iter()
            .map(|(path, (hash, _))| (path, hash))
            .chain(custom.iter().map(|(p, h)| (p, h)))
            .map(|(path, hash)| {
                (
                    path.clone(),
                    json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")}),
                )
            })
            .collect();
        json!({"paths": paths})
    }

    /// The document at "api/v1" or "apis/<group>/<version>", with its hash (the ETag).
    pub fn document(&self, path: &str) -> Option<(&str, &[u8])> {
        self.docs.get(path).map(|(h, d)| (h.as_str(), d.as_slice()))
    }
}

/// A document as served: its hash and bytes.
fn hashed(doc: &Value) -> (String, Vec<u8>) {
    let bytes = serde_json::to_vec(doc).unwrap_or_default();
    (hash(&bytes), bytes)
}

/// A document's hash as its URL and ETag carry it.
pub fn hash(bytes: &[u8]) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    format!("{:016X}", h.finish())
}

fn gvk(r: &Resource) -> Value {
    json!({"group": r.group, "version": r.version, "kind": r.kind})
}

fn operation(r: &Resource, action: &str, id: &str, schema_ref: &str, patch: bool) -> Value {
    let mut params = vec![
        json!({"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}}),
        json!({"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}}),
    ];
    if matches!(action, "post" | "put" | "patch") {
        params.push(json!({"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}}));
    }
    let mut op = json!({
        "operationId": id,
        "parameters": params,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": schema_ref}}}}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk(r),
    });
    if patch {
        let body = json!({"schema": {"type": "object"}});
        let mut content = json!({
            "application/json-patch+json": body,
            "application/merge-patch+json": body,
            "application/apply-patch+yaml": body,
        });
        // Custom resources take no strategic merge patches.
        if r.custom.is_none() {
            content["application/strategic-merge-patch+json"] = body;
        }
        op["requestBody"] = json!({"content": content});
    } else if matches!(action, "post" | "put") {
        op["requestBody"] =
            json!({"content": {"application/json": {"schema": {"$ref": schema_ref}}}});
    }
    op
}

/// The collection and item paths of a resource, with their operations.
fn add_paths(paths: &mut Map<String, Value>, r: &Resource, schema_ref: &str) {
    let base = format!("/{}", gv_path(r.group, r.version));
    let (collection, item) = if r.namespaced {
        (
            format!("{base}/namespaces/{{namespace}}/{}", r.plural),
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural),
        )
    } else {
        (
            format!("{base}/{}", r.plural),
            format!("{base}/{}/{{name}}", r.plural),
        )
    };
    let id = |verb: &str| {
        format!(
            "{verb}{}{}",
            if r.namespaced { "Namespaced" } else { "" },
            r.kind
        )
    };
    paths.insert(
        collection,
        json!({
            "get": operation(r, "list", &id("list"), schema_ref, false),
            "post": operation(r, "post", &id("create"), schema_ref, false),
        }),
    );
    paths.insert(
        item,
        json!({
            "get": operation(r, "get", &id("read"), schema_ref, false),
            "put": operation(r, "put", &id("replace"), schema_ref, false),
            "patch": operation(r, "patch", &id("patch"), schema_ref, true),
            "delete": operation(r, "delete", &id("delete"), schema_ref, false),
        }),
    );
}

fn document(group: &str, version: &str) -> Value {
    let mut generator = SchemaSettings::openapi3().into_generator();
    let mut paths = Map::new();
    let mut kinds: Vec<(String, &Resource)> = Vec::new();
    for r in registry::all().filter(|r| r.group == group && r.version == version) {
        let reference = (r.typed.schema)(&mut generator);
        let schema_ref = reference
            .get("$ref")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let name = schema_ref
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        kinds.push((name, r));
        add_paths(&mut paths, r, &schema_ref);
    }
    let mut schemas = generator.take_definitions(true);
    // k8s-openapi's schemas lack the patch extensions kubectl needs to compute strategic
    // merge patches (without them it treats every list as atomic).
    for (name, schema) in schemas.iter_mut() {
        for (field, strategy, key) in crate::patch::patch_extensions(name) {
            if let Some(Value::Object(prop)) = schema.pointer_mut(&format!("/properties/{field}")) {
                prop.insert("x-kubernetes-patch-strategy".into(), json!(strategy));
                if !key.is_empty() {
                    prop.insert("x-kubernetes-patch-merge-key".into(), json!(key));
                }
            }
        }
    }
    for (name, r) in kinds {
        if let Some(Value::Object(schema)) = schemas.get_mut(&name) {
            schema.insert("x-kubernetes-group-version-kind".into(), json!([gvk(r)]));
        }
    }
    wrap(paths, schemas)
}

fn wrap(paths: Map<String, Value>, schemas: Map<String, Value>) -> Value {
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": crate::KUBERNETES_VERSION},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

/// The documents of the custom resources' group/versions, keyed by path: each kind's schema
/// under upstream's name (`com.example.stable.v1.CronTab`), with ObjectMeta for its metadata.
pub fn custom_documents(resources: &[&Resource]) -> BTreeMap<String, (String, Vec<u8>)> {
    let mut by_gv: BTreeMap<String, Vec<&Resource>> = BTreeMap::new();
    for r in resources.iter().filter(|r| r.custom.is_some()) {
        by_gv
            .entry(gv_path(r.group, r.version))
            .or_default()
            .push(r);
    }
    by_gv
        .into_iter()
        .map(|(path, rs)| {
            let mut generator = SchemaSettings::openapi3().into_generator();
            let meta = generator
                .subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>();
            let mut schemas = generator.take_definitions(true);
            let mut paths = Map::new();
            for r in rs {
                let reversed: Vec<&str> = r.group.split('.').rev().collect();
                let name = format!("{}.{}.{}", reversed.join("."), r.version, r.kind);
                let mut schema = r
                    .custom
                    .and_then(|c| c.schema.clone())
                    .unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
                let props = schema
                    .as_object_mut()
                    .map(|s| s.entry("properties").or_insert_with(|| json!({})));
                if let Some(Value::Object(props)) = props {
                    props.insert("apiVersion".into(), json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}));
                    props.insert("kind".into(), json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}));
                    props.insert("metadata".into(), json!({"allOf": [meta.clone()], "description": "Standard object's metadata."}));
                }
                schema["x-kubernetes-group-version-kind"] = json!([gvk(r)]);
                if !r.fields.is_empty() {
                    let fields: Vec<Value> =
                        r.fields.iter().map(|f| json!({"fieldPath": f})).collect();
                    schema["x-kubernetes-selectable-fields"] = json!(fields);
                }
                schemas.insert(name.clone(), schema);
                add_paths(&mut paths, r, &format!("#/components/schemas/{name}"));
            }
            (path, hashed(&wrap(paths, schemas)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_kind_has_a_described_schema_and_a_validating_patch() {
        let api = OpenApi::build();
        let index = api.index(&[]);
        let url = index["paths"]["api/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap();
        assert!(url.starts_with("/openapi/v3/api/v1?hash="));
        let (_, doc) = api.document("api/v1").unwrap();
        let doc: Value = serde_json::from_slice(doc).unwrap();
        let cm = &doc["components"]["schemas"]["io.k8s.api.core.v1.ConfigMap"];
        assert_eq!(
            cm["x-kubernetes-group-version-kind"],
            json!([{"group": "", "version": "v1", "kind": "ConfigMap"}])
        );
        assert!(
            cm["properties"]["data"]["description"]
                .as_str()
                .unwrap()
                .starts_with("Data contains")
        );
        assert_eq!(
            cm["properties"]["metadata"]["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
        );
        assert!(doc["components"]["schemas"]["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]["properties"]["labels"].is_object());
        let finalizers = &doc["components"]["schemas"]["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]
            ["properties"]["finalizers"];
        assert_eq!(finalizers["x-kubernetes-patch-strategy"], "merge");
        let patch = &doc["paths"]["/api/v1/namespaces/{namespace}/configmaps/{name}"]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"]["kind"],
            "ConfigMap"
        );
        assert!(
            patch["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation")
        );
    }

    #[test]
    fn v2_merges_the_documents_as_swagger_and_follows_custom_ones() {
        let api = OpenApi::build();
        let base = api.v2(&[]);
        let doc: Value = serde_json::from_slice(&base.1).unwrap();
        assert_eq!(doc["swagger"], "2.0");
        let cm = &doc["definitions"]["io.k8s.api.core.v1.ConfigMap"];
        assert_eq!(
            cm["properties"]["metadata"]["allOf"][0]["$ref"],
            "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
        );
        let create = &doc["paths"]["/api/v1/namespaces/{namespace}/configmaps"]["post"];
        let body = create["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["in"] == "body")
            .unwrap();
        assert_eq!(
            body["schema"]["$ref"],
            "#/definitions/io.k8s.api.core.v1.ConfigMap"
        );
        assert_eq!(create["responses"]["200"]["schema"], body["schema"]);
        assert!(!String::from_utf8_lossy(&base.1).contains("#/components/"));
        // The same custom documents give the same document; others a new one.
        assert!(Arc::ptr_eq(&base, &api.v2(&[])));
        let custom = serde_json::to_vec(&json!({"paths": {}, "components": {"schemas": {
            "com.example.stable.v1.CronTab": {"type": "object",
                "x-kubernetes-preserve-unknown-fields": true,
                "properties": {"a": {"type": "string", "nullable": true}}}}}}))
        .unwrap();
        let with = api.v2(&[("h1".into(), custom)]);
        assert_ne!(with.0, base.0);
        let doc: Value = serde_json::from_slice(&with.1).unwrap();
        assert_eq!(
            doc["definitions"]["com.example.stable.v1.CronTab"],
            json!({"type": "object"})
        );
    }
}

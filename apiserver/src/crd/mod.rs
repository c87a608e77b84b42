//! Custom resources (upstream's apiextensions-apiserver). The CustomResourceDefinitions in
//! storage are followed by one watch per process; each served version of a definition becomes
//! a registry entry that the generic handlers serve like a built-in kind: the same store, the
//! same REST semantics, discovery and OpenAPI. What differs lives in [`Custom`]: the schema
//! that prunes, defaults and validates, the printer columns, the storage version.
//!
//! This module also plays the definitions' controllers: it marks a served definition
//! Established (its accepted names and stored versions), and when a definition is deleted it
//! removes the definition's objects before letting the definition go.

mod jsonpath;
pub mod schema;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};

use axum::http::{HeaderMap, Method, header};
use futures::StreamExt;
use kelp_storage::{Backend, KeyRange, RangeRequest, Txn};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::object;
use crate::registry::{self, Resource, Status};
use crate::typed::FieldValidation;

/// The finalizer that holds a deleted definition until its objects are gone.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

const PREFIX: &str = "/registry/apiextensions.k8s.io/customresourcedefinitions/";

/// What a served version of a definition adds to its registry entry.
pub struct Custom {
    /// The version objects are stored in (conversion `None`: only apiVersion changes).
    pub storage_version: &'static str,
    /// The version's structural schema (`openAPIV3Schema`).
    pub schema: Option<Value>,
    /// Its `x-kubernetes-validations` CEL rules, compiled once.
    pub rules: Option<kube_cel::CompiledSchema>,
    pub columns: Vec<PrinterColumn>,
    pub scale: Option<ScalePaths>,
}

/// An `additionalPrinterColumns` entry.
pub struct PrinterColumn {
    pub name: String,
    pub kind: String,
    pub format: String,
    pub description: String,
    pub priority: u8,
    pub path: String,
}

impl PrinterColumn {
    /// The cell of an object, as upstream's CRD table convertor computes it: dates as ages,
    /// numbers and booleans as they are, several results joined by spaces.
    pub fn cell(&self, o: &Value) -> Value {
        let found = jsonpath::find(o, &self.path);
        let Some(first) = found.first() else {
            return Value::Null;
        };
        if found.len() > 1 {
            let text: Vec<String> = found.iter().map(|v| plain(v)).collect();
            return json!(text.join(" "));
        }
        match self.kind.as_str() {
            "date" => first
                .as_str()
                .and_then(|s| s.parse::<jiff::Timestamp>().ok())
                .map(|t| {
                    json!(object::human_duration(
                        jiff::Timestamp::now().as_second() - t.as_second()
                    ))
                })
                .unwrap_or(Value::Null),
            "integer" | "number" | "boolean" => (*first).clone(),
            _ => json!(plain(first)),
        }
    }
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The scale subresource's paths, as JSON pointers (`/spec/replicas`).
pub struct ScalePaths {
    pub spec_replicas: String,
    pub status_replicas: String,
    pub label_selector: Option<String>,
}

/// `.spec.replicas` as a JSON pointer.
fn pointer(path: &str) -> String {
    path.split('.')
        .filter(|s| !s.is_empty())
        .fold(String::new(), |acc, s| format!("{acc}/{s}"))
}

fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

fn leak_list(v: &Value) -> &'static [&'static str] {
    let items: Vec<&'static str> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(leak)
        .collect();
    Box::leak(items.into_boxed_slice())
}

/// The registry entries of a definition's served versions. Entries live as long as the
/// process (handlers and watches hold them as `&'static`), so each distinct definition spec is
/// built once and interned: re-reading a definition, or a status change, costs nothing.
pub fn resources_of(crd: &Value) -> Vec<&'static Resource> {
    static INTERNED: OnceLock<Mutex<HashMap<String, Vec<&'static Resource>>>> = OnceLock::new();
    let spec = &crd["spec"];
    let key = spec.to_string();
    let mut interned = INTERNED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(found) = interned.get(&key) {
        return found.clone();
    }
    let built = build(spec);
    interned.insert(key, built.clone());
    built
}

fn build(spec: &Value) -> Vec<&'static Resource> {
    let group = text(spec, "/group");
    let kind = text(spec, "/names/kind");
    let plural = text(spec, "/names/plural");
    if group.is_empty() || kind.is_empty() || plural.is_empty() {
        return Vec::new();
    }
    let singular = match text(spec, "/names/singular") {
        "" => kind.to_lowercase(),
        s => s.to_string(),
    };
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    let Some(storage) = versions
        .iter()
        .find(|v| v["storage"] == json!(true))
        .map(|v| text(v, "/name"))
    else {
        return Vec::new();
    };
    let (group, kind, plural, singular) = (leak(group), leak(kind), leak(plural), leak(&singular));
    let storage_version = leak(storage);
    let short_names = leak_list(&spec["names"]["shortNames"]);
    let categories = leak_list(&spec["names"]["categories"]);
    let segment = leak(&format!("{group}/{plural}"));
    versions
        .iter()
        .filter(|v| v["served"] == json!(true))
        .map(|v| {
            let columns = match v["additionalPrinterColumns"].as_array() {
                Some(cols) => cols
                    .iter()
                    .map(|c| PrinterColumn {
                        name: text(c, "/name").to_string(),
                        kind: text(c, "/type").to_string(),
                        format: text(c, "/format").to_string(),
                        description: text(c, "/description").to_string(),
                        priority: c["priority"].as_u64().unwrap_or(0).min(255) as u8,
                        path: text(c, "/jsonPath").to_string(),
                    })
                    .collect(),
                // Upstream's default column.
                None => vec![PrinterColumn {
                    name: "Age".into(),
                    kind: "date".into(),
                    format: String::new(),
                    description: "CreationTimestamp is a timestamp representing the server time when this object was created.".into(),
                    priority: 0,
                    path: ".metadata.creationTimestamp".into(),
                }],
            };
            let scale = v.pointer("/subresources/scale").map(|s| ScalePaths {
                spec_replicas: pointer(text(s, "/specReplicasPath")),
                status_replicas: pointer(text(s, "/statusReplicasPath")),
                label_selector: s
                    .get("labelSelectorPath")
                    .and_then(Value::as_str)
                    .map(pointer),
            });
            let schema = v.pointer("/schema/openAPIV3Schema").cloned();
            let rules = schema
                .as_ref()
                .filter(|s| s.to_string().contains("x-kubernetes-validations"))
                .map(kube_cel::compile_schema);
            let custom: &'static Custom = Box::leak(Box::new(Custom {
                storage_version,
                schema,
                rules,
                columns,
                scale,
            }));
            let resource: &'static Resource = Box::leak(Box::new(Resource {
                group,
                version: leak(text(v, "/name")),
                kind,
                plural,
                singular,
                namespaced: text(spec, "/scope") == "Namespaced",
                short_names,
                categories,
                columns: &[],
                fields: selectable_fields(v),
                typed: crate::typed::typed::<Value>(),
                status: if v.pointer("/subresources/status").is_some() {
                    Status::Subresource
                } else {
                    Status::None
                },
                scale: custom.scale.is_some(),
                generation: true,
                storage: Some(segment),
                allocate: None,
                allocations: registry::holds_nothing,
                on_update: registry::any_update,
                prepare_update: registry::prepare_nothing,
                defaults: registry::no_defaults,
                prepare_create: registry::no_defaults,
                validate: registry::no_rules,
                delete_finalizers: &[],
                custom: Some(custom),
                conversion: None,
                verbs: crate::registry::VERBS,
                deprecation: None,
            }));
            resource
        })
        .collect()
}

/// A version's `selectableFields` (`.spec.color`) as field selector names (`spec.color`).
fn selectable_fields(version: &Value) -> &'static [&'static str] {
    let names: Vec<Value> = version["selectableFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["jsonPath"].as_str())
        .map(|p| json!(p.trim_start_matches('.')))
        .collect();
    leak_list(&Value::Array(names))
}

/// A custom resource's fields that neither ObjectMeta nor the schema declares, dropped from it:
/// the root metadata's first, then the schema's (embedded resources' metadata last).
pub fn unknown_fields(c: &Custom, obj: &mut Value) -> Result<Vec<String>, String> {
    let meta = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let (meta, meta_unknown) = (crate::typed::OBJECT_META.check)(&meta)?;
    obj["metadata"] = meta;
    let mut unknown: Vec<String> = meta_unknown
        .into_iter()
        .map(|f| format!("metadata.{f}"))
        .collect();
    if let Some(s) = &c.schema {
        unknown.extend(schema::prune(s, obj));
    }
    Ok(unknown)
}

/// Prunes, defaults and validates a custom resource (upstream's CR strategy and the
/// unstructured decoder): metadata as ObjectMeta reads it, the rest by the schema.
/// `repeated` is what the request body repeated.
pub fn check(
    r: &Resource,
    c: &Custom,
    mut obj: Value,
    old: Option<&Value>,
    repeated: &crate::strict::Repeated,
    mode: FieldValidation,
) -> Result<(Value, Vec<String>), ApiError> {
    let version = r.version;
    let unknown = unknown_fields(c, &mut obj).map_err(|e| {
        ApiError::bad_request(format!(
            "{kind} in version \"{version}\" cannot be handled as a {kind}: {e}",
            kind = r.kind
        ))
    })?;
    if let Some(s) = &c.schema {
        schema::default(s, &mut obj);
    }
    let warnings = crate::typed::strict_decoding(r.kind, version, &unknown, repeated, false, mode)?;
    if let Some(s) = &c.schema {
        let mut causes = schema::validate(s, &obj);
        if causes.is_empty()
            && let Some(rules) = &c.rules
        {
            causes = cel_causes(s, rules, &obj, old);
        }
        if !causes.is_empty() {
            return Err(ApiError::invalid(
                r.group,
                r.kind,
                object::name(&obj),
                causes,
            ));
        }
    }
    Ok((obj, warnings))
}

/// The failures of the schema's CEL rules (`oldSelf` rules see the object before the update),
/// worded as upstream's: `spec: Invalid value: "object": <message>`.
fn cel_causes(
    schema: &Value,
    rules: &kube_cel::CompiledSchema,
    obj: &Value,
    old: Option<&Value>,
) -> Vec<schema::Cause> {
    let Err(errors) = kube_cel::validate_compiled(rules, obj, old) else {
        return Vec::new();
    };
    errors
        .into_vec()
        .into_iter()
        .map(|e| {
            let field = if e.field_path.is_empty() {
                "<nil>".to_string()
            } else {
                e.field_path.clone()
            };
            let ty = schema_type_at(schema, &e.field_path);
            let message = match e.reason.as_deref() {
                Some("FieldValueForbidden") => format!("Forbidden: {}", e.message),
                Some("FieldValueRequired") => format!("Required value: {}", e.message),
                Some("FieldValueDuplicate") => format!("Duplicate value: {}", e.message),
                _ => format!("Invalid value: {ty:?}: {}", e.message),
            };
            (field, message)
        })
        .collect()
}

/// The `type` the schema gives the field at a path like `spec.items[0].name`.
fn schema_type_at(schema: &Value, path: &str) -> String {
    let mut s = schema;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, indexed) = match part.split_once('[') {
            Some((n, _)) => (n, true),
            None => (part, false),
        };
        s = match s.pointer(&format!("/properties/{name}")) {
            Some(next) => next,
            None => match s.get("additionalProperties") {
                Some(next) if next.is_object() => next,
                _ => return "object".into(),
            },
        };
        if indexed && let Some(items) = s.get("items") {
            s = items;
        }
    }
    s.get("type")
        .and_then(Value::as_str)
        .unwrap_or("object")
        .to_string()
}

/// A stored custom resource as this version serves it: its apiVersion, and the schema's
/// pruning and defaults applied (upstream defaults what it reads from storage too).
pub fn served(r: &Resource, c: &Custom, obj: &mut Value) {
    obj["apiVersion"] = json!(r.api_version());
    conform(c, obj);
}

/// The schema's pruning and defaults applied to a custom resource: what a mutating webhook's
/// patch added that the schema does not declare goes, as upstream's schema-coercing
/// conversion to the storage version drops it.
pub fn conform(c: &Custom, obj: &mut Value) {
    if let Some(s) = &c.schema {
        schema::prune(s, obj);
        schema::default(s, obj);
    }
}

/// The apiVersion objects are stored under.
pub fn stored_api_version(r: &Resource, c: &Custom) -> String {
    format!("{}/{}", r.group, c.storage_version)
}

/// upstream's SetDefaults for CustomResourceDefinition.
pub fn definition_defaults(crd: &mut Value) {
    let kind = text(crd, "/spec/names/kind").to_string();
    if let Some(Value::Object(names)) = crd.pointer_mut("/spec/names")
        && !kind.is_empty()
    {
        names
            .entry("singular")
            .or_insert_with(|| json!(kind.to_lowercase()));
        names
            .entry("listKind")
            .or_insert_with(|| json!(format!("{kind}List")));
    }
    if let Some(Value::Object(spec)) = crd.get_mut("spec") {
        spec.entry("conversion")
            .or_insert_with(|| json!({"strategy": "None"}));
    }
}

fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// upstream's ValidateCustomResourceDefinition, the rules users meet.
pub fn definition_rules(crd: &Value) -> Vec<(String, String)> {
    let mut causes = Vec::new();
    let mut invalid = |field: &str, message: String| causes.push((field.to_string(), message));
    let group = text(crd, "/spec/group");
    let plural = text(crd, "/spec/names/plural");
    let name = object::name(crd);
    if group.is_empty() {
        invalid("spec.group", "Required value".into());
    } else if !group.contains('.') {
        invalid(
            "spec.group",
            format!("Invalid value: {group:?}: should be a domain with at least one dot"),
        );
    }
    if plural.is_empty() {
        invalid("spec.names.plural", "Required value".into());
    } else if !dns_label(plural) {
        invalid(
            "spec.names.plural",
            format!(
                "Invalid value: {plural:?}: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"
            ),
        );
    }
    if text(crd, "/spec/names/kind").is_empty() {
        invalid("spec.names.kind", "Required value".into());
    }
    if name != format!("{plural}.{group}") {
        invalid(
            "metadata.name",
            format!("Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"),
        );
    }
    match text(crd, "/spec/scope") {
        "Cluster" | "Namespaced" => {}
        "" => invalid("spec.scope", "Required value".into()),
        other => invalid(
            "spec.scope",
            format!("Unsupported value: {other:?}: supported values: \"Cluster\", \"Namespaced\""),
        ),
    }
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if versions.is_empty() {
        invalid(
            "spec.versions",
            "Invalid value: null: must have exactly one version marked as storage version".into(),
        );
    } else if versions
        .iter()
        .filter(|v| v["storage"] == json!(true))
        .count()
        != 1
    {
        invalid(
            "spec.versions",
            "Invalid value: must have exactly one version marked as storage version".into(),
        );
    }
    for (i, v) in versions.iter().enumerate() {
        let name = text(v, "/name");
        if !dns_label(name) {
            invalid(
                &format!("spec.versions[{i}].name"),
                format!(
                    "Invalid value: {name:?}: a DNS-1035 label must consist of lower case alphanumeric characters or '-'"
                ),
            );
        }
        if versions[..i].iter().any(|o| text(o, "/name") == name) {
            invalid(
                &format!("spec.versions[{i}].name"),
                format!("Duplicate value: {name:?}"),
            );
        }
        if v.pointer("/schema/openAPIV3Schema").is_none() {
            invalid(
                &format!("spec.versions[{i}].schema.openAPIV3Schema"),
                "Required value: schemas are required".into(),
            );
        }
    }
    causes
}

/// The definitions a process serves, kept from a storage watch.
pub struct CustomResources {
    state: RwLock<State>,
}

#[derive(Default)]
struct State {
    /// Definition name -> the entries it serves.
    served: BTreeMap<String, Vec<&'static Resource>>,
    /// Definitions being deleted: still served, but refusing creates.
    terminating: HashSet<String>,
    /// Definitions whose objects this process is deleting.
    cleaning: HashSet<String>,
    /// The names each definition holds (upstream's naming controller): group and names, as
    /// computed here, so that definitions seen together do not both take a name.
    accepted: BTreeMap<String, (String, Value)>,
    /// The definitions whose names conflict, to look at again when another one goes.
    conflicted: BTreeMap<String, Value>,
    /// "apis/<group>/<version>" -> (hash, OpenAPI document).
    openapi: BTreeMap<String, (String, Vec<u8>)>,
}

impl CustomResources {
    /// Starts following the definitions; the task ends when the registry is dropped.
    pub fn start(backend: Backend) -> Arc<CustomResources> {
        let crds = Arc::new(CustomResources {
            state: RwLock::new(State::default()),
        });
        crate::cache::keep_following(
            backend,
            Arc::downgrade(&crds),
            "custom resource definitions",
            follow,
        );
        crds
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
        self.read()
            .served
            .values()
            .flatten()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
            .copied()
    }

    /// Every served custom resource, groups in name order, versions by priority.
    pub fn resources(&self) -> Vec<&'static Resource> {
        let mut all: Vec<&'static Resource> =
            self.read().served.values().flatten().copied().collect();
        all.sort_by(|a, b| {
            (
                a.group,
                std::cmp::Reverse(version_priority(a.version)),
                a.plural,
            )
                .cmp(&(
                    b.group,
                    std::cmp::Reverse(version_priority(b.version)),
                    b.plural,
                ))
        });
        all
    }

    /// The OpenAPI v3 documents of the served custom group/versions: (path, hash).
    pub fn openapi_paths(&self) -> Vec<(String, String)> {
        self.read()
            .openapi
            .iter()
            .map(|(p, (h, _))| (p.clone(), h.clone()))
            .collect()
    }

    /// Every custom OpenAPI v3 document: (hash, JSON), in path order.
    pub fn openapi_documents(&self) -> Vec<(String, Vec<u8>)> {
        self.read().openapi.values().cloned().collect()
    }

    pub fn openapi_document(&self, path: &str) -> Option<(String, Vec<u8>)> {
        self.read().openapi.get(path).cloned()
    }

    /// Whether the definition serving `r` is being deleted (upstream then refuses creates).
    pub fn terminating(&self, r: &Resource) -> bool {
        self.read()
            .terminating
            .contains(&format!("{}.{}", r.plural, r.group))
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, name: String, resources: Option<Vec<&'static Resource>>) {
        let mut state = self.write();
        if resources.is_none() {
            state.terminating.remove(&name);
        }
        match resources {
            Some(r) if !r.is_empty() => state.served.insert(name, r),
            _ => state.served.remove(&name),
        };
        let all: Vec<&'static Resource> = state.served.values().flatten().copied().collect();
        state.openapi = crate::openapi::custom_documents(&all);
    }
}

/// Kubernetes' version order (`v2` > `v1` > `v1beta2` > `v1beta1` > `v1alpha1` > others):
/// GA before beta before alpha, higher numbers first.
pub fn version_priority(v: &str) -> (u8, u64, u64) {
    let Some(rest) = v.strip_prefix('v') else {
        return (0, 0, 0);
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let Ok(major) = digits.parse::<u64>() else {
        return (0, 0, 0);
    };
    let tail = &rest[digits.len()..];
    let level = |prefix: &str, rank: u8| {
        tail.strip_prefix(prefix)
            .and_then(|n| n.parse::<u64>().ok())
            .map(|minor| (rank, major, minor))
    };
    if tail.is_empty() {
        (3, major, 0)
    } else {
        level("beta", 2)
            .or_else(|| level("alpha", 1))
            .unwrap_or((0, 0, 0))
    }
}

fn name_of(key: &[u8]) -> String {
    String::from_utf8_lossy(&key[PREFIX.len()..]).into_owned()
}

/// Lists, then watches until the watch fails or the registry is gone.
async fn follow(backend: Backend, crds: Weak<CustomResources>) -> kelp_storage::Result<()> {
    let listed = backend
        .range(RangeRequest::new(KeyRange::prefix(PREFIX)))
        .await?;
    let mut watch = backend
        .watch(KeyRange::prefix(PREFIX), listed.read_revision + 1)
        .await?;
    let Some(registry) = crds.upgrade() else {
        return Ok(());
    };
    let listed: Vec<(String, Value)> = listed
        .kvs
        .iter()
        .filter_map(|kv| Some((name_of(&kv.key), serde_json::from_slice(&kv.value).ok()?)))
        .collect();
    // The names the definitions held when last looked at, before any claims anew (a
    // definition refused a name must not take it for being listed first).
    {
        let mut state = registry.write();
        for (name, crd) in &listed {
            if let Some(held) = crd.pointer("/status/acceptedNames") {
                let group = text(crd, "/spec/group").to_string();
                state.accepted.insert(name.clone(), (group, held.clone()));
            }
        }
    }
    for (name, crd) in listed {
        seen(&backend, &registry, name, Some(crd));
    }
    drop(registry);
    while let Some(batch) = watch.next().await {
        let Some(registry) = crds.upgrade() else {
            return Ok(());
        };
        for e in batch? {
            let crd = match e.kind {
                kelp_storage::EventKind::Put => serde_json::from_slice::<Value>(&e.kv.value).ok(),
                kelp_storage::EventKind::Delete => None,
            };
            seen(&backend, &registry, name_of(&e.kv.key), crd);
        }
    }
    Ok(())
}

/// A definition as storage now holds it (None: gone): serve it, establish it, or clean up
/// after it.
fn seen(backend: &Backend, registry: &Arc<CustomResources>, name: String, crd: Option<Value>) {
    let Some(crd) = crd else {
        registry.set(name.clone(), None);
        let (gone, waiting) = {
            let mut state = registry.write();
            state.conflicted.remove(&name);
            (state.accepted.remove(&name), state.conflicted.clone())
        };
        // Names it held may now go to a definition that wanted them.
        if let Some((group, _)) = gone {
            for (other, crd) in waiting {
                if text(&crd, "/spec/group") == group {
                    seen(backend, registry, other, Some(crd));
                }
            }
        }
        return;
    };
    if crd.pointer("/metadata/deletionTimestamp").is_some() {
        // Served until its objects are gone (upstream's finalizer controller), creates refused.
        registry.set(name.clone(), Some(resources_of(&crd)));
        registry.write().terminating.insert(name.clone());
        let finalizing = crd
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| f.iter().any(|f| f == CLEANUP_FINALIZER));
        if finalizing && registry.write().cleaning.insert(name.clone()) {
            let (backend, registry) = (backend.clone(), Arc::clone(registry));
            tokio::spawn(async move {
                clean_up(&backend, &crd, &registry).await;
                registry.write().cleaning.remove(&name);
            });
        }
        return;
    }
    let (names, conflict) = registry.claim_names(&name, &crd);
    let established = crd
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Established" && c["status"] == "True")
        });
    {
        let mut state = registry.write();
        match &conflict {
            Some(_) => state.conflicted.insert(name.clone(), crd.clone()),
            None => state.conflicted.remove(&name),
        };
    }
    // A definition is served once its names are accepted; an established one stays served.
    if conflict.is_none() || established {
        registry.set(name, Some(resources_of(&crd)));
    } else {
        registry.set(name, None);
    }
    if let Some(status) = wanted_status(&crd, names, conflict) {
        let backend = backend.clone();
        let name = object::name(&crd).to_string();
        tokio::spawn(async move {
            let patch = json!({"status": status}).to_string();
            if let Err(e) = write_definition(&backend, &name, Some("status"), patch).await {
                tracing::debug!(crd = %name, error = %e.message, "cannot establish");
            }
        });
    }
}

/// A definition's requested names as upstream defaults them (singular the lower-case kind,
/// listKind the kind and `List`).
fn requested_names(crd: &Value) -> Value {
    let mut names = crd
        .pointer("/spec/names")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let kind = text(crd, "/spec/names/kind").to_string();
    if text(crd, "/spec/names/singular").is_empty() {
        names["singular"] = json!(kind.to_lowercase());
    }
    if text(crd, "/spec/names/listKind").is_empty() {
        names["listKind"] = json!(format!("{kind}List"));
    }
    names
}

impl CustomResources {
    /// The names a definition gets (upstream's naming controller): each requested name that
    /// it already holds or that no other definition of its group holds, else the one it held;
    /// and the conflict, as (reason, message), when a name is taken.
    fn claim_names(&self, name: &str, crd: &Value) -> (Value, Option<(String, String)>) {
        let group = text(crd, "/spec/group").to_string();
        let requested = requested_names(crd);
        let held = crd
            .pointer("/status/acceptedNames")
            .cloned()
            .unwrap_or_else(|| json!({}));
        let mut state = self.write();
        let mut resources: HashSet<String> = HashSet::new();
        let mut kinds: HashSet<String> = HashSet::new();
        for (other, (g, names)) in &state.accepted {
            if other == name || *g != group {
                continue;
            }
            for p in ["/plural", "/singular"] {
                resources.extend(names.pointer(p).and_then(Value::as_str).map(str::to_string));
            }
            for short in names["shortNames"].as_array().into_iter().flatten() {
                resources.extend(short.as_str().map(str::to_string));
            }
            for p in ["/kind", "/listKind"] {
                kinds.extend(names.pointer(p).and_then(Value::as_str).map(str::to_string));
            }
        }
        let fresh = |wanted: &str, had: &str, used: &HashSet<String>| {
            if wanted == had || !used.contains(wanted) {
                Ok(())
            } else {
                Err(format!("{wanted:?} is already in use"))
            }
        };
        let mut names = held.clone();
        let mut conflict = None;
        for (field, used, reason) in [
            ("plural", &resources, "PluralConflict"),
            ("singular", &resources, "SingularConflict"),
            ("kind", &kinds, "KindConflict"),
            ("listKind", &kinds, "ListKindConflict"),
        ] {
            let wanted = requested[field].as_str().unwrap_or("");
            let had = held[field].as_str().unwrap_or("");
            match fresh(wanted, had, used) {
                Ok(()) => names[field] = json!(wanted),
                Err(e) => conflict = Some((reason.to_string(), e)),
            }
            // Upstream checks short names between singular and kind.
            if field == "singular" && requested["shortNames"] != held["shortNames"] {
                let mine: Vec<&str> = held["shortNames"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                let errors: Vec<String> = requested["shortNames"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .filter(|s| !mine.contains(s))
                    .filter_map(|s| fresh(s, "", &resources).err())
                    .collect();
                match errors.as_slice() {
                    [] => names["shortNames"] = requested["shortNames"].clone(),
                    [one] => conflict = Some(("ShortNamesConflict".into(), one.clone())),
                    many => {
                        conflict = Some((
                            "ShortNamesConflict".into(),
                            format!("[{}]", many.join(", ")),
                        ))
                    }
                }
            }
        }
        if let Some(c) = requested.get("categories") {
            names["categories"] = c.clone();
        }
        if let Some(m) = names.as_object_mut() {
            m.retain(|_, v| !v.is_null() && *v != json!(""));
        }
        state
            .accepted
            .insert(name.to_string(), (group, names.clone()));
        (names, conflict)
    }
}

/// The status a served definition should have, when it differs from what it has: the names
/// it was given, NamesAccepted (or why not), Established when its names are accepted, and its
/// storage version recorded.
fn wanted_status(crd: &Value, names: Value, conflict: Option<(String, String)>) -> Option<Value> {
    let status = crd.get("status").cloned().unwrap_or_else(|| json!({}));
    let condition = |t: &str| {
        status["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == t))
            .cloned()
    };
    let storage = crd["spec"]["versions"]
        .as_array()?
        .iter()
        .find(|v| v["storage"] == json!(true))
        .map(|v| v["name"].clone())?;
    let mut stored: Vec<Value> = status["storedVersions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !stored.contains(&storage) {
        stored.push(storage);
    }
    let established = |c: Option<Value>| c.is_some_and(|c| c["status"] == "True");
    let was_established = established(condition("Established"));
    if let Some((reason, message)) = &conflict {
        let accepted = condition("NamesAccepted");
        if accepted.as_ref().is_some_and(|c| {
            c["status"] == "False" && c["reason"] == json!(reason) && c["message"] == json!(message)
        }) && status["acceptedNames"] == names
        {
            return None;
        }
    } else if was_established
        && established(condition("NamesAccepted"))
        && status["acceptedNames"] == names
        && status["storedVersions"] == json!(stored)
    {
        return None;
    }
    let now = object::now();
    let keep = |t: &str, reason: &str, message: &str| {
        let since = condition(t)
            .filter(|c| c["status"] == "True")
            .and_then(|c| c.get("lastTransitionTime").cloned())
            .unwrap_or_else(|| json!(now));
        json!({"type": t, "status": "True", "reason": reason, "message": message, "lastTransitionTime": since})
    };
    // Other conditions (a client's own) stay where they are, as upstream's SetCRDCondition
    // leaves them.
    let mut conditions: Vec<Value> = status["conditions"].as_array().cloned().unwrap_or_default();
    let wanted = match &conflict {
        None => vec![
            keep("NamesAccepted", "NoConflicts", "no conflicts found"),
            keep(
                "Established",
                "InitialNamesAccepted",
                "the initial names have been accepted",
            ),
        ],
        Some((reason, message)) => {
            let since = condition("NamesAccepted")
                .filter(|c| c["status"] == "False")
                .and_then(|c| c.get("lastTransitionTime").cloned())
                .unwrap_or_else(|| json!(now));
            let mut wanted = vec![json!({"type": "NamesAccepted", "status": "False",
                "reason": reason, "message": message, "lastTransitionTime": since})];
            // An established definition stays established; a new one waits for its names.
            if !was_established {
                let since = condition("Established")
                    .filter(|c| c["status"] == "False")
                    .and_then(|c| c.get("lastTransitionTime").cloned())
                    .unwrap_or_else(|| json!(now));
                wanted.push(json!({"type": "Established", "status": "False",
                    "reason": "NotAccepted", "message": "not all names are accepted",
                    "lastTransitionTime": since}));
            }
            wanted
        }
    };
    for c in wanted {
        match conditions.iter_mut().find(|old| old["type"] == c["type"]) {
            Some(old) => *old = c,
            None => conditions.push(c),
        }
    }
    Some(json!({
        "acceptedNames": names,
        "conditions": conditions,
        "storedVersions": stored,
    }))
}

/// Deletes a definition's objects as a client would (their finalizers hold them), waits until
/// they are gone, then removes its finalizer, which lets the definition go.
async fn clean_up(backend: &Backend, crd: &Value, registry: &CustomResources) {
    let name = object::name(crd).to_string();
    let terminating = json!({"status": {"conditions": [{
        "type": "Terminating", "status": "True", "reason": "InstanceDeletionInProgress",
        "message": "CustomResource deletion is in progress", "lastTransitionTime": object::now()}]}});
    let conditions = crd
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !conditions.iter().any(|c| c["type"] == "Terminating") {
        let mut all = conditions;
        all.extend(
            terminating["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        );
        let patch = json!({"status": {"conditions": all}}).to_string();
        if let Err(e) = write_definition(backend, &name, Some("status"), patch).await {
            tracing::debug!(crd = %name, error = %e.message, "cannot mark terminating");
        }
    }
    let prefix = format!(
        "/registry/{}/{}/",
        text(crd, "/spec/group"),
        text(crd, "/spec/names/plural")
    );
    let storage = resources_of(crd)
        .into_iter()
        .find(|r| r.custom.is_some_and(|c| c.storage_version == r.version));
    let namespaced = text(crd, "/spec/scope") != "Cluster";
    loop {
        let all = match backend
            .range(RangeRequest::new(KeyRange::prefix(prefix.clone())))
            .await
        {
            Ok(p) => p.kvs,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list custom resources to delete");
                return;
            }
        };
        if all.is_empty() {
            break;
        }
        for kv in all {
            let key = String::from_utf8_lossy(&kv.key[prefix.len()..]).into_owned();
            let (ns, object) = match key.split_once('/') {
                Some((ns, object)) if namespaced => (Some(ns), object),
                _ => (None, key.as_str()),
            };
            let deleted = match storage {
                Some(r) => crate::handlers::delete_object(backend, r, ns, object, &HashMap::new())
                    .await
                    .map(|_| ()),
                None => backend
                    .txn(Txn::delete(kv.key.clone(), kv.mod_revision))
                    .await
                    .map(|_| ())
                    .map_err(|e| ApiError::internal(e.to_string())),
            };
            if let Err(e) = deleted
                && e.reason != "NotFound"
            {
                tracing::debug!(crd = %name, error = %e.message, "cannot delete a custom resource");
            }
        }
        // What is left waits on its finalizers; look again shortly, unless the definition
        // went meanwhile.
        match backend
            .range(RangeRequest::new(KeyRange::prefix(prefix.clone())).limit(1))
            .await
        {
            Ok(p) if p.kvs.is_empty() => break,
            _ => tokio::time::sleep(std::time::Duration::from_millis(500)).await,
        }
        if !registry.read().terminating.contains(&name) {
            return;
        }
    }
    let remaining: Vec<Value> = crd
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|f| *f != CLEANUP_FINALIZER)
        .cloned()
        .collect();
    let patch = json!({"metadata": {"finalizers": remaining}}).to_string();
    if let Err(e) = write_definition(backend, &name, None, patch).await
        && e.reason != "NotFound"
    {
        tracing::warn!(crd = %name, error = %e.message, "cannot finish deleting");
    }
}

/// A merge patch of a definition (or its status) through the generic handlers, as the
/// apiserver's own controllers write.
async fn write_definition(
    backend: &Backend,
    name: &str,
    subresource: Option<&str>,
    patch: String,
) -> Result<(), ApiError> {
    let resource = registry::lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        .ok_or_else(ApiError::no_route)?;
    let ctx = crate::handlers::Ctx {
        backend: backend.clone(),
        metrics: None,
        security: None,
        webhooks: None,
        policies: None,
        cache: None,
        crds: None,
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/merge-patch+json"),
    );
    let query = HashMap::from([("fieldManager".to_string(), "kube-apiserver".to_string())]);
    let target = crate::request::Target {
        resource,
        namespace: None,
        name: Some(name.to_string()),
        subresource: subresource.map(str::to_string),
    };
    crate::handlers::serve(&ctx, &Method::PATCH, target, &query, &headers, patch.into())
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd() -> Value {
        json!({"metadata": {"name": "crontabs.stable.example.com"}, "spec": {
            "group": "stable.example.com", "scope": "Namespaced",
            "names": {"plural": "crontabs", "kind": "CronTab", "shortNames": ["ct"]},
            "versions": [
                {"name": "v1beta1", "served": true, "storage": false, "schema": {"openAPIV3Schema": {"type": "object"}}},
                {"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {"type": "object"}},
                 "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}},
                 "additionalPrinterColumns": [{"name": "Spec", "type": "string", "jsonPath": ".spec.cronSpec"}]},
                {"name": "v0", "served": false, "storage": false, "schema": {"openAPIV3Schema": {"type": "object"}}}]}})
    }

    #[test]
    fn served_versions_become_registry_entries() {
        let rs = resources_of(&crd());
        assert_eq!(rs.len(), 2);
        let v1 = rs.iter().find(|r| r.version == "v1").unwrap();
        assert_eq!(
            v1.key(Some("ns"), "a"),
            "/registry/stable.example.com/crontabs/ns/a"
        );
        assert_eq!((v1.singular, v1.short_names), ("crontab", &["ct"][..]));
        assert_eq!(v1.status, Status::Subresource);
        assert!(v1.scale);
        let c = v1.custom.unwrap();
        assert_eq!(c.storage_version, "v1");
        assert_eq!(c.scale.as_ref().unwrap().spec_replicas, "/spec/replicas");
        assert_eq!(
            c.columns[0].cell(&json!({"spec": {"cronSpec": "* * * * *"}})),
            "* * * * *"
        );
        // Interned: the same spec is the same entries.
        assert!(std::ptr::eq(resources_of(&crd())[0], rs[0]));
    }

    #[test]
    fn versions_sort_as_kubernetes_sorts_them() {
        let mut v = vec![
            "v1alpha1", "v1", "v2beta1", "foo", "v1beta2", "v2", "v1beta1",
        ];
        v.sort_by_key(|x| std::cmp::Reverse(version_priority(x)));
        assert_eq!(
            v,
            [
                "v2", "v1", "v2beta1", "v1beta2", "v1beta1", "v1alpha1", "foo"
            ]
        );
    }

    #[test]
    fn definitions_are_validated_as_upstream() {
        assert!(definition_rules(&crd()).is_empty());
        let mut bad = crd();
        bad["metadata"]["name"] = json!("wrong");
        bad["spec"]["versions"][0]["storage"] = json!(true);
        let fields: Vec<String> = definition_rules(&bad).into_iter().map(|c| c.0).collect();
        assert_eq!(fields, ["metadata.name", "spec.versions"]);
    }

    fn registry() -> CustomResources {
        CustomResources {
            state: RwLock::new(State::default()),
        }
    }

    #[test]
    fn a_served_definition_is_established_once() {
        let r = registry();
        let (names, conflict) = r.claim_names("crontabs.stable.example.com", &crd());
        assert!(conflict.is_none());
        let status = wanted_status(&crd(), names.clone(), None).unwrap();
        assert_eq!(status["conditions"][1]["type"], "Established");
        assert_eq!(status["acceptedNames"]["listKind"], "CronTabList");
        assert_eq!(status["acceptedNames"]["singular"], "crontab");
        assert_eq!(status["storedVersions"], json!(["v1"]));
        let mut done = crd();
        done["status"] = status;
        let (names, _) = r.claim_names("crontabs.stable.example.com", &done);
        assert!(wanted_status(&done, names, None).is_none());
    }

    #[test]
    fn a_name_another_definition_of_the_group_holds_is_not_accepted() {
        let r = registry();
        r.claim_names("crontabs.stable.example.com", &crd());
        let mut other = crd();
        other["metadata"]["name"] = json!("jobs.stable.example.com");
        other["spec"]["names"] =
            json!({"plural": "jobs", "kind": "CronTab", "shortNames": ["ct", "jb"]});
        let (names, conflict) = r.claim_names("jobs.stable.example.com", &other);
        assert_eq!(
            conflict,
            Some((
                "ListKindConflict".into(),
                "\"CronTabList\" is already in use".into()
            ))
        );
        assert_eq!(names, json!({"plural": "jobs"}));
        let status = wanted_status(&other, names, conflict).unwrap();
        assert_eq!(status["conditions"][0]["status"], "False");
        assert_eq!(status["conditions"][1]["reason"], "NotAccepted");
        // Another group may use the same names.
        let mut elsewhere = other.clone();
        elsewhere["spec"]["group"] = json!("other.example.com");
        assert!(
            r.claim_names("jobs.other.example.com", &elsewhere)
                .1
                .is_none()
        );
    }
}

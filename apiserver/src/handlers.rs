//! The generic REST handlers: get, list, watch, create, update and delete for every registry
//! entry (upstream's `registry/generic/registry/store.go`).

use crate::object::At as _;
use std::collections::HashMap;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE;
use futures::StreamExt;
use kelp_storage::{
    Backend, EventKind, KeyRange, KeyValue, RangeRequest, Revision, Txn, TxnOutcome,
};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::fieldmanager;
use crate::object;
use crate::patch::{self, PatchType};
use crate::registry::{Resource, Status};
use crate::request::Target;
use crate::selector::{FieldSelector, LabelSelector};
use crate::strict::Repeated;
use crate::table;
use crate::typed::FieldValidation;

/// Largest request body accepted (upstream's `MaxRequestBodyBytes`).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// A 200 with JSON already written.
fn raw_response(json: Vec<u8>) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json))
        .unwrap_or_default()
}

pub fn json_response(code: StatusCode, body: &Value) -> Response {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap_or_default()))
        .unwrap_or_default()
}

/// Dispatches a request on a resource path.
pub async fn serve(
    ctx: &Ctx,
    method: &Method,
    target: Target,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let backend = &ctx.backend;
    let metrics = ctx.metrics.as_ref();
    let r = target.resource;
    let ns = target.namespace.as_deref();
    let status_subresource = match (target.subresource.as_deref(), target.name.as_deref()) {
        (None, _) => false,
        (Some("status"), Some(_)) if r.status != Status::None => true,
        // A CertificateSigningRequest's approval (upstream's approvalStrategy): a status
        // write of its conditions alone (`kubectl certificate approve`).
        (Some("approval"), Some(_)) if r.kind == "CertificateSigningRequest" => true,
        // Pod-only subresources (upstream's BindingREST and EvictionREST).
        (Some("binding"), Some(name))
            if r.plural == "pods" && r.group.is_empty() && method == Method::POST =>
        {
            let ns = ns.unwrap_or("default");
            return crate::pods::bind(backend, r, ns, Some(name), &body, dry_run(query)).await;
        }
        (Some("eviction"), Some(name))
            if r.plural == "pods" && r.group.is_empty() && method == Method::POST =>
        {
            return crate::pods::evict(backend, r, ns.unwrap_or("default"), name, query).await;
        }
        // A namespace's spec.finalizers are written through /finalize (the namespace
        // controller's way of letting it go).
        (Some("finalize"), Some(name))
            if r.kind == "Namespace" && r.group.is_empty() && method == Method::PUT =>
        {
            let requested = read_body(r, headers, &body)?;
            let finalizers = requested
                .at("/spec/finalizers")
                .cloned()
                .unwrap_or_else(|| json!([]));
            let patch = json!({"spec": {"finalizers": finalizers}});
            return subresource_write(
                ctx,
                (r, ns, name),
                "finalize",
                query,
                headers,
                patch,
                &requested,
            )
            .await;
        }
        (Some("scale"), Some(name)) if r.scale => {
            return scale(ctx, r, ns, name, method, query, headers, &body).await;
        }
        _ => return Err(ApiError::no_route()),
    };
    let output = Output::from_accept(headers);
    // The core kinds no store backs, served by their own code as upstream serves them.
    if r.group.is_empty() && r.kind == "Binding" {
        return match (method, ns, target.name.as_deref()) {
            (&Method::POST, Some(ns), None) => {
                let pods = crate::registry::lookup("", "v1", "pods")
                    .ok_or_else(|| ApiError::internal("pods are not served"))?;
                crate::pods::bind(backend, pods, ns, None, &body, dry_run(query)).await
            }
            (_, Some(_), None) => Err(ApiError::method_not_allowed(NOT_ALLOWED)),
            _ => Err(ApiError::no_route()),
        };
    }
    if r.group.is_empty() && r.kind == "ComponentStatus" {
        let found = match (method, target.name.as_deref()) {
            (&Method::GET, None) if is_true(query.get("watch")) => {
                return Err(ApiError::method_not_supported(r.group, r.plural, "watch"));
            }
            (&Method::GET, None) => {
                let selectors = Selectors::from_query(r, query)?;
                let items: Vec<Value> = crate::components::statuses(backend)
                    .await
                    .into_iter()
                    .filter(|o| selectors.matches(o))
                    .collect();
                json!({"kind": "ComponentStatusList", "apiVersion": "v1", "metadata": {}, "items": items})
            }
            (&Method::GET, Some(name)) => crate::components::status(backend, name)
                .await
                .ok_or_else(|| ApiError::not_found("", "componentstatus", name))?,
            _ => return Err(ApiError::method_not_allowed(NOT_ALLOWED)),
        };
        return Ok(respond(r, output, &found));
    }
    match (method, target.name.as_deref()) {
        (&Method::GET, None) if is_true(query.get("watch")) => {
            let encoder = EventEncoder {
                resource: r,
                output,
            };
            let guard = metrics.map(|m| m.watcher(r.group, r.version, r.plural));
            watch(ctx, r, ns, query, encoder, guard).await
        }
        (&Method::GET, None) => {
            let listed = list(ctx, r, ns, query).await?;
            Ok(match output {
                Output::Object if served_as_stored(r) => raw_response(listed.raw(r)?),
                _ => respond(r, output, &listed.value(r)?),
            })
        }
        (&Method::GET, Some(name)) if output == Output::Object && served_as_stored(r) => {
            let kv = get_stored(ctx, &r.key(ns, name), query).await?;
            let kv = kv.ok_or_else(|| ApiError::not_found(r.group, r.plural, name))?;
            let mut out = Vec::with_capacity(kv.value.len() + 32);
            raw_object(&kv, &mut out)?;
            Ok(raw_response(out))
        }
        (&Method::GET, Some(name)) => {
            let (obj, _) = get(backend, r, ns, name).await?;
            Ok(respond(r, output, &obj))
        }
        (&Method::POST, None) => {
            if r.custom.is_some() && ctx.crds.as_ref().is_some_and(|c| c.terminating(r)) {
                return Err(ApiError::method_not_allowed(
                    "create not allowed while custom resource definition is terminating",
                ));
            }
            fieldmanager::check_options(query, "CreateOptions", false)?;
            let (obj, repeated) = read_object(r, headers, &body)?;
            let manager = fieldmanager::manager(query, headers);
            create(ctx, r, ns, query, obj, Some(&manager), &repeated).await
        }
        (&Method::PUT, Some(name)) => {
            fieldmanager::check_options(query, "UpdateOptions", false)?;
            let (obj, repeated) = read_object(r, headers, &body)?;
            let manager = fieldmanager::manager(query, headers);
            let target = UpdateTarget {
                r,
                ns,
                name,
                subresource: if status_subresource {
                    target.subresource.as_deref().unwrap_or("status")
                } else {
                    ""
                },
                manager: &manager,
            };
            guaranteed_update(ctx, target, query, Change::Replace(obj, repeated)).await
        }
        (&Method::PATCH, Some(name)) => {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let kind = PatchType::from_content_type(content_type)?;
            if kind == PatchType::Strategic && r.custom.is_some() {
                // Custom resources have no patch strategies to merge by (upstream: 415).
                return Err(ApiError::unsupported_media_type(content_type));
            }
            fieldmanager::check_options(query, "PatchOptions", kind == PatchType::Apply)?;
            let manager = fieldmanager::manager(query, headers);
            let target = UpdateTarget {
                r,
                ns,
                name,
                subresource: if status_subresource {
                    target.subresource.as_deref().unwrap_or("status")
                } else {
                    ""
                },
                manager: &manager,
            };
            let change = match kind {
                PatchType::Apply => {
                    let (config, dups) = read_apply_body(r, name, &body)?;
                    Change::Apply {
                        config,
                        force: is_true(query.get("force")),
                        repeated: Repeated::Apply(dups),
                    }
                }
                kind => {
                    let (patch, repeated) = patch::decode(kind, &body)?;
                    Change::Patch(kind, patch, repeated)
                }
            };
            guaranteed_update(ctx, target, query, change).await
        }
        (&Method::DELETE, Some(_)) if status_subresource => Err(ApiError::method_not_allowed(
            "DELETE is not supported on the status subresource",
        )),
        (&Method::DELETE, Some(name)) => {
            crate::admission::admit_delete(ctx, r, name)?;
            delete(&ctx.backend, Some(ctx), r, ns, name, query, &body).await
        }
        (&Method::DELETE, None) => delete_collection(ctx, r, ns, query).await,
        _ => Err(ApiError::method_not_allowed(format!(
            "{method} is not supported here"
        ))),
    }
}

/// What go-restful answers a method a path has no route for (upstream's 405).
const NOT_ALLOWED: &str = "the server does not allow this method on the requested resource";

/// A list or an object read, in the form the Accept header asked for.
fn respond(r: &Resource, output: Output, list_or_object: &Value) -> Response {
    match output {
        Output::Table => table::response(r, list_or_object),
        Output::Metadata => table::metadata_response(list_or_object),
        Output::Object => json_response(StatusCode::OK, list_or_object),
    }
}

fn is_true(v: Option<&String>) -> bool {
    matches!(v.map(String::as_str), Some("true" | "1"))
}

fn dry_run(query: &HashMap<String, String>) -> bool {
    query.get("dryRun").is_some_and(|v| v == "All")
}

/// The stored object as served: resourceVersion is the key's mod revision (and a custom
/// resource in the version asked for).
fn decode(r: &Resource, kv: &KeyValue) -> Result<Value, ApiError> {
    let mut obj: Value = serde_json::from_slice(&kv.value).map_err(|e| {
        ApiError::internal(format!(
            "stored object {} is not JSON: {e}",
            String::from_utf8_lossy(&kv.key)
        ))
    })?;
    object::metadata_mut(&mut obj)
        .insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
    if let Some(c) = r.custom {
        crate::crd::served(r, c, &mut obj);
    }
    if let Some(c) = r.conversion {
        (c.from_storage)(&mut obj);
    }
    Ok(obj)
}

/// What is stored: the object without its resourceVersion (the revision says it); custom
/// resources in their storage version.
fn encode(r: &Resource, obj: &Value) -> Vec<u8> {
    if r.custom.is_none() && r.conversion.is_none() && obj.at("/metadata/resourceVersion").is_none()
    {
        // Already as stored (a create's object): no copy to make.
        return serde_json::to_vec(obj).unwrap_or_default();
    }
    let mut stored = obj.clone();
    object::metadata_mut(&mut stored).remove("resourceVersion");
    if let Some(c) = r.custom {
        stored["apiVersion"] = json!(crate::crd::stored_api_version(r, c));
    }
    if let Some(c) = r.conversion {
        (c.to_storage)(&mut stored);
    }
    serde_json::to_vec(&stored).unwrap_or_default()
}

async fn get(
    backend: &Backend,
    r: &Resource,
    ns: Option<&str>,
    name: &str,
) -> Result<(Value, Revision), ApiError> {
    let (kv, _) = backend.get(r.key(ns, name)).await?;
    match kv {
        Some(kv) => Ok((decode(r, &kv)?, kv.mod_revision)),
        None => Err(ApiError::not_found(r.group, r.plural, name)),
    }
}

/// A stored object as a GET asks for it: from the watch cache once it has reached the
/// head (no resourceVersion: a consistent read) or the revision asked for (`0`: whatever it
/// holds), else from storage.
async fn get_stored(
    ctx: &Ctx,
    key: &str,
    query: &HashMap<String, String>,
) -> Result<Option<std::sync::Arc<KeyValue>>, ApiError> {
    if let Some(cache) = &ctx.cache {
        let at_least = match query.get("resourceVersion").filter(|v| !v.is_empty()) {
            Some(v) => parse_rv(v)?,
            None => ctx.backend.head().await?,
        };
        if let Some(found) = cache.get_at(key.as_bytes(), at_least).await {
            return Ok(found);
        }
    }
    let (kv, _) = ctx.backend.get(key).await?;
    Ok(kv.map(std::sync::Arc::new))
}

/// Continue tokens as upstream writes them (`storage/continue.go`): base64url of
/// `{"v":"meta.k8s.io/v1","rv":R,"start":"<key after the prefix>\u0000"}`.
fn encode_continue(rv: Revision, start: &str) -> String {
    URL_SAFE.encode(json!({"v": "meta.k8s.io/v1", "rv": rv, "start": start}).to_string())
}

fn decode_continue(token: &str) -> Result<(Revision, String), ApiError> {
    let bad = || ApiError::bad_request("continue key is not valid");
    let raw = URL_SAFE.decode(token).map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    if v.get("v").and_then(Value::as_str) != Some("meta.k8s.io/v1") {
        return Err(bad());
    }
    let rv = v.get("rv").and_then(Value::as_i64).ok_or_else(bad)?;
    let start = v.get("start").and_then(Value::as_str).ok_or_else(bad)?;
    if start.contains("..") || start.starts_with('/') {
        return Err(bad());
    }
    Ok((rv, start.to_string()))
}

fn parse_rv(s: &str) -> Result<Revision, ApiError> {
    s.parse::<Revision>()
        .ok()
        .filter(|r| *r >= 0)
        .ok_or_else(|| ApiError::bad_request(format!("invalid resource version {s:?}")))
}

/// What a list found: the matching objects as stored, and the list's metadata.
struct Listed {
    kvs: Vec<std::sync::Arc<KeyValue>>,
    metadata: Value,
}

impl Listed {
    /// The List as JSON values (what Tables, YAML and deletecollection work on).
    fn value(&self, r: &Resource) -> Result<Value, ApiError> {
        let items = self
            .kvs
            .iter()
            .map(|kv| decode(r, kv))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(json!({
            "kind": format!("{}List", r.kind),
            "apiVersion": r.api_version(),
            "metadata": self.metadata,
            "items": items,
        }))
    }

    /// The List written from the stored bytes, for kinds served as they are stored (only
    /// each object's metadata is parsed).
    fn raw(&self, r: &Resource) -> Result<Vec<u8>, ApiError> {
        let mut out = Vec::with_capacity(self.kvs.iter().map(|kv| kv.value.len() + 32).sum());
        out.extend_from_slice(b"{\"apiVersion\":");
        serde_json::to_writer(&mut out, &r.api_version()).map_err(internal)?;
        out.extend_from_slice(b",\"items\":[");
        for (i, kv) in self.kvs.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            raw_object(kv, &mut out)?;
        }
        out.extend_from_slice(b"],\"kind\":");
        serde_json::to_writer(&mut out, &format!("{}List", r.kind)).map_err(internal)?;
        out.extend_from_slice(b",\"metadata\":");
        serde_json::to_writer(&mut out, &self.metadata).map_err(internal)?;
        out.push(b'}');
        Ok(out)
    }
}

/// Whether a kind's objects are served as they are stored (plus their resourceVersion).
fn served_as_stored(r: &Resource) -> bool {
    r.custom.is_none() && r.conversion.is_none()
}

/// A stored object as served, written from its bytes: the stored JSON's top-level members
/// copied, with the resourceVersion put into its metadata; as [`decode`] would serve it.
fn raw_object(kv: &KeyValue, out: &mut Vec<u8>) -> Result<(), ApiError> {
    raw_stored(&kv.value, kv.mod_revision, out)
}

/// Stored bytes as served at `revision` (see [`raw_object`]).
fn raw_stored(value: &[u8], revision: Revision, out: &mut Vec<u8>) -> Result<(), ApiError> {
    let top: std::collections::BTreeMap<&str, &serde_json::value::RawValue> =
        serde_json::from_slice(value)
            .map_err(|e| ApiError::internal(format!("stored object is not JSON: {e}")))?;
    let rv = revision.to_string();
    // The stored bytes are copied around the metadata, which gains the resourceVersion.
    if let Some(meta) = top.get("metadata").map(|m| m.get()) {
        let start = meta.as_ptr() as usize - value.as_ptr() as usize;
        out.extend_from_slice(&value[..start]);
        raw_metadata(Some(meta), &rv, out)?;
        out.extend_from_slice(&value[start + meta.len()..]);
        return Ok(());
    }
    let mut members: Vec<(&str, Option<&serde_json::value::RawValue>)> =
        top.iter().map(|(k, v)| (*k, Some(*v))).collect();
    members.push(("metadata", None));
    members.sort_by_key(|(k, _)| *k);
    out.push(b'{');
    for (i, (k, v)) in members.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, k).map_err(internal)?;
        out.push(b':');
        match v {
            Some(v) => out.extend_from_slice(v.get().as_bytes()),
            None => raw_metadata(None, &rv, out)?,
        }
    }
    out.push(b'}');
    Ok(())
}

/// Stored metadata (None: the object has none) as served with `rv`. Stored objects carry no
/// resourceVersion (the revision says it), so it is spliced in as the first member and the
/// rest copied as stored; anything else is written afresh.
fn raw_metadata(meta: Option<&str>, rv: &str, out: &mut Vec<u8>) -> Result<(), ApiError> {
    match meta {
        Some(meta) if meta.starts_with('{') && !meta.contains("\"resourceVersion\"") => {
            out.extend_from_slice(b"{\"resourceVersion\":\"");
            out.extend_from_slice(rv.as_bytes());
            out.push(b'"');
            if meta[1..].trim_start() != "}" {
                out.push(b',');
            }
            out.extend_from_slice(&meta.as_bytes()[1..]);
        }
        meta => {
            let mut fields: serde_json::Map<String, Value> = match meta {
                Some(m) => serde_json::from_str(m).map_err(internal)?,
                None => serde_json::Map::new(),
            };
            fields.insert("resourceVersion".into(), json!(rv));
            serde_json::to_writer(&mut *out, &fields).map_err(internal)?;
        }
    }
    Ok(())
}

fn internal(e: serde_json::Error) -> ApiError {
    ApiError::internal(e.to_string())
}

/// The objects a list selects: from the watch cache at the head, else from storage, one page
/// at one revision (upstream's GetList).
async fn list(
    ctx: &Ctx,
    r: &Resource,
    ns: Option<&str>,
    query: &HashMap<String, String>,
) -> Result<Listed, ApiError> {
    let backend = &ctx.backend;
    let prefix = r.key_prefix(ns);
    let limit = match query.get("limit") {
        Some(l) => l
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?
            .max(0),
        None => 0,
    };
    let rv = query
        .get("resourceVersion")
        .map(String::as_str)
        .filter(|s| !s.is_empty());
    let exact = query.get("resourceVersionMatch").map(String::as_str) == Some("Exact");
    let selectors = Selectors::from_query(r, query)?;
    let selected = |kv: &KeyValue| -> Result<bool, ApiError> {
        Ok(selectors.is_empty() || selectors.matches(&decode(r, kv)?))
    };
    if let Some(snap) = cached(ctx, r, ns, query).await? {
        let mut kvs = Vec::with_capacity(snap.kvs.len());
        for kv in snap.kvs {
            if selected(&kv)? {
                kvs.push(kv);
            }
        }
        return Ok(Listed {
            kvs,
            metadata: json!({"resourceVersion": snap.revision.to_string()}),
        });
    }
    if limit > 0
        && let Some(page) =
            first_page_cached(ctx, r, ns, query, limit, &selected, selectors.is_empty()).await?
    {
        return Ok(page);
    }
    let (start, mut at) = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            if rv.is_some() {
                return Err(ApiError::bad_request(
                    "specifying resource version is not allowed when using continue",
                ));
            }
            let (rv, start) = decode_continue(token)?;
            (format!("{prefix}{start}"), rv)
        }
        None => {
            // An exact or legacy paged read at N reads at N; anything else at the head.
            let at = match rv {
                Some(v) if exact || (limit > 0 && v != "0") => parse_rv(v)?,
                Some(v) => {
                    let n = parse_rv(v)?;
                    let head = backend.head().await?;
                    if n > head {
                        return Err(ApiError::from(kelp_storage::StorageError::FutureRevision {
                            requested: n,
                            current: head,
                        }));
                    }
                    0
                }
                None => 0,
            };
            (prefix.clone(), at)
        }
    };
    let end = kelp_storage::prefix_end(prefix.as_bytes());
    let compacted_continue = |e: kelp_storage::StorageError| match e {
        kelp_storage::StorageError::Compacted { .. } if query.contains_key("continue") => {
            ApiError::gone(
                "The provided continue parameter is too old to display a consistent list result. \
             You can start a new list without the continue parameter.",
            )
        }
        e => e.into(),
    };
    // Pages are read at one revision. With selectors, a short page is topped up from the
    // following keys, fetching twice as many each time (upstream's GetList), so that a page
    // holds `limit` matches unless the range ends.
    let mut kvs: Vec<std::sync::Arc<KeyValue>> = Vec::new();
    let mut start = start.into_bytes();
    let mut fetch = limit;
    let (read_revision, more, last_key, count) = loop {
        let range = KeyRange::between(start.clone(), end.clone());
        let resp = backend
            .range(RangeRequest::new(range).at(at).limit(fetch))
            .await
            .map_err(compacted_continue)?;
        at = resp.read_revision;
        let (more, count, fetched) = (resp.more, resp.count, resp.kvs.len());
        let mut filled_at = None;
        let mut last_seen = None;
        for (i, kv) in resp.kvs.into_iter().enumerate() {
            last_seen = Some(kv.key.clone());
            if selected(&kv)? {
                kvs.push(std::sync::Arc::new(kv));
                if limit > 0 && kvs.len() as i64 == limit {
                    filled_at = Some(i);
                    break;
                }
            }
        }
        match filled_at {
            Some(i) => break (at, more || i + 1 < fetched, last_seen, count),
            None if more => {
                start = last_seen.unwrap_or_default();
                start.push(0);
                fetch = (fetch * 2).min(10_000);
            }
            None => break (at, false, None, count),
        }
    };
    let mut metadata = json!({"resourceVersion": read_revision.to_string()});
    if more {
        let last = last_key.map(|k| String::from_utf8_lossy(&k[prefix.len()..]).into_owned());
        let token = encode_continue(read_revision, &format!("{}\u{0}", last.unwrap_or_default()));
        metadata["continue"] = json!(token);
        // Only known without selectors, as upstream.
        if selectors.is_empty() {
            metadata["remainingItemCount"] = json!(count - kvs.len() as i64);
        }
    }
    Ok(Listed { kvs, metadata })
}

/// Whether a list is read from the watch cache: at the head (no resourceVersion and no
/// limit: consistent) or at "0" (whatever the cache has, whole, as upstream ignores the limit
/// there); never a later page or an exact revision.
fn from_cache(query: &HashMap<String, String>) -> bool {
    let rv = query
        .get("resourceVersion")
        .map(String::as_str)
        .filter(|s| !s.is_empty());
    let limit = query
        .get("limit")
        .and_then(|l| l.parse::<i64>().ok())
        .unwrap_or(0);
    query.get("continue").is_none_or(|c| c.is_empty())
        && query.get("resourceVersionMatch").map(String::as_str) != Some("Exact")
        && (rv.is_none() && limit <= 0 || rv == Some("0"))
}

/// The first page of a consistent list (a limit, no resourceVersion, no continue), from the
/// watch cache once it has reached the head, as upstream's cacher serves it: `limit`
/// matches, and a continue token at the cache's revision when more follow (later pages
/// are read from storage at that revision).
async fn first_page_cached(
    ctx: &Ctx,
    r: &Resource,
    ns: Option<&str>,
    query: &HashMap<String, String>,
    limit: i64,
    selected: &(dyn Fn(&KeyValue) -> Result<bool, ApiError> + Sync),
    unfiltered: bool,
) -> Result<Option<Listed>, ApiError> {
    let Some(cache) = &ctx.cache else {
        return Ok(None);
    };
    if query.get("continue").is_some_and(|c| !c.is_empty())
        || query.get("resourceVersion").is_some_and(|v| !v.is_empty())
        || query
            .get("resourceVersionMatch")
            .is_some_and(|m| !m.is_empty())
    {
        return Ok(None);
    }
    let head = ctx.backend.head().await?;
    let prefix = r.key_prefix(ns);
    let end = kelp_storage::prefix_end(prefix.as_bytes());
    let Some(snap) = cache.snapshot(prefix.as_bytes(), &end, head).await else {
        return Ok(None);
    };
    let total = snap.kvs.len();
    let mut kvs = Vec::with_capacity((limit as usize).min(total));
    let mut more = false;
    for kv in snap.kvs {
        if selected(&kv)? {
            if kvs.len() as i64 == limit {
                more = true;
                break;
            }
            kvs.push(kv);
        }
    }
    let mut metadata = json!({"resourceVersion": snap.revision.to_string()});
    if more && let Some(last) = kvs.last() {
        let last = String::from_utf8_lossy(&last.key[prefix.len()..]).into_owned();
        metadata["continue"] = json!(encode_continue(snap.revision, &format!("{last}\u{0}")));
        if unfiltered {
            metadata["remainingItemCount"] = json!((total - kvs.len()) as i64);
        }
    }
    Ok(Some(Listed { kvs, metadata }))
}

/// The cache's snapshot of a list, once it has reached what the list asks for.
async fn cached(
    ctx: &Ctx,
    r: &Resource,
    ns: Option<&str>,
    query: &HashMap<String, String>,
) -> Result<Option<crate::cache::Snapshot>, ApiError> {
    let Some(cache) = &ctx.cache else {
        return Ok(None);
    };
    if !from_cache(query) {
        return Ok(None);
    }
    let at_least = match query.get("resourceVersion").filter(|v| !v.is_empty()) {
        Some(_) => 0,
        None => ctx.backend.head().await?,
    };
    let prefix = r.key_prefix(ns);
    let end = kelp_storage::prefix_end(prefix.as_bytes());
    Ok(cache.snapshot(prefix.as_bytes(), &end, at_least).await)
}

/// The label and field selectors of a list or watch.
struct Selectors {
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Selectors {
    fn from_query(r: &Resource, query: &HashMap<String, String>) -> Result<Self, ApiError> {
        let get = |k: &str| query.get(k).map(String::as_str).unwrap_or("");
        Ok(Selectors {
            labels: LabelSelector::parse(get("labelSelector"))?,
            fields: FieldSelector::parse(get("fieldSelector"), r.fields)?,
        })
    }
    fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }
    fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(obj)
    }
}

/// Reads and checks a request body: size, media type, JSON, and kind/apiVersion.
pub(crate) fn read_body(
    r: &Resource,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Value, ApiError> {
    check_kind(r, decode_body(headers, body)?)
}

/// A request body as JSON, from JSON, YAML or protobuf by its Content-Type.
pub(crate) fn decode_body(headers: &HeaderMap, body: &Bytes) -> Result<Value, ApiError> {
    decode_repeated(headers, body).map(|(obj, _)| obj)
}

/// A body to write, checked as [`read_body`] does, and the keys it repeated.
fn read_object(
    r: &Resource,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(Value, Repeated), ApiError> {
    let (obj, repeated) = decode_repeated(headers, body)?;
    Ok((check_kind(r, obj)?, repeated))
}

/// [`decode_body`], and the keys the body repeated (the last one wins, as in Go's decoders).
fn decode_repeated(headers: &HeaderMap, body: &Bytes) -> Result<(Value, Repeated), ApiError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::too_large());
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let media = content_type.split(';').next().unwrap_or("").trim();
    Ok(match media {
        "application/json" => {
            let (obj, dups) = crate::strict::json(body).map_err(|e| {
                ApiError::bad_request(format!(
                    "the body of the request could not be decoded as JSON: {e}"
                ))
            })?;
            let repeated = if dups.is_empty() {
                Repeated::None
            } else {
                Repeated::Json {
                    body: body.clone(),
                    dups,
                }
            };
            (obj, repeated)
        }
        "application/vnd.kubernetes.protobuf" => (crate::protobuf::decode(body)?, Repeated::None),
        "application/yaml" => {
            let (obj, dups) = crate::strict::yaml(body).map_err(|e| {
                ApiError::bad_request(format!(
                    "the body of the request could not be decoded as YAML: {e}"
                ))
            })?;
            (obj, Repeated::Yaml(dups))
        }
        _ => return Err(ApiError::unsupported_media_type(content_type)),
    })
}

/// An apply configuration (`application/apply-patch+yaml`; kubectl sends JSON, which is YAML):
/// an object of the kind, named as the URL names it, and the keys it repeated.
fn read_apply_body(
    r: &Resource,
    name: &str,
    body: &Bytes,
) -> Result<(Value, Vec<crate::strict::Dup>), ApiError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::too_large());
    }
    let (mut obj, dups) = crate::strict::yaml(body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body of the request could not be decoded as YAML: {e}"
        ))
    })?;
    if obj
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .is_empty()
    {
        return Err(ApiError::bad_request(format!(
            "Object 'Kind' is missing in '{}'",
            String::from_utf8_lossy(body)
        )));
    }
    let mut obj = check_kind(r, std::mem::take(&mut obj))?;
    let meta = object::metadata_mut(&mut obj);
    if meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .is_empty()
    {
        meta.insert("name".into(), json!(name));
    }
    Ok((obj, dups))
}

/// Refuses a body that is not an object of the resource's kind and version.
fn check_kind(r: &Resource, obj: Value) -> Result<Value, ApiError> {
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request must be a JSON object",
        ));
    }
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    if !api_version.is_empty() && api_version != r.api_version() {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            r.api_version()
        )));
    }
    if !kind.is_empty() && kind != r.kind {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            r.kind
        )));
    }
    Ok(obj)
}

/// Field validation through the kind's type (`?fieldValidation=`): the object as the type
/// reads it, and the warnings to send.
fn check_fields(
    r: &Resource,
    obj: Value,
    old: Option<&Value>,
    query: &HashMap<String, String>,
    repeated: &Repeated,
) -> Result<(Value, Vec<String>), ApiError> {
    let mode = FieldValidation::from_query(query.get("fieldValidation").map(String::as_str))?;
    match r.custom {
        Some(c) => crate::crd::check(r, c, obj, old, repeated, mode),
        // Upstream names the version alone: `Deployment in version "v1"`.
        None => crate::typed::validate(&r.typed, r.kind, r.version, &obj, repeated, mode),
    }
}

/// A strict apply names the configuration's undeclared fields as structured merge does, before
/// anything is merged (upstream: "failed to create typed patch object").
fn apply_unknown_fields(
    r: &Resource,
    config: &Value,
    ns: Option<&str>,
    query: &HashMap<String, String>,
) -> Result<(), ApiError> {
    let mode = FieldValidation::from_query(query.get("fieldValidation").map(String::as_str))?;
    if mode != FieldValidation::Strict {
        return Ok(());
    }
    let unknown = match r.custom {
        Some(c) => crate::crd::unknown_fields(c, &mut config.clone()).unwrap_or_default(),
        // A partial configuration may not read as the whole type; the merged object is
        // checked then.
        None => (r.typed.check)(config).map(|(_, u)| u).unwrap_or_default(),
    };
    if unknown.is_empty() {
        return Ok(());
    }
    let fields: Vec<String> = unknown
        .iter()
        .map(|f| format!(".{f}: field not declared in schema"))
        .collect();
    Err(ApiError::bad_request(format!(
        "failed to create typed patch object ({}/{}; {}, Kind={}): {}",
        ns.unwrap_or(""),
        object::name(config),
        r.api_version(),
        r.kind,
        fields.join("\n")
    )))
}

/// The kind's own validation rules: 422 with a cause per invalid field.
fn rules(r: &Resource, obj: &Value) -> Result<(), ApiError> {
    let causes = (r.validate)(obj);
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(
            r.group,
            r.kind,
            object::name(obj),
            causes,
        ))
    }
}

/// Adds `Warning: 299 - "..."` headers, which kubectl prints as `Warning: ...`.
pub(crate) fn with_warnings(mut response: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let quoted = w.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(v) = header::HeaderValue::from_str(&format!("299 - \"{quoted}\"")) {
            response.headers_mut().append(header::WARNING, v);
        }
    }
    response
}

/// DNS-1123 subdomain (most names), label (namespaces) or an IP (IPAddresses), as upstream
/// validates them.
fn validate_name(r: &Resource, name: &str) -> Option<String> {
    let label = object::is_dns1123_label;
    if r.group == "rbac.authorization.k8s.io" || r.group == "apiregistration.k8s.io" {
        // RBAC names are path segments (upstream's ValidateRBACName): `system:` names too;
        // so are APIServices' (`v1.` is the core group's).
        let why = match name {
            "." => Some("may not be '.'"),
            ".." => Some("may not be '..'"),
            n if n.contains('/') => Some("may not contain '/'"),
            n if n.contains('%') => Some("may not contain '%'"),
            _ => None,
        };
        return why.map(|w| format!("Invalid value: \"{name}\": {w}"));
    }
    if r.group == "networking.k8s.io" && r.kind == "IPAddress" {
        // An IPAddress is named by its IP, `:` and all (upstream's ValidateIPAddressName).
        return crate::registry::ip_address_name(name)
            .map(|w| format!("Invalid value: {name:?}: {w}"));
    }
    if r.kind == "Namespace" {
        if !label(name) {
            return Some(format!(
                "Invalid value: \"{name}\": a lowercase RFC 1123 label must consist of lower case alphanumeric \
                 characters or '-', and must start and end with an alphanumeric character"
            ));
        }
    } else if !object::is_dns1123_subdomain(name) {
        return Some(format!(
            "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric \
             characters, '-' or '.', and must start and end with an alphanumeric character"
        ));
    }
    None
}

/// Sets kind and apiVersion, checks the namespace against the URL's, and validates the name.
fn prepare(r: &Resource, ns: Option<&str>, obj: &mut Value) -> Result<(), ApiError> {
    obj["apiVersion"] = json!(r.api_version());
    obj["kind"] = json!(r.kind);
    let name = object::name(obj).to_string();
    let meta = object::metadata_mut(obj);
    match (
        ns,
        meta.get("namespace")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty()),
    ) {
        (Some(url), Some(body)) if url != body => {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        (Some(url), _) if r.namespaced => {
            meta.insert("namespace".into(), json!(url));
        }
        (None, _) if r.namespaced => {
            return Err(ApiError::bad_request(
                "the namespace of the object must be set on the request",
            ));
        }
        _ => {
            meta.remove("namespace");
        }
    }
    if let Some(why) = validate_name(r, &name) {
        return Err(ApiError::invalid(
            r.group,
            r.kind,
            &name,
            vec![("metadata.name".into(), why)],
        ));
    }
    Ok(())
}

/// Creates need their namespace (upstream's NamespaceLifecycle). The watch cache answers the
/// common case without a read; as the cache may lag a namespace created a moment ago, a miss
/// is looked up in storage before the create is refused.
async fn require_namespace(ctx: &Ctx, ns: Option<&str>) -> Result<(), ApiError> {
    let Some(ns) = ns else { return Ok(()) };
    let key = format!("/registry/namespaces/{ns}");
    if ctx.cache.as_ref().is_some_and(|c| c.contains(&key)) {
        return Ok(());
    }
    if ctx.backend.get(key).await?.0.is_none() {
        return Err(ApiError::not_found("", "namespaces", ns));
    }
    Ok(())
}

/// What the handlers work with: the store, and the process's metrics, watch cache and
/// custom resource definitions (absent during bootstrap and for the apiserver's own writes).
pub struct Ctx {
    pub backend: Backend,
    /// Authentication and RBAC (None: every write is the API server's own).
    pub security: Option<std::sync::Arc<crate::security::Security>>,
    /// The admission webhooks configured in the cluster.
    pub webhooks: Option<std::sync::Arc<crate::webhook::Webhooks>>,
    /// The ValidatingAdmissionPolicies and their bindings.
    pub policies: Option<std::sync::Arc<crate::vap::Policies>>,
    pub metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
    pub cache: Option<std::sync::Arc<crate::cache::WatchCache>>,
    pub crds: Option<std::sync::Arc<crate::crd::CustomResources>>,
}

/// Five random characters of upstream's name alphabet (no vowels, no look-alikes).
pub(crate) fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let uuid = uuid::Uuid::new_v4();
    uuid.as_bytes()
        .iter()
        .take(5)
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

fn generate_name(base: &str) -> String {
    let base: String = base.chars().take(63 - 5).collect();
    format!("{base}{}", random_suffix())
}

/// A new object's uid and creation time (upstream's rest.FillObjectMetaSystemFields).
fn fill_system_fields(meta: &mut serde_json::Map<String, Value>) {
    meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    meta.insert("creationTimestamp".into(), json!(object::now()));
}

/// An object the API server creates itself, straight in storage (the IPAddress a Service's
/// ClusterIP takes), as it is stored: with the uid, creation time and managed fields of
/// `manager` that a create through these handlers gives.
pub(crate) fn server_created(r: &Resource, mut obj: Value, manager: &str) -> Vec<u8> {
    fill_system_fields(object::metadata_mut(&mut obj));
    fieldmanager::update(None, &mut obj, &writer(r, manager, "", &r.api_version()));
    encode(r, &obj)
}

/// Creates an object. `manager` records the write in the managed fields; None when they are
/// already set (an apply that creates).
async fn create(
    ctx: &Ctx,
    r: &Resource,
    ns: Option<&str>,
    query: &HashMap<String, String>,
    mut obj: Value,
    manager: Option<&str>,
    repeated: &Repeated,
) -> Result<Response, ApiError> {
    let backend = &ctx.backend;
    let meta = object::metadata_mut(&mut obj);
    if meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .is_empty()
    {
        match meta
            .get("generateName")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            Some(base) => {
                let generated = generate_name(base);
                meta.insert("name".into(), json!(generated));
            }
            None => {
                return Err(ApiError::invalid(
                    r.group,
                    r.kind,
                    "",
                    vec![(
                        "metadata.name".into(),
                        "Required value: name or generateName is required".into(),
                    )],
                ));
            }
        }
    }
    for cleared in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        meta.remove(cleared);
    }
    fill_system_fields(meta);
    prepare(r, ns, &mut obj)?;
    let (mut obj, warnings) = check_fields(r, obj, None, query, repeated)?;
    if r.status == Status::Subresource {
        obj["status"] = json!({});
    }
    (r.defaults)(&mut obj);
    // A CertificateSigningRequest records who asked (upstream's PrepareForCreate).
    if r.kind == "CertificateSigningRequest"
        && let Ok(user) = crate::security::REQUESTER.try_with(std::sync::Arc::clone)
        && obj.get("spec").is_some_and(Value::is_object)
    {
        let spec = &mut obj["spec"];
        spec["username"] = json!(user.name);
        spec["uid"] = if user.uid.is_empty() {
            Value::Null
        } else {
            json!(user.uid)
        };
        spec["groups"] = json!(user.groups);
        spec["extra"] = if user.extra.is_empty() {
            Value::Null
        } else {
            json!(user.extra)
        };
        if let Some(m) = spec.as_object_mut() {
            m.retain(|_, v| !v.is_null());
        }
    }
    let admit = crate::admission::Admit {
        r,
        ns,
        subresource: "",
        old: None,
        dry_run: dry_run(query),
    };
    let mut warnings = warnings;
    warnings.extend(crate::admission::mutate(ctx, &admit, &mut obj).await?);
    (r.prepare_create)(&mut obj);
    if r.generation {
        object::metadata_mut(&mut obj).insert("generation".into(), json!(1));
    }
    rules(r, &obj)?;
    warnings.extend(crate::admission::validate(ctx, &admit, &obj).await?);
    if let Some(manager) = manager {
        fieldmanager::update(None, &mut obj, &writer(r, manager, "", &r.api_version()));
    }
    require_namespace(ctx, ns).await?;
    let name = object::name(&obj).to_string();
    if dry_run(query) {
        return Ok(with_warnings(
            json_response(StatusCode::CREATED, &obj),
            &warnings,
        ));
    }
    let allocated = match r.allocate {
        Some(allocate) => allocate(backend, &mut obj).await?,
        None => Vec::new(),
    };
    let created = backend
        .txn(Txn::create(r.key(ns, &name), encode(r, &obj)))
        .await;
    match created {
        Ok(TxnOutcome::Succeeded { revision, .. }) => {
            object::metadata_mut(&mut obj)
                .insert("resourceVersion".into(), json!(revision.to_string()));
            Ok(with_warnings(
                json_response(StatusCode::CREATED, &obj),
                &warnings,
            ))
        }
        Ok(TxnOutcome::Failed { .. }) => {
            crate::allocator::release(backend, &obj, &allocated).await;
            Err(ApiError::already_exists(r.group, r.plural, &name))
        }
        Err(e) => {
            crate::allocator::release(backend, &obj, &allocated).await;
            Err(e.into())
        }
    }
}

/// Where an object keeps what its Scale shows: the built-in kinds' `spec.replicas` and
/// `status.replicas`, or a custom resource's scale paths (JSON pointers).
fn scale_paths(r: &Resource) -> (&str, &str) {
    match r.custom.and_then(|c| c.scale.as_ref()) {
        Some(p) => (&p.spec_replicas, &p.status_replicas),
        None => ("/spec/replicas", "/status/replicas"),
    }
}

/// The autoscaling/v1 Scale of an object.
fn scale_of(r: &Resource, obj: &Value) -> Value {
    let meta = &obj["metadata"];
    let selector = match r.custom.and_then(|c| c.scale.as_ref()) {
        Some(paths) => paths
            .label_selector
            .as_deref()
            .and_then(|p| obj.at(p))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        None => match obj
            .at("/spec/selector/matchLabels")
            .or(obj.at("/spec/selector/matchExpressions"))
        {
            Some(_) => crate::registry::label_selector_string(obj, "/spec/selector"),
            None => crate::registry::map_string(obj, "/spec/selector"),
        },
    };
    let (spec, status) = scale_paths(r);
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"], "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": obj.at(spec).cloned().unwrap_or(json!(0))},
        "status": {"replicas": obj.at(status).cloned().unwrap_or(json!(0)), "selector": selector},
    })
}

/// The `/scale` subresource: reads and writes `spec.replicas` as a Scale; the write goes
/// through the object's GuaranteedUpdate, so it is a spec change (a new generation).
#[allow(clippy::too_many_arguments)]
async fn scale(
    ctx: &Ctx,
    r: &Resource,
    ns: Option<&str>,
    name: &str,
    method: &Method,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let backend = &ctx.backend;
    let (current, _) = get(backend, r, ns, name).await?;
    let current_scale = scale_of(r, &current);
    let new_scale = match *method {
        Method::GET => return Ok(json_response(StatusCode::OK, &current_scale)),
        Method::PUT => {
            let v: Value = serde_json::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!(
                    "the body of the request could not be decoded as JSON: {e}"
                ))
            })?;
            if v.get("kind")
                .and_then(Value::as_str)
                .is_some_and(|k| k != "Scale")
            {
                return Err(ApiError::bad_request(
                    "the body of a scale update must be a Scale",
                ));
            }
            v
        }
        Method::PATCH => {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let kind = PatchType::from_content_type(content_type)?;
            if kind == PatchType::Apply {
                return Err(ApiError::unsupported_media_type(content_type));
            }
            let mut unversioned = current_scale.clone();
            object::metadata_mut(&mut unversioned).remove("resourceVersion");
            let (body, _) = patch::decode(kind, body)?;
            patch::apply(
                kind,
                &unversioned,
                &body,
                patch::definition("autoscaling/v1", "Scale"),
            )?
        }
        _ => {
            return Err(ApiError::method_not_allowed(format!(
                "{method} is not supported on the scale subresource"
            )));
        }
    };
    let replicas = new_scale
        .at("/spec/replicas")
        .and_then(Value::as_i64)
        .filter(|n| *n >= 0)
        .ok_or_else(|| {
            ApiError::invalid(
                "autoscaling",
                "Scale",
                name,
                vec![(
                    "spec.replicas".into(),
                    "Invalid value: must be greater than or equal to 0".into(),
                )],
            )
        })?;
    // A merge patch of the replicas at their path.
    let change = scale_paths(r)
        .0
        .rsplit('/')
        .filter(|s| !s.is_empty())
        .fold(json!(replicas), |inner, key| json!({ key: inner }));
    let manager = fieldmanager::manager(query, headers);
    let target = UpdateTarget {
        r,
        ns,
        name,
        subresource: "scale",
        manager: &manager,
    };
    partial_update(ctx, target, query, change, &new_scale).await?;
    let (updated, _) = get(backend, r, ns, name).await?;
    Ok(json_response(StatusCode::OK, &scale_of(r, &updated)))
}

/// An update by a subresource that writes part of the object (finalize, scale): `patch`
/// merged into it, with the requested object's resourceVersion as the precondition.
/// A write through a subresource that changes only the fields of `patch` (a merge patch).
async fn subresource_write(
    ctx: &Ctx,
    (r, ns, name): (&'static Resource, Option<&str>, &str),
    subresource: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    patch: Value,
    requested: &Value,
) -> Result<Response, ApiError> {
    let manager = fieldmanager::manager(query, headers);
    let target = UpdateTarget {
        r,
        ns,
        name,
        subresource,
        manager: &manager,
    };
    partial_update(ctx, target, query, patch, requested).await
}

async fn partial_update(
    ctx: &Ctx,
    target: UpdateTarget<'_>,
    query: &HashMap<String, String>,
    mut patch: Value,
    requested: &Value,
) -> Result<Response, ApiError> {
    if let Some(rv) = object::resource_version(requested) {
        patch["metadata"] = json!({"resourceVersion": rv});
    }
    guaranteed_update(
        ctx,
        target,
        query,
        Change::Patch(PatchType::Merge, patch, Repeated::None),
    )
    .await
}

/// Status and generation of an update (upstream's status strategies): a write to the object
/// keeps the current status and bumps the generation when anything but metadata and status
/// changed; a write to `/status` changes the status alone.
fn split_status(r: &Resource, current: &Value, new: Value, status_subresource: bool) -> Value {
    let without = |o: &Value| {
        let mut o = o.clone();
        if let Some(m) = o.as_object_mut() {
            m.remove("metadata");
            m.remove("status");
        }
        o
    };
    let mut out = if status_subresource {
        let mut out = current.clone();
        out["status"] = new.get("status").cloned().unwrap_or_else(|| json!({}));
        if r.custom.is_none() {
            // Built-in status strategies reset the spec and let metadata through (a
            // namespace's status patch may annotate it).
            if let Some(meta) = new.get("metadata") {
                out["metadata"] = meta.clone();
            }
            // A Deployment's status strategy keeps its labels too.
            if r.group == "apps" && r.kind == "Deployment" {
                let meta = object::metadata_mut(&mut out);
                match current.at("/metadata/labels") {
                    Some(labels) => meta.insert("labels".into(), labels.clone()),
                    None => meta.remove("labels"),
                };
            }
        } else {
            // A custom resource's keeps its metadata: only the precondition and what an
            // apply recorded come along.
            for kept in ["resourceVersion", "managedFields"] {
                if let Some(v) = new.at(&format!("/metadata/{kept}")) {
                    object::metadata_mut(&mut out).insert(kept.into(), v.clone());
                }
            }
        }
        out
    } else {
        let mut out = new;
        match current.get("status") {
            Some(s) => out["status"] = s.clone(),
            None => {
                if let Some(m) = out.as_object_mut() {
                    m.remove("status");
                }
            }
        }
        out
    };
    if r.generation {
        let generation = current
            .at("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let changed = !status_subresource && without(current) != without(&out);
        object::metadata_mut(&mut out)
            .insert("generation".into(), json!(generation + i64::from(changed)));
    }
    out
}

/// What an update makes of the current object: a replacement (PUT), a patch of it, or a
/// server-side apply of a configuration to it.
enum Change {
    Replace(Value, Repeated),
    Patch(PatchType, Value, Repeated),
    Apply {
        config: Value,
        force: bool,
        repeated: Repeated,
    },
}

impl Change {
    /// What the request body repeated, for strict field validation.
    fn repeated(&self) -> &Repeated {
        match self {
            Change::Replace(_, r) | Change::Patch(_, _, r) => r,
            Change::Apply { repeated, .. } => repeated,
        }
    }
}

/// The object an update is for, the subresource it came through ("", "status" or "scale")
/// and who writes it.
struct UpdateTarget<'a> {
    r: &'a Resource,
    ns: Option<&'a str>,
    name: &'a str,
    subresource: &'a str,
    manager: &'a str,
}

/// The field manager's view of a write by `manager` through `subresource` ("" for the object).
fn writer<'a>(
    r: &Resource,
    manager: &'a str,
    subresource: &'a str,
    api_version: &'a str,
) -> fieldmanager::Writer<'a> {
    fieldmanager::Writer {
        manager,
        subresource,
        api_version,
        ty: patch::struct_type(patch::definition(api_version, r.kind)),
        status_split: r.status != Status::None,
    }
}

/// Upstream's GuaranteedUpdate: read, change, compare-and-swap; on a concurrent write, read
/// again and redo the change, unless the client named the resourceVersion it changed (then
/// 409 Conflict).
async fn guaranteed_update(
    ctx: &Ctx,
    target: UpdateTarget<'_>,
    query: &HashMap<String, String>,
    change: Change,
) -> Result<Response, ApiError> {
    let backend = &ctx.backend;
    let UpdateTarget {
        r,
        ns,
        name,
        subresource,
        manager,
    } = target;
    // A CSR's approval is a status write (upstream's approval strategy).
    let status = matches!(subresource, "status" | "approval");
    let api_version = r.api_version();
    let w = writer(r, manager, subresource, &api_version);
    if let Change::Apply { config, .. } = &change {
        apply_unknown_fields(r, config, ns, query)?;
    }
    loop {
        let (mut current, current_rev) = match get(backend, r, ns, name).await {
            Err(e) if e.reason == "NotFound" => {
                if let Change::Apply { config, force, .. } = &change {
                    // An apply to a missing object creates it.
                    let obj = fieldmanager::apply(None, config, &w, *force)?;
                    return create(ctx, r, ns, query, obj, None, change.repeated()).await;
                }
                return Err(e);
            }
            other => other?,
        };
        let stored = encode(r, &current);
        let mut obj = match &change {
            Change::Replace(obj, _) => obj.clone(),
            Change::Apply { config, force, .. } => {
                object::metadata_mut(&mut current).remove("resourceVersion");
                fieldmanager::apply(Some(&current), config, &w, *force)?
            }
            Change::Patch(kind, body, _) => {
                // Without its resourceVersion, so that one in the result came from the patch.
                object::metadata_mut(&mut current).remove("resourceVersion");
                patch::apply(
                    *kind,
                    &current,
                    body,
                    patch::definition(&r.api_version(), r.kind),
                )?
            }
        };
        let new_name = object::name(&obj).to_string();
        if new_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({new_name}) does not match the name on the URL ({name})"
            )));
        }
        prepare(r, ns, &mut obj)?;
        let (mut obj, warnings) = check_fields(r, obj, Some(&current), query, change.repeated())?;
        (r.defaults)(&mut obj);
        let precondition = object::resource_version(&obj).map(str::to_string);
        if r.status != Status::None {
            obj = split_status(r, &current, obj, status);
        }
        (r.prepare_update)(subresource, &current, &mut obj);
        (r.on_update)(&current, &mut obj)?;
        let admit = crate::admission::Admit {
            r,
            ns,
            subresource,
            old: Some(&current),
            dry_run: dry_run(query),
        };
        let mut warnings = warnings;
        warnings.extend(crate::admission::mutate(ctx, &admit, &mut obj).await?);
        rules(r, &obj)?;
        warnings.extend(crate::admission::validate(ctx, &admit, &obj).await?);
        if !matches!(change, Change::Apply { .. }) {
            fieldmanager::update(Some(&current), &mut obj, &w);
        }
        if precondition
            .as_ref()
            .is_some_and(|rv| *rv != current_rev.to_string())
        {
            return Err(ApiError::conflict(r.group, r.plural, name));
        }
        let meta = object::metadata_mut(&mut obj);
        for kept in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            match current.at(&format!("/metadata/{kept}")) {
                Some(v) => meta.insert(kept.into(), v.clone()),
                None => meta.remove(kept),
            };
        }
        if dry_run(query) {
            return Ok(with_warnings(
                json_response(StatusCode::OK, &obj),
                &warnings,
            ));
        }
        // An object being deleted goes once its last finalizer is removed.
        if goes_on_update(r, &obj) {
            match backend
                .txn(Txn::delete(r.key(ns, name), current_rev))
                .await?
            {
                TxnOutcome::Succeeded { .. } => {
                    let mut held = (r.allocations)(&current);
                    held.extend((r.allocations)(&obj));
                    crate::allocator::release(backend, &obj, &held).await;
                    return Ok(with_warnings(
                        json_response(StatusCode::OK, &obj),
                        &warnings,
                    ));
                }
                TxnOutcome::Failed { .. } if precondition.is_some() => {
                    return Err(ApiError::conflict(r.group, r.plural, name));
                }
                TxnOutcome::Failed { .. } => continue,
            }
        }
        let value = encode(r, &obj);
        // A write that changes nothing is not made (upstream's GuaranteedUpdate): the
        // resourceVersion stays and watchers see no event.
        // (An encrypted kind is rewritten anyway: that is how its objects move to a new key.)
        if value == stored && !backend.transforms(r.key(ns, name).as_bytes()) {
            object::metadata_mut(&mut obj)
                .insert("resourceVersion".into(), json!(current_rev.to_string()));
            return Ok(with_warnings(
                json_response(StatusCode::OK, &obj),
                &warnings,
            ));
        }
        match backend
            .txn(Txn::update(r.key(ns, name), current_rev, value))
            .await?
        {
            TxnOutcome::Succeeded { revision, .. } => {
                // What the object no longer holds (a Service become ExternalName: its
                // ClusterIP) is released once the update is stored.
                let kept = (r.allocations)(&obj);
                let given_up: Vec<String> = (r.allocations)(&current)
                    .into_iter()
                    .filter(|key| !kept.contains(key))
                    .collect();
                if !given_up.is_empty() {
                    crate::allocator::release(backend, &current, &given_up).await;
                }
                object::metadata_mut(&mut obj)
                    .insert("resourceVersion".into(), json!(revision.to_string()));
                return Ok(with_warnings(
                    json_response(StatusCode::OK, &obj),
                    &warnings,
                ));
            }
            TxnOutcome::Failed { .. } if precondition.is_some() => {
                return Err(ApiError::conflict(r.group, r.plural, name));
            }
            TxnOutcome::Failed { .. } => continue,
        }
    }
}

/// The DeleteOptions of a request, from its body (kubectl and kube-rs send
/// `{"propagationPolicy": ...}`) or its query (`gracePeriodSeconds`, `propagationPolicy`,
/// `orphanDependents`), validated as upstream's ValidateDeleteOptions does.
struct DeleteOptions {
    uid: Option<String>,
    resource_version: Option<String>,
    grace_period: Option<i64>,
    propagation: Option<Propagation>,
}

/// How a deletion treats the object's dependents (the garbage collector acts on it).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Propagation {
    Orphan,
    Background,
    Foreground,
}

impl DeleteOptions {
    fn parse(body: &Bytes, query: &HashMap<String, String>) -> Result<Self, ApiError> {
        let opts: Value = if body.is_empty() {
            json!({})
        } else {
            serde_json::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!("the DeleteOptions could not be decoded: {e}"))
            })?
        };
        let get = |k: &str| {
            opts.at(&format!("/preconditions/{k}"))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let invalid = |field: &str, message: String| {
            ApiError::invalid(
                "meta.k8s.io",
                "DeleteOptions",
                "",
                vec![(field.to_string(), message)],
            )
        };
        let grace_period = match opts.get("gracePeriodSeconds") {
            Some(Value::Null) | None => match query.get("gracePeriodSeconds") {
                Some(q) => Some(q.parse::<i64>().map_err(|_| {
                    ApiError::bad_request(format!("invalid gracePeriodSeconds {q:?}"))
                })?),
                None => None,
            },
            Some(v) => Some(v.as_i64().ok_or_else(|| {
                ApiError::bad_request(
                    "the DeleteOptions could not be decoded: gracePeriodSeconds is not an integer"
                        .to_string(),
                )
            })?),
        };
        let policy = opts
            .get("propagationPolicy")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| query.get("propagationPolicy").cloned());
        let orphan = opts
            .get("orphanDependents")
            .and_then(Value::as_bool)
            .or_else(|| query.get("orphanDependents").map(|v| v == "true"));
        let propagation = match (policy.as_deref(), orphan) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "propagationPolicy",
                    format!(
                        "Invalid value: {:?}: orphanDependents and deletionPropagation cannot be both set",
                        policy.unwrap_or_default()
                    ),
                ));
            }
            (Some("Orphan"), None) => Some(Propagation::Orphan),
            (Some("Background"), None) => Some(Propagation::Background),
            (Some("Foreground"), None) => Some(Propagation::Foreground),
            (Some(other), None) => {
                return Err(invalid(
                    "propagationPolicy",
                    format!(
                        "Unsupported value: {other:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
                    ),
                ));
            }
            (None, Some(true)) => Some(Propagation::Orphan),
            (None, Some(false)) => Some(Propagation::Background),
            (None, None) => None,
        };
        Ok(DeleteOptions {
            uid: get("uid"),
            resource_version: get("resourceVersion"),
            grace_period,
            propagation,
        })
    }

    /// The grace period an object gets: a pod running on a node gets its
    /// terminationGracePeriodSeconds (or the request's) for its kubelet to stop it; an
    /// unscheduled or finished pod, and every other kind, goes at once.
    fn grace_period(&self, r: &Resource, obj: &Value) -> i64 {
        if !(r.group.is_empty() && r.plural == "pods") {
            return 0;
        }
        let scheduled = obj
            .at("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
        let finished = matches!(
            obj.at("/status/phase").and_then(Value::as_str),
            Some("Succeeded" | "Failed")
        );
        if !scheduled || finished {
            return 0;
        }
        let period = self.grace_period.unwrap_or_else(|| {
            obj.at("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(30)
        });
        // A negative period means the shortest (upstream's CheckGracefulDelete).
        if period < 0 { 1 } else { period }
    }

    fn check(&self, r: &Resource, name: &str, obj: &Value, rev: Revision) -> Result<(), ApiError> {
        let uid = obj.at("/metadata/uid").and_then(Value::as_str);
        if self.uid.as_deref().is_some_and(|u| Some(u) != uid) {
            return Err(ApiError::conflict_message(
                r.group,
                r.plural,
                name,
                format!(
                    "Precondition failed: UID in precondition: {}, UID in object meta: {}",
                    self.uid.as_deref().unwrap_or(""),
                    uid.unwrap_or("")
                ),
            ));
        }
        if self
            .resource_version
            .as_ref()
            .is_some_and(|v| *v != rev.to_string())
        {
            return Err(ApiError::conflict_message(
                r.group,
                r.plural,
                name,
                format!(
                    "Precondition failed: ResourceVersion in precondition: {}, ResourceVersion in object meta: {rev}",
                    self.resource_version.as_deref().unwrap_or("")
                ),
            ));
        }
        Ok(())
    }
}

/// A namespace waits for its spec.finalizers (the namespace controller empties it first).
fn namespace_pending(r: &Resource, obj: &Value) -> bool {
    r.group.is_empty()
        && r.kind == "Namespace"
        && obj
            .at("/spec/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty())
}

/// Whether an update to an object being deleted removes it: its last finalizer is gone and
/// no grace period is running (upstream's ShouldDeleteDuringUpdate; a namespace also waits
/// for its spec.finalizers).
fn goes_on_update(r: &Resource, obj: &Value) -> bool {
    obj.at("/metadata/deletionTimestamp").is_some()
        && !has_finalizers(obj)
        && obj
            .at("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .is_none_or(|g| g == 0)
        && !namespace_pending(r, obj)
}

/// Adds the finalizers a kind's deletion waits for, once each.
fn add_finalizers(obj: &mut Value, finalizers: &[&str]) {
    for f in finalizers {
        let list = object::metadata_mut(obj)
            .entry("finalizers")
            .or_insert_with(|| json!([]));
        if let Value::Array(items) = list
            && !items.iter().any(|i| i == f)
        {
            items.push(json!(f));
        }
    }
}

fn has_finalizers(obj: &Value) -> bool {
    obj.at("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
}

/// Deletes an object as a DELETE without options would, without admission (for eviction,
/// as upstream's eviction deletes with ValidateAllObjectFunc).
pub async fn delete_object(
    backend: &Backend,
    r: &Resource,
    ns: Option<&str>,
    name: &str,
    query: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    delete(backend, None, r, ns, name, query, &Bytes::new()).await
}

/// Deletes an object, or marks it with a deletionTimestamp and returns it while something
/// must happen first (upstream's graceful path): its finalizers are removed (those the
/// propagation policy adds included), a namespace's content is emptied, a pod's kubelet stops
/// it within its grace period. A later DELETE can shorten a pod's grace period; a grace
/// period of 0 with no finalizers left deletes at once.
async fn delete(
    backend: &Backend,
    admission: Option<&Ctx>,
    r: &Resource,
    ns: Option<&str>,
    name: &str,
    query: &HashMap<String, String>,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let options = DeleteOptions::parse(body, query)?;
    let mut warnings = Vec::new();
    let response = loop {
        let (mut obj, rev) = get(backend, r, ns, name).await?;
        options.check(r, name, &obj, rev)?;
        if let Some(ctx) = admission {
            warnings = crate::admission::delete(ctx, r, ns, name, &obj, dry_run(query)).await?;
        }
        let grace = options.grace_period(r, &obj);
        let mut changed = false;
        let deleting = obj.at("/metadata/deletionTimestamp").is_some();
        if !deleting {
            let mut finalizers = r.delete_finalizers.to_vec();
            match options.propagation {
                Some(Propagation::Orphan) => finalizers.push("orphan"),
                Some(Propagation::Foreground) => finalizers.push("foregroundDeletion"),
                _ => {}
            }
            add_finalizers(&mut obj, &finalizers);
        }
        let pending_grace = obj
            .at("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64);
        if !deleting || pending_grace.is_some_and(|g| grace < g) {
            if grace > 0 || has_finalizers(&obj) || namespace_pending(r, &obj) {
                let at = jiff::Timestamp::now()
                    .round(jiff::Unit::Second)
                    .unwrap_or_else(|_| jiff::Timestamp::now())
                    + jiff::SignedDuration::from_secs(grace);
                let meta = object::metadata_mut(&mut obj);
                meta.insert("deletionTimestamp".into(), json!(at.to_string()));
                meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
                if namespace_pending(r, &obj) {
                    obj["status"]["phase"] = json!("Terminating");
                }
                changed = true;
            } else {
                let meta = object::metadata_mut(&mut obj);
                meta.remove("deletionGracePeriodSeconds");
            }
        }
        let waits = has_finalizers(&obj)
            || namespace_pending(r, &obj)
            || obj
                .at("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                .is_some_and(|g| g > 0 && grace > 0);
        if waits {
            if changed && !dry_run(query) {
                match backend
                    .txn(Txn::update(r.key(ns, name), rev, encode(r, &obj)))
                    .await?
                {
                    TxnOutcome::Succeeded { revision, .. } => {
                        object::metadata_mut(&mut obj)
                            .insert("resourceVersion".into(), json!(revision.to_string()));
                    }
                    TxnOutcome::Failed { .. } => continue,
                }
            }
            break json_response(StatusCode::OK, &obj);
        }
        if dry_run(query) {
            break json_response(StatusCode::OK, &obj);
        }
        match backend.txn(Txn::delete(r.key(ns, name), rev)).await? {
            TxnOutcome::Succeeded { .. } => {
                crate::allocator::release(backend, &obj, &(r.allocations)(&obj)).await;
                break json_response(StatusCode::OK, &deleted_status(r, name, &obj));
            }
            TxnOutcome::Failed { .. } => continue,
        }
    };
    // A delete's admission may warn (kubectl prints the Warning headers).
    Ok(with_warnings(response, &warnings))
}

fn deleted_status(r: &Resource, name: &str, obj: &Value) -> Value {
    let uid = obj.at("/metadata/uid").cloned().unwrap_or(Value::Null);
    let mut details = json!({"name": name, "kind": r.plural, "uid": uid});
    if !r.group.is_empty() {
        details["group"] = json!(r.group);
    }
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})
}

/// DELETE on a collection: deletes what the selectors match, one by one, and returns the
/// list of what was deleted (or marked for deletion).
async fn delete_collection(
    ctx: &Ctx,
    r: &Resource,
    ns: Option<&str>,
    query: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let backend = &ctx.backend;
    let mut listing = query.clone();
    listing.remove("limit");
    listing.remove("continue");
    let list = list(ctx, r, ns, &listing).await?.value(r)?;
    let mut deleted = Vec::new();
    for item in list["items"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let name = object::name(item).to_string();
        let item_ns = item.at("/metadata/namespace").and_then(Value::as_str);
        match delete(
            backend,
            Some(ctx),
            r,
            item_ns.or(ns),
            &name,
            query,
            &Bytes::new(),
        )
        .await
        {
            Ok(_) => deleted.push(item.clone()),
            Err(e) if e.reason == "NotFound" => {}
            Err(e) => return Err(e),
        }
    }
    let mut out = list;
    out["items"] = json!(deleted);
    Ok(json_response(StatusCode::OK, &out))
}

/// A watch: newline-delimited JSON events. Without a resourceVersion (or with "0") it starts
/// with ADDED events for what exists; with one, it replays every change after it.
async fn watch(
    ctx: &Ctx,
    r: &'static Resource,
    ns: Option<&str>,
    query: &HashMap<String, String>,
    encoder: EventEncoder,
    guard: Option<crate::metrics::WatchGuard>,
) -> Result<Response, ApiError> {
    let prefix = r.key_prefix(ns);
    let selectors = std::sync::Arc::new(Selectors::from_query(r, query)?);
    // sendInitialEvents (KEP-3157, "streaming lists"): the current state as ADDED events,
    // then a BOOKMARK marking their end; it asks for resourceVersionMatch=NotOlderThan and
    // bookmarks, as upstream validates.
    let initial_events = query.get("sendInitialEvents").map(String::as_str);
    let send_initial = match initial_events {
        Some("true") => {
            if query.get("resourceVersionMatch").map(String::as_str) != Some("NotOlderThan")
                || !is_true(query.get("allowWatchBookmarks"))
            {
                return Err(ApiError::invalid(r.group, r.kind, "", vec![(
                    "sendInitialEvents".into(),
                    "Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan and allowWatchBookmarks"
                        .into(),
                )]));
            }
            true
        }
        _ => false,
    };
    let rv = query
        .get("resourceVersion")
        .map(String::as_str)
        .filter(|s| !s.is_empty() && *s != "0");
    let backend = &ctx.backend;
    let (initial, start) = match rv {
        Some(v) if !send_initial => (Vec::new(), parse_rv(v)? + 1),
        _ => {
            // The current state, from the watch cache when it has caught up with the head.
            let head = backend.head().await?;
            let wanted = match rv {
                Some(v) => parse_rv(v)?,
                None => head,
            };
            if wanted > head {
                return Err(ApiError::from(kelp_storage::StorageError::FutureRevision {
                    requested: wanted,
                    current: head,
                }));
            }
            let end = kelp_storage::prefix_end(prefix.as_bytes());
            let cached = match &ctx.cache {
                Some(c) => c.snapshot(prefix.as_bytes(), &end, wanted).await,
                None => None,
            };
            let (kvs, revision) = match cached {
                Some(s) => (s.kvs, s.revision),
                None => {
                    let resp = backend
                        .range(RangeRequest::new(KeyRange::prefix(prefix.clone())))
                        .await?;
                    (
                        resp.kvs.into_iter().map(std::sync::Arc::new).collect(),
                        resp.read_revision,
                    )
                }
            };
            let mut objs = kvs
                .iter()
                .map(|kv| decode(r, kv))
                .collect::<Result<Vec<_>, _>>()?;
            objs.retain(|o| selectors.matches(o));
            (objs, revision + 1)
        }
    };
    let end_of_initial = send_initial.then(|| {
        let bookmark = json!({
            "kind": r.kind,
            "apiVersion": r.api_version(),
            "metadata": {
                "resourceVersion": (start - 1).to_string(),
                "annotations": {"k8s.io/initial-events-end": "true"},
            },
        });
        Ok(event_line("BOOKMARK", &bookmark))
    });
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs);
    let initial = futures::stream::iter(
        initial
            .into_iter()
            .map(move |o| Ok(encoder.line("ADDED", &o)))
            .chain(end_of_initial),
    );
    let end = kelp_storage::prefix_end(prefix.as_bytes());
    let from_cache = ctx
        .cache
        .as_ref()
        .and_then(|c| c.watch_from(start - 1, prefix.as_bytes(), &end));
    let events = match from_cache {
        // From the watch cache: its recent events, then its broadcast; a watch that falls
        // behind is closed (its client watches again from where it was).
        Some((replay, rx)) => {
            let replayed: Vec<Result<Bytes, std::io::Error>> = replay
                .iter()
                .filter_map(|e| watch_event(e.into(), &selectors, &encoder))
                .map(Ok)
                .collect();
            let selectors = selectors.clone();
            let (start_key, end_key) = (prefix.clone().into_bytes(), end);
            let live = futures::stream::unfold(rx, move |mut rx| async move {
                match rx.recv().await {
                    Ok(batch) => Some((batch, rx)),
                    Err(_) => None,
                }
            })
            .flat_map(move |batch| {
                let lines: Vec<Result<Bytes, std::io::Error>> = batch
                    .iter()
                    .filter(|e| e.kv.key >= start_key && e.kv.key < end_key)
                    .filter_map(|e| watch_event(e.into(), &selectors, &encoder))
                    .map(Ok)
                    .collect();
                futures::stream::iter(lines)
            });
            futures::stream::iter(replayed).chain(live).boxed()
        }
        None => match backend.watch(KeyRange::prefix(prefix), start).await {
            Ok(w) => w
                .flat_map(move |batch| {
                    let lines: Vec<Result<Bytes, std::io::Error>> = match batch {
                        Ok(events) => events
                            .iter()
                            .filter_map(|e| watch_event(e.into(), &selectors, &encoder))
                            .map(Ok)
                            .collect(),
                        Err(e) => vec![Ok(error_line(ApiError::from(e)))],
                    };
                    futures::stream::iter(lines)
                })
                .boxed(),
            // A watch from a compacted revision is an ERROR event on a 200 stream, as upstream.
            Err(e) => futures::stream::iter(vec![Ok(error_line(ApiError::from(e)))]).boxed(),
        },
    };
    // The guard counts the watch as open for as long as its stream lives.
    let stream = initial.chain(events).map(move |item| {
        let _open = &guard;
        item
    });
    let stream = match timeout {
        Some(t) => stream.take_until(tokio::time::sleep(t)).boxed(),
        None => stream.boxed(),
    };
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_default())
}

/// What a read returns, by the first type the Accept header asks for: the objects, a Table
/// (`as=Table`, what `kubectl get` prints) or only their metadata (`as=PartialObjectMetadata`
/// and `as=PartialObjectMetadataList`, what metadata informers read).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Output {
    Object,
    Table,
    Metadata,
}

impl Output {
    fn from_accept(headers: &HeaderMap) -> Output {
        let first = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .and_then(|a| a.split(',').next())
            .unwrap_or("");
        let param = |name: &str| {
            first
                .split(';')
                .filter_map(|p| p.trim().split_once('='))
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v)
        };
        match param("as") {
            Some("Table") => Output::Table,
            Some("PartialObjectMetadata" | "PartialObjectMetadataList")
                if param("g") == Some("meta.k8s.io") =>
            {
                Output::Metadata
            }
            _ => Output::Object,
        }
    }
}

/// Whether the Accept header takes a plain object (some type without `as=`, or any type):
/// what endpoints that have no Table or metadata form (the reviews) require, else 406.
pub(crate) fn accepts_plain_object(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    accept.split(',').any(|t| {
        let mut parts = t.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        let conversion = parts.any(|p| p.starts_with("as="));
        !conversion
            && matches!(
                media,
                "" | "*/*"
                    | "application/*"
                    | "application/json"
                    | "application/yaml"
                    | "application/vnd.kubernetes.protobuf"
            )
    })
}

/// Encodes watch events: objects as they are, as one-row Tables (what `kubectl get -w`
/// prints) or as their metadata, as the watch asked.
#[derive(Clone, Copy)]
struct EventEncoder {
    resource: &'static Resource,
    output: Output,
}

impl EventEncoder {
    fn line(&self, kind: &str, obj: &Value) -> Bytes {
        match self.output {
            Output::Table => event_line(kind, &table::build(self.resource, obj)),
            Output::Metadata => event_line(kind, &table::partial_metadata(obj)),
            Output::Object => event_line(kind, obj),
        }
    }
}

fn event_line(kind: &str, obj: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": obj})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn error_line(e: ApiError) -> Bytes {
    event_line("ERROR", &e.status_json())
}

/// A write a watch is told of, from the watch cache or from storage.
#[derive(Clone, Copy)]
struct Write<'a> {
    kind: EventKind,
    kv: &'a KeyValue,
    prev_kv: Option<&'a KeyValue>,
}

impl<'a> From<&'a kelp_storage::Event> for Write<'a> {
    fn from(e: &'a kelp_storage::Event) -> Self {
        Write {
            kind: e.kind,
            kv: &e.kv,
            prev_kv: e.prev_kv.as_ref(),
        }
    }
}

impl<'a> From<&'a crate::cache::Change> for Write<'a> {
    fn from(e: &'a crate::cache::Change) -> Self {
        Write {
            kind: e.kind,
            kv: &e.kv,
            prev_kv: e.prev_kv.as_deref(),
        }
    }
}

/// The watch event a write is to a watcher with selectors: an object that starts matching is
/// ADDED, one that stops matching is DELETED (as upstream's watch filtering does).
fn watch_event(e: Write<'_>, selectors: &Selectors, encoder: &EventEncoder) -> Option<Bytes> {
    if selectors.is_empty() && encoder.output != Output::Table && served_as_stored(encoder.resource)
    {
        return raw_watch_event(e, encoder.output);
    }
    decoded_watch_event(e, selectors, encoder)
}

fn decoded_watch_event(
    e: Write<'_>,
    selectors: &Selectors,
    encoder: &EventEncoder,
) -> Option<Bytes> {
    let old = match e.prev_kv {
        Some(prev) => Some(decode(encoder.resource, prev).ok()?),
        None => None,
    };
    let was = old.as_ref().is_some_and(|o| selectors.matches(o));
    match e.kind {
        EventKind::Put => {
            let new = decode(encoder.resource, e.kv).ok()?;
            match (was, selectors.matches(&new)) {
                (true, true) => Some(encoder.line("MODIFIED", &new)),
                (false, true) => Some(encoder.line("ADDED", &new)),
                (true, false) => Some(encoder.line("DELETED", &new)),
                (false, false) => None,
            }
        }
        EventKind::Delete if was => {
            let mut obj = old?;
            object::metadata_mut(&mut obj).insert(
                "resourceVersion".into(),
                json!(e.kv.mod_revision.to_string()),
            );
            Some(encoder.line("DELETED", &obj))
        }
        EventKind::Delete => None,
    }
}

/// The watch event a write is to a watcher of every object, written from the stored bytes
/// as [`watch_event`] would encode it, whole or as its metadata (what informers and the
/// garbage collector's metadata informers watch: no object is parsed).
fn raw_watch_event(e: Write<'_>, output: Output) -> Option<Bytes> {
    let (kind, value) = match (e.kind, e.prev_kv) {
        (EventKind::Put, None) => ("ADDED", &e.kv.value),
        (EventKind::Put, Some(_)) => ("MODIFIED", &e.kv.value),
        // A deleted object as it last was, at the delete's revision.
        (EventKind::Delete, Some(prev)) => ("DELETED", &prev.value),
        (EventKind::Delete, None) => return None,
    };
    let mut line = Vec::with_capacity(value.len() + 64);
    line.extend_from_slice(b"{\"type\":\"");
    line.extend_from_slice(kind.as_bytes());
    line.extend_from_slice(b"\",\"object\":");
    match output {
        Output::Metadata => raw_partial_metadata(value, e.kv.mod_revision, &mut line).ok()?,
        _ => raw_stored(value, e.kv.mod_revision, &mut line).ok()?,
    }
    line.extend_from_slice(b"}\n");
    Some(Bytes::from(line))
}

/// A stored object's PartialObjectMetadata as served at `revision`, written from its bytes
/// (as [`table::partial_metadata`] of the decoded object).
fn raw_partial_metadata(
    value: &[u8],
    revision: Revision,
    out: &mut Vec<u8>,
) -> Result<(), ApiError> {
    #[derive(serde::Deserialize)]
    struct Stored<'a> {
        #[serde(borrow)]
        metadata: Option<&'a serde_json::value::RawValue>,
    }
    let stored: Stored = serde_json::from_slice(value)
        .map_err(|e| ApiError::internal(format!("stored object is not JSON: {e}")))?;
    out.extend_from_slice(
        br#"{"apiVersion":"meta.k8s.io/v1","kind":"PartialObjectMetadata","metadata":"#,
    );
    raw_metadata(stored.metadata.map(|m| m.get()), &revision.to_string(), out)?;
    out.push(b'}');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_watch_events_are_the_decoded_ones() {
        let r = crate::registry::lookup("", "v1", "configmaps").unwrap();
        let encoder = EventEncoder {
            resource: r,
            output: Output::Object,
        };
        let everything = Selectors::from_query(r, &HashMap::new()).unwrap();
        let kv = |value: &str, revision| KeyValue {
            key: b"/registry/configmaps/default/a".to_vec(),
            value: value.as_bytes().to_vec(),
            create_revision: 3,
            mod_revision: revision,
            version: 1,
            lease: 0,
        };
        let first = r#"{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"a","labels":{"x":"\u00e9"}},"data":{"k":"v"}}"#;
        let second =
            r#"{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"a"},"data":{"k":"w"}}"#;
        let event = |kind, kv, prev_kv| kelp_storage::Event { kind, kv, prev_kv };
        let events = [
            event(EventKind::Put, kv(first, 3), None),
            event(EventKind::Put, kv(second, 4), Some(kv(first, 3))),
            event(EventKind::Delete, kv("", 5), Some(kv(second, 4))),
            event(EventKind::Delete, kv("", 6), None),
        ];
        let parsed =
            |line: Option<Bytes>| line.map(|l| serde_json::from_slice::<Value>(&l).unwrap());
        let metadata = EventEncoder {
            resource: r,
            output: Output::Metadata,
        };
        let mut seen = Vec::new();
        for e in &events {
            let raw = parsed(raw_watch_event(e.into(), Output::Object));
            assert_eq!(
                raw,
                parsed(decoded_watch_event(e.into(), &everything, &encoder))
            );
            assert_eq!(raw, parsed(watch_event(e.into(), &everything, &encoder)));
            let partial = parsed(raw_watch_event(e.into(), Output::Metadata));
            assert_eq!(
                partial,
                parsed(decoded_watch_event(e.into(), &everything, &metadata))
            );
            assert_eq!(
                partial,
                parsed(watch_event(e.into(), &everything, &metadata))
            );
            if let Some(p) = &partial {
                assert_eq!(p["object"]["kind"], "PartialObjectMetadata");
                assert_eq!(p["object"].get("data"), None);
            }
            seen.push(raw.map(|v| {
                let rv = v["object"]["metadata"]["resourceVersion"].clone();
                (v["type"].clone(), rv)
            }));
        }
        assert_eq!(
            seen,
            [
                Some((json!("ADDED"), json!("3"))),
                Some((json!("MODIFIED"), json!("4"))),
                Some((json!("DELETED"), json!("5"))),
                None,
            ]
        );
    }

    #[test]
    fn raw_objects_gain_their_resource_version() {
        let kv = |value: &str| KeyValue {
            key: b"/registry/configmaps/default/a".to_vec(),
            value: value.as_bytes().to_vec(),
            create_revision: 3,
            mod_revision: 7,
            version: 1,
            lease: 0,
        };
        let served = |value: &str| {
            let mut out = Vec::new();
            raw_object(&kv(value), &mut out).unwrap();
            serde_json::from_slice::<Value>(&out).unwrap()
        };
        let obj = served(r#"{"kind":"ConfigMap","metadata":{"name":"a"},"data":{"k":"v"}}"#);
        assert_eq!(
            obj,
            json!({"kind": "ConfigMap", "metadata": {"name": "a", "resourceVersion": "7"}, "data": {"k": "v"}})
        );
        assert_eq!(
            served(r#"{"metadata": { }}"#),
            json!({"metadata": {"resourceVersion": "7"}})
        );
        // No metadata, or one that (unexpectedly) has a resourceVersion: written afresh.
        assert_eq!(
            served(r#"{"kind":"X"}"#),
            json!({"kind": "X", "metadata": {"resourceVersion": "7"}})
        );
        assert_eq!(
            served(r#"{"metadata":{"resourceVersion":"1","name":"a"}}"#),
            json!({"metadata": {"name": "a", "resourceVersion": "7"}})
        );
    }

    #[test]
    fn continue_tokens_round_trip_and_refuse_tampering() {
        let t = encode_continue(42, "web-1\u{0}");
        assert_eq!(decode_continue(&t).unwrap(), (42, "web-1\u{0}".to_string()));
        assert!(decode_continue("not base64!").is_err());
        let escape = URL_SAFE
            .encode(json!({"v": "meta.k8s.io/v1", "rv": 1, "start": "../secrets/"}).to_string());
        assert!(decode_continue(&escape).is_err());
    }
}

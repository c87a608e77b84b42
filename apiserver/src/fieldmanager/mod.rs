//! Managed fields and server-side apply (upstream's `k8s.io/apimachinery/pkg/util/managedfields`
//! over structured-merge-diff). Every write records in `metadata.managedFields` which manager
//! set which fields. An apply merges a partial configuration into the live object, removes
//! what the same manager applied before and applies no longer, and refuses to change fields
//! that other managers own unless forced.

mod set;
mod typed;

use crate::object::At as _;
use std::collections::HashMap;
use std::sync::OnceLock;

use axum::http::{HeaderMap, header};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::object;
use crate::patch::FieldType;
use set::FieldSet;

/// kubectl's client-side apply annotation, kept in step with `kubectl apply --server-side`.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

const APPLY: &str = "Apply";
const UPDATE: &str = "Update";

/// Who writes an object, and through which endpoint.
pub struct Writer<'a> {
    pub manager: &'a str,
    /// "" for the object itself; "status" or "scale" for those subresources.
    pub subresource: &'a str,
    pub api_version: &'a str,
    pub ty: FieldType,
    /// Whether the kind writes its status through `/status`: then the object itself owns no
    /// status and `/status` owns nothing else (upstream's reset fields).
    pub status_split: bool,
}

impl Writer<'_> {
    /// What a write through this endpoint can own: the changed paths without the reset fields.
    fn reset(&self, mut set: FieldSet) -> FieldSet {
        if self.status_split {
            if self.subresource == "status" {
                set.children.retain(|pe, _| pe == "f:status");
            } else {
                set.children.remove("f:status");
            }
        }
        set
    }

    /// What a manager's entry records: no type or identity fields (upstream's stripMeta).
    fn owned(&self, set: FieldSet) -> FieldSet {
        static STRIPPED: OnceLock<FieldSet> = OnceLock::new();
        let stripped = STRIPPED.get_or_init(|| {
            let mut s = FieldSet::default();
            for p in [
                &["f:apiVersion"][..],
                &["f:kind"],
                &["f:metadata"],
                &["f:metadata", "f:name"],
                &["f:metadata", "f:namespace"],
                &["f:metadata", "f:creationTimestamp"],
                &["f:metadata", "f:selfLink"],
                &["f:metadata", "f:uid"],
                &["f:metadata", "f:clusterName"],
                &["f:metadata", "f:generation"],
                &["f:metadata", "f:managedFields"],
                &["f:metadata", "f:resourceVersion"],
            ] {
                s.insert(&p.iter().map(|e| e.to_string()).collect::<Vec<_>>());
            }
            s
        });
        self.reset(set).difference(stripped)
    }
}

/// One `managedFields` entry.
#[derive(Clone, Debug)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: Option<String>,
    subresource: String,
    fields: FieldSet,
}

impl Entry {
    /// Upstream's manager identity: appliers are one manager whatever version they applied.
    fn is(&self, manager: &str, operation: &str, api_version: &str, subresource: &str) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource == subresource
            && (operation == APPLY || self.api_version == api_version)
    }

    /// As conflicts name a manager: `"kubectl-create" using v1`, `"me" with subresource "scale"`.
    fn describe(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            s.push_str(&format!(" with subresource {:?}", self.subresource));
        }
        if self.operation == UPDATE {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }

    fn decode(v: &Value) -> Option<Entry> {
        let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        if v.get("fieldsType").and_then(Value::as_str) != Some("FieldsV1") {
            return None;
        }
        Some(Entry {
            manager: text("manager"),
            operation: text("operation"),
            api_version: text("apiVersion"),
            time: v.get("time").and_then(Value::as_str).map(str::to_string),
            subresource: text("subresource"),
            fields: FieldSet::from_fields_v1(v.get("fieldsV1")?).ok()?,
        })
    }

    fn encode(&self) -> Value {
        let mut v = json!({
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "fieldsType": "FieldsV1",
            "fieldsV1": self.fields.to_fields_v1(),
        });
        if let Some(t) = &self.time {
            v["time"] = json!(t);
        }
        if !self.subresource.is_empty() {
            v["subresource"] = json!(self.subresource);
        }
        v
    }
}

/// The entries of an object's `managedFields`; none when absent or not readable.
fn decode(obj: &Value) -> Vec<Entry> {
    obj.at("/metadata/managedFields")
        .and_then(decode_list)
        .unwrap_or_default()
}

fn decode_list(v: &Value) -> Option<Vec<Entry>> {
    v.as_array()?.iter().map(Entry::decode).collect()
}

/// Writes the entries, ordered as upstream orders them, leaving out managers that own nothing.
fn encode(obj: &mut Value, mut entries: Vec<Entry>) {
    entries.retain(|e| !e.fields.is_empty());
    entries.sort_by(|a, b| {
        (
            &a.operation,
            &a.time,
            &a.manager,
            &a.api_version,
            &a.subresource,
        )
            .cmp(&(
                &b.operation,
                &b.time,
                &b.manager,
                &b.api_version,
                &b.subresource,
            ))
    });
    let meta = object::metadata_mut(obj);
    if entries.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert(
            "managedFields".into(),
            Value::Array(entries.iter().map(Entry::encode).collect()),
        );
    }
}

fn without_managed_fields(obj: &Value) -> Value {
    let mut out = obj.clone();
    if let Some(Value::Object(meta)) = out.get_mut("metadata") {
        meta.remove("managedFields");
    }
    out
}

/// The manager of a write: `?fieldManager=`, else the User-Agent up to its first '/'
/// (upstream's `managerOrUserAgent`).
pub fn manager(query: &HashMap<String, String>, headers: &HeaderMap) -> String {
    match query.get("fieldManager").filter(|m| !m.is_empty()) {
        Some(m) => m.clone(),
        None => headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .and_then(|ua| ua.split('/').next())
            .unwrap_or("")
            .to_string(),
    }
}

/// Upstream's checks of a write's `fieldManager` and `force` options (`options` names the
/// kind: CreateOptions, UpdateOptions, PatchOptions).
pub fn check_options(
    query: &HashMap<String, String>,
    options: &str,
    apply: bool,
) -> Result<(), ApiError> {
    let mut causes = Vec::new();
    let manager = query.get("fieldManager").map(String::as_str).unwrap_or("");
    if apply && manager.is_empty() {
        causes.push((
            "fieldManager".to_string(),
            "Required value: is required for apply patch".to_string(),
        ));
    }
    if manager.len() > 128 {
        causes.push((
            "fieldManager".to_string(),
            "Too long: may not be more than 128 bytes".to_string(),
        ));
    }
    if manager.chars().any(|c| c.is_control()) {
        causes.push((
            "fieldManager".to_string(),
            format!("Invalid value: {manager:?}: must only contain printable characters"),
        ));
    }
    match query.get("force").map(String::as_str) {
        None => {}
        Some(f) if !apply => causes.push((
            "force".to_string(),
            format!("Forbidden: may not be specified for non-apply patch (got {f:?})"),
        )),
        Some("true" | "false" | "1" | "0" | "") => {}
        Some(f) => return Err(ApiError::bad_request(format!("invalid force value {f:?}"))),
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid("meta.k8s.io", options, "", causes))
    }
}

/// Records an update (create, replace, or a patch that is not an apply): the writer owns what
/// it changed, other managers lose it, and removed fields leave every manager. A client may
/// set `managedFields` itself on the object (an empty list clears them); otherwise the live
/// object's are kept.
pub fn update(live: Option<&Value>, new: &mut Value, w: &Writer) {
    let empty = json!({});
    let live = live.unwrap_or(&empty);
    let requested = new.at("/metadata/managedFields").cloned();
    let mut entries = match requested {
        Some(v) if w.subresource.is_empty() && is_reset(&v) => Vec::new(),
        Some(v) if w.subresource.is_empty() => match decode_list(&v) {
            Some(e) if !e.is_empty() => e,
            _ => decode(live),
        },
        _ => decode(live),
    };
    if let Some(Value::Object(meta)) = new.get_mut("metadata") {
        meta.remove("managedFields");
    }
    let c = typed::compare(&without_managed_fields(live), new, w.ty);
    let changed = w.reset(c.modified.union(&c.added));
    for e in &mut entries {
        e.fields = e.fields.difference(&changed).difference(&c.removed);
    }
    let mine = w.owned(changed);
    if !mine.is_empty() {
        let now = Some(object::now());
        match entries
            .iter_mut()
            .find(|e| e.is(w.manager, UPDATE, w.api_version, w.subresource))
        {
            Some(e) => {
                e.fields = e.fields.union(&mine);
                e.time = now;
            }
            None => entries.push(Entry {
                manager: w.manager.to_string(),
                operation: UPDATE.into(),
                api_version: w.api_version.to_string(),
                time: now,
                subresource: w.subresource.to_string(),
                fields: mine,
            }),
        }
    }
    cap_updates(&mut entries);
    encode(new, entries);
}

/// Upstream's cap on the entries updates leave (capManagersManager): beyond ten, the oldest
/// are merged, per API version, into one `ancient-changes` entry.
const MAX_UPDATE_MANAGERS: usize = 10;
const ANCIENT_CHANGES: &str = "ancient-changes";

fn cap_updates(entries: &mut Vec<Entry>) {
    let mut updaters: Vec<usize> = (0..entries.len())
        .filter(|&i| entries[i].operation != APPLY)
        .collect();
    if updaters.len() <= MAX_UPDATE_MANAGERS {
        return;
    }
    // Oldest first (to the second, as upstream compares them), then by name.
    let second = |e: &Entry| {
        e.time
            .as_deref()
            .map_or(String::new(), |t| t.chars().take(19).collect())
    };
    updaters.sort_by(|&a, &b| {
        let (a, b) = (&entries[a], &entries[b]);
        (second(a), &a.manager, &a.subresource).cmp(&(second(b), &b.manager, &b.subresource))
    });
    let mut first: HashMap<String, usize> = HashMap::new();
    let mut merged = vec![false; entries.len()];
    let mut left = updaters.len();
    for i in updaters {
        if left <= MAX_UPDATE_MANAGERS {
            break;
        }
        let version = entries[i].api_version.clone();
        let Some(&oldest) = first.get(&version) else {
            first.insert(version, i);
            continue;
        };
        let bucket = (0..entries.len())
            .find(|&b| !merged[b] && entries[b].is(ANCIENT_CHANGES, UPDATE, &version, ""));
        if bucket == Some(i) {
            continue;
        }
        // The version's oldest entry becomes its bucket when it has none yet.
        let bucket = bucket.unwrap_or_else(|| {
            let e = &mut entries[oldest];
            e.manager = ANCIENT_CHANGES.into();
            e.subresource.clear();
            oldest
        });
        let fields = std::mem::take(&mut entries[i].fields);
        entries[bucket].fields = entries[bucket].fields.union(&fields);
        entries[bucket].time = entries[i].time.clone();
        merged[i] = true;
        left -= 1;
    }
    let mut index = 0;
    entries.retain(|_| {
        index += 1;
        !merged[index - 1]
    });
}

/// `[]` or `[{}]`: the client clears the managed fields.
fn is_reset(v: &Value) -> bool {
    match v.as_array().map(Vec::as_slice) {
        Some([]) => true,
        Some([only]) => only.as_object().is_some_and(serde_json::Map::is_empty),
        _ => false,
    }
}

/// Applies a configuration to the live object (None: the object is new) and returns the
/// object to store, with its managed fields. Changing a field another manager owns is a 409
/// listing each conflict, unless `force` moves the fields to the applier.
pub fn apply(
    live: Option<&Value>,
    config: &Value,
    w: &Writer,
    force: bool,
) -> Result<Value, ApiError> {
    if config.at("/metadata/managedFields").is_some() {
        return Err(ApiError::bad_request("metadata.managedFields must be nil"));
    }
    let version = config
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    if version != w.api_version {
        return Err(ApiError::bad_request(format!(
            "Incorrect version specified in apply patch. Specified patch version: {version}, expected: {}",
            w.api_version
        )));
    }
    let empty = json!({});
    let live_full = live.unwrap_or(&empty);
    let live = without_managed_fields(live_full);
    let mut entries = decode(live_full);
    let mut merged = typed::merge(Some(&live), config, w.ty);
    let applied = w.owned(typed::field_set(config, w.ty));
    let mine = match entries
        .iter()
        .position(|e| e.is(w.manager, APPLY, "", w.subresource))
    {
        Some(i) => i,
        None => {
            entries.push(Entry {
                manager: w.manager.to_string(),
                operation: APPLY.into(),
                api_version: w.api_version.to_string(),
                time: None,
                subresource: w.subresource.to_string(),
                fields: FieldSet::default(),
            });
            entries.len() - 1
        }
    };
    let previous = std::mem::replace(&mut entries[mine].fields, applied);
    entries[mine].api_version = w.api_version.to_string();
    // What this manager applied before and applies no longer goes, unless someone owns it.
    if !previous.is_empty() {
        let owned = entries
            .iter()
            .fold(FieldSet::default(), |acc, e| acc.union(&e.fields));
        typed::remove(&mut merged, w.ty, &previous, Some(&owned));
    }
    let c = typed::compare(&live, &merged, w.ty);
    let changed = w.reset(c.modified.union(&c.added));
    // The applier's time moves when the object changes (upstream's managedFieldsUpdater).
    if !changed.is_empty() || !c.removed.is_empty() || entries[mine].time.is_none() {
        entries[mine].time = Some(object::now());
    }
    let mut conflicts: Vec<(String, Vec<String>)> = entries
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != mine)
        .flat_map(|(_, e)| {
            let describe = e.describe();
            e.fields
                .intersection(&changed)
                .paths()
                .into_iter()
                .map(move |p| (describe.clone(), p))
        })
        .collect();
    if !force && !conflicts.is_empty() {
        // `kubectl apply --server-side` takes over what its client-side apply set (upstream's
        // lastAppliedManager): fields the annotation holds with their live values.
        if w.manager == "kubectl"
            && let Some(allowed) = last_applied_fields(&live, w)
        {
            conflicts.retain(|(_, path)| !allowed.paths().contains(path));
        }
        if !conflicts.is_empty() {
            return Err(conflict_error(conflicts));
        }
    }
    for (i, e) in entries.iter_mut().enumerate() {
        if i != mine {
            e.fields = e.fields.difference(&changed).difference(&c.removed);
        }
    }
    if w.manager == "kubectl"
        && let Some(Value::String(text)) = live
            .at("/metadata/annotations")
            .and_then(|a| a.get(LAST_APPLIED))
        && !text.is_empty()
    {
        let mut last = config.clone();
        if let Some(Value::Object(a)) = last.pointer_mut("/metadata/annotations") {
            a.remove(LAST_APPLIED);
        }
        let annotations = object::metadata_mut(&mut merged)
            .entry("annotations")
            .or_insert_with(|| json!({}));
        annotations[LAST_APPLIED] = json!(last.to_string());
    }
    encode(&mut merged, entries);
    Ok(merged)
}

/// The fields the client-side apply annotation holds with the values the object still has.
fn last_applied_fields(live: &Value, w: &Writer) -> Option<FieldSet> {
    let text = live
        .at("/metadata/annotations")?
        .get(LAST_APPLIED)?
        .as_str()?;
    let last: Value = serde_json::from_str(text).ok()?;
    if last.get("apiVersion").and_then(Value::as_str) != Some(w.api_version) {
        return None;
    }
    let c = typed::compare(&last, live, w.ty);
    Some(
        typed::field_set(&last, w.ty)
            .difference(&c.modified)
            .difference(&c.added)
            .difference(&c.removed),
    )
}

/// Upstream's conflict message: one line for one conflict, else grouped by manager.
fn conflict_error(mut conflicts: Vec<(String, Vec<String>)>) -> ApiError {
    conflicts.sort();
    let shown: Vec<(String, String)> = conflicts
        .iter()
        .map(|(m, p)| (m.clone(), set::display(p)))
        .collect();
    let message = match shown.as_slice() {
        [(m, p)] => format!("Apply failed with 1 conflict: conflict with {m}: {p}"),
        _ => {
            let mut lines = Vec::new();
            let mut last: Option<&str> = None;
            for (m, p) in &shown {
                if last != Some(m.as_str()) {
                    lines.push(format!("conflicts with {m}:"));
                    last = Some(m);
                }
                lines.push(format!("- {p}"));
            }
            format!(
                "Apply failed with {} conflicts: {}",
                shown.len(),
                lines.join("\n")
            )
        }
    };
    ApiError::apply_conflict(
        message,
        shown
            .into_iter()
            .map(|(m, p)| (format!("conflict with {m}"), p))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch;

    fn writer(manager: &str) -> Writer<'_> {
        Writer {
            manager,
            subresource: "",
            api_version: "v1",
            ty: patch::struct_type(patch::definition("v1", "ConfigMap")),
            status_split: false,
        }
    }

    fn cm(data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "default"}, "data": data})
    }

    fn managers(obj: &Value) -> Vec<(String, String, Value)> {
        obj["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["manager"].as_str().unwrap().to_string(),
                    e["operation"].as_str().unwrap().to_string(),
                    e["fieldsV1"].clone(),
                )
            })
            .collect()
    }

    #[test]
    fn updates_own_what_they_change() {
        let mut created = cm(json!({"a": "1"}));
        update(None, &mut created, &writer("kubectl-create"));
        assert_eq!(
            managers(&created),
            [(
                "kubectl-create".into(),
                "Update".into(),
                json!({"f:data": {".": {}, "f:a": {}}})
            )]
        );
        let mut edited = cm(json!({"a": "1", "b": "2"}));
        edited["metadata"]["managedFields"] = created["metadata"]["managedFields"].clone();
        update(Some(&created), &mut edited, &writer("kubectl-edit"));
        let m = managers(&edited);
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].0, "kubectl-edit");
        assert_eq!(m[1].2, json!({"f:data": {"f:b": {}}}));
        // An empty list clears them; a write that changes nothing adds no manager.
        let mut reset = edited.clone();
        reset["metadata"]["managedFields"] = json!([]);
        update(Some(&edited), &mut reset, &writer("x"));
        assert!(reset["metadata"].get("managedFields").is_none());
    }

    #[test]
    fn updates_beyond_ten_managers_merge_the_oldest_into_ancient_changes() {
        let mut obj = cm(json!({}));
        for i in 1..=12 {
            let mut next = obj.clone();
            next["data"][format!("k{i:02}")] = json!("v");
            next["metadata"]["managedFields"] = obj["metadata"]["managedFields"].clone();
            update(Some(&obj), &mut next, &writer(&format!("m{i:02}")));
            // Upstream orders by the second; give each update its own.
            for e in next["metadata"]["managedFields"].as_array_mut().unwrap() {
                let m = e["manager"].as_str().unwrap().to_string();
                if let Some(n) = m.strip_prefix('m') {
                    e["time"] = json!(format!("2026-01-01T00:00:{n}Z"));
                }
            }
            obj = next;
        }
        let m = managers(&obj);
        let names: Vec<&str> = m.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(names.len(), 10, "{names:?}");
        assert!(!names.contains(&"m01") && !names.contains(&"m03"));
        let ancient = m.iter().find(|(n, _, _)| n == "ancient-changes").unwrap();
        assert_eq!(
            ancient.2,
            json!({"f:data": {"f:k01": {}, "f:k02": {}, "f:k03": {}}})
        );
    }

    #[test]
    fn apply_conflicts_with_other_owners_unless_forced() {
        let mut live = cm(json!({"a": "1"}));
        update(None, &mut live, &writer("kubectl-create"));
        let e = apply(Some(&live), &cm(json!({"a": "2"})), &writer("ci"), false).unwrap_err();
        assert_eq!(e.code.as_u16(), 409);
        assert_eq!(
            e.message,
            "Apply failed with 1 conflict: conflict with \"kubectl-create\" using v1: .data.a"
        );
        assert_eq!(
            e.details.unwrap()["causes"],
            json!([{"reason": "FieldManagerConflict", "message": "conflict with \"kubectl-create\" using v1", "field": ".data.a"}])
        );
        // The same value is shared ownership, not a conflict.
        let shared = apply(Some(&live), &cm(json!({"a": "1"})), &writer("ci"), false).unwrap();
        assert_eq!(managers(&shared).len(), 2);
        let forced = apply(Some(&live), &cm(json!({"a": "2"})), &writer("ci"), true).unwrap();
        assert_eq!(forced["data"]["a"], "2");
        // The creator keeps the map itself, the applier takes its entry.
        assert_eq!(
            managers(&forced),
            [
                ("ci".into(), "Apply".into(), json!({"f:data": {"f:a": {}}})),
                (
                    "kubectl-create".into(),
                    "Update".into(),
                    json!({"f:data": {}})
                )
            ]
        );
    }

    #[test]
    fn apply_removes_what_the_manager_stopped_applying() {
        let first = apply(None, &cm(json!({"a": "1", "b": "2"})), &writer("ci"), false).unwrap();
        let second = apply(Some(&first), &cm(json!({"a": "1"})), &writer("ci"), false).unwrap();
        assert_eq!(second["data"], json!({"a": "1"}));
        // A field someone else also owns stays.
        let mut edited = first.clone();
        edited["data"]["c"] = json!("3");
        update(Some(&first), &mut edited, &writer("kubectl-edit"));
        let third = apply(Some(&edited), &cm(json!({"a": "1"})), &writer("ci"), false).unwrap();
        assert_eq!(third["data"], json!({"a": "1", "c": "3"}));
    }

    #[test]
    fn multiple_conflicts_are_grouped_by_manager() {
        let mut live = cm(json!({"a": "1", "b": "1"}));
        update(None, &mut live, &writer("one"));
        let e = apply(
            Some(&live),
            &cm(json!({"a": "2", "b": "2"})),
            &writer("ci"),
            false,
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            "Apply failed with 2 conflicts: conflicts with \"one\" using v1:\n- .data.a\n- .data.b"
        );
    }

    #[test]
    fn kubectl_takes_over_its_client_side_apply_fields() {
        let last = cm(json!({"a": "1"})).to_string();
        let mut live = cm(json!({"a": "1"}));
        live["metadata"]["annotations"] = json!({LAST_APPLIED: last});
        update(None, &mut live, &writer("kubectl-client-side-apply"));
        let applied = apply(
            Some(&live),
            &cm(json!({"a": "2"})),
            &writer("kubectl"),
            false,
        )
        .expect("the client-side apply's own fields move without a conflict");
        assert_eq!(applied["data"]["a"], "2");
        let synced: Value = serde_json::from_str(
            applied["metadata"]["annotations"][LAST_APPLIED]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(synced["data"]["a"], "2");
        // Another manager gets no such pass.
        assert!(apply(Some(&live), &cm(json!({"a": "2"})), &writer("other"), false).is_err());
    }

    #[test]
    fn options_are_checked_as_upstream() {
        let q = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let e = check_options(&q(&[]), "PatchOptions", true).unwrap_err();
        assert_eq!(e.code.as_u16(), 422);
        assert_eq!(
            e.message,
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
        );
        assert!(check_options(&q(&[("force", "true")]), "PatchOptions", false).is_err());
        assert!(check_options(&q(&[("fieldManager", "me")]), "PatchOptions", true).is_ok());
    }
}

//! `events.k8s.io/v1` Events: the same objects as core v1 Events, stored once in the core
//! form (upstream's storage version) and converted on the way in and out, field by field as
//! upstream's conversion maps them (pkg/apis/events/v1/conversion.go).

use serde_json::{Map, Value, json};

use super::cells::{AGE, col, text};
use super::{Column, Conversion, Resource, Status};
use crate::typed::typed;

/// (events.k8s.io/v1 field, core/v1 field)
const RENAMED: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("deprecatedSource", "source"),
    ("reportingController", "reportingComponent"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

fn rename(obj: &mut Value, from_index: usize, api_version: &str) {
    let Some(m) = obj.as_object_mut() else { return };
    let mut moved = Map::new();
    for pair in RENAMED {
        let (from, to) = if from_index == 0 {
            (pair.0, pair.1)
        } else {
            (pair.1, pair.0)
        };
        if let Some(v) = m.remove(from) {
            moved.insert(to.to_string(), v);
        }
    }
    m.extend(moved);
    m.insert("apiVersion".into(), json!(api_version));
}

fn to_core(obj: &mut Value) {
    rename(obj, 0, "v1");
}

fn from_core(obj: &mut Value) {
    rename(obj, 1, "events.k8s.io/v1");
}

const CONVERSION: Conversion = Conversion {
    to_storage: to_core,
    from_storage: from_core,
};

const COLUMNS: &[Column] = &[
    col("Reason", "Why the event was generated.", |o| {
        json!(text(o, "/reason"))
    }),
    col("Object", "The object the event is about.", |o| {
        json!(format!(
            "{}/{}",
            text(o, "/regarding/kind").to_lowercase(),
            text(o, "/regarding/name")
        ))
    }),
    AGE,
];

pub static RESOURCES: &[Resource] = &[Resource {
    group: "events.k8s.io",
    version: "v1",
    kind: "Event",
    typed: typed::<k8s_openapi::api::events::v1::Event>(),
    plural: "events",
    singular: "event",
    namespaced: true,
    short_names: &["ev"],
    categories: &[],
    columns: COLUMNS,
    fields: &[
        "regarding.kind:/regarding/kind",
        "regarding.name:/regarding/name",
        "regarding.namespace:/regarding/namespace",
        "regarding.uid:/regarding/uid",
        "reason",
        "type",
        "reportingController",
        "deprecatedSource:/deprecatedSource/component|/reportingController",
    ],
    status: Status::None,
    scale: false,
    generation: false,
    storage: Some("events"),
    allocate: None,
    allocations: super::holds_nothing,
    on_update: super::any_update,
    prepare_update: super::prepare_nothing,
    defaults: super::no_defaults,
    prepare_create: super::no_defaults,
    validate: super::no_rules,
    delete_finalizers: &[],
    custom: None,
    conversion: Some(&CONVERSION),
    verbs: super::VERBS,
    deprecation: None,
}];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_the_core_form() {
        let e = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
            "regarding": {"namespace": "ns"}, "note": "hi", "reportingController": "ctl",
            "reportingInstance": "node", "eventTime": "2017-09-19T13:49:16.000000Z", "action": "Do"});
        let mut core = e.clone();
        to_core(&mut core);
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["message"], "hi");
        assert_eq!(core["involvedObject"], json!({"namespace": "ns"}));
        assert_eq!(core["reportingComponent"], "ctl");
        assert!(core.get("note").is_none());
        from_core(&mut core);
        assert_eq!(core, e);
    }
}

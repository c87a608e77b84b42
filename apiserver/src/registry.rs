//! The resource registry: one declarative entry per kind. Handlers are generic over entries;
//! what differs between kinds (defaulting, table columns) is a few functions here.

use k8s_openapi::api::core::v1 as core;
use serde_json::{Value, json};

use crate::typed::{Typed, typed};

/// A served resource.
pub struct Resource {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Table columns after Name (upstream's printers), Age last where upstream has it.
    pub columns: &'static [Column],
    /// Fields `?fieldSelector=` may name besides metadata.name and metadata.namespace.
    pub fields: &'static [&'static str],
    /// The kind's Rust type: its schema and field validation.
    pub typed: Typed,
    /// Fills in what upstream's SetDefaults and PrepareForCreate fill in.
    pub defaults: fn(&mut Value),
}

/// A Table column: header, type and how to compute the cell from the object.
pub struct Column {
    pub name: &'static str,
    pub kind: &'static str,
    pub description: &'static str,
    pub cell: fn(&Value) -> Value,
}

/// Verbs the generic handlers implement.
pub const VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];

impl Resource {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The storage key prefix of the collection: upstream's etcd layout
    /// (`/registry/<plural>/<namespace>/<name>`, cluster-scoped without the namespace).
    pub fn key_prefix(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("/registry/{}/{ns}/", self.plural),
            _ => format!("/registry/{}/", self.plural),
        }
    }

    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}{name}", self.key_prefix(namespace))
    }
}

const AGE: Column = Column {
    name: "Age",
    kind: "string",
    description: "CreationTimestamp is a timestamp representing the server time when this object was created.",
    cell: |o| json!(crate::object::age(o)),
};

fn count(o: &Value, fields: &[&str]) -> Value {
    json!(
        fields
            .iter()
            .map(|f| o.get(*f).and_then(Value::as_object).map_or(0, |m| m.len()))
            .sum::<usize>()
    )
}

fn no_defaults(_: &mut Value) {}

pub static RESOURCES: &[Resource] = &[
    Resource {
        group: "",
        version: "v1",
        kind: "Namespace",
        typed: typed::<core::Namespace>(),
        plural: "namespaces",
        singular: "namespace",
        namespaced: false,
        short_names: &["ns"],
        categories: &[],
        columns: &[
            Column {
                name: "Status",
                kind: "string",
                description: "The status of the namespace",
                cell: |o| o.pointer("/status/phase").cloned().unwrap_or(json!("")),
            },
            AGE,
        ],
        fields: &["status.phase"],
        defaults: |o| {
            if o.pointer("/status/phase").is_none() {
                o["status"] = json!({"phase": "Active"});
            }
            if o.pointer("/spec/finalizers").is_none() {
                o["spec"] = json!({"finalizers": ["kubernetes"]});
            }
        },
    },
    Resource {
        group: "",
        version: "v1",
        kind: "ConfigMap",
        typed: typed::<core::ConfigMap>(),
        plural: "configmaps",
        singular: "configmap",
        namespaced: true,
        short_names: &["cm"],
        categories: &[],
        columns: &[
            Column {
                name: "Data",
                kind: "string",
                description: "Data contains the configuration data.",
                cell: |o| count(o, &["data", "binaryData"]),
            },
            AGE,
        ],
        fields: &[],
        defaults: no_defaults,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Secret",
        typed: typed::<core::Secret>(),
        plural: "secrets",
        singular: "secret",
        namespaced: true,
        short_names: &[],
        categories: &[],
        columns: &[
            Column {
                name: "Type",
                kind: "string",
                description: "Used to facilitate programmatic handling of secret data.",
                cell: |o| o.get("type").cloned().unwrap_or(json!("")),
            },
            Column {
                name: "Data",
                kind: "string",
                description: "Data contains the secret data.",
                cell: |o| count(o, &["data"]),
            },
            AGE,
        ],
        fields: &["type"],
        defaults: |o| {
            if o.get("type").is_none_or(Value::is_null) {
                o["type"] = json!("Opaque");
            }
        },
    },
    Resource {
        group: "",
        version: "v1",
        kind: "ServiceAccount",
        typed: typed::<core::ServiceAccount>(),
        plural: "serviceaccounts",
        singular: "serviceaccount",
        namespaced: true,
        short_names: &["sa"],
        categories: &[],
        columns: &[
            Column {
                name: "Secrets",
                kind: "string",
                description: "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use.",
                cell: |o| {
                    json!(
                        o.get("secrets")
                            .and_then(Value::as_array)
                            .map_or(0, Vec::len)
                    )
                },
            },
            AGE,
        ],
        fields: &[],
        defaults: no_defaults,
    },
];

/// The resource served at `group/version/plural`.
pub fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The group/versions served, core first.
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

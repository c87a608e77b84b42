//! The resource registry: one declarative entry per kind, one file per API group. Handlers are
//! generic over entries; what differs between kinds (defaulting, table columns, status) is a
//! few functions in the entry.

mod apps;
mod autoscaling;
mod batch;
mod cells;
mod config;
mod core;
mod defaults;
mod events;
pub(crate) mod more;
mod others;
pub mod reviews;
mod servicecidrs;

use serde_json::Value;

use crate::typed::Typed;

pub(crate) use servicecidrs::{ip_address_name, parse_cidr_sloppy};

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
    /// Whether `status` is written through the `/status` subresource.
    pub status: Status,
    /// Whether the `/scale` subresource (autoscaling/v1 Scale over `spec.replicas`) is served.
    pub scale: bool,
    /// Whether `metadata.generation` starts at 1 and counts changes to everything but
    /// metadata and status (what controllers' observedGeneration follows).
    pub generation: bool,
    /// The key segment in storage where upstream's differs from the plural
    /// (`/registry/services/specs/...`, `/registry/minions/...`).
    pub storage: Option<&'static str>,
    /// Takes what a new object holds exclusively (a Service's ClusterIP and NodePorts).
    pub allocate: Option<
        for<'a> fn(&'a kelp_storage::Backend, &'a mut Value) -> crate::allocator::AllocFuture<'a>,
    >,
    /// What an object holds, released when it is deleted.
    pub allocations: fn(&Value) -> crate::allocator::Allocated,
    /// Checks and completes an update from the current object (immutable fields).
    pub on_update: fn(&Value, &mut Value) -> Result<(), crate::error::ApiError>,
    /// What a write through a subresource ("" for the object itself) keeps from the current
    /// object (upstream's per-subresource PrepareForUpdate, e.g. a CSR's approval).
    pub prepare_update: fn(&str, &Value, &mut Value),
    /// Fills in what upstream's SetDefaults and PrepareForCreate fill in.
    pub defaults: fn(&mut Value),
    /// What upstream's PrepareForCreate derives once admission has mutated a new object
    /// (a pod's QoS class).
    pub prepare_create: fn(&mut Value),
    /// The kind's own validation of a defaulted object: (field, message) per invalid field.
    pub validate: fn(&Value) -> Vec<(String, String)>,
    /// Finalizers a delete adds, so that deletion waits for their cleanup (a CRD's instances).
    pub delete_finalizers: &'static [&'static str],
    /// A custom resource's definition: its schema, columns and storage version.
    pub custom: Option<&'static crate::crd::Custom>,
    /// For a kind stored in another's form (events.k8s.io Events as core Events).
    pub conversion: Option<&'static Conversion>,
    /// The verbs discovery lists (the reviews are create-only).
    pub verbs: &'static [&'static str],
    /// The warning every request on the kind gets, errors included (upstream's deprecated-API
    /// warning, which its installer adds to each of a deprecated kind's routes).
    pub deprecation: Option<&'static str>,
}

/// How a kind's objects become their stored form and back.
pub struct Conversion {
    pub to_storage: fn(&mut Value),
    pub from_storage: fn(&mut Value),
}

/// What most kinds share: cluster-scoped core v1, an Age column, no subresources, no rules of
/// their own, the generic verbs. Each registry file's BASE spreads from this.
pub const fn base(typed: Typed) -> Resource {
    Resource {
        group: "",
        version: "v1",
        kind: "",
        typed,
        plural: "",
        singular: "",
        namespaced: false,
        short_names: &[],
        categories: &[],
        columns: &[cells::AGE],
        fields: &[],
        status: Status::None,
        scale: false,
        generation: false,
        storage: None,
        allocate: None,
        allocations: holds_nothing,
        on_update: any_update,
        prepare_update: prepare_nothing,
        defaults: no_defaults,
        prepare_create: no_defaults,
        validate: no_rules,
        delete_finalizers: &[],
        custom: None,
        conversion: None,
        verbs: VERBS,
        deprecation: None,
    }
}

pub(crate) fn prepare_nothing(_: &str, _: &Value, _: &mut Value) {}

/// A label selector at `pointer` as `k=v,...` ("" when empty), as Scale's status shows it.
pub fn label_selector_string(o: &Value, pointer: &str) -> String {
    let s = cells::selector(o, pointer);
    if s == "<none>" { String::new() } else { s }
}

/// A map selector at `pointer` as `k=v,...` ("" when empty).
pub fn map_string(o: &Value, pointer: &str) -> String {
    let s = cells::map(o, pointer);
    if s == "<none>" { String::new() } else { s }
}

/// For kinds without defaults.
pub fn no_defaults(_: &mut Value) {}

/// For kinds without validation rules of their own.
pub fn no_rules(_: &Value) -> Vec<(String, String)> {
    Vec::new()
}

/// For kinds that hold nothing.
pub fn holds_nothing(_: &Value) -> crate::allocator::Allocated {
    Vec::new()
}

/// For kinds without update rules beyond the generic ones.
pub fn any_update(_: &Value, _: &mut Value) -> Result<(), crate::error::ApiError> {
    Ok(())
}

/// How a kind's status is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// No status subresource: the object is written whole.
    None,
    /// Writes to the object keep its status; `/status` writes change only the status, which
    /// starts empty (upstream's PrepareForCreate).
    Subresource,
    /// As Subresource, but the creator may set the first status (nodes register with theirs).
    SetOnCreate,
}

/// A Table column: header, type, priority (1: only with `-o wide`) and how to compute the
/// cell from the object.
#[derive(Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    pub kind: &'static str,
    pub description: &'static str,
    pub priority: u8,
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
        let segment = self.storage.unwrap_or(self.plural);
        match namespace {
            Some(ns) if self.namespaced => format!("/registry/{segment}/{ns}/"),
            _ => format!("/registry/{segment}/"),
        }
    }

    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}{name}", self.key_prefix(namespace))
    }
}

/// Every served resource, core first.
pub fn all() -> impl Iterator<Item = &'static Resource> {
    [
        core::RESOURCES,
        more::APIREGISTRATION,
        apps::RESOURCES,
        batch::RESOURCES,
        others::RESOURCES,
        events::RESOURCES,
        more::RESOURCES,
        autoscaling::RESOURCES,
        reviews::RESOURCES,
    ]
    .into_iter()
    .flatten()
}

/// The resource served at `group/version/plural`.
pub fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    all().find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Every served resource: the built-in kinds, then the custom resources' served versions.
pub fn served(crds: Option<&crate::crd::CustomResources>) -> Vec<&'static Resource> {
    let mut out: Vec<&'static Resource> = all().collect();
    if let Some(c) = crds {
        out.extend(c.resources());
    }
    out
}

/// The group/versions of these resources in their order (core first, then each group's
/// versions by preference).
pub fn group_versions(resources: &[&'static Resource]) -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in resources {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

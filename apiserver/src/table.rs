//! Table output (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`), what `kubectl get`
//! prints: upstream's columns per kind, Name first.

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use crate::object;
use crate::registry::Resource;

/// A Table of a list (its items) or of one object.
pub fn build(r: &Resource, list_or_object: &Value) -> Value {
    let (objects, metadata) = match list_or_object.get("items").and_then(Value::as_array) {
        Some(items) => (
            items.iter().collect::<Vec<_>>(),
            list_or_object["metadata"].clone(),
        ),
        None => (
            vec![list_or_object],
            json!({"resourceVersion": list_or_object.pointer("/metadata/resourceVersion").cloned().unwrap_or(json!(""))}),
        ),
    };
    let mut columns = vec![json!({
        "name": "Name", "type": "string", "format": "name", "priority": 0,
        "description": "Name must be unique within a namespace. https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
    })];
    match r.custom {
        // A custom resource's printer columns; dates print as ages.
        Some(c) => columns.extend(c.columns.iter().map(|c| {
            let kind = if c.kind == "date" { "string" } else { c.kind.as_str() };
            json!({"name": c.name, "type": kind, "format": c.format, "description": c.description, "priority": c.priority})
        })),
        None => columns.extend(r.columns.iter().map(|c| {
            json!({"name": c.name, "type": c.kind, "format": "", "description": c.description, "priority": c.priority})
        })),
    }
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut cells = vec![json!(object::name(o))];
            match r.custom {
                Some(c) => cells.extend(c.columns.iter().map(|c| c.cell(o))),
                None => cells.extend(r.columns.iter().map(|c| (c.cell)(o))),
            }
            json!({"cells": cells, "object": partial_metadata(o)})
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": columns,
        "rows": rows,
    })
}

/// An object's `PartialObjectMetadata`: a Table row's object (upstream's default
/// `includeObject=Metadata`) and what metadata-only reads return.
pub fn partial_metadata(o: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"].clone()})
}

pub fn response(r: &Resource, list_or_object: &Value) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(
            header::CONTENT_TYPE,
            "application/json;as=Table;v=v1;g=meta.k8s.io",
        )
        .body(Body::from(
            serde_json::to_vec(&build(r, list_or_object)).unwrap_or_default(),
        ))
        .unwrap_or_default()
}

/// A `PartialObjectMetadata` of one object, or a `PartialObjectMetadataList` of a list.
pub fn metadata_response(list_or_object: &Value) -> Response {
    let (body, kind) = match list_or_object.get("items").and_then(Value::as_array) {
        Some(items) => (
            json!({
                "kind": "PartialObjectMetadataList",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": list_or_object["metadata"].clone(),
                "items": items.iter().map(partial_metadata).collect::<Vec<_>>(),
            }),
            "PartialObjectMetadataList",
        ),
        None => (partial_metadata(list_or_object), "PartialObjectMetadata"),
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(
            header::CONTENT_TYPE,
            format!("application/json;as={kind};v=v1;g=meta.k8s.io"),
        )
        .body(Body::from(serde_json::to_vec(&body).unwrap_or_default()))
        .unwrap_or_default()
}

//! Built-in kinds checked through their `k8s-openapi` types: the schema OpenAPI publishes, and
//! field validation (`?fieldValidation=Strict|Warn|Ignore`) with upstream's messages.

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::ApiError;
use crate::strict::Repeated;

/// The object as its type reads it and the paths of the fields it did not know, or why the
/// object does not fit the type.
pub type Checked = Result<(Value, Vec<String>), String>;

/// A kind's Rust type, erased to the two things the registry needs.
pub struct Typed {
    pub schema: fn(&mut SchemaGenerator) -> Schema,
    /// The object as its type reads it (unknown fields dropped), and the unknown fields'
    /// paths; Err when it does not fit the type at all.
    pub check: fn(&Value) -> Checked,
}

/// ObjectMeta, as custom resources' metadata (root and embedded) is read.
pub const OBJECT_META: Typed =
    typed::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>();

pub const fn typed<T: JsonSchema + Serialize + DeserializeOwned>() -> Typed {
    Typed {
        schema: |g| g.subschema_for::<T>(),
        check: check::<T>,
    }
}

fn check<T: Serialize + DeserializeOwned>(v: &Value) -> Checked {
    let mut unknown = Vec::new();
    let parsed: T = serde_ignored::deserialize(v, |path| unknown.push(field_path(&path)))
        .map_err(|e| e.to_string())?;
    let mut normalized = serde_json::to_value(&parsed).map_err(|e| e.to_string())?;
    integral_floats(&mut normalized);
    Ok((normalized, unknown))
}

/// Upstream's path of a field: `spec.containers[0].name` (serde_ignored also marks options
/// and newtypes, which upstream's paths do not show).
fn field_path(path: &serde_ignored::Path) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", field_path(parent)),
        Path::Map { parent, key } => {
            let parent = field_path(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => field_path(parent),
    }
}

/// Go writes a float64 of 10 as `10`; serde writes `10.0`. Whole floats become integers, so
/// objects read back as upstream writes them (a CRD schema's `maximum: 10`).
fn integral_floats(v: &mut Value) {
    match v {
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64()
                && f.fract() == 0.0
                && f.abs() < 9.0e15
            {
                *v = Value::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats),
        Value::Object(m) => m.values_mut().for_each(integral_floats),
        _ => {}
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldValidation {
    Strict,
    Warn,
    Ignore,
}

impl FieldValidation {
    /// Upstream's default, when the request names none, is Warn.
    pub fn from_query(v: Option<&str>) -> Result<Self, ApiError> {
        match v {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation parameter unsupported: {other}; valid values are Strict, Warn, Ignore"
            ))),
        }
    }
}

/// Checks an object against its type; returns it as the type reads it, plus warnings.
/// `repeated` is what the request body repeated.
pub fn validate(
    typed: &Typed,
    kind: &str,
    version: &str,
    obj: &Value,
    repeated: &Repeated,
    mode: FieldValidation,
) -> Result<(Value, Vec<String>), ApiError> {
    let (normalized, unknown) = (typed.check)(obj).map_err(|e| {
        ApiError::bad_request(format!(
            "{kind} in version \"{version}\" cannot be handled as a {kind}: {e}"
        ))
    })?;
    let warnings = strict_decoding(kind, version, &unknown, repeated, true, mode)?;
    Ok((normalized, warnings))
}

/// What the validation mode makes of unknown and repeated fields (`typed`: a built-in kind,
/// whose messages come in document order): Strict refuses them, Warn returns the warnings to
/// send, Ignore nothing.
pub fn strict_decoding(
    kind: &str,
    version: &str,
    unknown: &[String],
    repeated: &Repeated,
    typed: bool,
    mode: FieldValidation,
) -> Result<Vec<String>, ApiError> {
    if mode == FieldValidation::Ignore {
        return Ok(Vec::new());
    }
    if let (Repeated::Apply(dups), FieldValidation::Strict) = (repeated, mode)
        && let Some(error) = crate::strict::apply_error(dups)
    {
        return Err(ApiError::bad_request(error));
    }
    let (errors, warnings) = crate::strict::messages(repeated, unknown, typed);
    match mode {
        FieldValidation::Strict if !errors.is_empty() => Err(ApiError::bad_request(format!(
            "{kind} in version \"{version}\" cannot be handled as a {kind}: strict decoding error: {}",
            errors.join(", ")
        ))),
        FieldValidation::Warn => Ok(warnings),
        _ => Ok(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use serde_json::json;

    const CM: Typed = typed::<ConfigMap>();

    #[test]
    fn unknown_fields_follow_the_validation_mode() {
        let obj = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "labelz": {}}, "data": {"a": "1"}, "dta": {}});
        let strict = validate(
            &CM,
            "ConfigMap",
            "v1",
            &obj,
            &Repeated::None,
            FieldValidation::Strict,
        )
        .unwrap_err();
        assert_eq!(
            strict.message,
            "ConfigMap in version \"v1\" cannot be handled as a ConfigMap: strict decoding error: unknown field \"dta\", unknown field \"metadata.labelz\""
        );
        let (pruned, warnings) = validate(
            &CM,
            "ConfigMap",
            "v1",
            &obj,
            &Repeated::None,
            FieldValidation::Warn,
        )
        .unwrap();
        assert_eq!(warnings.len(), 2);
        assert!(pruned.get("dta").is_none() && pruned.pointer("/metadata/labelz").is_none());
        assert_eq!(pruned["data"]["a"], "1");
        assert!(
            validate(
                &CM,
                "ConfigMap",
                "v1",
                &obj,
                &Repeated::None,
                FieldValidation::Ignore
            )
            .unwrap()
            .1
            .is_empty()
        );
    }

    #[test]
    fn a_value_of_the_wrong_type_is_a_bad_request() {
        let e = validate(
            &CM,
            "ConfigMap",
            "v1",
            &json!({"metadata": {"name": "x"}, "data": 5}),
            &Repeated::None,
            FieldValidation::Ignore,
        )
        .unwrap_err();
        assert_eq!(e.code.as_u16(), 400);
        assert!(
            e.message
                .starts_with("ConfigMap in version \"v1\" cannot be handled as a ConfigMap: "),
            "{}",
            e.message
        );
    }
}

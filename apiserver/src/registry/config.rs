//! ConfigMaps' and Secrets' own rules (pkg/apis/core/validation): valid keys, and contents
//! that cannot change once `immutable` is set; Secrets' `stringData` merged into `data`.

use base64::Engine;
use serde_json::{Value, json};

use crate::error::ApiError;

/// Upstream's IsConfigMapKey.
fn key_problem(key: &str) -> Option<String> {
    if key.len() > 253 {
        return Some("must be no more than 253 characters".into());
    }
    if key.is_empty()
        || !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Some(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.' \
             (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
                .into(),
        );
    }
    if key == "." || key == ".." {
        return Some(format!("must not be '{key}'"));
    }
    None
}

fn keys_of(o: &Value, maps: &[&str]) -> Vec<(String, String)> {
    let mut causes = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for map in maps {
        for key in o
            .get(*map)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            if let Some(why) = key_problem(key) {
                causes.push((
                    format!("{map}[{key}]"),
                    format!("Invalid value: {key:?}: {why}"),
                ));
            }
            if !seen.insert(key.clone()) {
                causes.push((
                    format!("{map}[{key}]"),
                    format!(
                        "Invalid value: {key:?}: duplicate of key present in {}",
                        maps[0]
                    ),
                ));
            }
        }
    }
    causes
}

pub fn configmap_keys(o: &Value) -> Vec<(String, String)> {
    keys_of(o, &["data", "binaryData"])
}

/// The keys, and what each built-in secret type requires (upstream's ValidateSecret).
pub fn secret_keys(o: &Value) -> Vec<(String, String)> {
    let mut causes = keys_of(o, &["data"]);
    let has = |key: &str| o.get("data").and_then(|d| d.get(key)).is_some();
    let required = |field: String| (field, "Required value".to_string());
    match o.get("type").and_then(Value::as_str).unwrap_or("") {
        "kubernetes.io/service-account-token" => {
            let annotation = "kubernetes.io/service-account.name";
            let named = o
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(annotation))
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty());
            if !named {
                causes.push(required(format!("metadata.annotations[{annotation}]")));
            }
        }
        "kubernetes.io/dockercfg" if !has(".dockercfg") => {
            causes.push(required("data[.dockercfg]".into()))
        }
        "kubernetes.io/dockerconfigjson" if !has(".dockerconfigjson") => {
            causes.push(required("data[.dockerconfigjson]".into()))
        }
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
            causes.push(required("data[username]".into()));
            causes.push(required("data[password]".into()));
        }
        "kubernetes.io/ssh-auth" if !has("ssh-privatekey") => {
            causes.push(required("data[ssh-privatekey]".into()))
        }
        "kubernetes.io/tls" => {
            for key in ["tls.crt", "tls.key"] {
                if !has(key) {
                    causes.push(required(format!("data[{key}]")));
                }
            }
        }
        _ => {}
    }
    causes
}

/// Once `immutable` is true, the contents and the flag stay as they are.
fn immutable_update(
    current: &Value,
    new: &Value,
    kind: &str,
    maps: &[&str],
) -> Result<(), ApiError> {
    if current.get("immutable") != Some(&json!(true)) {
        return Ok(());
    }
    let mut causes = Vec::new();
    for map in maps {
        if current.get(*map) != new.get(*map) {
            causes.push((
                map.to_string(),
                "Forbidden: field is immutable when `immutable` is set".to_string(),
            ));
        }
    }
    if new.get("immutable") != Some(&json!(true)) {
        causes.push((
            "immutable".to_string(),
            "Forbidden: field is immutable when `immutable` is set".to_string(),
        ));
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "",
            kind,
            crate::object::name(new),
            causes,
        ))
    }
}

pub fn configmap_update(current: &Value, new: &mut Value) -> Result<(), ApiError> {
    immutable_update(current, new, "ConfigMap", &["data", "binaryData"])
}

pub fn secret_update(current: &Value, new: &mut Value) -> Result<(), ApiError> {
    immutable_update(current, new, "Secret", &["data"])?;
    let kind = |o: &Value| o.get("type").cloned().unwrap_or(Value::Null);
    if kind(new) != kind(current) {
        return Err(ApiError::invalid(
            "",
            "Secret",
            crate::object::name(new),
            vec![(
                "type".into(),
                format!("Invalid value: {}: field is immutable", kind(new)),
            )],
        ));
    }
    Ok(())
}

/// `type` defaults to Opaque; `stringData` is written into `data`, overwriting (upstream's
/// v1 conversion), and not stored.
pub fn secret_defaults(o: &mut Value) {
    super::defaults::set(o, "type", json!("Opaque"));
    let Some(Value::Object(strings)) = o.as_object_mut().and_then(|m| m.remove("stringData"))
    else {
        return;
    };
    let data = o
        .as_object_mut()
        .map(|m| m.entry("data").or_insert_with(|| json!({})));
    if let Some(Value::Object(data)) = data {
        for (k, v) in strings {
            let text = v.as_str().unwrap_or("");
            data.insert(
                k,
                json!(base64::engine::general_purpose::STANDARD.encode(text)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_must_be_config_keys() {
        assert!(configmap_keys(&json!({"data": {"a.b_c-1": "x"}})).is_empty());
        let causes = configmap_keys(&json!({"data": {"": "x"}, "binaryData": {"bad/key": ""}}));
        assert_eq!(causes.len(), 2);
        assert_eq!(causes[0].0, "data[]");
    }

    #[test]
    fn immutable_contents_stay() {
        let current = json!({"metadata": {"name": "c"}, "immutable": true, "data": {"a": "1"}});
        let mut relabelled = current.clone();
        relabelled["metadata"]["labels"] = json!({"x": "y"});
        assert!(configmap_update(&current, &mut relabelled).is_ok());
        let mut changed = current.clone();
        changed["data"]["b"] = json!("2");
        assert_eq!(
            configmap_update(&current, &mut changed)
                .unwrap_err()
                .code
                .as_u16(),
            422
        );
        let mut unset = current.clone();
        unset["immutable"] = json!(false);
        assert!(configmap_update(&current, &mut unset).is_err());
    }

    #[test]
    fn string_data_becomes_data() {
        let mut s = json!({"stringData": {"a": "value"}, "data": {"b": "eA=="}});
        secret_defaults(&mut s);
        assert_eq!(
            s,
            json!({"type": "Opaque", "data": {"a": "dmFsdWU=", "b": "eA=="}})
        );
    }
}

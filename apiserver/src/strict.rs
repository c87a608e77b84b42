//! Strict decoding of request bodies (upstream's `fieldValidation` for repeated keys). A body is
//! read as Go's decoders read it, the last of a repeated key winning, and the repetitions are
//! kept to be reported as upstream's strict decoder words them: `duplicate field
//! "spec.replicas"` for JSON, `line 11: key "foo" already set in map` for YAML.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;

use bytes::Bytes;
use serde::Deserializer;
use serde::de::{DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Value};

/// One repeated key: its path (`spec.template.spec.containers[0].imagePullPolicy`), its own
/// name, the YAML line it is on (0 for JSON) and its place among the body's keys.
#[derive(Clone, Debug)]
pub struct Dup {
    pub path: String,
    pub key: String,
    pub line: u64,
    seq: usize,
}

/// What a body repeated, and how upstream reports it.
#[derive(Clone, Debug, Default)]
pub enum Repeated {
    #[default]
    None,
    /// A JSON object body. For a built-in kind upstream decodes the body in one strict pass,
    /// so duplicates and unknown fields come in document order (the body is kept to find it);
    /// otherwise the duplicates come first.
    Json { body: Bytes, dups: Vec<Dup> },
    /// A YAML body: one `yaml: unmarshal errors:` error (a warning per line), first.
    Yaml(Vec<Dup>),
    /// A patch: its messages come before the unknown fields of the patched object.
    Patch(Vec<String>),
    /// An apply configuration (YAML): upstream checks its repeated keys after the apply, with
    /// an error of its own ([`apply_error`]) and a warning per line.
    Apply(Vec<Dup>),
}

/// A path segment while walking a body.
enum Seg {
    Key(String),
    Index(usize),
}

/// Upstream's field path: keys joined by dots, list indexes in brackets.
fn render(path: &[Seg], last: Option<&str>) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    if let Some(k) = last {
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(k);
    }
    out
}

/// A map key as the decoder gives it, with its line where the format has lines.
trait Key: DeserializeOwned {
    fn split(self) -> (String, u64);
}

impl Key for String {
    fn split(self) -> (String, u64) {
        (self, 0)
    }
}

impl Key for serde_saphyr::Spanned<String> {
    fn split(self) -> (String, u64) {
        (self.value, self.referenced.line())
    }
}

#[derive(Default)]
struct State {
    path: Vec<Seg>,
    dups: Vec<Dup>,
    seq: usize,
    /// When asked for: where each path first appears.
    order: Option<HashMap<String, usize>>,
}

/// Builds a `Value` the way serde_json's own visitor does, noting repeated keys.
struct Walk<'a, K> {
    state: &'a mut State,
    key: PhantomData<K>,
}

impl<'a, K> Walk<'a, K> {
    fn new(state: &'a mut State) -> Self {
        Walk {
            state,
            key: PhantomData,
        }
    }
}

impl<'de, K: Key> DeserializeSeed<'de> for Walk<'_, K> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, K: Key> Visitor<'de> for Walk<'_, K> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let state = self.state;
        let mut items = Vec::new();
        loop {
            state.path.push(Seg::Index(items.len()));
            let item = seq.next_element_seed(Walk::<K>::new(state))?;
            state.path.pop();
            match item {
                Some(v) => items.push(v),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let state = self.state;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<K>()? {
            let (key, line) = key.split();
            state.seq += 1;
            let seq = state.seq;
            if let Some(order) = &mut state.order {
                order.entry(render(&state.path, Some(&key))).or_insert(seq);
            }
            state.path.push(Seg::Key(key));
            let value = map.next_value_seed(Walk::<K>::new(state))?;
            let Some(Seg::Key(key)) = state.path.pop() else {
                return Err(serde::de::Error::custom("lost the path of a key"));
            };
            match out.entry(key) {
                Entry::Occupied(mut o) => {
                    state.dups.push(Dup {
                        path: render(&state.path, Some(o.key())),
                        key: o.key().clone(),
                        line,
                        seq,
                    });
                    o.insert(value);
                }
                Entry::Vacant(v) => {
                    v.insert(value);
                }
            }
        }
        Ok(Value::Object(out))
    }
}

fn walk_json(body: &[u8], state: &mut State) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = Walk::<String>::new(state).deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// A JSON body, the last of a repeated key winning, and its repeated keys.
pub fn json(body: &[u8]) -> Result<(Value, Vec<Dup>), serde_json::Error> {
    let mut state = State::default();
    let value = walk_json(body, &mut state)?;
    Ok((value, state.dups))
}

/// A YAML document read by [`Walk`]: the value and its repeated keys.
struct Walked(Value, Vec<Dup>);

impl<'de> serde::Deserialize<'de> for Walked {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut state = State::default();
        let value = Walk::<serde_saphyr::Spanned<String>>::new(&mut state).deserialize(d)?;
        Ok(Walked(value, state.dups))
    }
}

/// A YAML body (JSON is YAML), the last of a repeated key winning, and its repeated keys with
/// their lines.
pub fn yaml(body: &[u8]) -> Result<(Value, Vec<Dup>), serde_saphyr::Error> {
    let options = serde_saphyr::options! {
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::PassThrough,
    };
    let Walked(value, dups) = serde_saphyr::from_slice_with_options(body, options)?;
    Ok((value, dups))
}

/// Where each key path of a JSON body first appears.
fn document_order(body: &[u8]) -> HashMap<String, usize> {
    let mut state = State {
        order: Some(HashMap::new()),
        ..State::default()
    };
    // The body decoded once already; a failure here leaves the order unknown.
    let _ = walk_json(body, &mut state);
    state.order.unwrap_or_default()
}

/// `line 11: key "foo" already set in map`, as yaml.v2 says it.
pub fn yaml_line(d: &Dup) -> String {
    format!("line {}: key \"{}\" already set in map", d.line, d.key)
}

/// yaml.v2's error for repeated keys: every line under one heading.
pub fn yaml_error(dups: &[Dup]) -> String {
    let mut out = String::from("yaml: unmarshal errors:");
    for d in dups {
        out.push_str("\n  ");
        out.push_str(&yaml_line(d));
    }
    out
}

/// Upstream's apply error for repeated keys under Strict validation.
pub fn apply_error(dups: &[Dup]) -> Option<String> {
    (!dups.is_empty()).then(|| {
        format!(
            "error strict decoding YAML: error converting YAML to JSON: {}",
            yaml_error(dups)
        )
    })
}

/// The strict decoding messages of a write: what the body repeated and the fields the kind does
/// not know, in upstream's order. `typed` says the kind is built in (decoded in one pass).
/// Returns the messages as an error lists them and as warnings list them (the YAML error is
/// one message there and a warning per line).
pub fn messages(
    repeated: &Repeated,
    unknown: &[String],
    typed: bool,
) -> (Vec<String>, Vec<String>) {
    let unknown_msg = |u: &String| format!("unknown field \"{u}\"");
    let dup_msg = |d: &Dup| format!("duplicate field \"{}\"", d.path);
    match repeated {
        Repeated::None => {
            let all: Vec<String> = unknown.iter().map(unknown_msg).collect();
            (all.clone(), all)
        }
        Repeated::Patch(before) => {
            let all: Vec<String> = before
                .iter()
                .cloned()
                .chain(unknown.iter().map(unknown_msg))
                .collect();
            (all.clone(), all)
        }
        Repeated::Apply(dups) => {
            let all: Vec<String> = unknown.iter().map(unknown_msg).collect();
            let warnings = dups
                .iter()
                .map(yaml_line)
                .chain(all.iter().cloned())
                .collect();
            (all, warnings)
        }
        Repeated::Yaml(dups) => {
            let rest = unknown.iter().map(unknown_msg);
            let error = std::iter::once(yaml_error(dups))
                .filter(|_| !dups.is_empty())
                .chain(rest.clone())
                .collect();
            let warnings = dups.iter().map(yaml_line).chain(rest).collect();
            (error, warnings)
        }
        Repeated::Json { dups, .. } if !typed || unknown.is_empty() || dups.is_empty() => {
            let all: Vec<String> = dups
                .iter()
                .map(dup_msg)
                .chain(unknown.iter().map(unknown_msg))
                .collect();
            (all.clone(), all)
        }
        Repeated::Json { body, dups } => {
            // A field both unknown and repeated is reported as unknown only.
            let within = |path: &str, u: &str| {
                path == u
                    || path
                        .strip_prefix(u)
                        .is_some_and(|rest| rest.starts_with(['.', '[']))
            };
            let order = document_order(body);
            let mut all: Vec<(usize, String)> = unknown
                .iter()
                .map(|u| (order.get(u).copied().unwrap_or(usize::MAX), unknown_msg(u)))
                .chain(
                    dups.iter()
                        .filter(|d| !unknown.iter().any(|u| within(&d.path, u)))
                        .map(|d| (d.seq, dup_msg(d))),
                )
                .collect();
            all.sort_by_key(|(seq, _)| *seq);
            let all: Vec<String> = all.into_iter().map(|(_, m)| m).collect();
            (all.clone(), all)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_duplicates_are_found_with_their_paths_and_the_last_wins() {
        let body = br#"{"metadata": {"name": "a", "name": "b"},
            "spec": {"containers": [{"name": "c", "image": "x", "image": "y"}]}}"#;
        let (v, dups) = json(body).unwrap();
        assert_eq!(v["metadata"]["name"], "b");
        assert_eq!(v["spec"]["containers"][0]["image"], "y");
        let paths: Vec<&str> = dups.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(paths, ["metadata.name", "spec.containers[0].image"]);
        assert!(json(b"{} x").is_err(), "trailing characters are refused");
    }

    #[test]
    fn yaml_duplicates_carry_their_lines() {
        let body =
            b"\napiVersion: v1\nkind: X\nspec:\n  foo: a\n  foo: b\n  list:\n  - k: 1\n    k: 2\n";
        let (v, dups) = yaml(body).unwrap();
        assert_eq!(v["spec"]["foo"], "b");
        assert_eq!(v["spec"]["list"][0]["k"], 2);
        let lines: Vec<String> = dups.iter().map(yaml_line).collect();
        assert_eq!(
            lines,
            [
                "line 6: key \"foo\" already set in map",
                "line 9: key \"k\" already set in map"
            ]
        );
        assert_eq!(
            yaml_error(&dups),
            "yaml: unmarshal errors:\n  line 6: key \"foo\" already set in map\n  line 9: key \"k\" already set in map"
        );
    }

    #[test]
    fn typed_json_reports_in_document_order_and_unknown_duplicates_once() {
        // Upstream's TestFieldValidation body (test/integration/apiserver).
        let body = br#"{"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "dupename", "name": "x", "labels": {"app": "nginx"},
                         "unknownMeta": "metaVal"},
            "spec": {"unknown1": "val1", "unknownDupe": "valDupe", "unknownDupe": "valDupe2",
                     "paused": true, "paused": false,
                     "template": {"spec": {"containers": [{"name": "nginx",
                        "unknownNested": "val1", "imagePullPolicy": "Always",
                        "imagePullPolicy": "Never"}]}}}}"#;
        let (_, dups) = json(body).unwrap();
        let repeated = Repeated::Json {
            body: Bytes::from_static(body),
            dups,
        };
        let unknown: Vec<String> = [
            "metadata.unknownMeta",
            "spec.template.spec.containers[0].unknownNested",
            "spec.unknown1",
            "spec.unknownDupe",
        ]
        .map(String::from)
        .to_vec();
        let (error, _) = messages(&repeated, &unknown, true);
        assert_eq!(
            error.join(", "),
            "duplicate field \"metadata.name\", unknown field \"metadata.unknownMeta\", unknown field \"spec.unknown1\", unknown field \"spec.unknownDupe\", duplicate field \"spec.paused\", unknown field \"spec.template.spec.containers[0].unknownNested\", duplicate field \"spec.template.spec.containers[0].imagePullPolicy\""
        );
        // A custom resource lists the duplicates first, all of them.
        let (error, _) = messages(&repeated, &unknown[..1], false);
        assert_eq!(
            error.join(", "),
            "duplicate field \"metadata.name\", duplicate field \"spec.unknownDupe\", duplicate field \"spec.paused\", duplicate field \"spec.template.spec.containers[0].imagePullPolicy\", unknown field \"metadata.unknownMeta\""
        );
    }
}

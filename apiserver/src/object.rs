//! Helpers on objects as JSON values: metadata access, timestamps, ages.

use serde_json::{Value, json};

/// A DNS-1123 label: at most 63 lower-case letters, digits and `-`, starting and ending
/// with a letter or digit.
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Upstream's IsDNS1123Subdomain: at most 253 characters of dot-separated parts, each lower
/// case alphanumerics and '-' that start and end alphanumeric. Unlike a label, a part may be
/// longer than 63 characters.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && dns1123_subdomain_pattern(s)
}

/// The pattern of [`is_dns1123_subdomain`] without its length limit (upstream reports the two
/// separately).
pub fn dns1123_subdomain_pattern(s: &str) -> bool {
    s.split('.').all(|part| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !part.starts_with('-')
            && !part.ends_with('-')
    })
}

/// `Value::pointer` without its allocations (it unescapes every token into a new string),
/// for the pointers read on every request; escaped pointers and list indexes go to it.
pub fn at<'a>(v: &'a Value, pointer: &str) -> Option<&'a Value> {
    if pointer.contains('~') {
        return v.pointer(pointer);
    }
    let Some(tokens) = pointer.strip_prefix('/') else {
        return pointer.is_empty().then_some(v);
    };
    let mut here = v;
    for token in tokens.split('/') {
        here = match here {
            Value::Object(m) => m.get(token)?,
            Value::Array(_) => return v.pointer(pointer),
            _ => return None,
        };
    }
    Some(here)
}

/// [`at`] as a method: `obj.at("/metadata/name")`.
pub trait At {
    fn at(&self, pointer: &str) -> Option<&Value>;
}

impl At for Value {
    fn at(&self, pointer: &str) -> Option<&Value> {
        at(self, pointer)
    }
}

pub fn name(o: &Value) -> &str {
    at(o, "/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub fn namespace_of(o: &Value) -> &str {
    at(o, "/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub fn resource_version(o: &Value) -> Option<&str> {
    at(o, "/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// `metadata`, created if missing (a body without it is refused before this is used).
pub fn metadata_mut(o: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !o.get("metadata").is_some_and(Value::is_object) {
        o["metadata"] = json!({});
    }
    match o.get_mut("metadata") {
        Some(Value::Object(m)) => m,
        _ => unreachable!("metadata was just made an object"),
    }
}

/// Now, as Kubernetes writes timestamps (RFC 3339, seconds).
pub fn now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or_else(|_| jiff::Timestamp::now())
        .to_string()
}

/// The object's age as kubectl prints it (`5s`, `3m2s`, `4h`, `2d`), from creationTimestamp.
pub fn age(o: &Value) -> String {
    let created = o
        .at("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<jiff::Timestamp>().ok());
    match created {
        Some(t) => human_duration(jiff::Timestamp::now().as_second() - t.as_second()),
        None => "<unknown>".to_string(),
    }
}

/// Upstream's `duration.HumanDuration` (k8s.io/apimachinery/pkg/util/duration).
pub fn human_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    if s < 60 * 2 {
        return format!("{s}s");
    }
    let m = s / 60;
    if m < 10 {
        let rest = s % 60;
        return if rest == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{rest}s")
        };
    }
    if m < 60 * 3 {
        return format!("{m}m");
    }
    let h = m / 60;
    if h < 8 {
        let rest = m % 60;
        return if rest == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{rest}m")
        };
    }
    if h < 48 {
        return format!("{h}h");
    }
    if h < 24 * 8 {
        let (d, rest) = (h / 24, h % 24);
        return if rest == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{rest}h")
        };
    }
    if h < 24 * 365 * 2 {
        return format!("{}d", h / 24);
    }
    if h < 24 * 365 * 8 {
        let (y, d) = (h / 24 / 365, (h / 24) % 365);
        return if d == 0 {
            format!("{y}y")
        } else {
            format!("{y}y{d}d")
        };
    }
    format!("{}y", h / 24 / 365)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_reads_as_json_pointers_do() {
        let v = json!({"metadata": {"name": "x", "a/b": 1, "m~n": 2}, "items": [{"k": 3}], "": {"": 4}});
        for p in [
            "",
            "/metadata",
            "/metadata/name",
            "/metadata/a~1b",
            "/metadata/m~0n",
            "/items/0/k",
            "/items/1",
            "/items/x",
            "/metadata/name/x",
            "/nope",
            "metadata",
            "/",
            "//",
        ] {
            assert_eq!(at(&v, p), v.pointer(p), "{p}");
        }
    }

    #[test]
    fn durations_print_like_kubectl() {
        for (s, want) in [
            (5, "5s"),
            (119, "119s"),
            (120, "2m"),
            (125, "2m5s"),
            (600, "10m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 60, "3h1m"),
            (9 * 3600, "9h"),
            (50 * 3600, "2d2h"),
            (10 * 86400, "10d"),
            (800 * 86400, "2y70d"),
        ] {
            assert_eq!(human_duration(s), want, "{s}s");
        }
    }
}

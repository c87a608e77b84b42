//! Upstream's RequestInfo for authorization: the verb, and for resource requests the group,
//! version, resource, subresource, namespace and name a path and method name.

use std::collections::HashMap;

use axum::http::Method;
use kelp_auth::rbac::Attributes;

pub fn attributes(method: &Method, path: &str, query: Option<&str>) -> Attributes {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let non_resource = || Attributes {
        verb: method.as_str().to_ascii_lowercase(),
        path: path.to_string(),
        ..Attributes::default()
    };
    if parts.len() < 3 || !matches!(parts[0], "api" | "apis") {
        return non_resource();
    }
    let mut rest = &parts[1..];
    let mut a = Attributes {
        path: path.to_string(),
        resource_request: true,
        ..Attributes::default()
    };
    if parts[0] == "apis" {
        if rest.len() < 3 {
            return non_resource();
        }
        a.api_group = rest[0].to_string();
        rest = &rest[1..];
    }
    a.api_version = rest[0].to_string();
    rest = &rest[1..];
    let special = matches!(rest.first(), Some(&"proxy") | Some(&"watch")) && rest.len() >= 2;
    if special {
        a.verb = rest[0].to_string();
        rest = &rest[1..];
    } else {
        a.verb = match *method {
            Method::POST => "create",
            Method::GET | Method::HEAD => "get",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE => "delete",
            _ => "",
        }
        .to_string();
    }
    if rest.first() == Some(&"namespaces") && rest.len() > 1 {
        a.namespace = rest[1].to_string();
        if rest.len() > 2 && !matches!(rest[2], "status" | "finalize") {
            rest = &rest[2..];
        }
    }
    if rest.len() >= 3 && a.verb != "proxy" {
        a.subresource = rest[2].to_string();
    }
    if rest.len() >= 2 {
        a.name = rest[1].to_string();
    }
    if let Some(r) = rest.first() {
        a.resource = r.to_string();
    }
    if a.name.is_empty() && a.verb == "get" {
        let q: HashMap<String, String> = query
            .and_then(|q| serde_urlencoded::from_str(q).ok())
            .unwrap_or_default();
        a.verb = if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
            "watch"
        } else {
            "list"
        }
        .to_string();
        // A list of one name (`kubectl get pod x -w`) is authorized as that name.
        if let Some(name) = q
            .get("fieldSelector")
            .and_then(|s| exact_name(s))
            .filter(|n| !n.is_empty() && !n.contains('/') && *n != "." && *n != "..")
        {
            a.name = name.to_string();
        }
    }
    if a.name.is_empty() && a.verb == "delete" {
        a.verb = "deletecollection".to_string();
    }
    a
}

/// The name a field selector requires exactly (`metadata.name=x` or `==`), if it does.
fn exact_name(selector: &str) -> Option<&str> {
    selector.split(',').find_map(|term| {
        let term = term.trim();
        term.strip_prefix("metadata.name==")
            .or_else(|| term.strip_prefix("metadata.name="))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(
        method: Method,
        path: &str,
        query: Option<&str>,
    ) -> (String, String, String, String, String, String, bool) {
        let a = attributes(&method, path, query);
        (
            a.verb,
            a.api_group,
            a.namespace,
            a.resource,
            a.subresource,
            a.name,
            a.resource_request,
        )
    }

    #[test]
    fn paths_and_methods_become_upstreams_attributes() {
        let s = |x: &str| x.to_string();
        assert_eq!(
            parsed(Method::GET, "/api/v1/namespaces/dev/pods", None),
            (s("list"), s(""), s("dev"), s("pods"), s(""), s(""), true)
        );
        assert_eq!(
            parsed(
                Method::GET,
                "/api/v1/namespaces/dev/pods",
                Some("watch=true")
            ),
            (s("watch"), s(""), s("dev"), s("pods"), s(""), s(""), true)
        );
        assert_eq!(
            parsed(
                Method::GET,
                "/api/v1/namespaces/dev/pods",
                Some("fieldSelector=metadata.name%3Dweb&watch=1")
            ),
            (
                s("watch"),
                s(""),
                s("dev"),
                s("pods"),
                s(""),
                s("web"),
                true
            )
        );
        assert_eq!(
            parsed(
                Method::PUT,
                "/apis/apps/v1/namespaces/dev/deployments/web/scale",
                None
            ),
            (
                s("update"),
                s("apps"),
                s("dev"),
                s("deployments"),
                s("scale"),
                s("web"),
                true
            )
        );
        assert_eq!(
            parsed(Method::GET, "/api/v1/namespaces/dev", None),
            (
                s("get"),
                s(""),
                s("dev"),
                s("namespaces"),
                s(""),
                s("dev"),
                true
            )
        );
        assert_eq!(
            parsed(Method::PUT, "/api/v1/namespaces/dev/finalize", None),
            (
                s("update"),
                s(""),
                s("dev"),
                s("namespaces"),
                s("finalize"),
                s("dev"),
                true
            )
        );
        assert_eq!(
            parsed(Method::DELETE, "/api/v1/namespaces/dev/configmaps", None),
            (
                s("deletecollection"),
                s(""),
                s("dev"),
                s("configmaps"),
                s(""),
                s(""),
                true
            )
        );
        assert_eq!(
            parsed(
                Method::GET,
                "/apis/rbac.authorization.k8s.io/v1/clusterroles/view",
                None
            ),
            (
                s("get"),
                s("rbac.authorization.k8s.io"),
                s(""),
                s("clusterroles"),
                s(""),
                s("view"),
                true
            )
        );
        for path in [
            "/api",
            "/api/v1",
            "/apis/apps",
            "/apis/apps/v1",
            "/healthz",
            "/openapi/v3",
        ] {
            let a = attributes(&Method::GET, path, None);
            assert!(!a.resource_request, "{path}");
            assert_eq!((a.verb.as_str(), a.path.as_str()), ("get", path));
        }
    }
}

//! What a request is about: upstream's RequestInfo, from the path alone.

use crate::crd::CustomResources;
use crate::error::ApiError;
use crate::registry::{self, Resource};

/// The resource, namespace, name and subresource a resource path names.
pub struct Target {
    pub resource: &'static Resource,
    /// The namespace from the path (None: cluster-scoped, or a list across namespaces).
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// Parses the part of a path after `/api/v1/` or `/apis/<group>/<version>/`; custom resources
/// are looked up among the served definitions.
pub fn parse(
    crds: Option<&CustomResources>,
    group: &str,
    version: &str,
    rest: &str,
) -> Result<Target, ApiError> {
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    let find = |plural: &str| {
        registry::lookup(group, version, plural)
            .or_else(|| crds.and_then(|c| c.lookup(group, version, plural)))
            .ok_or_else(ApiError::no_route)
    };
    let target = |resource: &'static Resource,
                  namespace: Option<&str>,
                  name: Option<&str>,
                  sub: Option<&str>| {
        Ok(Target {
            resource,
            namespace: namespace.map(str::to_string),
            name: name.map(str::to_string),
            subresource: sub.map(str::to_string),
        })
    };
    match parts.as_slice() {
        // namespaces/{ns}/{resource}[/{name}[/{sub}]], unless {resource} is a subresource of
        // the namespace itself (status, finalize).
        ["namespaces", ns, plural, rest @ ..]
            if !(group.is_empty() && matches!(*plural, "status" | "finalize")) =>
        {
            let r = find(plural)?;
            if !r.namespaced {
                return Err(ApiError::no_route());
            }
            match rest {
                [] => target(r, Some(ns), None, None),
                [name] => target(r, Some(ns), Some(name), None),
                [name, sub] => target(r, Some(ns), Some(name), Some(sub)),
                _ => Err(ApiError::no_route()),
            }
        }
        [plural] => target(find(plural)?, None, None, None),
        [plural, name, sub @ ..] => {
            let r = find(plural)?;
            if r.namespaced {
                return Err(ApiError::no_route());
            }
            match sub {
                [] => target(r, None, Some(name), None),
                [sub] => target(r, None, Some(name), Some(sub)),
                _ => Err(ApiError::no_route()),
            }
        }
        _ => Err(ApiError::no_route()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_targets_as_upstream_does() {
        let t = parse(None, "", "v1", "namespaces/dev/configmaps/app").unwrap();
        assert_eq!(
            (t.resource.plural, t.namespace.as_deref(), t.name.as_deref()),
            ("configmaps", Some("dev"), Some("app"))
        );
        let t = parse(None, "", "v1", "configmaps").unwrap();
        assert_eq!(
            (t.resource.plural, t.namespace, t.name),
            ("configmaps", None, None)
        );
        let t = parse(None, "", "v1", "namespaces/dev").unwrap();
        assert_eq!(
            (t.resource.plural, t.name.as_deref()),
            ("namespaces", Some("dev"))
        );
        let t = parse(None, "", "v1", "namespaces/dev/status").unwrap();
        assert_eq!(
            (
                t.resource.plural,
                t.name.as_deref(),
                t.subresource.as_deref()
            ),
            ("namespaces", Some("dev"), Some("status"))
        );
        assert!(
            parse(None, "", "v1", "configmaps/app").is_err(),
            "a namespaced object needs its namespace"
        );
        assert!(parse(None, "", "v1", "widgets").is_err());
        let t = parse(None, "apps", "v1", "namespaces/dev/deployments/web/status").unwrap();
        assert_eq!(
            (
                t.resource.kind,
                t.namespace.as_deref(),
                t.subresource.as_deref()
            ),
            ("Deployment", Some("dev"), Some("status"))
        );
        assert_eq!(
            parse(None, "rbac.authorization.k8s.io", "v1", "clusterroles/view")
                .unwrap()
                .resource
                .kind,
            "ClusterRole"
        );
        assert!(parse(None, "", "v1", "namespaces/dev/namespaces").is_err());
    }
}

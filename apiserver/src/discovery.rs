//! Discovery from the registry: legacy (`/api`, `/apis`, `/api/v1`, `/apis/<group>/<version>`)
//! and aggregated (`apidiscovery.k8s.io/v2` and `v2beta1` lists at `/api` and `/apis`, chosen
//! by Accept). Clients tell the two apart by the response Content-Type alone. Each answer is
//! computed from the resources served at the moment, custom resources included.

use serde_json::{Value, json};

use crate::aggregator::RemoteVersion;
use crate::registry::{self, Resource, Status};

pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

/// The named groups with their versions, preferred first.
fn groups(resources: &[&'static Resource], legacy: bool) -> Vec<(&'static str, Vec<&'static str>)> {
    registry::group_versions(resources)
        .into_iter()
        .filter(|(g, _)| g.is_empty() == legacy)
        .fold(Vec::new(), |mut groups: Vec<(&str, Vec<&str>)>, (g, v)| {
            match groups.iter_mut().find(|(name, _)| *name == g) {
                Some((_, versions)) => versions.push(v),
                None => groups.push((g, vec![v])),
            }
            groups
        })
}

fn api_group(name: &str, versions: &[&str]) -> Value {
    let gvs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({"name": name, "versions": gvs, "preferredVersion": gvs[0]})
}

pub fn api_groups(resources: &[&'static Resource]) -> Value {
    let groups: Vec<Value> = groups(resources, false)
        .into_iter()
        .map(|(g, versions)| api_group(g, &versions))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// Adds the group versions of extension API servers to a legacy APIGroupList: a version of a
/// group served here joins it, a new group is listed with its versions in priority order.
/// Every registered one is listed, reachable or not, as upstream does.
pub fn add_remote_groups(list: &mut Value, remote: &[RemoteVersion]) {
    let Some(groups) = list.get_mut("groups").and_then(Value::as_array_mut) else {
        return;
    };
    for rv in remote {
        let gv =
            json!({"groupVersion": format!("{}/{}", rv.group, rv.version), "version": rv.version});
        match groups.iter_mut().find(|g| g["name"] == rv.group.as_str()) {
            Some(g) => {
                if let Some(versions) = g["versions"].as_array_mut()
                    && !versions.contains(&gv)
                {
                    versions.push(gv);
                }
            }
            None => {
                groups.push(json!({"name": rv.group, "versions": [gv], "preferredVersion": gv}))
            }
        }
    }
}

/// `/apis/<group>`: the APIGroup, or None if no version of it is served here or by an
/// extension API server.
pub fn group(
    resources: &[&'static Resource],
    remote: &[RemoteVersion],
    name: &str,
) -> Option<Value> {
    let mut list = api_groups(resources);
    add_remote_groups(&mut list, remote);
    let mut doc = list["groups"]
        .as_array()?
        .iter()
        .find(|g| g["name"] == name)?
        .clone();
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Some(doc)
}

/// An extension server's legacy resource list (APIResource entries) in the aggregated form:
/// `a/b` entries become subresources of `a`.
fn remote_resources(group: &str, version: &str, legacy: &[Value]) -> Vec<Value> {
    let kind_of = |r: &Value| {
        let text =
            |k: &str, default: &str| json!(r.get(k).and_then(Value::as_str).unwrap_or(default));
        json!({"group": text("group", group), "version": text("version", version), "kind": text("kind", "")})
    };
    let name = |r: &Value| {
        r.get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let verbs = |r: &Value| r.get("verbs").cloned().unwrap_or(json!([]));
    let mut out: Vec<Value> = Vec::new();
    for r in legacy.iter().filter(|r| !name(r).contains('/')) {
        let mut entry = json!({
            "resource": name(r),
            "responseKind": kind_of(r),
            "scope": if r.get("namespaced") == Some(&Value::Bool(true)) { "Namespaced" } else { "Cluster" },
            "singularResource": r.get("singularName").and_then(Value::as_str).unwrap_or(""),
            "verbs": verbs(r),
        });
        for k in ["shortNames", "categories"] {
            if let Some(list) = r.get(k).filter(|l| l.is_array()) {
                entry[k] = list.clone();
            }
        }
        out.push(entry);
    }
    for r in legacy {
        let full = name(r);
        let Some((parent, sub)) = full.split_once('/') else {
            continue;
        };
        let Some(entry) = out.iter_mut().find(|e| e["resource"] == parent) else {
            continue;
        };
        let subresource =
            json!({"subresource": sub, "responseKind": kind_of(r), "verbs": verbs(r)});
        match entry["subresources"].as_array_mut() {
            Some(subs) => subs.push(subresource),
            None => entry["subresources"] = json!([subresource]),
        }
    }
    out
}

/// Adds the group versions of extension API servers whose resources are known to an
/// aggregated list; Stale when the last check did not reach the server.
pub fn add_remote_aggregated(list: &mut Value, remote: &[RemoteVersion]) {
    let Some(items) = list.get_mut("items").and_then(Value::as_array_mut) else {
        return;
    };
    for rv in remote {
        let Some((resources, current)) = &rv.resources else {
            continue;
        };
        let version = json!({
            "version": rv.version,
            "resources": remote_resources(&rv.group, &rv.version, resources),
            "freshness": if *current { "Current" } else { "Stale" },
        });
        match items
            .iter_mut()
            .find(|i| i["metadata"]["name"] == rv.group.as_str())
        {
            Some(item) => {
                if let Some(versions) = item["versions"].as_array_mut() {
                    versions.push(version);
                }
            }
            None => items.push(json!({
                "metadata": {"name": rv.group, "creationTimestamp": null},
                "versions": [version],
            })),
        }
    }
}

/// The APIResourceList of a group/version, or None if it is not served.
type Subresource = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
);

/// A resource's subresources as discovery lists them: (name, group, version, kind, verbs).
fn subresources(r: &Resource) -> Vec<Subresource> {
    const RW: &[&str] = &["get", "patch", "update"];
    let mut out = Vec::new();
    if r.status != Status::None {
        out.push(("status", r.group, r.version, r.kind, RW));
    }
    if r.scale {
        out.push(("scale", "autoscaling", "v1", "Scale", RW));
    }
    if r.kind == "Namespace" && r.group.is_empty() {
        out.push(("finalize", "", "v1", "Namespace", &["update"][..]));
    }
    if r.plural == "pods" && r.group.is_empty() {
        out.push(("binding", "", "v1", "Binding", &["create"][..]));
        out.push(("eviction", "policy", "v1", "Eviction", &["create"][..]));
    }
    if r.kind == "CertificateSigningRequest" {
        out.push((
            "approval",
            r.group,
            r.version,
            r.kind,
            &["get", "patch", "update"][..],
        ));
    }
    if r.plural == "serviceaccounts" && r.group.is_empty() {
        out.push((
            "token",
            "authentication.k8s.io",
            "v1",
            "TokenRequest",
            &["create"][..],
        ));
    }
    out
}

pub fn api_resources(served: &[&'static Resource], group: &str, version: &str) -> Option<Value> {
    let resources: Vec<Value> = served
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .flat_map(|r| {
            let main = json!({
                "name": r.plural,
                "singularName": r.singular,
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": r.verbs,
                "shortNames": r.short_names,
                "categories": r.categories,
            });
            let subs = subresources(r).into_iter().map(|(sub, g, v, kind, verbs)| {
                let mut entry = json!({
                    "name": format!("{}/{sub}", r.plural),
                    "singularName": "",
                    "namespaced": r.namespaced,
                    "kind": kind,
                    "verbs": verbs,
                });
                if g != r.group || v != r.version {
                    entry["group"] = json!(g);
                    entry["version"] = json!(v);
                }
                entry
            });
            std::iter::once(main).chain(subs).collect::<Vec<_>>()
        })
        .collect();
    if resources.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}),
    )
}

/// The aggregated discovery version a request's Accept asks for first, if any.
pub fn aggregated_version(accept: &str) -> Option<&'static str> {
    for media in accept.split(',') {
        let params: Vec<&str> = media.split(';').map(str::trim).collect();
        if params.first() != Some(&"application/json") {
            continue;
        }
        let has = |p: &str| params.contains(&p);
        if has("g=apidiscovery.k8s.io") && has("as=APIGroupDiscoveryList") {
            if has("v=v2") {
                return Some("v2");
            }
            if has("v=v2beta1") {
                return Some("v2beta1");
            }
            continue;
        }
        // Plain JSON comes first: legacy.
        return None;
    }
    None
}

/// `application/json;g=apidiscovery.k8s.io;v=<version>;as=APIGroupDiscoveryList`
pub fn aggregated_content_type(version: &str) -> String {
    format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList")
}

/// The aggregated list of the core group (`legacy`) or of the named groups.
pub fn aggregated(served: &[&'static Resource], version: &str, legacy: bool) -> Value {
    let items: Vec<Value> = groups(served, legacy)
        .into_iter()
        .map(|(group, versions)| {
            let versions: Vec<Value> = versions
                .into_iter()
                .map(|v| {
                    let resources: Vec<Value> = served
                        .iter()
                        .filter(|r| r.group == group && r.version == v)
                        .map(|r| {
                            json!({
                                "resource": r.plural,
                                "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
                                "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                                "singularResource": r.singular,
                                "verbs": r.verbs,
                                "shortNames": r.short_names,
                                "categories": r.categories,
                                "subresources": subresources(r).into_iter().map(|(sub, g, v, kind, verbs)| json!({
                                    "subresource": sub,
                                    "responseKind": {"group": g, "version": v, "kind": kind},
                                    "verbs": verbs,
                                })).collect::<Vec<_>>(),
                            })
                        })
                        .collect();
                    json!({"version": v, "resources": resources, "freshness": "Current"})
                })
                .collect();
            json!({"metadata": {"name": group, "creationTimestamp": null}, "versions": versions})
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_chooses_the_form_as_kubectl_offers_it() {
        let kubectl = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(aggregated_version(kubectl), Some("v2"));
        let old = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(aggregated_version(old), Some("v2beta1"));
        assert_eq!(aggregated_version("application/json, */*"), None);
        assert_eq!(aggregated_version(""), None);
    }

    #[test]
    fn the_core_group_is_listed_at_api_with_an_empty_name() {
        let core = aggregated(&registry::served(None), "v2", true);
        assert_eq!(core["items"].as_array().unwrap().len(), 1);
        assert_eq!(core["items"][0]["metadata"]["name"], "");
        let cm = core["items"][0]["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "configmaps")
            .unwrap();
        assert_eq!(
            cm["responseKind"],
            json!({"group": "", "version": "v1", "kind": "ConfigMap"})
        );
        assert_eq!(cm["scope"], "Namespaced");
    }

    /// A remote version (a list of them is in priority order).
    fn remote(group: &str, version: &str, resources: Option<Vec<Value>>) -> RemoteVersion {
        RemoteVersion {
            group: group.into(),
            version: version.into(),
            resources: resources.map(|r| (r, false)),
        }
    }

    #[test]
    fn remote_group_versions_join_the_legacy_list() {
        let mut list = api_groups(&registry::served(None));
        let remote = [
            remote("metrics.k8s.io", "v1beta1", None),
            remote("metrics.k8s.io", "v1alpha1", None),
            remote("apps", "v2", None),
        ];
        add_remote_groups(&mut list, &remote);
        let groups = list["groups"].as_array().unwrap();
        let metrics = groups
            .iter()
            .find(|g| g["name"] == "metrics.k8s.io")
            .unwrap();
        assert_eq!(metrics["preferredVersion"]["version"], "v1beta1");
        assert_eq!(metrics["versions"].as_array().unwrap().len(), 2);
        let apps = groups.iter().find(|g| g["name"] == "apps").unwrap();
        assert_eq!(
            apps["preferredVersion"]["version"], "v1",
            "a local version stays preferred"
        );
        assert_eq!(apps["versions"][1]["groupVersion"], "apps/v2");
        let doc = group(&registry::served(None), &remote, "metrics.k8s.io").unwrap();
        assert_eq!(doc["kind"], "APIGroup");
        assert!(group(&registry::served(None), &remote, "nothing.example.com").is_none());
    }

    #[test]
    fn a_remote_resource_list_becomes_aggregated_with_subresources() {
        let legacy = vec![
            json!({"name": "flunders", "singularName": "flunder", "namespaced": true, "kind": "Flunder", "verbs": ["get", "list"], "shortNames": ["fl"]}),
            json!({"name": "flunders/status", "singularName": "", "namespaced": true, "kind": "Flunder", "verbs": ["get"]}),
            json!({"name": "flunders/scale", "namespaced": true, "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "update"]}),
        ];
        let mut list = aggregated(&registry::served(None), "v2", false);
        add_remote_aggregated(
            &mut list,
            &[remote("wardle.example.com", "v1alpha1", Some(legacy))],
        );
        let item = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["metadata"]["name"] == "wardle.example.com")
            .unwrap();
        let version = &item["versions"][0];
        assert_eq!(version["freshness"], "Stale");
        let flunders = &version["resources"][0];
        assert_eq!(flunders["resource"], "flunders");
        assert_eq!(flunders["scope"], "Namespaced");
        assert_eq!(flunders["shortNames"], json!(["fl"]));
        assert_eq!(
            flunders["responseKind"],
            json!({"group": "wardle.example.com", "version": "v1alpha1", "kind": "Flunder"})
        );
        assert_eq!(flunders["subresources"][0]["subresource"], "status");
        assert_eq!(
            flunders["subresources"][1]["responseKind"],
            json!({"group": "autoscaling", "version": "v1", "kind": "Scale"})
        );
        assert_eq!(version["resources"].as_array().unwrap().len(), 1);
    }
}

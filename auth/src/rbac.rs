//! RBAC: which rules apply to a user, and whether they allow a request (upstream's
//! `plugin/pkg/auth/authorizer/rbac`); and whether one set of rules covers another, for
//! escalation prevention (`pkg/registry/rbac/validation`).

use std::collections::HashMap;
use std::fmt::Write;

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};

use crate::user::{UserInfo, service_account_user};

/// What a request does, as authorizers see it (upstream's `authorizer.Attributes`).
#[derive(Clone, Debug, Default)]
pub struct Attributes {
    pub verb: String,
    pub namespace: String,
    pub api_group: String,
    pub api_version: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
    pub path: String,
    pub resource_request: bool,
}

struct Binding {
    /// `name` (cluster bindings) or `name/namespace` (role bindings), as reasons name them.
    described: String,
    kind: &'static str,
    namespace: String,
    role_ref: RoleRef,
    subjects: Vec<Subject>,
}

/// The roles and bindings of a cluster, indexed for evaluation.
#[derive(Default)]
pub struct Policy {
    cluster_roles: HashMap<String, Vec<PolicyRule>>,
    roles: HashMap<(String, String), Vec<PolicyRule>>,
    cluster_bindings: Vec<Binding>,
    bindings: HashMap<String, Vec<Binding>>,
}

impl Policy {
    pub fn add_cluster_role(&mut self, role: ClusterRole) {
        let name = role.metadata.name.unwrap_or_default();
        self.cluster_roles
            .insert(name, role.rules.unwrap_or_default());
    }

    pub fn add_role(&mut self, role: Role) {
        let key = (
            role.metadata.namespace.unwrap_or_default(),
            role.metadata.name.unwrap_or_default(),
        );
        self.roles.insert(key, role.rules.unwrap_or_default());
    }

    pub fn add_cluster_role_binding(&mut self, b: ClusterRoleBinding) {
        self.cluster_bindings.push(Binding {
            described: b.metadata.name.unwrap_or_default(),
            kind: "ClusterRoleBinding",
            namespace: String::new(),
            role_ref: b.role_ref,
            subjects: b.subjects.unwrap_or_default(),
        });
    }

    pub fn add_role_binding(&mut self, b: RoleBinding) {
        let namespace = b.metadata.namespace.unwrap_or_default();
        let binding = Binding {
            described: format!("{}/{namespace}", b.metadata.name.unwrap_or_default()),
            kind: "RoleBinding",
            namespace: namespace.clone(),
            role_ref: b.role_ref,
            subjects: b.subjects.unwrap_or_default(),
        };
        self.bindings.entry(namespace).or_default().push(binding);
    }

    /// The rules a role reference names (a RoleBinding's Role is in its namespace).
    pub fn role_rules(&self, role_ref: &RoleRef, namespace: &str) -> Result<&[PolicyRule], String> {
        match role_ref.kind.as_str() {
            "ClusterRole" => self
                .cluster_roles
                .get(&role_ref.name)
                .map(Vec::as_slice)
                .ok_or_else(|| {
                    format!(
                        "clusterrole.rbac.authorization.k8s.io \"{}\" not found",
                        role_ref.name
                    )
                }),
            "Role" => self
                .roles
                .get(&(namespace.to_string(), role_ref.name.clone()))
                .map(Vec::as_slice)
                .ok_or_else(|| {
                    format!(
                        "role.rbac.authorization.k8s.io \"{}\" not found",
                        role_ref.name
                    )
                }),
            other => Err(format!("unsupported role reference kind: {other:?}")),
        }
    }

    /// Visits the rules that apply to `user` in `namespace` (cluster bindings first, then the
    /// namespace's), with the binding that grants them; stops when `visit` returns false.
    /// Returns the errors met (bindings to missing roles).
    fn visit(
        &self,
        user: &UserInfo,
        namespace: &str,
        mut visit: impl FnMut(&Binding, &Subject, &PolicyRule) -> bool,
    ) -> Vec<String> {
        let mut errors = Vec::new();
        let namespaced = self
            .bindings
            .get(namespace)
            .filter(|_| !namespace.is_empty());
        let all = self
            .cluster_bindings
            .iter()
            .chain(namespaced.into_iter().flatten());
        for b in all {
            let Some(subject) = b
                .subjects
                .iter()
                .find(|s| applies_to(s, user, &b.namespace))
            else {
                continue;
            };
            match self.role_rules(&b.role_ref, &b.namespace) {
                Ok(rules) => {
                    for rule in rules {
                        if !visit(b, subject, rule) {
                            return errors;
                        }
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        errors
    }

    /// Allowed: upstream's reason (`RBAC: allowed by ...`). Not allowed: None (no opinion).
    pub fn authorize(&self, user: &UserInfo, a: &Attributes) -> Option<String> {
        let mut reason = None;
        self.visit(user, &a.namespace, |b, subject, rule| {
            if rule_allows(rule, a) {
                reason = Some(format!(
                    "RBAC: allowed by {} \"{}\" of {} \"{}\" to {}",
                    b.kind,
                    b.described,
                    b.role_ref.kind,
                    b.role_ref.name,
                    describe_subject(subject, &b.namespace)
                ));
                return false;
            }
            true
        });
        reason
    }

    /// Every rule that applies to `user` in `namespace` ("" for cluster-wide only), and the
    /// errors met resolving them.
    pub fn rules_for(&self, user: &UserInfo, namespace: &str) -> (Vec<PolicyRule>, Vec<String>) {
        let mut rules = Vec::new();
        let errors = self.visit(user, namespace, |_, _, rule| {
            rules.push(rule.clone());
            true
        });
        (rules, errors)
    }
}

fn applies_to(s: &Subject, user: &UserInfo, binding_namespace: &str) -> bool {
    match s.kind.as_str() {
        "User" => user.name == s.name,
        "Group" => user.in_group(&s.name),
        "ServiceAccount" => {
            let ns = s
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_namespace);
            user.name == service_account_user(ns, &s.name)
        }
        _ => false,
    }
}

fn describe_subject(s: &Subject, binding_namespace: &str) -> String {
    match s.kind.as_str() {
        "ServiceAccount" => {
            let ns = s
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_namespace);
            format!("{} \"{}/{ns}\"", s.kind, s.name)
        }
        _ => format!("{} \"{}\"", s.kind, s.name),
    }
}

fn has(list: &[String], item: &str) -> bool {
    list.iter().any(|x| x == item)
}

fn list(v: &Option<Vec<String>>) -> &[String] {
    v.as_deref().unwrap_or(&[])
}

/// Whether one rule allows the request (upstream's `RuleAllows`).
pub fn rule_allows(rule: &PolicyRule, a: &Attributes) -> bool {
    let verbs = &rule.verbs;
    if !(has(verbs, "*") || has(verbs, &a.verb)) {
        return false;
    }
    if !a.resource_request {
        return list(&rule.non_resource_urls)
            .iter()
            .any(|u| url_matches(u, &a.path));
    }
    let groups = list(&rule.api_groups);
    if !(has(groups, "*") || has(groups, &a.api_group)) {
        return false;
    }
    let combined = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let resources_match = list(&rule.resources).iter().any(|r| {
        r == "*"
            || *r == combined
            || (!a.subresource.is_empty() && r.strip_prefix("*/") == Some(a.subresource.as_str()))
    });
    let names = list(&rule.resource_names);
    resources_match && (names.is_empty() || has(names, &a.name))
}

fn url_matches(rule: &str, path: &str) -> bool {
    rule == "*"
        || rule == path
        || (rule.ends_with('*') && path.starts_with(rule.trim_end_matches('*')))
}

/// A rule split into rules of one verb, group, resource and name each (upstream's
/// `BreakdownRule`).
fn breakdown(rule: &PolicyRule) -> Vec<PolicyRule> {
    let one = |s: &String| Some(vec![s.clone()]);
    let mut out = Vec::new();
    for group in list(&rule.api_groups) {
        for resource in list(&rule.resources) {
            for verb in &rule.verbs {
                let base = PolicyRule {
                    api_groups: one(group),
                    resources: one(resource),
                    verbs: vec![verb.clone()],
                    ..PolicyRule::default()
                };
                if list(&rule.resource_names).is_empty() {
                    out.push(base);
                } else {
                    for name in list(&rule.resource_names) {
                        out.push(PolicyRule {
                            resource_names: one(name),
                            ..base.clone()
                        });
                    }
                }
            }
        }
    }
    for url in list(&rule.non_resource_urls) {
        for verb in &rule.verbs {
            out.push(PolicyRule {
                non_resource_urls: one(url),
                verbs: vec![verb.clone()],
                ..PolicyRule::default()
            });
        }
    }
    out
}

fn has_all(set: &[String], wanted: &[String]) -> bool {
    wanted.iter().all(|w| has(set, w))
}

fn rule_covers(owner: &PolicyRule, sub: &PolicyRule) -> bool {
    let verbs = has(&owner.verbs, "*") || has_all(&owner.verbs, &sub.verbs);
    let groups = has(list(&owner.api_groups), "*")
        || has_all(list(&owner.api_groups), list(&sub.api_groups));
    let resources = {
        let set = list(&owner.resources);
        has(set, "*")
            || list(&sub.resources).iter().all(|path| {
                has(set, path)
                    || path
                        .split_once('/')
                        .is_some_and(|(_, sub)| has(set, &format!("*/{sub}")))
            })
    };
    let urls = list(&sub.non_resource_urls).iter().all(|path| {
        list(&owner.non_resource_urls)
            .iter()
            .any(|o| o == path || (o.ends_with('*') && path.starts_with(o.trim_end_matches('*'))))
    });
    let owner_names = list(&owner.resource_names);
    let names = owner_names.is_empty()
        || (!list(&sub.resource_names).is_empty()
            && has_all(owner_names, list(&sub.resource_names)));
    verbs && groups && resources && names && urls
}

/// Whether `owner` covers every permission of `wanted`; else the uncovered atomic rules.
pub fn covers(owner: &[PolicyRule], wanted: &[PolicyRule]) -> Result<(), Vec<PolicyRule>> {
    let missing: Vec<PolicyRule> = wanted
        .iter()
        .flat_map(breakdown)
        .filter(|sub| !owner.iter().any(|o| rule_covers(o, sub)))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing)
    }
}

/// Rules in upstream's compact string form: `{APIGroups:["apps"], Resources:["deployments"],
/// Verbs:["create"]}`, simple rules that differ only by verb merged.
pub fn compact_string(rules: &[PolicyRule]) -> String {
    let mut merged: Vec<PolicyRule> = Vec::new();
    for rule in rules {
        let simple = list(&rule.api_groups).len() == 1
            && list(&rule.resources).len() == 1
            && list(&rule.resource_names).len() <= 1
            && list(&rule.non_resource_urls).is_empty();
        let same = merged.iter_mut().find(|m| {
            simple
                && m.api_groups == rule.api_groups
                && m.resources == rule.resources
                && m.resource_names == rule.resource_names
                && list(&m.non_resource_urls).is_empty()
        });
        match same {
            Some(m) => {
                for v in &rule.verbs {
                    if !has(&m.verbs, v) {
                        m.verbs.push(v.clone());
                    }
                }
            }
            None => merged.push(rule.clone()),
        }
    }
    let quoted = |l: &[String]| {
        let items: Vec<String> = l.iter().map(|s| format!("{s:?}")).collect();
        format!("[{}]", items.join(" "))
    };
    let mut out = String::new();
    for (i, r) in merged.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let mut parts = Vec::new();
        if !list(&r.api_groups).is_empty() {
            parts.push(format!("APIGroups:{}", quoted(list(&r.api_groups))));
        }
        if !list(&r.resources).is_empty() {
            parts.push(format!("Resources:{}", quoted(list(&r.resources))));
        }
        if !list(&r.resource_names).is_empty() {
            parts.push(format!("ResourceNames:{}", quoted(list(&r.resource_names))));
        }
        if !list(&r.non_resource_urls).is_empty() {
            parts.push(format!(
                "NonResourceURLs:{}",
                quoted(list(&r.non_resource_urls))
            ));
        }
        parts.push(format!("Verbs:{}", quoted(&r.verbs)));
        let _ = write!(out, "{{{}}}", parts.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn rule(verbs: &[&str], groups: &[&str], resources: &[&str], names: &[&str]) -> PolicyRule {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        PolicyRule {
            verbs: v(verbs),
            api_groups: Some(v(groups)),
            resources: Some(v(resources)),
            resource_names: (!names.is_empty()).then(|| v(names)),
            non_resource_urls: None,
        }
    }

    fn attrs(
        verb: &str,
        ns: &str,
        group: &str,
        resource: &str,
        sub: &str,
        name: &str,
    ) -> Attributes {
        Attributes {
            verb: verb.into(),
            namespace: ns.into(),
            api_group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            name: name.into(),
            resource_request: true,
            ..Attributes::default()
        }
    }

    fn subject(kind: &str, name: &str, ns: Option<&str>) -> Subject {
        Subject {
            kind: kind.into(),
            name: name.into(),
            namespace: ns.map(str::to_string),
            api_group: None,
        }
    }

    fn policy() -> Policy {
        let mut p = Policy::default();
        p.add_cluster_role(ClusterRole {
            metadata: ObjectMeta {
                name: Some("edit".into()),
                ..ObjectMeta::default()
            },
            rules: Some(vec![
                rule(
                    &["get", "list", "create"],
                    &["apps"],
                    &["deployments", "deployments/scale"],
                    &[],
                ),
                rule(&["get"], &[""], &["configmaps"], &["app-config"]),
                rule(&["get"], &[""], &["*/status"], &[]),
            ]),
            ..ClusterRole::default()
        });
        p.add_role_binding(RoleBinding {
            metadata: ObjectMeta {
                name: Some("dev-edit".into()),
                namespace: Some("dev".into()),
                ..ObjectMeta::default()
            },
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "ClusterRole".into(),
                name: "edit".into(),
            },
            subjects: Some(vec![
                subject("Group", "dev", None),
                subject("ServiceAccount", "builder", None),
            ]),
        });
        p.add_cluster_role_binding(ClusterRoleBinding {
            metadata: ObjectMeta {
                name: Some("dangling".into()),
                ..ObjectMeta::default()
            },
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "ClusterRole".into(),
                name: "missing".into(),
            },
            subjects: Some(vec![subject("User", "alice", None)]),
        });
        p
    }

    #[test]
    fn bindings_grant_their_roles_rules_in_their_namespace_only() {
        let p = policy();
        let alice = UserInfo::new("alice", &["dev"]);
        assert_eq!(
            p.authorize(&alice, &attrs("create", "dev", "apps", "deployments", "", "")),
            Some(
                "RBAC: allowed by RoleBinding \"dev-edit/dev\" of ClusterRole \"edit\" to Group \"dev\""
                    .into()
            )
        );
        assert!(
            p.authorize(
                &alice,
                &attrs("create", "default", "apps", "deployments", "", "")
            )
            .is_none()
        );
        assert!(
            p.authorize(
                &alice,
                &attrs("delete", "dev", "apps", "deployments", "", "")
            )
            .is_none()
        );
        assert!(
            p.authorize(
                &alice,
                &attrs("get", "dev", "apps", "deployments", "scale", "web")
            )
            .is_some()
        );
        assert!(
            p.authorize(
                &alice,
                &attrs("get", "dev", "", "configmaps", "", "app-config")
            )
            .is_some()
        );
        assert!(
            p.authorize(&alice, &attrs("get", "dev", "", "configmaps", "", "other"))
                .is_none()
        );
        assert!(
            p.authorize(&alice, &attrs("get", "dev", "", "pods", "status", "p"))
                .is_some()
        );
        assert!(
            p.authorize(&alice, &attrs("get", "dev", "", "pods", "", "p"))
                .is_none()
        );
        let sa = UserInfo::service_account("dev", "builder", "uid");
        let reason = p
            .authorize(&sa, &attrs("list", "dev", "apps", "deployments", "", ""))
            .unwrap();
        assert!(
            reason.ends_with("to ServiceAccount \"builder/dev\""),
            "{reason}"
        );
        let other_sa = UserInfo::service_account("prod", "builder", "uid");
        assert!(
            p.authorize(
                &other_sa,
                &attrs("list", "dev", "apps", "deployments", "", "")
            )
            .is_none()
        );
        let (rules, errors) = p.rules_for(&alice, "dev");
        assert_eq!(rules.len(), 3);
        assert_eq!(
            errors,
            vec!["clusterrole.rbac.authorization.k8s.io \"missing\" not found"]
        );
    }

    #[test]
    fn non_resource_urls_match_exactly_or_by_a_trailing_star() {
        let r = PolicyRule {
            verbs: vec!["get".into()],
            non_resource_urls: Some(vec!["/healthz".into(), "/apis/*".into()]),
            ..PolicyRule::default()
        };
        let get = |path: &str| Attributes {
            verb: "get".into(),
            path: path.into(),
            ..Attributes::default()
        };
        assert!(rule_allows(&r, &get("/healthz")));
        assert!(rule_allows(&r, &get("/apis/apps/v1")));
        assert!(!rule_allows(&r, &get("/healthz/etcd")));
        assert!(!rule_allows(&r, &get("/api")));
    }

    #[test]
    fn covering_is_checked_per_verb_group_resource_and_name() {
        let owner = vec![
            rule(
                &["get", "list"],
                &["", "apps"],
                &["pods", "deployments"],
                &[],
            ),
            rule(&["update"], &[""], &["*/status"], &[]),
            rule(&["delete"], &[""], &["configmaps"], &["a", "b"]),
        ];
        assert!(covers(&owner, &[rule(&["get"], &["apps"], &["deployments"], &[])]).is_ok());
        assert!(covers(&owner, &[rule(&["update"], &[""], &["pods/status"], &[])]).is_ok());
        assert!(covers(&owner, &[rule(&["delete"], &[""], &["configmaps"], &["a"])]).is_ok());
        assert!(covers(&owner, &[rule(&["delete"], &[""], &["configmaps"], &[])]).is_err());
        let missing = covers(
            &owner,
            &[rule(&["get", "create", "delete"], &[""], &["pods"], &[])],
        )
        .unwrap_err();
        assert_eq!(
            compact_string(&missing),
            "{APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"create\" \"delete\"]}"
        );
        let star = vec![rule(&["*"], &["*"], &["*"], &[])];
        assert!(covers(&star, &owner).is_ok());
    }
}

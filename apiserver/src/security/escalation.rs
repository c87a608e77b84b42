//! RBAC's escalation prevention on role and binding writes (upstream's policy-based role and
//! binding storage): a user may write a role only with rules they hold themselves, or with
//! `escalate` on it; and bind a role only if they hold its rules, or have `bind` on it.

use std::sync::Arc;

use k8s_openapi::api::rbac::v1::{PolicyRule, RoleRef};
use kelp_auth::UserInfo;
use kelp_auth::rbac::{self, Attributes};
use serde_json::Value;

use crate::error::ApiError;
use crate::handlers::Ctx;
use crate::registry::Resource;

use super::{REQUESTER, Security};

const GROUP: &str = "rbac.authorization.k8s.io";

/// Checks a write the requester makes (the task's [`REQUESTER`]; writes without one are the
/// API server's own).
pub async fn check_write(
    ctx: &Ctx,
    r: &Resource,
    ns: Option<&str>,
    old: Option<&Value>,
    new: &Value,
) -> Result<(), ApiError> {
    let (Some(security), Ok(user)) = (ctx.security.as_deref(), REQUESTER.try_with(Arc::clone))
    else {
        return Ok(());
    };
    if r.group != GROUP || user.in_group(kelp_auth::MASTERS) {
        return Ok(());
    }
    let namespace = if r.namespaced { ns.unwrap_or("") } else { "" };
    let name = new
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    match r.kind {
        "Role" | "ClusterRole" => {
            if old.is_some_and(|o| {
                o.get("rules") == new.get("rules")
                    && o.get("aggregationRule") == new.get("aggregationRule")
            }) {
                return Ok(());
            }
            let escalate = verb_on(security, &user, "escalate", r.plural, namespace, name).await;
            if escalate {
                return Ok(());
            }
            if new.get("aggregationRule").is_some_and(|a| !a.is_null()) {
                return Err(ApiError::forbidden(
                    GROUP,
                    r.plural,
                    name,
                    "must have cluster-admin privileges to use the aggregationRule",
                ));
            }
            let rules: Vec<PolicyRule> = new
                .get("rules")
                .cloned()
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default();
            confirm_no_escalation(security, &user, namespace, &rules)
                .map_err(|why| ApiError::forbidden(GROUP, r.plural, name, &why))
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            let Some(role_ref) = new
                .get("roleRef")
                .cloned()
                .and_then(|v| serde_json::from_value::<RoleRef>(v).ok())
            else {
                return Ok(()); // validation reports the missing roleRef
            };
            if old.is_some_and(|o| {
                o.get("roleRef") == new.get("roleRef") && o.get("subjects") == new.get("subjects")
            }) {
                return Ok(());
            }
            let plural = if role_ref.kind == "ClusterRole" {
                "clusterroles"
            } else {
                "roles"
            };
            if verb_on(security, &user, "bind", plural, namespace, &role_ref.name).await {
                return Ok(());
            }
            let policy = security.policy();
            let rules = policy
                .role_rules(&role_ref, namespace)
                .map(<[PolicyRule]>::to_vec)
                .map_err(|e| ApiError::forbidden(GROUP, r.plural, name, &e))?;
            confirm_no_escalation(security, &user, namespace, &rules)
                .map_err(|why| ApiError::forbidden(GROUP, r.plural, name, &why))
        }
        _ => Ok(()),
    }
}

async fn verb_on(
    security: &Security,
    user: &UserInfo,
    verb: &str,
    plural: &str,
    namespace: &str,
    name: &str,
) -> bool {
    let a = Attributes {
        verb: verb.into(),
        api_group: GROUP.into(),
        resource: plural.into(),
        namespace: namespace.into(),
        name: name.into(),
        resource_request: true,
        ..Attributes::default()
    };
    security.authorize(user, &a).await.allowed
}

/// Upstream's ConfirmNoEscalation: the user's own rules in the namespace must cover `rules`.
fn confirm_no_escalation(
    security: &Security,
    user: &UserInfo,
    namespace: &str,
    rules: &[PolicyRule],
) -> Result<(), String> {
    let (owned, errors) = security.policy().rules_for(user, namespace);
    let Err(missing) = rbac::covers(&owned, rules) else {
        return Ok(());
    };
    let groups: Vec<String> = user.groups.iter().map(|g| format!("{g:?}")).collect();
    let mut message = format!(
        "user {:?} (groups=[{}]) is attempting to grant RBAC permissions not currently held:\n{}",
        user.name,
        groups.join(" "),
        rbac::compact_string(&missing)
    );
    if !errors.is_empty() {
        message.push_str(&format!("; resolution errors: [{}]", errors.join(" ")));
    }
    Err(message)
}

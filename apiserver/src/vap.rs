//! ValidatingAdmissionPolicy (admissionregistration.k8s.io/v1): policies of CEL validations,
//! bound to what they apply to by ValidatingAdmissionPolicyBindings with Deny, Warn or Audit
//! actions, evaluated through kube-cel with `object`, `oldObject`, `request`, `params` and
//! `namespaceObject` bound, after the policy's `matchConditions`. Not yet: `variables`,
//! `auditAnnotations`.

use std::sync::Arc;

use kube_cel::{VapEvaluator, VapExpression};
use serde_json::Value;

use crate::cache::{Derived, WatchCache, parsed};
use crate::error::ApiError;
use crate::webhook::Review;

const POLICIES: &str = "/registry/validatingadmissionpolicies/";
const BINDINGS: &str = "/registry/validatingadmissionpolicybindings/";

#[derive(Default)]
struct Index {
    /// (binding, its policy), bindings in name order.
    bound: Vec<(Value, Value)>,
}

pub struct Policies {
    index: Derived<Index>,
}

fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// Each binding with the policy it names (bindings in name order; a binding to a missing
/// policy binds nothing).
fn build_index(cache: &WatchCache) -> Index {
    let policies: Vec<Value> = parsed(cache, POLICIES);
    let bound = parsed::<Value>(cache, BINDINGS)
        .into_iter()
        .filter_map(|b| {
            let policy = policies
                .iter()
                .find(|p| text(p, "/metadata/name") == text(&b, "/spec/policyName"))?;
            Some((b, policy.clone()))
        })
        .collect();
    Index { bound }
}

impl Policies {
    pub fn new(cache: Arc<WatchCache>) -> Policies {
        Policies {
            index: Derived::new(cache, &[POLICIES, BINDINGS], build_index),
        }
    }

    fn index(&self) -> Arc<Index> {
        self.index.current()
    }

    /// Evaluates every bound policy that matches. `params` finds a binding's parameter object
    /// (by the policy's paramKind and the binding's paramRef).
    pub async fn validate<F, Fut>(
        &self,
        review: &Review<'_>,
        obj: &Value,
        params: F,
    ) -> Result<Vec<String>, ApiError>
    where
        F: Fn(Value, Value) -> Fut,
        Fut: std::future::Future<Output = Option<Value>>,
    {
        let index = self.index();
        let mut warnings = Vec::new();
        for (binding, policy) in &index.bound {
            let constraints = &policy["spec"]["matchConstraints"];
            let as_rules = |m: &Value| {
                serde_json::json!({
                    "rules": m.get("resourceRules").cloned().unwrap_or(Value::Null),
                    "namespaceSelector": m.get("namespaceSelector").cloned().unwrap_or(Value::Null),
                    "objectSelector": m.get("objectSelector").cloned().unwrap_or(Value::Null),
                })
            };
            if !crate::webhook::matches(&as_rules(constraints), review, obj) {
                continue;
            }
            if let Some(m) = binding
                .pointer("/spec/matchResources")
                .filter(|m| m.get("resourceRules").is_some())
                && !crate::webhook::matches(&as_rules(m), review, obj)
            {
                continue;
            }
            let policy_name = text(policy, "/metadata/name");
            let what = format!("ValidatingAdmissionPolicy '{policy_name}'");
            if !crate::webhook::conditions_hold(&policy["spec"], &what, review, obj)? {
                continue;
            }
            let binding_name = text(binding, "/metadata/name");
            let fail_open = text(policy, "/spec/failurePolicy") == "Ignore";
            let param = match (
                policy.pointer("/spec/paramKind"),
                binding.pointer("/spec/paramRef"),
            ) {
                (Some(kind), Some(reference)) => {
                    match params(kind.clone(), reference.clone()).await {
                        Some(p) => Some(p),
                        None if text(binding, "/spec/paramRef/parameterNotFoundAction")
                            == "Allow" =>
                        {
                            continue;
                        }
                        None if fail_open => continue,
                        None => {
                            return Err(ApiError::forbidden(
                                review.r.group,
                                review.r.plural,
                                review.name,
                                &format!(
                                    "policy '{policy_name}' with binding '{binding_name}' denied request: failed to configure binding: no params found for policy binding with `Deny` parameterNotFoundAction"
                                ),
                            ));
                        }
                    }
                }
                _ => None,
            };
            let mut builder = VapEvaluator::builder()
                .object(obj.clone())
                .request(crate::webhook::cel_request(review));
            if let Some(old) = review.old {
                builder = builder.old_object(old.clone());
            }
            if let Some(p) = param {
                builder = builder.params(p);
            }
            if let Some(ns) = review.namespace {
                builder = builder.namespace_object(ns.clone());
            }
            let evaluator = builder.build();
            let validations: Vec<&Value> = policy
                .pointer("/spec/validations")
                .and_then(Value::as_array)
                .map(|v| v.iter().collect())
                .unwrap_or_default();
            let expressions: Vec<VapExpression> = validations
                .iter()
                .map(|v| VapExpression {
                    expression: text(v, "/expression").to_string(),
                    message: v
                        .get("message")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .or_else(|| Some(format!("failed expression: {}", text(v, "/expression")))),
                    message_expression: v
                        .get("messageExpression")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                })
                .collect();
            let actions: Vec<&str> = binding
                .pointer("/spec/validationActions")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            for (result, validation) in evaluator.evaluate(&expressions).iter().zip(&validations) {
                if result.passed {
                    continue;
                }
                let message = result.message.clone().unwrap_or_default();
                let evaluation_error = message.starts_with("evaluation error")
                    || message.starts_with("failed to compile")
                    || message.starts_with("expression returned non-boolean");
                if evaluation_error && fail_open {
                    continue;
                }
                if actions.contains(&"Warn") {
                    warnings.push(format!(
                        "Validation failed for ValidatingAdmissionPolicy '{policy_name}' with binding '{binding_name}': {message}"
                    ));
                }
                if actions.contains(&"Deny") {
                    let reason = match text(validation, "/reason") {
                        "" | "Invalid" => "Invalid",
                        "Forbidden" => "Forbidden",
                        "Unauthorized" => "Unauthorized",
                        "RequestEntityTooLarge" => "RequestEntityTooLarge",
                        _ => "Invalid",
                    };
                    let code = match reason {
                        "Forbidden" => 403,
                        "Unauthorized" => 401,
                        "RequestEntityTooLarge" => 413,
                        _ => 422,
                    };
                    let mut e = ApiError::bad_request(format!(
                        "ValidatingAdmissionPolicy '{policy_name}' with binding '{binding_name}' denied request: {message}"
                    ));
                    e.code = axum::http::StatusCode::from_u16(code)
                        .unwrap_or(axum::http::StatusCode::UNPROCESSABLE_ENTITY);
                    e.reason = reason;
                    return Err(e);
                }
            }
        }
        Ok(warnings)
    }
}

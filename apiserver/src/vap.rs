//! ValidatingAdmissionPolicy (admissionregistration.k8s.io/v1): policies of CEL validations,
//! bound to what they apply to by ValidatingAdmissionPolicyBindings with Deny, Warn or Audit
//! actions, evaluated through kube-cel with `object`, `oldObject`, `request`, `params` and
//! `namespaceObject` bound, and the policy's `variables` (`variables.<name>`), after the
//! policy's `matchConditions`; Audit actions and `auditAnnotations` go to the audit log.

use std::collections::HashMap;
use std::sync::Arc;

use kube_cel::KubeCelExt;
use kube_cel::cel::objects::{Key, Map};
use kube_cel::cel::{Context, Program, Value as CelValue};
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
            let ctx = activation(review, obj, param.as_ref(), &policy["spec"]);
            let actions: Vec<&str> = binding
                .pointer("/spec/validationActions")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let validations = policy
                .pointer("/spec/validations")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let mut audit_failures = Vec::new();
            for (index, validation) in validations.iter().enumerate() {
                let message = match check(&ctx, validation) {
                    Outcome::Passed => continue,
                    Outcome::Failed(message) => message,
                    Outcome::Error(_) if fail_open => continue,
                    Outcome::Error(message) => message,
                };
                if actions.contains(&"Audit") {
                    audit_failures.push(serde_json::json!({
                        "message": message, "policy": policy_name, "binding": binding_name,
                        "expressionIndex": index, "validationActions": actions,
                    }));
                }
                if actions.contains(&"Warn") {
                    warnings.push(format!(
                        "Validation failed for ValidatingAdmissionPolicy '{policy_name}' with binding '{binding_name}': {message}"
                    ));
                }
                if actions.contains(&"Deny") {
                    let reason = match text(validation, "/reason") {
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
            if !audit_failures.is_empty() {
                crate::security::audit_annotate(
                    "validation.policy.admission.k8s.io/validation_failure",
                    &Value::Array(audit_failures).to_string(),
                );
            }
            for annotation in policy
                .pointer("/spec/auditAnnotations")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let expression = text(annotation, "/valueExpression");
                if let Ok(CelValue::String(value)) = evaluate(&ctx, expression) {
                    let key = format!("{policy_name}/{}", text(annotation, "/key"));
                    crate::security::audit_annotate(&key, &value);
                }
            }
        }
        Ok(warnings)
    }
}

/// The CEL activation of one admission under one policy: `object`, `oldObject`, `request`,
/// `params`, `namespaceObject` (null where there is none), and `variables`, each variable
/// evaluated once, in order, with the ones before it in scope. A variable that fails stays
/// unset, so only the expressions that use it fail (upstream evaluates them lazily, to the
/// same effect).
pub(crate) fn activation(
    review: &Review<'_>,
    obj: &Value,
    params: Option<&Value>,
    spec: &Value,
) -> Context<'static> {
    let mut ctx = Context::default();
    ctx.register_all();
    let null = Value::Null;
    ctx.add_variable_from_value("object", to_cel(obj));
    ctx.add_variable_from_value("oldObject", to_cel(review.old.unwrap_or(&null)));
    ctx.add_variable_from_value("request", to_cel(&request(review)));
    ctx.add_variable_from_value("params", to_cel(params.unwrap_or(&null)));
    ctx.add_variable_from_value("namespaceObject", to_cel(review.namespace.unwrap_or(&null)));
    let mut variables: HashMap<Key, CelValue> = HashMap::new();
    let bind = |ctx: &mut Context<'static>, vars: &HashMap<Key, CelValue>| {
        ctx.add_variable_from_value(
            "variables",
            CelValue::Map(Map {
                map: Arc::new(vars.clone()),
            }),
        );
    };
    bind(&mut ctx, &variables);
    for variable in spec
        .get("variables")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Ok(value) = evaluate(&ctx, text(variable, "/expression")) {
            variables.insert(
                Key::String(Arc::new(text(variable, "/name").to_string())),
                value,
            );
            bind(&mut ctx, &variables);
        }
    }
    ctx
}

/// A JSON value as CEL sees it: integers are `int` (JSON has no unsigned type; serde would
/// make positive ones `uint`, which CEL does not mix with `int`).
fn to_cel(v: &Value) -> CelValue {
    match v {
        Value::Null => CelValue::Null,
        Value::Bool(b) => CelValue::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => CelValue::Int(i),
            (None, Some(u)) => CelValue::UInt(u),
            _ => CelValue::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => CelValue::String(Arc::new(s.clone())),
        Value::Array(items) => CelValue::List(Arc::new(items.iter().map(to_cel).collect())),
        Value::Object(members) => CelValue::Map(Map {
            map: Arc::new(
                members
                    .iter()
                    .map(|(k, v)| (Key::String(Arc::new(k.clone())), to_cel(v)))
                    .collect(),
            ),
        }),
    }
}

/// The `request` variable: the admission request's attributes as an AdmissionReview has them.
fn request(review: &Review<'_>) -> Value {
    let user = review.user.cloned().unwrap_or_default();
    let (g, v, r) = (review.r.group, review.r.version, review.r.plural);
    serde_json::json!({
        "kind": {"group": g, "version": v, "kind": review.r.kind},
        "resource": {"group": g, "version": v, "resource": r},
        "subResource": review.subresource,
        "requestKind": {"group": g, "version": v, "kind": review.r.kind},
        "requestResource": {"group": g, "version": v, "resource": r},
        "requestSubResource": review.subresource,
        "name": review.name,
        "namespace": review.ns.unwrap_or(""),
        "operation": review.operation,
        "userInfo": {"username": user.name, "uid": user.uid, "groups": user.groups, "extra": user.extra},
        "dryRun": review.dry_run,
    })
}

pub(crate) fn evaluate(ctx: &Context<'static>, expression: &str) -> Result<CelValue, String> {
    let program = Program::compile(expression).map_err(|e| format!("compilation failed: {e}"))?;
    program
        .execute(ctx)
        .map_err(|e| format!("expression '{expression}' resulted in error: {e}"))
}

enum Outcome {
    Passed,
    /// The expression was false: the validation's message.
    Failed(String),
    /// The expression could not be evaluated (the failure policy decides).
    Error(String),
}

/// One validation: its expression, then (if false) its message as upstream picks it: the
/// messageExpression's non-empty result, else the message, else the expression quoted.
fn check(ctx: &Context<'static>, validation: &Value) -> Outcome {
    let expression = text(validation, "/expression");
    match evaluate(ctx, expression) {
        Ok(CelValue::Bool(true)) => Outcome::Passed,
        Ok(CelValue::Bool(false)) => {
            let computed = validation
                .get("messageExpression")
                .and_then(Value::as_str)
                .and_then(|m| match evaluate(ctx, m) {
                    Ok(CelValue::String(s)) if !s.trim().is_empty() => Some(s.to_string()),
                    _ => None,
                });
            let message = computed
                .or_else(|| {
                    validation
                        .get("message")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .unwrap_or_else(|| format!("failed expression: {expression}"));
            Outcome::Failed(message)
        }
        Ok(other) => Outcome::Error(format!(
            "expression '{expression}' resulted in error: expected a bool, got {other:?}"
        )),
        Err(e) => Outcome::Error(e),
    }
}

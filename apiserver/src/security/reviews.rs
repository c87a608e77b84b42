//! What authentication.k8s.io and authorization.k8s.io answer: TokenReview,
//! SelfSubjectReview (`kubectl auth whoami`), the access reviews (`kubectl auth can-i`), the
//! rules review (`can-i --list`) and TokenRequest (`kubectl create token`). Nothing is stored.

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use kelp_auth::UserInfo;
use kelp_auth::rbac::Attributes;
use kelp_auth::serviceaccount::{ObjectRef, TokenSpec};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::handlers::{decode_body, json_response, read_body};
use crate::request::Target;

use super::Security;

/// Serves the target if it is a review or a token request; None otherwise.
pub async fn serve(
    security: &Security,
    user: &UserInfo,
    target: &Target,
    method: &Method,
    headers: &HeaderMap,
    body: &Bytes,
) -> Option<Result<Response, ApiError>> {
    let r = target.resource;
    if r.plural == "serviceaccounts" && r.group.is_empty() {
        return match (target.subresource.as_deref(), target.name.as_deref()) {
            (Some("token"), Some(name)) if method == Method::POST => {
                let ns = target.namespace.as_deref().unwrap_or("default");
                Some(token_request(security, user, ns, name, headers, body).await)
            }
            _ => None,
        };
    }
    if !crate::registry::reviews::is_review(r) {
        return None;
    }
    if method != Method::POST || target.name.is_some() {
        return Some(Err(ApiError::method_not_allowed(format!(
            "{method} is not supported on {}",
            r.plural
        ))));
    }
    if !crate::handlers::accepts_plain_object(headers) {
        return Some(Err(ApiError::not_acceptable()));
    }
    let review = match read_body(r, headers, body) {
        Ok(v) => v,
        Err(e) => return Some(Err(e)),
    };
    let ns = target.namespace.as_deref();
    let answered = match r.plural {
        "selfsubjectreviews" => Ok(with_status(review, json!({"userInfo": user.to_json()}))),
        "tokenreviews" => token_review(security, review).await,
        "selfsubjectaccessreviews" => access_review(security, user, review, None).await,
        "subjectaccessreviews" => {
            let subject = subject_of(&review);
            match subject {
                Ok(s) => access_review(security, &s, review, None).await,
                Err(e) => Err(e),
            }
        }
        "localsubjectaccessreviews" => match subject_of(&review) {
            Ok(s) => access_review(security, &s, review, ns).await,
            Err(e) => Err(e),
        },
        "selfsubjectrulesreviews" => rules_review(security, user, review),
        _ => Err(ApiError::no_route()),
    };
    Some(answered.map(|v| json_response(StatusCode::CREATED, &v)))
}

fn with_status(mut review: Value, status: Value) -> Value {
    if !review["metadata"].is_object() {
        review["metadata"] = json!({});
    }
    review["metadata"]["creationTimestamp"] = Value::Null;
    review["status"] = status;
    review
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

async fn token_review(security: &Security, review: Value) -> Result<Value, ApiError> {
    let token = text(&review, "/spec/token").to_string();
    if token.is_empty() {
        return Err(ApiError::bad_request(
            "token is required for TokenReview in authentication",
        ));
    }
    let wanted = strings(review.pointer("/spec/audiences"));
    let audiences = if wanted.is_empty() {
        security.service_accounts.audiences.clone()
    } else {
        wanted
            .iter()
            .filter(|a| security.service_accounts.audiences.contains(a))
            .cloned()
            .collect()
    };
    let status = match security.authenticate_token(&token, Some(&wanted)).await {
        Ok(Some(user)) => json!({
            "authenticated": true,
            "user": user.authenticated().to_json(),
            "audiences": audiences,
        }),
        Ok(None) => json!({"user": {}, "error": "invalid bearer token"}),
        Err(e) => json!({"user": {}, "error": e}),
    };
    Ok(with_status(review, status))
}

/// The user a SubjectAccessReview asks about.
fn subject_of(review: &Value) -> Result<UserInfo, ApiError> {
    let spec = &review["spec"];
    let user = UserInfo {
        name: text(spec, "/user").to_string(),
        uid: text(spec, "/uid").to_string(),
        groups: strings(spec.get("groups")),
        extra: spec
            .get("extra")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), strings(Some(v))))
                    .collect()
            })
            .unwrap_or_default(),
    };
    if user.name.is_empty() && user.groups.is_empty() {
        return Err(ApiError::invalid(
            "authorization.k8s.io",
            "SubjectAccessReview",
            "",
            vec![(
                "spec.user".into(),
                "Invalid value: \"\": at least one of user or group must be specified".into(),
            )],
        ));
    }
    Ok(user)
}

async fn access_review(
    security: &Security,
    user: &UserInfo,
    review: Value,
    local_namespace: Option<&str>,
) -> Result<Value, ApiError> {
    let kind = review["kind"]
        .as_str()
        .unwrap_or("SubjectAccessReview")
        .to_string();
    let spec = &review["spec"];
    let resource = spec.get("resourceAttributes").filter(|v| v.is_object());
    let non_resource = spec.get("nonResourceAttributes").filter(|v| v.is_object());
    let invalid = |field: &str, message: &str| {
        ApiError::invalid(
            "authorization.k8s.io",
            &kind,
            "",
            vec![(field.to_string(), message.to_string())],
        )
    };
    let a = match (resource, non_resource) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "spec.nonResourceAttributes",
                "Invalid value: \"null\": cannot be specified in combination with resourceAttributes",
            ));
        }
        (None, None) => {
            return Err(invalid(
                "spec.resourceAttributes",
                "Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified",
            ));
        }
        (Some(ra), None) => Attributes {
            verb: text(ra, "/verb").into(),
            namespace: text(ra, "/namespace").into(),
            api_group: text(ra, "/group").into(),
            api_version: text(ra, "/version").into(),
            resource: text(ra, "/resource").into(),
            subresource: text(ra, "/subresource").into(),
            name: text(ra, "/name").into(),
            resource_request: true,
            ..Attributes::default()
        },
        (None, Some(na)) => {
            if local_namespace.is_some() {
                return Err(invalid(
                    "spec.nonResourceAttributes",
                    "Invalid value: \"null\": disallowed on this kind of request",
                ));
            }
            Attributes {
                verb: text(na, "/verb").into(),
                path: text(na, "/path").into(),
                ..Attributes::default()
            }
        }
    };
    if let Some(ns) = local_namespace
        && a.namespace != ns
    {
        return Err(invalid(
            "spec.resourceAttributes.namespace",
            &format!(
                "Invalid value: {:?}: must match metadata.namespace",
                a.namespace
            ),
        ));
    }
    let decision = security.authorize(user, &a).await;
    let mut status = json!({"allowed": decision.allowed});
    if !decision.reason.is_empty() {
        status["reason"] = json!(decision.reason);
    }
    Ok(with_status(review, status))
}

fn rules_review(security: &Security, user: &UserInfo, review: Value) -> Result<Value, ApiError> {
    let ns = text(&review, "/spec/namespace").to_string();
    if ns.is_empty() {
        return Err(ApiError::bad_request("no namespace on request"));
    }
    // system:masters contributes no rules of its own (upstream's privileged-group authorizer).
    let (rules, errors) = security.policy().rules_for(user, &ns);
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    for rule in rules {
        match &rule.non_resource_urls {
            Some(urls) if !urls.is_empty() => {
                non_resource_rules.push(json!({"verbs": rule.verbs, "nonResourceURLs": urls}))
            }
            _ => {
                let mut r = json!({
                    "verbs": rule.verbs,
                    "apiGroups": rule.api_groups.unwrap_or_default(),
                    "resources": rule.resources.unwrap_or_default(),
                });
                if let Some(names) = rule.resource_names.filter(|n| !n.is_empty()) {
                    r["resourceNames"] = json!(names);
                }
                resource_rules.push(r);
            }
        }
    }
    let mut status = json!({
        "resourceRules": resource_rules,
        "nonResourceRules": non_resource_rules,
        "incomplete": !errors.is_empty(),
    });
    if !errors.is_empty() {
        status["evaluationError"] = json!(errors.join(", "));
    }
    Ok(with_status(review, status))
}

/// Default and bounds of a TokenRequest's expirationSeconds (upstream's).
const DEFAULT_EXPIRATION: i64 = 3600;
const MIN_EXPIRATION: i64 = 600;
const MAX_EXPIRATION: i64 = 1 << 32;

async fn token_request(
    security: &Security,
    user: &UserInfo,
    ns: &str,
    name: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let mut request = decode_body(headers, body)?;
    if request.get("kind").and_then(Value::as_str) != Some("TokenRequest") {
        return Err(ApiError::bad_request(
            "the body of a token request must be a TokenRequest",
        ));
    }
    let sa = security
        .lookup("serviceaccounts", ns, name)
        .await
        .ok_or_else(|| ApiError::not_found("", "serviceaccounts", name))?;
    let spec = request.get("spec").cloned().unwrap_or(json!({}));
    let expiration = spec
        .get("expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(DEFAULT_EXPIRATION);
    let invalid = |message: String| {
        ApiError::invalid(
            "authentication.k8s.io",
            "TokenRequest",
            name,
            vec![("spec.expirationSeconds".into(), message)],
        )
    };
    if expiration < MIN_EXPIRATION {
        return Err(invalid(format!(
            "Invalid value: {expiration}: may not specify a duration less than 10 minutes"
        )));
    }
    if expiration > MAX_EXPIRATION {
        return Err(invalid(format!(
            "Invalid value: {expiration}: may not specify a duration larger than 2^32 seconds"
        )));
    }
    let mut audiences = strings(spec.get("audiences"));
    if audiences.is_empty() {
        audiences = security.service_accounts.audiences.clone();
    }
    let (mut pod, mut secret, mut node) = (None, None, None);
    if let Some(bound) = spec.get("boundObjectRef").filter(|b| b.is_object()) {
        let kind = text(bound, "/kind");
        let bound_name = text(bound, "/name");
        let plural = match kind {
            "Pod" => "pods",
            "Secret" => "secrets",
            "Node" => "nodes",
            other => {
                return Err(ApiError::bad_request(format!(
                    "cannot bind token to object of type {other}"
                )));
            }
        };
        let obj = if plural == "nodes" {
            security.lookup_cluster("nodes", bound_name).await
        } else {
            security.lookup(plural, ns, bound_name).await
        }
        .ok_or_else(|| ApiError::not_found("", plural, bound_name))?;
        let uid = super::uid(&obj);
        let wanted = text(bound, "/uid");
        if !wanted.is_empty() && wanted != uid {
            return Err(ApiError::conflict_message(
                "",
                plural,
                bound_name,
                format!(
                    "the UID in the bound object reference ({wanted}) does not match the UID in record. The object might have been deleted and then recreated"
                ),
            ));
        }
        if kind == "Pod" {
            super::node::restrict_token(user, Some(&obj))
                .map_err(|why| ApiError::forbidden("", "serviceaccounts", name, &why))?;
        }
        let reference = ObjectRef {
            name: bound_name.to_string(),
            uid,
        };
        match kind {
            "Pod" => pod = Some(reference),
            "Secret" => secret = Some(reference),
            _ => node = Some(reference),
        }
    }
    if pod.is_none() {
        super::node::restrict_token(user, None)
            .map_err(|why| ApiError::forbidden("", "serviceaccounts", name, &why))?;
    }
    let now = jiff::Timestamp::now().as_second();
    let (token, exp) = security.service_accounts.issue(&TokenSpec {
        namespace: ns,
        service_account: ObjectRef {
            name: name.to_string(),
            uid: super::uid(&sa),
        },
        audiences: &audiences,
        issued_at: now,
        expiration_seconds: expiration,
        pod,
        secret,
        node,
    });
    let expires = jiff::Timestamp::from_second(exp)
        .map(|t| t.to_string())
        .unwrap_or_default();
    request["apiVersion"] = json!("authentication.k8s.io/v1");
    if !request["metadata"].is_object() {
        request["metadata"] = json!({});
    }
    request["metadata"]["name"] = json!(name);
    request["metadata"]["namespace"] = json!(ns);
    request["metadata"]["creationTimestamp"] = Value::Null;
    request["spec"]["audiences"] = json!(audiences);
    request["spec"]["expirationSeconds"] = json!(expiration);
    request["status"] = json!({"token": token, "expirationTimestamp": expires});
    Ok(json_response(StatusCode::CREATED, &request))
}

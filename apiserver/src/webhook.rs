//! Admission webhooks (upstream's MutatingAdmissionWebhook and ValidatingAdmissionWebhook):
//! the configurations come from the watch cache; each matching webhook is sent an
//! `admission.k8s.io/v1` AdmissionReview over HTTPS (verified with its caBundle). Mutating
//! webhooks answer with JSON patches, applied in order; a refusal, or a failed call under
//! `failurePolicy: Fail`, refuses the request.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http_body_util::Full;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};

use crate::cache::{Derived, WatchCache, parsed};
use crate::error::ApiError;
use crate::registry::Resource;
use crate::selector::LabelSelector;

const MUTATING: &str = "/registry/mutatingwebhookconfigurations/";
const VALIDATING: &str = "/registry/validatingwebhookconfigurations/";

/// One webhook of a configuration.
struct Hook {
    spec: Value,
    name: String,
}

#[derive(Default)]
struct Index {
    mutating: Vec<Hook>,
    validating: Vec<Hook>,
}

pub struct Webhooks {
    cache: Arc<WatchCache>,
    index: Derived<Index>,
}

/// What a webhook is asked about.
pub struct Review<'a> {
    pub r: &'a Resource,
    pub ns: Option<&'a str>,
    pub name: &'a str,
    pub subresource: &'a str,
    /// CREATE or UPDATE.
    pub operation: &'a str,
    pub old: Option<&'a Value>,
    /// The object's namespace, for namespace selectors.
    pub namespace: Option<&'a Value>,
    pub user: Option<&'a kelp_auth::UserInfo>,
    pub dry_run: bool,
}

/// The configured webhooks: configurations in name order (the cache's key order), the
/// webhooks of each in theirs.
fn build_index(cache: &WatchCache) -> Index {
    let hooks = |prefix: &str| -> Vec<Hook> {
        parsed::<Value>(cache, prefix)
            .into_iter()
            .flat_map(|c| {
                c.get("webhooks")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            })
            .map(|spec| Hook {
                name: spec
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                spec,
            })
            .collect()
    };
    Index {
        mutating: hooks(MUTATING),
        validating: hooks(VALIDATING),
    }
}

impl Webhooks {
    pub fn new(cache: Arc<WatchCache>) -> Webhooks {
        Webhooks {
            index: Derived::new(cache.clone(), &[MUTATING, VALIDATING], build_index),
            cache,
        }
    }

    fn index(&self) -> Arc<Index> {
        self.index.current()
    }

    /// Runs the mutating webhooks that match, changing `obj` by their patches.
    pub async fn mutate(
        &self,
        review: &Review<'_>,
        obj: &mut Value,
    ) -> Result<Vec<String>, ApiError> {
        let index = self.index();
        let mut warnings = Vec::new();
        // The object as each IfNeeded webhook left it: one changed after it by a later
        // webhook is called once more (upstream's reinvocation; at most one more round).
        let mut left: Vec<(&Hook, Value)> = Vec::new();
        for hook in &index.mutating {
            if self.mutate_with(hook, review, obj, &mut warnings).await?
                && hook.spec.get("reinvocationPolicy").and_then(Value::as_str) == Some("IfNeeded")
            {
                left.push((hook, obj.clone()));
            }
        }
        let changed_since: Vec<&Hook> = left
            .iter()
            .filter(|(_, after)| after != obj)
            .map(|(hook, _)| *hook)
            .collect();
        for hook in changed_since {
            self.mutate_with(hook, review, obj, &mut warnings).await?;
        }
        Ok(warnings)
    }

    /// Calls one mutating webhook if it matches, applying its patch. Whether it was called.
    async fn mutate_with(
        &self,
        hook: &Hook,
        review: &Review<'_>,
        obj: &mut Value,
        warnings: &mut Vec<String>,
    ) -> Result<bool, ApiError> {
        if !matches(&hook.spec, review, obj)
            || !conditions_hold(
                &hook.spec,
                &format!("failed calling webhook {:?}", hook.name),
                review,
                obj,
            )?
        {
            return Ok(false);
        }
        let Some(response) = call(&self.cache, hook, review, obj, warnings).await? else {
            return Ok(true);
        };
        // A delete has no object to patch: its mutating webhooks can only refuse.
        if let Some(patch) = response
            .get("patch")
            .and_then(Value::as_str)
            .filter(|_| review.operation != "DELETE")
        {
            let bytes = STANDARD.decode(patch).map_err(|e| {
                ApiError::internal(format!("Internal error occurred: failed calling webhook {:?}: the patch is not base64: {e}", hook.name))
            })?;
            let patch: json_patch::Patch = serde_json::from_slice(&bytes).map_err(|e| {
                ApiError::internal(format!("Internal error occurred: failed calling webhook {:?}: the patch is not a JSON patch: {e}", hook.name))
            })?;
            json_patch::patch(obj, &patch).map_err(|e| {
                ApiError::internal(format!("Internal error occurred: failed calling webhook {:?}: the patch does not apply: {e}", hook.name))
            })?;
            // What the webhook added is defaulted, as upstream decodes the patched object
            // through the scheme's defaulter.
            (review.r.defaults)(obj);
            if let Some(c) = review.r.custom {
                crate::crd::conform(c, obj);
            }
        }
        Ok(true)
    }

    /// Runs the validating webhooks that match.
    pub async fn validate(
        &self,
        review: &Review<'_>,
        obj: &Value,
    ) -> Result<Vec<String>, ApiError> {
        let index = self.index();
        let mut warnings = Vec::new();
        for hook in &index.validating {
            if matches(&hook.spec, review, obj)
                && conditions_hold(
                    &hook.spec,
                    &format!("failed calling webhook {:?}", hook.name),
                    review,
                    obj,
                )?
            {
                call(&self.cache, hook, review, obj, &mut warnings).await?;
            }
        }
        Ok(warnings)
    }
}

fn strings(v: Option<&Value>) -> Vec<&str> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn any_is(list: &[&str], want: &str) -> bool {
    list.iter().any(|x| *x == "*" || *x == want)
}

/// Whether a rule's resource (`pods`, `pods/status`, `*`, `*/*`, `pods/*`, `*/status`) covers
/// the request's resource and subresource.
fn resource_matches(rule: &str, resource: &str, sub: &str) -> bool {
    let (res, rule_sub) = rule.split_once('/').unwrap_or((rule, ""));
    (res == "*" || res == resource) && (rule_sub == sub || (rule_sub == "*" && !sub.is_empty()))
}

fn selector_matches(selector: Option<&Value>, obj: Option<&Value>) -> bool {
    let Some(selector) = selector.filter(|s| s.as_object().is_some_and(|m| !m.is_empty())) else {
        return true;
    };
    match LabelSelector::from_object(selector) {
        Ok(s) => obj.is_some_and(|o| s.matches(o)),
        Err(_) => false,
    }
}

pub(crate) fn matches(spec: &Value, review: &Review<'_>, obj: &Value) -> bool {
    let r = review.r;
    // Webhook configurations are never sent to webhooks (they could lock themselves out).
    if r.group == "admissionregistration.k8s.io" {
        return false;
    }
    let rule_matches = spec
        .get("rules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|rule| {
            let scope = rule.get("scope").and_then(Value::as_str).unwrap_or("*");
            any_is(&strings(rule.get("operations")), review.operation)
                && any_is(&strings(rule.get("apiGroups")), r.group)
                && any_is(&strings(rule.get("apiVersions")), r.version)
                && strings(rule.get("resources"))
                    .iter()
                    .any(|res| resource_matches(res, r.plural, review.subresource))
                && match scope {
                    "Cluster" => !r.namespaced,
                    "Namespaced" => r.namespaced,
                    _ => true,
                }
        });
    if !rule_matches {
        return false;
    }
    let namespace_labels = if r.group.is_empty() && r.kind == "Namespace" {
        // A namespace being deleted is matched by its own labels (the old object).
        Some(if obj.is_null() {
            review.old.unwrap_or(obj)
        } else {
            obj
        })
    } else if r.namespaced {
        review.namespace
    } else {
        None
    };
    let namespace_ok = (!r.namespaced && r.kind != "Namespace")
        || selector_matches(spec.get("namespaceSelector"), namespace_labels);
    let object_selector = spec.get("objectSelector");
    let object_ok = selector_matches(object_selector, Some(obj))
        || review
            .old
            .is_some_and(|o| selector_matches(object_selector, Some(o)));
    namespace_ok && object_ok
}

/// Whether every `matchConditions` CEL expression holds (object, oldObject, request, over
/// the same activation as ValidatingAdmissionPolicy's, without params or variables). One that
/// cannot be evaluated refuses the request unless the failure policy is Ignore (then the
/// webhook or policy is skipped), as upstream. `what` names the webhook or policy.
pub(crate) fn conditions_hold(
    spec: &Value,
    what: &str,
    review: &Review<'_>,
    obj: &Value,
) -> Result<bool, ApiError> {
    let Some(conditions) = spec.get("matchConditions").and_then(Value::as_array) else {
        return Ok(true);
    };
    let ctx = crate::vap::activation(review, obj, None, &Value::Null);
    for condition in conditions {
        let expression = condition
            .get("expression")
            .and_then(Value::as_str)
            .unwrap_or("");
        let message = match crate::vap::evaluate(&ctx, expression) {
            Ok(kube_cel::cel::Value::Bool(true)) => continue,
            Ok(kube_cel::cel::Value::Bool(false)) => return Ok(false),
            Ok(other) => format!(
                "expression '{expression}' resulted in error: expected a bool, got {other:?}"
            ),
            Err(e) => e,
        };
        if spec.get("failurePolicy").and_then(Value::as_str) == Some("Ignore") {
            return Ok(false);
        }
        let name = condition.get("name").and_then(Value::as_str).unwrap_or("");
        return Err(ApiError::internal(format!(
            "Internal error occurred: {what}: failed to evaluate match condition {name:?}: {message}"
        )));
    }
    Ok(true)
}

/// Calls one webhook. Ok(Some(response)): it allowed the request; Ok(None): the call failed
/// and its failure policy ignores that. Err: refused.
async fn call(
    cache: &WatchCache,
    hook: &Hook,
    review: &Review<'_>,
    obj: &Value,
    warnings: &mut Vec<String>,
) -> Result<Option<Value>, ApiError> {
    let spec = &hook.spec;
    let side_effects = spec
        .get("sideEffects")
        .and_then(Value::as_str)
        .unwrap_or("");
    if review.dry_run && !matches!(side_effects, "None" | "NoneOnDryRun") {
        let mut e = ApiError::bad_request(format!(
            "admission webhook {:?} does not support dry run",
            hook.name
        ));
        e.details = None;
        return Err(e);
    }
    let ignore = spec.get("failurePolicy").and_then(Value::as_str) == Some("Ignore");
    let fail = |why: String| -> Result<Option<Value>, ApiError> {
        if ignore {
            tracing::warn!(webhook = %hook.name, error = %why, "webhook failed; ignored by its failurePolicy");
            Ok(None)
        } else {
            Err(ApiError::internal(format!(
                "Internal error occurred: failed calling webhook {:?}: {why}",
                hook.name
            )))
        }
    };
    let uid = uuid::Uuid::new_v4().to_string();
    let version = if strings(spec.get("admissionReviewVersions")).contains(&"v1")
        || spec.get("admissionReviewVersions").is_none()
    {
        "admission.k8s.io/v1"
    } else {
        "admission.k8s.io/v1beta1"
    };
    let r = review.r;
    let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
    let gvr = json!({"group": r.group, "version": r.version, "resource": r.plural});
    let options_kind = match review.operation {
        "CREATE" => "CreateOptions",
        "DELETE" => "DeleteOptions",
        _ => "UpdateOptions",
    };
    let mut request = json!({
        "uid": uid,
        "kind": gvk,
        "resource": gvr,
        "requestKind": gvk,
        "requestResource": gvr,
        "name": review.name,
        "operation": review.operation,
        "userInfo": review.user.map(kelp_auth::UserInfo::to_json).unwrap_or(json!({})),
        "object": obj,
        "oldObject": review.old.cloned().unwrap_or(Value::Null),
        "dryRun": review.dry_run,
        "options": {"kind": options_kind, "apiVersion": "meta.k8s.io/v1"},
    });
    if !review.subresource.is_empty() {
        request["subResource"] = json!(review.subresource);
        request["requestSubResource"] = json!(review.subresource);
    }
    if let Some(ns) = review.ns.filter(|_| r.namespaced) {
        request["namespace"] = json!(ns);
    }
    let body = json!({"apiVersion": version, "kind": "AdmissionReview", "request": request});
    let timeout = Duration::from_secs(
        spec.get("timeoutSeconds")
            .and_then(Value::as_u64)
            .unwrap_or(10)
            .clamp(1, 30),
    );
    let client = &spec["clientConfig"];
    let (url, server_name) = match (
        client.get("url").and_then(Value::as_str),
        client.get("service"),
    ) {
        (Some(url), _) => (url.to_string(), None),
        (None, Some(service)) => match resolve(cache, service) {
            Ok((url, name)) => (url, Some(name)),
            Err(e) => return fail(format!("failed to call webhook: {e}")),
        },
        (None, None) => return fail("the webhook has neither clientConfig.url nor service".into()),
    };
    let ca = client
        .get("caBundle")
        .and_then(Value::as_str)
        .and_then(|b| STANDARD.decode(b).ok());
    let answer = match post(
        &url,
        server_name,
        ca.as_deref(),
        serde_json::to_vec(&body).unwrap_or_default(),
        timeout,
    )
    .await
    {
        Ok(bytes) => bytes,
        Err(e) => return fail(format!("failed to call webhook: Post {url:?}: {e}")),
    };
    let Ok(answer) = serde_json::from_slice::<Value>(&answer) else {
        return fail("received invalid webhook response: not an AdmissionReview".into());
    };
    let response = answer.get("response").cloned().unwrap_or(Value::Null);
    let got = response.get("uid").and_then(Value::as_str).unwrap_or("");
    if got != uid {
        return fail(format!("expected response.uid={uid:?}, got {got:?}"));
    }
    warnings.extend(
        strings(response.get("warnings"))
            .into_iter()
            .map(str::to_string),
    );
    if response.get("allowed") == Some(&Value::Bool(true)) {
        return Ok(Some(response));
    }
    Err(denied(&hook.name, response.get("status")))
}

/// Where a webhook's `clientConfig.service` is served: its URL and the name the server's
/// certificate must carry.
fn resolve(cache: &WatchCache, service: &Value) -> Result<(String, String), String> {
    use crate::services::Unresolved;
    let text = |k: &str| service.get(k).and_then(Value::as_str).unwrap_or("");
    let (ns, name) = (text("namespace"), text("name"));
    let port = service.get("port").and_then(Value::as_i64).unwrap_or(443);
    let path = match text("path") {
        "" => "/",
        p => p,
    };
    match crate::services::resolve(cache, ns, name, port) {
        Ok(e) => Ok((format!("https://{}{path}", e.authority), e.server_name)),
        Err(Unresolved::ServiceNotFound) => Err(format!("service \"{ns}/{name}\" not found")),
        Err(Unresolved::ServicePort(_)) => {
            Err(format!("service \"{ns}/{name}\" has no port {port}"))
        }
        Err(_) => Err(format!("no endpoints available for service \"{name}\"")),
    }
}

/// Upstream's ToStatusErr: the webhook's status, its message prefixed with who denied it.
fn denied(name: &str, status: Option<&Value>) -> ApiError {
    let text = |k: &str| {
        status
            .and_then(|s| s.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
    };
    let by = format!("admission webhook {name:?} denied the request");
    let message = match (text("message"), text("reason")) {
        (m, _) if !m.is_empty() => format!("{by}: {m}"),
        (_, r) if !r.is_empty() => format!("{by}: {r}"),
        _ => format!("{by} without explanation"),
    };
    let code = status
        .and_then(|s| s.get("code"))
        .and_then(Value::as_u64)
        .filter(|c| *c >= 400 && *c < 600)
        .unwrap_or(400) as u16;
    let mut e = ApiError::bad_request(message);
    e.code = axum::http::StatusCode::from_u16(code).unwrap_or(axum::http::StatusCode::BAD_REQUEST);
    e.reason = reason(text("reason"));
    e.details = status.and_then(|s| s.get("details")).cloned();
    e
}

/// The Status reasons a webhook may give, as `&'static str` (others are left out).
fn reason(r: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "Unauthorized",
        "Forbidden",
        "NotFound",
        "AlreadyExists",
        "Conflict",
        "Gone",
        "Invalid",
        "ServerTimeout",
        "Timeout",
        "TooManyRequests",
        "BadRequest",
        "MethodNotAllowed",
        "NotAcceptable",
        "RequestEntityTooLarge",
        "UnsupportedMediaType",
        "InternalError",
        "Expired",
        "ServiceUnavailable",
    ];
    KNOWN.iter().find(|k| **k == r).copied().unwrap_or("")
}

/// POSTs JSON over HTTPS, trusting `ca` (PEM) for the server's certificate.
async fn post(
    url: &str,
    server_name: Option<String>,
    ca: Option<&[u8]>,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Bytes, String> {
    let uri: axum::http::Uri = url.parse().map_err(|e| format!("invalid URL: {e}"))?;
    if uri.scheme_str() != Some("https") {
        return Err("webhook URLs must be https".into());
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.unwrap_or_default()) {
        let cert = cert.map_err(|e| format!("caBundle: {e}"))?;
        roots.add(cert).map_err(|e| format!("caBundle: {e}"))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .with_server_name_resolver(move |uri: &axum::http::Uri| {
            let name = server_name
                .clone()
                .or_else(|| uri.host().map(|h| h.trim_matches(['[', ']']).to_string()))
                .unwrap_or_default();
            rustls::pki_types::ServerName::try_from(name)
        })
        .enable_http1()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, Full<Bytes>>(connector);
    let request = axum::http::Request::post(uri)
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    match crate::services::exchange(&client, request, timeout).await {
        Ok((status, body)) if status.is_success() => Ok(body),
        Ok((status, _)) => Err(format!("the server responded {status}")),
        Err(Some(e)) => Err(e),
        Err(None) => Err(format!(
            "context deadline exceeded (timeout {}s)",
            timeout.as_secs()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_resources_cover_subresources_as_upstream_says() {
        assert!(resource_matches("pods", "pods", ""));
        assert!(!resource_matches("pods", "pods", "status"));
        assert!(resource_matches("pods/status", "pods", "status"));
        assert!(resource_matches("*", "configmaps", ""));
        assert!(!resource_matches("*", "pods", "status"));
        assert!(resource_matches("*/*", "pods", "status"));
        assert!(resource_matches("pods/*", "pods", "exec"));
        assert!(resource_matches("*/status", "deployments", "status"));
    }
}

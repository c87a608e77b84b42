//! The admission chain, in upstream's order, around every create and update a request makes:
//! mutating plugins (Priority, DefaultTolerationSeconds) after defaulting, validating ones
//! (NamespaceLifecycle, PodSecurity, RBAC's escalation checks) after validation. The plugins'
//! logic is in kelp-admission; this module feeds them the objects they look up.

use crate::object::At as _;
use std::sync::Arc;

use kelp_admission::{limitranger, pods, podsecurity, quota, serviceaccount};
use kelp_storage::{KeyRange, RangeRequest, Txn, TxnOutcome};
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::handlers::Ctx;
use crate::registry::{self, Resource};

/// What is being admitted.
pub struct Admit<'a> {
    pub r: &'a Resource,
    pub ns: Option<&'a str>,
    pub subresource: &'a str,
    /// The object before an update (None: a create).
    pub old: Option<&'a Value>,
    /// A dry run: checked, nothing recorded.
    pub dry_run: bool,
}

/// Whether admission runs: behind the security pipeline (the server), not for the API
/// server's own bootstrap writes or the in-process test router.
fn enabled(ctx: &Ctx) -> bool {
    ctx.security.is_some()
}

fn is_pod(r: &Resource) -> bool {
    r.group.is_empty() && r.plural == "pods"
}

/// An object by key: from the watch cache, else storage.
async fn lookup(ctx: &Ctx, key: String) -> Option<Value> {
    let cached = ctx.cache.as_ref().and_then(|c| c.get(&key));
    let kv = match cached {
        Some(kv) => kv,
        None => Arc::new(ctx.backend.get(key).await.ok()?.0?),
    };
    serde_json::from_slice(&kv.value).ok()
}

/// A namespace, as admission reads it for every write in it: parsed once per revision.
async fn namespace(ctx: &Ctx, ns: &str) -> Option<Arc<Value>> {
    let key = format!("/registry/namespaces/{ns}");
    if let Some(parsed) = ctx.cache.as_ref().and_then(|c| c.parsed(&key)) {
        return Some(parsed);
    }
    lookup(ctx, key).await.map(Arc::new)
}

/// Mutating admission: built-in plugins, then the mutating webhooks. Returns the warnings.
pub async fn mutate(ctx: &Ctx, a: &Admit<'_>, obj: &mut Value) -> Result<Vec<String>, ApiError> {
    if !enabled(ctx) {
        return Ok(Vec::new());
    }
    let name = crate::object::name(obj).to_string();
    if is_pod(a.r) && a.old.is_none() && a.subresource.is_empty() {
        limitranger::default_pod(obj, &limit_ranges(ctx, a.ns).await?);
        if let Some(account) = serviceaccount::account_name(obj).map(str::to_string) {
            let found = service_account(ctx, a.ns.unwrap_or(""), &account, &name).await?;
            let suffix = crate::handlers::random_suffix();
            serviceaccount::admit(obj, &found, &suffix);
        }
        priority(ctx, obj)
            .await
            .map_err(|why| ApiError::forbidden("", "pods", &name, &why))?;
        runtime_class(ctx, obj)
            .await
            .map_err(|why| ApiError::forbidden("", "pods", &name, &why))?;
        pods::default_toleration_seconds(obj);
    }
    let Some(webhooks) = ctx.webhooks.as_deref() else {
        return Ok(Vec::new());
    };
    let ns_obj = match a.ns.filter(|_| a.r.namespaced) {
        Some(ns) => namespace(ctx, ns).await,
        None => None,
    };
    let user = crate::security::REQUESTER.try_with(Arc::clone).ok();
    let review = review(a, &name, ns_obj.as_deref(), user.as_deref());
    webhooks.mutate(&review, obj).await
}

fn review<'a>(
    a: &'a Admit<'a>,
    name: &'a str,
    namespace: Option<&'a Value>,
    user: Option<&'a kelp_auth::UserInfo>,
) -> crate::webhook::Review<'a> {
    crate::webhook::Review {
        r: a.r,
        ns: a.ns,
        name,
        subresource: a.subresource,
        operation: if a.old.is_some() { "UPDATE" } else { "CREATE" },
        old: a.old,
        namespace,
        user,
        dry_run: a.dry_run,
    }
}

/// The RuntimeClass plugin: a pod's runtimeClassName must name a RuntimeClass, whose pod
/// overhead the pod takes (or must already match) and whose scheduling adds to the pod's node
/// selector and tolerations.
async fn runtime_class(ctx: &Ctx, pod: &mut Value) -> Result<(), String> {
    let Some(name) = pod
        .at("/spec/runtimeClassName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
    else {
        return Ok(());
    };
    let classes = registry::lookup("node.k8s.io", "v1", "runtimeclasses")
        .ok_or_else(|| "RuntimeClasses are not served".to_string())?;
    let class = lookup(ctx, classes.key(None, &name))
        .await
        .ok_or_else(|| format!("pod rejected: RuntimeClass {name:?} not found"))?;
    let spec = &mut pod["spec"];
    if let Some(overhead) = class.at("/overhead/podFixed") {
        match spec.get("overhead") {
            None | Some(Value::Null) => spec["overhead"] = overhead.clone(),
            Some(own) if own == overhead => {}
            Some(_) => {
                return Err(
                    "pod rejected: Pod's Overhead doesn't match RuntimeClass's defined Overhead"
                        .into(),
                );
            }
        }
    }
    if let Some(Value::Object(selector)) = class.at("/scheduling/nodeSelector") {
        if !spec.get("nodeSelector").is_some_and(Value::is_object) {
            spec["nodeSelector"] = json!({});
        }
        for (k, v) in selector {
            match spec["nodeSelector"].get(k) {
                Some(own) if own != v => {
                    return Err(format!(
                        "conflict: runtimeClass.scheduling.nodeSelector[{k}] = {}; pod.spec.nodeSelector[{k}] = {}",
                        v.as_str().unwrap_or(""),
                        own.as_str().unwrap_or("")
                    ));
                }
                _ => {
                    spec["nodeSelector"][k] = v.clone();
                }
            }
        }
    }
    if let Some(Value::Array(tolerations)) = class.at("/scheduling/tolerations") {
        if !spec.get("tolerations").is_some_and(Value::is_array) {
            spec["tolerations"] = json!([]);
        }
        if let Some(own) = spec["tolerations"].as_array_mut() {
            for t in tolerations {
                if !own.contains(t) {
                    own.push(t.clone());
                }
            }
        }
    }
    Ok(())
}

/// The LimitRanges of a namespace, as the cache holds them.
async fn limit_ranges(ctx: &Ctx, ns: Option<&str>) -> Result<Vec<Value>, ApiError> {
    let Some(ns) = ns else {
        return Ok(Vec::new());
    };
    Ok(current(ctx, &format!("/registry/limitranges/{ns}/"))
        .await?
        .iter()
        .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
        .collect())
}

/// The objects under a prefix as storage now holds them: from the watch cache once it has
/// caught up with storage's head (an object written a moment ago is not missed), else from
/// storage.
async fn current(ctx: &Ctx, prefix: &str) -> Result<Vec<kelp_storage::KeyValue>, ApiError> {
    let end = kelp_storage::prefix_end(prefix.as_bytes());
    if let Some(cache) = ctx.cache.as_ref() {
        let head = ctx.backend.head().await?;
        if let Some(snapshot) = cache.snapshot(prefix.as_bytes(), &end, head).await {
            return Ok(snapshot.kvs.iter().map(|kv| kv.as_ref().clone()).collect());
        }
    }
    Ok(ctx
        .backend
        .range(RangeRequest::new(KeyRange::prefix(prefix.to_string())))
        .await?
        .kvs)
}

/// A new pod's service account, as the ServiceAccount plugin finds it: from the cache, else
/// storage, where the `default` account is looked for up to ten times (its controller may
/// not have made it yet in a new namespace). Not found is a 403 naming it, as upstream.
async fn service_account(ctx: &Ctx, ns: &str, account: &str, pod: &str) -> Result<Value, ApiError> {
    let key = format!("/registry/serviceaccounts/{ns}/{account}");
    let cached = ctx.cache.as_ref().and_then(|c| c.get(&key));
    if let Some(sa) = cached.and_then(|kv| serde_json::from_slice(&kv.value).ok()) {
        return Ok(sa);
    }
    let attempts = if account == serviceaccount::DEFAULT_SERVICE_ACCOUNT {
        10
    } else {
        1
    };
    let pause = std::time::Duration::from_millis(100 + rand::random::<u64>() % 100);
    for attempt in 0..attempts {
        if attempt > 0 {
            tokio::time::sleep(pause).await;
        }
        if let (Some(kv), _) = ctx.backend.get(key.clone()).await? {
            return serde_json::from_slice(&kv.value)
                .map_err(|e| ApiError::internal(format!("unreadable service account: {e}")));
        }
    }
    Err(ApiError::forbidden(
        "",
        "pods",
        pod,
        &format!(
            "error looking up service account {ns}/{account}: serviceaccount \"{account}\" not found"
        ),
    ))
}

async fn priority(ctx: &Ctx, pod: &mut Value) -> Result<(), String> {
    let classes = registry::lookup("scheduling.k8s.io", "v1", "priorityclasses")
        .ok_or("priority classes are not served")?;
    let read = |c: &Value| {
        (
            c.get("value").and_then(Value::as_i64).unwrap_or(0),
            c.get("preemptionPolicy")
                .and_then(Value::as_str)
                .map(str::to_string),
        )
    };
    let named = pod
        .at("/spec/priorityClassName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_string);
    let (class, default) = match named {
        Some(name) => (
            lookup(ctx, classes.key(None, &name))
                .await
                .map(|c| read(&c)),
            None,
        ),
        None => {
            let all = ctx
                .cache
                .as_ref()
                .map(|c| c.objects(&classes.key_prefix(None)))
                .unwrap_or_default();
            let default = all.iter().find_map(|kv| {
                let c: Value = serde_json::from_slice(&kv.value).ok()?;
                (c.get("globalDefault") == Some(&Value::Bool(true))).then(|| {
                    let (v, p) = read(&c);
                    (crate::object::name(&c).to_string(), v, p)
                })
            });
            (None, default)
        }
    };
    pods::priority(pod, class, default)
}

/// Validating admission: the warnings to send, or why the write is refused.
pub async fn validate(ctx: &Ctx, a: &Admit<'_>, obj: &Value) -> Result<Vec<String>, ApiError> {
    let mut warnings = Vec::new();
    if !enabled(ctx) {
        return Ok(warnings);
    }
    let name = crate::object::name(obj).to_string();
    let ns_obj = match a.ns.filter(|_| a.r.namespaced) {
        Some(ns) => namespace(ctx, ns).await,
        None => None,
    };
    // NamespaceLifecycle: nothing new in a namespace being deleted.
    if a.old.is_none()
        && let (Some(ns), Some(n)) = (a.ns, &ns_obj)
        && n.at("/metadata/deletionTimestamp").is_some()
    {
        return Err(ApiError::forbidden(
            a.r.group,
            a.r.plural,
            &name,
            &format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            ),
        ));
    }
    if a.old.is_none() && a.subresource.is_empty() && a.r.group.is_empty() {
        let errors = limitranger::violations(a.r.plural, obj, &limit_ranges(ctx, a.ns).await?);
        match errors.len() {
            0 => {}
            1 => return Err(ApiError::forbidden("", a.r.plural, &name, &errors[0])),
            _ => {
                let all = format!("[{}]", errors.join(", "));
                return Err(ApiError::forbidden("", a.r.plural, &name, &all));
            }
        }
    }
    if is_pod(a.r) && a.old.is_none() && a.subresource.is_empty() {
        let account = match serviceaccount::account_name(obj) {
            Some(account) => Some(service_account(ctx, a.ns.unwrap_or(""), account, &name).await?),
            None => None,
        };
        if let Some(why) = serviceaccount::validate(obj, account.as_ref()) {
            return Err(ApiError::forbidden("", "pods", &name, &why));
        }
    }
    if let Ok(user) = crate::security::REQUESTER.try_with(Arc::clone) {
        crate::security::node::restrict(
            &user,
            a.r.group,
            a.r.plural,
            a.subresource,
            a.ns,
            a.old,
            obj,
        )?;
    }
    if a.r.group == "certificates.k8s.io" && a.r.kind == "CertificateSigningRequest" {
        certificates(ctx, a, obj, &name).await?;
    }
    pod_security(a, obj, &name, ns_obj.as_deref(), &mut warnings)?;
    crate::security::check_write(ctx, a.r, a.ns, a.old, obj).await?;
    let user = crate::security::REQUESTER.try_with(Arc::clone).ok();
    let review = review(a, &name, ns_obj.as_deref(), user.as_deref());
    if let Some(policies) = ctx.policies.as_deref() {
        let params = |kind: Value, reference: Value| params(ctx, kind, reference, a.ns);
        warnings.extend(policies.validate(&review, obj, params).await?);
    }
    if let Some(webhooks) = ctx.webhooks.as_deref() {
        warnings.extend(webhooks.validate(&review, obj).await?);
    }
    resource_quota(ctx, a, obj, &name).await?;
    Ok(warnings)
}

/// The certificate plugins: CertificateApproval (approving or denying takes the `approve`
/// verb on the request's signer), CertificateSigning (issuing a certificate through status
/// takes `sign`), and CertificateSubjectRestriction (no `system:masters` through the
/// kube-apiserver-client signer), as upstream's plugin/pkg/admission/certificates.
async fn certificates(ctx: &Ctx, a: &Admit<'_>, csr: &Value, name: &str) -> Result<(), ApiError> {
    let signer = csr
        .at("/spec/signerName")
        .and_then(Value::as_str)
        .unwrap_or("");
    let refuse = |why: String| {
        ApiError::forbidden(
            "certificates.k8s.io",
            "certificatesigningrequests",
            name,
            &why,
        )
    };
    let certificate = |o: &Value| o.at("/status/certificate").cloned();
    let needs = match (a.subresource, a.old) {
        ("approval", Some(_)) => Some("approve"),
        ("status", Some(old)) if certificate(old) != certificate(csr) => Some("sign"),
        _ => None,
    };
    if let Some(verb) = needs
        && !authorized_for_signer(ctx, verb, signer).await
    {
        return Err(refuse(format!(
            "user not permitted to {verb} requests with signerName {signer:?}"
        )));
    }
    if a.subresource.is_empty()
        && a.old.is_none()
        && signer == "kubernetes.io/kube-apiserver-client"
    {
        let request = csr
            .at("/spec/request")
            .and_then(Value::as_str)
            .unwrap_or("");
        let pem = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, request)
            .unwrap_or_default();
        let masters = kelp_auth::request_organizations(&pem)
            .is_ok_and(|orgs| orgs.iter().any(|o| o == kelp_auth::MASTERS));
        if masters {
            return Err(refuse(format!(
                "use of {signer} signer with {} group is not allowed",
                kelp_auth::MASTERS
            )));
        }
    }
    Ok(())
}

/// Upstream's IsAuthorizedForSignerName: the verb on `signers` named for the signer, or for
/// its domain's wildcard (`example.com/*`).
async fn authorized_for_signer(ctx: &Ctx, verb: &str, signer: &str) -> bool {
    let (Some(security), Ok(user)) = (
        ctx.security.as_deref(),
        crate::security::REQUESTER.try_with(Arc::clone),
    ) else {
        return true;
    };
    let mut names = vec![signer.to_string()];
    if let Some((domain, _)) = signer.split_once('/') {
        names.push(format!("{domain}/*"));
    }
    for name in names {
        let a = kelp_auth::rbac::Attributes {
            verb: verb.into(),
            api_group: "certificates.k8s.io".into(),
            resource: "signers".into(),
            name,
            resource_request: true,
            ..Default::default()
        };
        if security.authorize(&user, &a).await.allowed {
            return true;
        }
    }
    false
}

/// ResourceQuota, last: each quota of the namespace that tracks the new object must leave
/// room for it, and records the usage (compare-and-swap on the quota, so concurrent creators
/// cannot both take the last of it) before the object is stored.
async fn resource_quota(ctx: &Ctx, a: &Admit<'_>, obj: &Value, name: &str) -> Result<(), ApiError> {
    let (Some(ns), None) = (a.ns.filter(|_| a.r.namespaced), a.old) else {
        return Ok(());
    };
    if !a.subresource.is_empty() {
        return Ok(());
    }
    let quotas = registry::lookup("", "v1", "resourcequotas").expect("quotas are served");
    let prefix = quotas.key_prefix(Some(ns));
    // The cache's copies are where the compare-and-swap starts (a stale one fails and hands
    // back the current one), so a namespace without quotas costs no storage read.
    let listed = current(ctx, &prefix).await?;
    if listed.is_empty() {
        return Ok(());
    }
    let usage = quota::usage(a.r.group, a.r.plural, obj);
    let refuse = |why: String| ApiError::forbidden(a.r.group, a.r.plural, name, &why);
    for listed in listed {
        let mut kv = listed;
        loop {
            let mut q: Value = serde_json::from_slice(&kv.value)
                .map_err(|e| ApiError::internal(format!("unreadable quota: {e}")))?;
            let Some(used) =
                quota::admit(&q, a.r.group, a.r.plural, obj, &usage).map_err(refuse)?
            else {
                break;
            };
            if a.dry_run {
                break;
            }
            q["status"]["used"] = used;
            let value = serde_json::to_vec(&q).unwrap_or_default();
            match ctx
                .backend
                .txn(Txn::update(kv.key.clone(), kv.mod_revision, value))
                .await?
            {
                TxnOutcome::Succeeded { .. } => break,
                TxnOutcome::Failed { current, .. } => match current {
                    Some(now) => kv = now,
                    None => break, // the quota is gone
                },
            }
        }
    }
    Ok(())
}

/// Admission of a delete (upstream's AdmissionToValidateObjectDeleteFunc): the object being
/// deleted is the old object, the new one is null; mutating webhooks may only refuse, then
/// ValidatingAdmissionPolicies and validating webhooks decide. Called with the object as
/// read, before anything is written.
pub async fn delete(
    ctx: &Ctx,
    r: &Resource,
    ns: Option<&str>,
    name: &str,
    current: &Value,
    dry_run: bool,
) -> Result<Vec<String>, ApiError> {
    if !enabled(ctx) {
        return Ok(Vec::new());
    }
    let a = Admit {
        r,
        ns,
        subresource: "",
        old: Some(current),
        dry_run,
    };
    let ns_obj = match ns.filter(|_| r.namespaced) {
        Some(ns) => namespace(ctx, ns).await,
        None => None,
    };
    let user = crate::security::REQUESTER.try_with(Arc::clone).ok();
    let mut review = review(&a, name, ns_obj.as_deref(), user.as_deref());
    review.operation = "DELETE";
    let mut none = Value::Null;
    let mut warnings = Vec::new();
    if let Some(webhooks) = ctx.webhooks.as_deref() {
        warnings.extend(webhooks.mutate(&review, &mut none).await?);
    }
    if let Some(policies) = ctx.policies.as_deref() {
        let params = |kind: Value, reference: Value| params(ctx, kind, reference, ns);
        warnings.extend(policies.validate(&review, &none, params).await?);
    }
    if let Some(webhooks) = ctx.webhooks.as_deref() {
        warnings.extend(webhooks.validate(&review, &none).await?);
    }
    Ok(warnings)
}

/// NamespaceLifecycle on deletes: the system namespaces stay.
pub fn admit_delete(ctx: &Ctx, r: &Resource, name: &str) -> Result<(), ApiError> {
    let immortal = ["default", "kube-system", "kube-public"];
    if enabled(ctx) && r.group.is_empty() && r.kind == "Namespace" && immortal.contains(&name) {
        return Err(ApiError::forbidden(
            "",
            "namespaces",
            name,
            "this namespace may not be deleted",
        ));
    }
    Ok(())
}

/// A policy binding's parameter object: the paramKind's object the paramRef names (in the
/// paramRef's namespace, else the request's).
async fn params(
    ctx: &Ctx,
    kind: Value,
    reference: Value,
    request_ns: Option<&str>,
) -> Option<Value> {
    let api_version = kind.get("apiVersion").and_then(Value::as_str)?;
    let kind = kind.get("kind").and_then(Value::as_str)?;
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let r = registry::served(ctx.crds.as_deref())
        .into_iter()
        .find(|r| r.group == group && r.version == version && r.kind == kind)?;
    let name = reference.get("name").and_then(Value::as_str)?;
    let ns = reference
        .get("namespace")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .or(request_ns);
    lookup(ctx, r.key(ns.filter(|_| r.namespaced), name)).await
}

fn labels(obj: Option<&Value>) -> Map<String, Value> {
    obj.and_then(|o| o.at("/metadata/labels"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

fn pod_security(
    a: &Admit<'_>,
    obj: &Value,
    name: &str,
    namespace: Option<&Value>,
    warnings: &mut Vec<String>,
) -> Result<(), ApiError> {
    let r = a.r;
    if r.group.is_empty() && r.kind == "Namespace" {
        if !a.subresource.is_empty() {
            return Ok(());
        }
        let errors = podsecurity::label_errors(&labels(Some(obj)));
        let old_errors = a.old.map(|o| podsecurity::label_errors(&labels(Some(o))));
        if !errors.is_empty() && old_errors.as_ref() != Some(&errors) {
            return Err(ApiError::invalid("", "Namespace", name, errors));
        }
        return Ok(());
    }
    let (meta, spec) = if is_pod(r) {
        let checked = a.subresource.is_empty() || a.subresource == "ephemeralcontainers";
        if !checked
            || a.old
                .is_some_and(|o| !podsecurity::significant_update(o, obj))
        {
            return Ok(());
        }
        (obj.get("metadata"), obj.get("spec"))
    } else if let Some(pointer) = podsecurity::template_pointer(r.group, r.plural) {
        if !a.subresource.is_empty() {
            return Ok(());
        }
        let template = obj.at(pointer);
        (
            template.and_then(|t| t.get("metadata")),
            template.and_then(|t| t.get("spec")),
        )
    } else {
        return Ok(());
    };
    let (Some(spec), meta) = (spec, meta.cloned().unwrap_or_default()) else {
        return Ok(());
    };
    let policy = podsecurity::policy(&labels(namespace));
    if is_pod(r) {
        // Upstream annotates the audit event with the level a pod was held to.
        crate::security::audit_annotate(
            "pod-security.kubernetes.io/enforce-policy",
            &policy.enforce.name(),
        );
        if let Some(why) = podsecurity::violations(&policy.enforce, &meta, spec) {
            return Err(ApiError::forbidden(
                "",
                "pods",
                name,
                &format!("violates PodSecurity {:?}: {why}", policy.enforce.name()),
            ));
        }
    }
    if let Some(why) = podsecurity::violations(&policy.audit, &meta, spec) {
        crate::security::audit_annotate(
            "pod-security.kubernetes.io/audit-violations",
            &format!("would violate PodSecurity {:?}: {why}", policy.audit.name()),
        );
    }
    if let Some(why) = podsecurity::violations(&policy.warn, &meta, spec) {
        warnings.push(format!(
            "would violate PodSecurity {:?}: {why}",
            policy.warn.name()
        ));
    }
    Ok(())
}

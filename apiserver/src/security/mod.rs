//! The security pipeline in front of every handler, in upstream's order: authentication
//! (client certificate, bearer token, else anonymous), impersonation, authorization
//! (system:masters, then RBAC); and the checks RBAC makes on role and binding writes.

mod escalation;
pub mod node;
mod policy;
pub mod reconcile;
mod requestinfo;
pub mod reviews;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kelp_auth::rbac::Attributes;
use kelp_auth::serviceaccount::{ServiceAccountKeys, TokenError};
use kelp_auth::{TokenFile, UserInfo};
use kelp_storage::Backend;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use serde_json::Value;

use crate::cache::WatchCache;
use crate::error::ApiError;
use crate::registry;

pub use escalation::check_write;

/// What the API server's authenticators are configured with.
pub struct SecurityConfig {
    /// `--token-auth-file`.
    pub token_file: Option<TokenFile>,
    pub service_accounts: Arc<ServiceAccountKeys>,
    /// Client certificates must chain to this CA.
    pub client_ca_pem: String,
    /// The audit log, when a policy is configured.
    pub audit: Option<Arc<crate::audit::Audit>>,
}

/// What a connection's TLS handshake learned about its client certificate (once per connection).
#[derive(Clone)]
pub enum ClientCert {
    None,
    Valid(Arc<UserInfo>),
    /// A certificate that does not verify: its requests get 401.
    Invalid(Arc<str>),
}

/// The authenticated (and possibly impersonated) user of a request, for the handlers.
#[derive(Clone)]
pub struct Requester(pub Arc<UserInfo>);

pub struct Security {
    tokens: Option<TokenFile>,
    pub service_accounts: Arc<ServiceAccountKeys>,
    backend: Backend,
    cache: Arc<WatchCache>,
    policy: policy::PolicyCache,
    verifier: Arc<dyn ClientCertVerifier>,
    audit: Option<Arc<crate::audit::Audit>>,
    authenticated: TokenCache,
}

/// How long a token that authenticated is taken as its user without checking it again
/// (upstream's default TokenSuccessCacheTTL); failures are not kept.
const TOKEN_SUCCESS_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// Tokens kept at most; beyond, expired ones are dropped, and if none has, all.
const TOKEN_CACHE_SIZE: usize = 32 * 1024;

/// Users of the bearer tokens that authenticated lately, by a salted hash of the token and the
/// audiences asked for (upstream's cachedTokenAuthenticator): each request of a controller
/// would otherwise verify its token's signature and look up its service account again.
struct TokenCache {
    salt: [u8; 32],
    users: std::sync::Mutex<std::collections::HashMap<[u8; 32], (std::time::Instant, UserInfo)>>,
}

impl TokenCache {
    fn new() -> TokenCache {
        TokenCache {
            salt: rand::random(),
            users: Default::default(),
        }
    }

    fn key(&self, token: &str, audiences: Option<&[String]>) -> [u8; 32] {
        use sha2::Digest;
        let mut hash = sha2::Sha256::new();
        hash.update(self.salt);
        for a in audiences.unwrap_or_default() {
            hash.update((a.len() as u64).to_le_bytes());
            hash.update(a.as_bytes());
        }
        // Audiences none and audiences empty differ.
        hash.update([u8::from(audiences.is_some())]);
        hash.update(token.as_bytes());
        hash.finalize().into()
    }

    fn get(&self, key: &[u8; 32]) -> Option<UserInfo> {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        let (until, user) = users.get(key)?;
        (*until > std::time::Instant::now()).then(|| user.clone())
    }

    fn put(&self, key: [u8; 32], user: &UserInfo) {
        let now = std::time::Instant::now();
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        if users.len() >= TOKEN_CACHE_SIZE {
            users.retain(|_, (until, _)| *until > now);
            if users.len() >= TOKEN_CACHE_SIZE {
                users.clear();
            }
        }
        users.insert(key, (now + TOKEN_SUCCESS_TTL, user.clone()));
    }
}

/// Whether RBAC allowed a request, and upstream's reason.
pub struct Decision {
    pub allowed: bool,
    pub reason: String,
}

impl Security {
    pub fn new(
        config: SecurityConfig,
        backend: Backend,
        cache: Arc<WatchCache>,
    ) -> Result<Security, String> {
        Ok(Security {
            tokens: config.token_file,
            service_accounts: config.service_accounts,
            policy: policy::cache(cache.clone()),
            backend,
            cache,
            verifier: crate::client_verifier(&config.client_ca_pem)?,
            audit: config.audit,
            authenticated: TokenCache::new(),
        })
    }

    /// Verifies a client's certificate chain against the cluster CA, as upstream's x509
    /// authenticator does after a handshake that accepted any certificate.
    pub fn client_cert(&self, chain: Option<&[CertificateDer<'static>]>) -> ClientCert {
        let Some((leaf, intermediates)) = chain.and_then(|c| c.split_first()) else {
            return ClientCert::None;
        };
        if let Err(e) = self
            .verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
        {
            return ClientCert::Invalid(format!("verifying certificate: {e}").into());
        }
        match kelp_auth::user_from_certificate(leaf) {
            Ok(user) => ClientCert::Valid(Arc::new(user)),
            Err(e) => ClientCert::Invalid(e.into()),
        }
    }

    /// The user a request is from: its client certificate's, its bearer token's, or the
    /// anonymous user when it carries neither. Err: credentials that do not authenticate.
    pub async fn authenticate(
        &self,
        cert: Option<&ClientCert>,
        headers: &HeaderMap,
    ) -> Result<UserInfo, String> {
        let mut error = None;
        match cert {
            Some(ClientCert::Valid(user)) => return Ok(UserInfo::clone(user).authenticated()),
            Some(ClientCert::Invalid(e)) => error = Some(e.to_string()),
            Some(ClientCert::None) | None => {}
        }
        let bearer = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty());
        if let Some(token) = bearer {
            return match self.authenticate_token(token, None).await {
                Ok(Some(user)) => Ok(user.authenticated()),
                Ok(None) => Err("invalid bearer token".to_string()),
                Err(e) => Err(e),
            };
        }
        match error {
            Some(e) => Err(e),
            None => Ok(UserInfo::anonymous()),
        }
    }

    /// A bearer token's user: Ok(None) when no authenticator knows the token. `audiences`
    /// (a TokenReview's) narrows the audiences a service-account token may name.
    pub async fn authenticate_token(
        &self,
        token: &str,
        audiences: Option<&[String]>,
    ) -> Result<Option<UserInfo>, String> {
        let key = self.authenticated.key(token, audiences);
        if let Some(user) = self.authenticated.get(&key) {
            return Ok(Some(user));
        }
        let user = self.check_token(token, audiences).await?;
        if let Some(user) = &user {
            self.authenticated.put(key, user);
        }
        Ok(user)
    }

    /// A bearer token's user, checked afresh (see [`Security::authenticate_token`]).
    async fn check_token(
        &self,
        token: &str,
        audiences: Option<&[String]>,
    ) -> Result<Option<UserInfo>, String> {
        if let Some(user) = self.tokens.as_ref().and_then(|t| t.authenticate(token)) {
            return Ok(Some(user.clone()));
        }
        let now = jiff::Timestamp::now().as_second();
        if let Some((id, secret)) = bootstrap_token(token) {
            return Ok(self.bootstrap_user(id, secret, now).await);
        }
        let verified = match self.service_accounts.verify(token, now) {
            Ok(v) => v,
            Err(TokenError::NotOurs) => return Ok(None),
            Err(TokenError::Invalid(e)) => return Err(e),
        };
        if let Some(wanted) = audiences {
            let own = &self.service_accounts.audiences;
            if !wanted.is_empty() && !wanted.iter().any(|a| own.contains(a)) {
                return Err("token audiences is invalid".to_string());
            }
        }
        let ns = verified.namespace.as_str();
        let sa = self
            .lookup("serviceaccounts", ns, &verified.service_account.name)
            .await
            .ok_or_else(|| {
                format!(
                    "serviceaccounts \"{}\" not found",
                    verified.service_account.name
                )
            })?;
        let sa_uid = uid(&sa);
        if !verified.service_account.uid.is_empty() && verified.service_account.uid != sa_uid {
            return Err(format!(
                "service account UID ({}) does not match claim ({})",
                sa_uid, verified.service_account.uid
            ));
        }
        let mut user = UserInfo::service_account(ns, &verified.service_account.name, &sa_uid);
        if let Some(secret_name) = &verified.legacy_secret {
            let secret = self
                .lookup("secrets", ns, secret_name)
                .await
                .filter(|s| !deleted_before(s, now))
                .ok_or("Token has been invalidated")?;
            let held = secret
                .pointer("/data/token")
                .and_then(Value::as_str)
                .and_then(|t| {
                    use base64::Engine;
                    base64::engine::general_purpose::STANDARD.decode(t).ok()
                });
            if held.as_deref() != Some(token.as_bytes()) {
                return Err("Token does not match server's copy".to_string());
            }
            return Ok(Some(user));
        }
        for (kind, plural, bound) in [
            ("pod", "pods", &verified.pod),
            ("secret", "secrets", &verified.secret),
        ] {
            let Some(bound) = bound else { continue };
            let obj = self
                .lookup(plural, ns, &bound.name)
                .await
                .filter(|o| !deleted_before(o, now))
                .ok_or("service account token has been invalidated")?;
            if uid(&obj) != bound.uid {
                return Err(format!(
                    "{kind} UID ({}) does not match service account {kind} ref claim ({})",
                    uid(&obj),
                    bound.uid
                ));
            }
            if kind == "pod" {
                user.extra.insert(
                    "authentication.kubernetes.io/pod-name".into(),
                    vec![bound.name.clone()],
                );
                user.extra.insert(
                    "authentication.kubernetes.io/pod-uid".into(),
                    vec![bound.uid.clone()],
                );
            }
        }
        if let Some(node) = &verified.node {
            user.extra.insert(
                "authentication.kubernetes.io/node-name".into(),
                vec![node.name.clone()],
            );
            user.extra.insert(
                "authentication.kubernetes.io/node-uid".into(),
                vec![node.uid.clone()],
            );
        }
        if let Some(jti) = &verified.jti {
            user.extra.insert(
                "authentication.kubernetes.io/credential-id".into(),
                vec![format!("JTI={jti}")],
            );
        }
        Ok(Some(user))
    }

    /// The user of a bootstrap token (upstream's bootstrap authenticator): the kube-system
    /// Secret `bootstrap-token-<id>` of type `bootstrap.kubernetes.io/token` must hold the
    /// secret, allow authentication, and not have expired.
    async fn bootstrap_user(&self, id: &str, secret: &str, now: i64) -> Option<UserInfo> {
        use base64::Engine;
        let stored = self
            .lookup("secrets", "kube-system", &format!("bootstrap-token-{id}"))
            .await?;
        if stored.get("type").and_then(Value::as_str) != Some("bootstrap.kubernetes.io/token")
            || stored.pointer("/metadata/deletionTimestamp").is_some()
        {
            return None;
        }
        let data = |k: &str| -> Option<String> {
            let v = stored
                .pointer(&format!("/data/{k}"))
                .and_then(Value::as_str)?;
            let bytes = base64::engine::general_purpose::STANDARD.decode(v).ok()?;
            String::from_utf8(bytes).ok()
        };
        let matches = data("token-id").as_deref() == Some(id)
            && data("token-secret")
                .is_some_and(|s| constant_time_eq(s.as_bytes(), secret.as_bytes()))
            && data("usage-bootstrap-authentication").as_deref() == Some("true");
        let expired = data("expiration")
            .and_then(|e| e.parse::<jiff::Timestamp>().ok())
            .is_some_and(|t| t.as_second() < now);
        if !matches || expired {
            return None;
        }
        let mut groups = vec!["system:bootstrappers".to_string()];
        for g in data("auth-extra-groups").unwrap_or_default().split(',') {
            let g = g.trim();
            if g.starts_with("system:bootstrappers:") && !groups.iter().any(|x| x == g) {
                groups.push(g.to_string());
            }
        }
        Some(UserInfo {
            name: format!("system:bootstrap:{id}"),
            groups,
            ..UserInfo::default()
        })
    }

    /// A core object by namespace and name: from the cache, else storage (it may lag).
    async fn lookup(&self, plural: &str, ns: &str, name: &str) -> Option<Value> {
        let r = registry::lookup("", "v1", plural)?;
        let key = r.key(Some(ns), name);
        let kv = match self.cache.get(&key) {
            Some(kv) => Some(kv),
            None => self.backend.get(key).await.ok()?.0.map(Arc::new),
        }?;
        serde_json::from_slice(&kv.value).ok()
    }

    /// A cluster-scoped core object by name.
    async fn lookup_cluster(&self, plural: &str, name: &str) -> Option<Value> {
        let r = registry::lookup("", "v1", plural)?;
        let key = r.key(None, name);
        let kv = match self.cache.get(&key) {
            Some(kv) => Some(kv),
            None => self.backend.get(key).await.ok()?.0.map(Arc::new),
        }?;
        serde_json::from_slice(&kv.value).ok()
    }

    /// Whether `user` may do what `a` describes: system:masters may do anything, everyone
    /// else what RBAC allows. A denial is checked again once the cache has caught up with
    /// storage, so a binding just written counts.
    pub async fn authorize(&self, user: &UserInfo, a: &Attributes) -> Decision {
        if user.in_group(kelp_auth::MASTERS) {
            return Decision {
                allowed: true,
                reason: String::new(),
            };
        }
        if let Some(node) = node::node_of(user)
            && self.node_allows(node, a)
        {
            return Decision {
                allowed: true,
                reason: String::new(),
            };
        }
        if let Some(reason) = self.policy.current().authorize(user, a) {
            return Decision {
                allowed: true,
                reason,
            };
        }
        if let Ok(head) = self.backend.head().await
            && self.cache.reach(head).await
            && let Some(reason) = self.policy.current().authorize(user, a)
        {
            return Decision {
                allowed: true,
                reason,
            };
        }
        Decision {
            allowed: false,
            reason: String::new(),
        }
    }

    pub(crate) fn policy(&self) -> Arc<kelp_auth::rbac::Policy> {
        self.policy.current()
    }

    /// The user a request acts as: its own, or the one its `Impersonate-*` headers name, when
    /// it may impersonate each of their parts.
    async fn impersonate(&self, user: UserInfo, headers: &HeaderMap) -> Result<UserInfo, ApiError> {
        let values = |name: &str| -> Vec<String> {
            headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(str::to_string)
                .collect()
        };
        let name = values("impersonate-user").into_iter().next();
        let groups = values("impersonate-group");
        let uid = values("impersonate-uid").into_iter().next();
        let mut extra = std::collections::BTreeMap::<String, Vec<String>>::new();
        for (header, value) in headers {
            if let Some(key) = header.as_str().strip_prefix("impersonate-extra-")
                && let Ok(v) = value.to_str()
            {
                let key = percent_decode(key).to_ascii_lowercase();
                extra.entry(key).or_default().push(v.to_string());
            }
        }
        let Some(name) = name else {
            if groups.is_empty() && uid.is_none() && extra.is_empty() {
                return Ok(user);
            }
            return Err(ApiError::internal(
                "requested impersonation of groups, uid or extra without impersonating a user",
            ));
        };
        let mut checks: Vec<Attributes> = Vec::new();
        let mut impersonated = match kelp_auth::split_service_account(&name) {
            Some((ns, sa)) => {
                checks.push(impersonation("", "serviceaccounts", "", ns, sa));
                UserInfo::service_account(ns, sa, "")
            }
            None => {
                checks.push(impersonation("", "users", "", "", &name));
                UserInfo::new(name.clone(), &[])
            }
        };
        for g in &groups {
            checks.push(impersonation("", "groups", "", "", g));
            impersonated.groups.push(g.clone());
        }
        if let Some(uid) = &uid {
            checks.push(impersonation("authentication.k8s.io", "uids", "", "", uid));
            impersonated.uid = uid.clone();
        }
        for (key, vals) in &extra {
            for v in vals {
                checks.push(impersonation(
                    "authentication.k8s.io",
                    "userextras",
                    key,
                    "",
                    v,
                ));
            }
        }
        impersonated.extra = extra;
        for check in &checks {
            if !self.authorize(&user, check).await.allowed {
                return Err(forbidden(&user, check));
            }
        }
        let anonymous = impersonated.name == kelp_auth::ANONYMOUS;
        if anonymous {
            if !impersonated.in_group(kelp_auth::UNAUTHENTICATED) {
                impersonated
                    .groups
                    .push(kelp_auth::UNAUTHENTICATED.to_string());
            }
        } else if !impersonated.in_group(kelp_auth::UNAUTHENTICATED) {
            impersonated = impersonated.authenticated();
        }
        Ok(impersonated)
    }
}

fn impersonation(group: &str, resource: &str, sub: &str, ns: &str, name: &str) -> Attributes {
    Attributes {
        verb: "impersonate".into(),
        api_group: group.into(),
        resource: resource.into(),
        subresource: sub.into(),
        namespace: ns.into(),
        name: name.into(),
        resource_request: true,
        ..Attributes::default()
    }
}

fn percent_decode(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A bootstrap token's id and secret (`[a-z0-9]{6}.[a-z0-9]{16}`), if it is one.
fn bootstrap_token(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    let ok = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    (ok(id, 6) && ok(secret, 16)).then_some((id, secret))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether an object's deletion began more than a minute ago (upstream's leeway: a token
/// bound to it is refused from then on).
fn deleted_before(obj: &Value, now: i64) -> bool {
    obj.pointer("/metadata/deletionTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .is_some_and(|t| t.as_second() < now - kelp_auth::serviceaccount::LEEWAY_SECONDS)
}

fn uid(obj: &Value) -> String {
    obj.pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// Upstream's Forbidden: `User "alice" cannot list resource "pods" in API group "" in the
/// namespace "dev"`.
pub fn forbidden_message(user: &UserInfo, a: &Attributes) -> String {
    if !a.resource_request {
        return format!(
            "User \"{}\" cannot {} path \"{}\"",
            user.name, a.verb, a.path
        );
    }
    let resource = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let scope = if a.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace \"{}\"", a.namespace)
    };
    format!(
        "User \"{}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
        user.name, a.verb, a.api_group
    )
}

pub fn forbidden(user: &UserInfo, a: &Attributes) -> ApiError {
    let message = forbidden_message(user, a);
    if !a.resource_request {
        let mut e = ApiError::forbidden("", "", "", &message);
        e.message = format!("forbidden: {message}");
        e.details = Some(serde_json::json!({}));
        return e;
    }
    ApiError::forbidden(&a.api_group, &a.resource, &a.name, &message)
}

/// The middleware: authenticates, impersonates and authorizes every request, and hands the
/// user to the handlers as a [`Requester`].
pub async fn guard(
    State(security): State<Arc<Security>>,
    mut req: Request,
    next: Next,
) -> Response {
    let cert = req.extensions().get::<ClientCert>();
    let user = match security.authenticate(cert, req.headers()).await {
        Ok(user) => user,
        Err(e) => {
            tracing::debug!(error = %e, path = %req.uri().path(), "unauthorized");
            return ApiError::unauthorized().into_response();
        }
    };
    let a = requestinfo::attributes(req.method(), req.uri().path(), req.uri().query());
    let impersonated = security.impersonate(user.clone(), req.headers()).await;
    let mut record = security.audit.as_ref().and_then(|audit| {
        let acting = impersonated.as_ref().ok().filter(|i| **i != user);
        let peer = req.extensions().get::<PeerAddr>().map(|p| p.0.ip());
        let agent = req
            .headers()
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let uri = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("");
        audit.begin(&user, acting, &a, uri, peer, agent)
    });
    let effective = match impersonated {
        Ok(user) => user,
        Err(e) => return audited(&security, record, e.into_response()).await,
    };
    let decision = security.authorize(&effective, &a).await;
    if let Some(r) = record.as_mut() {
        r.annotate(
            "authorization.k8s.io/decision",
            if decision.allowed { "allow" } else { "forbid" },
        );
        r.annotate("authorization.k8s.io/reason", &decision.reason);
    }
    if !decision.allowed {
        return audited(&security, record, forbidden(&effective, &a).into_response()).await;
    }
    req.extensions_mut().insert(Requester(Arc::new(effective)));
    let Some(mut r) = record else {
        return next.run(req).await;
    };
    if r.level >= crate::audit::Level::Request && a.verb != "watch" {
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, crate::handlers::MAX_BODY_BYTES)
            .await
            .unwrap_or_default();
        // As JSON whatever it came as (protobuf, YAML; patches as they are).
        let decoded = crate::handlers::decode_body(&parts.headers, &bytes)
            .ok()
            .or_else(|| serde_json::from_slice::<Value>(&bytes).ok())
            .or_else(|| serde_saphyr::from_slice::<Value>(&bytes).ok());
        if let Some(obj) = decoded.filter(|_| !bytes.is_empty()) {
            r.request_object(obj);
        }
        req = Request::from_parts(parts, axum::body::Body::from(bytes));
    }
    let notes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let response = AUDIT_ANNOTATIONS.scope(notes.clone(), next.run(req)).await;
    for (key, value) in notes.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
        r.annotate(&key, &value);
    }
    if a.verb == "watch" {
        let audit = security.audit.clone();
        if let Some(audit) = &audit {
            r.set(
                "responseStatus",
                serde_json::json!({"metadata": {}, "code": response.status().as_u16()}),
            );
            audit.write(&r, "ResponseStarted");
        }
        // ResponseComplete once the stream ends (or the client goes).
        let done = AuditOnDrop(audit.map(|a| (a, r)));
        let (parts, body) = response.into_parts();
        let stream = futures::StreamExt::map(body.into_data_stream(), move |chunk| {
            let _ = &done;
            chunk
        });
        return Response::from_parts(parts, axum::body::Body::from_stream(stream));
    }
    audited(&security, Some(r), response).await
}

/// Writes a watch's ResponseComplete when its stream is dropped.
struct AuditOnDrop(Option<(Arc<crate::audit::Audit>, crate::audit::Record)>);

impl Drop for AuditOnDrop {
    fn drop(&mut self) {
        if let Some((audit, record)) = &self.0 {
            audit.write(record, "ResponseComplete");
        }
    }
}

/// Finishes a request's audit record with its response (the body too at RequestResponse).
async fn audited(
    security: &Security,
    record: Option<crate::audit::Record>,
    response: Response,
) -> Response {
    let (Some(audit), Some(mut r)) = (security.audit.as_ref(), record) else {
        return response;
    };
    let code = response.status().as_u16();
    let json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let mut status = serde_json::json!({"metadata": {}, "code": code});
    let response = if json && (code >= 400 || r.level == crate::audit::Level::RequestResponse) {
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap_or_default();
        if let Ok(obj) = serde_json::from_slice::<Value>(&bytes) {
            if code >= 400 {
                for k in ["status", "message", "reason", "details"] {
                    if let Some(v) = obj.get(k) {
                        status[k] = v.clone();
                    }
                }
            }
            if r.level == crate::audit::Level::RequestResponse {
                r.set("responseObject", obj);
            }
        }
        Response::from_parts(parts, axum::body::Body::from(bytes))
    } else {
        response
    };
    r.set("responseStatus", status);
    audit.write(&r, "ResponseComplete");
    response
}

/// The client's address, for the audit log's sourceIPs.
#[derive(Clone, Copy)]
pub struct PeerAddr(pub std::net::SocketAddr);

tokio::task_local! {
    /// The user a request's handler runs for (upstream keeps it in the request context);
    /// writes made outside a request (bootstrap, controllers in the server) have none.
    pub static REQUESTER: Arc<UserInfo>;
    /// Annotations admission adds to the request's audit event (set only when it is audited).
    static AUDIT_ANNOTATIONS: Arc<std::sync::Mutex<Vec<(String, String)>>>;
}

/// Adds an annotation to the audit event of the request being served (nothing when it is
/// not audited).
pub fn audit_annotate(key: &str, value: &str) {
    let _ = AUDIT_ANNOTATIONS.try_with(|notes| {
        notes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((key.to_string(), value.to_string()));
    });
}

#[cfg(test)]
mod token_cache_tests {
    use super::*;

    #[test]
    fn a_token_is_kept_by_itself_and_the_audiences_it_was_checked_for() {
        let cache = TokenCache::new();
        let user = UserInfo::service_account("dev", "builder", "u-1");
        let key = cache.key("token-a", None);
        assert_eq!(cache.get(&key), None);
        cache.put(key, &user);
        assert_eq!(cache.get(&cache.key("token-a", None)), Some(user.clone()));
        assert_eq!(cache.get(&cache.key("token-b", None)), None);
        assert_eq!(cache.get(&cache.key("token-a", Some(&[]))), None);
        let audiences = ["api".to_string()];
        assert_eq!(cache.get(&cache.key("token-a", Some(&audiences))), None);
        // Another server's cache (another salt) keys the same token differently.
        assert_ne!(TokenCache::new().key("token-a", None), key);
    }
}

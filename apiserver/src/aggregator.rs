//! The aggregation layer (upstream's kube-aggregator). An APIService with a `spec.service`
//! names an extension API server that serves its group version:
//! - requests under `/apis/<group>/<version>` are proxied to the service's endpoints over
//!   HTTPS, after this server authenticated and authorized them. The proxy presents the
//!   front-proxy client certificate and says who asked in `X-Remote-User`, `X-Remote-Group`
//!   and `X-Remote-Extra-*`. An APIService that is not Available gets 503.
//! - an availability check (upstream's remote AvailableConditionController) resolves the
//!   service and GETs its `/apis/<group>/<version>` as `system:kube-aggregator`. It writes the
//!   Available condition with upstream's reasons (Passed, ServiceNotFound, MissingEndpoints,
//!   FailedDiscoveryCheck, ...), on changes to APIServices, services and endpoints, and every
//!   10 seconds.
//! - the resource list that check returns feeds discovery: `/apis` (legacy and aggregated)
//!   and `/apis/<group>` list the remote group versions beside the local ones.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};

use crate::cache::{Derived, WatchCache, parsed};
use crate::handlers::{self, Ctx};
use crate::registry::{self, Resource};
use crate::request::Target;
use crate::services::{self, error_chain};

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>;

/// What a client is built for: the server name, the CA bundle, insecureSkipTLSVerify.
type ClientKey = (String, Option<Vec<u8>>, bool);

/// The certificate the proxy presents to extension API servers, and the CA that signed it.
#[derive(Clone)]
pub struct FrontProxy {
    pub ca_pem: String,
    pub client: kelp_auth::Credentials,
}

/// An APIService served by an extension API server.
#[derive(Clone, Debug)]
pub struct Remote {
    pub name: String,
    pub group: String,
    pub version: String,
    pub group_priority: i64,
    pub version_priority: i64,
    namespace: String,
    service: String,
    port: i64,
    ca_bundle: Option<Vec<u8>>,
    insecure: bool,
    /// Its Available condition is True.
    pub available: bool,
}

impl Remote {
    fn from_object(o: &Value) -> Option<Remote> {
        let service = o.pointer("/spec/service").filter(|s| s.is_object())?;
        let text = |v: &Value, p: &str| {
            v.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let int = |p: &str| o.pointer(p).and_then(Value::as_i64).unwrap_or(0);
        use base64::Engine;
        Some(Remote {
            name: text(o, "/metadata/name"),
            group: text(o, "/spec/group"),
            version: text(o, "/spec/version"),
            group_priority: int("/spec/groupPriorityMinimum"),
            version_priority: int("/spec/versionPriority"),
            namespace: text(service, "/namespace"),
            service: text(service, "/name"),
            port: service.get("port").and_then(Value::as_i64).unwrap_or(443),
            ca_bundle: o
                .pointer("/spec/caBundle")
                .and_then(Value::as_str)
                .filter(|b| !b.is_empty())
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok()),
            insecure: o.pointer("/spec/insecureSkipTLSVerify") == Some(&Value::Bool(true)),
            available: available_condition(o)
                .is_some_and(|c| c.get("status").and_then(Value::as_str) == Some("True")),
        })
    }
}

fn available_condition(o: &Value) -> Option<&Value> {
    o.pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("Available"))
}

/// A remote group version as discovery lists it.
pub struct RemoteVersion {
    pub group: String,
    pub version: String,
    /// The resources its server listed at the last check that reached it (legacy
    /// APIResource entries), with whether that check is the latest.
    pub resources: Option<(Vec<Value>, bool)>,
}

pub struct Aggregator {
    cache: Arc<WatchCache>,
    front_proxy: FrontProxy,
    api_services: &'static Resource,
    /// The APIServices that name a service, in upstream's discovery order.
    remotes: Derived<Vec<Remote>>,
    /// Clients by (server name, CA bundle, insecure).
    clients: Mutex<HashMap<ClientKey, HttpsClient>>,
    /// Resource lists by APIService name, and whether the latest check got them.
    discovered: Mutex<BTreeMap<String, (Vec<Value>, bool)>>,
    /// OpenAPI v3 documents by path (`apis/<group>/<version>`).
    openapi: Mutex<BTreeMap<String, OpenApiCopy>>,
}

/// An extension server's OpenAPI v3 document: the URL it was fetched from, its hash, and it.
type OpenApiCopy = (String, String, Vec<u8>);

const USER: &str = "X-Remote-User";
const GROUP: &str = "X-Remote-Group";
const EXTRA: &str = "X-Remote-Extra-";

/// Accepts any server certificate (`insecureSkipTLSVerify`), still checking the handshake's
/// signatures.
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Plain text with a status, as upstream's proxy writes its errors (clients show a 503 as
/// "the server is currently unable to handle the request").
fn proxy_error(status: StatusCode, text: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{text}\n"),
    )
        .into_response()
}

/// Headers a proxy does not pass on (hop by hop), and what the proxy sets itself.
fn passed_on(name: &HeaderName) -> bool {
    let n = name.as_str();
    !matches!(
        n,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "authorization"
    ) && !n.starts_with("impersonate-")
        && !n.starts_with("x-remote-")
}

/// Upstream's headerKeyEscape: a user-info extra key as a header name suffix (bytes outside
/// the token characters, and `%`, percent-encoded).
fn escape_key(key: &str) -> String {
    key.bytes()
        .map(|b| {
            let token = b.is_ascii_alphanumeric() || b"!#$&'*+-.^_`|~".contains(&b);
            if token {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn user_headers(headers: &mut HeaderMap, user: &kelp_auth::UserInfo) {
    let value = |v: &str| HeaderValue::from_str(v).ok();
    if let Some(v) = value(&user.name) {
        headers.insert(USER, v);
    }
    for g in &user.groups {
        if let Some(v) = value(g) {
            headers.append(GROUP, v);
        }
    }
    for (key, values) in &user.extra {
        let Ok(name) = HeaderName::try_from(format!("{EXTRA}{}", escape_key(key))) else {
            continue;
        };
        for v in values.iter().filter_map(|v| value(v)) {
            headers.append(name.clone(), v);
        }
    }
}

/// Where the objects the aggregator follows are kept (upstream's etcd layout, as the
/// registry names it).
const API_SERVICES: &str = "/registry/apiservices/";
const SERVICES: &str = "/registry/services/specs/";
const ENDPOINTS: &str = "/registry/services/endpoints/";

/// The APIServices that name a service: groups by priority, then versions by theirs, highest
/// first (upstream's order).
fn remote_api_services(cache: &WatchCache) -> Vec<Remote> {
    let mut out: Vec<Remote> = parsed::<Value>(cache, API_SERVICES)
        .iter()
        .filter_map(Remote::from_object)
        .collect();
    out.sort_by(|a, b| {
        (b.group_priority, &a.group, b.version_priority, &a.version).cmp(&(
            a.group_priority,
            &b.group,
            a.version_priority,
            &b.version,
        ))
    });
    out
}

impl Aggregator {
    pub fn new(cache: Arc<WatchCache>, front_proxy: FrontProxy) -> Option<Arc<Aggregator>> {
        Some(Arc::new(Aggregator {
            cache: cache.clone(),
            front_proxy,
            api_services: registry::lookup("apiregistration.k8s.io", "v1", "apiservices")?,
            remotes: Derived::new(cache.clone(), &[API_SERVICES], remote_api_services),
            clients: Mutex::new(HashMap::new()),
            discovered: Mutex::new(BTreeMap::new()),
            openapi: Mutex::new(BTreeMap::new()),
        }))
    }

    /// The remote APIService serving `group/version`, if it is one.
    pub fn remote(&self, group: &str, version: &str) -> Option<Remote> {
        let key = self.api_services.key(None, &format!("{version}.{group}"));
        Remote::from_object(&*self.cache.parsed(&key)?)
    }

    fn remotes(&self) -> Arc<Vec<Remote>> {
        self.remotes.current()
    }

    /// The remote group versions, with what discovery knows of their resources.
    pub fn remote_versions(&self) -> Vec<RemoteVersion> {
        let discovered = self.discovered.lock().unwrap_or_else(|e| e.into_inner());
        self.remotes()
            .iter()
            .map(|r| RemoteVersion {
                resources: discovered.get(&r.name).cloned(),
                group: r.group.clone(),
                version: r.version.clone(),
            })
            .collect()
    }

    fn client(&self, r: &Remote, server_name: &str) -> Result<HttpsClient, String> {
        let key = (server_name.to_string(), r.ca_bundle.clone(), r.insecure);
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = if r.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
        } else {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(r.ca_bundle.as_deref().unwrap_or_default()) {
                let cert = cert.map_err(|e| format!("caBundle: {e}"))?;
                roots.add(cert).map_err(|e| format!("caBundle: {e}"))?;
            }
            builder.with_root_certificates(roots)
        };
        let chain = CertificateDer::pem_slice_iter(self.front_proxy.client.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("proxy client certificate: {e}"))?;
        let key_der = PrivateKeyDer::from_pem_slice(self.front_proxy.client.key_pem.as_bytes())
            .map_err(|e| format!("proxy client key: {e}"))?;
        let config = builder
            .with_client_auth_cert(chain, key_der)
            .map_err(|e| format!("proxy client certificate: {e}"))?;
        let name = server_name.to_string();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_only()
            .with_server_name_resolver(move |_: &Uri| {
                rustls::pki_types::ServerName::try_from(name.clone())
            })
            .enable_http1()
            .build();
        let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
        clients.insert(key, client.clone());
        Ok(client)
    }

    /// Proxies a request for `r`'s group version to its server, as `user`.
    pub async fn proxy(
        &self,
        r: &Remote,
        user: Option<&kelp_auth::UserInfo>,
        method: Method,
        uri: &Uri,
        headers: HeaderMap,
        body: Body,
    ) -> Response {
        if !r.available {
            return proxy_error(StatusCode::SERVICE_UNAVAILABLE, "service unavailable");
        }
        let Some(user) = user else {
            return proxy_error(StatusCode::INTERNAL_SERVER_ERROR, "missing user");
        };
        let endpoint = match services::resolve(&self.cache, &r.namespace, &r.service, r.port) {
            Ok(e) => e,
            Err(e) => {
                tracing::debug!(api_service = %r.name, error = %e.message(&r.namespace, &r.service), "cannot resolve");
                return proxy_error(StatusCode::SERVICE_UNAVAILABLE, "service unavailable");
            }
        };
        let client = match self.client(r, &endpoint.server_name) {
            Ok(c) => c,
            Err(e) => return proxy_error(StatusCode::INTERNAL_SERVER_ERROR, &e),
        };
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let Ok(location) = format!("https://{}{path}", endpoint.authority).parse::<Uri>() else {
            return proxy_error(StatusCode::BAD_REQUEST, "invalid request URI");
        };
        let mut forwarded = HeaderMap::new();
        for (name, value) in headers.iter().filter(|(n, _)| passed_on(n)) {
            forwarded.append(name.clone(), value.clone());
        }
        user_headers(&mut forwarded, user);
        let mut request = axum::http::Request::new(body);
        *request.method_mut() = method;
        *request.uri_mut() = location;
        *request.headers_mut() = forwarded;
        match client.request(request).await {
            Ok(response) => {
                let (mut parts, incoming) = response.into_parts();
                let hop: Vec<HeaderName> = parts
                    .headers
                    .keys()
                    .filter(|n| {
                        matches!(
                            n.as_str(),
                            "connection"
                                | "keep-alive"
                                | "transfer-encoding"
                                | "trailer"
                                | "upgrade"
                        )
                    })
                    .cloned()
                    .collect();
                for n in hop {
                    parts.headers.remove(n);
                }
                Response::from_parts(parts, Body::new(incoming))
            }
            Err(e) => proxy_error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("error trying to reach service: {}", error_chain(&e)),
            ),
        }
    }

    /// Upstream's availability check of one remote APIService: the condition it earns, and
    /// the resources its server lists when it answered.
    async fn check(&self, r: &Remote) -> (Value, Option<Vec<Value>>) {
        let condition = |status: &str, reason: &str, message: String| json!({"type": "Available", "status": status, "reason": reason, "message": message});
        let endpoint = match services::resolve(&self.cache, &r.namespace, &r.service, r.port) {
            Ok(e) => e,
            Err(e) => {
                let message = e.message(&r.namespace, &r.service);
                return (condition("False", e.reason(), message), None);
            }
        };
        let url = format!(
            "https://{}/apis/{}/{}",
            endpoint.authority, r.group, r.version
        );
        let failed = |why: String| {
            condition(
                "False",
                "FailedDiscoveryCheck",
                format!("failing or missing response from {url}: {why}"),
            )
        };
        let client = match self.client(r, &endpoint.server_name) {
            Ok(c) => c,
            Err(e) => return (failed(e), None),
        };
        let body = match get(&client, &url).await {
            Ok(body) => body,
            Err(e) => return (failed(e), None),
        };
        let resources = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|l| l.get("resources").and_then(Value::as_array).cloned())
            .unwrap_or_default();
        self.fetch_openapi(r, &client, &endpoint.authority).await;
        (
            condition("True", "Passed", "all checks passed".into()),
            Some(resources),
        )
    }

    /// Keeps a copy of the OpenAPI v3 document the server lists for `r`'s group version
    /// (fetched again when the URL, which carries its hash, changes), as upstream's OpenAPI
    /// v3 aggregation does.
    async fn fetch_openapi(&self, r: &Remote, client: &HttpsClient, authority: &str) {
        let path = format!("apis/{}/{}", r.group, r.version);
        let Ok(index) = get(client, &format!("https://{authority}/openapi/v3")).await else {
            return;
        };
        let url = serde_json::from_slice::<Value>(&index).ok().and_then(|i| {
            i.pointer(&format!(
                "/paths/{}/serverRelativeURL",
                path.replace('/', "~1")
            ))
            .and_then(Value::as_str)
            .map(str::to_string)
        });
        let Some(url) = url.filter(|u| u.starts_with('/')) else {
            self.openapi().remove(&path);
            return;
        };
        if self.openapi().get(&path).is_some_and(|(u, ..)| *u == url) {
            return;
        }
        if let Ok(doc) = get(client, &format!("https://{authority}{url}")).await {
            let hash = crate::openapi::hash(&doc);
            self.openapi().insert(path, (url, hash, doc.to_vec()));
        }
    }

    fn openapi(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, OpenApiCopy>> {
        self.openapi.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The paths (`apis/<group>/<version>`) of the extension servers' OpenAPI v3 documents,
    /// with their hashes.
    pub fn openapi_paths(&self) -> Vec<(String, String)> {
        self.openapi()
            .iter()
            .map(|(path, (_, hash, _))| (path.clone(), hash.clone()))
            .collect()
    }

    /// An extension server's OpenAPI v3 document: (hash, JSON).
    pub fn openapi_document(&self, path: &str) -> Option<(String, Vec<u8>)> {
        self.openapi()
            .get(path)
            .map(|(_, hash, doc)| (hash.clone(), doc.clone()))
    }

    /// Checks every remote APIService, records what discovery learnt and writes changed
    /// Available conditions.
    async fn check_all(&self, ctx: &Ctx) {
        let remotes = self.remotes();
        let names: Vec<String> = remotes.iter().map(|r| r.name.clone()).collect();
        self.discovered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|name, _| names.contains(name));
        let paths: Vec<String> = remotes
            .iter()
            .map(|r| format!("apis/{}/{}", r.group, r.version))
            .collect();
        self.openapi().retain(|path, _| paths.contains(path));
        let checks = remotes
            .iter()
            .map(|r| async move { (r, self.check(r).await) });
        for (r, (condition, resources)) in futures::future::join_all(checks).await {
            {
                let mut discovered = self.discovered.lock().unwrap_or_else(|e| e.into_inner());
                match resources {
                    Some(list) => {
                        discovered.insert(r.name.clone(), (list, true));
                    }
                    None => {
                        if let Some(d) = discovered.get_mut(&r.name) {
                            d.1 = false;
                        }
                    }
                }
            }
            self.write_condition(ctx, &r.name, condition).await;
        }
    }

    async fn write_condition(&self, ctx: &Ctx, name: &str, mut condition: Value) {
        let Some(current) = self.cache.parsed(&self.api_services.key(None, name)) else {
            return;
        };
        let old = available_condition(&current);
        let same = |k: &str| old.and_then(|c| c.get(k)) == condition.get(k);
        if same("status") && same("reason") && same("message") {
            return;
        }
        condition["lastTransitionTime"] = match old {
            Some(c) if same("status") => c["lastTransitionTime"].clone(),
            _ => json!(crate::object::now()),
        };
        let mut object = (*current).clone();
        let mut conditions: Vec<Value> = object
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        conditions.retain(|c| c.get("type").and_then(Value::as_str) != Some("Available"));
        conditions.push(condition);
        object["status"] = json!({"conditions": conditions});
        let target = Target {
            resource: self.api_services,
            namespace: None,
            name: Some(name.to_string()),
            subresource: Some("status".into()),
        };
        let written = handlers::serve(
            ctx,
            &Method::PUT,
            target,
            &HashMap::new(),
            &HeaderMap::new(),
            object.to_string().into(),
        )
        .await;
        if let Err(e) = written {
            tracing::debug!(api_service = %name, error = %e.message, "cannot write the Available condition");
        }
    }

    /// Runs the availability checks: on changes to APIServices, services and endpoints (at
    /// most once a second), and every 10 seconds.
    pub fn run(self: &Arc<Self>, ctx: Arc<Ctx>) {
        let tracker = self.cache.track(&[API_SERVICES, SERVICES, ENDPOINTS]);
        let mut revision = self.cache.revision();
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut seen = 0;
            let mut last = tokio::time::Instant::now() - Duration::from_secs(60);
            loop {
                let due = last + Duration::from_secs(10);
                tokio::select! {
                    changed = revision.changed() => if changed.is_err() { return },
                    _ = tokio::time::sleep_until(due) => {}
                }
                if *revision.borrow() < 0 {
                    continue;
                }
                let now = tokio::time::Instant::now();
                if tracker.changes() == seen && now < due {
                    continue;
                }
                tokio::time::sleep_until(last + Duration::from_secs(1)).await;
                seen = tracker.changes();
                last = tokio::time::Instant::now();
                let Some(this) = this.upgrade() else { return };
                if this.remotes().is_empty() {
                    this.discovered
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clear();
                    continue;
                }
                this.check_all(&ctx).await;
            }
        });
    }
}

/// GETs `url` as the aggregator (`system:kube-aggregator` in `system:masters`), within 5 s.
async fn get(client: &HttpsClient, url: &str) -> Result<axum::body::Bytes, String> {
    let uri = url
        .parse::<Uri>()
        .map_err(|e| format!("invalid URL: {e}"))?;
    let mut request = axum::http::Request::new(Body::empty());
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    headers.insert(USER, HeaderValue::from_static("system:kube-aggregator"));
    headers.insert(GROUP, HeaderValue::from_static("system:masters"));
    match services::exchange(client, request, Duration::from_secs(5)).await {
        Ok((status, body)) if status.is_success() => Ok(body),
        Ok((status, _)) => Err(format!("bad status from {url}: {}", status.as_u16())),
        Err(Some(e)) => Err(e),
        Err(None) => Err("Get: context deadline exceeded".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn followed_prefixes_are_the_registrys() {
        let prefix =
            |g: &str, plural: &str| registry::lookup(g, "v1", plural).unwrap().key_prefix(None);
        assert_eq!(
            API_SERVICES,
            prefix("apiregistration.k8s.io", "apiservices")
        );
        assert_eq!(SERVICES, prefix("", "services"));
        assert_eq!(ENDPOINTS, prefix("", "endpoints"));
    }

    #[test]
    fn user_info_becomes_request_headers() {
        let mut user = kelp_auth::UserInfo::new("jane", &["devs", "system:authenticated"]);
        user.extra.insert(
            "scopes.example.com/a b".into(),
            vec!["x".into(), "y".into()],
        );
        let mut headers = HeaderMap::new();
        headers.insert(USER, HeaderValue::from_static("forged"));
        user_headers(&mut headers, &user);
        assert_eq!(headers.get(USER).unwrap(), "jane");
        let groups: Vec<_> = headers.get_all(GROUP).iter().collect();
        assert_eq!(groups, ["devs", "system:authenticated"]);
        let extra: Vec<_> = headers
            .get_all("x-remote-extra-scopes.example.com%2Fa%20b")
            .iter()
            .collect();
        assert_eq!(extra, ["x", "y"]);
    }

    #[test]
    fn credentials_and_hop_headers_are_not_passed_on() {
        for name in [
            "authorization",
            "impersonate-user",
            "x-remote-user",
            "connection",
            "host",
        ] {
            assert!(!passed_on(&HeaderName::from_static(name)), "{name}");
        }
        for name in ["accept", "content-type", "user-agent"] {
            assert!(passed_on(&HeaderName::from_static(name)), "{name}");
        }
    }
}

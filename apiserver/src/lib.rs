//! kelp-apiserver: the Kubernetes API over HTTPS, served from kelp-storage.
//!
//! Requests are routed by path to discovery or to the generic REST handlers, which serve every
//! entry of the resource registry the same way (upstream's generic store). Objects travel as
//! JSON values; their resourceVersion is the storage revision of their last write.

mod admission;
mod aggregator;
mod allocator;
pub mod audit;
mod cache;
mod components;
mod crd;
mod discovery;
pub mod encryption;
mod error;
mod fieldmanager;
mod handlers;
mod metrics;
mod object;
mod openapi;
mod patch;
mod pods;
mod protobuf;
mod registry;
mod request;
mod security;
mod selector;
mod services;
mod strict;
mod table;
mod typed;
mod vap;
mod webhook;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use hyper_util::rt::{TokioExecutor, TokioIo};
use kelp_storage::Backend;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use serde_json::json;
use tokio::sync::watch;

pub use error::ApiError;
pub use security::ClientCert;

/// The Kubernetes version Kelp serves; kubectl's dispatcher picks its binary by the minor.
pub const KUBERNETES_VERSION: &str = "v1.33.0";

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

pub struct Config {
    pub listen: SocketAddr,
    pub serving_cert_pem: String,
    pub serving_key_pem: String,
    /// Client certificates signed by this CA authenticate their subject (clients may also
    /// present none; a certificate that does not verify gets 401).
    pub client_ca_pem: String,
    /// `--token-auth-file`.
    pub token_file: Option<kelp_auth::TokenFile>,
    /// Signs and verifies service-account tokens.
    pub service_accounts: Arc<kelp_auth::serviceaccount::ServiceAccountKeys>,
    /// The audit log (`--audit-policy-file`, `--audit-log-path`).
    pub audit: Option<Arc<audit::Audit>>,
    /// The aggregation layer's client certificate (None: APIServices with a service are
    /// not proxied).
    pub front_proxy: Option<FrontProxy>,
}

pub use aggregator::FrontProxy;

/// A running API server.
pub struct Server {
    pub local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Stops accepting connections and waits for the accept loop to end.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

#[derive(Clone)]
struct AppState {
    backend: Backend,
    advertise: String,
    openapi: Arc<openapi::OpenApi>,
    metrics: Arc<metrics::Metrics>,
    ctx: Arc<handlers::Ctx>,
    aggregator: Option<Arc<aggregator::Aggregator>>,
}

/// The verifier of client certificates against the cluster CA.
fn client_verifier(ca_pem: &str) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(ca.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .allow_unauthenticated()
        .build()
        .map_err(|e| e.to_string())
}

/// The handshake's verifier: asks for a certificate and checks that the client holds its key,
/// but leaves whether it is trusted to the authenticator, so that a bad or expired
/// certificate gets a 401 (as upstream's x509 authenticator gives) rather than a failed
/// handshake.
#[derive(Debug)]
struct AnyClientCert(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.0.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

fn tls_config(config: &Config) -> Result<rustls::ServerConfig, ServeError> {
    let tls = |e: &dyn std::fmt::Display| ServeError::Tls(e.to_string());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AnyClientCert(
        client_verifier(&config.client_ca_pem).map_err(|e| tls(&e))?,
    ));
    let certs = CertificateDer::pem_slice_iter(config.serving_cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls(&e))?;
    let key =
        PrivateKeyDer::from_pem_slice(config.serving_key_pem.as_bytes()).map_err(|e| tls(&e))?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| tls(&e))?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(server)
}

/// Creates what a fresh cluster has (the four system namespaces), then serves HTTPS.
pub async fn start(config: Config, backend: Backend) -> Result<Server, ServeError> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls_config(&config)?));
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: config.listen,
        source,
    })?;
    bootstrap(&backend).await;
    kubernetes_endpoints(&backend, local_addr).await;
    publish_authentication(
        &backend,
        &config.client_ca_pem,
        config.front_proxy.as_ref().map(|f| f.ca_pem.as_str()),
    )
    .await;
    security::reconcile::reconcile(&bootstrap_ctx(&backend)).await;
    let security = security::SecurityConfig {
        token_file: config.token_file,
        service_accounts: config.service_accounts,
        client_ca_pem: config.client_ca_pem,
        audit: config.audit,
    };
    let repair_backend = backend.clone();
    let (app, security) = router(
        backend,
        local_addr.to_string(),
        Some(security),
        config.front_proxy,
    )
    .map_err(ServeError::Tls)?;
    let security = security.expect("security is configured");
    let (shutdown, mut shutdown_rx) = watch::channel(false);
    // The ClusterIP repair, after the one bootstrap ran.
    let mut repair_stop = shutdown_rx.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(allocator::REPAIR_INTERVAL) => {}
                _ = repair_stop.changed() => return,
            }
            let now = jiff::Timestamp::now();
            if let Err(e) = allocator::repair_cluster_ips(&repair_backend, now).await {
                tracing::warn!(error = %e.message, "ClusterIP repair failed");
            }
        }
    });
    let task = tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        continue;
                    }
                },
                _ = shutdown_rx.changed() => return,
            };
            let (acceptor, app, security) = (acceptor.clone(), app.clone(), security.clone());
            tokio::spawn(async move {
                let tls = match acceptor.accept(tcp).await {
                    Ok(tls) => tls,
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                };
                // Who the certificate names is learnt once per connection.
                let cert = security.client_cert(tls.get_ref().1.peer_certificates());
                let app = tower::ServiceExt::map_request(
                    app,
                    move |mut req: axum::extract::Request<_>| {
                        req.extensions_mut().insert(cert.clone());
                        req.extensions_mut().insert(security::PeerAddr(peer));
                        req
                    },
                );
                let service = hyper_util::service::TowerToHyperService::new(app);
                let served = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tls), service)
                    .await;
                if let Err(e) = served {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            });
        }
    });
    Ok(Server {
        local_addr,
        shutdown,
        task,
    })
}

/// The API as a router without TLS and without authentication or authorization, every
/// request acting as the server itself: for tests that drive the handlers directly.
/// `advertise` is the `host:port` legacy discovery reports.
pub fn app(backend: Backend, advertise: String) -> Router {
    router(backend, advertise, None, None)
        .map(|(r, _)| r)
        .expect("no security, nothing to misconfigure")
}

/// The API as a router, behind the security pipeline when `security` is given (what
/// [`start`] serves).
fn router(
    backend: Backend,
    advertise: String,
    security: Option<security::SecurityConfig>,
    front_proxy: Option<FrontProxy>,
) -> Result<(Router, Option<Arc<security::Security>>), String> {
    let metrics = Arc::new(metrics::Metrics::new());
    let cache = cache::WatchCache::start(backend.clone());
    let security = match security {
        Some(config) => Some(Arc::new(security::Security::new(
            config,
            backend.clone(),
            cache.clone(),
        )?)),
        None => None,
    };
    let ctx = Arc::new(handlers::Ctx {
        backend: backend.clone(),
        webhooks: security
            .as_ref()
            .map(|_| Arc::new(webhook::Webhooks::new(cache.clone()))),
        policies: security
            .as_ref()
            .map(|_| Arc::new(vap::Policies::new(cache.clone()))),
        security: security.clone(),
        metrics: Some(metrics.clone()),
        cache: Some(cache.clone()),
        crds: Some(crd::CustomResources::start(backend.clone())),
    });
    let aggregator = match (&security, front_proxy) {
        (Some(_), Some(front_proxy)) => aggregator::Aggregator::new(cache.clone(), front_proxy),
        _ => None,
    };
    if let Some(a) = &aggregator {
        a.run(ctx.clone());
    }
    if security.is_some() {
        security::reconcile::run_aggregation(ctx.clone(), cache);
    }
    let state = AppState {
        aggregator,
        advertise,
        openapi: Arc::new(openapi::OpenApi::build()),
        metrics,
        ctx,
        backend,
    };
    let router = Router::new()
        .route("/version", get(version))
        .route("/healthz", get(health))
        .route("/livez", get(health))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics_text))
        .route("/api", get(api_root))
        .route("/api/", get(api_root))
        .route("/apis", get(groups_root))
        .route("/apis/", get(groups_root))
        .route(
            "/api/v1",
            get(|State(s): State<AppState>| async move { resources_or_404(&s, "", "v1") }),
        )
        .route("/apis/{group}", get(group_document))
        .route("/apis/{group}/", get(group_document))
        .route("/apis/{group}/{version}", any(group_version))
        .route(
            "/openapi/v3",
            get(|State(s): State<AppState>| async move {
                let mut custom = s.crds().map(|c| c.openapi_paths()).unwrap_or_default();
                if let Some(a) = &s.aggregator {
                    custom.extend(a.openapi_paths());
                }
                ok_json(&s.openapi.index(&custom))
            }),
        )
        .route("/openapi/v3/{*path}", get(openapi_document))
        .route("/openapi/v2", get(openapi_v2))
        .route("/api/v1/{*rest}", any(core_resource))
        .route("/apis/{group}/{version}/{*rest}", any(group_resource))
        .route(
            "/.well-known/openid-configuration",
            get(openid_configuration),
        )
        .route("/openid/v1/jwks", get(jwks))
        .fallback(|| async { ApiError::no_route().into_response() })
        .layer(DefaultBodyLimit::disable())
        .with_state(state);
    let router = match &security {
        Some(s) => router.layer(axum::middleware::from_fn_with_state(
            s.clone(),
            security::guard,
        )),
        None => router,
    };
    Ok((router, security))
}

/// The service-account issuer's OIDC discovery document.
async fn openid_configuration(State(s): State<AppState>) -> Response {
    let Some(security) = s.ctx.security.as_ref() else {
        return ApiError::no_route().into_response();
    };
    let jwks_uri = format!("https://{}/openid/v1/jwks", s.advertise);
    let doc = security.service_accounts.openid_configuration(&jwks_uri);
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        doc.to_string(),
    )
        .into_response()
}

/// The keys service-account tokens are signed with.
async fn jwks(State(s): State<AppState>) -> Response {
    let Some(security) = s.ctx.security.as_ref() else {
        return ApiError::no_route().into_response();
    };
    (
        [
            (header::CONTENT_TYPE, "application/jwk-set+json"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        security.service_accounts.jwks().to_string(),
    )
        .into_response()
}

/// `/apis`: the named groups.
/// `/api`: the legacy group's versions, or its aggregated discovery document.
async fn api_root(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let legacy = discovery::api_versions(&s.advertise);
    discovery_root(&s, &headers, true, legacy)
}

async fn groups_root(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let mut legacy = discovery::api_groups(&s.served());
    discovery::add_remote_groups(&mut legacy, &s.remote_versions());
    discovery_root(&s, &headers, false, legacy)
}

/// `/apis/<group>`: the APIGroup.
async fn group_document(State(s): State<AppState>, Path(g): Path<String>) -> Response {
    match discovery::group(&s.served(), &s.remote_versions(), &g) {
        Some(doc) => ok_json(&doc),
        None => ApiError::no_route().into_response(),
    }
}

impl AppState {
    fn crds(&self) -> Option<&crd::CustomResources> {
        self.ctx.crds.as_deref()
    }

    /// The extension server's APIService for `group/version`, if an APIService names one.
    fn remote(
        &self,
        group: &str,
        version: &str,
    ) -> Option<(&aggregator::Aggregator, aggregator::Remote)> {
        let a = self.aggregator.as_deref()?;
        Some((a, a.remote(group, version)?))
    }

    /// The group versions extension API servers serve.
    fn remote_versions(&self) -> Vec<aggregator::RemoteVersion> {
        self.aggregator
            .as_ref()
            .map(|a| a.remote_versions())
            .unwrap_or_default()
    }

    /// What is served now: the built-in kinds and the established custom resources.
    fn served(&self) -> Vec<&'static registry::Resource> {
        registry::served(self.crds())
    }
}

/// `/api` or `/apis`: aggregated discovery when Accept asks for it first, else legacy.
fn discovery_root(
    s: &AppState,
    headers: &HeaderMap,
    core: bool,
    legacy: serde_json::Value,
) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match discovery::aggregated_version(accept) {
        Some(version) => Response::builder()
            .status(StatusCode::OK)
            .header(
                header::CONTENT_TYPE,
                discovery::aggregated_content_type(version),
            )
            .header(header::VARY, "Accept")
            .body(Body::from(
                serde_json::to_vec(&{
                    let mut list = discovery::aggregated(&s.served(), version, core);
                    if !core {
                        discovery::add_remote_aggregated(&mut list, &s.remote_versions());
                    }
                    list
                })
                .unwrap_or_default(),
            ))
            .unwrap_or_default(),
        None => ok_json(&legacy),
    }
}

fn ok_json(v: &serde_json::Value) -> Response {
    handlers::json_response(StatusCode::OK, v)
}

fn resources_or_404(s: &AppState, group: &str, version: &str) -> Response {
    match discovery::api_resources(&s.served(), group, version) {
        Some(list) => ok_json(&list),
        None => ApiError::no_route().into_response(),
    }
}

/// The Swagger 2.0 document, as JSON (the protobuf form client-go's OpenAPISchema asks for is
/// not served: 406), with an ETag that `If-None-Match` matches for a 304.
async fn openapi_v2(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let json_ok = accept.is_empty()
        || accept.split(',').any(|m| {
            matches!(
                m.split(';').next().unwrap_or("").trim(),
                "application/json" | "application/*" | "*/*"
            )
        });
    if !json_ok {
        return ApiError::not_acceptable().into_response();
    }
    let custom = s.crds().map(|c| c.openapi_documents()).unwrap_or_default();
    let doc = s.openapi.v2(&custom);
    let (hash, bytes) = (&doc.0, &doc.1);
    let etag = format!("\"{hash}\"");
    let builder = Response::builder()
        .header(header::ETAG, &etag)
        .header(header::VARY, "Accept");
    let matched = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    if matched {
        return builder
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .unwrap_or_default();
    }
    builder
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(bytes.clone()))
        .unwrap_or_default()
}

/// A group/version's OpenAPI document; immutable for its hash, as upstream serves it.
async fn openapi_document(State(s): State<AppState>, Path(path): Path<String>) -> Response {
    let custom = s
        .crds()
        .and_then(|c| c.openapi_document(&path))
        .or_else(|| s.aggregator.as_ref()?.openapi_document(&path));
    let found = s
        .openapi
        .document(&path)
        .map(|(h, d)| (h.to_string(), d.to_vec()))
        .or(custom);
    match found {
        Some((hash, doc)) => Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ETAG, format!("\"{hash}\""))
            .header(header::CACHE_CONTROL, "public, immutable")
            .header(header::VARY, "Accept")
            .body(Body::from(doc))
            .unwrap_or_default(),
        None => ApiError::no_route().into_response(),
    }
}

async fn version() -> Response {
    let minor = KUBERNETES_VERSION.split('.').nth(1).unwrap_or("33");
    ok_json(&json!({
        "major": "1",
        "minor": minor,
        "gitVersion": format!("{KUBERNETES_VERSION}+kelp{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "n/a (Rust)",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, if cfg!(target_arch = "x86_64") { "amd64" } else { std::env::consts::ARCH }),
    }))
}

async fn metrics_text(State(s): State<AppState>) -> Response {
    let (head, compact) = s.backend.revisions().await.unwrap_or((0, 0));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.encode(&metrics::StorageFigures {
            revision: head,
            compact_revision: compact,
            writes: s.backend.write_stats(),
        }),
    )
        .into_response()
}

async fn health() -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "ok").into_response()
}

/// Ready when the datastore answers.
async fn ready(State(s): State<AppState>) -> Response {
    match s.backend.revisions().await {
        Ok(_) => health().await,
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("[-]etcd failed: {e}\nreadyz check failed"),
        )
            .into_response(),
    }
}

struct ResourceRequest {
    requester: Option<security::Requester>,
    method: Method,
    query: HashMap<String, String>,
    headers: HeaderMap,
    body: Body,
}

async fn core_resource(
    State(s): State<AppState>,
    requester: Option<axum::Extension<security::Requester>>,
    Path(rest): Path<String>,
    method: Method,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    resource(
        s,
        "",
        "v1",
        &rest,
        ResourceRequest {
            requester: requester.map(|e| e.0),
            method,
            query,
            headers,
            body,
        },
    )
    .await
}

/// `/apis/<group>/<version>`: the resource list, or the extension server's answer.
async fn group_version(
    State(s): State<AppState>,
    requester: Option<axum::Extension<security::Requester>>,
    Path((group, version)): Path<(String, String)>,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Some((a, remote)) = s.remote(&group, &version) {
        let user = requester.as_ref().map(|r| &*r.0.0);
        return a.proxy(&remote, user, method, &uri, headers, body).await;
    }
    if method != Method::GET {
        return ApiError::method_not_allowed(format!("{method} is not supported")).into_response();
    }
    resources_or_404(&s, &group, &version)
}

#[allow(clippy::too_many_arguments)]
async fn group_resource(
    State(s): State<AppState>,
    requester: Option<axum::Extension<security::Requester>>,
    Path((group, version, rest)): Path<(String, String, String)>,
    method: Method,
    uri: axum::http::Uri,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Some((a, remote)) = s.remote(&group, &version) {
        let user = requester.as_ref().map(|r| &*r.0.0);
        return a.proxy(&remote, user, method, &uri, headers, body).await;
    }
    resource(
        s,
        &group,
        &version,
        &rest,
        ResourceRequest {
            requester: requester.map(|e| e.0),
            method,
            query,
            headers,
            body,
        },
    )
    .await
}

async fn resource(
    s: AppState,
    group: &str,
    version: &str,
    rest: &str,
    req: ResourceRequest,
) -> Response {
    let started = std::time::Instant::now();
    let wants_yaml = req
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| {
            a.split(',')
                .next()
                .is_some_and(|first| first.trim().starts_with("application/yaml"))
        });
    let watching = req
        .query
        .get("watch")
        .is_some_and(|w| w == "true" || w == "1");
    let target = request::parse(s.crds(), group, version, rest);
    let (resource, named, deprecation) = match &target {
        Ok(t) => (t.resource.plural, t.name.is_some(), t.resource.deprecation),
        Err(_) => ("", false, None),
    };
    let verb = match (&req.method, named, watching) {
        (&Method::GET, false, true) => "watch",
        (&Method::GET, true, _) => "get",
        (&Method::GET, false, false) => "list",
        (&Method::POST, _, _) => "create",
        (&Method::PUT, _, _) => "update",
        (&Method::PATCH, _, _) => "patch",
        (&Method::DELETE, true, _) => "delete",
        (&Method::DELETE, false, _) => "deletecollection",
        _ => "unknown",
    };
    let result = async {
        let target = target?;
        let body = axum::body::to_bytes(req.body, handlers::MAX_BODY_BYTES)
            .await
            .map_err(|_| ApiError::too_large())?;
        let (Some(security), Some(requester)) = (s.ctx.security.as_deref(), &req.requester) else {
            return handlers::serve(&s.ctx, &req.method, target, &req.query, &req.headers, body)
                .await;
        };
        let user = requester.0.clone();
        if let Some(answer) =
            security::reviews::serve(security, &user, &target, &req.method, &req.headers, &body)
                .await
        {
            return answer;
        }
        security::REQUESTER
            .scope(
                user,
                handlers::serve(&s.ctx, &req.method, target, &req.query, &req.headers, body),
            )
            .await
    }
    .await;
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    if let Some(warning) = deprecation {
        response = handlers::with_warnings(response, &[warning.to_string()]);
    }
    let labels = metrics::RequestLabels {
        verb,
        group,
        version,
        resource,
    };
    s.metrics
        .observe(&labels, response.status().as_u16(), started.elapsed());
    if wants_yaml && !watching {
        to_yaml(response).await
    } else {
        response
    }
}

/// Re-encodes a JSON response as YAML (`Accept: application/yaml`).
async fn to_yaml(response: Response) -> Response {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/json");
    if !is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return ApiError::internal("cannot read the response").into_response();
    };
    let yaml = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| serde_saphyr::to_string(&v).ok());
    match yaml {
        Some(y) => {
            parts.headers.insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/yaml"),
            );
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(y))
        }
        None => ApiError::internal("cannot encode the response as YAML").into_response(),
    }
}

/// What every cluster has: the four system namespaces and the `kubernetes` Service in
/// default at the first service IP.
fn bootstrap_ctx(backend: &Backend) -> handlers::Ctx {
    handlers::Ctx {
        backend: backend.clone(),
        security: None,
        webhooks: None,
        policies: None,
        metrics: None,
        cache: None,
        crds: None,
    }
}

/// The local APIServices (upstream's autoregistration): one per served built-in group version
/// upstream registers, Available since this server serves it.
async fn bootstrap_api_services(
    ctx: &handlers::Ctx,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) {
    let Some(api_services) = registry::lookup("apiregistration.k8s.io", "v1", "apiservices") else {
        return;
    };
    let served = registry::group_versions(&registry::all().collect::<Vec<_>>());
    // All at once: the writes share group commits.
    let registrations = registry::more::LOCAL_API_SERVICES
        .iter()
        .filter(|(group, version, ..)| served.contains(&(*group, *version)))
        .map(|(group, version, group_priority, version_priority)| async move {
            let name = format!("{version}.{group}");
            let target = |subresource: Option<&str>| request::Target {
                resource: api_services,
                namespace: None,
                name: subresource.map(|_| name.clone()),
                subresource: subresource.map(str::to_string),
            };
            let mut object = json!({
                "apiVersion": "apiregistration.k8s.io/v1",
                "kind": "APIService",
                "metadata": {"name": name, "labels": {"kube-aggregator.kubernetes.io/automanaged": "onstart"}},
                "spec": {"group": group, "version": version, "groupPriorityMinimum": group_priority, "versionPriority": version_priority},
            });
            let created = handlers::serve(ctx, &Method::POST, target(None), query, headers, object.to_string().into());
            match created.await {
                Ok(_) => {}
                Err(ApiError { reason: "AlreadyExists", .. }) => return,
                Err(e) => {
                    tracing::warn!(api_service = %name, error = %e.message, "cannot create");
                    return;
                }
            }
            object["status"] = json!({"conditions": [{
                "type": "Available",
                "status": "True",
                "lastTransitionTime": object::now(),
                "reason": "Local",
                "message": "Local APIServices are always available",
            }]});
            let status = handlers::serve(ctx, &Method::PUT, target(Some("status")), query, headers, object.to_string().into());
            if let Err(e) = status.await {
                tracing::warn!(api_service = %name, error = %e.message, "cannot mark available");
            }
        });
    futures::future::join_all(registrations).await;
}

/// The default ServiceCIDR, `kubernetes` (upstream's defaultservicecidr controller, run once at
/// start): the service network ClusterIPs are allocated from, marked Ready. One that exists
/// keeps its CIDRs; it is marked Ready when they are this server's and it has no Ready
/// condition yet. A mismatch, or Ready=False, is left to the administrator, as upstream does.
async fn default_service_cidr(
    backend: &Backend,
    ctx: &handlers::Ctx,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) {
    const NAME: &str = "kubernetes";
    let Some(cidrs) = registry::lookup("networking.k8s.io", "v1", "servicecidrs") else {
        return;
    };
    let stored = || async move {
        match backend.get(cidrs.key(None, NAME)).await {
            Ok((Some(kv), _)) => serde_json::from_slice::<serde_json::Value>(&kv.value).ok(),
            _ => None,
        }
    };
    let wanted = json!([allocator::SERVICE_CIDR]);
    if stored().await.is_none() {
        let object = json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "ServiceCIDR",
            "metadata": {"name": NAME},
            "spec": {"cidrs": wanted},
        });
        let target = request::Target {
            resource: cidrs,
            namespace: None,
            name: None,
            subresource: None,
        };
        let created = handlers::serve(
            ctx,
            &Method::POST,
            target,
            query,
            headers,
            object.to_string().into(),
        );
        match created.await {
            Ok(_) => tracing::info!(cidrs = %wanted, "created the default ServiceCIDR"),
            Err(e) if e.reason == "AlreadyExists" => {}
            Err(e) => {
                tracing::warn!(error = %e.message, "cannot create the default ServiceCIDR");
                return;
            }
        }
    }
    let Some(mut current) = stored().await else {
        return;
    };
    if current.pointer("/metadata/deletionTimestamp").is_some() {
        return;
    }
    if current.pointer("/spec/cidrs") != Some(&wanted) {
        let found = current["spec"]["cidrs"].to_string();
        tracing::warn!(
            configured = %wanted,
            %found,
            "the default ServiceCIDR does not match the service network: make them match or delete it"
        );
        return;
    }
    let conditions = current
        .pointer("/status/conditions")
        .and_then(serde_json::Value::as_array)
        .cloned()
        .unwrap_or_default();
    let ready = conditions.iter().find(|c| c["type"] == "Ready");
    if ready.is_some_and(|c| c["status"] == "True" || c["status"] == "False") {
        return;
    }
    let mut conditions: Vec<serde_json::Value> = conditions
        .into_iter()
        .filter(|c| c["type"] != "Ready")
        .collect();
    // Upstream's condition has no reason.
    conditions.push(json!({
        "type": "Ready",
        "status": "True",
        "lastTransitionTime": object::now(),
        "reason": "",
        "message": "Kubernetes default Service CIDR is ready",
    }));
    current["status"] = json!({"conditions": conditions});
    let target = request::Target {
        resource: cidrs,
        namespace: None,
        name: Some(NAME.into()),
        subresource: Some("status".into()),
    };
    // Upstream's controller applies the status as itself.
    let manager = HashMap::from([(
        "fieldManager".to_string(),
        "kubernetes-service-cidr-controller".to_string(),
    )]);
    let status = handlers::serve(
        ctx,
        &Method::PUT,
        target,
        &manager,
        headers,
        current.to_string().into(),
    );
    if let Err(e) = status.await {
        tracing::warn!(error = %e.message, "cannot mark the default ServiceCIDR Ready");
    }
}

/// The `kubernetes` Service's Endpoints and EndpointSlice name this server (upstream's
/// endpoint reconciler): its address (loopback when it listens on every address) and port,
/// added to what other servers of the cluster put there.
async fn kubernetes_endpoints(backend: &Backend, local: std::net::SocketAddr) {
    let ctx = bootstrap_ctx(backend);
    let ip = match local.ip() {
        ip if ip.is_unspecified() => std::net::IpAddr::from([127, 0, 0, 1]),
        ip => ip,
    };
    let port = local.port();
    let ports = json!([{"name": "https", "port": port, "protocol": "TCP"}]);
    let (Some(endpoints), Some(slices)) = (
        registry::lookup("", "v1", "endpoints"),
        registry::lookup("discovery.k8s.io", "v1", "endpointslices"),
    ) else {
        return;
    };
    let current = |r: &'static registry::Resource| {
        let key = r.key(Some("default"), "kubernetes");
        async move {
            match backend.get(key).await {
                Ok((Some(kv), _)) => serde_json::from_slice::<serde_json::Value>(&kv.value).ok(),
                _ => None,
            }
        }
    };
    // Every address already listed stays (other servers of a shared database list theirs).
    let mut ips: Vec<String> = current(endpoints)
        .await
        .and_then(|e| e.pointer("/subsets/0/addresses").cloned())
        .and_then(|a| serde_json::from_value::<Vec<serde_json::Value>>(a).ok())
        .unwrap_or_default()
        .iter()
        .filter_map(|a| a["ip"].as_str().map(str::to_string))
        .collect();
    if !ips.contains(&ip.to_string()) {
        ips.push(ip.to_string());
    }
    ips.sort();
    let family = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
    let wanted = [
        (
            endpoints,
            json!({"apiVersion": "v1", "kind": "Endpoints",
                "metadata": {"name": "kubernetes", "namespace": "default",
                    "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
                "subsets": [{"addresses": ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>(),
                    "ports": ports}]}),
        ),
        (
            slices,
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "kubernetes", "namespace": "default",
                    "labels": {"kubernetes.io/service-name": "kubernetes"}},
                "addressType": family,
                "endpoints": ips.iter().map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}})).collect::<Vec<_>>(),
                "ports": ports}),
        ),
    ];
    for (r, object) in wanted {
        let exists = current(r).await.is_some();
        if let Err(e) = create_or_merge(&ctx, r, Some("default"), &object, exists).await {
            tracing::warn!(kind = r.kind, error = %e.message, "cannot write the kubernetes endpoints");
        }
    }
}

/// Creates `object`, or merge-patches it over the one that `exists`, as `kube-apiserver`.
async fn create_or_merge(
    ctx: &handlers::Ctx,
    r: &'static registry::Resource,
    namespace: Option<&str>,
    object: &serde_json::Value,
    exists: bool,
) -> Result<Response, ApiError> {
    let query = HashMap::from([("fieldManager".to_string(), "kube-apiserver".to_string())]);
    let (method, name, content_type) = if exists {
        let name = object.pointer("/metadata/name").and_then(|n| n.as_str());
        (
            Method::PATCH,
            name.map(str::to_string),
            "application/merge-patch+json",
        )
    } else {
        (Method::POST, None, "application/json")
    };
    let target = request::Target {
        resource: r,
        namespace: namespace.map(str::to_string),
        name,
        subresource: None,
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        content_type.parse().expect("static header"),
    );
    handlers::serve(
        ctx,
        &method,
        target,
        &query,
        &headers,
        object.to_string().into(),
    )
    .await
}

/// The `kube-system/extension-apiserver-authentication` ConfigMap (upstream's
/// ClientCARegistrationHook): how extension API servers authenticate the clients of this
/// server (`client-ca-file`) and its aggregation proxy (the `requestheader-*` keys). The CA
/// bundles keep the certificates other servers of the cluster put there.
async fn publish_authentication(backend: &Backend, client_ca: &str, front_proxy_ca: Option<&str>) {
    let ctx = bootstrap_ctx(backend);
    let Some(configmaps) = registry::lookup("", "v1", "configmaps") else {
        return;
    };
    let name = "extension-apiserver-authentication";
    let mut data = json!({"client-ca-file": client_ca});
    if let Some(ca) = front_proxy_ca {
        data["requestheader-client-ca-file"] = json!(ca);
        data["requestheader-allowed-names"] = json!(r#"["front-proxy-client"]"#);
        data["requestheader-username-headers"] = json!(r#"["X-Remote-User"]"#);
        data["requestheader-group-headers"] = json!(r#"["X-Remote-Group"]"#);
        data["requestheader-extra-headers-prefix"] = json!(r#"["X-Remote-Extra-"]"#);
    }
    let existing = match backend.get(configmaps.key(Some("kube-system"), name)).await {
        Ok((Some(kv), _)) => serde_json::from_slice::<serde_json::Value>(&kv.value).ok(),
        _ => None,
    };
    // Servers sharing a database each add their CAs to the bundles, so that extension
    // servers trust every one of them (upstream expects one shared front-proxy CA).
    for key in ["client-ca-file", "requestheader-client-ca-file"] {
        let (Some(ours), Some(theirs)) = (
            data[key].as_str(),
            existing
                .as_ref()
                .and_then(|e| e["data"][key].as_str())
                .filter(|t| !t.trim().is_empty()),
        ) else {
            continue;
        };
        if !theirs.contains(ours.trim()) {
            data[key] = json!(format!("{}\n{}", theirs.trim_end(), ours.trim_start()));
        } else {
            data[key] = json!(theirs);
        }
    }
    if existing.as_ref().is_some_and(|e| e["data"] == data) {
        return;
    }
    let object = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "kube-system"}, "data": data});
    let written = create_or_merge(
        &ctx,
        configmaps,
        Some("kube-system"),
        &object,
        existing.is_some(),
    )
    .await;
    if let Err(e) = written {
        tracing::warn!(error = %e.message, "cannot publish {name}");
    }
}

pub async fn bootstrap(backend: &Backend) {
    let ctx = bootstrap_ctx(backend);
    let namespaces = registry::lookup("", "v1", "namespaces").expect("namespaces are registered");
    let query = HashMap::from([("fieldManager".to_string(), "kube-apiserver".to_string())]);
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        "application/json".parse().expect("static header"),
    );
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let body =
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}).to_string();
        let target = request::Target {
            resource: namespaces,
            namespace: None,
            name: None,
            subresource: None,
        };
        match handlers::serve(&ctx, &Method::POST, target, &query, &headers, body.into()).await {
            Ok(_) => tracing::info!(namespace = ns, "created"),
            Err(e) if e.reason == "AlreadyExists" => {}
            Err(e) => tracing::warn!(namespace = ns, error = %e.message, "cannot create"),
        }
    }
    let classes = registry::lookup("scheduling.k8s.io", "v1", "priorityclasses")
        .expect("priority classes are registered");
    for (name, value, description) in kelp_admission::pods::SYSTEM_PRIORITY_CLASSES {
        let body = json!({
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": name},
            "value": value,
            "description": description,
        })
        .to_string();
        let target = request::Target {
            resource: classes,
            namespace: None,
            name: None,
            subresource: None,
        };
        match handlers::serve(&ctx, &Method::POST, target, &query, &headers, body.into()).await {
            Ok(_) => tracing::info!(priority_class = name, "created"),
            Err(e) if e.reason == "AlreadyExists" => {}
            Err(e) => tracing::warn!(priority_class = name, error = %e.message, "cannot create"),
        }
    }
    bootstrap_api_services(&ctx, &query, &headers).await;
    default_service_cidr(backend, &ctx, &query, &headers).await;
    if let Err(e) = allocator::repair_cluster_ips(backend, jiff::Timestamp::now()).await {
        tracing::warn!(error = %e.message, "cannot give the ClusterIPs their IPAddresses");
    }
    let services = registry::lookup("", "v1", "services").expect("services are registered");
    let kubernetes = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": allocator::KUBERNETES_SERVICE_IP,
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}],
        },
    })
    .to_string();
    if matches!(
        backend
            .get(services.key(Some("default"), "kubernetes"))
            .await,
        Ok((Some(_), _))
    ) {
        return;
    }
    let target = request::Target {
        resource: services,
        namespace: Some("default".into()),
        name: None,
        subresource: None,
    };
    match handlers::serve(
        &ctx,
        &Method::POST,
        target,
        &query,
        &headers,
        kubernetes.into(),
    )
    .await
    {
        Ok(_) => tracing::info!("created the kubernetes Service"),
        Err(e) if e.reason == "AlreadyExists" => {}
        Err(e) => tracing::warn!(error = %e.message, "cannot create the kubernetes Service"),
    }
}

//! Where a service reference (`namespace`, `name`, `port`) of a webhook or an APIService is
//! served. Without a service proxy of its own the API server goes to the service's endpoints
//! directly, as upstream's `--enable-aggregator-routing` does; an ExternalName service is its
//! external name at the port asked for.

use serde_json::Value;

use crate::cache::WatchCache;

/// An address to dial and the name the server's certificate must carry
/// (`<service>.<namespace>.svc`).
#[derive(Debug, PartialEq)]
pub struct Endpoint {
    /// `host:port`, an IPv6 host in brackets.
    pub authority: String,
    pub server_name: String,
}

/// Why a service reference has no address, with upstream's availability reasons.
#[derive(Debug, PartialEq)]
pub enum Unresolved {
    ServiceNotFound,
    /// The service has no port of that number.
    ServicePort(i64),
    EndpointsNotFound,
    /// No endpoint address has the port the service port names.
    MissingEndpoints(String),
}

impl Unresolved {
    /// The reason an APIService's Available condition gives.
    pub fn reason(&self) -> &'static str {
        match self {
            Unresolved::ServiceNotFound => "ServiceNotFound",
            Unresolved::ServicePort(_) => "ServicePortError",
            Unresolved::EndpointsNotFound => "EndpointsNotFound",
            Unresolved::MissingEndpoints(_) => "MissingEndpoints",
        }
    }

    /// Upstream's message for the condition, for service `ns/name`.
    pub fn message(&self, ns: &str, name: &str) -> String {
        match self {
            Unresolved::ServiceNotFound => format!("service/{name} in {ns:?} is not present"),
            Unresolved::ServicePort(port) => {
                format!("service/{name} in {ns:?} is not listening on port {port}")
            }
            Unresolved::EndpointsNotFound => {
                format!("cannot find endpoints for service/{name} in {ns:?}")
            }
            Unresolved::MissingEndpoints(port) => format!(
                "endpoints for service/{name} in {ns:?} have no addresses with port name {port:?}"
            ),
        }
    }
}

fn bracketed(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// The address of service `ns/name` at service port `port`: an endpoint address of a subset
/// that has the port the service port names (or the subset's only port).
pub fn resolve(
    cache: &WatchCache,
    ns: &str,
    name: &str,
    port: i64,
) -> Result<Endpoint, Unresolved> {
    let read = |plural: &str| -> Option<std::sync::Arc<Value>> {
        let r = crate::registry::lookup("", "v1", plural)?;
        cache.parsed(&r.key(Some(ns), name))
    };
    let server_name = format!("{name}.{ns}.svc");
    let svc = read("services").ok_or(Unresolved::ServiceNotFound)?;
    if svc.pointer("/spec/type").and_then(Value::as_str) == Some("ExternalName") {
        let external = svc
            .pointer("/spec/externalName")
            .and_then(Value::as_str)
            .unwrap_or("");
        return Ok(Endpoint {
            authority: format!("{}:{port}", bracketed(external)),
            server_name,
        });
    }
    let svc_port = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|p| p.get("port").and_then(Value::as_i64) == Some(port))
        .ok_or(Unresolved::ServicePort(port))?;
    let port_name = svc_port.get("name").and_then(Value::as_str).unwrap_or("");
    let endpoints = read("endpoints").ok_or(Unresolved::EndpointsNotFound)?;
    for subset in endpoints
        .get("subsets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(ip) = subset.pointer("/addresses/0/ip").and_then(Value::as_str) else {
            continue;
        };
        let ports: Vec<&Value> = subset
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .collect();
        let chosen = ports
            .iter()
            .find(|p| p.get("name").and_then(Value::as_str).unwrap_or("") == port_name)
            .or(if ports.len() == 1 {
                ports.first()
            } else {
                None
            })
            .and_then(|p| p.get("port").and_then(Value::as_i64));
        if let Some(target) = chosen {
            return Ok(Endpoint {
                authority: format!("{}:{target}", bracketed(ip)),
                server_name,
            });
        }
    }
    Err(Unresolved::MissingEndpoints(port_name.to_string()))
}

/// An error with its sources, as Go prints wrapped errors (`outer: inner: ...`).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

/// Sends `request` and reads the whole answer within `timeout`: its status and body, or why
/// there was none (None: the time ran out).
pub async fn exchange<C, B>(
    client: &hyper_util::client::legacy::Client<C, B>,
    request: axum::http::Request<B>,
    timeout: std::time::Duration,
) -> Result<(axum::http::StatusCode, axum::body::Bytes), Option<String>>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use http_body_util::BodyExt;
    let exchange = async {
        let response = client.request(request).await.map_err(|e| error_chain(&e))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(r) => r.map_err(Some),
        Err(_) => Err(None),
    }
}

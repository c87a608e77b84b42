//! Service ClusterIP and NodePort allocation. Each allocation is a key in the store
//! (`/registry/ranges/serviceips/<ip>`, `/registry/ranges/servicenodeports/<port>`) taken with
//! a create, so two API servers sharing a database can never hand out the same one.

use std::net::Ipv4Addr;
use std::pin::Pin;

use kelp_storage::{Backend, Txn, TxnOutcome};
use rand::Rng;
use serde_json::{Value, json};

use crate::error::ApiError;

/// The service network: 10.96.0.0/16. The first address goes to the `kubernetes` Service.
const SERVICE_NET: u32 = u32::from_be_bytes([10, 96, 0, 0]);
const SERVICE_NET_SIZE: u32 = 1 << 16;
/// The service network in CIDR notation, as the default ServiceCIDR holds it.
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
pub const KUBERNETES_SERVICE_IP: &str = "10.96.0.1";
/// Upstream's default `--service-node-port-range`.
const NODE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

const IP_KEYS: &str = "/registry/ranges/serviceips/";
const PORT_KEYS: &str = "/registry/ranges/servicenodeports/";

pub type Allocated = Vec<String>;
pub type AllocFuture<'a> =
    Pin<Box<dyn std::future::Future<Output = Result<Allocated, ApiError>> + Send + 'a>>;

fn invalid(name: &str, field: &str, message: String) -> ApiError {
    ApiError::invalid("", "Service", name, vec![(field.to_string(), message)])
}

async fn take(backend: &Backend, key: String, owner: &str) -> Result<bool, ApiError> {
    Ok(matches!(
        backend
            .txn(Txn::create(key, owner.as_bytes().to_vec()))
            .await?,
        TxnOutcome::Succeeded { .. }
    ))
}

/// Releases allocations (after a failed create or a delete).
pub async fn release(backend: &Backend, keys: &[String]) {
    for key in keys {
        if let Ok((Some(kv), _)) = backend.get(key.clone()).await {
            let _ = backend.txn(Txn::delete(key.clone(), kv.mod_revision)).await;
        }
    }
}

fn owner(obj: &Value) -> String {
    format!(
        "{}/{}",
        crate::object::namespace_of(obj),
        crate::object::name(obj)
    )
}

/// Allocates what a new Service needs: a ClusterIP (unless headless or ExternalName, or the
/// requested one) and a NodePort for each port of NodePort and LoadBalancer Services.
pub fn allocate_service<'a>(backend: &'a Backend, obj: &'a mut Value) -> AllocFuture<'a> {
    Box::pin(async move {
        let mut taken = Vec::new();
        let result = allocate_into(backend, obj, &mut taken).await;
        if result.is_err() {
            release(backend, &taken).await;
        }
        result.map(|()| taken)
    })
}

async fn allocate_into(
    backend: &Backend,
    obj: &mut Value,
    taken: &mut Allocated,
) -> Result<(), ApiError> {
    let who = owner(obj);
    let name = crate::object::name(obj).to_string();
    let invalid = |field: &str, message: String| invalid(&name, field, message);
    let spec_type = obj
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if spec_type == "ExternalName" {
        return Ok(());
    }
    let requested = obj
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let ip = match requested.as_str() {
        "None" => None,
        "" => {
            let mut chosen = None;
            for _ in 0..64 {
                let offset = rand::rng().random_range(2..SERVICE_NET_SIZE - 1);
                let ip = Ipv4Addr::from(SERVICE_NET + offset).to_string();
                if take(backend, format!("{IP_KEYS}{ip}"), &who).await? {
                    taken.push(format!("{IP_KEYS}{ip}"));
                    chosen = Some(ip);
                    break;
                }
            }
            Some(chosen.ok_or_else(|| {
                ApiError::internal(format!("no free ClusterIP in {SERVICE_CIDR}"))
            })?)
        }
        ip => {
            let parsed: Ipv4Addr = ip.parse().map_err(|_| {
                invalid(
                    "spec.clusterIPs[0]",
                    format!("Invalid value: \"{ip}\": must be a valid IP address"),
                )
            })?;
            let n = u32::from(parsed);
            if !(SERVICE_NET..SERVICE_NET + SERVICE_NET_SIZE).contains(&n) {
                return Err(invalid(
                    "spec.clusterIPs",
                    format!(
                        "Invalid value: []string{{\"{ip}\"}}: failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {SERVICE_CIDR}"
                    ),
                ));
            }
            if !take(backend, format!("{IP_KEYS}{ip}"), &who).await? {
                return Err(invalid(
                    "spec.clusterIPs",
                    format!(
                        "Invalid value: []string{{\"{ip}\"}}: failed to allocate IP {ip}: provided IP is already allocated"
                    ),
                ));
            }
            taken.push(format!("{IP_KEYS}{ip}"));
            Some(ip.to_string())
        }
    };
    let spec = &mut obj["spec"];
    match ip {
        Some(ip) => {
            spec["clusterIP"] = json!(ip);
            spec["clusterIPs"] = json!([ip]);
            spec["ipFamilies"] = json!(["IPv4"]);
            spec["ipFamilyPolicy"] = json!("SingleStack");
        }
        None => {
            spec["clusterIPs"] = json!(["None"]);
        }
    }
    if matches!(spec_type.as_str(), "NodePort" | "LoadBalancer") {
        let ports = spec
            .get_mut("ports")
            .and_then(Value::as_array_mut)
            .map(std::mem::take)
            .unwrap_or_default();
        let mut out = Vec::with_capacity(ports.len());
        for mut port in ports {
            // 0 means "allocate one", as protobuf clients send an unset port.
            match port
                .get("nodePort")
                .and_then(Value::as_u64)
                .filter(|n| *n != 0)
            {
                Some(n) => {
                    let n = u16::try_from(n).ok().filter(|n| NODE_PORTS.contains(n)).ok_or_else(|| {
                        invalid("spec.ports[0].nodePort", format!("Invalid value: {n}: provided port is not in the valid range. The range of valid ports is 30000-32767"))
                    })?;
                    if !take(backend, format!("{PORT_KEYS}{n}"), &who).await? {
                        return Err(invalid(
                            "spec.ports[0].nodePort",
                            format!("Invalid value: {n}: provided port is already allocated"),
                        ));
                    }
                    taken.push(format!("{PORT_KEYS}{n}"));
                }
                None => {
                    let mut chosen = None;
                    for _ in 0..64 {
                        let n = rand::rng().random_range(NODE_PORTS);
                        if take(backend, format!("{PORT_KEYS}{n}"), &who).await? {
                            taken.push(format!("{PORT_KEYS}{n}"));
                            chosen = Some(n);
                            break;
                        }
                    }
                    port["nodePort"] =
                        json!(chosen.ok_or_else(|| ApiError::internal("no free NodePort"))?);
                }
            }
            out.push(port);
        }
        spec["ports"] = json!(out);
    }
    Ok(())
}

/// What a Service holds: its ClusterIP and NodePorts.
pub fn service_allocations(obj: &Value) -> Allocated {
    let mut keys: Vec<String> = obj
        .pointer("/spec/clusterIPs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|ip| *ip != "None")
        .map(|ip| format!("{IP_KEYS}{ip}"))
        .collect();
    keys.extend(
        obj.pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p.get("nodePort").and_then(Value::as_u64))
            .map(|n| format!("{PORT_KEYS}{n}")),
    );
    keys
}

/// A Service update keeps its ClusterIP (immutable upstream) and its ports' NodePorts.
pub fn keep_service_allocations(old: &Value, new: &mut Value) -> Result<(), ApiError> {
    let name = crate::object::name(old).to_string();
    let invalid = |field: &str, message: String| invalid(&name, field, message);
    let old_ip = old
        .pointer("/spec/clusterIP")
        .cloned()
        .unwrap_or(Value::Null);
    let new_ip = new
        .pointer("/spec/clusterIP")
        .cloned()
        .unwrap_or(Value::Null);
    if new_ip.is_null() || new_ip == json!("") {
        for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            if let Some(v) = old.pointer(&format!("/spec/{field}")) {
                new["spec"][field] = v.clone();
            }
        }
    } else if new_ip != old_ip {
        return Err(invalid(
            "spec.clusterIPs[0]",
            format!("Invalid value: {new_ip}: may not change once set"),
        ));
    }
    let old_ports = old
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(Value::Array(ports)) = new.pointer_mut("/spec/ports") {
        for p in ports
            .iter_mut()
            .filter(|p| p.get("nodePort").is_none_or(|n| n == &json!(0)))
        {
            let same = old_ports
                .iter()
                .find(|o| o.get("port") == p.get("port") && o.get("protocol") == p.get("protocol"));
            if let Some(n) = same.and_then(|o| o.get("nodePort")) {
                p["nodePort"] = n.clone();
            }
        }
    }
    Ok(())
}

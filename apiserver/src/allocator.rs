//! Service ClusterIP and NodePort allocation. A ClusterIP is taken by creating the
//! networking.k8s.io/v1 IPAddress named by it, whose parentRef is the Service (upstream's
//! MultiCIDRServiceAllocator, GA in v1.33: pkg/registry/core/service/ipallocator); a NodePort
//! is a key of its own, `/registry/ranges/servicenodeports/<port>`. Both are taken with a
//! create, so two API servers sharing a database never hand out the same one, and an
//! IPAddress a user created makes its IP unavailable.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::pin::Pin;

use kelp_storage::{Backend, KeyRange, RangeRequest, Txn};
use rand::Rng;
use rand::seq::SliceRandom;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::registry::Resource;

/// The service network of the default ServiceCIDR. Its first address goes to the
/// `kubernetes` Service.
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
pub const KUBERNETES_SERVICE_IP: &str = "10.96.0.1";
/// Upstream's default `--service-node-port-range`.
const NODE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

const PORT_KEYS: &str = "/registry/ranges/servicenodeports/";
/// Where Kelp kept ClusterIPs before they were IPAddresses (see [`repair_cluster_ips`]).
const LEGACY_IP_KEYS: &str = "/registry/ranges/serviceips/";
/// Upstream's ipallocator.ControllerName: the managed-by label of the IPAddresses it creates.
const IP_ALLOCATOR: &str = "ipallocator.k8s.io";
/// Their field manager: upstream's allocator creates them through the API server's loopback
/// client, whose user agent is kube-apiserver's.
const FIELD_MANAGER: &str = "kube-apiserver";

pub type Allocated = Vec<String>;
pub type AllocFuture<'a> =
    Pin<Box<dyn std::future::Future<Output = Result<Allocated, ApiError>> + Send + 'a>>;

fn invalid(name: &str, field: &str, message: String) -> ApiError {
    ApiError::invalid("", "Service", name, vec![(field.to_string(), message)])
}

fn ip_addresses() -> Result<&'static Resource, ApiError> {
    crate::registry::lookup("networking.k8s.io", "v1", "ipaddresses")
        .ok_or_else(|| ApiError::internal("ipaddresses are not served"))
}

/// Creates `key` unless it exists: whether this call took it.
async fn take(backend: &Backend, key: String, value: Vec<u8>) -> Result<bool, ApiError> {
    Ok(backend.txn(Txn::create(key, value)).await?.succeeded())
}

/// The IPAddress that holds `ip` for `service` (upstream's createIPAddress): its family and
/// manager as labels, the Service as its parent (serviceToRef, whose empty core group the Go
/// type leaves out of the JSON).
fn ip_address(ip: &str, service: &Value) -> Value {
    let family = if ip.contains(':') { "IPv6" } else { "IPv4" };
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IPAddress",
        "metadata": {
            "name": ip,
            "labels": {
                "ipaddress.kubernetes.io/ip-family": family,
                "ipaddress.kubernetes.io/managed-by": IP_ALLOCATOR,
            },
        },
        "spec": {"parentRef": {
            "resource": "services",
            "namespace": crate::object::namespace_of(service),
            "name": crate::object::name(service),
        }},
    })
}

fn parent<'a>(address: &'a Value, field: &str) -> &'a str {
    address
        .pointer("/spec/parentRef")
        .and_then(|p| p.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Whether `address` names `service` as its parent.
fn held_by(address: &Value, service: &Value) -> bool {
    parent(address, "group").is_empty()
        && parent(address, "resource") == "services"
        && parent(address, "namespace") == crate::object::namespace_of(service)
        && parent(address, "name") == crate::object::name(service)
}

/// An IPv4 network of the ServiceCIDRs, as upstream's MetaAllocator keeps one allocator per
/// CIDR (pkg/registry/core/service/ipallocator/cidrallocator.go). It is `ready` when one of
/// the ServiceCIDRs that hold it is Ready (or has no Ready condition yet: the controller that
/// sets it may not run) and is not being deleted; only ready networks hand out IPs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Network {
    base: u32,
    bits: u32,
    ready: bool,
}

/// Networks this small are searched for a free IP whole (their IPAddresses read first);
/// larger ones are probed at random.
const SEARCHED_WHOLE: u64 = 1024;

impl Network {
    /// An IPv4 CIDR as ServiceCIDR validation reads it; IPv6 is not served.
    fn parse(cidr: &str, ready: bool) -> Option<Network> {
        match crate::registry::parse_cidr_sloppy(cidr)? {
            (std::net::IpAddr::V4(ip), bits) => Some(Network {
                base: u32::from(ip),
                bits: u32::from(bits),
                ready,
            }),
            _ => None,
        }
    }

    fn size(self) -> u64 {
        1 << (32 - self.bits)
    }

    fn contains(self, ip: u32) -> bool {
        ip >= self.base && u64::from(ip - self.base) < self.size()
    }

    /// The offsets it hands out: all but the network and broadcast addresses.
    fn offsets(self) -> std::ops::Range<u64> {
        1..self.size().saturating_sub(1).max(1)
    }

    fn hands_out(self, ip: u32) -> bool {
        self.contains(ip) && self.offsets().contains(&u64::from(ip - self.base))
    }

    fn at(self, offset: u64) -> Ipv4Addr {
        Ipv4Addr::from(self.base + offset as u32)
    }

    fn cidr(self) -> String {
        format!("{}/{}", Ipv4Addr::from(self.base), self.bits)
    }
}

/// Whether a ServiceCIDR may hand out IPs (upstream's isReady, and not being deleted).
fn cidr_ready(cidr: &Value) -> bool {
    let ready = cidr
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready");
    cidr.pointer("/metadata/deletionTimestamp").is_none()
        && ready.is_none_or(|c| c["status"] == "True")
}

/// The IPv4 networks of the ServiceCIDRs, as storage holds them now: each once (ready when any
/// ServiceCIDR holding it is), the largest first.
async fn networks(backend: &Backend) -> Result<Vec<Network>, ApiError> {
    let cidrs = crate::registry::lookup("networking.k8s.io", "v1", "servicecidrs")
        .ok_or_else(|| ApiError::internal("servicecidrs are not served"))?;
    let listed = backend
        .range(RangeRequest::new(KeyRange::prefix(cidrs.key_prefix(None))))
        .await?;
    let mut networks: Vec<Network> = Vec::new();
    for kv in listed.kvs {
        let Ok(cidr) = serde_json::from_slice::<Value>(&kv.value) else {
            continue;
        };
        let ready = cidr_ready(&cidr);
        let listed = cidr.pointer("/spec/cidrs").and_then(Value::as_array);
        for net in listed
            .into_iter()
            .flatten()
            .filter_map(|c| Network::parse(c.as_str()?, ready))
        {
            match networks
                .iter_mut()
                .find(|n| (n.base, n.bits) == (net.base, net.bits))
            {
                Some(known) => known.ready |= ready,
                None => networks.push(net),
            }
        }
    }
    networks.sort_by_key(|n| (n.bits, n.base));
    Ok(networks)
}

/// The IPs of a network that IPAddresses hold, read by the dotted prefixes of the /24 blocks
/// it spans (IPAddresses are named by their IP).
async fn held_in(backend: &Backend, net: Network) -> Result<HashSet<u32>, ApiError> {
    let root = ip_addresses()?.key_prefix(None);
    let mut held = HashSet::new();
    let mut block = net.base & !0xff;
    loop {
        let [a, b, c, _] = block.to_be_bytes();
        let prefix = KeyRange::prefix(format!("{root}{a}.{b}.{c}."));
        let listed = backend.range(RangeRequest::new(prefix)).await?;
        held.extend(listed.kvs.iter().filter_map(|kv| {
            let name = std::str::from_utf8(kv.key.strip_prefix(root.as_bytes())?).ok()?;
            Some(u32::from(name.parse::<Ipv4Addr>().ok()?))
        }));
        match block.checked_add(256) {
            Some(next) if net.contains(next) => block = next,
            _ => break,
        }
    }
    Ok(held)
}

/// Takes a free IP for `service` from a ready network (upstream's AllocateNextService: the
/// networks in turn, in an order Go's map iteration makes random, a full one passed over).
/// The IP; its IPAddress's key goes to `taken`.
async fn take_next_ip(
    backend: &Backend,
    networks: &[Network],
    service: &Value,
    taken: &mut Allocated,
) -> Result<String, ApiError> {
    let mut ready: Vec<Network> = networks
        .iter()
        .copied()
        .filter(|n| n.ready && !n.offsets().is_empty())
        .collect();
    ready.shuffle(&mut rand::rng());
    for net in ready {
        let offsets = net.offsets();
        let start = rand::rng().random_range(offsets.clone());
        let candidates: Vec<u64> = if offsets.end - offsets.start <= SEARCHED_WHOLE {
            // Every free one, from a random start around the network.
            let held = held_in(backend, net).await?;
            (start..offsets.end)
                .chain(offsets.start..start)
                .filter(|o| !held.contains(&(net.base + *o as u32)))
                .collect()
        } else {
            std::iter::once(start)
                .chain((1..64).map(|_| rand::rng().random_range(offsets.clone())))
                .collect()
        };
        for offset in candidates {
            let ip = net.at(offset).to_string();
            if let Some(key) = take_ip(backend, &ip, service).await? {
                taken.push(key);
                return Ok(ip);
            }
        }
    }
    Err(ApiError::internal(
        "Internal error occurred: failed to allocate a serviceIP: range is full",
    ))
}

/// Takes `ip` for `service` by creating its IPAddress: the key taken, or None when an
/// IPAddress of that IP exists (another Service's, or one a user created).
async fn take_ip(backend: &Backend, ip: &str, service: &Value) -> Result<Option<String>, ApiError> {
    let r = ip_addresses()?;
    let key = r.key(None, ip);
    let value = crate::handlers::server_created(r, ip_address(ip, service), FIELD_MANAGER);
    Ok(take(backend, key.clone(), value).await?.then_some(key))
}

/// Takes NodePort `n` for the Service `who` names: the key taken, or None when it is taken.
async fn take_port(backend: &Backend, n: u16, who: &str) -> Result<Option<String>, ApiError> {
    let key = format!("{PORT_KEYS}{n}");
    Ok(take(backend, key.clone(), who.as_bytes().to_vec())
        .await?
        .then_some(key))
}

/// Releases what `service` holds (after a failed create, a delete, or an update that gave it
/// up). An IPAddress goes only while it names the Service as its parent: one a user created,
/// or one another Service has taken since, stays.
pub async fn release(backend: &Backend, service: &Value, keys: &[String]) {
    if keys.is_empty() {
        return;
    }
    let addresses = ip_addresses().ok().map(|r| r.key_prefix(None));
    for key in keys {
        let Ok((Some(kv), _)) = backend.get(key.clone()).await else {
            continue;
        };
        let is_address = addresses
            .as_deref()
            .is_some_and(|prefix| key.starts_with(prefix));
        if is_address
            && !serde_json::from_slice::<Value>(&kv.value).is_ok_and(|a| held_by(&a, service))
        {
            continue;
        }
        let _ = backend.txn(Txn::delete(key.clone(), kv.mod_revision)).await;
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
            release(backend, obj, &taken).await;
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
            let networks = networks(backend).await?;
            Some(take_next_ip(backend, &networks, obj, taken).await?)
        }
        ip => {
            let parsed: Ipv4Addr = ip.parse().map_err(|_| {
                invalid(
                    "spec.clusterIPs[0]",
                    format!("Invalid value: \"{ip}\": must be a valid IP address"),
                )
            })?;
            let refused = |reason: String| {
                invalid(
                    "spec.clusterIPs",
                    format!(
                        "Invalid value: []string{{\"{ip}\"}}: failed to allocate IP {ip}: {reason}"
                    ),
                )
            };
            // Upstream v1.33's messages: an IP no Ready ServiceCIDR holds is refused by the
            // MetaAllocator (ErrMismatchedNetwork); the network and broadcast addresses of
            // a range are in it but never allocated (the range's ErrNotInRange).
            let n = u32::from(parsed);
            let networks = networks(backend).await?;
            let holding: Vec<&Network> = networks
                .iter()
                .filter(|net| net.ready && net.contains(n))
                .collect();
            let Some(first) = holding.first() else {
                return Err(refused(
                    "the provided network does not match the current range".into(),
                ));
            };
            if !holding.iter().any(|net| net.hands_out(n)) {
                return Err(refused(format!(
                    "the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}",
                    first.cidr()
                )));
            }
            // Upstream's message (storage/alloc.go around ipallocator.ErrAllocated), whether
            // a Service or a user's IPAddress holds the IP.
            let Some(key) = take_ip(backend, &parsed.to_string(), obj).await? else {
                return Err(refused("provided IP is already allocated".into()));
            };
            taken.push(key);
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
                    let Some(key) = take_port(backend, n, &who).await? else {
                        return Err(invalid(
                            "spec.ports[0].nodePort",
                            format!("Invalid value: {n}: provided port is already allocated"),
                        ));
                    };
                    taken.push(key);
                }
                None => {
                    let mut chosen = None;
                    for _ in 0..64 {
                        let n = rand::rng().random_range(NODE_PORTS);
                        if let Some(key) = take_port(backend, n, &who).await? {
                            taken.push(key);
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

/// The ClusterIPs a Service holds (a headless Service's "None" is none).
fn cluster_ips(service: &Value) -> impl Iterator<Item = &str> {
    service
        .pointer("/spec/clusterIPs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|ip| !ip.is_empty() && *ip != "None")
}

/// What a Service holds: its ClusterIP's IPAddress and its NodePorts.
pub fn service_allocations(obj: &Value) -> Allocated {
    let mut keys: Allocated = match ip_addresses() {
        Ok(r) => cluster_ips(obj).map(|ip| r.key(None, ip)).collect(),
        Err(_) => Vec::new(),
    };
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

/// Whether a Service of this type has a ClusterIP, "None" included (upstream's needsClusterIP).
fn needs_cluster_ip(service: &Value) -> bool {
    service.pointer("/spec/type").and_then(Value::as_str) != Some("ExternalName")
}

/// A Service update keeps its ClusterIP (immutable upstream) and its ports' NodePorts. One
/// that becomes ExternalName gives up the ClusterIP fields it left as they were (upstream's
/// dropTypeDependentFields); the update releases the IP once it is stored.
pub fn keep_service_allocations(old: &Value, new: &mut Value) -> Result<(), ApiError> {
    let name = crate::object::name(old).to_string();
    let invalid = |field: &str, message: String| invalid(&name, field, message);
    let external = !needs_cluster_ip(new);
    if external && needs_cluster_ip(old) {
        let same = |field: &str| {
            let at = format!("/spec/{field}");
            new.pointer(&at) == old.pointer(&at)
        };
        let ips = same("clusterIP") && same("clusterIPs");
        let families = same("ipFamilies");
        let policy = same("ipFamilyPolicy");
        if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
            if ips {
                spec.remove("clusterIP");
                spec.remove("clusterIPs");
            }
            if families {
                spec.remove("ipFamilies");
            }
            if policy {
                spec.remove("ipFamilyPolicy");
            }
        }
    }
    let old_ip = old
        .pointer("/spec/clusterIP")
        .cloned()
        .unwrap_or(Value::Null);
    let new_ip = new
        .pointer("/spec/clusterIP")
        .cloned()
        .unwrap_or(Value::Null);
    if new_ip.is_null() || new_ip == json!("") {
        if !external {
            for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
                if let Some(v) = old.pointer(&format!("/spec/{field}")) {
                    new["spec"][field] = v.clone();
                }
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

/// How long an IPAddress may name a Service that does not exist before the repair deletes it:
/// a Service's create takes its IPAddress before the Service is stored (upstream's 60 s, the
/// API server's request timeout).
const LEAK_GRACE: jiff::SignedDuration = jiff::SignedDuration::from_secs(60);

/// How often the API server runs [`repair_cluster_ips`] (upstream repairs from informers and
/// resyncs every few minutes).
pub const REPAIR_INTERVAL: std::time::Duration = std::time::Duration::from_secs(180);

/// Upstream's ClusterIP repair (ipallocator/controller/repairip.go), at `now`:
/// - every ClusterIP has its IPAddress (one that exists stays as it is, whoever holds it);
/// - an IPAddress this allocator manages goes when it names no Service, names a Service that
///   does not list its IP, or names one that does not exist and is older than 60 s. A user's
///   IPAddress (another manager) is never touched.
///
/// It also drops the `/registry/ranges/serviceips/` keys an earlier Kelp took ClusterIPs
/// with. Running it again changes nothing. Returns the IPAddresses created and deleted.
pub async fn repair_cluster_ips(
    backend: &Backend,
    now: jiff::Timestamp,
) -> Result<(usize, usize), ApiError> {
    let services = crate::registry::lookup("", "v1", "services")
        .ok_or_else(|| ApiError::internal("services are not served"))?;
    let addresses = ip_addresses()?;
    let all_services = KeyRange::prefix(services.key_prefix(None));
    let listed = backend.range(RangeRequest::new(all_services)).await?;
    // The Services as listed, by key, for the second half.
    let mut listed_services: HashMap<Vec<u8>, Value> = HashMap::new();
    let mut created = 0;
    for kv in listed.kvs {
        let Ok(service) = serde_json::from_slice::<Value>(&kv.value) else {
            continue;
        };
        for ip in cluster_ips(&service) {
            if crate::registry::ip_address_name(ip).is_some() {
                continue;
            }
            let value =
                crate::handlers::server_created(addresses, ip_address(ip, &service), FIELD_MANAGER);
            if take(backend, addresses.key(None, ip), value).await? {
                created += 1;
                tracing::info!(
                    ip = %ip,
                    service = %owner(&service),
                    "created the IPAddress of a ClusterIP"
                );
            }
        }
        listed_services.insert(kv.key, service);
    }
    let all_addresses = KeyRange::prefix(addresses.key_prefix(None));
    let mut deleted = 0;
    for kv in backend.range(RangeRequest::new(all_addresses)).await?.kvs {
        let Ok(address) = serde_json::from_slice::<Value>(&kv.value) else {
            continue;
        };
        if address
            .pointer("/metadata/labels/ipaddress.kubernetes.io~1managed-by")
            .and_then(Value::as_str)
            != Some(IP_ALLOCATOR)
        {
            continue;
        }
        let ip = crate::object::name(&address);
        let holds = |svc: &Value| cluster_ips(svc).any(|held| held == ip);
        let leaked = if !parent(&address, "group").is_empty()
            || parent(&address, "resource") != "services"
        {
            Some("names no Service")
        } else {
            let key = services.key(
                Some(parent(&address, "namespace")),
                parent(&address, "name"),
            );
            if listed_services.get(key.as_bytes()).is_some_and(holds) {
                continue;
            }
            // Not held as listed: the Service as it is now decides (one created or changed
            // since the listing may hold the IP). One that cannot be read is left alone.
            match backend.get(key).await?.0 {
                Some(svc) => serde_json::from_slice::<Value>(&svc.value)
                    .is_ok_and(|svc| !holds(&svc))
                    .then_some("names a Service that does not hold it"),
                None => {
                    let born = address
                        .pointer("/metadata/creationTimestamp")
                        .and_then(Value::as_str)
                        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
                    born.is_none_or(|born| now.duration_since(born) > LEAK_GRACE)
                        .then_some("names a Service that does not exist")
                }
            }
        };
        if let Some(why) = leaked {
            // Only as listed: an IPAddress taken again since is someone's.
            if backend
                .txn(Txn::delete(kv.key, kv.mod_revision))
                .await?
                .succeeded()
            {
                deleted += 1;
                tracing::warn!(ip = %ip, why, "deleted a leaked IPAddress");
            }
        }
    }
    let legacy = backend
        .range(RangeRequest::new(KeyRange::prefix(LEGACY_IP_KEYS)))
        .await?;
    for kv in legacy.kvs {
        backend.txn(Txn::delete(kv.key, kv.mod_revision)).await?;
    }
    Ok((created, deleted))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kelp_storage::{Endpoint, Options};

    fn service(name: &str, ip: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
                "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "ports": [{"port": 80}]}})
    }

    /// A store of its own holding `services` (in default).
    async fn store_with(services: &[&Value]) -> (tempfile::TempDir, Backend) {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = Endpoint::default_for(dir.path());
        let backend = Backend::open(&endpoint, Options::default()).await.unwrap();
        let r = crate::registry::lookup("", "v1", "services").unwrap();
        for svc in services {
            let key = r.key(Some("default"), crate::object::name(svc));
            let value = serde_json::to_vec(svc).unwrap();
            assert!(take(&backend, key, value).await.unwrap());
        }
        (dir, backend)
    }

    #[tokio::test]
    async fn cluster_ips_come_from_the_ready_service_cidrs_and_a_small_one_fills_up() {
        let (_dir, backend) = store_with(&[]).await;
        let cidrs = crate::registry::lookup("networking.k8s.io", "v1", "servicecidrs").unwrap();
        let ready = |status: &str| json!({"conditions": [{"type": "Ready", "status": status}]});
        for (name, nets, status, deleting) in [
            (
                "small",
                json!(["10.200.0.0/29", "fd00::/120"]),
                json!({}),
                false,
            ),
            ("unready", json!(["10.201.0.0/29"]), ready("False"), false),
            ("going", json!(["10.202.0.0/29"]), ready("True"), true),
        ] {
            let mut cidr = json!({"apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR",
                "metadata": {"name": name}, "spec": {"cidrs": nets}, "status": status});
            if deleting {
                cidr["metadata"]["deletionTimestamp"] = json!("2026-12-07T00:00:00Z");
            }
            let value = serde_json::to_vec(&cidr).unwrap();
            assert!(take(&backend, cidrs.key(None, name), value).await.unwrap());
        }
        let create = |name: String, ip: &str| {
            let mut svc = service(&name, ip);
            let backend = backend.clone();
            async move {
                allocate_service(&backend, &mut svc).await?;
                Ok::<_, ApiError>(svc["spec"]["clusterIP"].as_str().unwrap().to_string())
            }
        };
        // The only ready network hands out all but its network and broadcast addresses.
        let mut ips = Vec::new();
        for i in 0..6 {
            ips.push(create(format!("s{i}"), "").await.unwrap());
        }
        ips.sort();
        assert_eq!(
            ips,
            (1..=6).map(|i| format!("10.200.0.{i}")).collect::<Vec<_>>()
        );
        let full = create("s6".into(), "").await.unwrap_err();
        assert_eq!(
            full.message,
            "Internal error occurred: failed to allocate a serviceIP: range is full"
        );
        let refused = |e: ApiError| e.status_json()["details"]["causes"][0]["message"].clone();
        for ip in ["10.201.0.3", "10.202.0.3", "10.96.0.10"] {
            let e = create("x".into(), ip).await.unwrap_err();
            assert_eq!(
                refused(e),
                json!(format!(
                    "Invalid value: []string{{\"{ip}\"}}: failed to allocate IP {ip}: the provided network does not match the current range"
                ))
            );
        }
        let e = create("x".into(), "10.200.0.7").await.unwrap_err();
        assert_eq!(
            refused(e),
            json!(
                "Invalid value: []string{\"10.200.0.7\"}: failed to allocate IP 10.200.0.7: the provided IP (10.200.0.7) is not in the valid range. The range of valid IPs is 10.200.0.0/29"
            )
        );
        let e = create("x".into(), "10.200.0.3").await.unwrap_err();
        assert_eq!(
            refused(e),
            json!(
                "Invalid value: []string{\"10.200.0.3\"}: failed to allocate IP 10.200.0.3: provided IP is already allocated"
            )
        );
    }

    #[tokio::test]
    async fn migration_gives_cluster_ips_ip_addresses_and_drops_the_range_keys() {
        let addresses = ip_addresses().unwrap();
        let web = service("web", "10.96.3.4");
        let headless = service("headless", "None");
        let (_dir, backend) = store_with(&[&web, &headless]).await;
        let legacy = format!("{LEGACY_IP_KEYS}10.96.3.4");
        assert!(
            take(&backend, legacy, b"default/web".to_vec())
                .await
                .unwrap()
        );

        repair_cluster_ips(&backend, jiff::Timestamp::now())
            .await
            .unwrap();
        let key = addresses.key(None, "10.96.3.4");
        let (kv, _) = backend.get(key.clone()).await.unwrap();
        let kv = kv.expect("the ClusterIP has its IPAddress");
        let address: Value = serde_json::from_slice(&kv.value).unwrap();
        assert!(held_by(&address, &web), "{address}");
        assert_eq!(address["kind"], "IPAddress");
        assert_eq!(
            address["metadata"]["labels"],
            json!({"ipaddress.kubernetes.io/ip-family": "IPv4",
                "ipaddress.kubernetes.io/managed-by": "ipallocator.k8s.io"})
        );
        assert!(address["metadata"]["uid"].is_string());
        assert!(address["metadata"]["creationTimestamp"].is_string());
        let ranges = RangeRequest::new(KeyRange::prefix(LEGACY_IP_KEYS));
        assert!(backend.range(ranges).await.unwrap().kvs.is_empty());

        // Again: nothing changes.
        repair_cluster_ips(&backend, jiff::Timestamp::now())
            .await
            .unwrap();
        let (again, _) = backend.get(key).await.unwrap();
        assert_eq!(again.map(|kv| kv.mod_revision), Some(kv.mod_revision));
        let all = RangeRequest::new(KeyRange::prefix(addresses.key_prefix(None)));
        assert_eq!(backend.range(all).await.unwrap().kvs.len(), 1);
    }

    #[tokio::test]
    async fn repair_gives_cluster_ips_their_addresses_and_deletes_leaked_ones() {
        let addresses = ip_addresses().unwrap();
        let web = service("web", "10.96.3.4");
        let (_dir, backend) = store_with(&[&web]).await;
        let gone = service("gone", "10.96.5.5");
        let store = |ip: &str, mut address: Value| {
            address["metadata"]["name"] = json!(ip);
            let value = crate::handlers::server_created(addresses, address, FIELD_MANAGER);
            take(&backend, addresses.key(None, ip), value)
        };
        // Leaked: its Service does not exist (kept for the grace period), its Service holds
        // another IP, it names no Service; a user's IPAddress stays whatever it names.
        assert!(
            store("10.96.5.5", ip_address("10.96.5.5", &gone))
                .await
                .unwrap()
        );
        assert!(
            store("10.96.6.6", ip_address("10.96.6.6", &web))
                .await
                .unwrap()
        );
        let mut gateway = ip_address("10.96.7.7", &web);
        gateway["spec"]["parentRef"]["resource"] = json!("gateways");
        assert!(store("10.96.7.7", gateway).await.unwrap());
        let mut users = ip_address("10.96.8.8", &gone);
        users["metadata"]["labels"] = json!({"owner": "me"});
        assert!(store("10.96.8.8", users).await.unwrap());
        let left = || async {
            let all = RangeRequest::new(KeyRange::prefix(addresses.key_prefix(None)));
            let kvs = backend.range(all).await.unwrap().kvs;
            kvs.iter()
                .map(|kv| {
                    String::from_utf8_lossy(&kv.key)
                        .rsplit('/')
                        .next()
                        .unwrap()
                        .to_string()
                })
                .collect::<Vec<_>>()
        };

        let now = jiff::Timestamp::now();
        assert_eq!(repair_cluster_ips(&backend, now).await.unwrap(), (1, 2));
        assert_eq!(left().await, ["10.96.3.4", "10.96.5.5", "10.96.8.8"]);
        let (kv, _) = backend.get(addresses.key(None, "10.96.3.4")).await.unwrap();
        let address: Value = serde_json::from_slice(&kv.unwrap().value).unwrap();
        assert!(held_by(&address, &web), "{address}");

        // Past the grace period the address of the Service that never came goes too.
        let later = now + jiff::SignedDuration::from_secs(61);
        assert_eq!(repair_cluster_ips(&backend, later).await.unwrap(), (0, 1));
        assert_eq!(left().await, ["10.96.3.4", "10.96.8.8"]);
        assert_eq!(repair_cluster_ips(&backend, later).await.unwrap(), (0, 0));
    }

    #[test]
    fn a_service_that_becomes_external_name_gives_up_its_cluster_ip() {
        let old = service("web", "10.96.3.4");
        let mut new = old.clone();
        new["spec"]["type"] = json!("ExternalName");
        new["spec"]["externalName"] = json!("example.com");
        keep_service_allocations(&old, &mut new).unwrap();
        for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            assert_eq!(new["spec"].get(field), None, "{field}");
        }
        let kept = service_allocations(&new);
        assert!(!kept.iter().any(|k| k.ends_with("10.96.3.4")), "{kept:?}");

        // A ClusterIP Service keeps it when an update leaves it out.
        let mut same_type = old.clone();
        same_type["spec"]
            .as_object_mut()
            .unwrap()
            .remove("clusterIP");
        keep_service_allocations(&old, &mut same_type).unwrap();
        assert_eq!(same_type["spec"]["clusterIP"], "10.96.3.4");
    }
}

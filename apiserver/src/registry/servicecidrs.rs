//! ServiceCIDRs and the IPAddresses taken from them (networking.k8s.io/v1): upstream's
//! validation (pkg/apis/networking/validation/validation.go, with apimachinery's
//! util/validation/ip.go for the IPs and CIDRs) and their table cells (printers.go). The
//! entries themselves are in `others.rs`, beside the other networking kinds.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::{Value, json};

use crate::error::ApiError;

const GROUP: &str = "networking.k8s.io";

const NOT_AN_IP: &str = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)";
const NOT_A_CIDR: &str = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)";

/// An IP as k8s.io/utils' ParseIPSloppy reads it: what the standard library parses, and
/// dotted quads whose octets have leading zeros (read as decimal).
fn parse_ip_sloppy(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    let octets: Vec<&str> = s.split('.').collect();
    if octets.len() != 4 {
        return None;
    }
    let mut bytes = [0u8; 4];
    for (byte, octet) in bytes.iter_mut().zip(&octets) {
        if octet.is_empty() || !octet.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        *byte = octet.parse().ok()?;
    }
    Some(IpAddr::V4(Ipv4Addr::from(bytes)))
}

/// A CIDR as ParseCIDRSloppy reads it: a sloppy IP, `/`, and a decimal prefix length
/// (leading zeros allowed) no longer than the address.
pub(crate) fn parse_cidr_sloppy(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, bits) = s.split_once('/')?;
    let ip = parse_ip_sloppy(ip)?;
    if bits.is_empty() || !bits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let bits: u8 = bits.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (bits <= max).then_some((ip, bits))
}

fn is_ipv4_mapped(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some())
}

/// The network address of `ip/bits`.
fn masked(ip: IpAddr, bits: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

/// Upstream's ValidateIPAddressName (apimachinery's strict IsValidIP): why `name` is not an IP
/// in canonical form, if it is not one. IPAddresses are named by their IP.
pub(crate) fn ip_address_name(name: &str) -> Option<String> {
    let Some(ip) = parse_ip_sloppy(name) else {
        return Some(NOT_AN_IP.into());
    };
    if name.parse::<IpAddr>().is_err() {
        return Some("must not have leading 0s".into());
    }
    if is_ipv4_mapped(&ip) {
        return Some("must not be an IPv4-mapped IPv6 address".into());
    }
    let canonical = ip.to_string();
    (canonical != name).then(|| format!("must be in canonical form ({canonical:?})"))
}

/// Apimachinery's strict IsValidCIDR: why `value` is not a CIDR in canonical form, if it is
/// not one.
fn cidr_error(value: &str) -> Option<String> {
    let Some((ip, bits)) = parse_cidr_sloppy(value) else {
        return Some(NOT_A_CIDR.into());
    };
    // What netip.ParsePrefix refuses of what the sloppy parser takes: leading zeros.
    let strict = value.split_once('/').is_some_and(|(addr, len)| {
        addr.parse::<IpAddr>().is_ok() && (len == "0" || !len.starts_with('0'))
    });
    if !strict {
        return Some("must not have leading 0s in IP or prefix length".into());
    }
    if is_ipv4_mapped(&ip) {
        return Some("must not have an IPv4-mapped IPv6 address".into());
    }
    if masked(ip, bits) != ip {
        return Some("must not have bits set beyond the prefix length".into());
    }
    let canonical = format!("{ip}/{bits}");
    (canonical != value).then(|| format!("must be in canonical form ({canonical:?})"))
}

/// A list of strings as Go's `%#v` prints a `[]string` (upstream's messages show the value).
fn go_strings(list: Option<&[String]>) -> String {
    match list {
        None => "[]string(nil)".into(),
        Some(items) => {
            let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
            format!("[]string{{{}}}", quoted.join(", "))
        }
    }
}

fn cidrs(o: &Value) -> Option<Vec<String>> {
    o.pointer("/spec/cidrs")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .map(|c| c.as_str().unwrap_or_default().to_string())
                .collect()
        })
}

fn invalid(kind: &str, o: &Value, causes: Vec<(String, String)>) -> Result<(), ApiError> {
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(
            GROUP,
            kind,
            crate::object::name(o),
            causes,
        ))
    }
}

/// Upstream's ValidateServiceCIDR: one CIDR, or two of different IP families, each valid and
/// canonical.
pub(super) fn validate_service_cidr(o: &Value) -> Vec<(String, String)> {
    const FIELD: &str = "spec.cidrs";
    let listed = cidrs(o);
    let list = listed.as_deref().unwrap_or_default();
    let spec = || {
        format!(
            "networking.ServiceCIDRSpec{{CIDRs:{}}}",
            go_strings(listed.as_deref())
        )
    };
    if list.is_empty() {
        return vec![(
            FIELD.into(),
            "Required value: at least one CIDR required".into(),
        )];
    }
    if list.len() > 2 {
        return vec![(
            FIELD.into(),
            format!("Invalid value: {}: may only hold up to 2 values", spec()),
        )];
    }
    if let [first, second] = list {
        let ipv4 = |c: &str| parse_cidr_sloppy(c).map(|(ip, _)| ip.is_ipv4());
        let dual = matches!(
            (ipv4(first.as_str()), ipv4(second.as_str())),
            (Some(a), Some(b)) if a != b
        );
        if !dual {
            return vec![(
                FIELD.into(),
                format!(
                    "Invalid value: {}: may specify no more than one IP for each IP family, i.e 192.168.0.0/24 and 2001:db8::/64",
                    spec()
                ),
            )];
        }
    }
    list.iter()
        .enumerate()
        .filter_map(|(i, c)| {
            let why = cidr_error(c)?;
            Some((
                format!("{FIELD}[{i}]"),
                format!("Invalid value: {c:?}: {why}"),
            ))
        })
        .collect()
}

/// Upstream's ValidateServiceCIDRUpdate: the CIDRs stay, except that a single-stack
/// ServiceCIDR may gain a CIDR of the other family (https://issues.k8s.io/131261; the new
/// CIDR is checked with the rest of the object).
pub(super) fn service_cidr_update(current: &Value, new: &mut Value) -> Result<(), ApiError> {
    let (old, updated) = (cidrs(current), cidrs(new));
    let before = old.as_deref().unwrap_or_default();
    let after = updated.as_deref().unwrap_or_default();
    let immutable = |field: String, value: String| {
        (field, format!("Invalid value: {value}: field is immutable"))
    };
    let mut causes = Vec::new();
    if before.len() == after.len() {
        for (i, (was, is)) in before.iter().zip(after).enumerate() {
            if was != is {
                causes.push(immutable(format!("spec.cidrs[{i}]"), format!("{is:?}")));
            }
        }
    } else if before.len() == 1 && after.len() == 2 {
        if before[0] != after[0] {
            causes.push(immutable("spec.cidrs[0]".into(), format!("{:?}", after[0])));
        }
    } else {
        causes.push(immutable(
            "spec.cidrs".into(),
            go_strings(updated.as_deref()),
        ));
    }
    invalid("ServiceCIDR", new, causes)
}

/// printServiceCIDR's CIDRs cell: the CIDRs, comma-separated.
pub(super) fn cidrs_cell(o: &Value) -> Value {
    json!(cidrs(o).unwrap_or_default().join(","))
}

fn parent_field<'a>(o: &'a Value, field: &str) -> &'a str {
    o.pointer("/spec/parentRef")
        .and_then(|p| p.get(field))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The parent reference's group, resource, namespace and name ("" for each when absent).
fn parent_ref(o: &Value) -> [&str; 4] {
    ["group", "resource", "namespace", "name"].map(|f| parent_field(o, f))
}

/// Apimachinery's IsDNS1123Subdomain, with its messages.
fn dns1123_subdomain(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > 253 {
        errors.push("must be no more than 253 characters".to_string());
    }
    if !crate::object::dns1123_subdomain_pattern(value) {
        errors.push(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', \
             and must start and end with an alphanumeric character (e.g. 'example.com', regex used for \
             validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
                .to_string(),
        );
    }
    errors
}

/// Apimachinery's IsValidPathSegmentName: what a name that goes into a URL path may not be.
fn path_segment(value: &str) -> Vec<String> {
    if value == "." || value == ".." {
        return vec![format!("may not be '{value}'")];
    }
    ["/", "%"]
        .into_iter()
        .filter(|c| value.contains(*c))
        .map(|c| format!("may not contain '{c}'"))
        .collect()
}

/// Upstream's ValidateIPAddress (the name, an IP, is checked with the other kinds' names): a
/// parent reference with a resource and a name; the group and the namespace may be empty
/// (the core group is, and so are cluster-scoped parents).
pub(super) fn validate_ip_address(o: &Value) -> Vec<(String, String)> {
    const FIELD: &str = "spec.parentRef";
    let [group, resource, namespace, name] = parent_ref(o);
    // The typed form turns an absent reference into one of empty strings.
    if [group, resource, namespace, name]
        .iter()
        .all(|s| s.is_empty())
    {
        return vec![(FIELD.into(), "Required value".into())];
    }
    let mut errors = Vec::new();
    let mut check = |field: &str, value: &str, required: bool, whys: Vec<String>| {
        let at = format!("{FIELD}.{field}");
        if value.is_empty() {
            if required {
                errors.push((at, "Required value".to_string()));
            }
            return;
        }
        errors.extend(
            whys.into_iter()
                .map(|why| (at.clone(), format!("Invalid value: {value:?}: {why}"))),
        );
    };
    check("group", group, false, dns1123_subdomain(group));
    check("resource", resource, true, path_segment(resource));
    check("name", name, true, path_segment(name));
    check("namespace", namespace, false, path_segment(namespace));
    errors
}

/// Upstream's ValidateIPAddressUpdate: the parent reference stays.
pub(super) fn ip_address_update(current: &Value, new: &mut Value) -> Result<(), ApiError> {
    if parent_ref(current) == parent_ref(new) {
        return Ok(());
    }
    let [group, resource, namespace, name] = parent_ref(new);
    let shown = format!(
        "networking.ParentReference{{Group:{group:?}, Resource:{resource:?}, Namespace:{namespace:?}, Name:{name:?}}}"
    );
    invalid(
        "IPAddress",
        new,
        vec![(
            "spec.parentRef".into(),
            format!("Invalid value: {shown}: field is immutable"),
        )],
    )
}

/// printIPAddress's ParentRef cell: `<resource>[.<group>]` in lower case, then
/// `/<namespace>` when there is one, then `/<name>`.
pub(super) fn parent_ref_cell(o: &Value) -> Value {
    if o.pointer("/spec/parentRef").is_none() {
        return json!("<none>");
    }
    let [group, resource, namespace, name] = parent_ref(o);
    let mut cell = if group.is_empty() {
        resource.to_lowercase()
    } else {
        format!("{resource}.{group}").to_lowercase()
    };
    if !namespace.is_empty() {
        cell.push('/');
        cell.push_str(namespace);
    }
    cell.push('/');
    cell.push_str(name);
    json!(cell)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_address_names_are_canonical_ips() {
        assert_eq!(ip_address_name("255.255.255.255"), None);
        assert_eq!(ip_address_name("fe80::42:1dff:fe84:f9e2"), None);
        assert_eq!(ip_address_name("10.0.0.x"), Some(NOT_AN_IP.into()));
        assert_eq!(
            ip_address_name("010.0.0.1").as_deref(),
            Some("must not have leading 0s")
        );
        assert_eq!(
            ip_address_name("::ffff:10.0.0.1").as_deref(),
            Some("must not be an IPv4-mapped IPv6 address")
        );
        assert_eq!(
            ip_address_name("2001:DB8::1").as_deref(),
            Some("must be in canonical form (\"2001:db8::1\")")
        );
    }

    #[test]
    fn cidrs_are_canonical_networks() {
        assert_eq!(cidr_error("10.96.0.0/16"), None);
        assert_eq!(cidr_error("2001:db8::/64"), None);
        assert_eq!(cidr_error("10.96.0.0"), Some(NOT_A_CIDR.into()));
        assert_eq!(cidr_error("10.96.0.0/33"), Some(NOT_A_CIDR.into()));
        assert_eq!(
            cidr_error("10.96.0.0/016").as_deref(),
            Some("must not have leading 0s in IP or prefix length")
        );
        assert_eq!(
            cidr_error("10.96.0.1/16").as_deref(),
            Some("must not have bits set beyond the prefix length")
        );
        assert_eq!(
            cidr_error("2001:DB8::/64").as_deref(),
            Some("must be in canonical form (\"2001:db8::/64\")")
        );
    }

    #[test]
    fn a_service_cidr_holds_one_cidr_per_family() {
        let with = |cidrs: Value| validate_service_cidr(&json!({"spec": {"cidrs": cidrs}}));
        assert!(with(json!(["10.96.0.0/16", "2001:db8::/112"])).is_empty());
        assert_eq!(
            with(json!([])),
            [(
                "spec.cidrs".to_string(),
                "Required value: at least one CIDR required".to_string()
            )]
        );
        assert_eq!(
            with(json!(["10.0.0.0/24", "10.1.0.0/24"]))[0].1,
            "Invalid value: networking.ServiceCIDRSpec{CIDRs:[]string{\"10.0.0.0/24\", \"10.1.0.0/24\"}}: \
             may specify no more than one IP for each IP family, i.e 192.168.0.0/24 and 2001:db8::/64"
        );
        assert_eq!(
            with(json!(["10.0.0.1/24"])),
            [(
                "spec.cidrs[0]".to_string(),
                "Invalid value: \"10.0.0.1/24\": must not have bits set beyond the prefix length"
                    .to_string()
            )]
        );
    }

    #[test]
    fn service_cidrs_stay_but_may_become_dual_stack() {
        let object = |cidrs: Value| json!({"metadata": {"name": "c"}, "spec": {"cidrs": cidrs}});
        let single = object(json!(["10.96.0.0/16"]));
        let dual = object(json!(["10.96.0.0/16", "fd00::/108"]));
        let swapped = object(json!(["10.97.0.0/16", "fd00::/108"]));
        assert!(service_cidr_update(&single, &mut dual.clone()).is_ok());
        assert!(service_cidr_update(&single, &mut object(json!(["10.97.0.0/16"]))).is_err());
        assert!(service_cidr_update(&single, &mut swapped.clone()).is_err());
        assert!(service_cidr_update(&dual, &mut single.clone()).is_err());
    }

    #[test]
    fn an_ip_address_names_its_parent() {
        let with = |parent: Value| validate_ip_address(&json!({"spec": {"parentRef": parent}}));
        let service =
            json!({"group": "", "resource": "services", "namespace": "default", "name": "web"});
        assert!(with(service).is_empty());
        assert_eq!(
            with(json!({"name": "", "resource": ""})),
            [("spec.parentRef".to_string(), "Required value".to_string())]
        );
        assert_eq!(
            with(json!({"resource": "services"})),
            [(
                "spec.parentRef.name".to_string(),
                "Required value".to_string()
            )]
        );
        assert_eq!(
            with(json!({"resource": "a/b", "name": ".."})),
            [
                (
                    "spec.parentRef.resource".to_string(),
                    "Invalid value: \"a/b\": may not contain '/'".to_string()
                ),
                (
                    "spec.parentRef.name".to_string(),
                    "Invalid value: \"..\": may not be '..'".to_string()
                ),
            ]
        );
    }

    #[test]
    fn parent_refs_print_as_upstream() {
        let cell = |parent: Value| parent_ref_cell(&json!({"spec": {"parentRef": parent}}));
        let service =
            json!({"group": "", "resource": "services", "namespace": "default", "name": "web"});
        assert_eq!(cell(service), json!("services/default/web"));
        assert_eq!(
            cell(json!({"group": "myGroup", "resource": "MyResources", "name": "bar"})),
            json!("myresources.mygroup/bar")
        );
    }
}

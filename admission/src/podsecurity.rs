//! Pod Security admission (upstream's `k8s.io/pod-security-admission`, v1.33): the baseline
//! and restricted Pod Security Standards, enforced, warned or audited per namespace by the
//! `pod-security.kubernetes.io/<mode>[-version]` labels.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

pub const PREFIX: &str = "pod-security.kubernetes.io/";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Privileged,
    Baseline,
    Restricted,
}

/// A level at a version (`None`: latest), with the version as its label spells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LevelVersion {
    pub level: Level,
    pub minor: Option<u32>,
    version_text: String,
}

impl LevelVersion {
    fn latest(level: Level) -> LevelVersion {
        LevelVersion {
            level,
            minor: None,
            version_text: "latest".into(),
        }
    }

    /// `restricted:latest`, as upstream's messages name a policy.
    pub fn name(&self) -> String {
        let level = match self.level {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        };
        format!("{level}:{}", self.version_text)
    }

    /// Whether the rules of `minor` apply (latest runs the newest rules).
    fn at_least(&self, minor: u32) -> bool {
        self.minor.is_none_or(|m| m >= minor)
    }
}

/// The three modes a namespace's labels set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub enforce: LevelVersion,
    pub audit: LevelVersion,
    pub warn: LevelVersion,
}

fn parse_level(s: &str) -> Option<Level> {
    match s {
        "privileged" => Some(Level::Privileged),
        "baseline" => Some(Level::Baseline),
        "restricted" => Some(Level::Restricted),
        _ => None,
    }
}

/// `latest` (None inside) or `v1.<minor>`.
fn parse_version(s: &str) -> Option<Option<u32>> {
    if s == "latest" {
        return Some(None);
    }
    let minor = s.strip_prefix("v1.")?;
    let valid = !minor.is_empty()
        && minor.bytes().all(|b| b.is_ascii_digit())
        && (minor == "0" || !minor.starts_with('0'));
    valid.then(|| minor.parse().ok()).flatten().map(Some)
}

fn label<'a>(labels: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    labels
        .get(&format!("{PREFIX}{key}"))
        .and_then(Value::as_str)
}

/// The field errors of a namespace's Pod Security labels (422 on namespace writes).
pub fn label_errors(labels: &Map<String, Value>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for mode in ["enforce", "audit", "warn"] {
        if let Some(v) = label(labels, mode)
            && parse_level(v).is_none()
        {
            out.push((
                format!("metadata.labels[{PREFIX}{mode}]"),
                format!("Invalid value: {v:?}: must be one of privileged, baseline, restricted"),
            ));
        }
        let key = format!("{mode}-version");
        if let Some(v) = label(labels, &key)
            && parse_version(v).is_none()
        {
            out.push((
                format!("metadata.labels[{PREFIX}{key}]"),
                format!("Invalid value: {v:?}: must be \"latest\" or \"v1.x\""),
            ));
        }
    }
    out
}

/// The policy a namespace's labels ask for, with upstream's fallbacks: an invalid enforce
/// level is restricted, invalid audit and warn levels privileged, invalid versions latest;
/// without a warn label, warn follows a valid enforce.
pub fn policy(labels: &Map<String, Value>) -> Policy {
    let mode = |m: &str, invalid: Level| {
        let level = match label(labels, m) {
            None => Level::Privileged,
            Some(v) => parse_level(v).unwrap_or(invalid),
        };
        match label(labels, &format!("{m}-version")).map(|v| (v, parse_version(v))) {
            Some((text, Some(minor))) => LevelVersion {
                level,
                minor,
                version_text: text.to_string(),
            },
            _ => LevelVersion::latest(level),
        }
    };
    let enforce = mode("enforce", Level::Restricted);
    let audit = mode("audit", Level::Privileged);
    let mut warn = mode("warn", Level::Privileged);
    let enforce_valid = label(labels, "enforce").is_some_and(|v| parse_level(v).is_some());
    if label(labels, "warn").is_none() && enforce_valid && enforce.level > warn.level {
        warn.level = enforce.level;
        if label(labels, "warn-version").is_none() {
            warn.minor = enforce.minor;
            warn.version_text = enforce.version_text.clone();
        }
    }
    Policy {
        enforce,
        audit,
        warn,
    }
}

fn quoted(items: &[String]) -> String {
    items
        .iter()
        .map(|i| format!("{i:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn plural<'a>(one: &'a str, many: &'a str, n: usize) -> &'a str {
    if n == 1 { one } else { many }
}

/// `container "a"` / `containers "a", "b"`.
fn containers_phrase(names: &[String]) -> String {
    format!(
        "{} {}",
        plural("container", "containers", names.len()),
        quoted(names)
    )
}

/// `pod and containers "a", "b"`: who set a forbidden value.
fn setters(pod: bool, containers: &[String]) -> String {
    let mut parts = Vec::new();
    if pod {
        parts.push("pod".to_string());
    }
    if !containers.is_empty() {
        parts.push(containers_phrase(containers));
    }
    parts.join(" and ")
}

fn sorted(set: BTreeSet<String>) -> Vec<String> {
    set.into_iter().collect()
}

struct Pod<'a> {
    meta: &'a Value,
    spec: &'a Value,
    containers: Vec<&'a Value>,
}

impl<'a> Pod<'a> {
    fn new(meta: &'a Value, spec: &'a Value) -> Pod<'a> {
        let containers = ["initContainers", "containers", "ephemeralContainers"]
            .iter()
            .flat_map(|k| spec.get(*k).and_then(Value::as_array).into_iter().flatten())
            .collect();
        Pod {
            meta,
            spec,
            containers,
        }
    }

    fn pod_sc(&self, pointer: &str) -> Option<&'a Value> {
        self.spec.pointer(&format!("/securityContext{pointer}"))
    }

    fn windows(&self) -> bool {
        self.spec.pointer("/os/name").and_then(Value::as_str) == Some("windows")
    }
}

fn name(c: &Value) -> String {
    c.get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn sc<'a>(c: &'a Value, pointer: &str) -> Option<&'a Value> {
    c.pointer(&format!("/securityContext{pointer}"))
}

type Check = fn(&Pod<'_>, &LevelVersion) -> Option<(String, String)>;

fn privileged(p: &Pod<'_>, _: &LevelVersion) -> Option<(String, String)> {
    let bad: Vec<String> = p
        .containers
        .iter()
        .filter(|c| sc(c, "/privileged") == Some(&Value::Bool(true)))
        .map(|c| name(c))
        .collect();
    (!bad.is_empty()).then(|| {
        (
            "privileged".into(),
            format!(
                "{} must not set securityContext.privileged=true",
                containers_phrase(&bad)
            ),
        )
    })
}

fn host_namespaces(p: &Pod<'_>, _: &LevelVersion) -> Option<(String, String)> {
    let set: Vec<String> = ["hostNetwork", "hostPID", "hostIPC"]
        .iter()
        .filter(|k| p.spec.get(**k) == Some(&Value::Bool(true)))
        .map(|k| format!("{k}=true"))
        .collect();
    (!set.is_empty()).then(|| ("host namespaces".into(), set.join(", ")))
}

fn volumes(p: &Pod<'_>) -> Vec<(String, String)> {
    p.spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|v| {
            let source = v
                .as_object()
                .and_then(|o| o.keys().find(|k| *k != "name").cloned())
                .unwrap_or_else(|| "unknown".into());
            (name(v), source)
        })
        .collect()
}

fn host_path_volumes(p: &Pod<'_>, _: &LevelVersion) -> Option<(String, String)> {
    let bad: Vec<String> = volumes(p)
        .into_iter()
        .filter(|(_, s)| s == "hostPath")
        .map(|(n, _)| n)
        .collect();
    (!bad.is_empty()).then(|| {
        (
            "hostPath volumes".into(),
            format!(
                "{} {}",
                plural("volume", "volumes", bad.len()),
                quoted(&bad)
            ),
        )
    })
}

fn host_ports(p: &Pod<'_>, _: &LevelVersion) -> Option<(String, String)> {
    let mut bad = Vec::new();
    let mut ports = BTreeSet::new();
    for c in &p.containers {
        let mut any = false;
        for port in c
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(h) = port
                .get("hostPort")
                .and_then(Value::as_i64)
                .filter(|h| *h != 0)
            {
                ports.insert(h.to_string());
                any = true;
            }
        }
        if any {
            bad.push(name(c));
        }
    }
    (!bad.is_empty()).then(|| {
        let ports = sorted(ports);
        (
            "hostPort".into(),
            format!(
                "{} {} {} {}",
                containers_phrase(&bad),
                plural("uses", "use", bad.len()),
                plural("hostPort", "hostPorts", ports.len()),
                ports.join(", ")
            ),
        )
    })
}

const DEFAULT_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

fn added(c: &Value) -> Vec<String> {
    sc(c, "/capabilities/add")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

fn capabilities_baseline(p: &Pod<'_>, _: &LevelVersion) -> Option<(String, String)> {
    let mut bad = Vec::new();
    let mut caps = BTreeSet::new();
    for c in &p.containers {
        let extra: Vec<String> = added(c)
            .into_iter()
            .filter(|a| !DEFAULT_CAPABILITIES.contains(&a.as_str()))
            .collect();
        if !extra.is_empty() {
            bad.push(name(c));
            caps.extend(extra);
        }
    }
    (!bad.is_empty()).then(|| {
        (
            "non-default capabilities".into(),
            format!(
                "{} must not include {} in securityContext.capabilities.add",
                containers_phrase(&bad),
                quoted(&sorted(caps))
            ),
        )
    })
}

fn proc_mount(p: &Pod<'_>, _: &LevelVersion) -> Option<(String, String)> {
    let mut bad = Vec::new();
    let mut values = BTreeSet::new();
    for c in &p.containers {
        if let Some(m) = sc(c, "/procMount").and_then(Value::as_str)
            && m != "Default"
        {
            bad.push(name(c));
            values.insert(m.to_string());
        }
    }
    (!bad.is_empty()).then(|| {
        (
            "procMount".into(),
            format!(
                "{} must not set securityContext.procMount to {}",
                containers_phrase(&bad),
                quoted(&sorted(values))
            ),
        )
    })
}

fn app_armor(p: &Pod<'_>, _: &LevelVersion) -> Option<(String, String)> {
    let ok = |t: &str| t == "RuntimeDefault" || t == "Localhost";
    let mut values = BTreeSet::new();
    let mut pod = false;
    if let Some(t) = p.pod_sc("/appArmorProfile/type").and_then(Value::as_str)
        && !ok(t)
    {
        pod = true;
        values.insert(t.to_string());
    }
    let mut bad = Vec::new();
    for c in &p.containers {
        if let Some(t) = sc(c, "/appArmorProfile/type").and_then(Value::as_str)
            && !ok(t)
        {
            bad.push(name(c));
            values.insert(t.to_string());
        }
    }
    let mut annotations = BTreeSet::new();
    for (k, v) in p
        .meta
        .get("annotations")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let v = v.as_str().unwrap_or("");
        if k.starts_with("container.apparmor.security.beta.kubernetes.io/")
            && !(v.is_empty() || v == "runtime/default" || v.starts_with("localhost/"))
        {
            annotations.insert(format!("{k}={v:?}"));
        }
    }
    let total = values.len() + annotations.len();
    if total == 0 {
        return None;
    }
    let mut who = setters(pod, &bad);
    if !annotations.is_empty() {
        let a = plural("annotation", "annotations", annotations.len());
        who = if who.is_empty() {
            a.to_string()
        } else {
            format!("{who} and {a}")
        };
    }
    let mut all = sorted(values);
    all.extend(sorted(annotations));
    Some((
        plural(
            "forbidden AppArmor profile",
            "forbidden AppArmor profiles",
            total,
        )
        .into(),
        format!(
            "{who} must not set AppArmor profile type to {}",
            quoted(&all)
        ),
    ))
}

fn se_linux(p: &Pod<'_>, lv: &LevelVersion) -> Option<(String, String)> {
    let mut types_ok = vec!["", "container_t", "container_init_t", "container_kvm_t"];
    if lv.at_least(31) {
        types_ok.push("container_engine_t");
    }
    let mut types = BTreeSet::new();
    let (mut user, mut role) = (false, false);
    let mut check = |opts: Option<&Value>| -> bool {
        let Some(o) = opts else { return false };
        let mut bad = false;
        if let Some(t) = o.get("type").and_then(Value::as_str)
            && !types_ok.contains(&t)
        {
            types.insert(t.to_string());
            bad = true;
        }
        if o.get("user")
            .and_then(Value::as_str)
            .is_some_and(|u| !u.is_empty())
        {
            user = true;
            bad = true;
        }
        if o.get("role")
            .and_then(Value::as_str)
            .is_some_and(|r| !r.is_empty())
        {
            role = true;
            bad = true;
        }
        bad
    };
    let pod = check(p.pod_sc("/seLinuxOptions"));
    let bad: Vec<String> = p
        .containers
        .iter()
        .filter(|c| check(sc(c, "/seLinuxOptions")))
        .map(|c| name(c))
        .collect();
    if !pod && bad.is_empty() {
        return None;
    }
    let mut parts = Vec::new();
    if !types.is_empty() {
        let t = sorted(types);
        parts.push(format!(
            "{} {}",
            plural("type", "types", t.len()),
            quoted(&t)
        ));
    }
    if user {
        parts.push("user may not be set".to_string());
    }
    if role {
        parts.push("role may not be set".to_string());
    }
    Some((
        "seLinuxOptions".into(),
        format!(
            "{} set forbidden securityContext.seLinuxOptions: {}",
            setters(pod, &bad),
            parts.join("; ")
        ),
    ))
}

fn seccomp_ok(t: &str) -> bool {
    t == "RuntimeDefault" || t == "Localhost"
}

fn seccomp_baseline(p: &Pod<'_>, _: &LevelVersion) -> Option<(String, String)> {
    let mut values = BTreeSet::new();
    let mut pod = false;
    if let Some(t) = p.pod_sc("/seccompProfile/type").and_then(Value::as_str)
        && !seccomp_ok(t)
    {
        pod = true;
        values.insert(t.to_string());
    }
    let mut bad = Vec::new();
    for c in &p.containers {
        if let Some(t) = sc(c, "/seccompProfile/type").and_then(Value::as_str)
            && !seccomp_ok(t)
        {
            bad.push(name(c));
            values.insert(t.to_string());
        }
    }
    (pod || !bad.is_empty()).then(|| {
        (
            "seccompProfile".into(),
            format!(
                "{} must not set securityContext.seccompProfile.type to {}",
                setters(pod, &bad),
                quoted(&sorted(values))
            ),
        )
    })
}

fn sysctls(p: &Pod<'_>, lv: &LevelVersion) -> Option<(String, String)> {
    let mut allowed = vec![
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_unprivileged_port_start",
    ];
    if lv.at_least(27) {
        allowed.push("net.ipv4.ip_local_reserved_ports");
    }
    if lv.at_least(29) {
        allowed.extend([
            "net.ipv4.tcp_keepalive_time",
            "net.ipv4.tcp_fin_timeout",
            "net.ipv4.tcp_keepalive_intvl",
            "net.ipv4.tcp_keepalive_probes",
        ]);
    }
    if lv.at_least(32) {
        allowed.extend(["net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"]);
    }
    let bad: Vec<&str> = p
        .pod_sc("/sysctls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("name").and_then(Value::as_str))
        .filter(|n| !allowed.contains(n))
        .collect();
    (!bad.is_empty()).then(|| ("forbidden sysctls".into(), bad.join(", ")))
}

fn windows_host_process(p: &Pod<'_>, _: &LevelVersion) -> Option<(String, String)> {
    let yes = Some(&Value::Bool(true));
    let pod = p.pod_sc("/windowsOptions/hostProcess") == yes;
    let bad: Vec<String> = p
        .containers
        .iter()
        .filter(|c| sc(c, "/windowsOptions/hostProcess") == yes)
        .map(|c| name(c))
        .collect();
    (pod || !bad.is_empty()).then(|| {
        (
            "hostProcess".into(),
            format!(
                "{} must not set securityContext.windowsOptions.hostProcess=true",
                setters(pod, &bad)
            ),
        )
    })
}

fn allow_privilege_escalation(p: &Pod<'_>, lv: &LevelVersion) -> Option<(String, String)> {
    if lv.at_least(25) && p.windows() {
        return None;
    }
    let bad: Vec<String> = p
        .containers
        .iter()
        .filter(|c| sc(c, "/allowPrivilegeEscalation") != Some(&Value::Bool(false)))
        .map(|c| name(c))
        .collect();
    (!bad.is_empty()).then(|| {
        (
            "allowPrivilegeEscalation != false".into(),
            format!(
                "{} must set securityContext.allowPrivilegeEscalation=false",
                containers_phrase(&bad)
            ),
        )
    })
}

fn capabilities_restricted(p: &Pod<'_>, lv: &LevelVersion) -> Option<(String, String)> {
    if lv.at_least(25) && p.windows() {
        return None;
    }
    let mut no_drop = Vec::new();
    let mut adding = Vec::new();
    let mut caps = BTreeSet::new();
    for c in &p.containers {
        let drops_all = sc(c, "/capabilities/drop")
            .and_then(Value::as_array)
            .is_some_and(|d| d.iter().any(|x| x == "ALL"));
        if !drops_all {
            no_drop.push(name(c));
        }
        let extra: Vec<String> = added(c)
            .into_iter()
            .filter(|a| a != "NET_BIND_SERVICE")
            .collect();
        if !extra.is_empty() {
            adding.push(name(c));
            caps.extend(extra);
        }
    }
    let mut parts = Vec::new();
    if !no_drop.is_empty() {
        parts.push(format!(
            "{} must set securityContext.capabilities.drop=[\"ALL\"]",
            containers_phrase(&no_drop)
        ));
    }
    if !adding.is_empty() {
        parts.push(format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_phrase(&adding),
            quoted(&sorted(caps))
        ));
    }
    (!parts.is_empty()).then(|| ("unrestricted capabilities".into(), parts.join("; ")))
}

fn restricted_volumes(p: &Pod<'_>, _: &LevelVersion) -> Option<(String, String)> {
    const ALLOWED: &[&str] = &[
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "image",
        "persistentVolumeClaim",
        "projected",
        "secret",
    ];
    let mut bad = Vec::new();
    let mut types = BTreeSet::new();
    for (n, source) in volumes(p) {
        if !ALLOWED.contains(&source.as_str()) {
            bad.push(n);
            types.insert(source);
        }
    }
    (!bad.is_empty()).then(|| {
        let types = sorted(types);
        (
            "restricted volume types".into(),
            format!(
                "{} {} {} {} {}",
                plural("volume", "volumes", bad.len()),
                quoted(&bad),
                plural("uses", "use", bad.len()),
                plural(
                    "restricted volume type",
                    "restricted volume types",
                    types.len()
                ),
                quoted(&types)
            ),
        )
    })
}

fn run_as_non_root(p: &Pod<'_>, _: &LevelVersion) -> Option<(String, String)> {
    let mut pod_bad = false;
    let mut pod_ok = false;
    match p.pod_sc("/runAsNonRoot") {
        Some(Value::Bool(false)) => pod_bad = true,
        Some(Value::Bool(true)) => pod_ok = true,
        _ => {}
    }
    let (mut explicit, mut implicit) = (Vec::new(), Vec::new());
    for c in &p.containers {
        match sc(c, "/runAsNonRoot") {
            Some(Value::Bool(false)) => explicit.push(name(c)),
            Some(Value::Bool(true)) => {}
            _ if !pod_ok => implicit.push(name(c)),
            _ => {}
        }
    }
    const REASON: &str = "runAsNonRoot != true";
    if pod_bad || !explicit.is_empty() {
        return Some((
            REASON.into(),
            format!(
                "{} must not set securityContext.runAsNonRoot=false",
                setters(pod_bad, &explicit)
            ),
        ));
    }
    (!implicit.is_empty()).then(|| {
        (
            REASON.into(),
            format!(
                "pod or {} must set securityContext.runAsNonRoot=true",
                containers_phrase(&implicit)
            ),
        )
    })
}

fn run_as_user(p: &Pod<'_>, _: &LevelVersion) -> Option<(String, String)> {
    let zero = |v: Option<&Value>| v.and_then(Value::as_i64) == Some(0);
    let pod = zero(p.pod_sc("/runAsUser"));
    let bad: Vec<String> = p
        .containers
        .iter()
        .filter(|c| zero(sc(c, "/runAsUser")))
        .map(|c| name(c))
        .collect();
    (pod || !bad.is_empty()).then(|| {
        (
            "runAsUser=0".into(),
            format!("{} must not set runAsUser=0", setters(pod, &bad)),
        )
    })
}

fn seccomp_restricted(p: &Pod<'_>, lv: &LevelVersion) -> Option<(String, String)> {
    if lv.at_least(25) && p.windows() {
        return None;
    }
    let mut values = BTreeSet::new();
    let (mut pod_bad, mut pod_ok) = (false, false);
    if let Some(t) = p.pod_sc("/seccompProfile/type").and_then(Value::as_str) {
        if seccomp_ok(t) {
            pod_ok = true;
        } else {
            pod_bad = true;
            values.insert(t.to_string());
        }
    }
    let (mut explicit, mut implicit) = (Vec::new(), Vec::new());
    for c in &p.containers {
        match sc(c, "/seccompProfile/type").and_then(Value::as_str) {
            Some(t) if !seccomp_ok(t) => {
                explicit.push(name(c));
                values.insert(t.to_string());
            }
            Some(_) => {}
            None if !pod_ok => implicit.push(name(c)),
            None => {}
        }
    }
    if pod_bad || !explicit.is_empty() {
        return Some((
            "seccompProfile".into(),
            format!(
                "{} must not set securityContext.seccompProfile.type to {}",
                setters(pod_bad, &explicit),
                quoted(&sorted(values))
            ),
        ));
    }
    (!implicit.is_empty()).then(|| {
        (
            "seccompProfile".into(),
            format!(
                "pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"",
                containers_phrase(&implicit)
            ),
        )
    })
}

/// The checks of a level at a version, in upstream's order (baseline IDs sorted, then
/// restricted IDs sorted; the baseline checks restricted replaces left out).
fn checks(lv: &LevelVersion) -> Vec<Check> {
    let mut out: Vec<Check> = Vec::new();
    if lv.level == Level::Privileged {
        return out;
    }
    let restricted = lv.level == Level::Restricted;
    out.push(app_armor);
    if !(restricted && lv.at_least(22)) {
        out.push(capabilities_baseline);
    }
    out.push(host_namespaces);
    if !restricted {
        out.push(host_path_volumes);
    }
    out.extend([host_ports as Check, privileged, proc_mount, se_linux]);
    if !(restricted && lv.at_least(19)) {
        out.push(seccomp_baseline);
    }
    out.extend([sysctls as Check, windows_host_process]);
    if restricted {
        if lv.at_least(8) {
            out.push(allow_privilege_escalation);
        }
        if lv.at_least(22) {
            out.push(capabilities_restricted);
        }
        out.push(restricted_volumes);
        out.push(run_as_non_root);
        if lv.at_least(23) {
            out.push(run_as_user);
        }
        if lv.at_least(19) {
            out.push(seccomp_restricted);
        }
    }
    out
}

/// What a pod (its metadata and spec) violates at a level, as upstream words it:
/// `reason (detail), reason (detail)`; None when it complies.
pub fn violations(lv: &LevelVersion, meta: &Value, spec: &Value) -> Option<String> {
    let pod = Pod::new(meta, spec);
    let found: Vec<String> = checks(lv)
        .iter()
        .filter_map(|check| check(&pod, lv))
        .map(|(reason, detail)| {
            if detail.is_empty() {
                reason
            } else {
                format!("{reason} ({detail})")
            }
        })
        .collect();
    (!found.is_empty()).then(|| found.join(", "))
}

/// Where a kind keeps its pod template (the pod controllers, which get warnings only).
pub fn template_pointer(group: &str, plural: &str) -> Option<&'static str> {
    match (group, plural) {
        ("", "podtemplates") => Some("/template"),
        ("", "replicationcontrollers")
        | ("apps", "replicasets" | "deployments" | "statefulsets" | "daemonsets")
        | ("batch", "jobs") => Some("/spec/template"),
        ("batch", "cronjobs") => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

/// Whether a pod update changes what Pod Security looks at (upstream checks only those):
/// the number of containers, their images, or the ephemeral containers.
pub fn significant_update(old: &Value, new: &Value) -> bool {
    let images = |p: &Value, k: &str| -> Vec<Value> {
        p.pointer(&format!("/spec/{k}"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|c| c.get("image").cloned().unwrap_or(Value::Null))
                    .collect()
            })
            .unwrap_or_default()
    };
    images(old, "containers") != images(new, "containers")
        || images(old, "initContainers") != images(new, "initContainers")
        || old.pointer("/spec/ephemeralContainers") != new.pointer("/spec/ephemeralContainers")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn labels_pick_levels_with_upstreams_fallbacks() {
        let p = policy(&labels(
            json!({"pod-security.kubernetes.io/enforce": "restricted"}),
        ));
        assert_eq!(p.enforce.name(), "restricted:latest");
        assert_eq!(p.warn.name(), "restricted:latest", "warn follows enforce");
        assert_eq!(p.audit.name(), "privileged:latest");
        let p = policy(&labels(json!({
            "pod-security.kubernetes.io/enforce": "bogus",
            "pod-security.kubernetes.io/warn": "baseline",
            "pod-security.kubernetes.io/warn-version": "v1.30",
        })));
        assert_eq!(p.enforce.level, Level::Restricted);
        assert_eq!(p.warn.name(), "baseline:v1.30");
        let errors = label_errors(&labels(json!({
            "pod-security.kubernetes.io/enforce": "bogus",
            "pod-security.kubernetes.io/audit-version": "1.25",
        })));
        assert_eq!(errors.len(), 2);
        assert_eq!(
            errors[0].1,
            "Invalid value: \"bogus\": must be one of privileged, baseline, restricted"
        );
        assert_eq!(
            errors[1].1,
            "Invalid value: \"1.25\": must be \"latest\" or \"v1.x\""
        );
    }

    #[test]
    fn a_bare_pod_violates_restricted_as_upstream_words_it() {
        let lv = policy(&labels(
            json!({"pod-security.kubernetes.io/enforce": "restricted"}),
        ))
        .enforce;
        let spec = json!({"containers": [{"name": "test", "image": "nginx"}]});
        assert_eq!(
            violations(&lv, &json!({}), &spec).unwrap(),
            "allowPrivilegeEscalation != false (container \"test\" must set securityContext.allowPrivilegeEscalation=false), \
             unrestricted capabilities (container \"test\" must set securityContext.capabilities.drop=[\"ALL\"]), \
             runAsNonRoot != true (pod or container \"test\" must set securityContext.runAsNonRoot=true), \
             seccompProfile (pod or container \"test\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
        );
        let good = json!({
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "test", "image": "nginx", "securityContext": {
                "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}],
        });
        assert_eq!(violations(&lv, &json!({}), &good), None);
    }

    #[test]
    fn baseline_names_host_namespaces_privileged_containers_and_host_ports() {
        let lv = policy(&labels(
            json!({"pod-security.kubernetes.io/enforce": "baseline"}),
        ))
        .enforce;
        let spec = json!({
            "hostPID": true,
            "hostNetwork": true,
            "volumes": [{"name": "root", "hostPath": {"path": "/"}}, {"name": "tmp", "emptyDir": {}}],
            "containers": [
                {"name": "a", "image": "x", "securityContext": {"privileged": true, "capabilities": {"add": ["NET_ADMIN", "CHOWN"]}},
                 "ports": [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 90, "hostPort": 10000}]},
                {"name": "b", "image": "x", "securityContext": {"privileged": true}},
            ],
        });
        assert_eq!(
            violations(&lv, &json!({}), &spec).unwrap(),
            "non-default capabilities (container \"a\" must not include \"NET_ADMIN\" in securityContext.capabilities.add), \
             host namespaces (hostNetwork=true, hostPID=true), \
             hostPath volumes (volume \"root\"), \
             hostPort (container \"a\" uses hostPorts 10000, 8080), \
             privileged (containers \"a\", \"b\" must not set securityContext.privileged=true)"
        );
        let privileged = policy(&Map::new()).enforce;
        assert_eq!(violations(&privileged, &json!({}), &spec), None);
    }
}

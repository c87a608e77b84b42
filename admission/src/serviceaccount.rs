//! The ServiceAccount admission plugin (upstream's `plugin/pkg/admission/serviceaccount`):
//! a new pod runs as a service account (`default` unless it names one) that must exist, and
//! unless the pod or the account opts out it gets the projected `kube-api-access-<suffix>`
//! volume (a bound token, the cluster CA and the namespace) mounted in every init and app
//! container at the path client libraries read; mirror pods may reference neither service
//! accounts nor secrets. The API server looks the account up and hands it in.

use serde_json::{Value, json};

pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
/// Where clients look for the token, `ca.crt` and `namespace`.
pub const API_TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The projected volume's name prefix; a random suffix follows.
pub const VOLUME_PREFIX: &str = "kube-api-access-";
/// The bound token's lifetime in the projected volume (upstream's
/// WarnOnlyBoundTokenExpirationSeconds: an hour and seven seconds).
pub const TOKEN_EXPIRATION_SECONDS: i64 = 3607;
/// A service account annotation that limits its pods to the secrets it lists.
pub const ENFORCE_MOUNTABLE_SECRETS: &str = "kubernetes.io/enforce-mountable-secrets";
const MIRROR_POD: &str = "kubernetes.io/config.mirror";

pub fn is_mirror_pod(pod: &Value) -> bool {
    pod.pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .is_some_and(|a| a.contains_key(MIRROR_POD))
}

/// The service account a pod runs as: the one it names, else `default`; None for mirror
/// pods, which run as none.
pub fn account_name(pod: &Value) -> Option<&str> {
    if is_mirror_pod(pod) {
        return None;
    }
    let named = pod
        .pointer("/spec/serviceAccountName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty());
    Some(named.unwrap_or(DEFAULT_SERVICE_ACCOUNT))
}

/// The mutations of admission for a pod that runs as `account`: the account's name in the
/// spec, the token volume and mounts (`suffix` names a new volume), and the account's image
/// pull secrets when the pod has none.
pub fn admit(pod: &mut Value, account: &Value, suffix: &str) {
    if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
        let name = account
            .pointer("/metadata/name")
            .cloned()
            .unwrap_or(json!(DEFAULT_SERVICE_ACCOUNT));
        spec.insert("serviceAccountName".into(), name);
    }
    if should_automount(account, pod) {
        mount_token(pod, suffix);
    }
    let has_pull_secrets = pod
        .pointer("/spec/imagePullSecrets")
        .and_then(Value::as_array)
        .is_some_and(|s| !s.is_empty());
    if !has_pull_secrets
        && let Some(secrets) = account
            .get("imagePullSecrets")
            .and_then(Value::as_array)
            .filter(|s| !s.is_empty())
        && let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut)
    {
        let refs: Vec<Value> = secrets
            .iter()
            .map(|s| json!({"name": s.get("name").cloned().unwrap_or(json!(""))}))
            .collect();
        spec.insert("imagePullSecrets".into(), Value::Array(refs));
    }
}

/// The pod's choice wins, then the account's; mounting is the default.
fn should_automount(account: &Value, pod: &Value) -> bool {
    pod.pointer("/spec/automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| {
            account
                .get("automountServiceAccountToken")
                .and_then(Value::as_bool)
        })
        .unwrap_or(true)
}

/// The projected sources of the token volume, as upstream's TokenVolumeSource writes them.
pub fn token_volume_source() -> Value {
    json!({
        "defaultMode": 420,
        "sources": [
            {"serviceAccountToken": {"expirationSeconds": TOKEN_EXPIRATION_SECONDS, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
        ],
    })
}

fn mount_token(pod: &mut Value, suffix: &str) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    // A volume already named like the token volume is taken as it (upstream's rule).
    let existing = spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.get("name").and_then(Value::as_str))
        .find(|n| n.starts_with(VOLUME_PREFIX))
        .map(str::to_string);
    let volume = existing
        .clone()
        .unwrap_or_else(|| format!("{VOLUME_PREFIX}{suffix}"));
    let mount = json!({"name": volume, "readOnly": true, "mountPath": API_TOKEN_MOUNT_PATH});
    let mut needed = false;
    for list in ["initContainers", "containers"] {
        for container in spec
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let Some(container) = container.as_object_mut() else {
                continue;
            };
            let mounts = container.entry("volumeMounts").or_insert_with(|| json!([]));
            let Some(mounts) = mounts.as_array_mut() else {
                continue;
            };
            // A mount at the token path already is the container's own choice.
            if mounts
                .iter()
                .any(|m| m.get("mountPath").and_then(Value::as_str) == Some(API_TOKEN_MOUNT_PATH))
            {
                continue;
            }
            mounts.push(mount.clone());
            needed = true;
        }
    }
    if existing.is_none() && needed {
        let volumes = spec.entry("volumes").or_insert_with(|| json!([]));
        if let Some(volumes) = volumes.as_array_mut() {
            volumes.push(json!({"name": volume, "projected": token_volume_source()}));
        }
    }
}

/// Validation: why a new pod may not run as it is (None: it may). `account` is the pod's
/// service account (None for mirror pods).
pub fn validate(pod: &Value, account: Option<&Value>) -> Option<String> {
    let spec = pod.get("spec").unwrap_or(&Value::Null);
    let Some(account) = account else {
        return validate_mirror(spec);
    };
    let enforce = account
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(ENFORCE_MOUNTABLE_SECRETS))
        .and_then(Value::as_str)
        .is_some_and(|v| matches!(v, "true" | "True" | "TRUE" | "1" | "t" | "T"));
    if enforce {
        return limit_secret_references(account, spec);
    }
    None
}

fn validate_mirror(spec: &Value) -> Option<String> {
    if spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty())
    {
        return Some("a mirror pod may not reference service accounts".into());
    }
    if !secret_names(spec).is_empty() {
        return Some("a mirror pod may not reference secrets".into());
    }
    let token_projection = volumes(spec).any(|v| {
        v.pointer("/projected/sources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|s| s.get("serviceAccountToken").is_some())
    });
    token_projection
        .then(|| "a mirror pod may not use ServiceAccountToken volume projections".to_string())
}

fn volumes(spec: &Value) -> impl Iterator<Item = &Value> {
    spec.get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn containers<'a>(spec: &'a Value, list: &str) -> impl Iterator<Item = &'a Value> {
    spec.get(list)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// Every secret a pod spec names (upstream's VisitPodSecretNames, all containers).
fn secret_names(spec: &Value) -> Vec<&str> {
    let mut names = Vec::new();
    for s in spec
        .get("imagePullSecrets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        names.push(text(s, "/name"));
    }
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        for c in containers(spec, list) {
            for e in c
                .get("envFrom")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if e.get("secretRef").is_some() {
                    names.push(text(e, "/secretRef/name"));
                }
            }
            for e in c.get("env").and_then(Value::as_array).into_iter().flatten() {
                if e.pointer("/valueFrom/secretKeyRef").is_some() {
                    names.push(text(e, "/valueFrom/secretKeyRef/name"));
                }
            }
        }
    }
    for v in volumes(spec) {
        if v.get("secret").is_some() {
            names.push(text(v, "/secret/secretName"));
        }
        for s in v
            .pointer("/projected/sources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if s.get("secret").is_some() {
                names.push(text(s, "/secret/name"));
            }
        }
        for pointer in [
            "/cephfs/secretRef/name",
            "/cinder/secretRef/name",
            "/flexVolume/secretRef/name",
            "/iscsi/secretRef/name",
            "/rbd/secretRef/name",
            "/scaleIO/secretRef/name",
            "/storageos/secretRef/name",
            "/csi/nodePublishSecretRef/name",
            "/azureFile/secretName",
        ] {
            if let Some(n) = v.pointer(pointer).and_then(Value::as_str) {
                names.push(n);
            }
        }
    }
    names
}

/// With mountable secrets enforced, a pod may use only the secrets its account lists (and
/// only its image pull secrets for pulling); the first reference outside them is the error,
/// in upstream's words.
fn limit_secret_references(account: &Value, spec: &Value) -> Option<String> {
    let sa = text(account, "/metadata/name");
    let listed = |field: &str| -> Vec<&str> {
        account
            .get(field)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|s| text(s, "/name"))
            .collect()
    };
    let mountable = listed("secrets");
    for v in volumes(spec) {
        if v.get("secret").is_none() {
            continue;
        }
        let secret = text(v, "/secret/secretName");
        if !mountable.contains(&secret) {
            return Some(format!(
                "volume with secret.secretName=\"{secret}\" is not allowed because service account {sa} does not reference that secret"
            ));
        }
    }
    for (list, what) in [
        ("initContainers", "init container"),
        ("containers", "container"),
    ] {
        for c in containers(spec, list) {
            let name = text(c, "/name");
            for e in c.get("env").and_then(Value::as_array).into_iter().flatten() {
                let secret = text(e, "/valueFrom/secretKeyRef/name");
                if e.pointer("/valueFrom/secretKeyRef").is_some() && !mountable.contains(&secret) {
                    let var = text(e, "/name");
                    return Some(format!(
                        "{what} {name} with envVar {var} referencing secret.secretName=\"{secret}\" is not allowed because service account {sa} does not reference that secret"
                    ));
                }
            }
            for e in c
                .get("envFrom")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let secret = text(e, "/secretRef/name");
                if e.get("secretRef").is_some() && !mountable.contains(&secret) {
                    return Some(format!(
                        "{what} {name} with envFrom referencing secret.secretName=\"{secret}\" is not allowed because service account {sa} does not reference that secret"
                    ));
                }
            }
        }
    }
    let pullable = listed("imagePullSecrets");
    for (i, s) in spec
        .get("imagePullSecrets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let secret = text(s, "/name");
        if !pullable.contains(&secret) {
            return Some(format!(
                "imagePullSecrets[{i}].name=\"{secret}\" is not allowed because service account {sa} does not reference that imagePullSecret"
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Value {
        json!({
            "metadata": {"name": "p", "namespace": "dev"},
            "spec": {
                "initContainers": [{"name": "init", "image": "busybox"}],
                "containers": [
                    {"name": "app", "image": "busybox"},
                    {"name": "own", "image": "busybox", "volumeMounts": [{"name": "mine", "mountPath": API_TOKEN_MOUNT_PATH}]},
                ],
            },
        })
    }

    #[test]
    fn pods_run_as_default_and_get_the_token_volume_in_every_container() {
        let mut p = pod();
        assert_eq!(account_name(&p), Some("default"));
        admit(&mut p, &json!({"metadata": {"name": "default"}}), "x7k2q");
        assert_eq!(p["spec"]["serviceAccountName"], "default");
        let mount = json!({"name": "kube-api-access-x7k2q", "readOnly": true, "mountPath": API_TOKEN_MOUNT_PATH});
        assert_eq!(
            p["spec"]["initContainers"][0]["volumeMounts"],
            json!([mount])
        );
        assert_eq!(p["spec"]["containers"][0]["volumeMounts"], json!([mount]));
        // A container that mounts something at the path keeps its own.
        assert_eq!(
            p["spec"]["containers"][1]["volumeMounts"][0]["name"],
            "mine"
        );
        assert_eq!(
            p["spec"]["containers"][1]["volumeMounts"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            p["spec"]["volumes"],
            json!([{"name": "kube-api-access-x7k2q", "projected": token_volume_source()}])
        );
        assert_eq!(
            p["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"],
            3607
        );
    }

    #[test]
    fn the_pod_then_the_account_decide_whether_the_token_is_mounted() {
        let opted_out =
            json!({"metadata": {"name": "nomount"}, "automountServiceAccountToken": false});
        let mut p = pod();
        admit(&mut p, &opted_out, "aaaaa");
        assert!(p["spec"].get("volumes").is_none());
        assert!(
            p["spec"]["containers"][0]
                .get("volumeMounts")
                .is_none_or(|m| m == &json!([]))
        );
        let mut p = pod();
        p["spec"]["automountServiceAccountToken"] = json!(true);
        admit(&mut p, &opted_out, "aaaaa");
        assert_eq!(p["spec"]["volumes"][0]["name"], "kube-api-access-aaaaa");
        let mut p = pod();
        p["spec"]["automountServiceAccountToken"] = json!(false);
        admit(&mut p, &json!({"metadata": {"name": "default"}}), "aaaaa");
        assert!(p["spec"].get("volumes").is_none());
    }

    #[test]
    fn an_existing_token_volume_is_reused_and_pull_secrets_come_from_the_account() {
        let mut p = pod();
        p["spec"]["volumes"] = json!([{"name": "kube-api-access-old", "emptyDir": {}}]);
        let sa =
            json!({"metadata": {"name": "default"}, "imagePullSecrets": [{"name": "regcred"}]});
        admit(&mut p, &sa, "new00");
        assert_eq!(p["spec"]["volumes"].as_array().unwrap().len(), 1);
        assert_eq!(
            p["spec"]["containers"][0]["volumeMounts"][0]["name"],
            "kube-api-access-old"
        );
        assert_eq!(p["spec"]["imagePullSecrets"], json!([{"name": "regcred"}]));
        let mut p = pod();
        p["spec"]["imagePullSecrets"] = json!([{"name": "mine"}]);
        admit(&mut p, &sa, "new00");
        assert_eq!(p["spec"]["imagePullSecrets"], json!([{"name": "mine"}]));
    }

    #[test]
    fn mirror_pods_reference_no_accounts_or_secrets() {
        let mut p = pod();
        p["metadata"]["annotations"] = json!({MIRROR_POD: "abc"});
        assert_eq!(account_name(&p), None);
        assert_eq!(validate(&p, None), None);
        p["spec"]["serviceAccountName"] = json!("builder");
        assert_eq!(
            validate(&p, None).as_deref(),
            Some("a mirror pod may not reference service accounts")
        );
        p["spec"]["serviceAccountName"] = json!("");
        p["spec"]["containers"][0]["env"] =
            json!([{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]);
        assert_eq!(
            validate(&p, None).as_deref(),
            Some("a mirror pod may not reference secrets")
        );
        p["spec"]["containers"][0]["env"] = json!([]);
        p["spec"]["volumes"] = json!([{"name": "t", "projected": token_volume_source()}]);
        assert_eq!(
            validate(&p, None).as_deref(),
            Some("a mirror pod may not use ServiceAccountToken volume projections")
        );
    }

    #[test]
    fn enforced_mountable_secrets_limit_volumes_env_and_pull_secrets() {
        let sa = json!({
            "metadata": {"name": "builder", "annotations": {ENFORCE_MOUNTABLE_SECRETS: "true"}},
            "secrets": [{"name": "ok"}],
            "imagePullSecrets": [{"name": "pull"}],
        });
        let mut p = pod();
        assert_eq!(validate(&p, Some(&sa)), None);
        p["spec"]["volumes"] = json!([{"name": "v", "secret": {"secretName": "other"}}]);
        assert_eq!(
            validate(&p, Some(&sa)).as_deref(),
            Some(
                "volume with secret.secretName=\"other\" is not allowed because service account builder does not reference that secret"
            )
        );
        p["spec"]["volumes"] = json!([{"name": "v", "secret": {"secretName": "ok"}}]);
        p["spec"]["initContainers"][0]["envFrom"] = json!([{"secretRef": {"name": "nope"}}]);
        assert_eq!(
            validate(&p, Some(&sa)).as_deref(),
            Some(
                "init container init with envFrom referencing secret.secretName=\"nope\" is not allowed because service account builder does not reference that secret"
            )
        );
        p["spec"]["initContainers"][0]["envFrom"] = json!([]);
        p["spec"]["containers"][0]["env"] =
            json!([{"name": "PW", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k"}}}]);
        assert_eq!(
            validate(&p, Some(&sa)).as_deref(),
            Some(
                "container app with envVar PW referencing secret.secretName=\"nope\" is not allowed because service account builder does not reference that secret"
            )
        );
        p["spec"]["containers"][0]["env"] = json!([]);
        p["spec"]["imagePullSecrets"] = json!([{"name": "pull"}, {"name": "ok"}]);
        assert_eq!(
            validate(&p, Some(&sa)).as_deref(),
            Some(
                "imagePullSecrets[1].name=\"ok\" is not allowed because service account builder does not reference that imagePullSecret"
            )
        );
        // Without the annotation nothing is limited.
        let open = json!({"metadata": {"name": "builder"}});
        assert_eq!(validate(&p, Some(&open)), None);
    }
}

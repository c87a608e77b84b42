//! `kelp server` as a newcomer runs it: it creates the data dir, the SQLite datastore, the PKI
//! and an admin kubeconfig, reports readiness, restarts on the same state, stops cleanly on
//! SIGTERM, and refuses a bad datastore URL clearly.

mod support;

use std::process::Command;

use support::KelpServer;

#[test]
fn server_starts_on_a_fresh_data_dir_and_restarts_on_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = KelpServer::start(&data, &[]);
    assert!(
        first.ready_line.contains("datastore sqlite://"),
        "{}",
        first.ready_line
    );
    for file in [
        "state.db",
        "admin.kubeconfig",
        "pki/ca.crt",
        "pki/ca.key",
        "pki/serving.crt",
    ] {
        assert!(data.join(file).exists(), "{file} missing");
    }
    let ca = std::fs::read_to_string(data.join("pki/ca.crt")).unwrap();
    let last = first.stop();
    assert_eq!(
        last.last().map(String::as_str),
        Some("kelp: stopped"),
        "{last:?}"
    );

    // A restart keeps the CA (so old kubeconfigs keep working) and the data.
    let second = KelpServer::start(&data, &[]);
    assert_eq!(
        std::fs::read_to_string(data.join("pki/ca.crt")).unwrap(),
        ca
    );
    let out = second.kubectl("1.33", &["get", "namespaces", "-o", "name"]);
    assert_eq!(
        out.stdout,
        "namespace/default\nnamespace/kube-node-lease\nnamespace/kube-public\nnamespace/kube-system\n"
    );
    // What a fresh cluster registers for its own group versions, served locally.
    let out = second.kubectl("1.33", &["get", "apiservices"]);
    let rows: Vec<String> = out
        .stdout
        .lines()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .collect();
    for row in [
        "NAME SERVICE AVAILABLE",
        "v1. Local True",
        "v1.apiregistration.k8s.io Local True",
        "v1.apps Local True",
        "v2.autoscaling Local True",
        "v1.flowcontrol.apiserver.k8s.io Local True",
    ] {
        assert!(
            rows.iter().any(|r| r == row),
            "{row:?} not in {}",
            out.stdout
        );
    }
    let apps = second.kubectl(
        "1.33",
        &["get", "apiservice", "v1.apps", "-o", "jsonpath={.spec.groupPriorityMinimum} {.spec.versionPriority} {.status.conditions[0].reason}"],
    );
    assert_eq!(apps.stdout, "17800 15 Local");
}

#[test]
fn server_refuses_an_unknown_datastore_url() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kelp"))
        .args(["server", "--data-dir"])
        .arg(dir.path())
        .args(["--datastore-endpoint", "mysql://root:hunter2@db/kelp"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid datastore endpoint") && err.contains("root:***@db"),
        "{err}"
    );
    assert!(!err.contains("hunter2"));
}

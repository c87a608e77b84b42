//! Bodies encoded by prost from k8s-pb's messages (the same wire format kubectl's Go
//! encoder writes), decoded to JSON.

use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message;
use serde_json::json;

use super::*;

fn frame(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut body = MAGIC.to_vec();
    body.extend(unknown.encode_to_vec());
    body
}

fn meta(name: &str) -> Option<meta::ObjectMeta> {
    Some(meta::ObjectMeta {
        name: Some(name.into()),
        generate_name: Some(String::new()),
        namespace: Some(String::new()),
        labels: [("app".to_string(), "web".to_string())].into(),
        creation_timestamp: Some(meta::Time {
            seconds: Some(1_700_000_000),
            nanos: Some(0),
        }),
        ..Default::default()
    })
}

#[test]
fn a_configmap_from_kubectl_create_decodes_to_its_json() {
    let cm = core::ConfigMap {
        metadata: meta("app"),
        data: [("color".to_string(), "blue".to_string())].into(),
        binary_data: [("bin".to_string(), vec![0u8, 1, 2])].into(),
        immutable: None,
    };
    let obj = decode(&frame("v1", "ConfigMap", cm.encode_to_vec())).unwrap();
    assert_eq!(
        obj,
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "app", "labels": {"app": "web"}, "creationTimestamp": "2023-11-14T22:13:20Z"},
            "data": {"color": "blue"},
            "binaryData": {"bin": "AAEC"},
        })
    );
}

#[test]
fn a_deployment_keeps_nested_lists_quantities_and_int_or_strings() {
    let container = core::Container {
        name: Some("web".into()),
        image: Some("nginx:1.27".into()),
        ports: vec![core::ContainerPort {
            container_port: Some(80),
            protocol: Some("TCP".into()),
            ..Default::default()
        }],
        resources: Some(core::ResourceRequirements {
            limits: [(
                "cpu".to_string(),
                Quantity {
                    string: Some("500m".into()),
                },
            )]
            .into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let deployment = apps::Deployment {
        metadata: meta("web"),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(0),
            selector: Some(meta::LabelSelector {
                match_labels: [("app".to_string(), "web".to_string())].into(),
                ..Default::default()
            }),
            template: Some(core::PodTemplateSpec {
                metadata: meta("").map(|m| meta::ObjectMeta {
                    creation_timestamp: None,
                    ..m
                }),
                spec: Some(core::PodSpec {
                    containers: vec![container],
                    ..Default::default()
                }),
            }),
            strategy: Some(apps::DeploymentStrategy {
                r#type: Some("RollingUpdate".into()),
                rolling_update: Some(apps::RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString {
                        r#type: Some(1),
                        int_val: Some(0),
                        str_val: Some("25%".into()),
                    }),
                    max_surge: Some(IntOrString {
                        r#type: Some(0),
                        int_val: Some(1),
                        str_val: Some(String::new()),
                    }),
                }),
            }),
            ..Default::default()
        }),
        status: Some(apps::DeploymentStatus::default()),
    };
    let obj = decode(&frame("apps/v1", "Deployment", deployment.encode_to_vec())).unwrap();
    assert_eq!(obj["spec"]["replicas"], 0, "a pointer set to zero is kept");
    assert_eq!(
        obj["spec"]["template"]["spec"]["containers"][0]["ports"],
        json!([{"containerPort": 80, "protocol": "TCP"}])
    );
    assert_eq!(
        obj["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"],
        "500m"
    );
    assert_eq!(
        obj["spec"]["strategy"]["rollingUpdate"],
        json!({"maxUnavailable": "25%", "maxSurge": 1})
    );
    assert_eq!(obj["status"], json!({}));
    assert_eq!(
        obj["spec"]["template"]["metadata"],
        json!({"labels": {"app": "web"}})
    );
}

#[test]
fn malformed_bodies_are_bad_requests() {
    for body in [&b"{}"[..], b"k8s\0\x0a\xff", b"k8s\0\x12\x05abc"] {
        assert_eq!(decode(body).unwrap_err().code.as_u16(), 400, "{body:?}");
    }
    let unknown_kind = frame("v1", "Widget", vec![]);
    assert!(
        decode(&unknown_kind)
            .unwrap_err()
            .message
            .contains("no protobuf type for v1, Kind=Widget")
    );
}

#[test]
fn durations_print_as_go_does() {
    assert_eq!(go_duration(0), "0s");
    assert_eq!(go_duration(1_500_000_000), "1.5s");
    assert_eq!(go_duration(300_000_000), "300ms");
    assert_eq!(go_duration(3_723_000_000_000), "1h2m3s");
    assert_eq!(go_duration(120_000_000_000), "2m0s");
}

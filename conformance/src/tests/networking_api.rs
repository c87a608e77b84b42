//! [sig-network] ServiceCIDR and IPAddress API (test/e2e/network/service_cidrs.go): the
//! operations on the default ServiceCIDR, `kubernetes`, that the API server makes, and the
//! whole life of two IPAddresses, an IPv4 one and an IPv6 one.
//!
//! The IPAddresses, cluster-scoped with upstream's fixed names, are deleted by the test,
//! whatever its outcome.

use anyhow::{Context as _, ensure};
use k8s_openapi::api::networking::v1::{IPAddress, ServiceCIDR};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::tests;
use crate::framework::{from, retry_on_conflict};
use crate::{Ctx, Test};

pub fn tests() -> Vec<Test> {
    tests![
        "[sig-network] ServiceCIDR and IPAddress API should support ServiceCIDR API operations" => servicecidr_api,
        "[sig-network] ServiceCIDR and IPAddress API should support IPAddress API operations" => ipaddress_api,
    ]
}

/// defaultservicecidr.DefaultServiceCIDRName.
const DEFAULT_SERVICE_CIDR: &str = "kubernetes";

fn annotation_is(o: &impl Resource, key: &str, value: &str) -> bool {
    o.meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
        == Some(value)
}

async fn servicecidr_api(ctx: Ctx) -> anyhow::Result<()> {
    let api: Api<ServiceCIDR> = ctx.cluster();

    // getting
    api.get(DEFAULT_SERVICE_CIDR)
        .await
        .context("unexpected error getting default ServiceCIDR")?;

    // patching
    let patched = api
        .patch(
            DEFAULT_SERVICE_CIDR,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"patched": "true"}}})),
        )
        .await
        .context("unexpected error patching ServiceCIDR")?;
    ensure!(
        annotation_is(&patched, "patched", "true"),
        "patched object should have the applied annotation"
    );

    // updating
    let updated = retry_on_conflict(|| async {
        let mut cidr = api.get(DEFAULT_SERVICE_CIDR).await?;
        cidr.annotations_mut()
            .insert("updated".into(), "true".into());
        api.replace(DEFAULT_SERVICE_CIDR, &PostParams::default(), &cidr)
            .await
    })
    .await
    .context("unexpected error updating ServiceCIDR")?;
    ensure!(
        annotation_is(&updated, "updated", "true"),
        "updated object should have the applied annotation"
    );

    // listing
    let list = api
        .list(&ListParams::default())
        .await
        .context("unexpected error listing ServiceCIDR")?;
    ensure!(
        !list.items.is_empty(),
        "expected at list one, the default, ServiceCIDR"
    );

    // watching (upstream only opens the watch)
    let _ = api
        .watch(&WatchParams::default(), "0")
        .await
        .context("unexpected error watching ServiceCIDR")?;
    Ok(())
}

const IPV4: &str = "255.255.255.255";
const IPV6: &str = "fe80::42:1dff:fe84:f9e2";

fn ip_address(name: &str, kind: &str) -> anyhow::Result<IPAddress> {
    from(json!({
        "metadata": {"name": name, "labels": {"type": kind}},
        "spec": {"parentRef": {
            "group": "mygroup",
            "resource": "myresources",
            "namespace": "foo",
            "name": "bar",
        }},
    }))
}

async fn ipaddress_api(ctx: Ctx) -> anyhow::Result<()> {
    let api: Api<IPAddress> = ctx.cluster();
    let result = ipaddress_operations(&api).await;
    // What the test leaves when it fails part way (404s once it has run through).
    for name in [IPV4, IPV6] {
        let _ = api.delete(name, &DeleteParams::default()).await;
    }
    result
}

async fn ipaddress_operations(api: &Api<IPAddress>) -> anyhow::Result<()> {
    let pp = PostParams::default();

    // creating
    api.create(&pp, &ip_address(IPV4, "broadcast")?)
        .await
        .context("unexpected error creating IPAddress")?;
    api.create(&pp, &ip_address(IPV6, "link-local")?)
        .await
        .context("unexpected error creating IPAddress")?;

    // patching
    let patched = api
        .patch(
            IPV4,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"patched": "true"}}})),
        )
        .await
        .context("unexpected error patching IPAddress")?;
    ensure!(
        annotation_is(&patched, "patched", "true"),
        "patched object should have the applied annotation"
    );

    // updating
    let updated = retry_on_conflict(|| async {
        let mut ip = api.get(IPV4).await?;
        ip.annotations_mut().insert("updated".into(), "true".into());
        api.replace(IPV4, &PostParams::default(), &ip).await
    })
    .await
    .context("unexpected error updating IPAddress")?;
    ensure!(
        annotation_is(&updated, "updated", "true"),
        "updated object should have the applied annotation"
    );

    // getting
    api.get(IPV4)
        .await
        .context("unexpected error getting IPAddress")?;

    // listing
    let broadcast = ListParams::default().labels("type=broadcast");
    let list = api
        .list(&broadcast)
        .await
        .context("unexpected error listing IPAddress")?;
    ensure!(
        list.items.len() == 1,
        "expected one IPAddress, got {}",
        list.items.len()
    );

    // watching (upstream only opens the watch)
    let _ = api
        .watch(&WatchParams::default().labels("type=broadcast"), "0")
        .await
        .context("unexpected error watching IPAddress")?;

    // deleting
    api.delete(IPV4, &DeleteParams::default())
        .await
        .context("unexpected error deleting IPAddress")?;

    // deleting a collection
    let link_local = ListParams::default().labels("type=link-local");
    api.delete_collection(&DeleteParams::default(), &link_local)
        .await
        .context("unexpected error deleting IPAddress Collection")?;
    let list = api
        .list(&link_local)
        .await
        .context("unexpected error listing IPAddress")?;
    ensure!(
        list.items.is_empty(),
        "expected 0 IPAddresses, got {}",
        list.items.len()
    );
    Ok(())
}

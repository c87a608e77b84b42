//! The service-account controller: every active namespace has a `default` ServiceAccount
//! (made again if deleted).

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;

use crate::Informers;
use crate::util::{Error, drive, is_status};

struct Ctx {
    client: kube::Client,
    informers: Arc<Informers>,
}

pub async fn run(client: kube::Client, informers: Arc<Informers>) -> anyhow::Result<()> {
    let controller =
        Controller::for_stream(informers.namespaces.changes(), informers.namespaces.store())
            .watches_stream(informers.serviceaccounts.changes(), |sa: ServiceAccount| {
                sa.metadata
                    .namespace
                    .map(|ns| ObjectRef::<Namespace>::new(&ns))
            });
    drive(
        "serviceaccount",
        controller,
        reconcile,
        Arc::new(Ctx { client, informers }),
    )
    .await
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let name = ns.metadata.name.clone().unwrap_or_default();
    if ns.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let key = ObjectRef::<ServiceAccount>::new("default").within(&name);
    if ctx.informers.serviceaccounts.store().get(&key).is_some() {
        return Ok(Action::await_change());
    }
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("default".into()),
            namespace: Some(name.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &name);
    match api.create(&PostParams::default(), &sa).await {
        // Made already (the cache is behind), or the namespace is going.
        Ok(_) => {}
        Err(e) if is_status(&e, 409) || is_status(&e, 403) && ns_terminating(&e) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}

fn ns_terminating(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.message.contains("being terminated"))
}

//! The root-CA publisher: every active namespace has the `kube-root-ca.crt` ConfigMap with the
//! cluster's CA bundle (what pods use to verify the API server), put back when changed or
//! deleted.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;

use crate::Informers;
use crate::util::{Error, drive, is_status};

pub const NAME: &str = "kube-root-ca.crt";
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

struct Ctx {
    client: kube::Client,
    informers: Arc<Informers>,
    ca: String,
}

pub async fn run(
    client: kube::Client,
    informers: Arc<Informers>,
    ca: String,
) -> anyhow::Result<()> {
    let controller =
        Controller::for_stream(informers.namespaces.changes(), informers.namespaces.store())
            .watches_stream(informers.configmaps.changes(), |cm: ConfigMap| {
                cm.metadata
                    .namespace
                    .map(|ns| ObjectRef::<Namespace>::new(&ns))
            });
    let ctx = Arc::new(Ctx {
        client,
        informers,
        ca,
    });
    drive("root-ca-cert-publisher", controller, reconcile, ctx).await
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if ns.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let name = ns.metadata.name.clone().unwrap_or_default();
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &name);
    let data = BTreeMap::from([("ca.crt".to_string(), ctx.ca.clone())]);
    let key = ObjectRef::<ConfigMap>::new(NAME).within(&name);
    let result = match ctx.informers.configmaps.store().get(&key) {
        Some(cm) if cm.data.as_ref() == Some(&data) => return Ok(Action::await_change()),
        Some(cm) => {
            let mut cm = (*cm).clone();
            cm.data = Some(data);
            cm.metadata
                .annotations
                .get_or_insert_default()
                .insert("kubernetes.io/description".into(), DESCRIPTION.into());
            api.replace(NAME, &PostParams::default(), &cm).await
        }
        None => {
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(NAME.into()),
                    namespace: Some(name.clone()),
                    annotations: Some(BTreeMap::from([(
                        "kubernetes.io/description".to_string(),
                        DESCRIPTION.to_string(),
                    )])),
                    ..Default::default()
                },
                data: Some(data),
                ..Default::default()
            };
            api.create(&PostParams::default(), &cm).await
        }
    };
    match result {
        Ok(_) => Ok(Action::await_change()),
        // A race with the cache (made or changed meanwhile): the next event settles it.
        Err(e) if is_status(&e, 409) => Ok(Action::await_change()),
        Err(e) if is_status(&e, 403) && e.to_string().contains("being terminated") => {
            Ok(Action::await_change())
        }
        Err(e) => Err(e.into()),
    }
}

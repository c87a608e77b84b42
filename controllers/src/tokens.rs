//! The service-account tokens controller (upstream's `serviceaccount-token`): a secret of
//! type `kubernetes.io/service-account-token` is filled with a legacy, non-expiring token
//! for the account its `kubernetes.io/service-account.name` annotation names, the cluster
//! CA and the namespace, and is deleted once that account is gone (or was made again with
//! another uid). Like upstream it acts as the controller-manager itself and runs only with
//! the service-account signing key (`--service-account-private-key-file`).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kelp_auth::serviceaccount::{ObjectRef as AccountRef, ServiceAccountKeys};
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;

use crate::Informers;
use crate::util::{Error, drive, is_status};

pub const SECRET_TYPE: &str = "kubernetes.io/service-account-token";
pub const NAME_ANNOTATION: &str = "kubernetes.io/service-account.name";
pub const UID_ANNOTATION: &str = "kubernetes.io/service-account.uid";

struct Ctx {
    client: kube::Client,
    informers: Arc<Informers>,
    keys: ServiceAccountKeys,
    ca: String,
}

pub async fn run(
    client: kube::Client,
    informers: Arc<Informers>,
    keys: ServiceAccountKeys,
    ca: String,
) -> anyhow::Result<()> {
    let secrets = informers.token_secrets.store();
    // An account's change (its deletion above all) is a change of the secrets naming it.
    let controller = Controller::for_stream(informers.token_secrets.changes(), secrets.clone())
        .watches_stream(
            informers.serviceaccounts.changes(),
            move |sa: ServiceAccount| {
                let ns = sa.metadata.namespace.unwrap_or_default();
                let name = sa.metadata.name.unwrap_or_default();
                secrets
                    .state()
                    .iter()
                    .filter(|s| {
                        s.metadata.namespace.as_deref() == Some(&ns)
                            && annotation(s, NAME_ANNOTATION) == name
                    })
                    .map(|s| ObjectRef::from_obj(&**s))
                    .collect::<Vec<_>>()
            },
        );
    let ctx = Arc::new(Ctx {
        client,
        informers,
        keys,
        ca,
    });
    drive("serviceaccount-token", controller, reconcile, ctx).await
}

fn annotation<'a>(s: &'a Secret, key: &str) -> &'a str {
    s.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map_or("", String::as_str)
}

async fn reconcile(secret: Arc<Secret>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if secret.type_.as_deref() != Some(SECRET_TYPE) || secret.metadata.deletion_timestamp.is_some()
    {
        return Ok(Action::await_change());
    }
    let ns = secret.metadata.namespace.clone().unwrap_or_default();
    let name = secret.metadata.name.clone().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(sa) = account(&ctx, &secret, &ns).await? else {
        // Its account is gone: so is the token (only this secret, by uid).
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: secret.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match secrets.delete(&name, &params).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
            Err(e) => return Err(e.into()),
        }
        return Ok(Action::await_change());
    };
    let data = secret.data.clone().unwrap_or_default();
    let held = |key: &str| data.get(key).map(|v| v.0.as_slice()).unwrap_or_default();
    let needs_ca = !ctx.ca.is_empty() && held("ca.crt") != ctx.ca.as_bytes();
    let needs_namespace = held("namespace").is_empty();
    let needs_token = held("token").is_empty();
    if !needs_ca && !needs_namespace && !needs_token {
        return Ok(Action::await_change());
    }
    let mut live = match secrets.get_opt(&name).await? {
        Some(s) if s.metadata.uid == secret.metadata.uid => s,
        _ => return Ok(Action::await_change()),
    };
    let account = AccountRef {
        name: sa.metadata.name.clone().unwrap_or_default(),
        uid: sa.metadata.uid.clone().unwrap_or_default(),
    };
    let data = live.data.get_or_insert_with(BTreeMap::new);
    if needs_ca {
        data.insert("ca.crt".into(), ByteString(ctx.ca.clone().into_bytes()));
    }
    if needs_namespace {
        data.insert("namespace".into(), ByteString(ns.clone().into_bytes()));
    }
    if needs_token {
        let token = ctx.keys.issue_legacy(&ns, &account, &name);
        data.insert("token".into(), ByteString(token.into_bytes()));
    }
    let annotations = live.metadata.annotations.get_or_insert_default();
    annotations.insert(NAME_ANNOTATION.into(), account.name);
    annotations.insert(UID_ANNOTATION.into(), account.uid);
    match secrets.replace(&name, &PostParams::default(), &live).await {
        Ok(_) => Ok(Action::await_change()),
        // Changed meanwhile: the change brings it back here.
        Err(e) if is_status(&e, 409) || is_status(&e, 404) => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}

/// The account a token secret names, if it exists with the uid the secret recorded: from the
/// cache, then (a miss may be a cache behind) from the API.
async fn account(ctx: &Ctx, secret: &Secret, ns: &str) -> Result<Option<ServiceAccount>, Error> {
    let name = annotation(secret, NAME_ANNOTATION);
    let uid = annotation(secret, UID_ANNOTATION);
    if name.is_empty() {
        return Ok(None);
    }
    let matches = |sa: &ServiceAccount| uid.is_empty() || sa.metadata.uid.as_deref() == Some(uid);
    let key = ObjectRef::<ServiceAccount>::new(name).within(ns);
    if let Some(sa) = ctx.informers.serviceaccounts.store().get(&key)
        && matches(&sa)
    {
        return Ok(Some((*sa).clone()));
    }
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), ns);
    Ok(api.get_opt(name).await?.filter(matches))
}

//! ControllerRevisions: the template history of DaemonSets and StatefulSets (what
//! `kubectl rollout history` and `rollout undo` read). Each distinct template is one revision,
//! named `<owner>-<hash>` and numbered; a template that comes back takes the next number.

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::deployment::template_hash;
use crate::util::{self, Error, is_status};

pub const HASH_LABEL: &str = "controller-revision-hash";

/// The revision's data: the template, as a patch that replaces it (upstream's form).
fn data(template: &PodTemplateSpec) -> serde_json::Value {
    let mut t = serde_json::to_value(template).unwrap_or_default();
    if let Some(map) = t.as_object_mut() {
        map.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": t}})
}

/// The template a revision holds.
pub fn template_of(cr: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = cr.data.as_ref()?.0.pointer("/spec/template")?.clone();
    t.as_object_mut()?.remove("$patch");
    serde_json::from_value(t).ok()
}

/// Makes sure the owner's current template is its newest revision; returns its hash, its
/// number and the owner's collision count (raised when another revision held the name, as
/// upstream's CreateControllerRevision does). Old revisions beyond `history` are deleted.
pub async fn current<K>(
    client: &kube::Client,
    owner: &K,
    template: &PodTemplateSpec,
    mut collisions: Option<i32>,
    history: i32,
) -> Result<(String, i64, Option<i32>), Error>
where
    K: Resource<DynamicType = ()>,
{
    let ns = owner.meta().namespace.clone().unwrap_or_default();
    let uid = owner.meta().uid.clone().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), &ns);
    let mut owned: Vec<ControllerRevision> = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|cr| util::controller_of(&cr.metadata).is_some_and(|r| r.uid == uid))
        .collect();
    owned.sort_by_key(|cr| cr.revision);
    let mut hash = template_hash(template, collisions);
    let max = owned.last().map_or(0, |cr| cr.revision);
    let want = data(template);
    let same = |cr: &ControllerRevision| cr.data.as_ref().map(|d| &d.0) == Some(&want);
    let number = match owned.iter().find(|cr| same(cr)) {
        Some(cr) if cr.revision == max => cr.revision,
        Some(cr) => {
            // An old template is back: it becomes the newest revision.
            let patch = json!({"revision": max + 1});
            api.patch(
                &cr.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
            max + 1
        }
        None => {
            let mut labels = template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.clone())
                .unwrap_or_default();
            loop {
                labels.insert(HASH_LABEL.into(), hash.clone());
                let name = format!("{}-{hash}", owner.meta().name.clone().unwrap_or_default());
                let cr = ControllerRevision {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(ns.clone()),
                        labels: Some(labels.clone()),
                        owner_references: Some(vec![util::controller_ref(owner)]),
                        ..Default::default()
                    },
                    data: Some(RawExtension(want.clone())),
                    revision: max + 1,
                };
                match api.create(&PostParams::default(), &cr).await {
                    Ok(_) => break,
                    Err(e) if is_status(&e, 409) => {
                        // The name is taken: by this template (made a moment ago), or by
                        // another revision, when the next collision count names it anew.
                        let taken = api.get(&name).await?;
                        if same(&taken) {
                            break;
                        }
                        let count = collisions.unwrap_or(0).saturating_add(1);
                        collisions = Some(count);
                        hash = template_hash(template, collisions);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            max + 1
        }
    };
    // History: the newest `history` old revisions stay.
    let old: Vec<&ControllerRevision> = owned.iter().filter(|cr| !same(cr)).collect();
    let extra = old.len().saturating_sub(history.max(0) as usize);
    for cr in old.into_iter().take(extra) {
        match api.delete(&cr.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok((hash, number, collisions))
}

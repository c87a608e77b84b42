//! The review kinds of authentication.k8s.io and authorization.k8s.io: create-only, answered
//! from the request and never stored (served by `security::reviews`).

use k8s_openapi::api::{authentication, authorization};

use super::Resource;
use super::cells::CREATED_AT;
use crate::typed::typed;

const CREATE: &[&str] = &["create"];

const BASE: Resource = Resource {
    group: "authorization.k8s.io",
    columns: &[CREATED_AT],
    verbs: CREATE,
    ..super::base(typed::<authorization::v1::SelfSubjectAccessReview>())
};

pub static RESOURCES: &[Resource] = &[
    Resource {
        group: "authentication.k8s.io",
        kind: "SelfSubjectReview",
        typed: typed::<authentication::v1::SelfSubjectReview>(),
        plural: "selfsubjectreviews",
        singular: "selfsubjectreview",
        ..BASE
    },
    Resource {
        group: "authentication.k8s.io",
        kind: "TokenReview",
        typed: typed::<authentication::v1::TokenReview>(),
        plural: "tokenreviews",
        singular: "tokenreview",
        ..BASE
    },
    Resource {
        kind: "LocalSubjectAccessReview",
        typed: typed::<authorization::v1::LocalSubjectAccessReview>(),
        plural: "localsubjectaccessreviews",
        singular: "localsubjectaccessreview",
        namespaced: true,
        ..BASE
    },
    Resource {
        kind: "SelfSubjectAccessReview",
        plural: "selfsubjectaccessreviews",
        singular: "selfsubjectaccessreview",
        ..BASE
    },
    Resource {
        kind: "SelfSubjectRulesReview",
        typed: typed::<authorization::v1::SelfSubjectRulesReview>(),
        plural: "selfsubjectrulesreviews",
        singular: "selfsubjectrulesreview",
        ..BASE
    },
    Resource {
        kind: "SubjectAccessReview",
        typed: typed::<authorization::v1::SubjectAccessReview>(),
        plural: "subjectaccessreviews",
        singular: "subjectaccessreview",
        ..BASE
    },
];

/// Whether a resource is one of these reviews.
pub fn is_review(r: &Resource) -> bool {
    matches!(r.group, "authentication.k8s.io" | "authorization.k8s.io") && r.verbs == CREATE
}

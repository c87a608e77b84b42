//! kelp-auth: who is talking to the API server, and what they may do. The cluster's PKI (a
//! CA, the serving certificate, client certificates whose CN is the user and O the groups),
//! kubeconfigs, the authenticators (client certificates, the static token file,
//! service-account JWTs), RBAC evaluation and upstream's bootstrap policy.

pub mod bootstrap;
mod kubeconfig;
mod pki;
pub mod rbac;
pub mod serviceaccount;
mod tokenfile;
mod user;
mod x509;

pub use kubeconfig::kubeconfig;
pub use pki::{Credentials, Pki, PkiError};
pub use tokenfile::TokenFile;
pub use user::*;
pub use x509::{request_organizations, user_from_certificate};

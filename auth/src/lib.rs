//! kelp-auth: who is talking to the API server. For now the cluster's PKI (a CA, the serving
//! certificate, client certificates whose CN is the user and O the groups) and kubeconfigs;
//! the authenticators and authorizers of the security pipeline come next.

mod kubeconfig;
mod pki;

pub use kubeconfig::kubeconfig;
pub use pki::{Credentials, Pki, PkiError};

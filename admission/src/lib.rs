//! kelp-admission: upstream's admission plugins as functions over JSON objects, so that the
//! API server (which owns lookups and storage) can run them in upstream's order.

pub mod limitranger;
pub mod pods;
pub mod podsecurity;
pub mod quantity;
pub mod quota;
pub mod serviceaccount;

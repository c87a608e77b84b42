//! Kelp's node side. `node` registers a Node and keeps its Lease fresh (what every kubelet
//! does); `simulate` runs many simulated nodes whose pods run without containers, so the
//! control loops can be tested and measured at scale (kwok-style).

pub mod node;
pub mod simulate;

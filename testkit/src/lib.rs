//! Real dependencies for Kelp's tests and benchmarks, started and stopped by the test itself:
//! nothing here is a stand-in.

mod pg;

pub use pg::PgCluster;

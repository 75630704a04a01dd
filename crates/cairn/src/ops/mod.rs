//! Operating Cairn: health (for people and orchestrators) and Prometheus metrics.

pub mod health;
pub mod metrics;
pub mod routes;

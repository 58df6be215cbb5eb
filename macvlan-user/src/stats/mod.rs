//! What the classifier has counted, joined with what mvnet knows about each
//! endpoint: one [`Snapshot`] is everything `mvnet stats`, `mvnet top` and
//! `mvnet serve` show. It is read from the pinned maps, so any `mvnet`
//! process sees the same numbers as the one that attached the classifier.
mod rates;
mod snapshot;

pub use rates::{EndpointRates, Rate, Rates, VlanRates};
pub use snapshot::{collect, EndpointStats, NetworkStats, RootStats, Snapshot};

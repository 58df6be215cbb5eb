//! Docker's own macvlan networks, counted, verified and enforced by the
//! classifier: `mvnet docker sync` and `mvnet docker watch`.
//!
//! Docker's macvlan driver keeps making the links; mvnet reads Docker's
//! networks and endpoints through the Engine API and registers them with
//! the reconciling core as foreign networks and containers (owner
//! `docker`), so `stats`, `verify`, `top`, `serve` and enforce treat them
//! as their own.
//! * [`client`] — the Engine API on dockerd's unix socket (bollard), with
//!   errors that say what is wrong with the socket;
//! * [`mapping`] — Docker's networks and endpoints in mvnet's terms (pure);
//! * [`read`] — what Docker has now, with each endpoint's link name read in
//!   its sandbox;
//! * [`apply`] — the state changes, each under the state lock only while it
//!   runs;
//! * [`watch`] — `sync` (read and converge once) and `watch` (sync, then
//!   follow Docker's events; re-sync after a lost connection).
pub mod apply;
pub mod client;
pub mod mapping;
pub mod read;
pub mod watch;

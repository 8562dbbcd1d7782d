//! zkfire-bench: an XMPP load generator for any standards-compliant server,
//! and a minimal relay server to measure the generator itself.
//!
//! The binary is a thin shell over [`cli`]; the pieces with logic of their
//! own (percentiles, the open-loop timetable, delivery accounting, rosters)
//! live in small modules with their own tests.

pub mod accounts;
pub mod cli;
pub mod ledger;
pub mod metrics;
pub mod net;
pub mod relay;
pub mod report;
pub mod run;
pub mod scenario;
pub mod schedule;
pub mod session;
pub mod shards;
pub mod stats;
pub mod tls;
pub mod xmpp;

//! Client-to-server connections (RFC 6120 and RFC 6121).

pub mod auth_throttle;
pub mod conn_limit;
pub mod decoy_key;
pub mod listener;
pub mod negotiation;
pub mod registration_limit;
pub mod sasl;
pub mod session;
pub mod stream;
pub mod stream_mgmt;
pub mod transport;

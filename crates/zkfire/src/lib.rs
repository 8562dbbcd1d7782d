//! zkfire: an XMPP server whose nodes serve one domain together.

pub mod accounts;
pub mod c2s;
pub mod caps;
pub mod cli;
pub mod cluster;
pub mod cluster_xml;
pub mod config;
pub mod hooks;
pub mod jids;
pub mod logging;
pub mod modules;
pub mod quota;
pub mod router;
pub mod serve;
pub mod server;
pub mod stanza;
pub mod tls;

//! Test support: a real `zkfire` process on free loopback ports, and a small
//! XMPP client that speaks the wire protocol to it.
#![allow(dead_code)]

pub mod client;
pub mod cluster;
pub mod mam;
pub mod server;
pub mod steps;

pub use client::Client;
pub use server::TestServer;

//! Test support shared by the test suites: free loopback ports and private
//! instances of the services zkfire talks to, each in its own temporary folder
//! and stopped when dropped.

pub mod ports;
pub mod postgres;
pub mod zookeeper;

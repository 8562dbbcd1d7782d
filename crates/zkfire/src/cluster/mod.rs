//! Several nodes serving one domain (DESIGN.md, "Cluster"): membership
//! through ZooKeeper, the cluster bus between nodes, and what travels on it.

pub mod bus;
pub mod copy_groups;
pub mod copy_origins;
pub mod inbound;
pub mod link;
pub mod membership;
pub mod node;
pub mod protocol;
pub mod status;
pub mod tls;
pub mod zk_acl;
pub mod zk_managed;

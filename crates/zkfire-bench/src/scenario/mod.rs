//! What the sessions do in each scenario (idle needs nothing of its own).

pub mod chat;
pub mod presence;

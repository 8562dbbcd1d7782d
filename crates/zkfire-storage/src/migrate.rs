//! The schema, embedded at build time and applied at every [`crate::open`].
//!
//! sqlx's migrator records applied versions (with checksums) in
//! `_sqlx_migrations`, so re-running is a no-op, and on PostgreSQL it holds an
//! advisory lock while migrating, so cluster nodes starting together do not
//! race. New changes go into a new numbered file in BOTH folders; an applied
//! file must never be edited (the checksum check would refuse to start).

use crate::error::migration;
use crate::pool::{Backend, Pools};
use crate::Result;
use sqlx::migrate::Migrator;

static SQLITE: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("migrations/postgres");

pub(crate) async fn run(pools: &Pools) -> Result<()> {
    let migrator = match pools.backend {
        Backend::Sqlite => &SQLITE,
        Backend::Postgres => &POSTGRES,
    };
    migrator.run(&pools.write).await.map_err(migration)
}

//! The journal on PostgreSQL, for a fleet of agentctl instances sharing one journal (the SQLite
//! file serves one instance). This directory holds what every part of that backend stands on:
//! reaching the server ([`connect`]: URL, TLS, per-session durability, pool) and the versioned
//! schema ([`schema`]) that a rolling upgrade can run old and new binaries against.

pub mod connect;
pub mod schema;

#[cfg(test)]
pub(crate) mod testing;

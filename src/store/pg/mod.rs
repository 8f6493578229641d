//! The PostgreSQL backend (work in progress on this branch).

use super::StoreError;
use crate::config::SyncMode;

pub struct PgJournal;

impl PgJournal {
    pub async fn open(_url: &str, _sync: SyncMode) -> Result<std::sync::Arc<dyn super::Backend>, StoreError> {
        Err(StoreError::Postgres("not wired yet".into()))
    }
}

/// Copies the SQLite journal of `config`'s data dir into the PostgreSQL database at `url`.
pub async fn migrate_from_sqlite(_config: &crate::config::Config, _url: &str) -> anyhow::Result<()> {
    anyhow::bail!("not wired yet")
}

//! The instances table on PostgreSQL (see `store::instances`): heartbeats and "gone" are judged
//! on the database's clock, so the hosts' clocks need not agree.

use super::schema::NOW_MS;
use super::{PgJournal, R, pg_err};
use crate::store::instances::{InstanceRow, NewInstance};

impl PgJournal {
    pub(super) async fn register_instance_pg(&self, i: NewInstance) -> R<()> {
        let c = self.client().await?;
        c.execute(
            &format!(
                "INSERT INTO instances (id, host, mode, version, started_unix, heartbeat_ms)
                 VALUES ($1, $2, $3, $4, extract(epoch from now())::bigint, {NOW_MS})
                 ON CONFLICT (id) DO UPDATE SET host = excluded.host, mode = excluded.mode, version = excluded.version,
                     started_unix = excluded.started_unix, heartbeat_ms = excluded.heartbeat_ms, stopped_unix = NULL"
            ),
            &[&i.id, &i.host, &i.mode, &i.version],
        )
        .await
        .map_err(pg_err)?;
        Ok(())
    }

    pub(super) async fn instance_heartbeat_pg(&self, id: &str) -> R<()> {
        let c = self.client().await?;
        c.execute(&format!("UPDATE instances SET heartbeat_ms = {NOW_MS}, stopped_unix = NULL WHERE id = $1"), &[&id])
            .await
            .map_err(pg_err)?;
        Ok(())
    }

    pub(super) async fn instance_stopped_pg(&self, id: &str) -> R<()> {
        let c = self.client().await?;
        c.execute("UPDATE instances SET stopped_unix = extract(epoch from now())::bigint WHERE id = $1", &[&id])
            .await
            .map_err(pg_err)?;
        Ok(())
    }

    pub(super) async fn instances_pg(&self) -> R<Vec<InstanceRow>> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT id, host, mode, version, started_unix, heartbeat_ms, stopped_unix, {NOW_MS} FROM instances
                     ORDER BY stopped_unix IS NOT NULL, started_unix DESC, id"
                ),
                &[],
            )
            .await
            .map_err(pg_err)?;
        Ok(rows
            .iter()
            .map(|r| InstanceRow {
                id: r.get(0),
                host: r.get(1),
                mode: r.get(2),
                version: r.get(3),
                started_unix: r.get(4),
                heartbeat_ms: r.get(5),
                stopped_unix: r.get(6),
                now_ms: r.get(7),
            })
            .collect())
    }
}

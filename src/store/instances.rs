//! The instances sharing a journal: each process registers itself at start (id, host, mode,
//! version) and beats every few seconds; one whose heartbeat stopped is shown as gone.
//! `agentctl instances` and the console's header read them.

use rusqlite::{Connection, params};

/// An instance whose heartbeat is older than this is shown as gone.
pub const GONE_AFTER_MS: i64 = 15_000;
/// How often an instance beats.
pub const HEARTBEAT_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct NewInstance {
    pub id: String,
    pub host: String,
    pub mode: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InstanceRow {
    pub id: String,
    pub host: String,
    pub mode: String,
    pub version: String,
    pub started_unix: i64,
    pub heartbeat_ms: i64,
    /// The journal's clock when read, so "gone" is judged on one clock.
    pub now_ms: i64,
    pub stopped_unix: Option<i64>,
}

impl InstanceRow {
    pub fn is_gone(&self) -> bool {
        self.stopped_unix.is_some() || self.now_ms - self.heartbeat_ms > GONE_AFTER_MS
    }

    /// "running", "stopped" or "gone" (its heartbeat stopped without a clean stop).
    pub fn status(&self) -> &'static str {
        match (self.stopped_unix, self.is_gone()) {
            (Some(_), _) => "stopped",
            (None, true) => "gone",
            (None, false) => "running",
        }
    }
}

pub fn register(c: &Connection, i: &NewInstance, now_ms: i64) -> rusqlite::Result<()> {
    c.execute(
        "INSERT INTO instances (id, host, mode, version, started_unix, heartbeat_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(id) DO UPDATE SET host = excluded.host, mode = excluded.mode, version = excluded.version,
             started_unix = excluded.started_unix, heartbeat_ms = excluded.heartbeat_ms, stopped_unix = NULL",
        params![i.id, i.host, i.mode, i.version, now_ms / 1000, now_ms],
    )?;
    Ok(())
}

pub fn heartbeat(c: &Connection, id: &str, now_ms: i64) -> rusqlite::Result<()> {
    c.prepare_cached("UPDATE instances SET heartbeat_ms = ?2, stopped_unix = NULL WHERE id = ?1")?
        .execute(params![id, now_ms])?;
    Ok(())
}

pub fn stopped(c: &Connection, id: &str, now_ms: i64) -> rusqlite::Result<()> {
    c.execute("UPDATE instances SET stopped_unix = ?2 WHERE id = ?1", params![id, now_ms / 1000])?;
    Ok(())
}

pub fn list(c: &Connection, now_ms: i64) -> rusqlite::Result<Vec<InstanceRow>> {
    c.prepare(
        "SELECT id, host, mode, version, started_unix, heartbeat_ms, stopped_unix FROM instances
         ORDER BY stopped_unix IS NOT NULL, started_unix DESC, id",
    )?
    .query_map([], |r| {
        Ok(InstanceRow {
            id: r.get(0)?,
            host: r.get(1)?,
            mode: r.get(2)?,
            version: r.get(3)?,
            started_unix: r.get(4)?,
            heartbeat_ms: r.get(5)?,
            now_ms,
            stopped_unix: r.get(6)?,
        })
    })?
    .collect()
}

//! The journal as a test reads it: task states (and waits on them), runs, jobs, and a full dump.

use super::wait_for;
use crate::common::Harness;
use agentctl::store::runs::RunRow;
use agentctl::store::{JOURNAL_FILE, Journal};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub fn state_in(db: &Path, id: &str) -> Result<String, String> {
    let c = rusqlite::Connection::open(db).map_err(|e| e.to_string())?;
    c.query_row("SELECT state FROM tasks WHERE id = ?1", [id], |r| r.get::<_, String>(0)).map_err(|e| e.to_string())
}

/// Waits for task `id` to be in `want` (the journal at `db`).
pub async fn wait_state(db: &Path, id: &str, want: &str, limit: Duration) {
    wait_for(&format!("task {id} to be {want}"), limit, || match state_in(db, id) {
        Ok(s) if s == want => Ok(()),
        Ok(s) => Err(format!("state {s}")),
        Err(e) => Err(e),
    })
    .await
}

pub fn db(h: &Harness) -> PathBuf {
    h.dir.path().join(JOURNAL_FILE)
}

pub async fn runs(journal: &Journal, id: &str) -> Vec<RunRow> {
    journal.runs_of(id.to_string()).await.unwrap()
}

pub async fn job(journal: &Journal, id: &str) -> agentctl::store::jobs::JobRow {
    let jobs = journal.list_jobs(None, 100).await.unwrap();
    jobs.into_iter().find(|j| j.id == id).expect("the task is in jobs list")
}

/// Every table of a SQLite journal as text, one line per row.
pub fn dump_sqlite(path: &Path) -> String {
    let c = rusqlite::Connection::open(path).unwrap();
    let tables: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut out = String::new();
    for table in tables {
        let mut stmt = c.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
        let n = stmt.column_count();
        let mut rows = stmt.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            let cells: Vec<String> = (0..n)
                .map(|i| match row.get_ref(i).unwrap() {
                    rusqlite::types::ValueRef::Null => "NULL".into(),
                    rusqlite::types::ValueRef::Integer(v) => v.to_string(),
                    rusqlite::types::ValueRef::Real(v) => v.to_string(),
                    rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                    // Stored bodies are compressed: both the bytes and what they unpack to.
                    rusqlite::types::ValueRef::Blob(b) => {
                        let unpacked = agentctl::store::unpack_body(b).unwrap_or_default();
                        format!("{} {}", String::from_utf8_lossy(b), String::from_utf8_lossy(&unpacked))
                    }
                })
                .collect();
            out.push_str(&format!("{table}: {}\n", cells.join(" | ")));
        }
    }
    out
}

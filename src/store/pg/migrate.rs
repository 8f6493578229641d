//! `agentctl journal migrate --to postgres://…`: copies a data dir's SQLite journal — deliveries,
//! tasks, outbox, label operations, the token salt and the rejected-row counts — into a
//! PostgreSQL journal, so a team that outgrows one machine keeps its history and its dead jobs.
//!
//! Idempotent and resumable: rows keep their ids and go in with `ON CONFLICT DO NOTHING`, one
//! committed chunk at a time, so a copy that stopped halfway is finished by running it again
//! and a finished one changes nothing. Run it with the instance stopped (its journal then does
//! not move under the copy); identity sequences are moved past the copied ids at the end.

use super::{PgJournal, pg_err};
use crate::config::Config;
use anyhow::{Context, bail};
use rusqlite::types::Value;

/// Rows per committed chunk.
const CHUNK: i64 = 1000;

/// The tables, their columns (the same names on both sides), and the PostgreSQL type of each
/// column that is not text: the copy binds every value with its column's type.
/// A table: its name, its columns, and the type of each column that is not text.
type Table = (&'static str, &'static str, &'static [(&'static str, &'static str)]);

const TABLES: &[Table] = &[
    (
        "deliveries",
        "id, route, delivery_id, dedupe_key, event, action, item, received_at, received_unix, headers, body, \
         body_size, body_stored, token_fp, verification, verdict, reason, http_status, task_id, replay_of, item_key, instance",
        &[
            ("id", "int"),
            ("received_unix", "int"),
            ("body", "bytea"),
            ("body_size", "int"),
            ("body_stored", "bool"),
            ("http_status", "int"),
            ("replay_of", "int"),
        ],
    ),
    (
        "tasks",
        "id, delivery, state, source, kind, repo, number, payload, attempt, reason, created_unix, updated_unix, owner, \
         cancel_requested, progress, progress_message, failure, exit_code, next_attempt_unix, started_unix, \
         finished_unix, pgid, generation, item_key, lease_until_ms, waiting_behind, log_tail",
        &[
            ("delivery", "int"),
            ("number", "int"),
            ("attempt", "int"),
            ("created_unix", "int"),
            ("updated_unix", "int"),
            ("cancel_requested", "bool"),
            ("progress", "int"),
            ("exit_code", "int"),
            ("next_attempt_unix", "int"),
            ("started_unix", "int"),
            ("finished_unix", "int"),
            ("pgid", "int"),
            ("generation", "int"),
            ("lease_until_ms", "int"),
        ],
    ),
    (
        "outbox",
        "id, task_id, queue, created_unix, published_unix, delay_ms, tries, last_error, parked_unix",
        &[
            ("id", "int"),
            ("created_unix", "int"),
            ("published_unix", "int"),
            ("delay_ms", "int"),
            ("tries", "int"),
            ("parked_unix", "int"),
        ],
    ),
    (
        "label_ops",
        "id, task_id, op, detail, created_unix, tries, next_unix, last_error, gave_up",
        &[("id", "int"), ("created_unix", "int"), ("tries", "int"), ("next_unix", "int"), ("gave_up", "bool")],
    ),
];

/// A SQLite value bound as its PostgreSQL column's type.
fn bind(value: Value, kind: &str) -> Box<dyn tokio_postgres::types::ToSql + Sync + Send> {
    match (value, kind) {
        (Value::Null, "int") => Box::new(None::<i64>),
        (Value::Null, "bool") => Box::new(None::<bool>),
        (Value::Null, "bytea") => Box::new(None::<Vec<u8>>),
        (Value::Null, _) => Box::new(None::<String>),
        (Value::Integer(i), "bool") => Box::new(i != 0),
        (Value::Integer(i), "int") => Box::new(i),
        (Value::Integer(i), _) => Box::new(i.to_string()),
        (Value::Real(f), "int") => Box::new(f as i64),
        (Value::Real(f), _) => Box::new(f.to_string()),
        (Value::Text(t), "int") => Box::new(t.parse::<i64>().unwrap_or(0)),
        (Value::Text(t), "bytea") => Box::new(t.into_bytes()),
        (Value::Text(t), _) => Box::new(t),
        (Value::Blob(b), "bytea") => Box::new(b),
        (Value::Blob(b), _) => Box::new(String::from_utf8_lossy(&b).into_owned()),
    }
}

pub async fn migrate_from_sqlite(config: &Config, url: &str) -> anyhow::Result<()> {
    let path = config.storage.data_dir().join(crate::store::JOURNAL_FILE);
    if !path.exists() {
        bail!("no SQLite journal at {} (storage.data_dir) to copy", path.display());
    }
    let source = crate::store::connect(&path, config.storage.sync)
        .with_context(|| format!("while opening {}", path.display()))?;
    let journal = PgJournal::open(url, config.storage.sync).await?;
    // The handle is the backend; the copy needs the pool underneath.
    let target = super::connect::PgTarget::parse(url)?;
    let pool = super::connect::pool(&target, config.storage.sync, 1)?;
    drop(journal);
    let mut client = pool.get().await.with_context(|| format!("while connecting to {target}"))?;
    for (table, columns, kinds) in TABLES {
        let names: Vec<&str> = columns.split(',').map(str::trim).collect();
        let marks: Vec<String> = (1..=names.len()).map(|i| format!("${i}")).collect();
        let insert = format!("INSERT INTO {table} ({columns}) VALUES ({}) ON CONFLICT DO NOTHING", marks.join(", "));
        let key = if *table == "tasks" { "rowid" } else { "id" };
        let mut after = i64::MIN;
        let mut copied = 0u64;
        loop {
            let select = format!("SELECT {key}, {columns} FROM {table} WHERE {key} > ?1 ORDER BY {key} LIMIT ?2");
            let rows: Vec<(i64, Vec<Value>)> = source
                .prepare(&select)?
                .query_map((after, CHUNK), |r| {
                    let k: i64 = r.get(0)?;
                    let vals = (1..=names.len()).map(|i| r.get::<_, Value>(i)).collect::<rusqlite::Result<_>>()?;
                    Ok((k, vals))
                })?
                .collect::<rusqlite::Result<_>>()?;
            let Some((last, _)) = rows.last() else { break };
            after = *last;
            let tx = client.transaction().await.map_err(pg_err)?;
            let statement = tx.prepare(&insert).await.map_err(pg_err)?;
            for (_, values) in rows {
                let bound: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> = values
                    .into_iter()
                    .zip(&names)
                    .map(|(v, n)| bind(v, kinds.iter().find(|(c, _)| c == n).map_or("text", |(_, k)| k)))
                    .collect();
                let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                    bound.iter().map(|b| b.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
                copied += tx.execute(&statement, &refs).await.map_err(pg_err)?;
            }
            tx.commit().await.map_err(pg_err)?;
        }
        if *table != "tasks" {
            client
                .execute(
                    &format!(
                        "SELECT setval(pg_get_serial_sequence('{table}', 'id'), GREATEST((SELECT MAX(id) FROM {table}), 1))"
                    ),
                    &[],
                )
                .await
                .map_err(pg_err)?;
        }
        println!("{table}: {copied} row(s) copied");
    }
    // The salt keeps stored token fingerprints comparable; the rejected counts keep the caps right.
    let salt: Option<Vec<u8>> =
        source.query_row("SELECT value FROM meta WHERE key = 'token_salt'", [], |r| r.get(0)).ok();
    if let Some(salt) = salt {
        client
            .execute(
                "INSERT INTO settings (key, value) VALUES ('token_salt', $1) ON CONFLICT (key) DO UPDATE SET value = $1",
                &[&salt],
            )
            .await
            .map_err(pg_err)?;
    }
    client
        .execute(
            "INSERT INTO meta (key, value)
             SELECT 'rejected_rows', COUNT(*) FROM deliveries WHERE verdict = 'rejected'
             UNION ALL SELECT 'rejected_bytes', COALESCE(SUM(COALESCE(length(body), 0) + octet_length(headers)), 0)
                 FROM deliveries WHERE verdict = 'rejected'
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[],
        )
        .await
        .map_err(pg_err)?;
    println!("the journal is in {target}; set storage.url (AGENTCTL_STORAGE_URL) to it on every instance");
    Ok(())
}

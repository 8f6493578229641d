//! This instance's identity and its entry in the journal's `instances` table.
//!
//! The id is kept in the data dir (`instance.id`), so a restart is the same instance: it takes
//! back what its previous life claimed (its leftover process groups, its claims) without
//! touching any other instance's. The data dir's lock makes one process per id.

use crate::cli::Mode;
use crate::store::Journal;
use crate::store::instances::{HEARTBEAT_EVERY, NewInstance};
use anyhow::Context;
use std::path::Path;
use tokio_util::sync::CancellationToken;

pub const ID_FILE: &str = "instance.id";

/// This data dir's instance id, created (a UUID) at first start.
pub fn instance_id(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join(ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) if uuid::Uuid::parse_str(s.trim()).is_ok() => return Ok(s.trim().to_string()),
        Ok(_) => tracing::warn!("{} does not hold an instance id; making a new one", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("while reading {}", path.display())),
    }
    let id = uuid::Uuid::new_v4().to_string();
    std::fs::write(&path, format!("{id}\n")).with_context(|| format!("while writing {}", path.display()))?;
    Ok(id)
}

/// The host name, for `agentctl instances`.
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into the buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Registers this instance, beats until `shutdown`, then marks it stopped.
pub async fn beat(journal: Journal, id: String, mode: Mode, shutdown: CancellationToken) -> anyhow::Result<()> {
    let me = NewInstance {
        id: id.clone(),
        host: host_name(),
        mode: format!("{mode:?}").to_lowercase(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    };
    if let Err(e) = journal.register_instance(me.clone()).await {
        tracing::warn!("cannot register this instance in the journal: {e}");
    }
    let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        if let Err(e) = journal.instance_heartbeat(id.clone()).await {
            tracing::debug!("instance heartbeat failed: {e}");
        }
    }
    let _ = journal.instance_stopped(id).await;
    Ok(())
}

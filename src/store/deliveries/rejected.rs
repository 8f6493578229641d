//! Rejected rows under their caps: the running counts of rows and bytes they keep (in `meta`),
//! and the room a new one gets.

use super::{NewDelivery, PRUNE_PER_INSERT, RejectedCaps, STORED_BYTES};
use rusqlite::{Connection, OptionalExtension, params};

impl NewDelivery {
    /// What a rejected row keeps: its headers and body when they fit under the caps (after
    /// removing a few of the oldest rejected rows if needed), else only its metadata. Keeps the
    /// running row and byte counts in `meta`, so no insert ever counts the table.
    pub(super) fn rejected_room(&self, c: &Connection, caps: RejectedCaps) -> rusqlite::Result<(&str, Option<&[u8]>)> {
        let (mut rows, mut bytes) = rejected_counts(c)?;
        let wanted = (self.headers_json.len() + self.body.packed.len()) as i64;
        let mut removed = 0;
        while removed < PRUNE_PER_INSERT && (rows >= caps.max_rows || bytes + wanted > caps.total) {
            let Some(freed) = c
                .prepare_cached(&format!(
                    "DELETE FROM deliveries WHERE id =
                       (SELECT id FROM deliveries WHERE verdict = 'rejected' ORDER BY id LIMIT 1)
                     RETURNING {STORED_BYTES}"
                ))?
                .query_row([], |r| r.get::<_, i64>(0))
                .optional()?
            else {
                break;
            };
            rows -= 1;
            bytes -= freed;
            removed += 1;
        }
        let (headers, body) = if bytes + wanted <= caps.total {
            (self.headers_json.as_str(), Some(&self.body.packed[..]))
        } else {
            ("[]", None)
        };
        let kept = (headers.len() + body.map_or(0, <[u8]>::len)) as i64;
        set_rejected_counts(c, rows.max(0) + 1, (bytes + kept).max(0))?;
        Ok((headers, body))
    }
}

/// The running count of rejected rows and of the bytes they keep.
pub(super) fn rejected_counts(c: &Connection) -> rusqlite::Result<(i64, i64)> {
    let get = |key: &str| -> rusqlite::Result<i64> {
        Ok(c.prepare_cached("SELECT value FROM meta WHERE key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()?
            .unwrap_or(0))
    };
    Ok((get("rejected_rows")?, get("rejected_bytes")?))
}

fn set_rejected_counts(c: &Connection, rows: i64, bytes: i64) -> rusqlite::Result<()> {
    let mut set = c.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?;
    set.execute(params!["rejected_rows", rows])?;
    set.execute(params!["rejected_bytes", bytes])?;
    Ok(())
}

/// Rejected rows removed elsewhere (retention): takes them off the running counts.
pub(in crate::store) fn forget_rejected(c: &Connection, rows: i64, bytes: i64) -> rusqlite::Result<()> {
    if rows == 0 {
        return Ok(());
    }
    let (r, b) = rejected_counts(c)?;
    set_rejected_counts(c, (r - rows).max(0), (b - bytes).max(0))
}

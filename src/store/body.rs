//! Stored bodies are compressed: webhook payloads are repetitive JSON (GitHub's 8.9 KB
//! `issues.labeled` delivery packs to about 3 KB), and the journal's write cost grows with the
//! pages a commit touches. Compression runs on the request's task, before the single writer sees
//! it.
//!
//! New bodies are LZ4 blocks behind a one-byte tag: LZ4 packs that delivery in about a fifth of
//! the CPU zstd's fastest level took (a twelfth of agentctl's CPU per delivery went to zstd),
//! and either form fits one journal page. Bodies an older agentctl stored are zstd frames, told
//! apart by zstd's magic number, and read as before.

/// A body as the journal keeps it.
#[derive(Debug, Clone)]
pub struct StoredBody {
    pub packed: Vec<u8>,
    /// False when only a prefix was kept (rejected bodies are cut to a size cap).
    pub complete: bool,
}

/// The first byte of an LZ4-packed body; a zstd frame starts with 0x28 (its magic, 0xFD2FB528,
/// little-endian), so the two never meet.
const LZ4_TAG: u8 = b'L';
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
/// The largest body a stored size may claim: far above any body limit, so a damaged size
/// cannot make a read allocate gigabytes.
const MAX_UNPACKED: usize = 256 << 20;

impl StoredBody {
    /// Packs `raw`, keeping at most `limit` bytes of it.
    pub fn pack(raw: &[u8], limit: Option<usize>) -> StoredBody {
        let kept = &raw[..raw.len().min(limit.unwrap_or(usize::MAX))];
        let mut packed = vec![0u8; 1 + 4 + lz4_flex::block::get_maximum_output_size(kept.len())];
        packed[0] = LZ4_TAG;
        packed[1..5].copy_from_slice(&(kept.len() as u32).to_le_bytes());
        let n = lz4_flex::block::compress_into(kept, &mut packed[5..]).expect("the buffer has LZ4's bound");
        packed.truncate(5 + n);
        StoredBody { packed, complete: kept.len() == raw.len() }
    }
}

/// The original bytes of a stored body.
pub fn unpack(packed: &[u8]) -> std::io::Result<Vec<u8>> {
    let invalid = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidData, why);
    if packed.starts_with(&ZSTD_MAGIC) {
        return zstd::stream::decode_all(packed);
    }
    match packed {
        [LZ4_TAG, a, b, c, d, block @ ..] => {
            let size = u32::from_le_bytes([*a, *b, *c, *d]) as usize;
            if size > MAX_UNPACKED {
                return Err(invalid(format!("stored body claims {size} bytes")));
            }
            lz4_flex::block::decompress(block, size).map_err(|e| invalid(format!("stored body: {e}")))
        }
        _ => Err(invalid("stored body is in no known format".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_cut() {
        let raw = br#"{"action":"labeled","url":"https://api.github.com/repos/o/r/issues/1"}"#.repeat(50);
        let s = StoredBody::pack(&raw, None);
        assert!(s.complete && s.packed.len() < raw.len() / 4);
        assert_eq!(unpack(&s.packed).unwrap(), raw);
        let cut = StoredBody::pack(&raw, Some(10));
        assert!(!cut.complete);
        assert_eq!(unpack(&cut.packed).unwrap(), &raw[..10]);
        let empty = StoredBody::pack(b"", None);
        assert_eq!(unpack(&empty.packed).unwrap(), b"");
    }

    #[test]
    fn reads_bodies_older_versions_stored_with_zstd() {
        let raw = br#"{"action":"labeled"}"#.repeat(20);
        let old = zstd::bulk::compress(&raw, 1).unwrap();
        assert_eq!(unpack(&old).unwrap(), raw);
    }

    #[test]
    fn damaged_bodies_are_errors_not_allocations() {
        assert!(unpack(b"").is_err());
        assert!(unpack(b"garbage").is_err());
        assert!(unpack(&[LZ4_TAG, 0xff, 0xff, 0xff, 0xff, 0]).is_err());
        let mut s = StoredBody::pack(&b"abc".repeat(100), None).packed;
        s.truncate(s.len() - 3);
        assert!(unpack(&s).is_err());
    }
}

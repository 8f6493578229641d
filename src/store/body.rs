//! Stored bodies are zstd-compressed: webhook payloads are repetitive JSON (a GitHub issue
//! delivery of 14 KB packs to about 3 KB), and the journal's write cost grows with the pages a
//! commit touches. Compression runs on the request's task, before the single writer sees it.

/// A body as the journal keeps it.
#[derive(Debug, Clone)]
pub struct StoredBody {
    pub packed: Vec<u8>,
    /// False when only a prefix was kept (rejected bodies are cut to a size cap).
    pub complete: bool,
}

/// zstd's fastest level: most of the size win for little CPU.
const LEVEL: i32 = 1;

impl StoredBody {
    /// Packs `raw`, keeping at most `limit` bytes of it.
    pub fn pack(raw: &[u8], limit: Option<usize>) -> StoredBody {
        thread_local! {
            // A compression context is costly to set up; each thread keeps one.
            static COMPRESSOR: std::cell::RefCell<zstd::bulk::Compressor<'static>> =
                std::cell::RefCell::new(zstd::bulk::Compressor::new(LEVEL).expect("zstd accepts level 1"));
        }
        let kept = &raw[..raw.len().min(limit.unwrap_or(usize::MAX))];
        let packed =
            COMPRESSOR.with(|c| c.borrow_mut().compress(kept)).expect("compressing into a fresh buffer succeeds");
        StoredBody { packed, complete: kept.len() == raw.len() }
    }
}

/// The original bytes of a stored body.
pub fn unpack(packed: &[u8]) -> std::io::Result<Vec<u8>> {
    zstd::stream::decode_all(packed)
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
    }
}

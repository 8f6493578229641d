//! Reading a handler's output. Handlers print whatever their tools print — `git diff` of a
//! binary file, a progress bar without newlines, a minified file on one line — so the reader
//! takes bytes, not text: it reads in bounded chunks, decodes each line lossily, splits a line
//! longer than [`MAX_LINE`] into pieces, and keeps draining the pipe until the handler closes
//! it. A reader that stopped early would close the pipe and kill the handler with SIGPIPE on
//! its next write; one that buffered a whole line would let one line grow agentctl's memory
//! without bound.
//!
//! The failure's log tail travels in queue messages and journal rows, so [`Tail`] keeps it
//! small: a few lines, each cut short, control characters removed.

use std::collections::VecDeque;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;

/// Longest line kept whole; longer ones become several lines.
pub const MAX_LINE: usize = 8 * 1024;
/// Bytes read from the pipe at a time.
const CHUNK: usize = 8 * 1024;
/// Lines kept for the failure's log tail.
pub const TAIL_LINES: usize = 20;
/// Longest line in the tail, in bytes; longer ones are cut with an ellipsis.
pub const TAIL_LINE_MAX: usize = 200;
/// The whole tail, in bytes (older lines go first).
pub const TAIL_MAX: usize = 4 * 1024;

/// Splits a byte stream into lines of at most `max` bytes, never holding more than `max`.
#[derive(Debug)]
pub struct LineSplitter {
    pending: Vec<u8>,
    max: usize,
}

impl LineSplitter {
    pub fn new(max: usize) -> LineSplitter {
        assert!(max >= 8, "a line must have room for a few characters");
        LineSplitter { pending: Vec::with_capacity(max), max }
    }

    /// Bytes held for a line not yet complete.
    pub fn buffered(&self) -> usize {
        self.pending.len()
    }

    /// What the splitter has allocated: it never grows past `max`.
    pub fn capacity(&self) -> usize {
        self.pending.capacity()
    }

    /// Feeds bytes; `emit` hears every complete (or over-long) line, without its newline.
    pub fn push(&mut self, mut bytes: &[u8], emit: &mut impl FnMut(String)) {
        while let Some(at) = bytes.iter().position(|b| *b == b'\n') {
            self.append(&bytes[..at], emit);
            emit(decode(&self.pending));
            self.pending.clear();
            bytes = &bytes[at + 1..];
        }
        self.append(bytes, emit);
    }

    /// The last line, if the stream did not end with a newline.
    pub fn finish(self, emit: &mut impl FnMut(String)) {
        if !self.pending.is_empty() {
            emit(decode(&self.pending));
        }
    }

    fn append(&mut self, mut part: &[u8], emit: &mut impl FnMut(String)) {
        while self.pending.len() + part.len() > self.max {
            let room = self.max - self.pending.len();
            self.pending.extend_from_slice(&part[..room]);
            part = &part[room..];
            // Cut before a character split at the edge; its first bytes start the next piece.
            let cut = char_boundary(&self.pending);
            let carry: Vec<u8> = self.pending[cut..].to_vec();
            self.pending.truncate(cut);
            emit(decode(&self.pending));
            self.pending.clear();
            self.pending.extend_from_slice(&carry);
        }
        self.pending.extend_from_slice(part);
    }
}

/// Where the last, possibly incomplete, UTF-8 sequence of `bytes` starts if it is incomplete;
/// else `bytes.len()`.
fn char_boundary(bytes: &[u8]) -> usize {
    let len = bytes.len();
    for back in 1..=3.min(len) {
        let b = bytes[len - back];
        if b & 0b1100_0000 == 0b1000_0000 {
            continue; // a continuation byte
        }
        let needed = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        return if needed > back { len - back } else { len };
    }
    len
}

fn decode(bytes: &[u8]) -> String {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    String::from_utf8_lossy(bytes).into_owned()
}

/// Reads `stream` to its end, sending each line. If the receiver is gone it keeps reading
/// (and discards), so the handler never blocks on a full pipe or dies of SIGPIPE.
pub async fn read_lines(mut stream: impl AsyncRead + Unpin, tx: mpsc::Sender<String>) {
    let mut buf = vec![0u8; CHUNK];
    let mut splitter = LineSplitter::new(MAX_LINE);
    let mut lines = Vec::new();
    let mut listening = true;
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        splitter.push(&buf[..n], &mut |line| lines.push(line));
        for line in lines.drain(..) {
            if listening && tx.send(line).await.is_err() {
                listening = false;
            }
        }
    }
    splitter.finish(&mut |line| lines.push(line));
    for line in lines {
        if listening {
            let _ = tx.send(line).await;
        }
    }
}

/// The last lines of a handler's output, bounded in lines and bytes, safe for a terminal.
#[derive(Debug, Default)]
pub struct Tail {
    lines: VecDeque<String>,
    bytes: usize,
}

impl Tail {
    pub fn push(&mut self, line: &str) {
        let clean = crate::text::for_terminal(line);
        let kept = if clean.len() > TAIL_LINE_MAX {
            let mut end = TAIL_LINE_MAX;
            while !clean.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}…", &clean[..end])
        } else {
            clean.into_owned()
        };
        self.bytes += kept.len() + 1;
        self.lines.push_back(kept);
        while self.lines.len() > TAIL_LINES || self.bytes > TAIL_MAX {
            let Some(old) = self.lines.pop_front() else { break };
            self.bytes -= old.len() + 1;
        }
    }

    pub fn render(&self) -> String {
        self.lines.iter().map(String::as_str).collect::<Vec<_>>().join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(max: usize, chunks: &[&[u8]]) -> Vec<String> {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, &mut |l| out.push(l));
        }
        s.finish(&mut |l| out.push(l));
        out
    }

    #[test]
    fn lines_across_chunks_and_invalid_bytes() {
        assert_eq!(split(64, &[b"one\ntw", b"o\r\nthree"]), ["one", "two", "three"]);
        assert_eq!(split(64, &[b"bin \xff\xfe here\n", b"after\n"]), ["bin \u{fffd}\u{fffd} here", "after"]);
        assert_eq!(split(64, &[b"\n\n"]), ["", ""]);
    }

    #[test]
    fn long_lines_are_split_at_character_boundaries() {
        assert_eq!(split(8, &[b"abcdefghij\n"]), ["abcdefgh", "ij"]);
        // "é" is two bytes; it must not be cut in half at the edge.
        let out = split(8, &["abcdefgé!\n".as_bytes()]);
        assert_eq!(out, ["abcdefg", "é!"]);
        assert!(out.iter().all(|l| !l.contains('\u{fffd}')));
    }

    #[test]
    fn a_huge_line_never_grows_the_buffer() {
        let mut s = LineSplitter::new(MAX_LINE);
        let chunk = vec![b'a'; 64 * 1024];
        let (mut lines, mut longest) = (0usize, 0usize);
        for _ in 0..(100 * 1024 * 1024 / chunk.len()) {
            s.push(&chunk, &mut |l| {
                lines += 1;
                longest = longest.max(l.len());
            });
            assert!(s.buffered() <= MAX_LINE && s.capacity() <= MAX_LINE, "{} buffered", s.buffered());
        }
        // Every full piece went out; the last one waits for more bytes or the end.
        assert_eq!(lines, 100 * 1024 * 1024 / MAX_LINE - 1);
        assert_eq!(s.buffered(), MAX_LINE);
        assert_eq!(longest, MAX_LINE);
    }

    #[test]
    fn the_tail_is_bounded_and_clean() {
        let mut t = Tail::default();
        for i in 0..100 {
            t.push(&format!("line {i} \x1b[31m{}", "x".repeat(10_000)));
        }
        let text = t.render();
        assert!(text.len() <= TAIL_MAX, "{}", text.len());
        assert!(!text.contains('\x1b'));
        assert!(text.lines().all(|l| l.len() <= TAIL_LINE_MAX + '…'.len_utf8()));
        assert!(text.lines().last().unwrap().starts_with("line 99 [31m"));
        let mut t = Tail::default();
        t.push("short");
        assert_eq!(t.render(), "short");
    }
}

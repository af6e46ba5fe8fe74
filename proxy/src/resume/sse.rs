//! Server-sent events for resumable streams: the upstream's byte stream cut into whole
//! events, each re-issued with an `id:` naming the stream and its index, so a browser's
//! `EventSource` reconnects with `Last-Event-ID: <token>.<index>` by itself.
//!
//! Lines follow the WHATWG event-stream rules (LF, CR or CRLF endings; an event ends
//! at a blank line; a UTF-8 BOM starting the stream is dropped). Blocks with no `data`
//! (comments, keep-alives) dispatch nothing in a browser and are dropped here: the edge
//! sends its own heartbeats.

use bytes::{Bytes, BytesMut};

/// Cuts an event stream into events.
#[derive(Debug, Default)]
pub struct Splitter {
    buf: BytesMut,
    /// Bytes of `buf` already searched for an event end.
    scanned: usize,
    limit: usize,
    /// Past the stream's start, where a BOM is dropped.
    started: bool,
}

/// The UTF-8 byte order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// An event too large to buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct TooLarge(pub usize);

impl Splitter {
    pub fn new(limit: usize) -> Self {
        Splitter {
            buf: BytesMut::new(),
            scanned: 0,
            limit,
            started: false,
        }
    }

    pub fn push(&mut self, data: &[u8]) -> Result<(), TooLarge> {
        self.buf.extend_from_slice(data);
        if self.buf.len() > self.limit {
            return Err(TooLarge(self.limit));
        }
        Ok(())
    }

    /// The next whole event's lines with `id` lines removed, without the blank line;
    /// `None` until one is complete. Blocks that carry no data are skipped.
    pub fn next_event(&mut self) -> Option<Bytes> {
        if !self.started {
            // Not yet known whether the stream starts with a BOM.
            if self.buf.len() < BOM.len() && BOM.starts_with(&self.buf) {
                return None;
            }
            self.started = true;
            if self.buf.starts_with(BOM) {
                let _ = self.buf.split_to(BOM.len());
            }
        }
        loop {
            let end = self.find_end()?;
            let block = self.buf.split_to(end.0).freeze();
            let _ = self.buf.split_to(end.1 - end.0);
            self.scanned = 0;
            if let Some(event) = clean(&block) {
                return Some(event);
            }
        }
    }

    /// (end of the block's last line, end of the blank line) of the first block.
    fn find_end(&mut self) -> Option<(usize, usize)> {
        let b = &self.buf[..];
        let mut i = self.scanned.saturating_sub(2);
        // Positions of line ends: a blank line is a line end right after another.
        let mut prev_line_end: Option<usize> = if i == 0 { Some(0) } else { None };
        while i < b.len() {
            let (is_end, width) = match b[i] {
                b'\r' if b.get(i + 1) == Some(&b'\n') => (true, 2),
                // A CR at the end may be the first half of a CRLF: wait for more.
                b'\r' if i + 1 == b.len() => break,
                b'\r' | b'\n' => (true, 1),
                _ => (false, 1),
            };
            if is_end {
                if prev_line_end == Some(i) {
                    return Some((i, i + width));
                }
                prev_line_end = Some(i + width);
            }
            i += width;
        }
        self.scanned = i;
        None
    }
}

/// The block's lines, with LF endings and without `id:` lines; `None` without data.
fn clean(block: &[u8]) -> Option<Bytes> {
    let mut out = BytesMut::with_capacity(block.len() + 1);
    let mut has_data = false;
    for line in block.split(|&c| c == b'\n' || c == b'\r') {
        if line.is_empty() || line.starts_with(b":") {
            continue;
        }
        let field = line.split(|&c| c == b':').next().unwrap_or(line);
        match field {
            b"id" => continue,
            b"data" => has_data = true,
            _ => {}
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\n");
    }
    has_data.then(|| out.freeze())
}

/// The event as sent: its lines, then `id: <token>.<index>`, then the blank line.
pub fn with_id(event: &[u8], token: &str, index: u64) -> Bytes {
    let mut out = BytesMut::with_capacity(event.len() + token.len() + 32);
    out.extend_from_slice(event);
    out.extend_from_slice(b"id: ");
    out.extend_from_slice(token.as_bytes());
    out.extend_from_slice(format!(".{index}\n\n").as_bytes());
    out.freeze()
}

/// The edge's keep-alive: a comment line, which no client dispatches.
pub const HEARTBEAT: &[u8] = b": keep-alive\n\n";

/// A final error event (`event: error`), for ends the upstream did not choose.
pub fn error_event(code: &str, message: &str) -> Bytes {
    let data = serde_json::json!({ "code": code, "message": message });
    Bytes::from(format!("event: error\ndata: {data}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(chunks: &[&[u8]]) -> Vec<String> {
        let mut s = Splitter::new(1 << 20);
        let mut out = Vec::new();
        for c in chunks {
            s.push(c).unwrap();
            while let Some(e) = s.next_event() {
                out.push(String::from_utf8(e.to_vec()).unwrap());
            }
        }
        out
    }

    #[test]
    fn events_split_on_blank_lines_whatever_the_line_endings_and_chunking() {
        let whole = b"data: a\n\ndata: b\r\n\r\nevent: x\rdata: c\r\r: ping\n\nid: 9\ndata: d\n\n";
        let want = ["data: a\n", "data: b\n", "event: x\ndata: c\n", "data: d\n"];
        assert_eq!(events(&[whole]), want);
        // Byte by byte: CRLF split across chunks is still one line end.
        let bytes: Vec<&[u8]> = whole.chunks(1).collect();
        assert_eq!(events(&bytes), want);
    }

    #[test]
    fn ids_name_token_and_index_and_oversized_events_are_refused() {
        let e = with_id(b"data: a\n", "rs1_t", 7);
        assert_eq!(&e[..], b"data: a\nid: rs1_t.7\n\n");
        let mut s = Splitter::new(8);
        assert_eq!(s.push(b"data: 123456789"), Err(TooLarge(8)));
    }

    #[test]
    fn a_bom_starting_the_stream_is_dropped_as_browsers_do() {
        // The first event used to be dropped: its first line read as the field
        // "\u{feff}data", so the block had no data.
        let whole = b"\xEF\xBB\xBFdata: a\n\ndata: b\n\n";
        assert_eq!(events(&[whole]), ["data: a\n", "data: b\n"]);
        let bytes: Vec<&[u8]> = whole.chunks(1).collect();
        assert_eq!(events(&bytes), ["data: a\n", "data: b\n"]);
        // Only at the start: later it is a line's content; a partial BOM is content too.
        assert_eq!(
            events(&[b"data: a\n\n\xEF\xBB\xBFdata: b\n\n"]),
            ["data: a\n"]
        );
        assert_eq!(events(&[b"\xEF\xBBdata: a\n\n"]), Vec::<String>::new());
        // A blank line right after it ends an (empty) event.
        assert_eq!(events(&[b"\xEF\xBB\xBF\n", b"data: a\n\n"]), ["data: a\n"]);
    }
}

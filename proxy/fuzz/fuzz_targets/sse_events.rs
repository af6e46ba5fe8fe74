//! Server-sent events of resumable streams (`proxy/src/resume/sse.rs`: `Splitter`,
//! `with_id`, `error_event`, `HEARTBEAT`) and the stream-metrics counters
//! (`proxy/src/http/stream_stats.rs`: `SseCounter`, `EnvelopeCounter`), fed an upstream
//! body in arbitrary chunk splits.
//!
//! Input: 2 bytes event limit, 8 bytes first event index, 16 bytes token randomness, 1 byte
//! split count `n`, `n` split bytes, then the body.
//!
//! Properties (the reference below reads the whole body at once, by the WHATWG
//! event-stream rules: CR, LF or CRLF line ends, a blank line ends an event, one leading
//! BOM is skipped; a CR at the very end may be half of a CRLF, so it ends nothing yet):
//! - no panic; with no limit, the splitter yields exactly the reference's events that have a
//!   `data` field, each as its lines minus comments and `id` lines, LF-terminated, whatever
//!   the split;
//! - with a limit, `push` fails exactly when the bytes held (the body after the last event
//!   end or the BOM, plus the chunk) exceed it; the events before the failure are the reference's first
//!   events, none over the limit; when no push fails, no raw event (its blank line included)
//!   is over the limit, so an oversized event is never passed on;
//! - `with_id(event, token, i)` is exactly one event: the event's lines, then one `id:` line
//!   whose value is `<token>.<i>`, then the blank line; the splitter gives back the event, the
//!   counter counts one, and that id as `Last-Event-ID` is read back by
//!   `ResumeRequest::from_headers` as the token and `i`; the whole re-issued stream splits into
//!   the same events again (re-issued events are read as mid-stream, after a heartbeat: a line
//!   of an upstream event may itself start with a BOM, which only the stream's start drops);
//! - `SseCounter` counts the events with data independently of the split, the same number as
//!   the splitter yields for the body followed by one more byte that is not a line end (the
//!   counter does not wait for an LF after a final CR; the splitter does);
//! - `error_event` is one event, `event: error` and one `data:` line of JSON holding the code
//!   and message given; `HEARTBEAT` is no event;
//! - `EnvelopeCounter` counts the 5-byte-header envelopes whose flags have neither `0x80` nor
//!   `0x02`, independently of the split.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use tollgate_proxy::fuzzing::sse::{HEARTBEAT, Splitter, TooLarge, error_event, with_id};
use tollgate_proxy::fuzzing::token::ResumeRequest;
use tollgate_proxy::fuzzing::{EnvelopeCounter, SseCounter, chunks};

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One complete event block of the reference.
#[derive(Debug)]
struct Block<'a> {
    /// End of its blank line in the body.
    end: usize,
    lines: Vec<&'a [u8]>,
}

/// The complete blocks of `body`, by the WHATWG rules, read all at once; `at_start` when
/// `body` starts the stream (a BOM there is skipped).
fn blocks(body: &[u8], at_start: bool) -> Vec<Block<'_>> {
    let mut out = Vec::new();
    let mut lines = Vec::new();
    let skip = if at_start && body.starts_with(BOM) {
        3
    } else {
        0
    };
    let (mut i, mut line_start) = (skip, skip);
    while i < body.len() {
        let width = match body[i] {
            b'\r' if i + 1 == body.len() => break,
            b'\r' if body[i + 1] == b'\n' => 2,
            b'\r' | b'\n' => 1,
            _ => {
                i += 1;
                continue;
            }
        };
        let line = &body[line_start..i];
        i += width;
        line_start = i;
        if line.is_empty() {
            out.push(Block {
                end: i,
                lines: std::mem::take(&mut lines),
            });
        } else {
            lines.push(line);
        }
    }
    out
}

fn field(line: &[u8]) -> &[u8] {
    line.split(|&c| c == b':').next().unwrap_or(line)
}

/// What the edge keeps of a block: `None` without a `data` field.
fn cleaned(block: &Block<'_>) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut has_data = false;
    for line in &block.lines {
        if line.starts_with(b":") || field(line) == b"id" {
            continue;
        }
        has_data |= field(line) == b"data";
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    has_data.then_some(out)
}

fn reference(body: &[u8]) -> Vec<Vec<u8>> {
    blocks(body, true).iter().filter_map(cleaned).collect()
}

/// The value of a field line, per WHATWG (one space after the colon dropped).
fn value(line: &[u8]) -> &[u8] {
    let name = field(line);
    let rest = &line[name.len()..];
    let rest = rest.strip_prefix(b":").unwrap_or(rest);
    rest.strip_prefix(b" ").unwrap_or(rest)
}

/// The splitter's events for `parts`, pushed in turn and drained after each push.
fn split(parts: &[&[u8]], limit: usize) -> (Vec<Vec<u8>>, Option<usize>) {
    let mut s = Splitter::new(limit);
    let mut events = Vec::new();
    for (k, part) in parts.iter().enumerate() {
        if let Err(e) = s.push(part) {
            assert_eq!(e, TooLarge(limit));
            return (events, Some(k));
        }
        while let Some(e) = s.next_event() {
            events.push(e.to_vec());
        }
    }
    (events, None)
}

fn sse_count(parts: &[&[u8]]) -> u64 {
    let mut c = SseCounter::default();
    parts.iter().map(|p| c.feed(p)).sum()
}

fn envelope_count(parts: &[&[u8]]) -> u64 {
    let mut c = EnvelopeCounter::default();
    parts.iter().map(|p| c.feed(p)).sum()
}

fn envelope_reference(body: &[u8]) -> u64 {
    let (mut i, mut n) = (0usize, 0);
    while body.len() - i >= 5 {
        let len = u32::from_be_bytes([body[i + 1], body[i + 2], body[i + 3], body[i + 4]]);
        if body[i] & 0x82 == 0 {
            n += 1;
        }
        i = i
            .saturating_add(5)
            .saturating_add(len as usize)
            .min(body.len());
    }
    n
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 27 {
        return;
    }
    let limit = usize::from(u16::from_be_bytes([data[0], data[1]]));
    let mut index = [0u8; 8];
    index.copy_from_slice(&data[2..10]);
    let first_index = u64::from_be_bytes(index);
    let token = format!("rs1_{}", URL_SAFE_NO_PAD.encode(&data[10..26]));
    let n = usize::from(data[26]).min(data.len() - 27).min(64);
    let seeds = &data[27..27 + n];
    let body = &data[27 + n..];
    let parts = chunks(body, seeds);

    // Unlimited: exactly the reference's events, whatever the split.
    let want = reference(body);
    let (events, failed) = split(&parts, usize::MAX);
    assert_eq!(failed, None);
    assert_eq!(
        events,
        want,
        "split {:?}",
        parts.iter().map(|p| p.len()).collect::<Vec<_>>()
    );
    let bytewise: Vec<&[u8]> = body.chunks(1).collect();
    assert_eq!(split(&bytewise, usize::MAX).0, want);

    // Limited: refused exactly when what is held exceeds the limit.
    let (limited, failed) = split(&parts, limit);
    let mut pushed = 0;
    for (k, part) in parts.iter().enumerate() {
        // A BOM starting the stream is dropped as soon as it is known to be one.
        let bom = if body[..pushed].starts_with(BOM) {
            BOM.len()
        } else {
            0
        };
        let consumed = blocks(&body[..pushed], true).last().map_or(bom, |b| b.end);
        let over = pushed - consumed + part.len() > limit;
        assert_eq!(failed == Some(k), over, "push {k} of {} bytes", part.len());
        if over {
            break;
        }
        pushed += part.len();
    }
    assert_eq!(&want[..limited.len()], &limited[..]);
    assert!(limited.iter().all(|e| e.len() <= limit));
    if failed.is_none() {
        let mut start = if body.starts_with(BOM) { BOM.len() } else { 0 };
        for b in blocks(body, true) {
            assert!(
                b.end - start <= limit,
                "an event of {} bytes passed",
                b.end - start
            );
            start = b.end;
        }
    }

    // Counters: independent of the split; SSE agrees with the splitter.
    let counted = sse_count(&parts);
    assert_eq!(sse_count(&[body]), counted);
    assert_eq!(sse_count(&bytewise), counted);
    let mut extended = body.to_vec();
    extended.push(b'x');
    assert_eq!(counted, reference(&extended).len() as u64);
    assert_eq!(envelope_count(&parts), envelope_reference(body));
    assert_eq!(envelope_count(&bytewise), envelope_reference(body));

    // Re-issued with ids: one event each, read back as they were.
    let mut reissued = Vec::new();
    for (k, e) in events.iter().enumerate() {
        let i = first_index.wrapping_add(k as u64);
        let out = with_id(e, &token, i);
        let id = format!("{token}.{i}");
        let bs = blocks(&out, false);
        assert_eq!(bs.len(), 1, "{out:?}");
        assert_eq!(bs[0].end, out.len());
        let lines = &bs[0].lines;
        let ids: Vec<&&[u8]> = lines.iter().filter(|l| field(l) == b"id").collect();
        assert_eq!(ids.len(), 1);
        assert_eq!(value(ids[0]), id.as_bytes());
        let kept: Vec<u8> = lines
            .iter()
            .filter(|l| field(l) != b"id")
            .flat_map(|l| l.iter().copied().chain([b'\n']))
            .collect();
        assert_eq!(&kept, e);
        assert_eq!(split(&[HEARTBEAT, &out], usize::MAX).0, vec![e.clone()]);
        assert_eq!(sse_count(&[HEARTBEAT, &out]), 1);
        let mut h = HeaderMap::new();
        h.insert(
            "last-event-id",
            HeaderValue::from_str(&id).expect("an id is a header value"),
        );
        let r = ResumeRequest::from_headers(&h, true)
            .expect("our id parses")
            .expect("is a resume");
        assert_eq!((r.token.as_str(), r.after), (token.as_str(), i));
        reissued.extend_from_slice(&out);
    }
    let mut parts = vec![HEARTBEAT];
    parts.extend(chunks(&reissued, seeds));
    assert_eq!(split(&parts, usize::MAX).0, events);
    assert_eq!(sse_count(&parts), events.len() as u64);

    // The edge's own events.
    let text = String::from_utf8_lossy(body);
    let (code, message) = text.split_at(text.char_indices().nth(8).map_or(text.len(), |(i, _)| i));
    let err = error_event(code, message);
    let bs = blocks(&err, true);
    assert_eq!((bs.len(), bs[0].end), (1, err.len()));
    assert_eq!(bs[0].lines.len(), 2);
    assert_eq!(bs[0].lines[0], b"event: error");
    assert_eq!(field(bs[0].lines[1]), b"data");
    let json: serde_json::Value = serde_json::from_slice(value(bs[0].lines[1])).expect("JSON");
    assert_eq!(
        json,
        serde_json::json!({ "code": code, "message": message })
    );
    assert_eq!(split(&[&err], usize::MAX).0.len(), 1);
    assert_eq!(sse_count(&[&err]), 1);
    assert!(split(&[HEARTBEAT], usize::MAX).0.is_empty());
    assert_eq!(sse_count(&[HEARTBEAT]), 0);
});

//! Stream metrics: which exchanges are streams (gRPC, gRPC-Web and Connect streaming
//! calls, server-sent events), how many messages each carried, when its first
//! message left, and how it ended. Messages are counted from the framing the client
//! receives, without copying or buffering: envelope headers for the RPC protocols,
//! blank lines after `data` fields for SSE.

use crate::http::completion::{Outcome, StreamGuard};
use crate::metrics::Metrics;
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntGauge, IntGaugeVec, Opts, Registry};
use std::time::Instant;
use tollgate_filters::rpc::RpcProtocol;

/// The `protocol` label of stream metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamProtocol {
    Grpc,
    GrpcWeb,
    Connect,
    Sse,
}

impl StreamProtocol {
    pub const ALL: [StreamProtocol; 4] = [Self::Grpc, Self::GrpcWeb, Self::Connect, Self::Sse];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::GrpcWeb => "grpc_web",
            Self::Connect => "connect",
            Self::Sse => "sse",
        }
    }

    /// The stream kind of an RPC call; Connect unary is a plain exchange, not a stream.
    pub fn of_rpc(p: RpcProtocol) -> Option<Self> {
        match p {
            RpcProtocol::Grpc => Some(Self::Grpc),
            RpcProtocol::GrpcWeb { .. } => Some(Self::GrpcWeb),
            RpcProtocol::ConnectStream { .. } => Some(Self::Connect),
            RpcProtocol::ConnectUnary { .. } => None,
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// The `outcome` label of stream metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamOutcome {
    /// Ended normally (an RPC with status OK).
    Ok,
    /// An RPC that ended with another status, from the upstream or the proxy.
    Error,
    /// Cut by the proxy: the app's budget ran out.
    Cut,
    /// The client went away first.
    Aborted,
    UpstreamReset,
    IdleTimeout,
}

impl StreamOutcome {
    pub const ALL: [StreamOutcome; 6] = [
        Self::Ok,
        Self::Error,
        Self::Cut,
        Self::Aborted,
        Self::UpstreamReset,
        Self::IdleTimeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Cut => "cut",
            Self::Aborted => "aborted",
            Self::UpstreamReset => "upstream_reset",
            Self::IdleTimeout => "idle_timeout",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// How an RPC stream's final status read, as far as the proxy saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RpcEnd {
    /// No final status seen (yet).
    #[default]
    Unknown,
    Ok,
    Error,
    /// The proxy ended it: the app's budget ran out.
    Cut,
    /// The upstream's stream broke off; the client got `unavailable` or `canceled`.
    UpstreamReset,
}

impl RpcEnd {
    /// From a `grpc-status` value: `0` is OK, anything else an error.
    pub fn of_grpc_status(v: Option<&http::HeaderValue>) -> Self {
        match v.map(http::HeaderValue::as_bytes) {
            None => RpcEnd::Unknown,
            Some(b"0") => RpcEnd::Ok,
            Some(_) => RpcEnd::Error,
        }
    }
}

/// One stream's tally, kept in its [`Completion`](crate::http::completion::Completion)
/// and recorded when the exchange ends.
#[derive(Debug)]
pub struct StreamStats {
    pub protocol: StreamProtocol,
    /// When the first message left for the client.
    pub first_message: Option<Instant>,
    pub messages: u64,
    pub end: RpcEnd,
    /// Counts the client-side frames of pass-through bodies; `None` when the body
    /// source counts its own messages (translated RPC streams, resumable streams).
    pub counter: Option<Counter>,
    /// Holds `tollgate_streams_open` up while the stream runs.
    _open: StreamGuard,
}

impl StreamStats {
    pub fn new(metrics: &Metrics, protocol: StreamProtocol) -> Self {
        StreamStats {
            protocol,
            first_message: None,
            messages: 0,
            end: RpcEnd::Unknown,
            counter: None,
            _open: StreamGuard::new(&metrics.streams.open[protocol.index()]),
        }
    }

    /// Also counts messages in the body's data frames, framed as the protocol frames them.
    pub fn counting(mut self) -> Self {
        self.counter = Some(match self.protocol {
            StreamProtocol::Sse => Counter::Sse(SseCounter::default()),
            _ => Counter::Envelope(EnvelopeCounter::default()),
        });
        self
    }

    /// The same tally with the final status already known.
    pub fn ended(mut self, end: RpcEnd) -> Self {
        self.end = end;
        self
    }

    /// A data frame for the client: counted when this tally counts frames.
    pub fn on_data(&mut self, data: &[u8]) {
        if let Some(c) = &mut self.counter {
            let n = c.feed(data);
            self.add_messages(n);
        }
    }

    /// `n` more messages reached the client (or the stream's buffer).
    pub fn add_messages(&mut self, n: u64) {
        if n > 0 && self.first_message.is_none() {
            self.first_message = Some(Instant::now());
        }
        self.messages += n;
    }

    /// The outcome label for a body that ended with `outcome`.
    pub fn outcome(&self, outcome: Outcome) -> StreamOutcome {
        match (outcome, self.end) {
            (Outcome::Cut, _) | (_, RpcEnd::Cut) => StreamOutcome::Cut,
            (Outcome::Complete, RpcEnd::UpstreamReset) | (Outcome::UpstreamReset, _) => {
                StreamOutcome::UpstreamReset
            }
            (Outcome::Complete, RpcEnd::Error) => StreamOutcome::Error,
            (Outcome::Complete, _) => StreamOutcome::Ok,
            (Outcome::Aborted, _) => StreamOutcome::Aborted,
            (Outcome::IdleTimeout, _) => StreamOutcome::IdleTimeout,
        }
    }
}

/// Counts messages in a byte stream, whatever the frame boundaries.
#[derive(Debug)]
pub enum Counter {
    Envelope(EnvelopeCounter),
    Sse(SseCounter),
}

impl Counter {
    /// Feeds the next bytes; returns how many messages they completed or began.
    pub fn feed(&mut self, data: &[u8]) -> u64 {
        match self {
            Counter::Envelope(c) => c.feed(data),
            Counter::Sse(c) => c.feed(data),
        }
    }
}

/// Counts the messages of an enveloped stream (gRPC, gRPC-Web, Connect: a flags
/// byte, a 4-byte big-endian length, the payload), skipping payloads without reading
/// them. Frames flagged as trailers (gRPC-Web `0x80`) or end of stream (Connect
/// `0x02`) are not messages.
#[derive(Debug, Default)]
pub struct EnvelopeCounter {
    header: [u8; 5],
    /// Header bytes seen of the current envelope.
    filled: usize,
    /// Payload bytes still to skip.
    remaining: u64,
}

/// Envelope flags that mark a frame as not a message.
const NOT_A_MESSAGE: u8 = 0x80 | 0x02;

impl EnvelopeCounter {
    /// Feeds the next bytes; returns how many message headers they completed.
    pub fn feed(&mut self, mut data: &[u8]) -> u64 {
        let mut messages = 0;
        while !data.is_empty() {
            if self.remaining > 0 {
                let skip = usize::try_from(self.remaining)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                data = &data[skip..];
                self.remaining -= skip as u64;
                continue;
            }
            let take = (5 - self.filled).min(data.len());
            self.header[self.filled..self.filled + take].copy_from_slice(&data[..take]);
            self.filled += take;
            data = &data[take..];
            if self.filled == 5 {
                self.filled = 0;
                let [flags, a, b, c, d] = self.header;
                self.remaining = u64::from(u32::from_be_bytes([a, b, c, d]));
                if flags & NOT_A_MESSAGE == 0 {
                    messages += 1;
                }
            }
        }
        messages
    }
}

/// Counts the events of a `text/event-stream` body as a browser dispatches them: a
/// blank line ends an event, which counts when it had a `data` field (comments and
/// `id`- or `retry`-only blocks do not). Lines may end in LF, CR or CRLF; a UTF-8 BOM
/// starting the body is skipped.
#[derive(Debug, Default)]
pub struct SseCounter {
    /// How much of the current line matches `data` then `:` (see [`FIELD_DATA`]);
    /// [`NOT_DATA`] once it cannot.
    field: u8,
    /// Bytes in the current line.
    line_len: usize,
    /// The current event has a `data` field.
    has_data: bool,
    /// The previous byte was a CR, so an LF now ends nothing.
    after_cr: bool,
    /// Bytes of a BOM seen at the body's start; [`PAST_BOM`] once past it.
    bom: u8,
}

/// `field` once the line is known to be a `data` field.
const FIELD_DATA: u8 = 5;
const NOT_DATA: u8 = u8::MAX;
const BOM: &[u8; 3] = b"\xEF\xBB\xBF";
const PAST_BOM: u8 = u8::MAX;

impl SseCounter {
    /// Feeds the next bytes; returns how many events they completed.
    pub fn feed(&mut self, data: &[u8]) -> u64 {
        let mut events = 0;
        for &b in data {
            if self.bom != PAST_BOM {
                if BOM.get(usize::from(self.bom)) == Some(&b) {
                    self.bom += 1;
                    if usize::from(self.bom) == BOM.len() {
                        self.bom = PAST_BOM;
                    }
                    continue;
                }
                // Not a BOM after all: what was read of it begins the first line.
                if self.bom > 0 {
                    self.line_len += usize::from(self.bom);
                    self.field = NOT_DATA;
                }
                self.bom = PAST_BOM;
            }
            if std::mem::take(&mut self.after_cr) && b == b'\n' {
                continue;
            }
            if b == b'\n' || b == b'\r' {
                self.after_cr = b == b'\r';
                if self.line_len == 0 {
                    if std::mem::take(&mut self.has_data) {
                        events += 1;
                    }
                } else if self.field == 4 || self.field == FIELD_DATA {
                    self.has_data = true;
                }
                self.line_len = 0;
                self.field = 0;
                continue;
            }
            self.line_len += 1;
            self.field = match (self.field, b) {
                (f @ 0..=3, b) if b == b"data"[usize::from(f)] => f + 1,
                (4, b':') | (FIELD_DATA, _) => FIELD_DATA,
                _ => NOT_DATA,
            };
        }
        events
    }
}

/// The stream series, every label combination resolved once at start.
pub struct StreamMetrics {
    /// `tollgate_streams_open`, by protocol.
    pub open: [IntGauge; 4],
    first_message: [Histogram; 4],
    /// By protocol, then outcome.
    duration: [[Histogram; 6]; 4],
    messages: [[Histogram; 6]; 4],
}

impl StreamMetrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let open = IntGaugeVec::new(
            Opts::new(
                "tollgate_streams_open",
                "Streams in flight (gRPC, gRPC-Web and Connect streaming calls, server-sent events) by protocol.",
            ),
            &["protocol"],
        )?;
        let first_message = HistogramVec::new(
            HistogramOpts::new(
                "tollgate_stream_first_message_seconds",
                "Time from the request head to the first message sent to the client (to the stream buffer for resumable streams), by protocol.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
            ]),
            &["protocol"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "tollgate_stream_duration_seconds",
                "Time from the request head to the end of the stream, by protocol and outcome.",
            )
            .buckets(vec![
                0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
            ]),
            &["protocol", "outcome"],
        )?;
        let messages = HistogramVec::new(
            HistogramOpts::new(
                "tollgate_stream_messages",
                "Messages per stream (RPC messages, or SSE events with data), by protocol and outcome.",
            )
            .buckets(vec![0.0, 1.0, 10.0, 100.0, 1000.0, 10_000.0, 100_000.0]),
            &["protocol", "outcome"],
        )?;
        registry.register(Box::new(open.clone()))?;
        registry.register(Box::new(first_message.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(messages.clone()))?;
        let per_outcome = |vec: &HistogramVec, p: StreamProtocol| {
            StreamOutcome::ALL.map(|o| vec.with_label_values(&[p.as_str(), o.as_str()]))
        };
        let protocols = StreamProtocol::ALL;
        Ok(StreamMetrics {
            open: protocols.map(|p| open.with_label_values(&[p.as_str()])),
            first_message: protocols.map(|p| first_message.with_label_values(&[p.as_str()])),
            duration: protocols.map(|p| per_outcome(&duration, p)),
            messages: protocols.map(|p| per_outcome(&messages, p)),
        })
    }

    /// Records one finished stream.
    pub fn record(&self, stats: &StreamStats, started: Instant, ended: Instant, outcome: Outcome) {
        let p = stats.protocol.index();
        let o = stats.outcome(outcome).index();
        if let Some(first) = stats.first_message {
            self.first_message[p].observe(first.saturating_duration_since(started).as_secs_f64());
        }
        self.duration[p][o].observe(ended.saturating_duration_since(started).as_secs_f64());
        self.messages[p][o].observe(stats.messages as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![flags];
        v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn envelopes_count_whatever_the_frame_boundaries() {
        let mut wire = Vec::new();
        wire.extend(envelope(0, b"hello"));
        wire.extend(envelope(1, &[7; 300]));
        wire.extend(envelope(0, b""));
        wire.extend(envelope(0x80, b"grpc-status: 0\r\n"));
        for chunk in [1, 2, 3, 5, 7, 64, wire.len()] {
            let mut c = EnvelopeCounter::default();
            let n: u64 = wire.chunks(chunk).map(|p| c.feed(p)).sum();
            assert_eq!(n, 3, "chunks of {chunk}");
            assert_eq!((c.filled, c.remaining), (0, 0));
        }
        let mut c = EnvelopeCounter::default();
        assert_eq!(c.feed(&envelope(0x02, b"{}")), 0, "Connect end of stream");
    }

    #[test]
    fn sse_events_count_once_they_are_dispatched_and_only_with_data() {
        let body = b": keep-alive\n\nid: 1\n\ndata: a\ndata: b\n\nevent: x\r\ndata\r\n\r\nretry: 5\n\ndata:c\r\rdatum: no\n\ndata: unfinished\n";
        for chunk in [1, 2, 3, 10, body.len()] {
            let mut c = SseCounter::default();
            let n: u64 = body.chunks(chunk).map(|p| c.feed(p)).sum();
            assert_eq!(n, 3, "chunks of {chunk}");
            assert!(c.has_data, "the last event is not yet dispatched");
        }
    }

    #[test]
    fn a_bom_starting_an_sse_body_is_skipped() {
        // The first event used to go uncounted: its first line read as "\u{feff}data".
        let body = b"\xEF\xBB\xBFdata: a\n\ndata: b\n\n\xEF\xBB\xBFdata: c\n\n";
        for chunk in [1, 2, 3, 4, body.len()] {
            let mut c = SseCounter::default();
            let n: u64 = body.chunks(chunk).map(|p| c.feed(p)).sum();
            assert_eq!(n, 2, "chunks of {chunk}");
        }
        let mut c = SseCounter::default();
        assert_eq!(
            c.feed(b"\xEF\xBBdata: a\n\n"),
            0,
            "a partial BOM is content"
        );
        let mut c = SseCounter::default();
        assert_eq!(c.feed(b"\xEF\xBB\xBF\ndata: a\n\n"), 1);
    }

    #[test]
    fn outcomes_name_cuts_errors_and_resets() {
        let metrics = Metrics::new().expect("metrics");
        let mut s = StreamStats::new(&metrics, StreamProtocol::Connect);
        assert_eq!(s.outcome(Outcome::Complete), StreamOutcome::Ok);
        s.end = RpcEnd::Error;
        assert_eq!(s.outcome(Outcome::Complete), StreamOutcome::Error);
        assert_eq!(s.outcome(Outcome::Aborted), StreamOutcome::Aborted);
        s.end = RpcEnd::UpstreamReset;
        assert_eq!(s.outcome(Outcome::Complete), StreamOutcome::UpstreamReset);
        s.end = RpcEnd::Cut;
        assert_eq!(s.outcome(Outcome::Complete), StreamOutcome::Cut);
        assert_eq!(
            metrics.streams.open[StreamProtocol::Connect.index()].get(),
            1
        );
        drop(s);
        assert_eq!(
            metrics.streams.open[StreamProtocol::Connect.index()].get(),
            0
        );
    }
}

//! One client connection: optional TLS handshake (bounded by a timeout), protocol
//! choice, and serving requests until it closes, stays idle too long, or the
//! listener drains.
//!
//! One timer per connection bounds the wait for the first request
//! (`header_read_timeout`, from accept or from the end of the TLS handshake; hyper's
//! own head timeout only starts with the first byte, and nothing bounds an HTTP/2
//! preface) and then the time without a request in flight (`idle_timeout`). Either
//! ends in a graceful shutdown (HTTP/2: GOAWAY); a connection still open a grace
//! period later with nothing in flight is dropped.

use super::idle::{Activity, CloseReason, Tracked, Verdict};
use super::io::{ClientIo, Slot};
use super::protocol::HttpBuilders;
use crate::acme::tls_alpn;
use crate::clock::now_ms;
use crate::coalesce::Coalesced;
use crate::http::body::ResponseBody;
use crate::http::handler::{ConnInfo, handle};
use crate::http::misdirected::PresentedCert;
use crate::state::Shared;
use crate::trace::Handshake;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use prometheus::IntCounter;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::rustls::server::Acceptor;
use tokio_rustls::server::TlsStream;
use tokio_rustls::{LazyConfigAcceptor, TlsAcceptor};
use tollgate_routing::ChallengeKind;

/// One request being served: the response, with its body tracked for idleness.
type RequestFuture = Pin<
    Box<dyn Future<Output = Result<hyper::Response<Tracked<ResponseBody>>, Infallible>> + Send>,
>;

/// The longest a connection may take to close after its graceful shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why a TLS handshake failed, as counted in `tollgate_tls_handshakes_total`.
enum HandshakeFailure {
    /// No certificate covers the server name the client asked for (or none was sent
    /// and there is no default).
    NoCertificate,
    Other,
}

/// How a completed handshake goes on.
enum Accepted {
    /// Serve HTTP on it (boxed once here; [`ClientIo`] keeps the box).
    Http(Box<TlsStream<TcpStream>>),
    /// A TLS-ALPN-01 challenge was answered and the connection closed.
    AcmeAnswered,
}

/// A listener's name and the counters its connections share.
pub(super) struct ListenerStats {
    pub name: Arc<str>,
    pub closed_first_request: IntCounter,
    pub closed_idle: IntCounter,
}

impl ListenerStats {
    fn closed(&self, reason: CloseReason) -> &IntCounter {
        match reason {
            CloseReason::FirstRequest => &self.closed_first_request,
            CloseReason::Idle => &self.closed_idle,
        }
    }
}

pub(super) struct Conn {
    pub shared: Arc<Shared>,
    pub builders: Arc<HttpBuilders>,
    pub listener: Arc<ListenerStats>,
    pub peer: SocketAddr,
    pub local_port: u16,
    pub tls: Option<TlsAcceptor>,
    /// Flips to true when the listener drains.
    pub stop: watch::Receiver<bool>,
}

impl Conn {
    pub async fn run(self, stream: TcpStream, slot: Slot) {
        let mut info = ConnInfo::new(self.peer, self.local_port, self.tls.is_some());
        // The handshake's timing, for the span of the connection's first request.
        let accepted = self.shared.tracing.enabled().then(SystemTime::now);
        // HTTP/2's writes are batched (`Coalesced`); a plain port knows it from the preface.
        let (io, builder) = match &self.tls {
            None => (
                Coalesced::sniff(TokioIo::new(ClientIo::plain(stream, slot))),
                &self.builders.auto,
            ),
            Some(acceptor) => {
                let Some(tls) = self.handshake(acceptor, stream).await else {
                    return;
                };
                let session = tls.get_ref().1;
                info.presented = PresentedCert::capture(&self.shared.certs, session.server_name());
                info.handshake = accepted.map(|at| Arc::new(Handshake::of(session, at)));
                let h2 = session.alpn_protocol() == Some(b"h2");
                let io = TokioIo::new(ClientIo::tls(tls, slot));
                if h2 {
                    (Coalesced::new(io), &self.builders.h2)
                } else {
                    (Coalesced::through(io), &self.builders.h1)
                }
            }
        };
        self.serve(io, builder, info).await;
    }

    async fn handshake(
        &self,
        acceptor: &TlsAcceptor,
        stream: TcpStream,
    ) -> Option<Box<TlsStream<TcpStream>>> {
        let handshakes = &self.shared.metrics.tls_handshakes;
        let listener = &*self.listener.name;
        let timeout = Duration::from_millis(self.shared.limits.tls_handshake_timeout_ms);
        let result = match tokio::time::timeout(timeout, self.accept(acceptor, stream)).await {
            Ok(Ok(accepted)) => {
                handshakes.with_label_values(&[listener, "ok"]).inc();
                return match accepted {
                    Accepted::Http(tls) => Some(tls),
                    Accepted::AcmeAnswered => None,
                };
            }
            Ok(Err((failure, e))) => {
                tracing::debug!(peer = %self.peer, error = %e, "TLS handshake failed");
                match failure {
                    HandshakeFailure::NoCertificate => "no_certificate",
                    HandshakeFailure::Other => "error",
                }
            }
            Err(_) => "timeout",
        };
        handshakes.with_label_values(&[listener, result]).inc();
        None
    }

    /// Reads the ClientHello, then completes the handshake with the listener's config.
    ///
    /// rustls reports a server name no certificate covers only as `Error::General`
    /// text, so the resolver's store is asked first, with the name the resolver will
    /// be given: a failed handshake for a name it does not cover is `NoCertificate`.
    ///
    /// A client offering `acme-tls/1` is a TLS-ALPN-01 validation: it gets only the
    /// challenge certificate of its server name, or a refusal ([`tls_alpn`]).
    async fn accept(
        &self,
        acceptor: &TlsAcceptor,
        stream: TcpStream,
    ) -> Result<Accepted, (HandshakeFailure, std::io::Error)> {
        let start = LazyConfigAcceptor::new(Acceptor::default(), stream)
            .await
            .map_err(|e| (HandshakeFailure::Other, e))?;
        let hello = start.client_hello();
        if tls_alpn::offers_acme_tls(&hello) {
            let chosen = tls_alpn::choose(&self.shared.state.load().acme, hello.server_name());
            let Some((config, challenge)) = chosen else {
                return Err((
                    HandshakeFailure::NoCertificate,
                    std::io::Error::other("acme-tls/1 without a challenge"),
                ));
            };
            let failure = if challenge {
                HandshakeFailure::Other
            } else {
                HandshakeFailure::NoCertificate
            };
            tls_alpn::answer(start, config)
                .await
                .map_err(|e| (failure, e))?;
            self.shared.acme_metrics.answered(ChallengeKind::TlsAlpn01);
            return Ok(Accepted::AcmeAnswered);
        }
        let failure = match self.shared.certs.current().resolve(hello.server_name()) {
            Some(_) => HandshakeFailure::Other,
            None => HandshakeFailure::NoCertificate,
        };
        start
            .into_stream(acceptor.config().clone())
            .await
            .map(|tls| Accepted::Http(Box::new(tls)))
            .map_err(|e| (failure, e))
    }

    /// Serves HTTP on `io` until the connection ends, times out or drains.
    async fn serve(
        &self,
        io: Coalesced<TokioIo<ClientIo>>,
        builder: &Builder<TokioExecutor>,
        info: ConnInfo,
    ) {
        let limits = &self.shared.limits;
        let first_request = Duration::from_millis(limits.header_read_timeout_ms);
        let idle = Duration::from_millis(limits.idle_timeout_ms);
        let grace = first_request.min(SHUTDOWN_GRACE);
        let activity = Arc::new(Activity::new(now_ms()));
        let service = {
            let (shared, info, activity) = (self.shared.clone(), Arc::new(info), activity.clone());
            service_fn(move |req| {
                let open = activity.begin();
                let (shared, info) = (shared.clone(), info.clone());
                // Boxed: hyper's HTTP/1.1 connection keeps a slot the size of the
                // service's future for its whole life, idle or not; a request's state
                // (about 6 KiB) is then allocated only while the request runs.
                let fut: RequestFuture = Box::pin(async move {
                    let resp = handle(shared, info, req).await;
                    Ok::<_, Infallible>(resp.map(|body| Tracked::new(body, open)))
                });
                fut
            })
        };
        let mut conn = pin!(builder.serve_connection_with_upgrades(io, service));
        let mut stop = self.stop.clone();
        let mut deadline = Instant::now() + first_request.min(idle);
        let mut closing = false;
        loop {
            tokio::select! {
                ended = conn.as_mut() => {
                    if let Err(e) = ended {
                        tracing::debug!(peer = %self.peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = stop.wait_for(|stop| *stop), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                    deadline = Instant::now() + grace;
                }
                () = tokio::time::sleep_until(deadline) => {
                    let now = Instant::now();
                    match (closing, activity.verdict(first_request, idle, now_ms())) {
                        (true, Verdict::Busy) => deadline = now + grace,
                        (false, Verdict::Busy) => deadline = now + idle,
                        // Shut down a grace period ago and still open with nothing in flight.
                        (true, _) => return,
                        (false, Verdict::Wait(rest)) => deadline = now + rest,
                        (false, Verdict::Close(reason)) => {
                            tracing::debug!(peer = %self.peer, reason = reason.as_str(), "closing connection");
                            self.listener.closed(reason).inc();
                            conn.as_mut().graceful_shutdown();
                            closing = true;
                            deadline = now + grace;
                        }
                    }
                }
            }
        }
    }
}

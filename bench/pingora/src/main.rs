//! Minimal Pingora reverse proxy for bench/run.sh: a peer for tollgate, doing the same
//! work per request as the nginx reference config in run.sh:
//!  - every request goes to one upstream over HTTP/1.1 keep-alive (Pingora's pool);
//!  - Host passed through; X-Forwarded-For/-Proto/-Host set; an X-Request-Id (32 hex
//!    digits, like nginx's $request_id) generated and sent both ways; an
//!    X-Tollgate-App-Id response header added;
//!  - HTTP/1.1 and h2c (prior knowledge) on one plain port.
//!
//! Usage: tollgate-bench-pingora LISTEN_ADDR UPSTREAM_ADDR [THREADS]
//! (or PINGORA_LISTEN / PINGORA_UPSTREAM / PINGORA_THREADS in the environment).

use std::cell::Cell;
use std::net::SocketAddr;

use async_trait::async_trait;
use pingora::apps::HttpServerOptions;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

struct Bench {
    upstream: SocketAddr,
}

/// Per-request state: the request id, sent upstream and back to the client.
struct Ctx {
    request_id: String,
}

thread_local! {
    static RNG: Cell<u64> = Cell::new({
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        (t.as_nanos() as u64) ^ 0x9e37_79b9_7f4a_7c15
    });
}

/// splitmix64: cheap, not cryptographic; nginx's $request_id is not either.
fn next_u64() -> u64 {
    RNG.with(|s| {
        let mut z = s.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        s.set(z);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

fn request_id() -> String {
    format!("{:016x}{:016x}", next_u64(), next_u64())
}

#[async_trait]
impl ProxyHttp for Bench {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx { request_id: String::new() }
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // h2 requests carry the host in :authority; HTTP/1.1 upstreams need Host.
        let host = match req.headers.get("host") {
            Some(h) => h.to_str().unwrap_or("").to_owned(),
            None => req.uri.authority().map(|a| a.as_str().to_owned()).unwrap_or_default(),
        };
        if req.headers.get("host").is_none() && !host.is_empty() {
            req.insert_header("host", host.as_str())?;
        }
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        ctx.request_id = request_id();
        req.insert_header("x-forwarded-for", client)?;
        req.insert_header("x-forwarded-proto", "http")?;
        req.insert_header("x-forwarded-host", host)?;
        req.insert_header("x-request-id", ctx.request_id.as_str())?;
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        resp.insert_header("x-request-id", ctx.request_id.as_str())?;
        resp.insert_header("x-tollgate-app-id", "bench")?;
        Ok(())
    }
}

fn arg(i: usize, env: &str) -> Option<String> {
    std::env::args().nth(i).or_else(|| std::env::var(env).ok())
}

fn main() {
    let listen = arg(1, "PINGORA_LISTEN").expect("usage: tollgate-bench-pingora LISTEN UPSTREAM [THREADS]");
    let upstream: SocketAddr = arg(2, "PINGORA_UPSTREAM")
        .expect("usage: tollgate-bench-pingora LISTEN UPSTREAM [THREADS]")
        .parse()
        .expect("UPSTREAM must be ip:port");
    let threads: usize = arg(3, "PINGORA_THREADS").map(|t| t.parse().expect("THREADS")).unwrap_or(1);

    // A bench process: on SIGTERM exit at once (Pingora's default grace period is 5 min).
    let conf = ServerConf {
        threads,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let mut svc = http_proxy_service(&server.configuration, Bench { upstream });
    if let Some(app) = svc.app_logic_mut() {
        // h2c by prior knowledge next to HTTP/1.1 on the same port, like tollgate.
        let mut options = HttpServerOptions::default();
        options.h2c = true;
        app.server_options = Some(options);
    }
    svc.add_tcp(&listen);
    server.add_service(svc);
    eprintln!("pingora bench proxy: {listen} -> {upstream}, {threads} thread(s)");
    server.run_forever();
}

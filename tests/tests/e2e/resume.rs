//! Resumable streams through real proxies sharing a real Redis, with real clients:
//! `@connectrpc/connect-node` (Connect and gRPC-Web, `tests/connect/resume.mjs`) reads a
//! numbered server stream across cuts of its own connection, a draining proxy and a
//! killed one, resuming each time through the other proxy; an SSE client resumes with
//! `Last-Event-ID`. The received sequence must be exactly 0..N every time, or a prefix
//! of it and a status saying the rest is lost.

use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tollgate_filters::apikey::{KeyKind, generate};
use tollgate_proto::TestServiceImpl;
use tollgate_tests::config::{Config, Files};
use tollgate_tests::connect::{Call, NodeClient, RunningCall, Transport};
use tollgate_tests::grpc::serve_without_server_timer;
use tollgate_tests::proxy::ProxyProcess;
use tollgate_tests::redis;
use tollgate_tests::tls::TestCert;
use tollgate_tests::wait::SOON;

const HOST: &str = "stream.test";
const RESUMED: &str = "tollgate_resume_attempts_total";
/// A resumable client's whole run, cuts and resumes included.
const RUN: Duration = Duration::from_secs(120);

/// A gRPC app at [`HOST`] in front of `upstream`, resumable with `resume` (inline
/// table), extra `[apps.*]` tables in `extra`.
fn app(upstream: SocketAddr, resume: &str, extra: &str) -> String {
    format!(
        "[[apps]]\nid = \"streams\"\nhostnames = [\"{HOST}\"]\nresume = {resume}\n\
         [apps.upstreams.default]\nendpoints = [{{ address = \"{upstream}\" }}]\nprotocol = \"h2c\"\n\
         [apps.rpc]\ndescriptor_set = \"builtin\"\n{extra}"
    )
}

/// `[resume]` (and the budget store) on a shared Redis under `prefix`.
fn shared_redis(server: &redis::Server, prefix: &str) -> String {
    format!(
        "[resume]\nredis_url = \"{url}\"\nkey_prefix = \"{prefix}\"\n\
         [rate_limiting]\nredis_url = \"{url}\"\nredis_timeout_ms = 1000\nbudget_store = \"redis\"\n\
         budget_lease = 1\nkey_prefix = \"{prefix}\"",
        url = server.url()
    )
}

struct Fleet {
    proxies: Vec<ProxyProcess>,
    cfg: String,
    cert: TestCert,
    _svc: TestServiceImpl,
    node: NodeClient,
}

impl Fleet {
    /// `n` proxies with the same config (TLS listener `tls`), one test service.
    async fn start(n: usize, resume: &str, shared: &str, extra: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let up = listener.local_addr().expect("addr");
        let svc = TestServiceImpl::new();
        tokio::spawn(serve_without_server_timer(listener, svc.clone()));
        let cert = TestCert::new(&[HOST]);
        let cfg = Config::new()
            .tls_listener("tls", "")
            .cert("grpc")
            .raw("[limits]\ndrain_timeout_ms = 20000")
            .raw(shared)
            .raw(&app(up, resume, extra))
            .build();
        let node = NodeClient::new("https://unused.test:1", &cert).expect("client");
        let mut fleet = Fleet {
            proxies: Vec::new(),
            cfg,
            cert,
            _svc: svc,
            node,
        };
        for _ in 0..n {
            let p = fleet.spawn();
            fleet.proxies.push(p);
        }
        fleet
    }

    /// Another proxy of the fleet's config.
    fn spawn(&self) -> ProxyProcess {
        let files = Files::new().cert("grpc", &self.cert);
        ProxyProcess::start(&self.cfg, &files.refs()).expect("proxy starts")
    }

    fn urls(&self, order: &[usize]) -> Value {
        order
            .iter()
            .map(|&i| format!("https://{HOST}:{}", self.proxies[i].addr("tls").port()))
            .collect()
    }

    fn logs(&self) -> String {
        self.proxies
            .iter()
            .enumerate()
            .map(|(i, p)| format!("--- proxy {i} ---\n{}\n{}", p.logs(), p.stderr()))
            .collect()
    }
}

fn stream(transport: Transport, count: u32, interval_ms: u32) -> Call {
    Call::new(
        transport,
        "serverStream",
        json!({ "count": count, "intervalMs": interval_ms }),
    )
}

/// What `resume.mjs` printed at the end.
#[derive(Debug)]
struct Done {
    ok: bool,
    seqs: Vec<u64>,
    resumes: u64,
    error: Value,
}

async fn finish(run: RunningCall, fleet: &Fleet) -> Done {
    let lines = run
        .finish(RUN)
        .await
        .unwrap_or_else(|e| panic!("resume.mjs: {e}\n{}", fleet.logs()));
    let done = lines
        .iter()
        .find_map(|l| l.get("done"))
        .unwrap_or_else(|| panic!("no done line: {lines:?}"));
    Done {
        ok: done["ok"].as_bool().unwrap_or(false),
        seqs: done["seqs"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default(),
        resumes: done["resumes"].as_u64().unwrap_or(0),
        error: done["error"].clone(),
    }
}

fn exactly(count: u64) -> Vec<u64> {
    (0..count).collect()
}

#[tokio::test]
async fn connect_and_grpc_web_streams_resume_across_cuts_and_proxies_without_gap_or_duplicate() {
    let redis = redis::shared();
    let prefix = redis::prefix("resume-cuts");
    let resume = "{ buffer_events = 1000, ttl_secs = 300, linger_secs = 60 }";
    let fleet = Fleet::start(2, resume, &shared_redis(&redis, &prefix), "").await;
    let cases = [
        ("connect-proto h2", Transport::ConnectProto, false),
        ("connect-json http/1.1", Transport::ConnectJson, true),
        ("grpc-web h2", Transport::GrpcWeb, false),
    ];
    // Three cuts at random points (the seed is in every failure message).
    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    for (what, transport, http1) in cases {
        let mut cuts: Vec<u64> = Vec::new();
        while cuts.len() < 3 {
            let at = rng.u64(1..59);
            if !cuts.contains(&at) {
                cuts.push(at);
            }
        }
        cuts.sort_unstable();
        let what = format!("{what} (seed {seed}, cuts {cuts:?})");
        let call = stream(transport, 60, 15)
            .with("baseUrls", fleet.urls(&[0, 1]))
            .with("abortAt", json!(cuts));
        let call = if http1 { call.http1() } else { call };
        let run = fleet.node.spawn_script("resume.mjs", &call).expect("node");
        let done = finish(run, &fleet).await;
        assert!(done.ok, "{what}: {done:?}");
        assert_eq!(
            done.seqs,
            exactly(60),
            "{what}: every message once, in order"
        );
        assert_eq!(done.resumes, 3, "{what}");
    }
    // Resumes went both ways: from Redis on the other proxy, from memory on the first.
    let shared = fleet.proxies[1]
        .metric(RESUMED, &["outcome=\"shared\""])
        .await
        .expect("metrics");
    let local = fleet.proxies[0]
        .metric(RESUMED, &["outcome=\"local\""])
        .await
        .expect("metrics");
    assert!(
        shared >= 3.0 && local >= 3.0,
        "shared {shared}, local {local}"
    );
}

#[tokio::test]
async fn a_draining_proxy_hands_its_streams_to_another_without_a_gap() {
    let redis = redis::shared();
    let prefix = redis::prefix("resume-drain");
    let resume = "{ buffer_events = 1000, ttl_secs = 300, linger_secs = 60 }";
    let mut fleet = Fleet::start(2, resume, &shared_redis(&redis, &prefix), "").await;
    for (what, transport) in [
        ("connect-proto", Transport::ConnectProto),
        ("grpc-web", Transport::GrpcWeb),
    ] {
        let call = stream(transport, 80, 20)
            .with("baseUrls", fleet.urls(&[0, 1]))
            .with("pauseAt", json!([10]));
        let mut run = fleet.node.spawn_script("resume.mjs", &call).expect("node");
        run.wait_for("paused", SOON).await.expect("ten messages");
        // A rolling upgrade stops proxy 0 while the stream is at message 10.
        fleet.proxies[0].signal("TERM").expect("SIGTERM");
        run.send_line().await.expect("go on");
        let done = finish(run, &fleet).await;
        assert!(done.ok, "{what}: {done:?}\n{}", fleet.logs());
        assert_eq!(
            done.seqs,
            exactly(80),
            "{what}: every message once, in order"
        );
        assert!(done.resumes >= 1, "{what}: the client was handed over");
        // The drained proxy ran the call to its end before it exited.
        let status = fleet.proxies[0]
            .wait_exit(Duration::from_secs(60))
            .expect("proxy 0 exits after its drain");
        assert!(status.success(), "{what}: {status}");
        assert!(
            fleet.proxies[0].logs().contains("draining"),
            "{what}: the proxy drained"
        );
        // The upgraded proxy 0 comes back for the next case.
        fleet.proxies[0] = fleet.spawn();
    }
}

#[tokio::test]
async fn a_killed_proxy_leaves_what_it_buffered_then_a_clear_lost_status() {
    let redis = redis::shared();
    let prefix = redis::prefix("resume-kill");
    let resume = "{ buffer_events = 1000, ttl_secs = 300, linger_secs = 60 }";
    let fleet = Fleet::start(2, resume, &shared_redis(&redis, &prefix), "").await;
    let mut fleet = fleet;
    let call = stream(Transport::ConnectProto, 400, 20)
        .with("baseUrls", fleet.urls(&[0, 1]))
        .with("pauseAt", json!([10]));
    let mut run = fleet.node.spawn_script("resume.mjs", &call).expect("node");
    run.wait_for("paused", SOON).await.expect("ten messages");
    fleet.proxies[0].signal("KILL").expect("SIGKILL");
    fleet.proxies[0]
        .wait_exit(Duration::from_secs(10))
        .expect("killed");
    run.send_line().await.expect("go on");
    let done = finish(run, &fleet).await;
    assert!(!done.ok, "the stream cannot end well: {done:?}");
    assert_eq!(done.error["code"], "data_loss", "{done:?}");
    let message = done.error["message"].as_str().unwrap_or("");
    assert!(message.contains("stream lost"), "{message}");
    let n = done.seqs.len() as u64;
    assert!((10..400).contains(&n), "{done:?}");
    assert_eq!(
        done.seqs,
        exactly(n),
        "what was buffered, without gap or duplicate"
    );
}

#[tokio::test]
async fn resumes_are_refused_to_other_callers_unknown_tokens_and_lost_messages() {
    let redis = redis::shared();
    let prefix = redis::prefix("resume-refused");
    let (key_a, sha_a) = generate(KeyKind::Secret, false, "streams").expect("key");
    let (key_b, sha_b) = generate(KeyKind::Secret, false, "streams").expect("key");
    let keys = format!(
        "[[api_keys]]\nkey_id = \"a\"\napp = \"streams\"\nkind = \"secret\"\nsha256 = \"{sha_a}\"\n\
         [[api_keys]]\nkey_id = \"b\"\napp = \"streams\"\nkind = \"secret\"\nsha256 = \"{sha_b}\"\n"
    );
    let resume = "{ buffer_events = 5, ttl_secs = 300, linger_secs = 60 }";
    let shared = format!("{}\n{keys}", shared_redis(&redis, &prefix));
    let fleet = Fleet::start(2, resume, &shared, "[apps.auth]\napi_keys = true").await;
    let bearer = |key: &str| json!({ "authorization": format!("Bearer {key}") });

    // A stream of key a, cut after 2 messages; it runs on to its end meanwhile.
    let call = stream(Transport::ConnectProto, 40, 5)
        .with("baseUrls", fleet.urls(&[0]))
        .with("headers", bearer(&key_a))
        .with("abortAt", json!([2]))
        .with("maxResumes", json!(0));
    let mut run = fleet.node.spawn_script("resume.mjs", &call).expect("node");
    let token = run.wait_for("token", SOON).await.expect("a token")["token"]
        .as_str()
        .expect("token string")
        .to_string();
    let done = finish(run, &fleet).await;
    // Messages that came in the same frame as the second are read before the cut lands.
    let n = done.seqs.len() as u64;
    assert!(n >= 2, "{done:?}");
    assert_eq!(done.seqs, exactly(n), "{done:?}");
    let open = "tollgate_resume_streams_open";
    fleet.proxies[0]
        .wait_metric(open, &[], SOON, |v| v == 0.0)
        .await
        .expect("metrics");

    let resume_as = |key: &str, token: &str, after: u64, proxy: usize| {
        stream(Transport::ConnectProto, 40, 5)
            .with("baseUrls", fleet.urls(&[proxy]))
            .with("headers", bearer(key))
            .with("resumeWith", json!({ "token": token, "after": after }))
            .with("maxResumes", json!(0))
    };
    let refused = |what: &str, call: Call, code: &str| {
        let fleet = &fleet;
        let what = what.to_string();
        let code = code.to_string();
        async move {
            let run = fleet.node.spawn_script("resume.mjs", &call).expect("node");
            let done = finish(run, fleet).await;
            assert!(!done.ok, "{what}: {done:?}");
            assert_eq!(done.error["code"], code.as_str(), "{what}: {done:?}");
            assert!(done.seqs.is_empty(), "{what}: nothing replayed: {done:?}");
            done
        }
    };
    refused(
        "another key",
        resume_as(&key_b, &token, 2, 1),
        "permission_denied",
    )
    .await;
    let unknown = "rs1_AAAAAAAAAAAAAAAAAAAAAA";
    refused(
        "unknown token",
        resume_as(&key_a, unknown, 0, 1),
        "not_found",
    )
    .await;
    refused(
        "garbage token",
        resume_as(&key_a, "nope", 0, 0),
        "not_found",
    )
    .await;
    refused(
        "beyond the end",
        resume_as(&key_a, &token, 41, 0),
        "out_of_range",
    )
    .await;
    refused(
        "beyond the end, shared",
        resume_as(&key_a, &token, 41, 1),
        "out_of_range",
    )
    .await;
    // Only the last 5 of 40 are kept: resuming after 2 is a gap, said so, on either proxy.
    for proxy in [0, 1] {
        let done = refused("gap", resume_as(&key_a, &token, 2, proxy), "data_loss").await;
        let message = done.error["message"].as_str().unwrap_or("");
        assert!(message.contains("no longer buffered"), "{message}");
    }
    // From inside the buffer it resumes: the last messages, then the end.
    let call = resume_as(&key_a, &token, 37, 1);
    let run = fleet.node.spawn_script("resume.mjs", &call).expect("node");
    let done = finish(run, &fleet).await;
    assert!(done.ok, "{done:?}");
    assert_eq!(done.seqs, vec![37, 38, 39]);
    for outcome in ["forbidden", "not_found", "out_of_range", "gap"] {
        let label = format!("outcome=\"{outcome}\"");
        let n: f64 = {
            let a = fleet.proxies[0]
                .metric(RESUMED, &[&label])
                .await
                .expect("m");
            let b = fleet.proxies[1]
                .metric(RESUMED, &[&label])
                .await
                .expect("m");
            a + b
        };
        assert!(n >= 1.0, "{outcome}: {n}");
    }
}

#[tokio::test]
async fn a_budget_cut_is_the_stored_end_and_replays_are_not_billed_again() {
    let redis = redis::shared();
    let prefix = redis::prefix("resume-budget");
    let resume = "{ buffer_events = 1000, ttl_secs = 300, linger_secs = 60 }";
    let limits = "[apps.limits.budget]\nperiod = \"day\"\nlimit = 10\nunit = \"messages\"";
    let fleet = Fleet::start(2, resume, &shared_redis(&redis, &prefix), limits).await;
    let call = stream(Transport::GrpcWeb, 30, 10)
        .with("baseUrls", fleet.urls(&[0, 1]))
        .with("abortAt", json!([5]));
    let mut run = fleet.node.spawn_script("resume.mjs", &call).expect("node");
    let token = run.wait_for("token", SOON).await.expect("a token")["token"]
        .as_str()
        .expect("token")
        .to_string();
    let done = finish(run, &fleet).await;
    assert!(!done.ok, "{done:?}");
    assert_eq!(
        done.seqs,
        exactly(10),
        "exactly the paid messages: {done:?}"
    );
    assert_eq!(done.error["code"], "canceled", "{done:?}");
    assert!(
        done.error["message"]
            .as_str()
            .is_some_and(|m| m.contains("BUDGET_EXCEEDED")),
        "{done:?}"
    );
    // Resuming after the cut replays the tail and the same end, and bills nothing:
    // a budget that is spent would refuse a new call before any message.
    let call = stream(Transport::GrpcWeb, 30, 10)
        .with("baseUrls", fleet.urls(&[1]))
        .with("resumeWith", json!({ "token": token, "after": 7 }))
        .with("maxResumes", json!(0));
    let run = fleet.node.spawn_script("resume.mjs", &call).expect("node");
    let again = finish(run, &fleet).await;
    assert_eq!(again.seqs, vec![7, 8, 9], "{again:?}");
    assert_eq!(again.error["code"], "canceled", "{again:?}");
    let exhausted = "tollgate_budget_exhausted_total";
    let mid: f64 = fleet.proxies[0]
        .metric(exhausted, &["when=\"mid_stream\""])
        .await
        .expect("m")
        + fleet.proxies[1]
            .metric(exhausted, &["when=\"mid_stream\""])
            .await
            .expect("m");
    assert_eq!(mid, 1.0, "one cut, however often it is replayed");
}

#[tokio::test]
async fn without_redis_streams_resume_on_the_same_proxy_only() {
    let resume = "{ buffer_events = 1000, ttl_secs = 300, linger_secs = 60 }";
    let fleet = Fleet::start(2, resume, "", "").await;
    let call = stream(Transport::ConnectJson, 40, 10)
        .with("baseUrls", fleet.urls(&[0, 0]))
        .with("abortAt", json!([5, 17]));
    let run = fleet.node.spawn_script("resume.mjs", &call).expect("node");
    let done = finish(run, &fleet).await;
    assert!(done.ok, "{done:?}");
    assert_eq!(done.seqs, exactly(40));
    // One stream in the stream metrics, with every message, however often it resumed.
    let ok = ["protocol=\"connect\"", "outcome=\"ok\""];
    let p0 = &fleet.proxies[0];
    let streams = p0
        .wait_metric("tollgate_stream_messages_count", &ok, SOON, |v| v >= 1.0)
        .await
        .expect("metrics");
    let messages = p0
        .metric("tollgate_stream_messages_sum", &ok)
        .await
        .expect("metrics");
    assert_eq!((streams, messages), (1.0, 40.0));
    // The other proxy has never heard of the stream.
    let call = stream(Transport::ConnectJson, 40, 10)
        .with("baseUrls", fleet.urls(&[0, 1]))
        .with("abortAt", json!([5]))
        .with("maxResumes", json!(1));
    let run = fleet.node.spawn_script("resume.mjs", &call).expect("node");
    let done = finish(run, &fleet).await;
    assert_eq!(done.error["code"], "not_found", "{done:?}");
    assert_eq!(done.seqs, exactly(5));
}

#[tokio::test]
async fn a_redis_that_freezes_mid_stream_costs_the_stream_nothing_and_shared_resumes_say_what_is_lost()
 {
    let redis = redis::Private::start();
    let resume = "{ buffer_events = 1000, ttl_secs = 300, linger_secs = 60 }";
    let shared = format!(
        "[resume]\nredis_url = \"{}\"\nredis_timeout_ms = 200",
        redis.url()
    );
    let fleet = Fleet::start(2, resume, &shared, "").await;
    // Redis stops answering at message 20; the client cuts at 60 and resumes on the
    // same proxy, whose own buffer has it all.
    let call = stream(Transport::ConnectProto, 150, 10)
        .with("baseUrls", fleet.urls(&[0, 0]))
        .with("pauseAt", json!([20]))
        .with("abortAt", json!([60]));
    let mut run = fleet.node.spawn_script("resume.mjs", &call).expect("node");
    let token = run.wait_for("token", SOON).await.expect("a token")["token"]
        .as_str()
        .expect("token")
        .to_string();
    run.wait_for("paused", SOON).await.expect("twenty messages");
    redis.freeze();
    run.send_line().await.expect("go on");
    let done = finish(run, &fleet).await;
    assert!(done.ok, "{done:?}");
    assert_eq!(
        done.seqs,
        exactly(150),
        "Redis down cost the stream nothing"
    );
    let errors = fleet.proxies[0]
        .metric("tollgate_resume_redis_errors_total", &[])
        .await
        .expect("metrics");
    assert!(errors >= 1.0, "the failed writes are counted: {errors}");

    // Back up: the other proxy replays what Redis holds, then says the rest is lost
    // rather than skip it or wait for ever.
    redis.thaw();
    let call = stream(Transport::ConnectProto, 150, 10)
        .with("baseUrls", fleet.urls(&[1]))
        .with("resumeWith", json!({ "token": token, "after": 5 }))
        .with("maxResumes", json!(0));
    let run = fleet.node.spawn_script("resume.mjs", &call).expect("node");
    let shared = finish(run, &fleet).await;
    assert_eq!(shared.error["code"], "data_loss", "{shared:?}");
    let n = shared.seqs.len() as u64;
    assert_eq!(
        shared.seqs,
        (5..5 + n).collect::<Vec<_>>(),
        "no gap: {shared:?}"
    );
    assert!(
        5 + n < 150,
        "the copy in Redis stopped where Redis did: {shared:?}"
    );
}

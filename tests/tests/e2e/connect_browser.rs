//! A real browser through the proxy: Debian's headless chromium loads a page served over
//! TLS from `https://web.test:<port>` whose script (`tests/connect/page/app.mjs`, using
//! `@connectrpc/connect-web`) calls `TestService` through the proxy at
//! `https://grpc.test:<port>`, another origin, so every call goes through the proxy's CORS
//! answers. The test reads the streamed results back from the page; the page also cuts
//! its own resumable streams and resumes them by token. The same page served
//! from an origin the proxy does not allow gets nothing through.

use base64::Engine as _;
use prost::{Message, Name};
use serde_json::Value;
use tokio::net::TcpListener;
use tollgate_proto::test::v1::ErrorDetail;
use tollgate_proto::testsvc::{ERROR_DETAIL_DOMAIN, ERROR_DETAIL_REASON};
use tollgate_proto::{TestServiceImpl, serve};
use tollgate_tests::config::{Config, Files};
use tollgate_tests::connect::{PageRun, PageServer, page_files, run_browser};
use tollgate_tests::proxy::ProxyProcess;
use tollgate_tests::tls::TestCert;

const HOST: &str = "grpc.test";
const WEB: &str = "web.test";
/// Messages of each server stream the page reads.
const COUNT: u64 = 50;

/// The page's result `name`, with the whole run in the panic message when it is missing.
fn result<'a>(run: &'a PageRun, name: &str) -> &'a Value {
    let r = &run.results[name];
    assert!(
        !r.is_null(),
        "{name} missing from the page's results: {}",
        run.raw
    );
    r
}

fn assert_ok(run: &PageRun, name: &str) -> Vec<Value> {
    let r = result(run, name);
    assert_eq!(r["ok"], true, "{name}: {r}\n{}", run.raw);
    r["messages"].as_array().cloned().unwrap_or_default()
}

fn assert_stream(run: &PageRun, name: &str) {
    let msgs = assert_ok(run, name);
    assert_eq!(msgs.len() as u64, COUNT, "{name}: every message arrived");
    for (i, m) in msgs.iter().enumerate() {
        assert_eq!(m["seq"], i as u64, "{name}: order");
        assert_eq!(m["payload"]["bytes"], 16, "{name}: payload");
    }
}

fn assert_rich_error(run: &PageRun, name: &str) {
    let r = result(run, name);
    let err = &r["error"];
    assert_eq!(err["code"], "failed_precondition", "{name}: {r}");
    assert_eq!(err["message"], "quota épuisée: 100% used ✓", "{name}: {r}");
    let details = err["details"].as_array().expect("details");
    assert_eq!(details.len(), 1, "{name}: {r}");
    assert_eq!(details[0]["type"], ErrorDetail::full_name(), "{name}");
    let value = base64::engine::general_purpose::STANDARD
        .decode(details[0]["value"].as_str().unwrap_or_default())
        .expect("base64 detail");
    let detail = ErrorDetail::decode(value.as_slice()).expect("ErrorDetail");
    assert_eq!(detail.reason, ERROR_DETAIL_REASON, "{name}");
    assert_eq!(detail.domain, ERROR_DETAIL_DOMAIN, "{name}");
}

#[tokio::test]
async fn chromium_calls_through_the_proxy_cross_origin() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let up = listener.local_addr().expect("addr");
    tokio::spawn(serve(listener, TestServiceImpl::new()));

    let web_cert = TestCert::new(&[WEB]);
    let files = page_files().await.expect("page built");
    let allowed = PageServer::start(&web_cert, files.clone())
        .await
        .expect("page server");
    let other = PageServer::start(&web_cert, files)
        .await
        .expect("second page server");
    let origin = format!("https://{WEB}:{}", allowed.addr.port());

    let cert = TestCert::new(&[HOST]);
    let cfg = Config::new()
        .tls_listener("tls", "")
        .cert("grpc")
        .raw(&format!(
            "[[apps]]\nid = \"grpc\"\nhostnames = [\"{HOST}\"]\n\
             resume = {{ buffer_events = 1000, linger_secs = 60 }}\n\
             [apps.upstreams.default]\nendpoints = [{{ address = \"{up}\" }}]\nprotocol = \"h2c\"\n\
             [apps.rpc]\ndescriptor_set = \"builtin\"\n\
             [apps.cors]\nallowed_origins = [\"{origin}\"]"
        ))
        .build();
    let proxy =
        ProxyProcess::start(&cfg, &Files::new().cert("grpc", &cert).refs()).expect("proxy starts");
    let proxy_origin = format!("https://{HOST}:{}", proxy.addr("tls").port());

    let page = |server: &PageServer| {
        format!(
            "https://{WEB}:{}/index.html?proxy={proxy_origin}&count={COUNT}&resume=1",
            server.addr.port()
        )
    };
    let runs = run_browser(&[page(&allowed), page(&other)], &[&web_cert, &cert])
        .await
        .unwrap_or_else(|e| panic!("the browser did not run: {e}\n{}", proxy.stderr()));
    assert_eq!(runs.len(), 2);
    let (ok, denied) = (&runs[0], &runs[1]);

    // The allowed origin's page: its script loaded, ran, and read every answer.
    assert!(
        allowed.requests().iter().any(|r| r == "GET /app.js"),
        "{:?}",
        allowed.requests()
    );
    assert_eq!(ok.results["origin"], origin.as_str(), "{}", ok.raw);
    let echo = assert_ok(ok, "echoConnectJson");
    assert_eq!(echo[0]["message"], "hello from the browser");
    // The upstream saw gRPC, sent on behalf of the page's origin.
    let seen = &echo[0]["metadata"];
    assert!(
        seen["content-type"]
            .as_str()
            .is_some_and(|c| c.starts_with("application/grpc")),
        "{seen}"
    );
    assert_eq!(seen["origin"], origin.as_str(), "{seen}");
    assert_eq!(
        assert_ok(ok, "echoConnectGet")[0]["message"],
        "hello by GET"
    );
    assert_eq!(
        assert_ok(ok, "echoGrpcWeb")[0]["message"],
        "hello over gRPC-Web"
    );
    assert_stream(ok, "streamConnectJson");
    assert_stream(ok, "streamConnectProto");
    assert_stream(ok, "streamGrpcWeb");
    assert_rich_error(ok, "failConnectJson");
    assert_rich_error(ok, "failGrpcWeb");
    // Cut twice by the page and resumed with the token read through CORS: every
    // message once, in order.
    for name in ["resumeConnectProto", "resumeGrpcWeb"] {
        let r = result(ok, name);
        assert_eq!(r["ok"], true, "{name}: {r}");
        assert_eq!(r["resumes"], 2, "{name}: {r}");
        assert!(
            r["token"].as_str().is_some_and(|t| t.starts_with("rs1_")),
            "{r}"
        );
        let seqs: Vec<u64> = r["seqs"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        assert_eq!(seqs, (0..COUNT).collect::<Vec<_>>(), "{name}");
    }

    // The page from an origin the proxy does not allow: the browser blocks every answer.
    assert!(
        other.requests().iter().any(|r| r == "GET /app.js"),
        "the page ran: {:?}",
        other.requests()
    );
    for name in ["echoConnectJson", "streamConnectJson", "streamGrpcWeb"] {
        let r = result(denied, name);
        assert!(r.get("ok").is_none(), "{name} blocked by CORS: {r}");
        assert!(
            r["messages"].as_array().is_some_and(Vec::is_empty),
            "{name}: {r}"
        );
    }
    drop(proxy);
}

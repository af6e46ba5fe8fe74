//! The compiled L4 routes: TLS passthrough by SNI per listen port, and raw TCP by port.

use crate::host::wildcard_parent;
use crate::matcher::RouteTable;
use crate::model::{AppSpec, ProtocolHint, RouteSpec};
use std::collections::HashMap;
use std::sync::Arc;

/// An L4 route ready to serve.
#[derive(Debug)]
pub struct L4Route {
    /// Bounded label for metrics and logs.
    pub id: Arc<str>,
    pub app: Arc<AppSpec>,
    /// Cluster of the app to connect to.
    pub upstream: String,
    pub backend_port: Option<u16>,
    pub proxy_protocol: bool,
    pub max_connections: Option<u32>,
}

#[derive(Debug, Default)]
struct PassthroughPort {
    exact: HashMap<Box<str>, Arc<L4Route>>,
    wildcard: HashMap<Box<str>, Arc<L4Route>>,
    count: usize,
    only: Option<Arc<L4Route>>,
}

/// L4 routes by listen port.
#[derive(Debug, Default)]
pub struct L4Table {
    passthrough: HashMap<u16, PassthroughPort>,
    raw: HashMap<u16, Arc<L4Route>>,
}

impl L4Table {
    /// Compiles the L4 routes of a spec that [`crate::validate`] accepted.
    pub(crate) fn compile(table: &RouteTable) -> Self {
        let mut t = L4Table::default();
        for (app, r) in table.configured_routes().filter(|(_, r)| r.is_l4()) {
            let Some(port) = r.listen_port else {
                continue;
            };
            let route = Arc::new(compiled(r, port, app));
            match r.protocol_hint {
                ProtocolHint::TcpRaw => {
                    t.raw.insert(port, route);
                }
                ProtocolHint::TlsPassthrough => {
                    let p = t.passthrough.entry(port).or_default();
                    p.count += 1;
                    p.only = (p.count == 1).then(|| route.clone());
                    match r.hostname.strip_prefix("*.") {
                        Some(parent) => p.wildcard.insert(parent.into(), route),
                        None => p.exact.insert(r.hostname.as_str().into(), route),
                    };
                }
                ProtocolHint::HttpTerminate => {}
            }
        }
        t
    }

    /// The passthrough route for a ClientHello on `port`.
    ///
    /// Without SNI, a port with exactly one route uses it; otherwise there is no route.
    pub fn passthrough(&self, port: u16, sni: Option<&str>) -> Option<&Arc<L4Route>> {
        let p = self.passthrough.get(&port)?;
        match sni {
            Some(host) => p
                .exact
                .get(host)
                .or_else(|| wildcard_parent(host).and_then(|w| p.wildcard.get(w))),
            None => p.only.as_ref(),
        }
    }

    /// The raw TCP route of `port`.
    pub fn raw(&self, port: u16) -> Option<&Arc<L4Route>> {
        self.raw.get(&port)
    }

    pub fn is_empty(&self) -> bool {
        self.passthrough.is_empty() && self.raw.is_empty()
    }
}

fn compiled(r: &RouteSpec, port: u16, app: &Arc<AppSpec>) -> L4Route {
    let kind = match r.protocol_hint {
        ProtocolHint::TcpRaw => "tcp",
        _ => "tls",
    };
    L4Route {
        id: r
            .id
            .clone()
            .unwrap_or_else(|| format!("{kind}:{}:{port}", r.hostname))
            .into(),
        app: app.clone(),
        upstream: r
            .upstream
            .clone()
            .unwrap_or_else(|| app.default_upstream.clone()),
        backend_port: r.backend_port,
        proxy_protocol: r.proxy_protocol,
        max_connections: r.max_connections,
    }
}

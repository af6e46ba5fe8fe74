//! Per-app and per-route settings for gRPC services reached by browsers: which
//! protocols are translated to gRPC, the schema used for Connect JSON, and CORS.

use serde::{Deserialize, Serialize};

/// Marks an app or route as a gRPC service: gRPC passes through, gRPC-Web and the
/// Connect protocol are translated to gRPC for the upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpcSpec {
    /// Schema for Connect JSON: `builtin` (the proxy's compiled test and control
    /// protos) or the path of a binary `FileDescriptorSet`. Without one, only the
    /// protobuf codecs are offered and JSON is refused with a clear error.
    #[serde(default)]
    pub descriptor_set: Option<String>,
    /// Largest single message accepted from either side, decompressed.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: u64,
    /// Refuse Connect requests that lack `connect-protocol-version: 1`.
    #[serde(default)]
    pub require_connect_protocol_version: bool,
    /// Offer gRPC-Web (binary and text).
    #[serde(default = "yes")]
    pub grpc_web: bool,
    /// Offer the Connect protocol (unary, GET and streaming).
    #[serde(default = "yes")]
    pub connect: bool,
}

/// The default message size limit: 4 MiB, as in gRPC.
pub const DEFAULT_MAX_MESSAGE_BYTES: u64 = 4 << 20;

fn default_max_message_bytes() -> u64 {
    DEFAULT_MAX_MESSAGE_BYTES
}

fn yes() -> bool {
    true
}

/// Cross-origin access for browser clients, answered at the edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsSpec {
    /// Exact origins (`https://app.example:8443`), or `*` for any.
    pub allowed_origins: Vec<String>,
    /// Send `Access-Control-Allow-Credentials: true` (not with `*`).
    #[serde(default)]
    pub allow_credentials: bool,
    /// How long a browser may cache a preflight answer.
    #[serde(default = "default_max_age")]
    pub max_age_secs: u32,
    /// Request headers allowed besides the gRPC-Web, Connect and auth ones.
    #[serde(default)]
    pub allowed_headers: Vec<String>,
    /// Response headers exposed besides the gRPC-Web and Connect ones.
    #[serde(default)]
    pub expose_headers: Vec<String>,
}

fn default_max_age() -> u32 {
    7200
}

impl CorsSpec {
    /// Whether `origin` may call.
    pub fn allows(&self, origin: &[u8]) -> bool {
        self.allowed_origins
            .iter()
            .any(|o| o == "*" || o.as_bytes().eq_ignore_ascii_case(origin))
    }

    /// Problems with this section, each with its place under `at`.
    pub fn problems(&self, at: &str) -> Vec<(String, &'static str)> {
        let mut out = Vec::new();
        if self.allowed_origins.is_empty() {
            out.push((format!("{at}.allowed_origins"), "list at least one origin"));
        }
        for o in &self.allowed_origins {
            let ok = o == "*"
                || ((o.starts_with("https://") || o.starts_with("http://"))
                    && !o.ends_with('/')
                    && o.bytes().all(|b| b.is_ascii_graphic()));
            if !ok {
                out.push((
                    format!("{at}.allowed_origins"),
                    "an origin is `*` or `scheme://host[:port]` with no path",
                ));
            }
        }
        if self.allow_credentials && self.allowed_origins.iter().any(|o| o == "*") {
            out.push((
                format!("{at}.allow_credentials"),
                "credentials cannot be allowed for any origin (`*`)",
            ));
        }
        for h in self.allowed_headers.iter().chain(&self.expose_headers) {
            let token = !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !token {
                out.push((at.to_string(), "a header name is not valid"));
            }
        }
        out
    }
}

impl RpcSpec {
    /// Problems with this section, each with its place under `at`.
    pub fn problems(&self, at: &str) -> Vec<(String, &'static str)> {
        let mut out = Vec::new();
        if self.max_message_bytes == 0 || self.max_message_bytes > 1 << 30 {
            out.push((
                format!("{at}.max_message_bytes"),
                "must be between 1 byte and 1 GiB",
            ));
        }
        if self.descriptor_set.as_deref() == Some("") {
            out.push((
                format!("{at}.descriptor_set"),
                "`builtin` or a file path; omit it for proto only",
            ));
        }
        out
    }
}

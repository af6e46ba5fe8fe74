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
    /// Methods a preflight may ask for (case-sensitive tokens); GET and POST, what
    /// gRPC-Web and Connect use, by default.
    #[serde(
        default = "default_allow_methods",
        skip_serializing_if = "is_default_allow_methods"
    )]
    pub allow_methods: Vec<String>,
}

fn default_max_age() -> u32 {
    7200
}

/// The methods preflights allow unless `allow_methods` says otherwise.
pub const DEFAULT_ALLOW_METHODS: [&str; 2] = ["GET", "POST"];

fn default_allow_methods() -> Vec<String> {
    DEFAULT_ALLOW_METHODS.map(String::from).to_vec()
}

fn is_default_allow_methods(methods: &[String]) -> bool {
    methods == DEFAULT_ALLOW_METHODS
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
            if !is_token(h) {
                out.push((at.to_string(), "a header name is not valid"));
            }
        }
        if self.allow_methods.is_empty() {
            out.push((format!("{at}.allow_methods"), "list at least one method"));
        }
        for (i, m) in self.allow_methods.iter().enumerate() {
            if !is_token(m) {
                out.push((
                    format!("{at}.allow_methods"),
                    "a method is a token such as `PUT` (letters, digits, !#$%&'*+-.^_`|~)",
                ));
            } else if self.allow_methods[..i].contains(m) {
                out.push((format!("{at}.allow_methods"), "a method is listed twice"));
            }
        }
        out
    }
}

/// An RFC 9110 token: what header names and methods are made of.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(methods: Option<&str>) -> CorsSpec {
        let line = methods.map_or(String::new(), |m| format!("allow_methods = {m}"));
        toml::from_str(&format!("allowed_origins = [\"https://web.test\"]\n{line}")).unwrap()
    }

    #[test]
    fn allow_methods_default_to_get_and_post_and_are_tokens() {
        let default = cors(None);
        assert_eq!(default.allow_methods, ["GET", "POST"]);
        assert!(default.problems("cors").is_empty());
        // The default is left out when written, so existing configs read back unchanged.
        let json = serde_json::to_value(&default).unwrap();
        assert!(json.get("allow_methods").is_none(), "{json}");

        let custom = cors(Some("[\"GET\", \"PUT\", \"PATCH\"]"));
        assert!(custom.problems("cors").is_empty());
        let json = serde_json::to_value(&custom).unwrap();
        assert_eq!(
            json["allow_methods"],
            serde_json::json!(["GET", "PUT", "PATCH"])
        );

        for (bad, why) in [
            ("[]", "list at least one method"),
            ("[\"GET POST\"]", "a method is a token"),
            ("[\"\"]", "a method is a token"),
            ("[\"PUT\", \"PUT\"]", "listed twice"),
        ] {
            let problems = cors(Some(bad)).problems("cors");
            assert!(
                problems
                    .iter()
                    .any(|(at, r)| at == "cors.allow_methods" && r.contains(why)),
                "{bad}: {problems:?}"
            );
        }
    }
}

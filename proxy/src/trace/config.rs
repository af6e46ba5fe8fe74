//! `[tracing]`: where spans go, which requests record them, and how they are batched.
//! The file's values are checked as it is parsed, so a bad one refuses the whole file.

use serde::Deserialize;
use std::time::Duration;

/// `[tracing]` of the config file; without it no span is recorded or exported (the
/// W3C headers are still checked and forwarded).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// The OTLP/gRPC collector, `http://host:4317`.
    pub otlp_endpoint: OtlpEndpoint,
    /// `service.name` of the exported spans.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Share of new traces recorded, 0.0 to 1.0 (default 1.0).
    #[serde(default)]
    pub sample_ratio: SampleRatio,
    /// Record when an incoming `traceparent` says its caller did, and not otherwise
    /// (default true). False: the ratio decides for every request.
    #[serde(default = "yes")]
    pub parent_based: bool,
    /// How often finished spans are sent.
    #[serde(default = "default_export_interval")]
    pub export_interval_ms: u64,
    /// Bound on one export call.
    #[serde(default = "default_export_timeout")]
    pub export_timeout_ms: u64,
    /// Finished spans waiting to be sent; more are dropped (and counted by the SDK).
    #[serde(default = "default_max_queue_size")]
    pub max_queue_size: usize,
    /// Spans per export call.
    #[serde(default = "default_max_export_batch_size")]
    pub max_export_batch_size: usize,
}

impl TracingConfig {
    pub fn export_interval(&self) -> Duration {
        Duration::from_millis(self.export_interval_ms)
    }

    pub fn export_timeout(&self) -> Duration {
        Duration::from_millis(self.export_timeout_ms)
    }
}

/// An `http://` URI with a host. TLS to the collector is not built in: the usual
/// deployment sends to a collector agent on the node or in the pod.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct OtlpEndpoint(String);

impl OtlpEndpoint {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for OtlpEndpoint {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let uri: http::Uri = text
            .parse()
            .map_err(|e| format!("otlp_endpoint `{text}`: {e}"))?;
        match (uri.scheme_str(), uri.host()) {
            (Some("http"), Some(_)) => Ok(OtlpEndpoint(text)),
            (Some("https"), _) => Err(format!(
                "otlp_endpoint `{text}`: https is not supported; send to a collector agent over http://"
            )),
            _ => Err(format!(
                "otlp_endpoint `{text}` must be http://host:port (OTLP/gRPC)"
            )),
        }
    }
}

/// A probability, 0.0 to 1.0.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "f64")]
pub struct SampleRatio(f64);

impl SampleRatio {
    pub fn get(self) -> f64 {
        self.0
    }
}

impl Default for SampleRatio {
    fn default() -> Self {
        SampleRatio(1.0)
    }
}

impl TryFrom<f64> for SampleRatio {
    type Error = String;

    fn try_from(ratio: f64) -> Result<Self, String> {
        if (0.0..=1.0).contains(&ratio) {
            Ok(SampleRatio(ratio))
        } else {
            Err(format!(
                "sample_ratio must be within 0.0 and 1.0, not {ratio}"
            ))
        }
    }
}

fn yes() -> bool {
    true
}
fn default_service_name() -> String {
    "tollgate-proxy".into()
}
fn default_export_interval() -> u64 {
    5_000
}
fn default_export_timeout() -> u64 {
    10_000
}
fn default_max_queue_size() -> usize {
    2_048
}
fn default_max_export_batch_size() -> usize {
    512
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<TracingConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_refusals() {
        let c = parse("otlp_endpoint = \"http://collector:4317\"").expect("valid");
        assert_eq!(c.otlp_endpoint.as_str(), "http://collector:4317");
        assert_eq!(c.service_name, "tollgate-proxy");
        assert_eq!(c.sample_ratio.get(), 1.0);
        assert!(c.parent_based);
        assert_eq!(c.export_interval(), Duration::from_secs(5));

        let ratio = parse("otlp_endpoint = \"http://c:4317\"\nsample_ratio = 0.25").expect("valid");
        assert_eq!(ratio.sample_ratio.get(), 0.25);

        for (text, says) in [
            (
                "otlp_endpoint = \"http://c:4317\"\nsample_ratio = 1.5",
                "within 0.0 and 1.0",
            ),
            (
                "otlp_endpoint = \"https://c:4317\"",
                "https is not supported",
            ),
            ("otlp_endpoint = \"c:4317\"", "must be http://host:port"),
            ("otlp_endpoint = \"http://\"", "otlp_endpoint"),
            ("sample_ratio = 0.5", "otlp_endpoint"),
            (
                "otlp_endpoint = \"http://c:4317\"\nratio = 1",
                "unknown field",
            ),
        ] {
            let e = parse(text).expect_err(text);
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}

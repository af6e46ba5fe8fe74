//! Resumable streams: a route or app opting in to edge-buffered server streams that a
//! client may resume, after a dropped connection or a proxy restart, from the last
//! message it saw. The proxy's `resume` module does the work; this is the setting.

use serde::{Deserialize, Serialize};

/// `resume = { buffer_events = 1000, ttl_secs = 300, linger_secs = 60 }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResumeSpec {
    /// Messages kept for replay (the newest); older ones fall out and a resume that
    /// needs them is refused as a gap, never skipped.
    #[serde(default = "default_buffer_events")]
    pub buffer_events: u32,
    /// Bytes kept for replay at most, whatever the message count.
    #[serde(default = "default_buffer_bytes")]
    pub buffer_bytes: u64,
    /// How long a stream's buffer outlives its last write (the token's lifetime).
    #[serde(default = "default_ttl_secs")]
    pub ttl_secs: u64,
    /// How long the upstream call runs on after the client goes away.
    #[serde(default = "default_linger_secs")]
    pub linger_secs: u64,
    /// SSE: a comment line after this long without an event, for middleboxes.
    #[serde(default = "default_heartbeat_secs")]
    pub heartbeat_secs: u64,
}

impl Default for ResumeSpec {
    fn default() -> Self {
        ResumeSpec {
            buffer_events: default_buffer_events(),
            buffer_bytes: default_buffer_bytes(),
            ttl_secs: default_ttl_secs(),
            linger_secs: default_linger_secs(),
            heartbeat_secs: default_heartbeat_secs(),
        }
    }
}

impl ResumeSpec {
    /// What is wrong with the setting, if anything.
    pub fn problem(&self) -> Option<&'static str> {
        if !(1..=100_000).contains(&self.buffer_events) {
            return Some("resume.buffer_events must be 1..=100000");
        }
        if !(1024..=1 << 30).contains(&self.buffer_bytes) {
            return Some("resume.buffer_bytes must be 1 KiB..=1 GiB");
        }
        if !(1..=7 * 86_400).contains(&self.ttl_secs) {
            return Some("resume.ttl_secs must be 1..=604800 (7 days)");
        }
        if self.linger_secs > self.ttl_secs {
            return Some("resume.linger_secs cannot exceed resume.ttl_secs");
        }
        if !(1..=3600).contains(&self.heartbeat_secs) {
            return Some("resume.heartbeat_secs must be 1..=3600");
        }
        None
    }
}

fn default_buffer_events() -> u32 {
    1000
}
fn default_buffer_bytes() -> u64 {
    8 << 20
}
fn default_ttl_secs() -> u64 {
    300
}
fn default_linger_secs() -> u64 {
    60
}
fn default_heartbeat_secs() -> u64 {
    15
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        assert_eq!(ResumeSpec::default().problem(), None);
        let spec: ResumeSpec = toml::from_str("buffer_events = 10\nttl_secs = 86400").unwrap();
        assert_eq!(spec.buffer_events, 10);
        assert_eq!(spec.linger_secs, 60);
        for bad in [
            "buffer_events = 0",
            "ttl_secs = 0",
            "ttl_secs = 30\nlinger_secs = 60",
            "heartbeat_secs = 0",
            "buffer_bytes = 10",
        ] {
            let spec: ResumeSpec = toml::from_str(bad).unwrap();
            assert!(spec.problem().is_some(), "{bad}");
        }
        assert!(toml::from_str::<ResumeSpec>("buffer = 1").is_err());
    }
}

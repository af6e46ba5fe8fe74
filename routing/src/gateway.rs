//! Per-app and per-route gateway settings answered or applied at the edge: the
//! plaintext → HTTPS redirect, a route's host and path redirect, HSTS, header rules
//! and response security headers.
//!
//! Plain data like the rest of the model: what each setting means is compiled by the
//! proxy's filters (`tollgate_filters::{redirect, secure, headers}`); what makes it
//! valid is checked by [`crate::validate`]. A route's setting replaces its app's whole.

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

/// A setting written `true` (its defaults), `false` (off, also over the app's) or a
/// table of its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Switch<T> {
    Off,
    On(T),
}

impl<T> Switch<T> {
    /// The settings when on.
    pub fn on(&self) -> Option<&T> {
        match self {
            Switch::Off => None,
            Switch::On(t) => Some(t),
        }
    }
}

impl<T: Serialize> Serialize for Switch<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Switch::Off => s.serialize_bool(false),
            Switch::On(t) => t.serialize(s),
        }
    }
}

impl<'de, T: Deserialize<'de> + Default> Deserialize<'de> for Switch<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SwitchVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de> + Default> Visitor<'de> for SwitchVisitor<T> {
            type Value = Switch<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true, false or a table of settings")
            }
            fn visit_bool<E: de::Error>(self, on: bool) -> Result<Self::Value, E> {
                Ok(if on {
                    Switch::On(T::default())
                } else {
                    Switch::Off
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Switch::On)
            }
        }
        d.deserialize_any(SwitchVisitor(PhantomData))
    }
}

/// Redirect status codes a config may choose.
pub const REDIRECT_STATUSES: [u16; 4] = [301, 302, 307, 308];

/// Plaintext requests are answered with a redirect to the same URL over HTTPS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpsRedirectSpec {
    /// 308 (the default) keeps the method and body; 301 for clients that need it.
    #[serde(default = "permanent")]
    pub status: u16,
    /// The HTTPS port, when not 443.
    #[serde(default)]
    pub https_port: Option<u16>,
}

impl Default for HttpsRedirectSpec {
    fn default() -> Self {
        HttpsRedirectSpec {
            status: permanent(),
            https_port: None,
        }
    }
}

/// A route answered with a redirect to another host, another path prefix, or both
/// (`www` → apex, `/old` → `/new`). The path past the route's prefix is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedirectSpec {
    /// `host[:port]` to send clients to, over the scheme they came on; the request's
    /// host when absent (the Location is then a path).
    #[serde(default)]
    pub host: Option<String>,
    /// Replaces the route's `path_prefix`; the path is unchanged when absent.
    #[serde(default)]
    pub path_prefix: Option<String>,
    #[serde(default = "permanent")]
    pub status: u16,
    /// Carry the request's query over.
    #[serde(default = "yes")]
    pub keep_query: bool,
}

/// One year: the least `max-age` the HSTS preload list accepts.
pub const HSTS_PRELOAD_MIN_AGE: u64 = 31_536_000;

/// `Strict-Transport-Security` on answers to TLS requests (never over plaintext).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HstsSpec {
    #[serde(default = "one_year")]
    pub max_age_seconds: u64,
    #[serde(default)]
    pub include_subdomains: bool,
    /// Asks for the browsers' preload list: needs `include_subdomains` and a year.
    #[serde(default)]
    pub preload: bool,
}

impl Default for HstsSpec {
    fn default() -> Self {
        HstsSpec {
            max_age_seconds: one_year(),
            include_subdomains: false,
            preload: false,
        }
    }
}

/// Header edits for each direction; a route's `headers` replaces its app's whole.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderRulesSpec {
    /// Applied to the request sent upstream, after the proxy's own headers.
    #[serde(default)]
    pub request: HeaderOpsSpec,
    /// Applied to every answer, the upstream's and the proxy's own.
    #[serde(default)]
    pub response: HeaderOpsSpec,
}

/// Edits of one head, applied in this order: remove, set, add.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderOpsSpec {
    /// Replaces every value of the header.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Appends a value, keeping any already there.
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

impl HeaderOpsSpec {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// `X-Frame-Options`, or `off` to send none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum FrameOptions {
    #[default]
    #[serde(rename = "DENY", alias = "deny")]
    Deny,
    #[serde(rename = "SAMEORIGIN", alias = "sameorigin")]
    SameOrigin,
    #[serde(rename = "off")]
    Off,
}

/// The `referrer_policy` that sends no `Referrer-Policy`.
pub const OFF: &str = "off";

/// Response headers browsers read as security policy, set where the upstream set none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityHeadersSpec {
    /// `X-Content-Type-Options: nosniff`.
    #[serde(default = "yes")]
    pub content_type_options: bool,
    #[serde(default)]
    pub frame_options: FrameOptions,
    /// A `Referrer-Policy` value (or a comma-separated fallback list), or `off`.
    #[serde(default = "default_referrer_policy")]
    pub referrer_policy: String,
    /// `Content-Security-Policy`, sent only when configured.
    #[serde(default)]
    pub content_security_policy: Option<String>,
}

impl Default for SecurityHeadersSpec {
    fn default() -> Self {
        SecurityHeadersSpec {
            content_type_options: true,
            frame_options: FrameOptions::Deny,
            referrer_policy: default_referrer_policy(),
            content_security_policy: None,
        }
    }
}

/// The values `Referrer-Policy` may carry (W3C Referrer Policy §3).
pub const REFERRER_POLICIES: [&str; 8] = [
    "no-referrer",
    "no-referrer-when-downgrade",
    "origin",
    "origin-when-cross-origin",
    "same-origin",
    "strict-origin",
    "strict-origin-when-cross-origin",
    "unsafe-url",
];

fn permanent() -> u16 {
    308
}
fn yes() -> bool {
    true
}
fn one_year() -> u64 {
    HSTS_PRELOAD_MIN_AGE
}
fn default_referrer_policy() -> String {
    "strict-origin-when-cross-origin".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    struct Holder {
        hsts: Option<Switch<HstsSpec>>,
    }

    #[test]
    fn switches_read_true_false_and_tables() {
        let on: Holder = toml::from_str("hsts = true").unwrap();
        assert_eq!(on.hsts, Some(Switch::On(HstsSpec::default())));
        let off: Holder = toml::from_str("hsts = false").unwrap();
        assert_eq!(off.hsts, Some(Switch::Off));
        let table: Holder =
            toml::from_str("hsts = { max_age_seconds = 60, include_subdomains = true }").unwrap();
        let spec = table.hsts.as_ref().and_then(Switch::on).unwrap();
        assert_eq!((spec.max_age_seconds, spec.include_subdomains), (60, true));
        assert!(toml::from_str::<Holder>("hsts = { max_age = 60 }").is_err());
        assert!(toml::from_str::<Holder>("hsts = 3").is_err());
    }

    #[test]
    fn switches_round_trip_through_json() {
        for h in [
            Holder { hsts: None },
            Holder {
                hsts: Some(Switch::Off),
            },
            Holder {
                hsts: Some(Switch::On(HstsSpec {
                    max_age_seconds: 5,
                    include_subdomains: true,
                    preload: false,
                })),
            },
        ] {
            let text = serde_json::to_string(&h).unwrap();
            assert_eq!(serde_json::from_str::<Holder>(&text).unwrap(), h, "{text}");
        }
    }

    #[test]
    fn frame_options_spellings() {
        #[derive(Deserialize)]
        struct F {
            f: FrameOptions,
        }
        let read = |s: &str| toml::from_str::<F>(&format!("f = \"{s}\"")).map(|f| f.f);
        assert_eq!(read("DENY").unwrap(), FrameOptions::Deny);
        assert_eq!(read("sameorigin").unwrap(), FrameOptions::SameOrigin);
        assert_eq!(read("off").unwrap(), FrameOptions::Off);
        assert!(read("ALLOW-FROM x").is_err());
    }
}

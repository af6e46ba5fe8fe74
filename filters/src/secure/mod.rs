//! Response headers browsers read as security policy, sans I/O: HSTS ([`Hsts`],
//! RFC 6797) and the usual hardening headers ([`SecurityHeaders`]).
//!
//! Values are compiled once per config; applying them to a response clones
//! reference-counted values and allocates nothing.

use http::header::{
    CONTENT_SECURITY_POLICY, REFERRER_POLICY, STRICT_TRANSPORT_SECURITY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use http::{HeaderMap, HeaderName, HeaderValue};
use tollgate_routing::gateway::OFF;
use tollgate_routing::{FrameOptions, HstsSpec, SecurityHeadersSpec};

/// Why a security header cannot be compiled (validation refuses these first).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a valid value for {1}")]
pub struct SecureError(String, &'static str);

/// `Strict-Transport-Security`, compiled.
#[derive(Debug, Clone)]
pub struct Hsts {
    value: HeaderValue,
}

impl Hsts {
    pub fn new(spec: &HstsSpec) -> Self {
        let mut text = format!("max-age={}", spec.max_age_seconds);
        if spec.include_subdomains {
            text.push_str("; includeSubDomains");
        }
        if spec.preload {
            text.push_str("; preload");
        }
        // Digits and fixed words: always a valid value.
        let value = HeaderValue::from_str(&text)
            .unwrap_or_else(|_| HeaderValue::from_static("max-age=31536000"));
        Hsts { value }
    }

    pub fn value(&self) -> &HeaderValue {
        &self.value
    }

    /// Sets the policy on an answer to a TLS request, replacing the upstream's so one
    /// app has one policy; over plaintext removes any, as RFC 6797 §7.2 requires.
    pub fn apply(&self, tls: bool, headers: &mut HeaderMap) {
        if tls {
            headers.insert(STRICT_TRANSPORT_SECURITY, self.value.clone());
        } else {
            headers.remove(STRICT_TRANSPORT_SECURITY);
        }
    }
}

/// `X-Content-Type-Options`, `X-Frame-Options`, `Referrer-Policy` and
/// `Content-Security-Policy`, each set only where the response has none.
#[derive(Debug, Clone)]
pub struct SecurityHeaders {
    headers: Box<[(HeaderName, HeaderValue)]>,
}

impl SecurityHeaders {
    pub fn new(spec: &SecurityHeadersSpec) -> Result<Self, SecureError> {
        let mut headers = Vec::with_capacity(4);
        if spec.content_type_options {
            headers.push((X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")));
        }
        match spec.frame_options {
            FrameOptions::Deny => headers.push((X_FRAME_OPTIONS, HeaderValue::from_static("DENY"))),
            FrameOptions::SameOrigin => {
                headers.push((X_FRAME_OPTIONS, HeaderValue::from_static("SAMEORIGIN")))
            }
            FrameOptions::Off => {}
        }
        if spec.referrer_policy != OFF {
            let value = HeaderValue::from_str(&spec.referrer_policy)
                .map_err(|_| SecureError(spec.referrer_policy.clone(), "Referrer-Policy"))?;
            headers.push((REFERRER_POLICY, value));
        }
        if let Some(csp) = &spec.content_security_policy {
            let value = HeaderValue::from_str(csp)
                .map_err(|_| SecureError(csp.clone(), "Content-Security-Policy"))?;
            headers.push((CONTENT_SECURITY_POLICY, value));
        }
        Ok(SecurityHeaders {
            headers: headers.into_boxed_slice(),
        })
    }

    /// Whether there is nothing to set (every header turned off).
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty()
    }

    /// Adds each header the response lacks; the upstream's own choices stand.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in self.headers.iter() {
            if !headers.contains_key(name) {
                headers.insert(name.clone(), value.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hsts_value_and_transport() {
        let h = Hsts::new(&HstsSpec {
            max_age_seconds: 63_072_000,
            include_subdomains: true,
            preload: true,
        });
        assert_eq!(h.value(), "max-age=63072000; includeSubDomains; preload");
        assert_eq!(Hsts::new(&HstsSpec::default()).value(), "max-age=31536000");

        let mut tls = HeaderMap::new();
        tls.insert(
            STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=1"),
        );
        h.apply(true, &mut tls);
        assert_eq!(tls[STRICT_TRANSPORT_SECURITY], h.value());
        assert_eq!(tls.get_all(STRICT_TRANSPORT_SECURITY).iter().count(), 1);

        let mut plain = HeaderMap::new();
        plain.insert(
            STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=1"),
        );
        h.apply(false, &mut plain);
        assert!(plain.is_empty(), "never over plaintext: {plain:?}");
    }

    #[test]
    fn security_headers_default_and_never_override() {
        let s = SecurityHeaders::new(&SecurityHeadersSpec::default()).unwrap();
        let mut h = HeaderMap::new();
        h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("SAMEORIGIN"));
        s.apply(&mut h);
        assert_eq!(h[X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(
            h[X_FRAME_OPTIONS], "SAMEORIGIN",
            "the upstream's own stands"
        );
        assert_eq!(h[REFERRER_POLICY], "strict-origin-when-cross-origin");
        assert!(h.get(CONTENT_SECURITY_POLICY).is_none());
    }

    #[test]
    fn security_headers_table() {
        let spec = SecurityHeadersSpec {
            content_type_options: false,
            frame_options: FrameOptions::SameOrigin,
            referrer_policy: OFF.into(),
            content_security_policy: Some("default-src 'self'".into()),
        };
        let s = SecurityHeaders::new(&spec).unwrap();
        let mut h = HeaderMap::new();
        s.apply(&mut h);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h[X_FRAME_OPTIONS], "SAMEORIGIN");
        assert_eq!(h[CONTENT_SECURITY_POLICY], "default-src 'self'");

        let off = SecurityHeadersSpec {
            content_type_options: false,
            frame_options: FrameOptions::Off,
            referrer_policy: OFF.into(),
            content_security_policy: None,
        };
        assert!(SecurityHeaders::new(&off).unwrap().is_empty());
        let bad = SecurityHeadersSpec {
            content_security_policy: Some("a\nb".into()),
            ..SecurityHeadersSpec::default()
        };
        assert!(SecurityHeaders::new(&bad).is_err());
    }
}

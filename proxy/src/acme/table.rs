//! The compiled challenge table of one config generation: normalised hostname to
//! its challenge, with the TLS-ALPN-01 handshake config built ahead of time.

use super::tls_alpn;
use bytes::Bytes;
use rustls::ServerConfig;
use std::collections::HashMap;
use std::sync::Arc;
use tollgate_routing::{AcmeChallenge, ChallengeKind, host};

/// One hostname's challenge, ready to answer.
#[derive(Debug)]
pub struct Challenge {
    pub kind: ChallengeKind,
    token: Box<str>,
    /// The HTTP-01 body; its SHA-256 is in the TLS-ALPN-01 certificate.
    key_authorization: Bytes,
    /// TLS-ALPN-01 only: the handshake config presenting the challenge certificate.
    tls: Option<Arc<ServerConfig>>,
}

impl Challenge {
    /// The key authorization to serve for `token`, if it is this challenge's token.
    pub fn key_authorization_for(&self, token: &str) -> Option<&Bytes> {
        (*self.token == *token).then_some(&self.key_authorization)
    }

    /// The TLS-ALPN-01 handshake config (`None` for HTTP-01).
    pub fn tls_config(&self) -> Option<&Arc<ServerConfig>> {
        self.tls.as_ref()
    }

    fn same_as(&self, c: &AcmeChallenge) -> bool {
        self.kind == c.kind
            && *self.token == *c.token
            && self.key_authorization == c.key_authorization.as_bytes()
    }
}

/// Hostname (lowercase, no port, no trailing dot) to its challenge; immutable.
#[derive(Debug, Default)]
pub struct AcmeTable {
    hosts: HashMap<Box<str>, Arc<Challenge>>,
    /// Whether any HTTP-01 challenge is present, so requests skip the table otherwise.
    any_http01: bool,
}

impl AcmeTable {
    /// Compiles `challenges` (keyed by hostname), reusing from `previous` every
    /// challenge whose hostname, kind, token and key authorization did not change,
    /// so an unrelated config change does not generate new keys. A TLS-ALPN-01
    /// challenge whose certificate cannot be built is left out and logged.
    pub fn build(
        challenges: &tollgate_routing::OrdMap<String, AcmeChallenge>,
        previous: Option<&AcmeTable>,
    ) -> Self {
        let mut hosts = HashMap::with_capacity(challenges.len());
        for c in challenges.values() {
            let name = host::normalize(&c.hostname);
            if name.is_empty() {
                continue;
            }
            let reused = previous
                .and_then(|p| p.hosts.get(&*name))
                .filter(|old| old.same_as(c));
            let challenge = match reused {
                Some(old) => old.clone(),
                None => match compile(&name, c) {
                    Ok(ch) => Arc::new(ch),
                    Err(e) => {
                        tracing::error!(hostname = %name, error = %e, "cannot build the TLS-ALPN-01 certificate; challenge not answered");
                        continue;
                    }
                },
            };
            hosts.insert(Box::from(&*name), challenge);
        }
        let any_http01 = hosts.values().any(|c| c.kind == ChallengeKind::Http01);
        AcmeTable { hosts, any_http01 }
    }

    /// The challenge of `host` (already normalised).
    pub fn get(&self, host: &str) -> Option<&Challenge> {
        self.hosts.get(host).map(|c| &**c)
    }

    /// Whether any HTTP-01 challenge is published.
    pub fn has_http01(&self) -> bool {
        self.any_http01
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    #[cfg(test)]
    fn shared(&self, host: &str) -> Option<&Arc<Challenge>> {
        self.hosts.get(host)
    }
}

fn compile(name: &str, c: &AcmeChallenge) -> Result<Challenge, tls_alpn::BuildError> {
    let tls = match c.kind {
        ChallengeKind::Http01 => None,
        ChallengeKind::TlsAlpn01 => Some(tls_alpn::challenge_config(name, &c.key_authorization)?),
    };
    Ok(Challenge {
        kind: c.kind,
        token: c.token.as_str().into(),
        key_authorization: Bytes::copy_from_slice(c.key_authorization.as_bytes()),
        tls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn challenge(host: &str, kind: ChallengeKind, token: &str) -> AcmeChallenge {
        AcmeChallenge {
            hostname: host.into(),
            kind,
            token: token.into(),
            key_authorization: format!("{token}.thumb"),
        }
    }

    fn map(cs: &[AcmeChallenge]) -> tollgate_routing::OrdMap<String, AcmeChallenge> {
        cs.iter().map(|c| (c.hostname.clone(), c.clone())).collect()
    }

    #[test]
    fn looks_up_by_normalised_host_and_token() {
        let t = AcmeTable::build(
            &map(&[challenge("Shop.Example.", ChallengeKind::Http01, "tok")]),
            None,
        );
        assert!(t.has_http01());
        assert_eq!(t.len(), 1);
        let c = t.get("shop.example").expect("normalised host");
        assert_eq!(
            c.key_authorization_for("tok").map(|b| &b[..]),
            Some(&b"tok.thumb"[..])
        );
        assert!(c.key_authorization_for("other").is_none());
        assert!(c.tls_config().is_none());
        assert!(t.get("other.example").is_none());
    }

    #[test]
    fn tls_alpn_gets_a_config_and_http01_flag_stays_off() {
        let t = AcmeTable::build(
            &map(&[challenge("alpn.example", ChallengeKind::TlsAlpn01, "t")]),
            None,
        );
        assert!(!t.has_http01());
        let c = t.get("alpn.example").expect("challenge");
        let cfg = c.tls_config().expect("tls config");
        assert_eq!(cfg.alpn_protocols, vec![tls_alpn::ACME_TLS_1.to_vec()]);
    }

    #[test]
    fn unchanged_challenges_are_reused_across_rebuilds() {
        let a = challenge("a.example", ChallengeKind::TlsAlpn01, "ta");
        let b = challenge("b.example", ChallengeKind::TlsAlpn01, "tb");
        let first = AcmeTable::build(&map(&[a.clone(), b.clone()]), None);
        let mut b2 = b.clone();
        b2.key_authorization = "tb.other".into();
        let second = AcmeTable::build(&map(&[a, b2]), Some(&first));
        let same = |t: &AcmeTable, h: &str| t.shared(h).expect(h).clone();
        assert!(Arc::ptr_eq(
            &same(&first, "a.example"),
            &same(&second, "a.example")
        ));
        assert!(!Arc::ptr_eq(
            &same(&first, "b.example"),
            &same(&second, "b.example")
        ));
        let third = AcmeTable::build(&tollgate_routing::OrdMap::new(), Some(&second));
        assert_eq!(third.len(), 0);
    }
}

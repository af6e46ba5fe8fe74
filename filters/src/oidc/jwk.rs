//! JSON Web Keys (RFC 7517, RFC 7518 §6, RFC 8037) reduced to the public keys the
//! edge verifies with: RSA (2048 to 8192 bits), EC P-256 and Ed25519.
//!
//! Members are read through `jsonwebtoken`'s JWK model and signatures are checked
//! through `jsonwebtoken` (its provider is `ring`, see `ring_provider`). In front of it
//! stay the checks the crate does not make: an entry that publishes private material is
//! refused, `use` and `key_ops` must allow verification, key sizes are bounded, and
//! padded base64 in key members (some providers pad) is accepted.

use super::error::TokenError;
use base64::Engine;
use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk as JwkModel, KeyOperations, PublicKeyUse,
};
use serde_json::{Map, Value};

/// Most entries a JWKS may list; real providers publish a handful.
const MAX_KEYS: usize = 256;

/// Base64url for key members: providers are known to pad, which changes nothing here.
const KEY_B64: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Members that only a private or symmetric key has.
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// The signature algorithms the edge verifies (RFC 7518 §3, RFC 8037 §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// RSASSA-PSS with SHA-256 and MGF1-SHA-256.
    Ps256,
    /// ECDSA on P-256 with SHA-256, fixed-size `r || s` signature.
    Es256,
    /// Ed25519 (`EdDSA` with an `Ed25519` key; Ed448 is not supported).
    EdDsa,
}

impl Algorithm {
    /// The algorithm named by a JOSE `alg`; `None` for `none`, HMAC and anything else.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        match name {
            "RS256" => Some(Algorithm::Rs256),
            "PS256" => Some(Algorithm::Ps256),
            "ES256" => Some(Algorithm::Es256),
            "EdDSA" => Some(Algorithm::EdDsa),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Rs256 => "RS256",
            Algorithm::Ps256 => "PS256",
            Algorithm::Es256 => "ES256",
            Algorithm::EdDsa => "EdDSA",
        }
    }

    fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Algorithm::Rs256 => jsonwebtoken::Algorithm::RS256,
            Algorithm::Ps256 => jsonwebtoken::Algorithm::PS256,
            Algorithm::Es256 => jsonwebtoken::Algorithm::ES256,
            Algorithm::EdDsa => jsonwebtoken::Algorithm::EdDSA,
        }
    }
}

/// The kind of public key, which decides the algorithms it may verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Rsa,
    P256,
    Ed25519,
}

/// One verification key of a JWKS.
#[derive(Clone)]
pub(crate) struct Jwk {
    pub(crate) kid: Option<String>,
    /// The JWK's own `alg`, when it names one: the key is then usable only for it.
    alg: Option<Algorithm>,
    kind: Kind,
    /// The decoded public key (modulus and exponent, SEC1 point, or Ed25519 key),
    /// what two sets are compared by.
    material: Vec<u8>,
    key: DecodingKey,
}

impl std::fmt::Debug for Jwk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwk")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Jwk {
    fn eq(&self, other: &Self) -> bool {
        (&self.kid, self.alg, self.kind, &self.material)
            == (&other.kid, other.alg, other.kind, &other.material)
    }
}

impl Eq for Jwk {}

impl Jwk {
    /// Whether this key may verify `alg`: key type matches and the key's `alg`, if any, agrees.
    pub(crate) fn fits(&self, alg: Algorithm) -> bool {
        let kind_ok = matches!(
            (self.kind, alg),
            (Kind::Rsa, Algorithm::Rs256 | Algorithm::Ps256)
                | (Kind::P256, Algorithm::Es256)
                | (Kind::Ed25519, Algorithm::EdDsa)
        );
        kind_ok && self.alg.is_none_or(|a| a == alg)
    }

    /// Verifies the base64url `signature` over `message`; false when the key does not
    /// fit `alg`.
    pub(crate) fn verify(&self, alg: Algorithm, message: &[u8], signature: &str) -> bool {
        self.fits(alg)
            && jsonwebtoken::crypto::verify(signature, message, &self.key, alg.jwt())
                .unwrap_or(false)
    }
}

/// The usable signature keys of a JWKS document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JwkSet {
    keys: Vec<Jwk>,
}

impl JwkSet {
    /// Parses a JWKS document (`{"keys": [...]}`), keeping the keys that can verify
    /// signatures here and skipping the rest: `use` other than `sig`, `key_ops`
    /// without `verify`, symmetric (`oct`) keys, other curves, keys that carry
    /// private material, keys of an unsupported `alg`, bad sizes.
    ///
    /// `Malformed` when the document is not a JWKS; `NoKeys` when no key is usable.
    pub fn parse(json: &[u8]) -> Result<JwkSet, TokenError> {
        // Every key is built here, so the provider is in place before any verifies.
        super::ring_provider::install();
        let doc: Value = serde_json::from_slice(json).map_err(|_| TokenError::Malformed)?;
        let entries = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or(TokenError::Malformed)?;
        if entries.len() > MAX_KEYS {
            return Err(TokenError::Malformed);
        }
        let keys: Vec<Jwk> = entries
            .iter()
            .filter_map(|entry| {
                let obj = entry.as_object()?;
                let key = parse_key(obj);
                if key.is_none() {
                    let kid = obj.get("kid").and_then(|v| v.as_str()).unwrap_or("");
                    let kty = obj.get("kty").and_then(|v| v.as_str()).unwrap_or("");
                    tracing::debug!(kid, kty, "JWKS entry skipped: not a usable signature key");
                }
                key
            })
            .collect();
        if keys.is_empty() {
            return Err(TokenError::NoKeys);
        }
        Ok(JwkSet { keys })
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The `kid`s of the usable keys (keys without one are left out).
    pub fn kids(&self) -> Vec<String> {
        self.keys.iter().filter_map(|k| k.kid.clone()).collect()
    }

    /// Whether some key carries `kid`.
    pub fn contains_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// The keys that may have signed a token with header `kid` and `alg`.
    ///
    /// With a `kid`: the keys carrying it (or the set's only key, when that key has
    /// no `kid`). Without: the only key; a set of several keys needs a `kid`.
    /// `UnknownKey` when nothing matches the `kid`, `UnsupportedAlgorithm` when the
    /// matching keys are of another type or pinned to another `alg`.
    pub(crate) fn candidates(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Vec<&Jwk>, TokenError> {
        let by_kid: Vec<&Jwk> = match kid {
            Some(kid) => {
                let named: Vec<&Jwk> = self
                    .keys
                    .iter()
                    .filter(|k| k.kid.as_deref() == Some(kid))
                    .collect();
                if named.is_empty() && self.keys.len() == 1 && self.keys[0].kid.is_none() {
                    vec![&self.keys[0]]
                } else {
                    named
                }
            }
            None if self.keys.len() == 1 => vec![&self.keys[0]],
            None => Vec::new(),
        };
        if by_kid.is_empty() {
            return Err(TokenError::UnknownKey);
        }
        let fitting: Vec<&Jwk> = by_kid.into_iter().filter(|k| k.fits(alg)).collect();
        if fitting.is_empty() {
            return Err(TokenError::UnsupportedAlgorithm);
        }
        Ok(fitting)
    }
}

fn parse_key(obj: &Map<String, Value>) -> Option<Jwk> {
    // A published private key means anyone can sign: refuse the key outright.
    if PRIVATE_MEMBERS.iter().any(|m| obj.contains_key(*m)) {
        tracing::warn!("JWKS entry carries private or symmetric key material; refused");
        return None;
    }
    let model: JwkModel = serde_json::from_value(Value::Object(obj.clone())).ok()?;
    let common = &model.common;
    if common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return None;
    }
    if let Some(ops) = &common.key_operations
        && !ops.contains(&KeyOperations::Verify)
    {
        return None;
    }
    let alg = match &common.key_algorithm {
        None => None,
        Some(a) => Some(Algorithm::from_name(&a.to_string())?),
    };
    let bytes = |b64: &str| KEY_B64.decode(b64).ok();
    let (kind, material, key) = match &model.algorithm {
        AlgorithmParameters::RSA(rsa) => {
            let n = strip_zeros(bytes(&rsa.n)?);
            let e = strip_zeros(bytes(&rsa.e)?);
            // 2048..=8192-bit moduli, exponents up to 33 bits
            if !(256..=1024).contains(&n.len()) || e.is_empty() || e.len() > 5 {
                return None;
            }
            let key = DecodingKey::from_rsa_raw_components(&n, &e);
            let mut material = n;
            material.extend_from_slice(&e);
            (Kind::Rsa, material, key)
        }
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            let (x, y) = (bytes(&ec.x)?, bytes(&ec.y)?);
            if x.len() != 32 || y.len() != 32 {
                return None;
            }
            // Uncompressed SEC1 point: what the crate verifies ECDSA keys from.
            let mut point = Vec::with_capacity(65);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            let key = DecodingKey::from_ec_der(&point);
            (Kind::P256, point, key)
        }
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            let x = bytes(&okp.x)?;
            if x.len() != 32 {
                return None;
            }
            let key = DecodingKey::from_ed_der(&x);
            (Kind::Ed25519, x, key)
        }
        _ => return None,
    };
    Some(Jwk {
        kid: common.key_id.clone(),
        alg,
        kind,
        material,
        key,
    })
}

fn strip_zeros(mut v: Vec<u8>) -> Vec<u8> {
    let zeros = v.iter().take_while(|b| **b == 0).count();
    v.drain(..zeros);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithms_match_what_routing_allows() {
        for name in tollgate_routing::SUPPORTED_ALGORITHMS {
            assert_eq!(Algorithm::from_name(name).map(Algorithm::name), Some(name));
        }
        for name in [
            "none", "None", "HS256", "HS384", "HS512", "RS384", "ES384", "ES256K", "Ed25519",
        ] {
            assert_eq!(Algorithm::from_name(name), None, "{name}");
        }
    }

    /// `jsonwebtoken` panics on verification when it has no crypto provider: parsing
    /// a key set installs one.
    #[test]
    fn parsing_keys_installs_the_crypto_provider() {
        let _ = JwkSet::parse(br#"{"keys":[]}"#);
        assert!(jsonwebtoken::crypto::CryptoProvider::try_get_default().is_some());
    }

    #[test]
    fn leading_zeros_are_stripped() {
        assert_eq!(strip_zeros(vec![0, 0, 1, 0]), vec![1, 0]);
        assert!(strip_zeros(vec![0, 0]).is_empty());
    }
}

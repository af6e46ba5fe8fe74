//! JSON Web Keys (RFC 7517, RFC 7518 §6, RFC 8037) reduced to the public keys `ring`
//! can verify with: RSA, EC P-256 and Ed25519.

use super::error::TokenError;
use base64::Engine;
use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::{Map, Value};

/// Most entries a JWKS may list; real providers publish a handful.
const MAX_KEYS: usize = 256;

/// Base64url for key members: providers are known to pad, which changes nothing here.
const KEY_B64: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

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
}

/// Public key material, already decoded and size-checked.
#[derive(Clone, PartialEq, Eq)]
enum Material {
    /// Big-endian modulus and exponent, no leading zeros.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// Uncompressed SEC1 point `0x04 || x || y`.
    P256 { point: Vec<u8> },
    /// The 32-byte public key.
    Ed25519 { x: Vec<u8> },
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Material::Rsa { n, .. } => write!(f, "RSA-{}", n.len() * 8),
            Material::P256 { .. } => f.write_str("EC P-256"),
            Material::Ed25519 { .. } => f.write_str("OKP Ed25519"),
        }
    }
}

/// One verification key of a JWKS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Jwk {
    pub(crate) kid: Option<String>,
    /// The JWK's own `alg`, when it names one: the key is then usable only for it.
    alg: Option<String>,
    material: Material,
}

impl Jwk {
    /// Whether this key may verify `alg`: key type matches and the key's `alg`, if any, agrees.
    pub(crate) fn fits(&self, alg: Algorithm) -> bool {
        let kind_ok = matches!(
            (&self.material, alg),
            (Material::Rsa { .. }, Algorithm::Rs256 | Algorithm::Ps256)
                | (Material::P256 { .. }, Algorithm::Es256)
                | (Material::Ed25519 { .. }, Algorithm::EdDsa)
        );
        kind_ok && self.alg.as_deref().is_none_or(|a| a == alg.name())
    }

    /// Verifies `signature` over `message`; false when the key does not fit `alg`.
    pub(crate) fn verify(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        if !self.fits(alg) {
            return false;
        }
        match (&self.material, alg) {
            (Material::Rsa { n, e }, Algorithm::Rs256) => RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, signature)
                .is_ok(),
            (Material::Rsa { n, e }, Algorithm::Ps256) => RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PSS_2048_8192_SHA256, message, signature)
                .is_ok(),
            (Material::P256 { point }, Algorithm::Es256) => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, signature)
                    .is_ok()
            }
            (Material::Ed25519 { x }, Algorithm::EdDsa) => {
                UnparsedPublicKey::new(&signature::ED25519, x)
                    .verify(message, signature)
                    .is_ok()
            }
            _ => false,
        }
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
    let text = |name: &str| -> Option<Option<&str>> {
        match obj.get(name) {
            None => Some(None),
            Some(Value::String(s)) => Some(Some(s.as_str())),
            Some(_) => None,
        }
    };
    if let Some(u) = text("use")?
        && u != "sig"
    {
        return None;
    }
    if let Some(ops) = obj.get("key_ops") {
        let ops = ops.as_array()?;
        if !ops.iter().any(|o| o.as_str() == Some("verify")) {
            return None;
        }
    }
    // A published private key means anyone can sign: refuse the key outright.
    if ["d", "p", "q", "dp", "dq", "qi", "oth", "k"]
        .iter()
        .any(|m| obj.contains_key(*m))
    {
        tracing::warn!("JWKS entry carries private or symmetric key material; refused");
        return None;
    }
    let alg = text("alg")?;
    if let Some(a) = alg
        && Algorithm::from_name(a).is_none()
    {
        return None;
    }
    let kid = text("kid")?.map(str::to_owned);
    let bytes = |name: &str| -> Option<Vec<u8>> { KEY_B64.decode(text(name)??).ok() };
    let material = match text("kty")?? {
        "RSA" => {
            let n = strip_zeros(bytes("n")?);
            let e = strip_zeros(bytes("e")?);
            // 2048..=8192-bit moduli (what ring accepts), exponents up to 33 bits
            if !(256..=1024).contains(&n.len()) || e.is_empty() || e.len() > 5 {
                return None;
            }
            Material::Rsa { n, e }
        }
        "EC" => {
            if text("crv")?? != "P-256" {
                return None;
            }
            let (x, y) = (bytes("x")?, bytes("y")?);
            if x.len() != 32 || y.len() != 32 {
                return None;
            }
            let mut point = Vec::with_capacity(65);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            Material::P256 { point }
        }
        "OKP" => {
            if text("crv")?? != "Ed25519" {
                return None;
            }
            let x = bytes("x")?;
            if x.len() != 32 {
                return None;
            }
            Material::Ed25519 { x }
        }
        _ => return None,
    };
    Some(Jwk {
        kid,
        alg: alg.map(str::to_owned),
        material,
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

    #[test]
    fn leading_zeros_are_stripped() {
        assert_eq!(strip_zeros(vec![0, 0, 1, 0]), vec![1, 0]);
        assert!(strip_zeros(vec![0, 0]).is_empty());
    }
}

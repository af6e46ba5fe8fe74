//! Pure verification of one token against known keys: no I/O, no clock.

use super::claims::{self, VerifiedToken};
use super::error::TokenError;
use super::jwk::{Algorithm, JwkSet};
use super::jws::Compact;
use serde_json::Value;
use tollgate_routing::OidcIssuerSpec;

/// Verifies `token` against `keys` for `spec` at `now_unix`.
///
/// In order: compact JWS shape and sizes; `alg` supported (never `none` or HMAC) and in
/// the issuer's allow-list; a key by `kid` whose type (and `alg`, if pinned) fits; the
/// signature; the `typ` header; then the claims (`iss`, `exp`/`nbf`/`iat` with leeway,
/// `aud`, `sub`, required claims). The payload is decoded only once the signature holds.
pub fn verify(
    token: &str,
    spec: &OidcIssuerSpec,
    keys: &JwkSet,
    now_unix: i64,
) -> Result<VerifiedToken, TokenError> {
    let jws = Compact::parse(token)?;
    let alg = allowed_algorithm(&jws.header.alg, spec)?;
    let candidates = keys.candidates(jws.header.kid.as_deref(), alg)?;
    let message = jws.signing_input.as_bytes();
    if !candidates
        .iter()
        .any(|k| k.verify(alg, message, jws.signature))
    {
        return Err(TokenError::BadSignature);
    }
    check_type(jws.header.typ.as_deref(), spec.require_at_jwt)?;
    claims::validate(jws.payload()?, spec, now_unix)
}

/// Reads `iss` from an unverified token, only to choose the issuer to verify against.
///
/// Applies the same shape checks as [`verify`]; trust nothing else it returns.
pub fn peek_issuer(token: &str) -> Result<String, TokenError> {
    let jws = Compact::parse(token)?;
    match jws.payload()?.remove("iss") {
        Some(Value::String(iss)) => Ok(iss),
        None => Err(TokenError::MissingClaim),
        Some(_) => Err(TokenError::Malformed),
    }
}

/// Cheap checks on an unverified token, to decide whether it is worth fetching keys
/// for: shape, algorithm, issuer and expiry. Can only refuse, never accept.
pub(crate) fn precheck(
    token: &str,
    spec: &OidcIssuerSpec,
    now_unix: i64,
) -> Result<(), TokenError> {
    let jws = Compact::parse(token)?;
    allowed_algorithm(&jws.header.alg, spec)?;
    let payload = jws.payload()?;
    if payload.get("iss").and_then(Value::as_str) != Some(spec.issuer.as_str()) {
        return Err(TokenError::WrongIssuer);
    }
    claims::check_times(&payload, spec.leeway_secs, now_unix)
}

/// Whether the token has a `kid` (a refetch can only help tokens that name their key).
pub(crate) fn names_key(token: &str) -> bool {
    Compact::parse(token).is_ok_and(|j| j.header.kid.is_some())
}

fn allowed_algorithm(name: &str, spec: &OidcIssuerSpec) -> Result<Algorithm, TokenError> {
    let alg = Algorithm::from_name(name).ok_or(TokenError::UnsupportedAlgorithm)?;
    if !spec.algorithms.iter().any(|a| a == name) {
        return Err(TokenError::UnsupportedAlgorithm);
    }
    Ok(alg)
}

/// RFC 9068 §4 / RFC 8725 §3.11: an access token says so (`at+jwt`) when the issuer is
/// configured to require it; otherwise a plain `JWT` (or no `typ`) is accepted too, and
/// any other type (ID tokens with an explicit type, logout tokens, DPoP proofs) is not.
fn check_type(typ: Option<&str>, require_at_jwt: bool) -> Result<(), TokenError> {
    let typ = typ.map(|t| {
        let t = t.to_ascii_lowercase();
        match t.strip_prefix("application/") {
            Some(rest) => rest.to_owned(),
            None => t,
        }
    });
    let ok = match typ.as_deref() {
        Some("at+jwt") => true,
        None | Some("jwt") => !require_at_jwt,
        Some(_) => false,
    };
    if ok {
        Ok(())
    } else {
        Err(TokenError::WrongType)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types() {
        for t in [
            "at+jwt",
            "AT+JWT",
            "application/at+jwt",
            "Application/AT+jwt",
        ] {
            assert!(check_type(Some(t), true).is_ok(), "{t}");
            assert!(check_type(Some(t), false).is_ok(), "{t}");
        }
        for t in [None, Some("JWT"), Some("jwt"), Some("application/jwt")] {
            assert_eq!(check_type(t, true), Err(TokenError::WrongType), "{t:?}");
            assert!(check_type(t, false).is_ok(), "{t:?}");
        }
        for t in ["dpop+jwt", "logout+jwt", "secevent+jwt", "JWS", ""] {
            assert_eq!(
                check_type(Some(t), false),
                Err(TokenError::WrongType),
                "{t}"
            );
        }
    }
}

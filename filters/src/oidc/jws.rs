//! Compact JWS (RFC 7515 §7.1) split and decoded, before any key is involved.

use super::error::TokenError;
use super::json::UniqueObject;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

/// Largest token accepted, in bytes.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// The JOSE header members verification reads.
#[derive(Debug)]
pub(crate) struct Header {
    pub(crate) alg: String,
    pub(crate) kid: Option<String>,
    pub(crate) typ: Option<String>,
}

/// A token split into its three parts; the payload is left encoded until the
/// signature has been checked.
#[derive(Debug)]
pub(crate) struct Compact<'a> {
    pub(crate) header: Header,
    /// `BASE64URL(header) '.' BASE64URL(payload)`: the bytes that were signed.
    pub(crate) signing_input: &'a str,
    /// Decoded but not yet parsed: JSON is read only once the signature holds.
    payload: Vec<u8>,
    /// The signature as sent (base64url, checked to decode strictly).
    pub(crate) signature: &'a str,
}

impl<'a> Compact<'a> {
    /// Splits and decodes `token`; refuses anything but exactly three unpadded
    /// base64url parts, a JSON object header with a string `alg`, and any `crit`.
    pub(crate) fn parse(token: &'a str) -> Result<Compact<'a>, TokenError> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        if h.is_empty() || p.is_empty() {
            return Err(TokenError::Malformed);
        }
        let header = parse_header(&b64(h)?)?;
        let payload = b64(p)?;
        b64(s)?;
        Ok(Compact {
            header,
            signing_input: &token[..h.len() + 1 + p.len()],
            payload,
            signature: s,
        })
    }

    /// The payload as a JSON object (unique member names).
    pub(crate) fn payload(&self) -> Result<Map<String, Value>, TokenError> {
        UniqueObject::parse(&self.payload).ok_or(TokenError::Malformed)
    }
}

/// Strict base64url: URL alphabet, no padding, no whitespace, canonical trailing bits.
pub(crate) fn b64(part: &str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed)
}

fn parse_header(bytes: &[u8]) -> Result<Header, TokenError> {
    let mut obj = UniqueObject::parse(bytes).ok_or(TokenError::Malformed)?;
    // RFC 7515 §4.1.11: extensions we would have to understand. We understand none
    // (this also refuses RFC 7797 unencoded payloads, which need `crit: ["b64"]`).
    if obj.contains_key("crit") || obj.contains_key("b64") {
        return Err(TokenError::Malformed);
    }
    let alg = match obj.remove("alg") {
        Some(Value::String(a)) => a,
        _ => return Err(TokenError::Malformed),
    };
    // Encrypted tokens (JWE) carry `enc`; they are not signed tokens.
    if obj.contains_key("enc") {
        return Err(TokenError::Malformed);
    }
    let opt_str = |v: Option<Value>| match v {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(TokenError::Malformed),
    };
    Ok(Header {
        alg,
        kid: opt_str(obj.remove("kid"))?,
        typ: opt_str(obj.remove("typ"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn splits_three_parts() {
        let t = format!(
            "{}.{}.{}",
            enc(r#"{"alg":"ES256","kid":"k"}"#),
            enc("{}"),
            enc("sig")
        );
        let c = Compact::parse(&t).unwrap();
        assert_eq!(c.header.alg, "ES256");
        assert_eq!(c.header.kid.as_deref(), Some("k"));
        assert_eq!(b64(c.signature).unwrap(), b"sig");
        assert_eq!(c.signing_input, &t[..t.rfind('.').unwrap()]);
        assert!(c.payload().unwrap().is_empty());
    }

    #[test]
    fn refuses_bad_shapes() {
        let h = enc(r#"{"alg":"ES256"}"#);
        let p = enc("{}");
        for t in [
            format!("{h}.{p}"),
            format!("{h}.{p}.c2ln.x"),
            format!("{h}..c2ln"),
            format!(".{p}.c2ln"),
            format!("{h}=.{p}.c2ln"),
            format!("{h}.{p}.c2ln="),
            format!("{h}.{p}.c2/n"),
            format!("{h}.{p}.c2+n"),
            format!("{h} .{p}.c2ln"),
            format!("{}.{p}.c2ln", enc(r#"["alg"]"#)),
            format!("{}.{p}.c2ln", enc(r#"{"alg":1}"#)),
            format!("{}.{p}.c2ln", enc(r#"{"alg":"ES256","crit":["exp"]}"#)),
            format!("{}.{p}.c2ln", enc(r#"{"alg":"ES256","alg":"none"}"#)),
            format!("{}.{p}.c2ln", enc(r#"{"alg":"ES256","kid":7}"#)),
            format!("{}.{p}.c2ln", enc(r#"{"alg":"dir","enc":"A128GCM"}"#)),
        ] {
            assert_eq!(
                Compact::parse(&t).unwrap_err(),
                TokenError::Malformed,
                "{t}"
            );
        }
        let huge = format!("{h}.{}.c2ln", "A".repeat(MAX_TOKEN_LEN));
        assert_eq!(Compact::parse(&huge).unwrap_err(), TokenError::Malformed);
    }
}

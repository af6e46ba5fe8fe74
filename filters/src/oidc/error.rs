//! Why a token was refused; one stable label per kind for metrics.

/// Why a token (or an issuer's keys) could not be used.
///
/// Carries no detail on purpose: the reason is a metrics label and a log field, never
/// echoed to the caller beyond "unauthorized".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum TokenError {
    /// Not a compact JWS, bad base64url, bad JSON, wrong claim types, too large.
    #[error("malformed token")]
    Malformed,
    /// `alg` is `none`, HMAC, unknown, outside the issuer's allow-list, or does not fit the key.
    #[error("unsupported or disallowed algorithm")]
    UnsupportedAlgorithm,
    #[error("bad signature")]
    BadSignature,
    /// No key of the issuer matches the token's `kid`.
    #[error("unknown signing key")]
    UnknownKey,
    #[error("token expired")]
    Expired,
    /// `nbf` or `iat` lies in the future (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    #[error("wrong issuer")]
    WrongIssuer,
    #[error("wrong audience")]
    WrongAudience,
    /// `sub`, `exp`, `iss`, `aud` or a configured required claim is absent.
    #[error("missing required claim")]
    MissingClaim,
    /// The `typ` header is not an access-token type.
    #[error("wrong token type")]
    WrongType,
    /// The issuer's keys were never fetched: fail closed.
    #[error("no keys for issuer")]
    NoKeys,
    /// The token's `iss` is not a configured issuer, or not one the route accepts.
    #[error("unknown issuer")]
    UnknownIssuer,
    /// Discovery or the JWKS endpoint could not be reached or gave a bad answer.
    #[error("identity provider unavailable")]
    ProviderUnavailable,
    /// The issuer spec cannot be used (bad URL, unreadable CA file, duplicate issuer).
    #[error("invalid issuer configuration")]
    InvalidConfig,
}

impl TokenError {
    /// Stable snake_case label, for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::Malformed => "malformed",
            TokenError::UnsupportedAlgorithm => "unsupported_algorithm",
            TokenError::BadSignature => "bad_signature",
            TokenError::UnknownKey => "unknown_key",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::WrongIssuer => "wrong_issuer",
            TokenError::WrongAudience => "wrong_audience",
            TokenError::MissingClaim => "missing_claim",
            TokenError::WrongType => "wrong_type",
            TokenError::NoKeys => "no_keys",
            TokenError::UnknownIssuer => "unknown_issuer",
            TokenError::ProviderUnavailable => "provider_unavailable",
            TokenError::InvalidConfig => "invalid_config",
        }
    }
}

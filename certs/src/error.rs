//! Errors returned while building a [`CertStore`](crate::CertStore) or a TLS config.

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// One certificate source was rejected; `cert` names it (its names, or its position).
    #[error("certificate for {cert}: {problem}")]
    Source {
        /// The certificate's names as `[a.example, b.example]`, or `source #N` when unknown.
        cert: String,
        /// What was wrong with it.
        problem: CertProblem,
    },
    /// Two certificates claim the same name.
    #[error(
        "name `{name}` is claimed by both certificate for {first} and certificate for {second}"
    )]
    DuplicateName {
        /// The contested name (lowercase, no trailing dot).
        name: String,
        /// The certificate that claimed it first.
        first: String,
        /// The certificate that claimed it again.
        second: String,
    },
    /// `with_default` was given a name that no certificate in the store covers.
    #[error("no certificate covers default name `{0}`")]
    DefaultNotCovered(String),
    /// A configured cipher suite name is not one the ring provider knows.
    #[error("unknown cipher suite `{name}` (known: {known})")]
    UnknownCipherSuite {
        /// The name as configured.
        name: String,
        /// Comma-separated names that would have been accepted.
        known: String,
    },
    /// The cipher suite list leaves an enabled TLS version without any suite.
    #[error("cipher suites leave no suite for TLS {0}")]
    NoSuiteForVersion(crate::TlsVersion),
    /// A TLS version string other than `1.2` or `1.3`.
    #[error("unknown TLS version `{0}` (expected `1.2` or `1.3`)")]
    UnknownTlsVersion(String),
    /// rustls refused the server configuration.
    #[error("TLS configuration rejected: {0}")]
    Tls(#[from] rustls::Error),
    /// Generating a self-signed certificate failed.
    #[error("self-signed certificate for {names}: {reason}")]
    SelfSigned {
        /// The requested names as `[a.example]`.
        names: String,
        /// Why generation failed.
        reason: String,
    },
}

/// Why a single certificate source was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertProblem {
    /// The certificate PEM holds no `CERTIFICATE` section.
    #[error("no PEM certificate found")]
    NoCertificate,
    /// The key PEM holds no PKCS#8, PKCS#1 or SEC1 private key section.
    #[error("no PEM private key found")]
    NoPrivateKey,
    /// The PEM text itself is malformed.
    #[error("invalid PEM: {0}")]
    InvalidPem(String),
    /// A certificate in the chain is not valid X.509 DER.
    #[error("invalid certificate: {0}")]
    InvalidCertificate(String),
    /// The private key is of a type or encoding the ring provider cannot use.
    #[error("unsupported private key: {0}")]
    UnsupportedKey(String),
    /// The private key does not belong to the leaf certificate.
    #[error("private key does not match certificate")]
    KeyMismatch,
    /// The key's public half could not be derived, so the match could not be checked.
    #[error("cannot verify that the private key matches the certificate")]
    KeyUnverifiable,
    /// The leaf certificate's `notAfter` is in the past.
    #[error("certificate expired at {0}")]
    Expired(String),
    /// The leaf certificate's `notBefore` is in the future (beyond the allowed clock skew).
    #[error("certificate not valid before {0}")]
    NotYetValid(String),
    /// Neither DNS subject alternative names nor explicit names were available.
    #[error("certificate has no DNS subject alternative names and no names were given")]
    NoNames,
    /// An explicit name is not a usable hostname or `*.` wildcard.
    #[error("invalid name `{0}`")]
    InvalidName(String),
    /// An explicit name is not covered by the certificate.
    #[error("name `{name}` is not covered by the certificate (it covers: {covered})")]
    NameNotCovered {
        /// The explicit name (normalised).
        name: String,
        /// The names the certificate does cover, comma-separated.
        covered: String,
    },
}

/// Formats names as `[a.example, b.example]` for error messages.
pub(crate) fn label(names: &[String]) -> String {
    format!("[{}]", names.join(", "))
}

//! SHA-256 fingerprints of certificates, using the ring hash that rustls ships.

use rustls::SupportedCipherSuite;
use rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256;

/// Lowercase hex SHA-256 of `der`.
pub(crate) fn sha256_hex(der: &[u8]) -> String {
    // TLS13_AES_128_GCM_SHA256 is always the TLS 1.3 variant; its hash is SHA-256.
    let SupportedCipherSuite::Tls13(suite) = TLS13_AES_128_GCM_SHA256 else {
        return String::new();
    };
    let digest = suite.common.hash_provider.hash(der);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_known_sha256() {
        assert_eq!(
            super::sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}

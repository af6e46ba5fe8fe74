//! The `jsonwebtoken` crypto provider of this workspace: `jsonwebtoken` reads the
//! keys and dispatches by algorithm, `ring` checks the signatures, as it does for
//! TLS. One crypto stack, and RSA verification at `ring`'s speed (about 3× the
//! RustCrypto backend's on a 2048-bit key, which matters on a cache miss).
//! Verification only: nothing at the edge signs tokens.

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{ErrorKind, Result};
use jsonwebtoken::signature::{Error as SignatureError, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::signature::{self, RsaParameters, RsaPublicKeyComponents, UnparsedPublicKey};
use std::sync::Once;

static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: no_signer,
    verifier_factory: verifier,
    key_utils: KeyUtils::new_unimplemented(),
};

/// Makes this the process's provider, once; before any key is built.
///
/// Should another provider be installed first, `jsonwebtoken` verifies with that
/// one: the outcome is the same, only the speed differs.
pub(crate) fn install() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        if PROVIDER.install_default().is_err() {
            tracing::debug!("a jsonwebtoken crypto provider was already installed");
        }
    });
}

fn no_signer(_: &Algorithm, _: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
    Err(ErrorKind::UnsupportedAlgorithm.into())
}

/// A verifier for the algorithms the edge accepts, when `key` is of the right family.
fn verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    let check = match (alg, key.family(), key.kind()) {
        (Algorithm::RS256, AlgorithmFamily::Rsa, DecodingKeyKind::RsaModulusExponent { n, e }) => {
            Check::Rsa(&signature::RSA_PKCS1_2048_8192_SHA256, n.clone(), e.clone())
        }
        (Algorithm::PS256, AlgorithmFamily::Rsa, DecodingKeyKind::RsaModulusExponent { n, e }) => {
            Check::Rsa(&signature::RSA_PSS_2048_8192_SHA256, n.clone(), e.clone())
        }
        (Algorithm::ES256, AlgorithmFamily::Ec, DecodingKeyKind::SecretOrDer(point)) => {
            Check::Other(&signature::ECDSA_P256_SHA256_FIXED, point.clone())
        }
        (Algorithm::EdDSA, AlgorithmFamily::Ed, DecodingKeyKind::SecretOrDer(x)) => {
            Check::Other(&signature::ED25519, x.clone())
        }
        _ => return Err(ErrorKind::InvalidAlgorithm.into()),
    };
    Ok(Box::new(RingVerifier { alg: *alg, check }))
}

/// What to check a signature with.
enum Check {
    /// Modulus and exponent, big-endian.
    Rsa(&'static RsaParameters, Vec<u8>, Vec<u8>),
    /// A SEC1 point or an Ed25519 key.
    Other(&'static dyn signature::VerificationAlgorithm, Vec<u8>),
}

struct RingVerifier {
    alg: Algorithm,
    check: Check,
}

impl Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, msg: &[u8], sig: &Vec<u8>) -> std::result::Result<(), SignatureError> {
        let ok = match &self.check {
            Check::Rsa(params, n, e) => RsaPublicKeyComponents { n, e }
                .verify(params, msg, sig)
                .is_ok(),
            Check::Other(alg, key) => UnparsedPublicKey::new(*alg, key).verify(msg, sig).is_ok(),
        };
        if ok {
            Ok(())
        } else {
            Err(SignatureError::new())
        }
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

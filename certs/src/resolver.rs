//! The rustls SNI resolver, backed by a hot-swappable [`CertStore`].

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::store::CertStore;

/// Picks the server certificate by SNI from the current [`CertStore`].
///
/// Returning `None` (unknown name, or no SNI without a default) makes rustls
/// abort the handshake with an alert.
pub struct CertResolver {
    store: ArcSwap<CertStore>,
}

impl CertResolver {
    /// A resolver serving `store`.
    pub fn new(store: CertStore) -> Self {
        Self {
            store: ArcSwap::from_pointee(store),
        }
    }

    /// Replaces the store; handshakes that start afterwards use the new one,
    /// established connections are unaffected.
    pub fn swap(&self, store: CertStore) {
        self.store.store(Arc::new(store));
    }

    /// The store currently in use.
    pub fn current(&self) -> Arc<CertStore> {
        self.store.load_full()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = client_hello.server_name();
        let key = self.store.load().resolve(sni);
        if key.is_none() {
            tracing::debug!(sni = ?sni, "no certificate for server name");
        }
        key
    }
}

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertResolver")
            .field("store", &*self.store.load())
            .finish()
    }
}

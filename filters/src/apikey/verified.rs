//! A key as the request path uses it once verified: its record, and the identity
//! header values the upstream is sent, built on the key's first use and shared by
//! every request that presents it after.

use http::HeaderValue;
use std::ops::Deref;
use std::sync::Arc;
use tollgate_routing::ApiKeySpec;

/// A verified key: its record (dereferences to it) and its identity header values.
#[derive(Debug, PartialEq)]
pub struct KeyIdentity {
    /// The record the store was built from, shared with it and the control model.
    pub spec: Arc<ApiKeySpec>,
    /// `key:<key_id>`: who a key speaks as.
    pub subject: Box<str>,
    /// The key id as a header value; `None` when it is not a valid one.
    pub key_id_value: Option<HeaderValue>,
    /// [`KeyIdentity::subject`] as a header value.
    pub subject_value: Option<HeaderValue>,
    /// The scopes joined by spaces; `None` when there are none.
    pub scopes_value: Option<HeaderValue>,
}

impl KeyIdentity {
    pub fn new(spec: Arc<ApiKeySpec>) -> Self {
        let subject: Box<str> = format!("key:{}", spec.key_id).into();
        let scopes = spec.scopes.join(" ");
        KeyIdentity {
            key_id_value: HeaderValue::from_str(&spec.key_id).ok(),
            subject_value: HeaderValue::from_str(&subject).ok(),
            scopes_value: (!scopes.is_empty())
                .then(|| HeaderValue::from_str(&scopes).ok())
                .flatten(),
            subject,
            spec,
        }
    }
}

impl Deref for KeyIdentity {
    type Target = ApiKeySpec;

    fn deref(&self) -> &ApiKeySpec {
        &self.spec
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_routing::KeyKind;

    #[test]
    fn values_are_built_from_the_record_and_invalid_ones_left_out() {
        let spec = |key_id: &str, scopes: &[&str]| {
            Arc::new(ApiKeySpec {
                key_id: key_id.into(),
                app: "acme".into(),
                kind: KeyKind::Secret,
                sha256: String::new(),
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
                expires_at: None,
                allowed_origins: vec![],
            })
        };
        let id = KeyIdentity::new(spec("k1", &["read", "write"]));
        assert_eq!(&*id.subject, "key:k1");
        assert_eq!(id.key_id_value.as_ref().unwrap(), "k1");
        assert_eq!(id.subject_value.as_ref().unwrap(), "key:k1");
        assert_eq!(id.scopes_value.as_ref().unwrap(), "read write");
        assert_eq!(id.key_id, "k1", "dereferences to the record");
        let odd = KeyIdentity::new(spec("k\n2", &[]));
        assert!(odd.key_id_value.is_none() && odd.subject_value.is_none());
        assert!(odd.scopes_value.is_none());
    }
}

//! Finding the API key a request presents.

use super::KeyError;
use crate::bearer::{self, BearerError};
use http::HeaderMap;

/// The dedicated API key header.
pub const API_KEY_HEADER: &str = "x-api-key";

/// Whether a bearer token is meant as an API key (`sk_…`/`pk_…`) rather than a JWT.
pub fn looks_like_key(token: &str) -> bool {
    token.starts_with("sk_") || token.starts_with("pk_")
}

/// The API key a request presents, if any.
///
/// Keys come from `Authorization: Bearer <sk_…|pk_…>`, read by [`bearer::from_headers`]
/// (the one bearer parser), or from `x-api-key`. Well-formed bearer tokens that are not
/// API keys (JWTs) and other schemes are left for the OIDC filter: they yield
/// `Ok(None)`. Bearer credentials the parser refuses are [`KeyError::Malformed`] (two
/// `Authorization` headers: [`KeyError::Ambiguous`]): what they meant is not guessed.
/// An `x-api-key` value is always taken as a key attempt. The returned string is not
/// validated; [`KeyStore::verify`] parses it. Repeated `x-api-key` headers carrying the
/// same key as each other and as the bearer token are accepted; two different keys are
/// [`KeyError::Ambiguous`], and an `x-api-key` value that is not visible ASCII is
/// [`KeyError::Malformed`].
///
/// [`KeyStore::verify`]: super::KeyStore::verify
pub fn from_headers(headers: &HeaderMap) -> Result<Option<&str>, KeyError> {
    with_bearer(bearer::from_headers(headers), headers)
}

/// [`from_headers`] for a caller that has already read `Authorization` with
/// [`bearer::from_headers`]: `bearer` is what that returned.
pub fn with_bearer<'a>(
    bearer: Result<Option<&'a str>, BearerError>,
    headers: &'a HeaderMap,
) -> Result<Option<&'a str>, KeyError> {
    let mut found = None;
    match bearer {
        Ok(Some(token)) if looks_like_key(token) => found = Some(token),
        Ok(_) => {}
        Err(BearerError::Malformed) => return Err(KeyError::Malformed),
        Err(BearerError::Repeated) => return Err(KeyError::Ambiguous),
    }
    for v in headers.get_all(API_KEY_HEADER) {
        let key =
            std::str::from_utf8(bearer::trim_ows(v.as_bytes())).map_err(|_| KeyError::Malformed)?;
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(KeyError::Malformed);
        }
        merge(&mut found, key)?;
    }
    Ok(found)
}

fn merge<'a>(found: &mut Option<&'a str>, key: &'a str) -> Result<(), KeyError> {
    match found {
        Some(prev) if *prev != key => Err(KeyError::Ambiguous),
        Some(_) => Ok(()),
        None => {
            *found = Some(key);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use http::header::AUTHORIZATION;

    const K1: &str = "sk_live_acme_0123456789abcdefghijABCDEFGHIJzZ";
    const K2: &str = "pk_test_acme_0123456789abcdefghijABCDEFGHIJzZ";

    fn map(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            let h = map(&[("authorization", &format!("{scheme} {K1}"))]);
            assert_eq!(from_headers(&h), Ok(Some(K1)));
        }
        let h = map(&[("authorization", &format!("Bearer   {K1}  "))]);
        assert_eq!(from_headers(&h), Ok(Some(K1)));
    }

    #[test]
    fn non_key_credentials_are_left_alone() {
        for v in [
            "Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",
            "Basic dXNlcjpwYXNz",
            "",
            &format!("Basic {K1}"),
            &format!("Bearer{K1}"),
            &format!("Token {K1}"),
        ] {
            assert_eq!(
                from_headers(&map(&[("authorization", v)])),
                Ok(None),
                "{v:?}"
            );
        }
        assert_eq!(from_headers(&HeaderMap::new()), Ok(None));
    }

    #[test]
    fn bearer_credentials_the_parser_refuses_are_not_guessed_at() {
        for v in [
            "Bearer",
            "Bearer ",
            &format!("Bearer\t{K1}"),
            &format!("Bearer {K1} x"),
            "Bearer eyJ.a.b extra",
        ] {
            assert_eq!(
                from_headers(&map(&[("authorization", v)])),
                Err(KeyError::Malformed),
                "{v:?}"
            );
        }
        // Authorization is a singleton field: two are refused, even when equal.
        let bearer = format!("Bearer {K1}");
        let h = map(&[("authorization", &bearer), ("authorization", &bearer)]);
        assert_eq!(from_headers(&h), Err(KeyError::Ambiguous));
    }

    #[test]
    fn non_ascii_key_shaped_values_are_malformed() {
        let mut h = HeaderMap::new();
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_bytes(b"Bearer sk_live_acme_\xe9t\xe9").unwrap(),
        );
        assert_eq!(from_headers(&h), Err(KeyError::Malformed));
        let mut h = HeaderMap::new();
        h.insert(API_KEY_HEADER, HeaderValue::from_bytes(b"sk_\xff").unwrap());
        assert_eq!(from_headers(&h), Err(KeyError::Malformed));
    }

    #[test]
    fn same_key_twice_is_fine_different_keys_are_ambiguous() {
        let bearer = format!("Bearer {K1}");
        let h = map(&[("authorization", &bearer), ("x-api-key", K1)]);
        assert_eq!(from_headers(&h), Ok(Some(K1)));
        let h = map(&[("authorization", &bearer), ("x-api-key", K2)]);
        assert_eq!(from_headers(&h), Err(KeyError::Ambiguous));
        let h = map(&[("x-api-key", K1), ("x-api-key", K2)]);
        assert_eq!(from_headers(&h), Err(KeyError::Ambiguous));
        let h = map(&[("x-api-key", K1), ("x-api-key", K1)]);
        assert_eq!(from_headers(&h), Ok(Some(K1)));
    }

    #[test]
    fn jwt_bearer_with_x_api_key_yields_the_key() {
        let h = map(&[("authorization", "Bearer eyJ.a.b"), ("x-api-key", K2)]);
        assert_eq!(from_headers(&h), Ok(Some(K2)));
    }

    #[test]
    fn looks_like_key_checks_the_prefix() {
        assert!(looks_like_key(K1));
        assert!(looks_like_key(K2));
        assert!(!looks_like_key("eyJhbGciOi"));
        assert!(!looks_like_key("SK_live"));
    }
}

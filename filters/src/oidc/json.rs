//! JSON objects with unique member names (RFC 7515 §4, RFC 7519 §4: duplicates are refused
//! so two parsers can never disagree on what a token says).

use serde::de::{Deserialize, Deserializer, Error, MapAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// A top-level JSON object whose member names are all distinct.
pub(crate) struct UniqueObject(pub(crate) Map<String, Value>);

impl UniqueObject {
    /// Parses `bytes` as one JSON object (no trailing data, no duplicate top-level names).
    pub(crate) fn parse(bytes: &[u8]) -> Option<Map<String, Value>> {
        serde_json::from_slice::<UniqueObject>(bytes)
            .ok()
            .map(|o| o.0)
    }
}

impl<'de> Deserialize<'de> for UniqueObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ObjectVisitor)
    }
}

struct ObjectVisitor;

impl<'de> Visitor<'de> for ObjectVisitor {
    type Value = UniqueObject;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<UniqueObject, A::Error> {
        let mut map = Map::new();
        while let Some((name, value)) = access.next_entry::<String, Value>()? {
            if map.contains_key(&name) {
                return Err(A::Error::custom("duplicate member name"));
            }
            map.insert(name, value);
        }
        Ok(UniqueObject(map))
    }
}

/// Looks `path` up in `claims`: the exact member name first (claim names may hold dots,
/// e.g. URLs), then as a dot-separated path through nested objects.
pub(crate) fn lookup<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    if !path.contains('.') {
        return None;
    }
    let mut parts = path.split('.');
    let mut current = claims.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_and_non_objects_are_refused() {
        assert!(UniqueObject::parse(br#"{"a":1,"b":2}"#).is_some());
        assert!(UniqueObject::parse(br#"{"a":1,"a":2}"#).is_none());
        assert!(UniqueObject::parse(br#"[1]"#).is_none());
        assert!(UniqueObject::parse(br#"{"a":1} x"#).is_none());
        // nested duplicates are the nested value's business, top level is what we read
        assert!(UniqueObject::parse(br#"{"a":{"b":1}}"#).is_some());
    }

    #[test]
    fn lookup_prefers_exact_names() {
        let m =
            UniqueObject::parse(br#"{"a.b":"exact","a":{"b":"nested","c":{"d":"deep"}}}"#).unwrap();
        assert_eq!(lookup(&m, "a.b").unwrap(), "exact");
        assert_eq!(lookup(&m, "a.c.d").unwrap(), "deep");
        assert!(lookup(&m, "a.x").is_none());
        assert!(lookup(&m, "a.b.c").is_none());
    }
}

//! Configured header edits of one head (the request sent upstream, or the response
//! sent to the client), sans I/O: remove, then set, then add.
//!
//! Names and values are parsed once per config (validation has refused what the proxy
//! owns: framing, hop-by-hop, `host` upstream, `x-tollgate-*`); applying the rules
//! clones reference-counted values and allocates nothing beyond the map's own growth.

use http::{HeaderMap, HeaderName, HeaderValue};
use tollgate_routing::HeaderOpsSpec;

/// Why a rule cannot be compiled (validation refuses these first).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderRuleError {
    #[error("`{0}` is not a valid header name")]
    Name(String),
    #[error("the value of `{0}` is not a valid header value")]
    Value(String),
}

/// One direction's rules, compiled.
#[derive(Debug, Clone, Default)]
pub struct HeaderRules {
    remove: Box<[HeaderName]>,
    set: Box<[(HeaderName, HeaderValue)]>,
    add: Box<[(HeaderName, HeaderValue)]>,
}

fn name(n: &str) -> Result<HeaderName, HeaderRuleError> {
    HeaderName::from_bytes(n.as_bytes()).map_err(|_| HeaderRuleError::Name(n.to_string()))
}

fn pairs(
    map: &std::collections::BTreeMap<String, String>,
) -> Result<Box<[(HeaderName, HeaderValue)]>, HeaderRuleError> {
    map.iter()
        .map(|(n, v)| {
            let value =
                HeaderValue::from_str(v).map_err(|_| HeaderRuleError::Value(n.to_string()))?;
            Ok((name(n)?, value))
        })
        .collect()
}

impl HeaderRules {
    pub fn new(ops: &HeaderOpsSpec) -> Result<Self, HeaderRuleError> {
        Ok(HeaderRules {
            remove: ops
                .remove
                .iter()
                .map(|n| name(n))
                .collect::<Result<_, _>>()?,
            set: pairs(&ops.set)?,
            add: pairs(&ops.add)?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in self.remove.iter() {
            headers.remove(name);
        }
        for (name, value) in self.set.iter() {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in self.add.iter() {
            headers.append(name.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(set: &[(&str, &str)], add: &[(&str, &str)], remove: &[&str]) -> HeaderOpsSpec {
        let map = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        HeaderOpsSpec {
            set: map(set),
            add: map(add),
            remove: remove.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn remove_then_set_then_add() {
        let rules = HeaderRules::new(&ops(
            &[("X-Env", "prod")],
            &[("x-tag", "edge")],
            &["x-debug"],
        ))
        .unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-debug", HeaderValue::from_static("1"));
        h.append("x-env", HeaderValue::from_static("a"));
        h.append("x-env", HeaderValue::from_static("b"));
        h.insert("x-tag", HeaderValue::from_static("client"));
        rules.apply(&mut h);
        assert!(h.get("x-debug").is_none());
        let env: Vec<_> = h.get_all("x-env").iter().collect();
        assert_eq!(env, ["prod"], "set replaces every value");
        let tags: Vec<_> = h.get_all("x-tag").iter().collect();
        assert_eq!(tags, ["client", "edge"], "add keeps what was there");
    }

    #[test]
    fn empty_rules_change_nothing() {
        let rules = HeaderRules::new(&HeaderOpsSpec::default()).unwrap();
        assert!(rules.is_empty());
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("1"));
        rules.apply(&mut h);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn invalid_names_and_values_do_not_compile() {
        assert_eq!(
            HeaderRules::new(&ops(&[("bad name", "v")], &[], &[])).unwrap_err(),
            HeaderRuleError::Name("bad name".into())
        );
        assert_eq!(
            HeaderRules::new(&ops(&[], &[("x-a", "a\r\nb")], &[])).unwrap_err(),
            HeaderRuleError::Value("x-a".into())
        );
        assert!(HeaderRules::new(&ops(&[], &[], &["x y"])).is_err());
    }
}

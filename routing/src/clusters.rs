//! An app's named upstream clusters: a vector sorted by name, since an app has one or a
//! few. A `BTreeMap` allocates a whole node (room for 11 clusters, about 3 KB) for the
//! first, which was 28 MiB of a proxy at 10,000 apps. Serialized as a map, as before.

use crate::model::ClusterSpec;
use serde::{Deserialize, Serialize, Serializer};
use std::collections::BTreeMap;

/// Clusters by name, in name order, names unique.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(from = "BTreeMap<String, ClusterSpec>")]
pub struct Clusters(Vec<(String, ClusterSpec)>);

impl Clusters {
    fn find(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(n, _)| n.as_str().cmp(name))
    }

    pub fn get(&self, name: &str) -> Option<&ClusterSpec> {
        self.find(name).ok().map(|i| &self.0[i].1)
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut ClusterSpec> {
        self.find(name).ok().map(|i| &mut self.0[i].1)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.find(name).is_ok()
    }

    /// Adds or replaces `name`; the cluster it replaced, if any.
    pub fn insert(&mut self, name: String, cluster: ClusterSpec) -> Option<ClusterSpec> {
        match self.find(&name) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, cluster)),
            Err(i) => {
                self.0.insert(i, (name, cluster));
                None
            }
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `(name, cluster)` in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &ClusterSpec)> {
        self.0.iter().map(|(n, c)| (n, c))
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut ClusterSpec> {
        self.0.iter_mut().map(|(_, c)| c)
    }
}

impl FromIterator<(String, ClusterSpec)> for Clusters {
    /// A later cluster of the same name replaces an earlier one, as in a map.
    fn from_iter<I: IntoIterator<Item = (String, ClusterSpec)>>(iter: I) -> Self {
        iter.into_iter().collect::<BTreeMap<_, _>>().into()
    }
}

impl<const N: usize> From<[(String, ClusterSpec); N]> for Clusters {
    fn from(items: [(String, ClusterSpec); N]) -> Self {
        items.into_iter().collect()
    }
}

impl Serialize for Clusters {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl From<BTreeMap<String, ClusterSpec>> for Clusters {
    fn from(map: BTreeMap<String, ClusterSpec>) -> Self {
        Clusters(map.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(address: &str) -> ClusterSpec {
        let toml = format!("endpoints = [{{ address = \"{address}\" }}]");
        toml::from_str(&toml).unwrap()
    }

    #[test]
    fn behaves_as_a_map_in_name_order() {
        let mut c = Clusters::default();
        assert_eq!(c.insert("b".into(), cluster("10.0.0.2:80")), None);
        assert_eq!(c.insert("a".into(), cluster("10.0.0.1:80")), None);
        assert_eq!(c.insert("c".into(), cluster("10.0.0.3:80")), None);
        let replaced = c.insert("b".into(), cluster("10.0.0.9:80"));
        assert_eq!(replaced, Some(cluster("10.0.0.2:80")));
        let names: Vec<&String> = c.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(c.get("b"), Some(&cluster("10.0.0.9:80")));
        assert!(c.contains_key("c") && !c.contains_key("d"));
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn serializes_as_the_map_it_replaced() {
        let c: Clusters = [
            ("z".to_string(), cluster("10.0.0.2:80")),
            ("a".to_string(), cluster("10.0.0.1:80")),
        ]
        .into();
        let as_map: BTreeMap<String, ClusterSpec> =
            c.iter().map(|(n, c)| (n.clone(), c.clone())).collect();
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, serde_json::to_string(&as_map).unwrap());
        let back: Clusters = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
        let from_toml: Clusters =
            toml::from_str("[z]\nendpoints = [{ address = \"10.0.0.2:80\" }]\n[a]\nendpoints = [{ address = \"10.0.0.1:80\" }]\n")
                .unwrap();
        assert_eq!(from_toml, c);
    }
}

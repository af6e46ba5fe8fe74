//! The wire form of `POST /v1/usage` and the checks a batch must pass before it
//! is stored. Proxies build the same types, so both sides agree on the format.

use super::Period;
use crate::validate::Problem;
pub use crate::validate::is_app_id;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// Most records one batch may carry.
pub const MAX_RECORDS_PER_BATCH: usize = 5000;
/// Largest count a record may carry: 2^53 - 1, exact in any JSON parser, and
/// far enough below `i64::MAX` that sums over many records do not overflow.
pub const MAX_COUNT: i64 = (1 << 53) - 1;
/// Longest `node_id`, in bytes.
pub const MAX_NODE_ID_BYTES: usize = 128;
/// At most this many problems are reported for one batch.
const MAX_PROBLEMS: usize = 20;

/// What one proxy metered since its previous batch.
///
/// `(node_id, batch_seq)` names the batch: the control service stores a batch
/// once, however often it is sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageBatch {
    pub node_id: String,
    pub batch_seq: i64,
    pub records: Vec<UsageRecord>,
}

/// Usage of one app in one period, as counted by one proxy.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UsageRecord {
    pub app_id: String,
    /// The UTC day, `YYYY-MM-DD`.
    pub period: String,
    pub requests: i64,
    pub bytes_in: i64,
    pub bytes_out: i64,
    pub units: i64,
}

impl UsageRecord {
    /// The four counts, in column order.
    pub fn counts(&self) -> [(&'static str, i64); 4] {
        [
            ("requests", self.requests),
            ("bytes_in", self.bytes_in),
            ("bytes_out", self.bytes_out),
            ("units", self.units),
        ]
    }
}

impl UsageBatch {
    /// Every reason the control service refuses to store the batch (at most 20),
    /// each located by a path such as `records[3].period`, or `Ok`.
    pub fn check(&self) -> Result<(), Vec<Problem>> {
        let mut problems = Vec::new();
        let mut add = |at: String, reason: String| {
            if problems.len() < MAX_PROBLEMS {
                problems.push(Problem { at, reason });
            }
        };
        if self.node_id.is_empty()
            || self.node_id.len() > MAX_NODE_ID_BYTES
            || self.node_id.chars().any(char::is_control)
        {
            add(
                "node_id".into(),
                format!("must be 1-{MAX_NODE_ID_BYTES} bytes without control characters"),
            );
        }
        if self.batch_seq < 0 {
            add("batch_seq".into(), "must be 0 or more".into());
        }
        if self.records.is_empty() {
            add("records".into(), "a batch needs at least one record".into());
        }
        if self.records.len() > MAX_RECORDS_PER_BATCH {
            add(
                "records".into(),
                format!(
                    "{} records; at most {MAX_RECORDS_PER_BATCH} per batch",
                    self.records.len()
                ),
            );
            return Err(problems);
        }
        let mut seen = HashSet::with_capacity(self.records.len());
        for (i, r) in self.records.iter().enumerate() {
            if !is_app_id(&r.app_id) {
                add(
                    format!("records[{i}].app_id"),
                    "must be 1-63 of a-z, 0-9, `-`, `_`, starting with a letter or digit".into(),
                );
            }
            if Period::parse(&r.period).is_none() {
                add(
                    format!("records[{i}].period"),
                    format!("`{}` is not a date (YYYY-MM-DD, UTC)", r.period),
                );
            }
            for (name, value) in r.counts() {
                if !(0..=MAX_COUNT).contains(&value) {
                    add(
                        format!("records[{i}].{name}"),
                        format!("{value} is outside 0-{MAX_COUNT}"),
                    );
                }
            }
            if !seen.insert((r.app_id.as_str(), r.period.as_str())) {
                add(
                    format!("records[{i}]"),
                    format!(
                        "app `{}` and period `{}` appear twice; send one record per app and period",
                        r.app_id, r.period
                    ),
                );
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(app: &str, period: &str) -> UsageRecord {
        UsageRecord {
            app_id: app.into(),
            period: period.into(),
            requests: 1,
            bytes_in: 2,
            bytes_out: 3,
            units: 4,
        }
    }

    fn batch(records: Vec<UsageRecord>) -> UsageBatch {
        UsageBatch {
            node_id: "node-a".into(),
            batch_seq: 7,
            records,
        }
    }

    #[test]
    fn accepts_a_well_formed_batch() {
        let b = batch(vec![
            record("acme", "2026-11-23"),
            record("acme", "2026-11-24"),
            record("globex", "2026-11-23"),
        ]);
        assert_eq!(b.check(), Ok(()));
    }

    #[test]
    fn locates_each_problem() {
        let mut bad = record("acme", "2026-02-30");
        bad.units = -1;
        let mut b = batch(vec![
            bad,
            record("Acme", "2026-11-23"),
            record("globex", "2026-11-23"),
            record("globex", "2026-11-23"),
        ]);
        b.node_id = String::new();
        b.batch_seq = -3;
        let at: Vec<String> = b.check().unwrap_err().into_iter().map(|p| p.at).collect();
        assert_eq!(
            at,
            [
                "node_id",
                "batch_seq",
                "records[0].period",
                "records[0].units",
                "records[1].app_id",
                "records[3]"
            ]
        );
    }

    #[test]
    fn bounds_size_and_counts() {
        let too_many = (0..=MAX_RECORDS_PER_BATCH)
            .map(|i| record(&format!("a{i}"), "2026-11-23"))
            .collect();
        let problems = batch(too_many).check().unwrap_err();
        assert_eq!(problems.len(), 1);
        assert!(problems[0].reason.contains("at most 5000"), "{problems:?}");
        assert_eq!(batch(Vec::new()).check().unwrap_err()[0].at, "records");
        let mut huge = record("acme", "2026-11-23");
        huge.bytes_out = MAX_COUNT + 1;
        assert_eq!(
            batch(vec![huge]).check().unwrap_err()[0].at,
            "records[0].bytes_out"
        );
    }
}

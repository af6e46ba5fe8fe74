//! Budget periods in UTC: which one `now` falls in and when it ends.
//!
//! Civil-date arithmetic after Howard Hinnant's `days_from_civil` / `civil_from_days`
//! (proleptic Gregorian), so no date library is needed.

use std::time::{SystemTime, UNIX_EPOCH};
use tollgate_certs::{civil_from_days, days_from_civil};
use tollgate_routing::BudgetPeriod;

const DAY: u64 = 86_400;

/// The period containing an instant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeriodWindow {
    /// `2026-11-23` for a day, `2026-11` for a month.
    pub key: String,
    /// Unix seconds at which the period ends (exclusive) and its counter expires.
    pub ends_at: u64,
}

/// The `period` that `now` falls in (instants before 1970 count as 1970-01-01).
pub fn period_window(period: BudgetPeriod, now: SystemTime) -> PeriodWindow {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / DAY).unwrap_or(i64::MAX / 2);
    let (y, m, d) = civil_from_days(days);
    match period {
        BudgetPeriod::Day => PeriodWindow {
            key: format!("{y:04}-{m:02}-{d:02}"),
            ends_at: unix_day(days + 1),
        },
        BudgetPeriod::Month => {
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            PeriodWindow {
                key: format!("{y:04}-{m:02}"),
                ends_at: unix_day(days_from_civil(ny, nm, 1)),
            }
        }
    }
}

fn unix_day(days: i64) -> u64 {
    u64::try_from(days).unwrap_or(0).saturating_mul(DAY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn days_round_trip() {
        assert_eq!(civil_from_days(20_780), (2026, 11, 23));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        for z in [-1, 0, 59, 11_016, 20_780, 50_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
    }

    #[test]
    fn keys_and_ends() {
        let t = at(1_795_478_400 - 1); // 2026-11-23T23:59:59Z
        let day = period_window(BudgetPeriod::Day, t);
        assert_eq!(day.key, "2026-11-23");
        assert_eq!(day.ends_at, 1_795_478_400);
        assert_eq!(
            period_window(BudgetPeriod::Day, at(day.ends_at)).key,
            "2026-11-24"
        );
        let month = period_window(BudgetPeriod::Month, t);
        assert_eq!(month.key, "2026-11");
        assert_eq!(month.ends_at, 1_796_083_200);
        let dec = period_window(BudgetPeriod::Month, at(1_796_083_200));
        assert_eq!((dec.key.as_str(), dec.ends_at), ("2026-12", 1_798_761_600));
    }
}

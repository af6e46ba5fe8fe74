//! Budget periods in UTC: which one `now` falls in and when it ends.
//!
//! Calendar dates come from the `time` crate (proleptic Gregorian, UTC).

use std::time::{SystemTime, UNIX_EPOCH};
use time::{Date, Month};
use tollgate_routing::BudgetPeriod;

const DAY: u64 = 86_400;
/// Julian day number of 1970-01-01.
const UNIX_EPOCH_JULIAN_DAY: i64 = 2_440_588;
/// 9999-12-31, the last day with a four-digit year; later instants count as it.
const LAST_DAY: i64 = 2_932_896;

/// The period containing an instant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeriodWindow {
    /// `2026-11-23` for a day, `2026-11` for a month.
    pub key: String,
    /// Unix seconds at which the period ends (exclusive) and its counter expires.
    pub ends_at: u64,
}

/// The `period` that `now` falls in (instants before 1970 count as 1970-01-01,
/// instants after 9999-12-31 as that day).
pub fn period_window(period: BudgetPeriod, now: SystemTime) -> PeriodWindow {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / DAY).unwrap_or(LAST_DAY).min(LAST_DAY);
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

/// The UTC date `days` after 1970-01-01 as (year, month 1-12, day), clamped to the
/// dates the `time` crate represents.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let julian = days.saturating_add(UNIX_EPOCH_JULIAN_DAY).clamp(
        i64::from(Date::MIN.to_julian_day()),
        i64::from(Date::MAX.to_julian_day()),
    );
    let date = i32::try_from(julian)
        .ok()
        .and_then(|j| Date::from_julian_day(j).ok())
        .unwrap_or(Date::MAX);
    (
        i64::from(date.year()),
        i64::from(u8::from(date.month())),
        i64::from(date.day()),
    )
}

/// Days since 1970-01-01 of a calendar date. The only date past 9999-12-31 asked
/// for is 10000-01-01 (the end of December 9999), so anything the `time` crate
/// does not hold is the day after [`LAST_DAY`].
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let date = (|| {
        let month = Month::try_from(u8::try_from(m).ok()?).ok()?;
        Date::from_calendar_date(i32::try_from(y).ok()?, month, u8::try_from(d).ok()?).ok()
    })();
    date.map_or(LAST_DAY + 1, |date| {
        i64::from(date.to_julian_day()) - UNIX_EPOCH_JULIAN_DAY
    })
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

    #[test]
    fn month_ends_follow_leap_years_in_utc() {
        // (an instant in the month, its key, the next month's first second), all UTC.
        for (secs, key, ends_at) in [
            (951_782_400, "2000-02", 951_868_800), // 2000-02-29: leap (divisible by 400)
            (1_709_164_800, "2024-02", 1_709_251_200), // 2024-02-29: leap
            (1_740_700_800, "2025-02", 1_740_787_200), // 2025-02-28: not leap
            (4_107_456_000, "2100-02", 4_107_542_400), // 2100-02-28: not leap (century)
            (1_719_791_999, "2024-06", 1_719_792_000), // the last second of June
            (1_735_689_599, "2024-12", 1_735_689_600), // the last second of the year
        ] {
            let w = period_window(BudgetPeriod::Month, at(secs));
            assert_eq!((w.key.as_str(), w.ends_at), (key, ends_at), "{secs}");
        }
        let leap_day = period_window(BudgetPeriod::Day, at(951_782_400 + 86_399));
        assert_eq!(
            (leap_day.key.as_str(), leap_day.ends_at),
            ("2000-02-29", 951_868_800)
        );
    }

    #[test]
    fn far_instants_stay_in_range() {
        assert_eq!(
            period_window(BudgetPeriod::Day, UNIX_EPOCH - Duration::from_secs(1)).key,
            "1970-01-01"
        );
        let last = at(253_402_300_799); // 9999-12-31T23:59:59Z
        let day = period_window(BudgetPeriod::Day, last);
        assert_eq!(
            (day.key.as_str(), day.ends_at),
            ("9999-12-31", 253_402_300_800)
        );
        let month = period_window(BudgetPeriod::Month, last);
        assert_eq!(
            (month.key.as_str(), month.ends_at),
            ("9999-12", 253_402_300_800)
        );
        let beyond = period_window(BudgetPeriod::Month, at(400_000_000_000));
        assert_eq!(beyond, month);
    }
}

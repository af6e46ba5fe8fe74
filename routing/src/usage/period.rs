//! [`Period`]: the UTC day usage is accounted in, written `YYYY-MM-DD`.

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};
use time::{Date, Month};

const SECONDS_PER_DAY: u64 = 86_400;
/// 9999-12-31: four-digit years only, so periods sort as text.
const LAST_DAY: i64 = 2_932_896;
/// Julian day number of 1970-01-01.
const UNIX_EPOCH_JULIAN_DAY: i64 = 2_440_588;

/// A UTC day from 1970-01-01 to 9999-12-31.
///
/// Ordered by time; its text form (`2026-11-23`) sorts the same way, which the
/// stores rely on for range queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    /// Days since 1970-01-01.
    days: i64,
}

impl Period {
    /// The day `days` after 1970-01-01, if within range.
    pub fn from_unix_days(days: i64) -> Option<Period> {
        (0..=LAST_DAY).contains(&days).then_some(Period { days })
    }

    /// The UTC day containing `time` (1970-01-01 for earlier times).
    pub fn of(time: SystemTime) -> Period {
        let days = time
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() / SECONDS_PER_DAY)
            .unwrap_or(0);
        Period {
            days: i64::try_from(days).unwrap_or(LAST_DAY).min(LAST_DAY),
        }
    }

    /// Days since 1970-01-01.
    pub fn unix_days(self) -> i64 {
        self.days
    }

    /// Parses `YYYY-MM-DD` (a real calendar date); `None` otherwise.
    pub fn parse(text: &str) -> Option<Period> {
        let b = text.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let number = |range: std::ops::Range<usize>| -> Option<i64> {
            b[range].iter().try_fold(0i64, |n, c| {
                c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
            })
        };
        let (y, m, d) = (number(0..4)?, number(5..7)?, number(8..10)?);
        // `time` refuses a month outside 1-12 and a day past the month's end (2026-02-30).
        let month = Month::try_from(u8::try_from(m).ok()?).ok()?;
        let date =
            Date::from_calendar_date(i32::try_from(y).ok()?, month, u8::try_from(d).ok()?).ok()?;
        Period::from_unix_days(i64::from(date.to_julian_day()) - UNIX_EPOCH_JULIAN_DAY)
    }

    /// The calendar date of this day.
    fn date(self) -> Date {
        // `days` is within 1970-01-01..=9999-12-31, which `time` always represents.
        i32::try_from(self.days + UNIX_EPOCH_JULIAN_DAY)
            .ok()
            .and_then(|j| Date::from_julian_day(j).ok())
            .unwrap_or(Date::MIN)
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let date = self.date();
        write!(
            f,
            "{:04}-{:02}-{:02}",
            date.year(),
            u8::from(date.month()),
            date.day()
        )
    }
}

impl FromStr for Period {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Period::parse(s).ok_or_else(|| format!("`{s}` is not a date (YYYY-MM-DD, UTC)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn text_round_trips() {
        for (text, days) in [
            ("1970-01-01", 0),
            ("2000-02-29", 11_016),
            ("2026-11-23", 20_780),
            ("9999-12-31", LAST_DAY),
        ] {
            let p = Period::parse(text).unwrap();
            assert_eq!(p.unix_days(), days, "{text}");
            assert_eq!(p.to_string(), text);
        }
        for days in (0..LAST_DAY).step_by(997) {
            let p = Period::from_unix_days(days).unwrap();
            assert_eq!(Period::parse(&p.to_string()), Some(p));
        }
    }

    #[test]
    fn refuses_what_is_not_a_day() {
        for text in [
            "",
            "2026-11-2",
            "2026-11-233",
            "2026/11/23",
            "2026-13-01",
            "2026-00-10",
            "2026-02-29",
            "2026-04-31",
            "2026-11-00",
            "1969-12-31",
            "+026-11-23",
            "2026-1a-01",
            " 2026-11-23",
        ] {
            assert_eq!(Period::parse(text), None, "{text:?}");
        }
        assert!(Period::from_unix_days(-1).is_none());
        assert!(Period::from_unix_days(LAST_DAY + 1).is_none());
    }

    #[test]
    fn leap_years_and_month_ends() {
        // Divisible by 4 leaps, by 100 does not, by 400 does.
        for (text, real) in [
            ("2024-02-29", true),
            ("2025-02-29", false),
            ("2100-02-29", false),
            ("2000-02-29", true),
            ("2400-02-29", true),
            ("2026-01-31", true),
            ("2026-06-31", false),
            ("2026-09-30", true),
            ("2026-12-31", true),
            ("2026-12-32", false),
        ] {
            assert_eq!(Period::parse(text).is_some(), real, "{text}");
        }
        // Consecutive days across a leap day and a year end.
        let feb28 = Period::parse("2024-02-28").unwrap().unix_days();
        let next: Vec<String> = (feb28..feb28 + 3)
            .map(|d| Period::from_unix_days(d).unwrap().to_string())
            .collect();
        assert_eq!(next, ["2024-02-28", "2024-02-29", "2024-03-01"]);
        let dec31 = Period::parse("2026-12-31").unwrap().unix_days();
        assert_eq!(
            Period::from_unix_days(dec31 + 1).unwrap().to_string(),
            "2027-01-01"
        );
        assert_eq!(
            Period::parse("2026-03-01").unwrap().date().previous_day(),
            Date::from_calendar_date(2026, Month::February, 28).ok()
        );
    }

    #[test]
    fn days_roll_at_utc_midnight() {
        let midnight = UNIX_EPOCH + Duration::from_secs(20_780 * SECONDS_PER_DAY);
        assert_eq!(
            Period::of(midnight - Duration::from_millis(1)).to_string(),
            "2026-11-22"
        );
        assert_eq!(Period::of(midnight).to_string(), "2026-11-23");
        assert_eq!(
            Period::of(UNIX_EPOCH - Duration::from_secs(5)).unix_days(),
            0
        );
    }
}

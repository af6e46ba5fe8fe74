//! Call deadlines as the protocols write them: `grpc-timeout` (at most 8 digits
//! and a unit: H, M, S, m, u, n) and Connect's `connect-timeout-ms` (at most 10
//! digits of milliseconds).

use std::time::Duration;

use http::HeaderValue;

/// Parses up to `max_digits` ASCII digits (at least one) as a number.
fn digits(b: &[u8], max_digits: usize) -> Option<u64> {
    if b.is_empty() || b.len() > max_digits || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// Converts `connect-timeout-ms` to an equivalent `grpc-timeout`: milliseconds
/// while they fit 8 digits, else the smallest coarser unit that fits, rounded up
/// so the upstream never gets less time than the client asked for.
pub fn connect_to_grpc_timeout(v: &HeaderValue) -> Result<HeaderValue, &'static str> {
    let ms = digits(v.as_bytes(), 10).ok_or("connect-timeout-ms must be 1 to 10 ASCII digits")?;
    const MAX: u64 = 99_999_999;
    let units: [(u64, char); 4] = [(1, 'm'), (1_000, 'S'), (60_000, 'M'), (3_600_000, 'H')];
    let (n, unit) = units
        .into_iter()
        .map(|(per, unit)| (ms.div_ceil(per), unit))
        .find(|&(n, _)| n <= MAX)
        .ok_or("connect-timeout-ms out of range")?;
    HeaderValue::try_from(format!("{n}{unit}")).map_err(|_| "connect-timeout-ms out of range")
}

/// Parses a `grpc-timeout` value; `None` if malformed.
pub fn parse_grpc_timeout(v: &HeaderValue) -> Option<Duration> {
    let (unit, num) = v.as_bytes().split_last()?;
    let n = digits(num, 8)?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Parses a `connect-timeout-ms` value; `None` if malformed.
pub fn parse_connect_timeout(v: &HeaderValue) -> Option<Duration> {
    digits(v.as_bytes(), 10).map(Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn grpc_timeout_units() {
        let cases = [
            ("1H", Duration::from_secs(3600)),
            ("2M", Duration::from_secs(120)),
            ("3S", Duration::from_secs(3)),
            ("250m", Duration::from_millis(250)),
            ("7u", Duration::from_micros(7)),
            ("99999999n", Duration::from_nanos(99_999_999)),
            ("0m", Duration::ZERO),
            ("99999999H", Duration::from_secs(99_999_999 * 3600)),
        ];
        for (s, d) in cases {
            assert_eq!(parse_grpc_timeout(&hv(s)), Some(d), "{s}");
        }
        for bad in [
            "",
            "m",
            "10",
            "100000000m",
            "1s",
            "1 m",
            "-1m",
            "1.5S",
            "1mm",
        ] {
            assert_eq!(parse_grpc_timeout(&hv(bad)), None, "{bad:?}");
        }
    }

    #[test]
    fn connect_timeout_parse() {
        assert_eq!(
            parse_connect_timeout(&hv("5000")),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            parse_connect_timeout(&hv("9999999999")),
            Some(Duration::from_millis(9_999_999_999))
        );
        for bad in ["", "12345678901", "1s", "-5", " 5", "5.0"] {
            assert_eq!(parse_connect_timeout(&hv(bad)), None, "{bad:?}");
        }
    }

    #[test]
    fn connect_to_grpc_conversion() {
        let cases = [
            ("1", "1m"),
            ("5000", "5000m"),
            ("99999999", "99999999m"),
            // Nine digits: whole seconds, rounded up.
            ("100000000", "100000S"),
            ("100000001", "100001S"),
            ("9999999999", "10000000S"),
        ];
        for (ms, want) in cases {
            let got = connect_to_grpc_timeout(&hv(ms)).unwrap();
            assert_eq!(got, want, "{ms}");
            let back = parse_grpc_timeout(&got).unwrap();
            let asked = Duration::from_millis(ms.parse().unwrap());
            assert!(
                back >= asked && back - asked < Duration::from_secs(1),
                "{ms}"
            );
        }
        for bad in ["", "abc", "12345678901", "-1", "1.5"] {
            assert!(connect_to_grpc_timeout(&hv(bad)).is_err(), "{bad:?}");
        }
    }
}

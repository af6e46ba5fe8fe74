//! `grpc-timeout` handling for `Slow`.

use std::time::Duration;

use tonic::metadata::MetadataMap;

/// Longest head start `Slow` takes on the caller's deadline.
const MAX_MARGIN: Duration = Duration::from_millis(50);

/// The request's `grpc-timeout`, if present and well-formed.
pub(super) fn grpc_timeout(metadata: &MetadataMap) -> Option<Duration> {
    parse(metadata.get("grpc-timeout")?.to_str().ok()?)
}

/// When to answer `DEADLINE_EXCEEDED`: a little before `budget` runs out, so
/// the answer beats tonic's own server-side timer (which reports `CANCELLED`).
pub(super) fn give_up_after(budget: Duration) -> Duration {
    budget.saturating_sub((budget / 2).min(MAX_MARGIN))
}

/// Parses `TimeoutValue TimeoutUnit` (1-8 ASCII digits, one of `HMSmun`).
fn parse(value: &str) -> Option<Duration> {
    let split = value.len().checked_sub(1)?;
    let (digits, unit) = value.split_at_checked(split)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse("99999999n"), Some(Duration::from_nanos(99_999_999)));
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["", "m", "123456789m", "10x", "-1m", "1.5S", "é"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn gives_up_before_budget() {
        assert_eq!(
            give_up_after(Duration::from_millis(40)),
            Duration::from_millis(20)
        );
        assert_eq!(
            give_up_after(Duration::from_secs(1)),
            Duration::from_millis(950)
        );
    }
}

//! The value syntax of the CLI's limit flags: durations with a unit (`500ms`, `10s`, `2m`, `1h`)
//! and counts or sizes as plain integers, each with its range checked.
//!
//! Parsers only: they turn one flag's text into a typed value or an error message that names
//! the expected form. Which flag takes which parser is `serve.rs`'s and `share.rs`'s business.

use std::time::Duration;

/// A duration: an integer followed by `ms`, `s`, `m` or `h`, at least 1 ms.
///
/// A unit is required so that `--head-timeout 10` cannot be read as either 10 s or 10 ms.
pub fn duration(s: &str) -> Result<Duration, String> {
    let d = any_duration(s)?;
    if d.is_zero() {
        return Err(format!("`{s}` is zero: give at least 1ms"));
    }
    Ok(d)
}

/// A duration as [`duration`], where zero is allowed (`0s`: no grace at all).
pub fn duration_or_zero(s: &str) -> Result<Duration, String> {
    any_duration(s)
}

fn any_duration(s: &str) -> Result<Duration, String> {
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(digits);
    let bad =
        || format!("`{s}` is not a duration: write a whole number and a unit, e.g. 500ms, 10s, 2m or 1h");
    if number.is_empty() {
        return Err(bad());
    }
    let n: u64 = number.parse().map_err(|_| format!("`{s}` is too large"))?;
    let ms_per = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(bad()),
    };
    n.checked_mul(ms_per).map(Duration::from_millis).ok_or_else(|| format!("`{s}` is too large"))
}

/// A count or size of at least 1.
pub fn positive(s: &str) -> Result<usize, String> {
    match count(s)? {
        0 => Err(format!("`{s}`: must be at least 1")),
        n => Ok(n),
    }
}

/// A count where 0 is allowed (e.g. no wait queue at all).
pub fn count(s: &str) -> Result<usize, String> {
    s.parse().map_err(|_| format!("`{s}` is not a whole number"))
}

/// A header count: 1 to [`HEADER_SLOTS`](aether_core::limits::HEADER_SLOTS), what the parser can hold.
pub fn header_count(s: &str) -> Result<usize, String> {
    let max = aether_core::limits::HEADER_SLOTS;
    match positive(s)? {
        n if n > max => Err(format!("`{s}`: at most {max} headers are supported")),
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["10", "", "s", "1.5s", "-1s", "10 s", "10sec", "5d", "1S"] {
            let e = duration(bad).unwrap_err();
            assert!(e.contains("e.g. 500ms"), "{bad}: {e}");
        }
        assert!(duration("0s").unwrap_err().contains("zero"));
        assert_eq!(duration_or_zero("0s"), Ok(Duration::ZERO));
        assert!(duration("99999999999999999999s").unwrap_err().contains("too large"));
        assert!(duration("18446744073709551615h").unwrap_err().contains("too large"));
    }

    #[test]
    fn counts() {
        assert_eq!(positive("1"), Ok(1));
        assert!(positive("0").unwrap_err().contains("at least 1"));
        assert_eq!(count("0"), Ok(0));
        for bad in ["", "-1", "1k", " 3", "2.0"] {
            assert!(count(bad).unwrap_err().contains("whole number"), "{bad}");
        }
        assert_eq!(header_count("256"), Ok(256));
        assert!(header_count("257").unwrap_err().contains("at most 256"));
    }
}

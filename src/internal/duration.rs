//! Durations on the command line: `250ms`, `2s`, `1m`, or a bare number of
//! milliseconds. Both binaries' flags use it; each flag has its own bounds
//! ([`parse_within`]), listed in docs/operating.md.

use std::time::Duration;

/// The units, largest first, in milliseconds; a bare number is milliseconds.
/// A count too large saturates, and is then out of any flag's range.
const UNITS: [(&str, u64); 3] = [("m", 60_000), ("s", 1000), ("ms", 1)];

/// Parses a positive duration; the error says what is wrong and what is
/// expected.
pub fn parse(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        if num.is_empty() {
            format!("{s:?} is not a duration like 250ms or 2s")
        } else {
            format!("{s:?} is far too long")
        }
    })?;
    let unit = if unit.is_empty() { "ms" } else { unit };
    let Some((_, ms)) = UNITS.into_iter().find(|&(u, _)| u == unit) else {
        return Err(format!("unknown unit {unit:?} in {s:?}: use ms, s or m"));
    };
    let d = Duration::from_millis(n.saturating_mul(ms));
    if d.is_zero() {
        return Err("the duration must be greater than zero".into());
    }
    Ok(d)
}

/// Parses a duration and checks that it lies in `min..=max`; the error
/// gives the allowed range in the units a user would write.
pub fn parse_within(s: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let d = parse(s)?;
    if d < min || d > max {
        return Err(format!(
            "{} is out of range: allowed from {} to {}",
            s.trim(),
            format(min),
            format(max)
        ));
    }
    Ok(d)
}

/// Writes `d` the way [`parse`] reads it, in the largest exact unit.
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    let (unit, n) = UNITS
        .into_iter()
        .find(|&(_, n)| ms.is_multiple_of(n.into()))
        .unwrap_or(("ms", 1));
    format!("{}{unit}", ms / u128::from(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_errors() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse("40"), Ok(Duration::from_millis(40)));
        assert!(parse("0s").is_err());
        assert!(parse("fast").is_err());
        assert!(parse("3h").unwrap_err().contains("unknown unit"));
        assert!(parse("").is_err());
        assert!(parse("99999999999999999999s")
            .unwrap_err()
            .contains("far too long"));
    }

    #[test]
    fn bounds_are_inclusive_and_named() {
        let (min, max) = (Duration::from_millis(10), Duration::from_secs(60));
        assert_eq!(parse_within("10ms", min, max), Ok(min));
        assert_eq!(parse_within("1m", min, max), Ok(max));
        let low = parse_within("9ms", min, max).unwrap_err();
        assert_eq!(low, "9ms is out of range: allowed from 10ms to 1m");
        let high = parse_within("525600m", min, max).unwrap_err();
        assert!(high.contains("525600m is out of range"), "{high}");
        assert!(parse_within("0s", min, max)
            .unwrap_err()
            .contains("greater than zero"));
    }

    #[test]
    fn formats_in_the_largest_exact_unit() {
        assert_eq!(format(Duration::from_millis(250)), "250ms");
        assert_eq!(format(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format(Duration::from_secs(30)), "30s");
        assert_eq!(format(Duration::from_secs(600)), "10m");
    }
}

//! Durations on the command line: `250ms`, `2s`, `1m`, or a bare number of
//! milliseconds. Both binaries' flags use it.

use std::time::Duration;

/// Parses a positive duration; the error says what is wrong and what is
/// expected.
pub fn parse(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 250ms or 2s"))?;
    let d = match unit {
        "" | "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        _ => return Err(format!("unknown unit {unit:?} in {s:?}: use ms, s or m")),
    };
    if d.is_zero() {
        return Err("the duration must be greater than zero".into());
    }
    Ok(d)
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
    }
}

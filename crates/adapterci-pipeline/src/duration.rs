//! Durations as people write them in pipelines: `500ms`, `10s`, `5m`, `1h`, or several together like `1m30s`.

use std::time::Duration;

const UNITS: [(&str, u64); 4] = [("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000)];

const EXPECTED: &str = "expected a whole number followed by a unit (ms, s, m or h), like 500ms, 10s, 5m or 1m30s";

/// Parses `text` as a sequence of `<whole number><unit>` parts that are added up.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.is_empty() {
        return Err(format!("empty duration: {EXPECTED}"));
    }
    let invalid = || format!("invalid duration {text:?}: {EXPECTED}");
    let mut total_millis: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits_end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits_end == 0 {
            return Err(invalid());
        }
        let number: u64 = rest[..digits_end].parse().map_err(|_| invalid())?;
        rest = &rest[digits_end..];
        let unit_end = rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        let Some(&(_, millis_per_unit)) = UNITS.iter().find(|(name, _)| *name == unit) else {
            return Err(invalid());
        };
        rest = &rest[unit_end..];
        total_millis = number
            .checked_mul(millis_per_unit)
            .and_then(|millis| total_millis.checked_add(millis))
            .ok_or_else(|| format!("duration {text:?} is too long"))?;
    }
    Ok(Duration::from_millis(total_millis))
}

/// Writes `duration` the way [`parse_duration`] reads it, largest units first (`90s` -> `1m30s`).
pub fn format_duration(duration: Duration) -> String {
    let mut millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    if millis == 0 {
        return "0s".to_string();
    }
    let mut text = String::new();
    for (name, millis_per_unit) in UNITS.iter().rev() {
        let count = millis / millis_per_unit;
        if count > 0 {
            text.push_str(&format!("{count}{name}"));
            millis -= count * millis_per_unit;
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expect: Result<u64, &str>) {
        let parsed = parse_duration(text).map(|duration| duration.as_millis() as u64);
        match (parsed, expect) {
            (Ok(millis), Ok(expected)) => assert_eq!(millis, expected, "{text}"),
            (Err(error), Err(fragment)) => assert!(error.contains(fragment), "{text}: {error}"),
            (got, expected) => panic!("{text}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn ordinary_durations_parse() {
        check("500ms", Ok(500));
        check("10s", Ok(10_000));
        check("5m", Ok(300_000));
        check("1h", Ok(3_600_000));
        check("1m30s", Ok(90_000));
        check("0s", Ok(0));
    }

    #[test]
    fn malformed_durations_are_refused() {
        check("", Err("empty duration"));
        check("10", Err("invalid duration \"10\""));
        check("s", Err("invalid duration"));
        check("10 s", Err("invalid duration"));
        check("1.5s", Err("invalid duration"));
        check("-1s", Err("invalid duration"));
        check("10d", Err("invalid duration"));
        check("10sec", Err("invalid duration"));
        check("99999999999999999999s", Err("invalid duration"));
        check("9999999999999999h", Err("too long"));
        check("١٠s", Err("invalid duration")); // Arabic-Indic digits are not ASCII digits
    }

    #[test]
    fn formatting_round_trips() {
        for millis in [0, 1, 500, 1_000, 90_000, 3_600_000, 3_723_004] {
            let duration = Duration::from_millis(millis);
            assert_eq!(parse_duration(&format_duration(duration)), Ok(duration), "{millis}");
        }
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
    }
}

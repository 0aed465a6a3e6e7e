//! Cron schedules of `cron` triggers: five fields (minute, hour, day of month, month, day of week), in UTC.
//!
//! Each field is `*`, a number, a range `a-b`, a step `*/n` or `a-b/n`, or a comma list of those; day of week
//! takes 0-7 (0 and 7 are Sunday). As in Vixie cron, when both day fields are restricted a day matching
//! either one matches.

use std::fmt;

use chrono::{DateTime, Datelike, Duration, TimeZone, Timelike, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A parsed schedule; it keeps its text for display.
#[derive(Clone, PartialEq, Eq)]
pub struct CronSchedule {
    text: String,
    minutes: u64,
    hours: u64,
    days_of_month: u64,
    months: u64,
    days_of_week: u64,
    day_of_month_restricted: bool,
    day_of_week_restricted: bool,
}

const FIELDS: [(&str, u32, u32); 5] =
    [("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7)];

/// Searching further than this finds nothing new: every schedule repeats within four years (leap days).
const SEARCH_DAYS: i64 = 366 * 4 + 1;

fn parse_number(text: &str, field: &str, min: u32, max: u32) -> Result<u32, String> {
    let value: u32 = text.parse().map_err(|_| format!("{field}: {text:?} is not a number"))?;
    if value < min || value > max {
        return Err(format!("{field}: {value} is outside {min}-{max}"));
    }
    Ok(value)
}

/// The bit set of one field, and whether it is restricted (not `*`).
fn parse_field(text: &str, field: &str, min: u32, max: u32) -> Result<(u64, bool), String> {
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step = parse_number(step, field, 1, max.max(1))?;
                (range, step)
            }
            None => (part, 1),
        };
        let (low, high) = if range == "*" {
            (min, max)
        } else if let Some((low, high)) = range.split_once('-') {
            let (low, high) = (parse_number(low, field, min, max)?, parse_number(high, field, min, max)?);
            if low > high {
                return Err(format!("{field}: range {low}-{high} runs backwards"));
            }
            (low, high)
        } else {
            let value = parse_number(range, field, min, max)?;
            // `5/15` means from 5 to the end in steps of 15.
            (value, if part.contains('/') { max } else { value })
        };
        let mut value = low;
        while value <= high {
            bits |= 1 << value;
            value += step;
        }
    }
    Ok((bits, text != "*"))
}

impl CronSchedule {
    /// Parses five space-separated fields; the error names the field at fault.
    pub fn parse(text: &str) -> Result<CronSchedule, String> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "invalid schedule {text:?}: expected 5 fields (minute hour day-of-month month day-of-week), got {}",
                fields.len()
            ));
        }
        let mut parsed = [(0u64, false); 5];
        for (slot, (field_text, (name, min, max))) in parsed.iter_mut().zip(fields.iter().zip(FIELDS)) {
            *slot = parse_field(field_text, name, min, max)
                .map_err(|reason| format!("invalid schedule {text:?}: {reason}"))?;
        }
        let mut days_of_week = parsed[4].0;
        if days_of_week & (1 << 7) != 0 {
            days_of_week = (days_of_week | 1) & !(1 << 7);
        }
        Ok(CronSchedule {
            text: fields.join(" "),
            minutes: parsed[0].0,
            hours: parsed[1].0,
            days_of_month: parsed[2].0,
            months: parsed[3].0,
            days_of_week,
            day_of_month_restricted: parsed[2].1,
            day_of_week_restricted: parsed[4].1,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn day_matches(&self, time: DateTime<Utc>) -> bool {
        let by_month = self.days_of_month & (1 << time.day()) != 0;
        let by_week = self.days_of_week & (1 << time.weekday().num_days_from_sunday()) != 0;
        match (self.day_of_month_restricted, self.day_of_week_restricted) {
            (true, true) => by_month || by_week,
            _ => by_month && by_week,
        }
    }

    /// The first minute strictly after `after` that the schedule names; `None` for a schedule that never fires
    /// (like February 30th).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let start = Utc.with_ymd_and_hms(after.year(), after.month(), after.day(), after.hour(), after.minute(), 0);
        let mut time = start.single()? + Duration::minutes(1);
        let limit = time + Duration::days(SEARCH_DAYS);
        while time < limit {
            if self.months & (1 << time.month()) == 0 || !self.day_matches(time) {
                let next_day = time.date_naive().succ_opt()?.and_hms_opt(0, 0, 0)?;
                time = Utc.from_utc_datetime(&next_day);
                continue;
            }
            if self.hours & (1 << time.hour()) == 0 {
                time = time.with_minute(0)? + Duration::hours(1);
                continue;
            }
            if self.minutes & (1 << time.minute()) == 0 {
                time += Duration::minutes(1);
                continue;
            }
            return Some(time);
        }
        None
    }
}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CronSchedule({:?})", self.text)
    }
}

impl fmt::Display for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for CronSchedule {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for CronSchedule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        CronSchedule::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).map(|time| time.with_timezone(&Utc)).unwrap_or_default()
    }

    fn check(schedule: &str, after: &str, expect: Option<&str>) {
        let schedule = CronSchedule::parse(schedule).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(schedule.next_after(at(after)), expect.map(at), "{schedule} after {after}");
    }

    #[test]
    fn next_firing_times() {
        check("0 3 * * *", "2026-03-01T02:59:30Z", Some("2026-03-01T03:00:00Z"));
        check("0 3 * * *", "2026-03-01T03:00:00Z", Some("2026-03-02T03:00:00Z"));
        check("*/15 * * * *", "2026-03-01T10:16:00Z", Some("2026-03-01T10:30:00Z"));
        check("30 9 * * 1-5", "2026-03-06T10:00:00Z", Some("2026-03-09T09:30:00Z")); // Friday -> Monday
        check("0 0 29 2 *", "2026-03-01T00:00:00Z", Some("2028-02-29T00:00:00Z"));
        check("0 0 30 2 *", "2026-03-01T00:00:00Z", None);
        check("0 12 1 * 0", "2026-03-02T00:00:00Z", Some("2026-03-08T12:00:00Z")); // either day field
        check("0 0 * * 7", "2026-03-02T00:00:00Z", Some("2026-03-08T00:00:00Z")); // 7 is Sunday
        check("5/20 * * * *", "2026-03-01T10:26:00Z", Some("2026-03-01T10:45:00Z"));
    }

    #[test]
    fn bad_schedules_name_the_field() {
        for (text, expect) in [
            ("* * * *", "expected 5 fields"),
            ("60 * * * *", "minute: 60 is outside 0-59"),
            ("* 5-2 * * *", "hour: range 5-2 runs backwards"),
            ("* * 0 * *", "day of month: 0 is outside 1-31"),
            ("* * * jan *", "month: \"jan\" is not a number"),
            ("*/0 * * * *", "minute: 0 is outside 1-59"),
        ] {
            let error = CronSchedule::parse(text).err().unwrap_or_default();
            assert!(error.contains(expect), "{text}: {error}");
        }
    }
}

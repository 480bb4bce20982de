//! Recovery target times as PostgreSQL's `recovery_target_time` takes them.
//!
//! Accepted: a date and a time of day separated by `T` or a space, optional seconds and
//! fractional seconds, and a time zone as `Z`, `UTC`, `GMT` or a numeric offset (`+00`,
//! `+05:30`, `-0800`), with or without a space before it. That covers what psql prints for a
//! `timestamptz` (`2026-12-04 15:25:03.429792+00`) and RFC 3339 (`2026-12-04T15:25:03Z`).
//!
//! A time without a zone is refused: PostgreSQL would read it in the server's `TimeZone`, which
//! the agent cannot know, and a restore that stops an hour early loses data without a word.
//! Parsing is jiff's (its Temporal/ISO 8601 grammar); only the zone names are mapped first.

use chrono::{DateTime, Utc};

/// Why a recovery target time was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetTimeError {
    #[error("{text:?} has no time zone: add one (Z, UTC, +00, +05:30, -0800), e.g. 2026-12-04 15:25:03.429792+00")]
    NoTimeZone { text: String },
    #[error(
        "{text:?} is not a time PostgreSQL's recovery_target_time takes: write a date, a time and a zone, \
         e.g. 2026-12-04 15:25:03.429792+00 or 2026-12-04T15:25:03Z ({reason})"
    )]
    Invalid { text: String, reason: String },
}

/// Parses a recovery target time into UTC.
pub fn parse_target_time(text: &str) -> Result<DateTime<Utc>, TargetTimeError> {
    let trimmed = text.trim();
    let normalized = normalize_zone(trimmed);
    let invalid = |reason: String| TargetTimeError::Invalid { text: text.to_string(), reason };
    let timestamp: jiff::Timestamp = match normalized.parse() {
        Ok(timestamp) => timestamp,
        // A well-formed civil time without an offset: say that the zone is what is missing.
        Err(_) if normalized.parse::<jiff::civil::DateTime>().is_ok() => {
            return Err(TargetTimeError::NoTimeZone { text: text.to_string() });
        }
        Err(error) => return Err(invalid(error.to_string())),
    };
    DateTime::from_timestamp(timestamp.as_second(), timestamp.subsec_nanosecond().unsigned_abs())
        .ok_or_else(|| invalid("out of range".to_string()))
}

/// Maps a trailing zone name to `Z` and drops a space before a numeric offset.
fn normalize_zone(text: &str) -> String {
    for name in [" utc", " gmt", "utc", "gmt"] {
        let split = text.len().checked_sub(name.len()).filter(|&at| text.is_char_boundary(at));
        if let Some(at) = split
            && text[at..].eq_ignore_ascii_case(name)
        {
            return format!("{}Z", text[..at].trim_end());
        }
    }
    // `2026-12-04 15:25:03 +05:30`: the offset follows the last space, after the time.
    if let Some(at) = text.rfind(' ')
        && text[at + 1..].starts_with(['+', '-'])
        && text[..at].contains(':')
    {
        return format!("{}{}", text[..at].trim_end(), &text[at + 1..]);
    }
    text.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().expect("an RFC 3339 time")
    }

    #[test]
    fn the_timestamp_psql_prints_is_accepted() {
        assert_eq!(parse_target_time("2026-12-04 15:25:03.429792+00"), Ok(utc("2026-12-04T15:25:03.429792Z")));
    }

    #[test]
    fn rfc_3339_with_t_or_space_and_fractional_seconds_is_accepted() {
        assert_eq!(parse_target_time("2026-12-04T15:25:03Z"), Ok(utc("2026-12-04T15:25:03Z")));
        assert_eq!(parse_target_time("2026-12-04t15:25:03z"), Ok(utc("2026-12-04T15:25:03Z")));
        assert_eq!(parse_target_time("2026-12-04 15:25:03Z"), Ok(utc("2026-12-04T15:25:03Z")));
        assert_eq!(parse_target_time("2026-12-04T15:25:03.5Z"), Ok(utc("2026-12-04T15:25:03.5Z")));
        assert_eq!(parse_target_time("2026-12-04T15:25:03.123456789Z"), Ok(utc("2026-12-04T15:25:03.123456789Z")));
        assert_eq!(parse_target_time("2026-12-04 15:25+00"), Ok(utc("2026-12-04T15:25:00Z")));
    }

    #[test]
    fn numeric_offsets_in_every_form_are_accepted() {
        let expected = utc("2026-12-04T15:25:03Z");
        for text in [
            "2026-12-04 15:25:03+00",
            "2026-12-04 15:25:03+00:00",
            "2026-12-04 15:25:03+0000",
            "2026-12-04 20:55:03+05:30",
            "2026-12-04 20:55:03+0530",
            "2026-12-04 07:25:03-0800",
            "2026-12-04 07:25:03-08",
            "2026-12-04 07:25:03 -08:00",
        ] {
            assert_eq!(parse_target_time(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn zone_names_utc_and_gmt_are_accepted() {
        let expected = utc("2026-12-04T15:25:03.429792Z");
        for text in [
            "2026-12-04 15:25:03.429792 UTC",
            "2026-12-04 15:25:03.429792UTC",
            "2026-12-04 15:25:03.429792 utc",
            "2026-12-04T15:25:03.429792 GMT",
            "  2026-12-04 15:25:03.429792+00  ",
        ] {
            assert_eq!(parse_target_time(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn a_time_without_a_zone_is_refused_saying_the_zone_is_missing() {
        for text in ["2026-12-04 15:25:03", "2026-12-04T15:25:03.5"] {
            assert_eq!(parse_target_time(text), Err(TargetTimeError::NoTimeZone { text: text.to_string() }));
        }
        let message = parse_target_time("2026-12-04 15:25:03").expect_err("refused").to_string();
        assert!(message.contains("no time zone") && message.contains("+00"), "{message}");
    }

    #[test]
    fn garbage_is_refused_with_an_example_of_what_works() {
        for text in [
            "",
            "yesterday",
            "now",
            "2026-13-04 15:25:03+00",
            "2026-12-04 25:25:03+00",
            "2026-12-04 15:25:03+99",
            "1700000000",
        ] {
            let refused = parse_target_time(text);
            assert!(matches!(refused, Err(TargetTimeError::Invalid { .. })), "{text:?}: {refused:?}");
            let message = refused.expect_err("refused").to_string();
            assert!(message.contains("e.g. 2026-12-04 15:25:03.429792+00"), "{message}");
        }
    }
}

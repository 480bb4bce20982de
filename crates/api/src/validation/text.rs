//! Small text checks that mirror the schema's patterns and CEL's `duration()`.

/// Seconds in a duration written as in `walArchiving.archiveTimeout`: hours, minutes and
/// seconds in that order, each optional but at least one, e.g. `60s`, `5m`, `1h30m`.
/// None when the text is not such a duration.
pub fn parse_duration_seconds(text: &str) -> Option<u64> {
    let mut total: u64 = 0;
    let mut rest = text;
    let mut units = ['h', 'm', 's'].iter().peekable();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let value: u64 = rest[..digits].parse().ok()?;
        let unit = rest[digits..].chars().next()?;
        // Units appear in order h, m, s, each at most once.
        loop {
            let expected = *units.next()?;
            if expected == unit {
                break;
            }
        }
        let factor = match unit {
            'h' => 3600,
            'm' => 60,
            _ => 1,
        };
        total = total.checked_add(value.checked_mul(factor)?)?;
        rest = &rest[digits + 1..];
    }
    Some(total)
}

/// `^[a-z][a-z0-9_]*([.][a-z0-9_]+)?$`: a PostgreSQL parameter name, optionally prefixed by an
/// extension (`pg_stat_statements.max`).
pub(crate) fn is_parameter_name(name: &str) -> bool {
    let (head, tail) = match name.split_once('.') {
        Some((head, tail)) => (head, Some(tail)),
        None => (name, None),
    };
    let word = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    head.bytes().next().is_some_and(|b| b.is_ascii_lowercase()) && word(head) && tail.is_none_or(word)
}

/// `^[^\s"#]+$`: a word pg_hba.conf reads without quoting.
pub(crate) fn is_single_word(text: &str) -> bool {
    !text.is_empty() && !text.chars().any(|c| c.is_whitespace() || c == '"' || c == '#')
}

/// `^[a-zA-Z_]+$`.
pub(crate) fn is_option_name(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphabetic() || b == b'_')
}

/// A WAL location as PostgreSQL prints it: `^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$`.
pub(crate) fn is_lsn(text: &str) -> bool {
    let hex = |s: &str| (1..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit());
    text.split_once('/').is_some_and(|(high, low)| hex(high) && hex(low))
}

/// A recovery target time as PostgreSQL takes it, with a zone: RFC 3339 or psql's form
/// (`2026-12-04 15:25:03.429792+00`), `UTC`/`GMT` or an offset, a space allowed before the zone.
/// The agent parses it with `pgec2_core::target_time`, which accepts the same forms.
pub(crate) fn is_target_time(text: &str) -> bool {
    let upper = text.to_ascii_uppercase();
    let zoned = match upper.strip_suffix("UTC").or_else(|| upper.strip_suffix("GMT")) {
        Some(civil) => format!("{}Z", civil.trim_end()),
        None => match upper.rsplit_once(' ') {
            Some((civil, offset)) if civil.contains(':') && offset.starts_with(['+', '-']) => {
                format!("{civil}{offset}")
            }
            _ => upper,
        },
    };
    zoned.parse::<k8s_openapi::jiff::Timestamp>().is_ok()
}

/// Non-empty, at most `max` characters, every one ASCII alphanumeric or in `extra`: the shape
/// of the schema's simple patterns (`^[A-Za-z0-9_.@-]+$` and the like).
pub(crate) fn is_token(text: &str, max: usize, extra: &str) -> bool {
    (1..=max).contains(&text.len()) && text.chars().all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
}

/// A Kubernetes object name (DNS-1123 subdomain): `^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`, at most
/// 253 characters.
pub(crate) fn is_object_name(name: &str) -> bool {
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    name.len() <= 253
        && edge_ok(name.chars().next())
        && edge_ok(name.chars().last())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
}

/// `^[0-9]{1,20}$`.
pub(crate) fn is_xid(text: &str) -> bool {
    (1..=20).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_kubernetes_durations() {
        assert_eq!(parse_duration_seconds("60s"), Some(60));
        assert_eq!(parse_duration_seconds("5m"), Some(300));
        assert_eq!(parse_duration_seconds("1h30m"), Some(5400));
        assert_eq!(parse_duration_seconds("2h5s"), Some(7205));
        for bad in ["", "60", "s", "5m1h", "1m1m", "1.5s", "-1s", "1d"] {
            assert_eq!(parse_duration_seconds(bad), None, "{bad}");
        }
    }

    #[test]
    fn parameter_names_follow_postgresql_spelling() {
        for good in ["work_mem", "pg_stat_statements.max", "shared_buffers", "a1"] {
            assert!(is_parameter_name(good), "{good}");
        }
        for bad in ["", "Work_mem", "1abc", "a.b.c", "a.", "work-mem", "a b"] {
            assert!(!is_parameter_name(bad), "{bad}");
        }
    }

    #[test]
    fn lsns_are_two_hex_halves() {
        assert!(is_lsn("0/3000060"));
        assert!(is_lsn("1A/FFFFFFFF"));
        assert!(!is_lsn("0/"));
        assert!(!is_lsn("3000060"));
        assert!(!is_lsn("0/123456789"));
        assert!(!is_lsn("g/1"));
    }

    #[test]
    fn object_names_are_dns_subdomains() {
        for good in ["orders-db", "a", "db.v2", "0"] {
            assert!(is_object_name(good), "{good}");
        }
        for bad in ["", "Orders", "-db", "db-", "db_1", "a/b"] {
            assert!(!is_object_name(bad), "{bad}");
        }
    }

    #[test]
    fn timestamps_need_an_offset() {
        assert!(is_target_time("2025-03-01T12:00:00Z"));
        assert!(is_target_time("2025-03-01T12:00:00.5+02:00"));
        assert!(is_target_time("2026-12-04 15:25:03.429792+00"));
        assert!(is_target_time("2026-12-04 15:25:03 UTC"));
        assert!(is_target_time("2026-12-04 07:25:03 -0800"));
        assert!(!is_target_time("2025-03-01 12:00"), "no zone");
        assert!(!is_target_time("yesterday"));
        assert!(!is_target_time("UTC"));
    }
}

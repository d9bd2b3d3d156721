//! Turning numbers into text and back: sizes, ages, durations.

use std::time::{Duration, SystemTime};

/// `0 B`, `812 KiB`, `3.4 MiB`, `1.2 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else if value < 10.0 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}

/// How long before `now` `then` was: `just now`, `42 s ago`, `5 min ago`,
/// `3 h ago`, `12 days ago`; `never` for `None`.
pub fn ago(then: Option<SystemTime>, now: SystemTime) -> String {
    let Some(then) = then else {
        return "never".into();
    };
    let secs = now.duration_since(then).map(|d| d.as_secs()).unwrap_or(0);
    match secs {
        0..=4 => "just now".into(),
        5..=119 => format!("{secs} s ago"),
        120..=7_199 => format!("{} min ago", secs / 60),
        7_200..=172_799 => format!("{} h ago", secs / 3600),
        _ => format!("{} days ago", secs / 86_400),
    }
}

/// `0.84 s`, `12.3 s`.
pub fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 10.0 {
        format!("{s:.2} s")
    } else {
        format!("{s:.1} s")
    }
}

/// Parses a size: bytes, or a number with `K`, `M`, `G` or `T` (powers of
/// 1024, either case, optionally followed by `B` or `iB`). `None` when it
/// is not one or overflows.
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (digits, shift) = match t.chars().last()? {
        'k' | 'K' => (&t[..t.len() - 1], 10),
        'm' | 'M' => (&t[..t.len() - 1], 20),
        'g' | 'G' => (&t[..t.len() - 1], 30),
        't' | 'T' => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(1u64 << shift)
}

/// Parses an age: a whole number followed by `s`, `m`, `h`, `d` or `w`
/// (`90m`, `12h`, `30d`); `None` when it is not one or overflows.
pub fn parse_age(text: &str) -> Option<Duration> {
    let t = text.trim();
    let unit: u64 = match t.chars().last()? {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        'w' => 604_800,
        _ => return None,
    };
    let digits = &t[..t.len() - 1];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits
        .parse::<u64>()
        .ok()?
        .checked_mul(unit)
        .map(Duration::from_secs)
}

/// The first 16 hex digits of a key, as lists show it.
pub fn short_key(key: &str) -> &str {
    key.get(..16).unwrap_or(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_have_a_unit() {
        assert_eq!(parse_age("30d"), Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_age("90m"), Some(Duration::from_secs(5_400)));
        assert_eq!(parse_age("0s"), Some(Duration::ZERO));
        assert_eq!(parse_age("2w"), Some(Duration::from_secs(1_209_600)));
        for bad in ["30", "d", "-1d", "1.5h", "3y", "", "99999999999999999999d"] {
            assert_eq!(parse_age(bad), None, "{bad}");
        }
    }

    #[test]
    fn sizes_read_like_du() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.0 KiB");
        assert_eq!(bytes(3_576_504), "3.4 MiB");
        assert_eq!(bytes(117 << 20), "117 MiB");
        assert_eq!(bytes(20 << 30), "20 GiB");
        assert_eq!(bytes(u64::MAX), "16777216 TiB");
    }

    #[test]
    fn ages_round_down_to_a_readable_unit() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let at = |secs_ago: u64| Some(now - Duration::from_secs(secs_ago));
        assert_eq!(ago(None, now), "never");
        assert_eq!(ago(at(0), now), "just now");
        assert_eq!(ago(at(42), now), "42 s ago");
        assert_eq!(ago(at(600), now), "10 min ago");
        assert_eq!(ago(at(3 * 3600), now), "3 h ago");
        assert_eq!(ago(at(12 * 86_400), now), "12 days ago");
        // A clock that went backwards is "now", not a panic.
        assert_eq!(ago(Some(now + Duration::from_secs(60)), now), "just now");
    }

    #[test]
    fn durations() {
        assert_eq!(seconds(Duration::from_millis(840)), "0.84 s");
        assert_eq!(seconds(Duration::from_millis(12_345)), "12.3 s");
    }

    #[test]
    fn size_suffixes() {
        assert_eq!(parse_size("512M"), Some(512 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(
            parse_size("2gib"),
            None,
            "only B/iB after the unit, as given"
        );
        assert_eq!(parse_size("2GiB"), Some(2 << 30));
        assert_eq!(parse_size("64MB"), Some(64 << 20));
        assert_eq!(parse_size(" 4096 "), Some(4096));
        assert_eq!(parse_size("1k"), Some(1024));
        for bad in ["", "M", "-1M", "1.5G", "12X", "99999999999T"] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn short_keys() {
        assert_eq!(short_key("0123456789abcdef0123"), "0123456789abcdef");
        assert_eq!(short_key("abc"), "abc");
    }
}

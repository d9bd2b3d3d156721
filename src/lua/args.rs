//! Argument checking. Every message starts with the call and names the
//! argument, e.g. `vm:mkdir: opts.perm must be an integer in 0..4095 (got -1)`.

use std::time::Duration;

use mlua::{Table, Value};

use super::errors::{ApiError, ApiResult};

/// A short description of a value for messages: its type, or the value itself
/// for numbers and short strings.
pub fn show(v: &Value) -> String {
    match v {
        Value::Nil => "nil".into(),
        Value::Boolean(b) => b.to_string(),
        Value::Integer(i) => i.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let b = s.as_bytes();
            if b.len() <= 40 {
                format!("{:?}", String::from_utf8_lossy(&b))
            } else {
                format!("a string of {} bytes", b.len())
            }
        }
        other => format!("a {}", other.type_name()),
    }
}

fn bad(call: &str, name: &str, want: &str, v: &Value) -> ApiError {
    ApiError::msg(format!("{call}: {name} must be {want} (got {})", show(v)))
}

/// Bytes of a string argument.
pub fn bytes(call: &str, name: &str, v: &Value) -> ApiResult<Vec<u8>> {
    match v {
        Value::String(s) => Ok(s.as_bytes().to_vec()),
        _ => Err(bad(call, name, "a string", v)),
    }
}

/// Linux's `PATH_MAX` (the terminating NUL included).
const PATH_MAX: usize = 4096;

/// A guest path: a non-empty string without NUL bytes, shorter than `PATH_MAX`.
pub fn path(call: &str, name: &str, v: &Value) -> ApiResult<Vec<u8>> {
    let p = match v {
        Value::String(s) => s.as_bytes().to_vec(),
        _ => return Err(bad(call, name, "a path string", v)),
    };
    if p.is_empty() {
        return Err(ApiError::msg(format!("{call}: {name} must not be empty")));
    }
    if p.contains(&0) {
        return Err(ApiError::msg(format!(
            "{call}: {name} must not contain NUL bytes (got {})",
            show(v)
        )));
    }
    if p.len() >= PATH_MAX {
        return Err(ApiError::msg(format!(
            "{call}: {name} is {} bytes long; Linux paths are shorter than {PATH_MAX} bytes",
            p.len()
        )));
    }
    Ok(p)
}

/// A Lua string literal for messages: `"/etc/x"`.
pub fn quote(b: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(b))
}

/// Argument `i` (nil when absent).
pub fn arg(rest: &[Value], i: usize) -> &Value {
    rest.get(i).unwrap_or(&Value::Nil)
}

/// An optional table argument.
pub fn opt_table(call: &str, name: &str, v: &Value) -> ApiResult<Option<Table>> {
    match v {
        Value::Nil => Ok(None),
        Value::Table(t) => Ok(Some(t.clone())),
        _ => Err(bad(call, name, "a table or nil", v)),
    }
}

/// Raises on keys of `t` outside `known` (catches typos such as `parent=`).
pub fn check_keys(call: &str, name: &str, t: &Table, known: &[&str]) -> ApiResult<()> {
    for pair in t.clone().pairs::<Value, Value>() {
        let (k, _) = pair?;
        let ok = match &k {
            Value::String(s) => known.iter().any(|n| s.as_bytes() == n.as_bytes()),
            _ => false,
        };
        if !ok {
            return Err(unknown_option(call, name, &k, known));
        }
    }
    Ok(())
}

/// The error for an unknown key `k` of the options table `name`: names the
/// option meant when the key looks like a typo of one.
pub fn unknown_option(call: &str, name: &str, k: &Value, known: &[&str]) -> ApiError {
    let place = if name == "opts" {
        String::new()
    } else {
        format!(" in {name}")
    };
    // Internal options (a leading `_`, such as the benchmarks' `_raw_port`)
    // are accepted but not advertised.
    let known: Vec<&str> = known
        .iter()
        .copied()
        .filter(|n| !n.starts_with('_'))
        .collect();
    let hint = match k {
        Value::String(s) => closest(&s.to_string_lossy(), &known),
        _ => None,
    };
    ApiError::msg(match hint {
        Some(h) => format!(
            "{call}: unknown option {}{place} (did you mean \"{h}\"?)",
            show(k)
        ),
        None => format!(
            "{call}: unknown option {}{place} (known: {})",
            show(k),
            known.join(", ")
        ),
    })
}

/// The known name closest to a mistyped one (edit distance at most 2, or
/// one a prefix of the other), if any.
fn closest<'a>(typo: &str, known: &[&'a str]) -> Option<&'a str> {
    let typo = typo.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (edit_distance(&typo, k), *k))
        .filter(|(d, k)| {
            *d <= 2 || (typo.len() >= 3 && (k.starts_with(&typo) || typo.starts_with(k)))
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance (option names are short).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

/// A boolean field (nil = false).
pub fn field_bool(call: &str, t: &Table, key: &str, tname: &str) -> ApiResult<bool> {
    match t.raw_get::<Value>(key)? {
        Value::Nil => Ok(false),
        Value::Boolean(b) => Ok(b),
        v => Err(bad(call, &format!("{tname}.{key}"), "a boolean", &v)),
    }
}

/// An integer from a Lua number (integral floats accepted).
pub fn integer(v: &Value) -> Option<i64> {
    match v {
        Value::Integer(i) => Some(*i),
        Value::Number(n) if n.fract() == 0.0 && n.is_finite() && n.abs() < 9.0e15 => {
            Some(*n as i64)
        }
        _ => None,
    }
}

/// An optional integer field within `[min, max]`.
pub fn field_int(
    call: &str,
    t: &Table,
    key: &str,
    tname: &str,
    min: i64,
    max: i64,
) -> ApiResult<Option<i64>> {
    let v = t.raw_get::<Value>(key)?;
    if v.is_nil() {
        return Ok(None);
    }
    match integer(&v) {
        Some(i) if (min..=max).contains(&i) => Ok(Some(i)),
        _ => Err(bad(
            call,
            &format!("{tname}.{key}"),
            &format!("an integer in {min}..{max}"),
            &v,
        )),
    }
}

/// A permission mode: an integer in 0..0o7777, or an octal string (`"0755"`,
/// `"755"`, `"0o755"`): Lua has no octal literals, and `perm = 0755` is the
/// decimal 755.
pub fn mode(call: &str, name: &str, v: &Value) -> ApiResult<u32> {
    let parsed = match v {
        Value::String(s) => {
            let text = s.to_string_lossy();
            let digits = text.strip_prefix("0o").unwrap_or(&text);
            (!digits.is_empty())
                .then(|| u32::from_str_radix(digits, 8).ok())
                .flatten()
        }
        other => integer(other).and_then(|i| u32::try_from(i).ok()),
    };
    match parsed {
        Some(m) if m <= 0o7777 => Ok(m),
        _ => Err(bad(
            call,
            name,
            "a mode: an integer in 0..4095 or an octal string such as \"0755\"",
            v,
        )),
    }
}

/// An optional mode field `key` of table `t` (see [`mode`]).
pub fn field_mode(call: &str, t: &Table, key: &str, tname: &str) -> ApiResult<Option<u32>> {
    let v = t.raw_get::<Value>(key)?;
    if v.is_nil() {
        return Ok(None);
    }
    mode(call, &format!("{tname}.{key}"), &v).map(Some)
}

/// Parses a duration: seconds as a number, or a string `"500ms"`, `"5s"`,
/// `"5m"`, `"2h"` (a bare numeric string is seconds).
pub fn duration(call: &str, name: &str, v: &Value) -> ApiResult<Duration> {
    let secs = match v {
        Value::Integer(i) => *i as f64,
        Value::Number(n) => *n,
        Value::String(s) => {
            let text = s.to_string_lossy();
            parse_duration_str(text.trim()).ok_or_else(|| {
                ApiError::msg(format!(
                    "{call}: {name}: cannot parse duration {:?} (expected a number of seconds or \"500ms\", \"5s\", \"5m\", \"2h\")",
                    text
                ))
            })?
        }
        _ => {
            return Err(bad(
                call,
                name,
                "a duration (number of seconds or a string like \"5s\")",
                v,
            ))
        }
    };
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(ApiError::msg(format!(
            "{call}: {name} must be a finite, non-negative duration (got {})",
            show(v)
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_duration_str(s: &str) -> Option<f64> {
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let num = num.trim();
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    num.parse::<f64>().ok().map(|n| n * scale)
}

/// Parses a size: bytes as a number, or a string `"512k"`, `"256M"`, `"2G"`
/// (binary units; an optional trailing `B`/`iB` is accepted).
pub fn size(call: &str, name: &str, v: &Value) -> ApiResult<u64> {
    let bad_size = || {
        ApiError::msg(format!(
            "{call}: {name} must be a size in bytes or a string like \"256M\", \"2G\", \"512k\" (got {})",
            show(v)
        ))
    };
    match v {
        Value::Integer(_) | Value::Number(_) => integer(v)
            .filter(|i| *i >= 0)
            .map(|i| i as u64)
            .ok_or_else(bad_size),
        Value::String(s) => parse_size_str(s.to_string_lossy().trim()).ok_or_else(bad_size),
        _ => Err(bad_size()),
    }
}

/// Parses `"256M"`-style sizes.
pub fn parse_size_str(s: &str) -> Option<u64> {
    let s = s
        .strip_suffix("iB")
        .or_else(|| s.strip_suffix('B'))
        .unwrap_or(s);
    let (num, mult) = match s.chars().last()? {
        'k' | 'K' => (&s[..s.len() - 1], 1u64 << 10),
        'm' | 'M' => (&s[..s.len() - 1], 1 << 20),
        'g' | 'G' => (&s[..s.len() - 1], 1 << 30),
        't' | 'T' => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    let num = num.trim();
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    num.parse::<u64>().ok()?.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    #[test]
    fn typos_find_the_option_meant() {
        let known = ["args", "env", "env_clear", "cwd", "stdin", "timeout"];
        assert_eq!(closest("timout", &known), Some("timeout"));
        assert_eq!(closest("tiemout", &known), Some("timeout"));
        assert_eq!(closest("evn", &known), Some("env"));
        assert_eq!(closest("Timeout", &known), Some("timeout"));
        assert_eq!(closest("quux", &known), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_str("500ms"), Some(0.5));
        assert_eq!(parse_duration_str("5s"), Some(5.0));
        assert_eq!(parse_duration_str("5m"), Some(300.0));
        assert_eq!(parse_duration_str("2h"), Some(7200.0));
        assert_eq!(parse_duration_str("1.5s"), Some(1.5));
        assert_eq!(parse_duration_str("3"), Some(3.0));
        assert_eq!(parse_duration_str("5fortnights"), None);
        assert_eq!(parse_duration_str("-1s"), None);
        assert_eq!(parse_duration_str(""), None);
        assert_eq!(parse_duration_str("ms"), None);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size_str("256M"), Some(256 << 20));
        assert_eq!(parse_size_str("2G"), Some(2 << 30));
        assert_eq!(parse_size_str("512k"), Some(512 << 10));
        assert_eq!(parse_size_str("1GiB"), Some(1 << 30));
        assert_eq!(parse_size_str("4096"), Some(4096));
        assert_eq!(parse_size_str("12X"), None);
        assert_eq!(parse_size_str("-1M"), None);
        assert_eq!(parse_size_str(""), None);
    }
}

//! Dates in rules: absolute (`2026-01-31`, `2026-01-31T12:00:00Z`) and
//! relative to the evaluation's `now` (`now-30d`), as milliseconds since the
//! epoch. Written by hand because the guest carries no date library.

use super::Operand;

/// `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM:SSZ`, or relative: `now`, `now-30d`,
/// `now-12h`, `now+7d` (units s, m, h, d, w).
pub(super) fn parse_time(s: &str) -> Result<Operand, String> {
    let bad = || {
        format!(
            "\"{s}\" is not a date: use YYYY-MM-DD, a UTC time such as \
             2026-01-31T12:00:00Z, or a relative time such as now-30d"
        )
    };
    if let Some(rest) = s.strip_prefix("now") {
        if rest.is_empty() {
            return Ok(Operand::Relative(0));
        }
        let (sign, rest) = if let Some(r) = rest.strip_prefix('-') {
            (1i64, r)
        } else if let Some(r) = rest.strip_prefix('+') {
            (-1i64, r)
        } else {
            return Err(bad());
        };
        let Some(unit) = rest.chars().last() else {
            return Err(bad());
        };
        let num = &rest[..rest.len() - unit.len_utf8()];
        if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let n: i64 = num.parse().map_err(|_| bad())?;
        let unit_ms: i64 = match unit {
            's' => 1_000,
            'm' => 60_000,
            'h' => 3_600_000,
            'd' => 86_400_000,
            'w' => 7 * 86_400_000,
            _ => return Err(bad()),
        };
        return n
            .checked_mul(unit_ms)
            .map(|ms| Operand::Relative(sign * ms))
            .ok_or_else(bad);
    }
    parse_absolute(s).map(Operand::Timestamp).ok_or_else(bad)
}

/// Milliseconds since the epoch for a date or a UTC RFC 3339 time.
pub fn parse_absolute(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in_month = match m {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        1..=12 => 31,
        _ => return None,
    };
    if !(1..=days_in_month).contains(&d) {
        return None;
    }
    let mut secs = days_from_civil(y, m, d) * 86_400;
    if b.len() > 10 {
        if b.len() != 20 || b[10] != b'T' || b[13] != b':' || b[16] != b':' || b[19] != b'Z' {
            return None;
        }
        let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if hh > 23 || mm > 59 || ss > 60 {
            return None;
        }
        secs += hh * 3600 + mm * 60 + ss;
    }
    Some(secs * 1000)
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

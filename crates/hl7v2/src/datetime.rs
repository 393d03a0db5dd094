//! HL7 v2 dates and times (DT, TS/DTM) to FHIR `date`, `dateTime`,
//! `instant`.
//!
//! v2 `YYYY[MM[DD[HH[MM[SS[.S...]]]]]][+/-ZZZZ]` keeps its precision. FHIR
//! requires a time zone whenever a time is present; a v2 time without an
//! offset is read as **UK local time** (GMT, or BST from 01:00 UTC on the
//! last Sunday of March to 01:00 UTC on the last Sunday of October), the
//! convention of an English trust's systems. In the repeated autumn hour
//! (01:00-01:59 local) BST is assumed; a spring-gap time is read as BST.

/// A v2 date/time that is not one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidDateTime;

struct Parts {
    year: u32,
    month: Option<u32>,
    day: Option<u32>,
    hour: Option<u32>,
    minute: Option<u32>,
    second: Option<u32>,
    fraction: Option<String>,
    /// `+HH:MM`
    offset: Option<String>,
}

fn digits(s: &str) -> Result<u32, InvalidDateTime> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(InvalidDateTime);
    }
    s.parse().map_err(|_| InvalidDateTime)
}

fn parse(ts: &str) -> Result<Parts, InvalidDateTime> {
    let ts = ts.trim();
    if !ts.is_ascii() {
        return Err(InvalidDateTime);
    }
    let (body, offset) = match ts.find(['+', '-']) {
        Some(at) => {
            let off = &ts[at + 1..];
            if off.len() != 4 {
                return Err(InvalidDateTime);
            }
            let (hh, mm) = (digits(&off[..2])?, digits(&off[2..])?);
            if hh > 14 || mm > 59 {
                return Err(InvalidDateTime);
            }
            (&ts[..at], Some(format!("{}{:02}:{:02}", &ts[at..=at], hh, mm)))
        }
        None => (ts, None),
    };
    let (main, fraction) = match body.split_once('.') {
        Some((main, frac)) => {
            digits(frac)?;
            (main, Some(frac.to_owned()))
        }
        None => (body, None),
    };
    if !matches!(main.len(), 4 | 6 | 8 | 10 | 12 | 14) {
        return Err(InvalidDateTime);
    }
    if fraction.is_some() && main.len() != 14 {
        return Err(InvalidDateTime);
    }
    let at = |from: usize| -> Result<Option<u32>, InvalidDateTime> { main.get(from..from + 2).map(digits).transpose() };
    let parts = Parts {
        year: digits(&main[..4])?,
        month: at(4)?,
        day: at(6)?,
        hour: at(8)?,
        minute: at(10)?,
        second: at(12)?,
        fraction,
        offset,
    };
    if let Some(m) = parts.month {
        if !(1..=12).contains(&m) {
            return Err(InvalidDateTime);
        }
        if let Some(d) = parts.day
            && (d < 1 || d > days_in_month(parts.year, m))
        {
            return Err(InvalidDateTime);
        }
    }
    if parts.hour.is_some_and(|h| h > 23)
        || parts.minute.is_some_and(|m| m > 59)
        || parts.second.is_some_and(|s| s > 59)
    {
        return Err(InvalidDateTime);
    }
    Ok(parts)
}

fn is_leap(y: u32) -> bool {
    (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400)
}

fn days_in_month(y: u32, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// 0 = Sunday (Sakamoto's algorithm).
fn day_of_week(y: u32, m: u32, d: u32) -> u32 {
    const T: [u32; 12] = [0, 3, 2, 5, 0, 3, 5, 1, 4, 6, 2, 4];
    let y = if m < 3 { y - 1 } else { y };
    (y + y / 4 - y / 100 + y / 400 + T[(m - 1) as usize] + d) % 7
}

fn last_sunday(y: u32, m: u32) -> u32 {
    let last = days_in_month(y, m);
    last - day_of_week(y, m, last)
}

/// The UK offset for a local date and hour.
fn uk_offset(y: u32, m: u32, d: u32, hour: u32) -> &'static str {
    let bst = match m {
        4..=9 => true,
        3 => {
            let change = last_sunday(y, 3);
            d > change || (d == change && hour >= 1)
        }
        10 => {
            let change = last_sunday(y, 10);
            d < change || (d == change && hour < 2)
        }
        _ => false,
    };
    if bst { "+01:00" } else { "+00:00" }
}

/// A v2 DT/TS as a FHIR `date` (`YYYY`, `YYYY-MM` or `YYYY-MM-DD`); a time
/// part is dropped.
pub fn to_date(ts: &str) -> Result<String, InvalidDateTime> {
    let p = parse(ts)?;
    Ok(date_part(&p))
}

fn date_part(p: &Parts) -> String {
    match (p.month, p.day) {
        (Some(m), Some(d)) => format!("{:04}-{:02}-{:02}", p.year, m, d),
        (Some(m), None) => format!("{:04}-{:02}", p.year, m),
        _ => format!("{:04}", p.year),
    }
}

/// A v2 TS as a FHIR `dateTime`: a date when no time was sent, else
/// `YYYY-MM-DDThh:mm:ss[.f]+zz:zz` (seconds padded, UK offset inferred
/// when none was sent).
pub fn to_datetime(ts: &str) -> Result<String, InvalidDateTime> {
    let p = parse(ts)?;
    let Some(hour) = p.hour else {
        return Ok(date_part(&p));
    };
    let (m, d) = (p.month.unwrap_or(1), p.day.unwrap_or(1));
    let offset = p.offset.clone().unwrap_or_else(|| uk_offset(p.year, m, d, hour).to_owned());
    let fraction = p.fraction.as_ref().map(|f| format!(".{f}")).unwrap_or_default();
    Ok(format!(
        "{}T{:02}:{:02}:{:02}{fraction}{offset}",
        date_part(&p),
        hour,
        p.minute.unwrap_or(0),
        p.second.unwrap_or(0),
    ))
}

/// A v2 TS as a FHIR `instant`: only when at least hours were sent.
pub fn to_instant(ts: &str) -> Result<Option<String>, InvalidDateTime> {
    let p = parse(ts)?;
    if p.hour.is_none() {
        return Ok(None);
    }
    to_datetime(ts).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_keep_their_precision() {
        assert_eq!(to_date("19800101").unwrap(), "1980-01-01");
        assert_eq!(to_date("198001").unwrap(), "1980-01");
        assert_eq!(to_date("1980").unwrap(), "1980");
        assert_eq!(to_date("198001011230").unwrap(), "1980-01-01");
        assert!(to_date("19800230").is_err());
        assert!(to_date("1980013").is_err());
        assert!(to_date("2024-01-01").is_err());
    }

    #[test]
    fn times_without_an_offset_are_uk_local_time() {
        assert_eq!(to_datetime("20261125093000").unwrap(), "2026-11-25T09:30:00+00:00");
        assert_eq!(to_datetime("202607010930").unwrap(), "2026-07-01T09:30:00+01:00");
        // 2026: BST starts 29 March, ends 25 October.
        assert_eq!(to_datetime("2026032900300").ok(), None, "odd length is invalid");
        assert_eq!(to_datetime("202603290030").unwrap(), "2026-03-29T00:30:00+00:00");
        assert_eq!(to_datetime("202603290230").unwrap(), "2026-03-29T02:30:00+01:00");
        assert_eq!(to_datetime("202610250130").unwrap(), "2026-10-25T01:30:00+01:00");
        assert_eq!(to_datetime("202610250230").unwrap(), "2026-10-25T02:30:00+00:00");
    }

    #[test]
    fn explicit_offsets_and_fractions_are_kept() {
        assert_eq!(to_datetime("20261125093000.123+0100").unwrap(), "2026-11-25T09:30:00.123+01:00");
        assert_eq!(to_datetime("2026112509-0500").unwrap(), "2026-11-25T09:00:00-05:00");
        assert!(to_datetime("20261125093000+25").is_err());
        assert_eq!(to_instant("20261125").unwrap(), None);
    }
}

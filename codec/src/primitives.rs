//! Format checks of FHIR R4 primitive values (FHIR R4 §2.24 datatypes), because fhirbolt stores
//! dates, codes, ids... as unchecked strings and accepts strings where JSON needs numbers or
//! booleans. Each check returns the reason a person needs to fix the value.

use serde_json::Value;

use crate::schema::Prim;

/// Checks a JSON scalar against its FHIR primitive type.
pub(crate) fn check(prim: Prim, value: &Value) -> Result<(), String> {
    match prim {
        Prim::Boolean => match value {
            Value::Bool(_) => Ok(()),
            _ => Err("must be a JSON boolean (true or false, without quotes)".into()),
        },
        Prim::Integer => check_integer(value, i64::from(i32::MIN), "an integer"),
        Prim::UnsignedInt => check_integer(value, 0, "an unsignedInt (0 or more)"),
        Prim::PositiveInt => check_integer(value, 1, "a positiveInt (1 or more)"),
        Prim::Integer64 => match value {
            Value::Number(n) if n.is_i64() => Ok(()),
            _ => Err("must be a JSON integer".into()),
        },
        Prim::Decimal => match value {
            // serde_json only produces numbers that match FHIR's decimal grammar.
            Value::Number(_) => Ok(()),
            Value::String(_) => Err("must be a JSON number, not a string".into()),
            _ => Err("must be a JSON number".into()),
        },
        Prim::Unknown => Ok(()),
        _ => match value {
            Value::String(s) => check_str(prim, s),
            _ => Err(format!(
                "must be a JSON string ({} values are strings in FHIR JSON)",
                prim.name()
            )),
        },
    }
}

fn check_integer(value: &Value, min: i64, what: &str) -> Result<(), String> {
    let max = i64::from(i32::MAX);
    match value {
        // With serde_json's arbitrary_precision, `1.0` and `1e3` are not i64.
        Value::Number(n) => match n.as_i64() {
            Some(i) if (min..=max).contains(&i) => Ok(()),
            Some(_) => Err(format!("must be {what} no greater than {max}")),
            None if n.as_u64().is_some() => Err(format!("must be {what} no greater than {max}")),
            None => Err(format!(
                "must be {what}: a whole number without fraction or exponent"
            )),
        },
        Value::String(_) => Err(format!("must be {what} as a JSON number, not a string")),
        _ => Err(format!("must be {what} as a JSON number")),
    }
}

/// Checks the lexical form of a string-valued primitive (also used for XML attribute values).
pub(crate) fn check_str(prim: Prim, s: &str) -> Result<(), String> {
    match prim {
        Prim::Date => check_date(s),
        Prim::DateTime => check_date_time(s),
        Prim::Instant => check_instant(s),
        Prim::Time => {
            let mut c = Cursor::new(s);
            tri(
                time(&mut c).and_then(|_| c.end()),
                "hh:mm:ss or hh:mm:ss.sss",
            )
        }
        Prim::Code => check_code(s),
        Prim::Id => check_id(s),
        Prim::Uri | Prim::Url | Prim::Canonical => check_uri(s),
        Prim::Oid => check_oid(s),
        Prim::Uuid => check_uuid(s),
        Prim::Decimal => check_decimal_literal(s),
        // Strings, markdown, base64Binary and xhtml are not checked.
        _ => Ok(()),
    }
}

/// Turns a parse failure into a reason, appending the expected layout when the value has the
/// wrong shape (as opposed to a wrong number, which has its own reason).
fn tri(r: Result<(), Fail>, layout: &str) -> Result<(), String> {
    r.map_err(|f| match f {
        Fail::Shape => format!("expected {layout}"),
        Fail::Reason(reason) => reason,
    })
}

enum Fail {
    Shape,
    Reason(String),
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn new(s: &'a str) -> Self {
        Cursor {
            s: s.as_bytes(),
            i: 0,
        }
    }

    fn at_end(&self) -> bool {
        self.i == self.s.len()
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn digits(&mut self, n: usize) -> Result<u32, Fail> {
        let chunk = self.s.get(self.i..self.i + n).ok_or(Fail::Shape)?;
        if !chunk.iter().all(u8::is_ascii_digit) {
            return Err(Fail::Shape);
        }
        self.i += n;
        Ok(chunk
            .iter()
            .fold(0, |acc, d| acc * 10 + u32::from(d - b'0')))
    }

    fn end(&self) -> Result<(), Fail> {
        if self.at_end() {
            Ok(())
        } else {
            Err(Fail::Shape)
        }
    }
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

// `is_multiple_of` needs Rust 1.87; the workspace supports 1.85.
#[allow(clippy::manual_is_multiple_of)]
fn is_leap(year: u32) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Parses `YYYY`, `YYYY-MM` or `YYYY-MM-DD`; returns how many parts were present (1..=3).
fn date(c: &mut Cursor) -> Result<u8, Fail> {
    let year = c.digits(4)?;
    if year == 0 {
        return Err(Fail::Reason("year 0000 does not exist".into()));
    }
    if !c.eat(b'-') {
        return Ok(1);
    }
    let month = c.digits(2)?;
    if !(1..=12).contains(&month) {
        return Err(Fail::Reason(format!(
            "month {month:02} is not between 01 and 12"
        )));
    }
    if !c.eat(b'-') {
        return Ok(2);
    }
    let day = c.digits(2)?;
    let max = days_in_month(year, month);
    if day == 0 || day > max {
        let name = MONTHS[month as usize - 1];
        let why = if month == 2 && day == 29 {
            format!(" ({year} is not a leap year)")
        } else {
            String::new()
        };
        return Err(Fail::Reason(format!(
            "day {day} does not exist in {name} {year}{why}"
        )));
    }
    Ok(3)
}

/// Parses `hh:mm:ss(.s+)?`. Second 60 is allowed for leap seconds, as FHIR's regex does.
fn time(c: &mut Cursor) -> Result<(), Fail> {
    let hour = c.digits(2)?;
    if !c.eat(b':') {
        return Err(Fail::Shape);
    }
    let minute = c.digits(2)?;
    if !c.eat(b':') {
        return Err(Fail::Reason("seconds are required (hh:mm:ss)".into()));
    }
    let second = c.digits(2)?;
    if hour > 23 {
        return Err(Fail::Reason(format!(
            "hour {hour:02} is not between 00 and 23"
        )));
    }
    if minute > 59 {
        return Err(Fail::Reason(format!(
            "minute {minute:02} is not between 00 and 59"
        )));
    }
    if second > 60 {
        return Err(Fail::Reason(format!(
            "second {second:02} is not between 00 and 59"
        )));
    }
    if c.eat(b'.') {
        let start = c.i;
        while c.peek().is_some_and(|b| b.is_ascii_digit()) {
            c.i += 1;
        }
        if c.i == start {
            return Err(Fail::Reason(
                "a decimal point must be followed by digits".into(),
            ));
        }
    }
    Ok(())
}

/// Parses `Z` or `±hh:mm` (offsets from -14:00 to +14:00).
fn zone(c: &mut Cursor) -> Result<(), Fail> {
    if c.at_end() {
        return Err(Fail::Reason(
            "a time zone (Z or ±hh:mm) is required when a time is given".into(),
        ));
    }
    if c.eat(b'Z') {
        return Ok(());
    }
    if !(c.eat(b'+') || c.eat(b'-')) {
        return Err(Fail::Reason("the time zone must be Z or ±hh:mm".into()));
    }
    let hour = c
        .digits(2)
        .map_err(|_| Fail::Reason("the time zone must be Z or ±hh:mm".into()))?;
    if !c.eat(b':') {
        return Err(Fail::Reason("the time zone must be Z or ±hh:mm".into()));
    }
    let minute = c
        .digits(2)
        .map_err(|_| Fail::Reason("the time zone must be Z or ±hh:mm".into()))?;
    if minute > 59 || hour > 14 || (hour == 14 && minute != 0) {
        return Err(Fail::Reason(format!(
            "time zone offset {hour:02}:{minute:02} is not between -14:00 and +14:00"
        )));
    }
    Ok(())
}

fn check_date(s: &str) -> Result<(), String> {
    let mut c = Cursor::new(s);
    tri(
        date(&mut c).and_then(|_| c.end()),
        "YYYY, YYYY-MM or YYYY-MM-DD",
    )
}

fn check_date_time(s: &str) -> Result<(), String> {
    let layout = "YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss(.sss)(Z or ±hh:mm)";
    let mut c = Cursor::new(s);
    let r = date(&mut c).and_then(|parts| {
        if c.at_end() {
            return Ok(());
        }
        if !c.eat(b'T') {
            return Err(Fail::Shape);
        }
        if parts != 3 {
            return Err(Fail::Reason(
                "a time needs a full date (YYYY-MM-DD) before the T".into(),
            ));
        }
        time(&mut c)?;
        zone(&mut c)?;
        c.end()
    });
    tri(r, layout)
}

fn check_instant(s: &str) -> Result<(), String> {
    let mut c = Cursor::new(s);
    let r = date(&mut c).and_then(|parts| {
        if parts != 3 || !c.eat(b'T') {
            return Err(Fail::Shape);
        }
        time(&mut c)?;
        zone(&mut c)?;
        c.end()
    });
    tri(
        r,
        "YYYY-MM-DDThh:mm:ss(.sss)(Z or ±hh:mm), with time and time zone",
    )
}

fn check_code(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.starts_with(char::is_whitespace) || s.ends_with(char::is_whitespace) {
        return Err("must not start or end with whitespace".into());
    }
    let mut previous_space = false;
    for ch in s.chars() {
        let space = ch.is_whitespace();
        if space && previous_space {
            return Err("must not contain two whitespace characters in a row".into());
        }
        previous_space = space;
    }
    Ok(())
}

fn check_id(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if let Some(bad) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '.'))
    {
        return Err(format!(
            "character {bad:?} is not allowed (only A-Z, a-z, 0-9, '-' and '.')"
        ));
    }
    if s.len() > 64 {
        return Err(format!(
            "is {} characters long; at most 64 are allowed",
            s.len()
        ));
    }
    Ok(())
}

fn check_uri(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.chars().any(char::is_whitespace) {
        return Err("must not contain whitespace".into());
    }
    Ok(())
}

fn check_oid(s: &str) -> Result<(), String> {
    let ok = s.strip_prefix("urn:oid:").is_some_and(|rest| {
        let mut arcs = rest.split('.');
        let first_ok = matches!(arcs.next(), Some("0" | "1" | "2"));
        let mut count = 0;
        let others_ok = arcs.all(|arc| {
            count += 1;
            !arc.is_empty()
                && arc.bytes().all(|b| b.is_ascii_digit())
                && (arc == "0" || !arc.starts_with('0'))
        });
        first_ok && others_ok && count > 0
    });
    if ok {
        Ok(())
    } else {
        Err("expected urn:oid: followed by dot-separated numbers (urn:oid:1.2.3)".into())
    }
}

fn check_uuid(s: &str) -> Result<(), String> {
    let ok = s.strip_prefix("urn:uuid:").is_some_and(|rest| {
        let groups: Vec<&str> = rest.split('-').collect();
        groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
            && groups.iter().all(|g| {
                g.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            })
    });
    if ok {
        Ok(())
    } else {
        Err("expected urn:uuid: followed by a lower-case UUID".into())
    }
}

/// FHIR's decimal grammar (the same as JSON's numbers): `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
pub(crate) fn check_decimal_literal(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    let int_start = i;
    let int_len = digits(&mut i);
    let mut ok = int_len > 0 && !(int_len > 1 && b[int_start] == b'0');
    if ok && b.get(i) == Some(&b'.') {
        i += 1;
        ok = digits(&mut i) > 0;
    }
    if ok && matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        ok = digits(&mut i) > 0;
    }
    if ok && i == b.len() {
        Ok(())
    } else {
        Err("expected a decimal number such as 12, -0.5 or 1.5e3".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(p: Prim, s: &str) {
        assert_eq!(
            check_str(p, s),
            Ok(()),
            "{} `{s}` should be valid",
            p.name()
        );
    }

    fn bad(p: Prim, s: &str) -> String {
        check_str(p, s).expect_err(&format!("{} `{s}` should be invalid", p.name()))
    }

    #[test]
    fn dates() {
        for s in [
            "2000",
            "2000-02",
            "2000-02-29",
            "1990-02-28",
            "2024-12-31",
            "0001-01-01",
        ] {
            ok(Prim::Date, s);
        }
        assert_eq!(
            bad(Prim::Date, "1990-02-30"),
            "day 30 does not exist in February 1990"
        );
        assert_eq!(
            bad(Prim::Date, "1900-02-29"),
            "day 29 does not exist in February 1900 (1900 is not a leap year)"
        );
        assert_eq!(
            bad(Prim::Date, "2023-04-31"),
            "day 31 does not exist in April 2023"
        );
        assert_eq!(
            bad(Prim::Date, "2023-13"),
            "month 13 is not between 01 and 12"
        );
        assert_eq!(
            bad(Prim::Date, "2023-00-10"),
            "month 00 is not between 01 and 12"
        );
        assert_eq!(
            bad(Prim::Date, "2023-01-00"),
            "day 0 does not exist in January 2023"
        );
        for s in [
            "",
            "99",
            "2023-1-1",
            "2023/01/01",
            "2023-01-01T10:00:00Z",
            " 2023",
            "20230101",
            "0000",
        ] {
            bad(Prim::Date, s);
        }
    }

    #[test]
    fn date_times() {
        for s in [
            "2000",
            "2000-02",
            "2000-02-29",
            "2015-02-07T13:28:17-05:00",
            "2017-01-01T00:00:00.000Z",
            "2017-01-01T23:59:60Z",
            "2017-01-01T12:00:00+14:00",
            "2017-01-01T12:00:00.123456789+01:30",
        ] {
            ok(Prim::DateTime, s);
        }
        assert_eq!(
            bad(Prim::DateTime, "2017-01-01T10:00:00"),
            "a time zone (Z or ±hh:mm) is required when a time is given"
        );
        assert_eq!(
            bad(Prim::DateTime, "2017-01-01T24:00:00Z"),
            "hour 24 is not between 00 and 23"
        );
        assert_eq!(
            bad(Prim::DateTime, "1990-02-30T10:00:00Z"),
            "day 30 does not exist in February 1990"
        );
        assert!(bad(Prim::DateTime, "2017-01-01T10:00Z").contains("seconds are required"));
        assert!(bad(Prim::DateTime, "2017-01-01T10:00:00+15:00").contains("-14:00 and +14:00"));
        assert!(bad(Prim::DateTime, "2017-01T10:00:00Z").contains("full date"));
        for s in [
            "2017-01-01 10:00:00Z",
            "2017-01-01T10:00:00.Z",
            "2017-01-01T",
            "2017-01-01T10:00:00z",
        ] {
            bad(Prim::DateTime, s);
        }
    }

    #[test]
    fn instants() {
        ok(Prim::Instant, "2015-02-07T13:28:17.239+02:00");
        ok(Prim::Instant, "2015-02-07T13:28:17Z");
        for s in [
            "2015-02-07",
            "2015",
            "2015-02-07T13:28:17",
            "2015-02-30T13:28:17Z",
        ] {
            bad(Prim::Instant, s);
        }
        assert!(bad(Prim::Instant, "2015-02-07T13:28:17").contains("time zone"));
    }

    #[test]
    fn times() {
        for s in ["00:00:00", "23:59:59", "12:30:00.5"] {
            ok(Prim::Time, s);
        }
        for s in ["24:00:00", "12:30", "12:60:00", "12:30:00Z", "1:30:00", ""] {
            bad(Prim::Time, s);
        }
    }

    #[test]
    fn codes() {
        for s in ["male", "final", "a b", "in progress", "urn:x"] {
            ok(Prim::Code, s);
        }
        assert_eq!(bad(Prim::Code, ""), "must not be empty");
        assert_eq!(
            bad(Prim::Code, " male"),
            "must not start or end with whitespace"
        );
        assert_eq!(
            bad(Prim::Code, "male\n"),
            "must not start or end with whitespace"
        );
        assert_eq!(
            bad(Prim::Code, "a  b"),
            "must not contain two whitespace characters in a row"
        );
    }

    #[test]
    fn ids() {
        ok(Prim::Id, "abc-123.DEF");
        ok(Prim::Id, &"a".repeat(64));
        assert!(bad(Prim::Id, &"a".repeat(65)).contains("at most 64"));
        assert!(bad(Prim::Id, "a_b").contains("'_'"));
        assert!(bad(Prim::Id, "a b").contains("' '"));
        assert_eq!(bad(Prim::Id, ""), "must not be empty");
    }

    #[test]
    fn uris() {
        for p in [Prim::Uri, Prim::Url, Prim::Canonical] {
            ok(p, "http://example.org/fhir");
            ok(p, "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0");
            assert_eq!(bad(p, ""), "must not be empty");
            assert_eq!(
                bad(p, "http://example.org/a b"),
                "must not contain whitespace"
            );
        }
        ok(Prim::Oid, "urn:oid:1.2.840.10008");
        bad(Prim::Oid, "urn:oid:3.2");
        bad(Prim::Oid, "1.2.3");
        ok(Prim::Uuid, "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0");
        bad(Prim::Uuid, "urn:uuid:0C3151BD-1CBF-4D64-B04D-CD9187A4C6E0");
    }

    #[test]
    fn decimals() {
        for s in ["0", "-0.5", "12", "1.50", "1e3", "6.02E+23", "-1.5e-3"] {
            assert_eq!(check_decimal_literal(s), Ok(()), "{s}");
        }
        for s in ["", "01", ".5", "1.", "+1", "1,5", "abc", "1e", "NaN", " 1"] {
            assert!(check_decimal_literal(s).is_err(), "{s}");
        }
        assert_eq!(check(Prim::Decimal, &json!(1.50)), Ok(()));
        assert!(check(Prim::Decimal, &json!("1.5"))
            .unwrap_err()
            .contains("not a string"));
        assert!(check(Prim::Decimal, &json!(true)).is_err());
    }

    #[test]
    fn integers_and_booleans() {
        assert_eq!(check(Prim::Boolean, &json!(true)), Ok(()));
        assert!(check(Prim::Boolean, &json!("true")).is_err());
        assert!(check(Prim::Boolean, &json!(1)).is_err());

        assert_eq!(check(Prim::PositiveInt, &json!(1)), Ok(()));
        assert_eq!(check(Prim::PositiveInt, &json!(2147483647)), Ok(()));
        assert!(check(Prim::PositiveInt, &json!(0)).is_err());
        assert!(check(Prim::PositiveInt, &json!(-1)).is_err());
        assert!(check(Prim::PositiveInt, &json!(2147483648u64)).is_err());
        assert!(check(Prim::PositiveInt, &json!("1")).is_err());

        assert_eq!(check(Prim::UnsignedInt, &json!(0)), Ok(()));
        assert!(check(Prim::UnsignedInt, &json!(-1)).is_err());
        assert!(check(
            Prim::UnsignedInt,
            &serde_json::from_str::<Value>("1.0").unwrap()
        )
        .is_err());

        assert_eq!(check(Prim::Integer, &json!(-2147483648i64)), Ok(()));
        assert!(check(Prim::Integer, &json!(-2147483649i64)).is_err());
        assert!(check(Prim::Integer, &json!(1.5)).is_err());

        assert!(check(Prim::Date, &json!(1990))
            .unwrap_err()
            .contains("JSON string"));
        assert_eq!(check(Prim::Unknown, &json!(1)), Ok(()));
    }
}

//! DHIS2 value types and the check/normalisation of a value against its type.

use chrono::NaiveDate;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    Text,
    LongText,
    Letter,
    PhoneNumber,
    Email,
    Boolean,
    TrueOnly,
    Date,
    DateTime,
    Time,
    Number,
    UnitInterval,
    Percentage,
    Integer,
    IntegerPositive,
    IntegerNegative,
    IntegerZeroOrPositive,
    Url,
    Age,
    /// Types the gateway stores as text without further checks (coordinates, files, references...).
    Other,
}

impl ValueType {
    pub fn parse(s: &str) -> ValueType {
        match s {
            "TEXT" | "MULTI_TEXT" | "USERNAME" => ValueType::Text,
            "LONG_TEXT" => ValueType::LongText,
            "LETTER" => ValueType::Letter,
            "PHONE_NUMBER" => ValueType::PhoneNumber,
            "EMAIL" => ValueType::Email,
            "BOOLEAN" => ValueType::Boolean,
            "TRUE_ONLY" => ValueType::TrueOnly,
            "DATE" => ValueType::Date,
            "DATETIME" => ValueType::DateTime,
            "TIME" => ValueType::Time,
            "NUMBER" => ValueType::Number,
            "UNIT_INTERVAL" => ValueType::UnitInterval,
            "PERCENTAGE" => ValueType::Percentage,
            "INTEGER" => ValueType::Integer,
            "INTEGER_POSITIVE" => ValueType::IntegerPositive,
            "INTEGER_NEGATIVE" => ValueType::IntegerNegative,
            "INTEGER_ZERO_OR_POSITIVE" => ValueType::IntegerZeroOrPositive,
            "URL" => ValueType::Url,
            "AGE" => ValueType::Age,
            _ => ValueType::Other,
        }
    }

    /// The DHIS2 name of the type, for messages.
    pub fn name(self) -> &'static str {
        match self {
            ValueType::Text => "TEXT",
            ValueType::LongText => "LONG_TEXT",
            ValueType::Letter => "LETTER",
            ValueType::PhoneNumber => "PHONE_NUMBER",
            ValueType::Email => "EMAIL",
            ValueType::Boolean => "BOOLEAN",
            ValueType::TrueOnly => "TRUE_ONLY",
            ValueType::Date => "DATE",
            ValueType::DateTime => "DATETIME",
            ValueType::Time => "TIME",
            ValueType::Number => "NUMBER",
            ValueType::UnitInterval => "UNIT_INTERVAL",
            ValueType::Percentage => "PERCENTAGE",
            ValueType::Integer => "INTEGER",
            ValueType::IntegerPositive => "INTEGER_POSITIVE",
            ValueType::IntegerNegative => "INTEGER_NEGATIVE",
            ValueType::IntegerZeroOrPositive => "INTEGER_ZERO_OR_POSITIVE",
            ValueType::Url => "URL",
            ValueType::Age => "AGE",
            ValueType::Other => "OTHER",
        }
    }

    pub fn is_numeric(self) -> bool {
        matches!(
            self,
            ValueType::Number
                | ValueType::UnitInterval
                | ValueType::Percentage
                | ValueType::Integer
                | ValueType::IntegerPositive
                | ValueType::IntegerNegative
                | ValueType::IntegerZeroOrPositive
        )
    }

    /// Checks `raw` against the type and returns the stored form, or a sentence saying what is wrong.
    /// DATE also takes FHIR's partial dates (`1990`, `1990-04`): registries hold year-only birth dates.
    pub fn normalize(self, raw: &str) -> Result<String, String> {
        let v = raw.trim();
        if v.is_empty() {
            return Err("is empty".into());
        }
        let int = |v: &str| {
            v.parse::<i64>()
                .map_err(|_| format!("`{v}` is not a whole number"))
        };
        match self {
            ValueType::Text | ValueType::LongText | ValueType::Other | ValueType::Url => {
                Ok(v.to_string())
            }
            ValueType::Letter if v.chars().count() == 1 => Ok(v.to_string()),
            ValueType::Letter => Err(format!("`{v}` is not a single letter")),
            ValueType::PhoneNumber => {
                let ok = v
                    .chars()
                    .all(|c| c.is_ascii_digit() || " +-().".contains(c))
                    && v.chars().filter(char::is_ascii_digit).count() >= 3;
                if ok {
                    Ok(v.to_string())
                } else {
                    Err(format!(
                        "`{v}` is not a phone number (digits, spaces, + - ( ) only)"
                    ))
                }
            }
            ValueType::Email if v.contains('@') && !v.contains(char::is_whitespace) => {
                Ok(v.to_string())
            }
            ValueType::Email => Err(format!("`{v}` is not an e-mail address")),
            ValueType::Boolean => match v {
                "true" | "false" => Ok(v.to_string()),
                _ => Err(format!("`{v}` is not true or false")),
            },
            ValueType::TrueOnly if v == "true" => Ok(v.to_string()),
            ValueType::TrueOnly => Err(format!(
                "`{v}` is not true (the only value this attribute takes)"
            )),
            ValueType::Date | ValueType::Age => check_partial_date(v).map(|_| v.to_string()),
            ValueType::DateTime => chrono::DateTime::parse_from_rfc3339(v)
                .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
                .map_err(|_| format!("`{v}` is not a date and time with a time zone")),
            ValueType::Time => chrono::NaiveTime::parse_from_str(v, "%H:%M")
                .or_else(|_| chrono::NaiveTime::parse_from_str(v, "%H:%M:%S"))
                .map(|_| v.to_string())
                .map_err(|_| format!("`{v}` is not a time (hh:mm)")),
            ValueType::Number | ValueType::UnitInterval | ValueType::Percentage => {
                let n: f64 = v.parse().map_err(|_| format!("`{v}` is not a number"))?;
                if !n.is_finite() {
                    return Err(format!("`{v}` is not a finite number"));
                }
                match self {
                    ValueType::UnitInterval if !(0.0..=1.0).contains(&n) => {
                        Err(format!("{v} is not between 0 and 1"))
                    }
                    ValueType::Percentage if !(0.0..=100.0).contains(&n) => {
                        Err(format!("{v} is not between 0 and 100"))
                    }
                    _ => Ok(format_number(n)),
                }
            }
            ValueType::Integer => int(v).map(|n| n.to_string()),
            ValueType::IntegerPositive => match int(v)? {
                n if n > 0 => Ok(n.to_string()),
                n => Err(format!("{n} is not a positive whole number")),
            },
            ValueType::IntegerNegative => match int(v)? {
                n if n < 0 => Ok(n.to_string()),
                n => Err(format!("{n} is not a negative whole number")),
            },
            ValueType::IntegerZeroOrPositive => match int(v)? {
                n if n >= 0 => Ok(n.to_string()),
                n => Err(format!("{n} is negative")),
            },
        }
    }
}

/// Shortest decimal form without float noise (72.5, not 72.500000001).
pub fn format_number(n: f64) -> String {
    let rounded = (n * 1e9).round() / 1e9;
    let s = format!("{rounded}");
    if s == "-0" {
        "0".into()
    } else {
        s
    }
}

/// Accepts `YYYY`, `YYYY-MM`, `YYYY-MM-DD` and checks that the day exists.
pub fn check_partial_date(v: &str) -> Result<(), String> {
    let bad = || format!("`{v}` is not a date (YYYY, YYYY-MM or YYYY-MM-DD)");
    let parts: Vec<&str> = v.split('-').collect();
    let num = |s: &str, len: usize| {
        (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u32>().ok())
            .flatten()
    };
    match parts.as_slice() {
        [y] => num(y, 4).map(|_| ()).ok_or_else(bad),
        [y, m] => match (num(y, 4), num(m, 2)) {
            (Some(_), Some(m)) if (1..=12).contains(&m) => Ok(()),
            _ => Err(bad()),
        },
        [y, m, d] => match (num(y, 4), num(m, 2), num(d, 2)) {
            (Some(y), Some(m), Some(d)) => NaiveDate::from_ymd_opt(y as i32, m, d)
                .map(|_| ())
                .ok_or_else(|| format!("`{v}` is not a date: that day does not exist")),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_accept_partial_and_reject_impossible() {
        assert!(ValueType::Date.normalize("1990").is_ok());
        assert!(ValueType::Date.normalize("1990-04").is_ok());
        assert!(ValueType::Date.normalize("2000-02-29").is_ok());
        assert!(ValueType::Date.normalize("1990-02-30").is_err());
        assert!(ValueType::Date.normalize("1990-13").is_err());
        assert!(ValueType::Date.normalize("90-01-01").is_err());
    }

    #[test]
    fn numbers_are_normalised() {
        assert_eq!(
            ValueType::Number
                .normalize("72.50")
                .expect("test input is valid"),
            "72.5"
        );
        assert_eq!(
            ValueType::IntegerPositive
                .normalize("120")
                .expect("test input is valid"),
            "120"
        );
        assert!(ValueType::IntegerPositive.normalize("0").is_err());
        assert!(ValueType::Number.normalize("NaN").is_err());
        assert!(ValueType::PhoneNumber.normalize("+254 700 123456").is_ok());
        assert!(ValueType::PhoneNumber.normalize("call me").is_err());
    }
}

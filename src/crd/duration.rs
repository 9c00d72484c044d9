//! Durations as Kubernetes users write them (`300s`, `5m`, `1h30m`, `250ms`).
//!
//! The type keeps the text as written: the API server checks the pattern, and the controller parses at
//! use, so an object that slipped past the schema can never break a watch by failing to deserialize.

use std::{borrow::Cow, fmt, time::Duration};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// The pattern the API server enforces; keep it in step with [`parse_duration`].
pub const DURATION_PATTERN: &str = r"^([0-9]{1,9}(\.[0-9]{1,9})?(ms|s|m|h))+$";

/// A duration string such as `300s` or `5m`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KubeDuration(pub String);

impl KubeDuration {
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// Builds the canonical text for a whole number of seconds.
    pub fn from_secs(secs: u64) -> Self {
        Self(format!("{secs}s"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses the text; fails with a message that quotes what was written.
    pub fn to_duration(&self) -> Result<Duration, DurationError> {
        parse_duration(&self.0)
    }
}

impl fmt::Display for KubeDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl JsonSchema for KubeDuration {
    fn schema_name() -> Cow<'static, str> {
        "KubeDuration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "maxLength": 32,
            "description": "A duration such as 300s, 5m or 1h30m (units ms, s, m, h)."
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration `{text}`: {why} (write it like 300s, 5m or 1h30m; units ms, s, m, h)")]
pub struct DurationError {
    pub text: String,
    pub why: &'static str,
}

/// Parses a sequence of `<number><unit>` pairs, units `ms`, `s`, `m`, `h`, fractions allowed.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let fail = |why| DurationError { text: text.to_string(), why };
    if text.is_empty() {
        return Err(fail("it is empty"));
    }
    let mut total = 0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len =
            rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(|| fail("a number has no unit"))?;
        if number_len == 0 {
            return Err(fail("a unit has no number before it"));
        }
        let (number, tail) = rest.split_at(number_len);
        if number.len() > 19 || number.matches('.').count() > 1 || number.starts_with('.') || number.ends_with('.') {
            return Err(fail("a number is malformed"));
        }
        let value: f64 = number.parse().map_err(|_| fail("a number is malformed"))?;
        let (scale, unit_len) = if tail.starts_with("ms") {
            (0.001, 2)
        } else if tail.starts_with('s') {
            (1.0, 1)
        } else if tail.starts_with('m') {
            (60.0, 1)
        } else if tail.starts_with('h') {
            (3600.0, 1)
        } else {
            return Err(fail("the unit is not one of ms, s, m, h"));
        };
        total += value * scale;
        rest = &tail[unit_len..];
    }
    // A year is far beyond any timeout we take; refusing more keeps arithmetic on instants safe.
    if !total.is_finite() || total > 366.0 * 24.0 * 3600.0 {
        return Err(fail("it is longer than a year"));
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_minutes_hours_and_milliseconds_parse() {
        assert_eq!(parse_duration("300s").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
    }

    #[test]
    fn text_without_a_known_unit_is_rejected_with_the_text_quoted() {
        for bad in ["", "300", "5x", "s", "1.2.3s", "-5s", "5 m", ".5s"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("`{bad}`")), "{err}");
        }
    }

    #[test]
    fn durations_beyond_a_year_are_rejected() {
        assert!(parse_duration("9000h").is_err());
    }

    #[test]
    fn the_schema_pattern_and_the_parser_agree() {
        let pattern = regex::Regex::new(DURATION_PATTERN).unwrap();
        for s in ["300s", "5m", "1h30m", "250ms", "10s", "1.5h", "", "300", "5x", "m5", "5 m", "-1s", "1.s", "1h-2m"] {
            assert_eq!(pattern.is_match(s), parse_duration(s).is_ok(), "pattern and parser disagree on `{s}`");
        }
    }
}

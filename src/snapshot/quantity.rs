//! Kubernetes resource quantities (`100m`, `1.5Gi`, `2e3`, `512M`) turned into whole numbers.
//!
//! The arithmetic is exact (integers, no floats) and rounds up, as the scheduler does: a request of
//! `0.1m` cpu takes one millicore, and `100m` bytes of memory take one byte. Anything the API server
//! would not have accepted, and anything negative or beyond `i64`, is an error that quotes the text.

use std::fmt;

/// Why a quantity string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid quantity `{text}`: {why}")]
pub struct QuantityError {
    pub text: String,
    pub why: &'static str,
}

/// Parses a quantity into thousandths of its unit, rounding up (cpu `250m` → 250, `1` → 1000).
pub fn parse_millis(text: &str) -> Result<i64, QuantityError> {
    Parsed::parse(text)?.scaled(3, text)
}

/// Parses a quantity into whole units, rounding up (memory `1Ki` → 1024, `1.5` → 2).
pub fn parse_units(text: &str) -> Result<i64, QuantityError> {
    Parsed::parse(text)?.scaled(0, text)
}

/// `mantissa × 10^exp10 × 2^exp2`, the exact value that was written.
struct Parsed {
    mantissa: u128,
    exp10: i32,
    exp2: u32,
}

// More significant digits than this cannot be carried exactly in u128 once scaled; no real request has them.
const MAX_DIGITS: usize = 30;

impl Parsed {
    fn parse(text: &str) -> Result<Self, QuantityError> {
        let fail = |why| QuantityError { text: text.to_string(), why };
        let body = text.strip_prefix('+').unwrap_or(text);
        if body.starts_with('-') {
            return Err(fail("it is negative"));
        }
        let number_len = body.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(body.len());
        let (number, suffix) = body.split_at(number_len);
        if number.matches('.').count() > 1 {
            return Err(fail("the number has more than one decimal point"));
        }
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() {
            return Err(fail("there is no number"));
        }
        let digits = format!("{whole}{fraction}");
        let significant = digits.trim_start_matches('0');
        if significant.len() > MAX_DIGITS {
            return Err(fail("the number has too many digits"));
        }
        let mantissa: u128 = if significant.is_empty() {
            0
        } else {
            significant.parse().map_err(|_| fail("the number is malformed"))?
        };
        let (suffix_exp10, exp2) = parse_suffix(suffix).ok_or_else(|| fail("the suffix is not a Kubernetes unit"))?;
        let fraction_len = i32::try_from(fraction.len()).map_err(|_| fail("the number has too many digits"))?;
        Ok(Self { mantissa, exp10: suffix_exp10 - fraction_len, exp2 })
    }

    /// `ceil(value × 10^scale)` as an i64.
    fn scaled(&self, scale: i32, text: &str) -> Result<i64, QuantityError> {
        let too_large = || QuantityError { text: text.to_string(), why: "it is too large" };
        if self.mantissa == 0 {
            return Ok(0);
        }
        let mut numerator = self.mantissa.checked_mul(1u128.checked_shl(self.exp2).ok_or_else(too_large)?);
        let exp10 = self.exp10 + scale;
        let value = if exp10 >= 0 {
            numerator = numerator.and_then(|n| n.checked_mul(10u128.checked_pow(exp10.unsigned_abs())?));
            numerator.ok_or_else(too_large)?
        } else {
            let numerator = numerator.ok_or_else(too_large)?;
            match 10u128.checked_pow(exp10.unsigned_abs()) {
                Some(denominator) => numerator.div_ceil(denominator),
                // Smaller than one unit of the scale, but not zero: it still takes one.
                None => 1,
            }
        };
        i64::try_from(value).map_err(|_| too_large())
    }
}

/// Decimal and binary exponents of a suffix: `k` → (3, 0), `Mi` → (0, 20), `e-3` → (-3, 0).
fn parse_suffix(suffix: &str) -> Option<(i32, u32)> {
    let decimal = |e| Some((e, 0));
    match suffix {
        "" => decimal(0),
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        "Ki" => Some((0, 10)),
        "Mi" => Some((0, 20)),
        "Gi" => Some((0, 30)),
        "Ti" => Some((0, 40)),
        "Pi" => Some((0, 50)),
        "Ei" => Some((0, 60)),
        _ => {
            let exponent = suffix.strip_prefix(['e', 'E'])?;
            let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
            if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            exponent.parse().ok().map(|e| (e, 0))
        }
    }
}

/// A quantity shown back to people in the units they write (`1500m`, `2Gi`), for events and reasons.
pub struct Millis(pub i64);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}m", self.0)
    }
}

/// Bytes shown with the largest binary unit that divides them, else in Mi rounded up.
pub struct Bytes(pub i64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, i64); 4] = [("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)];
        for (unit, size) in UNITS {
            if self.0 != 0 && self.0 % size == 0 {
                return write!(f, "{}{unit}", self.0 / size);
            }
        }
        if self.0.abs() >= 1 << 20 {
            return write!(f, "{}Mi", self.0.div_euclid(1 << 20) + 1);
        }
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_in_cores_and_millicores_becomes_millicores() {
        assert_eq!(parse_millis("1").unwrap(), 1000);
        assert_eq!(parse_millis("250m").unwrap(), 250);
        assert_eq!(parse_millis("0.5").unwrap(), 500);
        assert_eq!(parse_millis(".5").unwrap(), 500);
        assert_eq!(parse_millis("2.").unwrap(), 2000);
        assert_eq!(parse_millis("+1").unwrap(), 1000);
        assert_eq!(parse_millis("0").unwrap(), 0);
        assert_eq!(parse_millis("0.000m").unwrap(), 0);
    }

    #[test]
    fn fractions_of_a_millicore_round_up_to_one() {
        assert_eq!(parse_millis("0.1m").unwrap(), 1);
        assert_eq!(parse_millis("100u").unwrap(), 1);
        assert_eq!(parse_millis("1n").unwrap(), 1);
        assert_eq!(parse_millis("1e-30").unwrap(), 1);
    }

    #[test]
    fn memory_in_binary_and_decimal_units_becomes_bytes() {
        assert_eq!(parse_units("128974848").unwrap(), 128_974_848);
        assert_eq!(parse_units("129e6").unwrap(), 129_000_000);
        assert_eq!(parse_units("129M").unwrap(), 129_000_000);
        assert_eq!(parse_units("123Mi").unwrap(), 123 * 1024 * 1024);
        assert_eq!(parse_units("1Ki").unwrap(), 1024);
        assert_eq!(parse_units("1.5Gi").unwrap(), 1_610_612_736);
        assert_eq!(parse_units("2Ti").unwrap(), 2 << 40);
        assert_eq!(parse_units("1k").unwrap(), 1000);
        assert_eq!(parse_units("1E3").unwrap(), 1000);
        assert_eq!(parse_units("1e+3").unwrap(), 1000);
        assert_eq!(parse_units("1E").unwrap(), 1_000_000_000_000_000_000);
    }

    #[test]
    fn fractional_bytes_round_up() {
        assert_eq!(parse_units("100m").unwrap(), 1);
        assert_eq!(parse_units("1.5").unwrap(), 2);
        assert_eq!(parse_units("0.5Ki").unwrap(), 512);
    }

    #[test]
    fn garbage_negative_and_oversized_quantities_are_refused_with_the_text_quoted() {
        for bad in [
            "",
            "abc",
            "1x",
            "1 Gi",
            "1gi",
            "1KI",
            "--1",
            "-1",
            "-100m",
            "1.2.3",
            ".",
            "m",
            "1e",
            "1e1.5",
            "1ee3",
            "1Mi5",
            "1e99999",
            "10Ei",
            "9223372036854775808",
            "1000000000000000000000000000000000",
        ] {
            let err = parse_units(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("`{bad}`")), "{err}");
        }
        assert!(parse_millis("9223372036854776").is_err(), "overflows once scaled to millis");
    }

    #[test]
    fn quantities_display_in_the_units_people_write() {
        assert_eq!(Millis(1500).to_string(), "1500m");
        assert_eq!(Bytes(2 << 30).to_string(), "2Gi");
        assert_eq!(Bytes(1536 << 20).to_string(), "1536Mi");
        assert_eq!(Bytes(1_000_000_000).to_string(), "954Mi");
        assert_eq!(Bytes(0).to_string(), "0");
    }
}

//! Resource quantities (`500m`, `1Gi`, `2e3`), as exact sums: upstream's `resource.Quantity`
//! with the canonical form it prints.

use std::cmp::Ordering;
use std::fmt;

/// How a quantity prints: binary (`Ki`, `Mi`...) or decimal (`m`, `k`, `M`...) suffixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    BinarySi,
    DecimalSi,
}

/// A quantity in billionths (nano units), with the format it prints in.
#[derive(Clone, Copy, Debug)]
pub struct Quantity {
    nanos: i128,
    format: Format,
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.nanos.cmp(&other.nanos))
    }
}

const NANO: i128 = 1_000_000_000;

impl Quantity {
    pub fn zero() -> Quantity {
        Quantity {
            nanos: 0,
            format: Format::DecimalSi,
        }
    }

    /// `n` thousandths, printed with decimal suffixes (upstream's NewMilliQuantity(n, DecimalSI)).
    pub fn milli(n: i64) -> Quantity {
        Quantity {
            nanos: n as i128 * 1_000_000,
            format: Format::DecimalSi,
        }
    }

    pub fn count(n: i64) -> Quantity {
        Quantity {
            nanos: n as i128 * NANO,
            format: Format::DecimalSi,
        }
    }

    pub fn parse(s: &str) -> Option<Quantity> {
        let s = s.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
            .unwrap_or(s.len());
        let (number, suffix) = s.split_at(split);
        let (negative, digits) = match number.strip_prefix('-') {
            Some(d) => (true, d),
            None => (false, number.strip_prefix('+').unwrap_or(number)),
        };
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        if whole.is_empty() && fraction.is_empty() {
            return None;
        }
        let mut nanos: i128 = if whole.is_empty() {
            0
        } else {
            whole.parse::<i128>().ok()?
        } * NANO;
        let fraction: String = fraction.chars().take(9).collect();
        if !fraction.is_empty() {
            let f: i128 = fraction.parse().ok()?;
            nanos += f * 10i128.pow(9 - fraction.len() as u32);
        }
        let (multiply, divide, format) = match suffix {
            "" => (1, 1, Format::DecimalSi),
            "n" => (1, NANO, Format::DecimalSi),
            "u" => (1, 1_000_000, Format::DecimalSi),
            "m" => (1, 1_000, Format::DecimalSi),
            "k" => (1_000, 1, Format::DecimalSi),
            "M" => (1_000_000, 1, Format::DecimalSi),
            "G" => (1_000_000_000, 1, Format::DecimalSi),
            "T" => (1_000_000_000_000, 1, Format::DecimalSi),
            "P" => (1_000_000_000_000_000, 1, Format::DecimalSi),
            "E" => (1_000_000_000_000_000_000, 1, Format::DecimalSi),
            "Ki" => (1 << 10, 1, Format::BinarySi),
            "Mi" => (1 << 20, 1, Format::BinarySi),
            "Gi" => (1 << 30, 1, Format::BinarySi),
            "Ti" => (1 << 40, 1, Format::BinarySi),
            "Pi" => (1 << 50, 1, Format::BinarySi),
            "Ei" => (1 << 60, 1, Format::BinarySi),
            e if e.starts_with(['e', 'E']) => {
                let exp: i32 = e[1..].parse().ok()?;
                if exp >= 0 {
                    (10i128.checked_pow(exp as u32)?, 1, Format::DecimalSi)
                } else {
                    (1, 10i128.checked_pow((-exp) as u32)?, Format::DecimalSi)
                }
            }
            _ => return None,
        };
        nanos = nanos.checked_mul(multiply)? / divide;
        Some(Quantity {
            nanos: if negative { -nanos } else { nanos },
            format,
        })
    }

    /// The value as a float (for ratios).
    pub fn as_f64(self) -> f64 {
        self.nanos as f64 / NANO as f64
    }

    /// In thousandths, rounded up (upstream's MilliValue, what CPU requests are counted in).
    pub fn milli_ceil(self) -> i64 {
        self.nanos.div_euclid(1_000_000) as i64 + i64::from(self.nanos.rem_euclid(1_000_000) != 0)
    }

    /// In whole units, rounded up (upstream's Value: bytes, counts).
    pub fn value_ceil(self) -> i64 {
        self.nanos.div_euclid(NANO) as i64 + i64::from(self.nanos.rem_euclid(NANO) != 0)
    }

    pub fn max(self, other: Quantity) -> Quantity {
        if other.nanos > self.nanos {
            other
        } else {
            self
        }
    }
}

impl std::ops::Add for Quantity {
    type Output = Quantity;

    /// The sum, in the format of the first non-zero operand (upstream's Add keeps the
    /// receiver's format).
    fn add(self, other: Quantity) -> Quantity {
        let format = if self.nanos == 0 {
            other.format
        } else {
            self.format
        };
        Quantity {
            nanos: self.nanos + other.nanos,
            format,
        }
    }
}

impl fmt::Display for Quantity {
    /// The canonical form: the largest suffix that keeps the number whole.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (sign, n) = if self.nanos < 0 {
            ("-", -self.nanos)
        } else {
            ("", self.nanos)
        };
        if n == 0 {
            return write!(f, "0");
        }
        if self.format == Format::BinarySi && n % NANO == 0 {
            let whole = n / NANO;
            for (shift, suffix) in [
                (60, "Ei"),
                (50, "Pi"),
                (40, "Ti"),
                (30, "Gi"),
                (20, "Mi"),
                (10, "Ki"),
            ] {
                if whole % (1i128 << shift) == 0 {
                    return write!(f, "{sign}{}{suffix}", whole >> shift);
                }
            }
            if whole < 1024 {
                return write!(f, "{sign}{whole}");
            }
        }
        for (scale, suffix) in [
            (NANO * 1_000_000_000_000_000_000, "E"),
            (NANO * 1_000_000_000_000_000, "P"),
            (NANO * 1_000_000_000_000, "T"),
            (NANO * 1_000_000_000, "G"),
            (NANO * 1_000_000, "M"),
            (NANO * 1_000, "k"),
            (NANO, ""),
            (1_000_000, "m"),
            (1_000, "u"),
            (1, "n"),
        ] {
            if n % scale == 0 {
                return write!(f, "{sign}{}{suffix}", n / scale);
            }
        }
        write!(f, "{sign}{n}n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap_or_else(|| panic!("{s}"))
    }

    #[test]
    fn quantities_add_exactly_and_print_canonically() {
        assert_eq!((q("500m") + q("250m")).to_string(), "750m");
        assert_eq!((q("1") + q("500m")).to_string(), "1500m");
        assert_eq!((q("500m") + q("1500m")).to_string(), "2");
        assert_eq!((q("128Mi") + q("128Mi")).to_string(), "256Mi");
        assert_eq!((q("1Gi") + q("512Mi")).to_string(), "1536Mi");
        assert_eq!(q("2k").to_string(), "2k");
        assert_eq!(q("1.5").to_string(), "1500m");
        assert_eq!(q("1e3").to_string(), "1k");
        assert_eq!(q("0.1").to_string(), "100m");
        assert!(q("1Gi") > q("1G"));
        assert!(Quantity::parse("1x").is_none());
        assert!(Quantity::parse("").is_none());
    }

    #[test]
    fn integer_views_round_up_as_upstreams() {
        assert_eq!(q("100m").milli_ceil(), 100);
        assert_eq!(q("1.5").milli_ceil(), 1500);
        assert_eq!(q("2").milli_ceil(), 2000);
        assert_eq!(q("1n").milli_ceil(), 1);
        assert_eq!(q("1Gi").value_ceil(), 1 << 30);
        assert_eq!(q("500m").value_ceil(), 1);
        assert_eq!(q("110").value_ceil(), 110);
    }
}

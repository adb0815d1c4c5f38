//! Money as integers of a currency's minor unit, so sums and ratios agree to the cent
//! wherever they are shown (JSON, CLI, page): amounts are parsed once from the decimal
//! text Meta or the client sent, added as integers, and written back as decimal text.

/// Digits after the decimal point of an ISO 4217 currency (the minor unit). Most have 2;
/// these are the exceptions among the currencies Meta's ad accounts and Conversions API
/// take.
pub fn exponent(currency: &str) -> u32 {
    match currency {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        _ => 2,
    }
}

fn pow10(e: u32) -> i128 {
    10i128.pow(e)
}

/// A decimal text (`"1499"`, `"14.99"`, `"-3.5"`, `"1.2e3"`) in minor units of
/// exponent `e`, rounded half away from zero past the minor unit; `None` when it is not
/// a number or a thousand trillion units or more (no sum of them can overflow then).
pub fn parse_minor(text: &str, e: u32) -> Option<i128> {
    let t = text.trim();
    if t.is_empty() {
        return None;
    }
    if t.contains(['e', 'E']) {
        // Exponent notation (a JSON float's text): through f64, then rounded.
        let f: f64 = t.parse().ok()?;
        // A thousand trillion units at most: sums of any number of them stay far inside
        // an i128.
        if !f.is_finite() || f.abs() >= 1e15 {
            return None;
        }
        return Some((f * pow10(e) as f64).round() as i128);
    }
    let (neg, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || int.len() > 15
    {
        return None;
    }
    let int_v: i128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let kept: String = frac.chars().take(e as usize).collect();
    let kept_v: i128 = format!("{kept:0<width$}", width = e as usize)
        .parse()
        .unwrap_or(0);
    let round_up = frac.as_bytes().get(e as usize).is_some_and(|d| *d >= b'5');
    let v = int_v * pow10(e) + kept_v + i128::from(round_up);
    Some(if neg { -v } else { v })
}

/// Minor units as decimal text with exactly `e` decimals (`149900, 2` -> `"1499.00"`).
pub fn format_minor(v: i128, e: u32) -> String {
    let sign = if v < 0 { "-" } else { "" };
    let a = v.unsigned_abs();
    if e == 0 {
        return format!("{sign}{a}");
    }
    let p = pow10(e).unsigned_abs();
    format!("{sign}{}.{:0width$}", a / p, a % p, width = e as usize)
}

/// `a / b` rounded half up, for non-negative `a` and positive `b`.
pub fn div_round(a: i128, b: i128) -> i128 {
    (2 * a + b) / (2 * b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_text_is_read_exactly_in_minor_units() {
        assert_eq!(parse_minor("1499", 2), Some(149_900));
        assert_eq!(parse_minor("14.99", 2), Some(1_499));
        assert_eq!(parse_minor("0.1", 2), Some(10));
        assert_eq!(parse_minor("19.995", 2), Some(2_000));
        assert_eq!(parse_minor("19.994", 2), Some(1_999));
        assert_eq!(parse_minor("1500", 0), Some(1_500));
        assert_eq!(parse_minor("1.234", 3), Some(1_234));
        assert_eq!(parse_minor("-2.5", 2), Some(-250));
        assert_eq!(parse_minor("1.5e3", 2), Some(150_000));
        assert_eq!(parse_minor(".5", 2), Some(50));
        for bad in [
            "",
            "abc",
            "1.2.3",
            "1,5",
            "--1",
            ".",
            "1e300",
            "1000000000000000",
        ] {
            assert_eq!(parse_minor(bad, 2), None, "{bad}");
        }
    }

    #[test]
    fn minor_units_are_written_with_the_currency_s_decimals() {
        assert_eq!(format_minor(149_900, 2), "1499.00");
        assert_eq!(format_minor(5, 2), "0.05");
        assert_eq!(format_minor(-250, 2), "-2.50");
        assert_eq!(format_minor(1_500, 0), "1500");
        assert_eq!(format_minor(1_234, 3), "1.234");
        assert_eq!(exponent("JPY"), 0);
        assert_eq!(exponent("KWD"), 3);
        assert_eq!(exponent("INR"), 2);
    }

    #[test]
    fn division_rounds_half_up() {
        assert_eq!(div_round(10, 4), 3);
        assert_eq!(div_round(9, 4), 2);
        assert_eq!(div_round(0, 7), 0);
    }
}

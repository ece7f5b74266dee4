//! Parsing the command line's quantities: sizes (`64KiB`), rates (`100Mbit`), durations in
//! milliseconds (`20ms`) and percentages (`1%`).

/// A quantity that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid {what} {text:?}: expected {expected}")]
pub struct ParseError {
    what: &'static str,
    text: String,
    expected: &'static str,
}

fn split_number(text: &str) -> (&str, &str) {
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    (&text[..end], text[end..].trim())
}

/// `1024`, `1KiB`, `64KiB`, `1MiB`, `1k` (1000), `1M`.
pub fn parse_size(text: &str) -> Result<usize, ParseError> {
    let error = || ParseError {
        what: "size",
        text: text.to_owned(),
        expected: "bytes, or a number with B, KiB, MiB, k or M (e.g. 64KiB)",
    };
    let (number, unit) = split_number(text.trim());
    let value: f64 = number.parse().map_err(|_| error())?;
    let scale = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kib" | "ki" => 1024.0,
        "mib" | "mi" => 1024.0 * 1024.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        _ => return Err(error()),
    };
    let bytes = value * scale;
    if bytes < 1.0 || bytes > (1u64 << 31) as f64 {
        return Err(error());
    }
    Ok(bytes.round() as usize)
}

/// `100Mbit`, `1Gbit`, `100Mbit/s`, `250000000` (bits per second), or `unlimited`.
pub fn parse_rate(text: &str) -> Result<Option<u64>, ParseError> {
    let error = || ParseError {
        what: "rate",
        text: text.to_owned(),
        expected: "bits per second, a number with kbit, Mbit or Gbit, or unlimited",
    };
    let trimmed = text.trim();
    if trimmed.eq_ignore_ascii_case("unlimited") || trimmed.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let (number, unit) = split_number(trimmed);
    let value: f64 = number.parse().map_err(|_| error())?;
    let unit = unit.to_ascii_lowercase();
    let scale = match unit.trim_end_matches("/s").trim_end_matches("ps") {
        "" | "bit" | "b" => 1.0,
        "kbit" | "k" => 1e3,
        "mbit" | "m" => 1e6,
        "gbit" | "g" => 1e9,
        _ => return Err(error()),
    };
    let bits = value * scale;
    if bits < 1.0 {
        return Err(error());
    }
    Ok(Some(bits.round() as u64))
}

/// Milliseconds: `20`, `20ms`, `0.5ms`, `1s`.
pub fn parse_millis(text: &str) -> Result<f64, ParseError> {
    let error = || ParseError {
        what: "time",
        text: text.to_owned(),
        expected: "milliseconds, e.g. 20 or 20ms or 1s",
    };
    let (number, unit) = split_number(text.trim());
    let value: f64 = number.parse().map_err(|_| error())?;
    match unit {
        "" | "ms" => Ok(value),
        "s" => Ok(value * 1e3),
        "us" => Ok(value / 1e3),
        _ => Err(error()),
    }
}

/// A loss in percent (`1`, `1%`, `0.5%`) as a fraction (0.01).
pub fn parse_percent(text: &str) -> Result<f64, ParseError> {
    let error = || ParseError {
        what: "loss",
        text: text.to_owned(),
        expected: "a percentage below 100, e.g. 1 or 1%",
    };
    let trimmed = text.trim().trim_end_matches('%');
    let value: f64 = trimmed.parse().map_err(|_| error())?;
    if !(0.0..100.0).contains(&value) {
        return Err(error());
    }
    Ok(value / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64KiB").ok(), Some(65_536));
        assert_eq!(parse_size("1MiB").ok(), Some(1 << 20));
        assert_eq!(parse_size("1000").ok(), Some(1000));
        assert_eq!(parse_size("1k").ok(), Some(1000));
        assert!(parse_size("0").is_err());
        assert!(parse_size("1 parsec").is_err());
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("100Mbit").ok(), Some(Some(100_000_000)));
        assert_eq!(parse_rate("1Gbit/s").ok(), Some(Some(1_000_000_000)));
        assert_eq!(parse_rate("unlimited").ok(), Some(None));
        assert!(parse_rate("fast").is_err());
    }

    #[test]
    fn times_and_percentages() {
        assert_eq!(parse_millis("20ms").ok(), Some(20.0));
        assert_eq!(parse_millis("1s").ok(), Some(1000.0));
        assert_eq!(parse_percent("1%").ok(), Some(0.01));
        assert_eq!(parse_percent("0").ok(), Some(0.0));
        assert!(parse_percent("100").is_err());
        assert!(parse_percent("-1").is_err());
    }
}

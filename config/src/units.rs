//! Numbers with unit suffixes, as drbd-utils reads them (`new_strtoll` in
//! `user/shared/shared_tool.c`).
//!
//! Every numeric option has a default unit: plain (`'1'`), KiB (`'k'`) or sectors (`'s'`). A
//! suffix `K`/`M`/`G` (either case) means KiB/MiB/GiB and `s` means 512-byte sectors; the value
//! is converted into the option's default unit, rounding up when that unit is larger.

/// An option's default unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A plain count (or bytes, or whatever the option counts).
    One,
    /// KiB.
    Kilo,
    /// 512-byte sectors.
    Sectors,
}

impl Unit {
    /// log2 of the unit in bytes, relative to the plain unit.
    fn shift(self) -> i32 {
        match self {
            Unit::One => 0,
            Unit::Kilo => 10,
            Unit::Sectors => 9,
        }
    }

    /// The letter drbdadm prints after a value in this unit ("" for plain).
    pub fn suffix(self) -> &'static str {
        match self {
            Unit::One => "",
            Unit::Kilo => "k",
            Unit::Sectors => "s",
        }
    }
}

/// Why a number could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    #[error("{0} is not a valid number")]
    InvalidNumber(String),
    #[error("{0} is not a valid unit")]
    InvalidUnit(String),
    #[error("{0}: out of range")]
    Overflow(String),
}

/// Reads `text` (digits and an optional one-letter unit) in `unit`.
///
/// ```
/// use udrbd_config::units::{parse_number, Unit};
/// assert_eq!(parse_number("10M", Unit::Kilo), Ok(10240));
/// assert_eq!(parse_number("1K", Unit::One), Ok(1024));
/// assert_eq!(parse_number("1M", Unit::Sectors), Ok(2048));
/// assert_eq!(parse_number("513", Unit::One), Ok(513));
/// assert_eq!(parse_number("3s", Unit::Kilo), Ok(2)); // 1.5 KiB rounds up
/// ```
pub fn parse_number(text: &str, unit: Unit) -> Result<u64, NumberError> {
    // sscanf("%llu") skips leading blanks and takes an optional '+'.
    let t = text.trim_start_matches([' ', '\t']);
    let t = t.strip_prefix('+').unwrap_or(t);
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(NumberError::InvalidNumber(text.to_string()));
    }
    let value: u64 = t[..digits]
        .parse()
        .map_err(|_| NumberError::Overflow(text.to_string()))?;
    let rest = &t[digits..];
    let mut chars = rest.chars();
    let suffix = match (chars.next(), chars.next()) {
        (None, _) => return Ok(value),
        (Some(c), None) => c,
        // "%llu%c%c" matched three items: not a number drbd-utils accepts.
        (Some(_), Some(_)) => return Err(NumberError::InvalidNumber(text.to_string())),
    };
    let suffix_shift = match suffix {
        'k' | 'K' => 10,
        'm' | 'M' => 20,
        'g' | 'G' => 30,
        's' => 9,
        _ => return Err(NumberError::InvalidUnit(text.to_string())),
    };
    let shift = suffix_shift - unit.shift();
    if shift < 0 {
        let s = (-shift) as u32;
        return Ok(value.div_ceil(1 << s));
    }
    let shift = shift as u32;
    if value > (u64::MAX >> shift) {
        return Err(NumberError::Overflow(text.to_string()));
    }
    Ok(value << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_convert_into_the_default_unit() {
        assert_eq!(parse_number("250", Unit::Kilo), Ok(250));
        assert_eq!(parse_number("4G", Unit::Kilo), Ok(4 << 20));
        assert_eq!(parse_number("1g", Unit::Sectors), Ok(2 << 20));
        assert_eq!(parse_number("1k", Unit::Sectors), Ok(2));
        assert_eq!(parse_number("1s", Unit::Sectors), Ok(1));
        assert_eq!(parse_number("1s", Unit::One), Ok(512));
        assert_eq!(parse_number("100", Unit::Sectors), Ok(100));
        assert_eq!(parse_number("1023", Unit::One), Ok(1023));
        assert_eq!(parse_number("1s", Unit::Kilo), Ok(1));
        assert_eq!(parse_number("2048s", Unit::Kilo), Ok(1024));
    }

    #[test]
    fn rejects_what_drbd_utils_rejects() {
        assert!(matches!(
            parse_number("abc", Unit::One),
            Err(NumberError::InvalidNumber(_))
        ));
        assert!(matches!(
            parse_number("10X", Unit::One),
            Err(NumberError::InvalidUnit(_))
        ));
        assert!(matches!(
            parse_number("10MB", Unit::One),
            Err(NumberError::InvalidNumber(_))
        ));
        assert!(matches!(
            parse_number("99999999999999G", Unit::One),
            Err(NumberError::Overflow(_))
        ));
        assert!(matches!(
            parse_number("", Unit::One),
            Err(NumberError::InvalidNumber(_))
        ));
    }
}

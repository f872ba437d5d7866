//! Sizes as people write them in flags (`64GiB`, `512M`, `1.5G`, `4096`) and read them in
//! messages (`32 GiB`).
//!
//! One parser for every size flag, so that `--log-max-size`, `--import-max-bytes` and the
//! rest agree on what `1G` means: the single letters and the `iB` forms are powers of 1024
//! (as `df -h`, `docker --memory` and most of Linux read them); `kB`/`MB`/`GB`/`TB` are the SI
//! powers of 1000, for whoever means those.

const UNITS: &[(&str, u64)] = &[
    ("", 1),
    ("b", 1),
    ("k", 1 << 10),
    ("kib", 1 << 10),
    ("m", 1 << 20),
    ("mib", 1 << 20),
    ("g", 1 << 30),
    ("gib", 1 << 30),
    ("t", 1 << 40),
    ("tib", 1 << 40),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("tb", 1_000_000_000_000),
];

/// Parses a size: a number (decimals allowed: `1.5G`) and an optional unit, `K`, `M`, `G`, `T`
/// or `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024), `kB`, `MB`, `GB`, `TB` (powers of 1000) or
/// `B`, in any case, with or without a space. The error says what is wrong and what is
/// expected, ready for a flag's error message.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bad = |why: &str| {
        format!(
            "invalid size `{text}`: {why} (e.g. 4096, 512M, 64GiB, 1.5G; K/M/G/T are powers of 1024)"
        )
    };
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let unit = unit.trim().to_ascii_lowercase();
    let Some(&(_, scale)) = UNITS.iter().find(|(name, _)| *name == unit) else {
        return Err(bad("unknown unit"));
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || fraction.contains('.') {
        return Err(bad("no number"));
    }
    let whole: u64 = whole.parse().map_err(|_| bad("no number"))?;
    let mut value = whole.checked_mul(scale).ok_or_else(|| bad("too large"))?;
    // The fraction in exact integer steps: digit d at position i adds d * scale / 10^(i+1).
    let mut divisor = 1u64;
    for digit in fraction.bytes() {
        divisor = divisor
            .checked_mul(10)
            .ok_or_else(|| bad("too many decimals"))?;
        let part = u128::from(digit - b'0') * u128::from(scale) / u128::from(divisor);
        value = value
            .checked_add(u64::try_from(part).map_err(|_| bad("too large"))?)
            .ok_or_else(|| bad("too large"))?;
    }
    Ok(value)
}

/// A size for people: `512 B`, `200 KiB`, `1.5 GiB`, `32 GiB` (one decimal below 10 of a unit,
/// none above; exact multiples without decimals).
pub fn format_size(bytes: u64) -> String {
    const NAMES: &[&str] = &["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut unit = 0;
    let mut scale = 1u64;
    while unit + 1 < NAMES.len() && bytes / scale >= 1024 {
        scale *= 1024;
        unit += 1;
    }
    let name = NAMES[unit];
    if bytes.is_multiple_of(scale) || bytes / scale >= 10 {
        // Rounded to the nearest unit; exact when it divides.
        let whole = (u128::from(bytes) + u128::from(scale) / 2) / u128::from(scale);
        format!("{whole} {name}")
    } else {
        let tenths = (u128::from(bytes) * 10 + u128::from(scale) / 2) / u128::from(scale);
        format!("{}.{} {name}", tenths / 10, tenths % 10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("64GiB"), Ok(64 << 30));
        assert_eq!(parse_size("64 gib"), Ok(64 << 30));
        assert_eq!(parse_size("1K"), Ok(1024));
        assert_eq!(parse_size("1kB"), Ok(1000));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("0.5KiB"), Ok(512));
        assert_eq!(parse_size("7B"), Ok(7));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert_eq!(parse_size("0"), Ok(0));
        for bad in [
            "",
            "G",
            "1.2.3G",
            "12X",
            "-1",
            "1e9",
            "99999999999999999999",
            "20000000T",
        ] {
            let err = parse_size(bad).unwrap_err();
            assert!(err.starts_with(&format!("invalid size `{bad}`")), "{err}");
        }
    }

    #[test]
    fn sizes_format() {
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(512), "512 B");
        assert_eq!(format_size(200 << 10), "200 KiB");
        assert_eq!(format_size(3 << 29), "1.5 GiB");
        assert_eq!(format_size(32 << 30), "32 GiB");
        assert_eq!(format_size((10 << 20) + 1), "10 MiB");
        assert_eq!(format_size(1536), "1.5 KiB");
        assert_eq!(format_size(u64::MAX), "16 EiB");
        for n in [1u64, 1023, 1024, 4096, 64 << 20, 40 << 30] {
            assert_eq!(parse_size(&format_size(n).replace(' ', "")), Ok(n), "{n}");
        }
    }
}

//! The value forms of [`super::Limits::set_key`]: each key's parser, its accepted forms for
//! error messages, and the short forms [`super::Limits::get_key`] shows.

use super::{Cpus, IoMax, LIMIT_KEYS};

/// `key` with `_` read as `-`, as it appears in [`LIMIT_KEYS`].
pub(super) fn canonical_key(key: &str) -> Result<&'static str, String> {
    let wanted = key.trim().replace('_', "-").to_ascii_lowercase();
    LIMIT_KEYS
        .iter()
        .copied()
        .find(|k| *k == wanted)
        .ok_or_else(|| {
            format!(
                "unknown limit `{key}` (the limits are {})",
                LIMIT_KEYS.join(", ")
            )
        })
}

/// The accepted forms of a key's value, for its error messages.
pub(super) fn accepted(key: &str) -> &'static str {
    match key {
        "cpus" => "e.g. 2, 0.5, 1.25: CPUs from 0.01 to 1024, at most 3 decimals",
        "cpu-weight" | "io-weight" => {
            "e.g. 100: a whole number from 1 to 10000, 100 is the default"
        }
        "cpuset" => "e.g. 0-3,6: CPU numbers and ranges up to 4095, comma-separated",
        "pids" => "e.g. 512: a whole number of processes, 8 to 4194304",
        "io-max" => {
            "e.g. 50M for reads and writes, or rbps=50M,wbps=20M,riops=1000,wiops=500 (any \
             of them); K/M/G/T are powers of 1024"
        }
        "net-rate" => {
            "e.g. 10M bytes/s, or 100mbit, 512kbit, 1gbit bits/s; at least 8kbit; K/M/G/T are \
             powers of 1024, kbit/mbit/gbit of 1000"
        }
        _ => "e.g. 512M, 2GiB, 1.5G; K/M/G/T are powers of 1024",
    }
}

/// `None` when `clear`, else the parsed value.
pub(super) fn parse_or_clear<T>(
    clear: bool,
    parse: impl FnOnce() -> Result<T, String>,
) -> Result<Option<T>, String> {
    if clear { Ok(None) } else { parse().map(Some) }
}

pub(super) const ZERO: &str = "zero is not a limit, `none` lifts one";

/// Thousandths of a CPU from `2`, `0.5`, `1.25`; the error is the reason only.
pub(super) fn cpus_from(text: &str) -> Result<Cpus, &'static str> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if text.starts_with('-') {
        return Err("negative values are not limits");
    }
    if (whole.is_empty() && fraction.is_empty()) || !digits(whole) || !digits(fraction) {
        return Err("not a number");
    }
    if fraction.len() > 3 {
        return Err("more than 3 decimals");
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| "above the maximum of 1024")?
    };
    let frac: u64 = format!("{fraction:0<3}").parse().unwrap_or(0);
    let millis = whole
        .checked_mul(1000)
        .and_then(|m| m.checked_add(frac))
        .ok_or("above the maximum of 1024")?;
    match millis {
        0 => Err(ZERO),
        1..10 => Err("below the minimum of 0.01"),
        10..=1_024_000 => u32::try_from(millis)
            .map(Cpus)
            .map_err(|_| "above the maximum of 1024"),
        _ => Err("above the maximum of 1024"),
    }
}

/// A whole number (no sign, no unit).
pub(super) fn integer(text: &str) -> Result<u64, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not a whole number".to_owned());
    }
    let n: u64 = text.parse().map_err(|_| "too large".to_owned())?;
    if n == 0 {
        return Err(ZERO.to_owned());
    }
    Ok(n)
}

/// A weight, 1 to 10000.
pub(super) fn weight(text: &str) -> Result<u32, String> {
    let n = integer(text)?;
    if n > 10_000 {
        return Err("above the maximum of 10000".to_owned());
    }
    u32::try_from(n).map_err(|_| "above the maximum of 10000".to_owned())
}

/// A size through [`crate::size::parse_size`], its error cut down to the reason.
pub(super) fn size(text: &str) -> Result<u64, String> {
    crate::size::parse_size(text).map_err(|err| {
        // `invalid size `T`: WHY (e.g. …)`: keep WHY, the caller names the key and the forms.
        let why = err.split_once("`: ").map_or(err.as_str(), |(_, rest)| rest);
        why.split(" (e.g.").next().unwrap_or(why).to_owned()
    })
}

/// A size that is not zero and at least `min` bytes.
pub(super) fn size_at_least(text: &str, min: u64) -> Result<u64, String> {
    let n = size(text)?;
    if n == 0 {
        return Err(ZERO.to_owned());
    }
    if n < min {
        return Err(format!(
            "below the minimum of {}",
            crate::size::format_size(min)
        ));
    }
    Ok(n)
}

/// A rate in bytes per second: a size (`10M`) or bits per second (`100mbit`).
pub(super) fn net_rate(text: &str) -> Result<u64, String> {
    let lower = text.to_ascii_lowercase();
    let bytes = if let Some((number, si)) = [("kbit", "kB"), ("mbit", "MB"), ("gbit", "GB")]
        .iter()
        .find_map(|(suffix, si)| lower.strip_suffix(suffix).map(|n| (n, *si)))
    {
        // `100mbit` is 100 000 000 bits: read as `100MB` (powers of 1000), then in bytes.
        size(&format!("{}{si}", number.trim()))? / 8
    } else {
        size(text)?
    };
    if bytes == 0 {
        return Err(ZERO.to_owned());
    }
    if bytes < 1000 {
        return Err("below the minimum of 8kbit (1000 bytes/s)".to_owned());
    }
    Ok(bytes)
}

/// A kernel CPU list (`0-3,6`), spaces dropped.
pub(super) fn cpuset(text: &str) -> Result<String, String> {
    let list: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if list.is_empty() {
        return Err("empty list".to_owned());
    }
    let cpu = |s: &str| -> Result<u32, String> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("`{s}` is not a CPU number"));
        }
        match s.parse::<u32>() {
            Ok(n) if n <= 4095 => Ok(n),
            _ => Err(format!("CPU `{s}` is above 4095")),
        }
    };
    for item in list.split(',') {
        match item.split_once('-') {
            Some((first, last)) => {
                if cpu(first)? > cpu(last)? {
                    return Err(format!("range `{item}` runs backwards"));
                }
            }
            None => {
                cpu(item)?;
            }
        }
    }
    Ok(list)
}

/// `RATE` (reads and writes) or `rbps=R,wbps=W,riops=N,wiops=N` (any subset).
pub(super) fn io_max(text: &str) -> Result<IoMax, String> {
    if !text.contains('=') {
        let rate = size(text)?;
        if rate == 0 {
            return Err(ZERO.to_owned());
        }
        return Ok(IoMax {
            rbps: Some(rate),
            wbps: Some(rate),
            ..IoMax::default()
        });
    }
    let mut io = IoMax::default();
    for part in text.split(',') {
        let (name, value) = part
            .split_once('=')
            .ok_or_else(|| format!("`{part}` is not NAME=VALUE"))?;
        let (name, value) = (name.trim(), value.trim());
        let slot = match name.to_ascii_lowercase().as_str() {
            "rbps" => &mut io.rbps,
            "wbps" => &mut io.wbps,
            "riops" => &mut io.riops,
            "wiops" => &mut io.wiops,
            _ => return Err(format!("unknown field `{name}` (rbps, wbps, riops, wiops)")),
        };
        if slot.is_some() {
            return Err(format!("`{name}` given twice"));
        }
        let n = if name.ends_with("bps") {
            size(value).map_err(|why| format!("{name}: {why}"))?
        } else {
            integer(value).map_err(|why| format!("{name}: {why}"))?
        };
        if n == 0 {
            return Err(format!("{name}: {ZERO}"));
        }
        *slot = Some(n);
    }
    Ok(io)
}

/// A size as `set_key` reads it back, short when exact (`512M`, `2G`), in bytes otherwise.
pub(super) fn show_size(bytes: u64) -> String {
    for (unit, shift) in [("T", 40), ("G", 30), ("M", 20), ("K", 10)] {
        if bytes != 0 && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// A rate in bytes/s: a binary size when exact in MiB, else bits when exact, else a size.
pub(super) fn show_rate(bytes: u64) -> String {
    if bytes != 0 && bytes.is_multiple_of(1 << 20) {
        return show_size(bytes);
    }
    if let Some(bits) = bytes.checked_mul(8) {
        for (unit, scale) in [
            ("gbit", 1_000_000_000),
            ("mbit", 1_000_000),
            ("kbit", 1_000),
        ] {
            if bits.is_multiple_of(scale) {
                return format!("{}{unit}", bits / scale);
            }
        }
    }
    show_size(bytes)
}

/// `io-max` as `set_key` reads it back (`None` when it limits nothing).
pub(super) fn show_io_max(io: &IoMax) -> Option<String> {
    if let (Some(r), Some(w), None, None) = (io.rbps, io.wbps, io.riops, io.wiops)
        && r == w
    {
        return Some(show_size(r));
    }
    let parts: Vec<String> = [
        ("rbps", io.rbps.map(show_size)),
        ("wbps", io.wbps.map(show_size)),
        ("riops", io.riops.map(|n| n.to_string())),
        ("wiops", io.wiops.map(|n| n.to_string())),
    ]
    .into_iter()
    .filter_map(|(name, value)| value.map(|v| format!("{name}={v}")))
    .collect();
    (!parts.is_empty()).then(|| parts.join(","))
}

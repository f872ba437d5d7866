//! `mayfly daemon`'s import limits: one flag per field of [`ImportLimits`], whose documentation
//! (and docs/security.md, "Import limits") says why each default is what it is.

use clap::Args;
use mayfly_api::size::parse_size;
use mayfly_image::{ImportLimits, MinFree};

/// What one template import may cost the host. An import past a limit is refused with an error
/// that names the flag; nothing of it is kept.
#[derive(Debug, Clone, Args)]
#[command(
    next_help_heading = "Import limits (sizes: 4096, 512M, 64GiB; K/M/G/T are powers of 1024)"
)]
pub struct ImportLimitArgs {
    /// Total file content one import may unpack (an image: all its layers together).
    #[arg(long, value_name = "SIZE", default_value = "32GiB", value_parser = parse_size)]
    pub import_max_bytes: u64,
    /// Size of one file in an imported archive.
    #[arg(long, value_name = "SIZE", default_value = "8GiB", value_parser = parse_size)]
    pub import_max_file_size: u64,
    /// Entries (files, directories, links) one import may have (an image: all its layers).
    #[arg(long, value_name = "N", default_value_t = 2_000_000)]
    pub import_max_entries: u64,
    /// Bytes of an entry's path (at most Linux's PATH_MAX, 4096).
    #[arg(long, value_name = "BYTES", default_value_t = 4096,
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub import_max_path: u64,
    /// Components of an entry's path (`a/b/c` has 3; at most 2048).
    #[arg(long, value_name = "N", default_value_t = 256,
          value_parser = clap::value_parser!(u64).range(1..=2048))]
    pub import_max_depth: u64,
    /// How many times a compressed archive may expand, once past 64 MiB unpacked (0: no
    /// limit). Compression bombs expand thousands of times, root filesystems 3 to 5.
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub import_max_ratio: u64,
    /// Size of an archive as uploaded or read (compressed or not).
    #[arg(long, value_name = "SIZE", default_value = "40GiB", value_parser = parse_size)]
    pub import_max_upload: u64,
    /// Free space an import must leave on the state directory's filesystem: a size, a
    /// percentage of the filesystem, or both (the larger counts); 0 keeps nothing free.
    #[arg(long, value_name = "SIZE|N%", default_value = "5%,1GiB")]
    pub import_min_free: MinFree,
}

impl ImportLimitArgs {
    /// The limits these flags set.
    pub fn limits(&self) -> ImportLimits {
        ImportLimits {
            max_bytes: self.import_max_bytes,
            max_file_bytes: self.import_max_file_size,
            max_entries: self.import_max_entries,
            max_path: self.import_max_path,
            max_depth: self.import_max_depth,
            max_ratio: self.import_max_ratio,
            max_input_bytes: self.import_max_upload,
            min_free: self.import_min_free,
            ..ImportLimits::default()
        }
    }
}

/// Parses a positive ratio (`1`, `1.5`), for `--memory-overcommit`.
pub fn parse_ratio(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 1000.0 => Ok(v),
        _ => Err(format!(
            "invalid ratio `{text}`: give a positive number up to 1000, e.g. 1 or 1.5"
        )),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use crate::cli::{Cli, Command};

    fn limits(args: &[&str]) -> Result<mayfly_image::ImportLimits, String> {
        let cli = Cli::try_parse_from([&["mayfly", "daemon"], args].concat())
            .map_err(|e| e.to_string())?;
        match cli.command {
            Command::Daemon(d) => Ok(d.import.limits()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_flags_default_to_the_documented_limits() {
        assert_eq!(limits(&[]), Ok(mayfly_image::ImportLimits::default()));
    }

    #[test]
    fn every_limit_has_its_flag() {
        let got = limits(&[
            "--import-max-bytes",
            "64GiB",
            "--import-max-file-size",
            "1.5G",
            "--import-max-entries",
            "10",
            "--import-max-path",
            "100",
            "--import-max-depth",
            "8",
            "--import-max-ratio",
            "0",
            "--import-max-upload",
            "512M",
            "--import-min-free",
            "10%",
        ])
        .unwrap();
        assert_eq!(got.max_bytes, 64 << 30);
        assert_eq!(got.max_file_bytes, 3 << 29);
        assert_eq!(got.max_entries, 10);
        assert_eq!(got.max_path, 100);
        assert_eq!(got.max_depth, 8);
        assert_eq!(got.max_ratio, 0);
        assert_eq!(got.max_input_bytes, 512 << 20);
        assert_eq!(got.min_free.percent, 10);
        assert_eq!(got.min_free.bytes, 0);
        // The limit errors name these flags: they must exist.
        for limit in [
            mayfly_image::Limit::Bytes,
            mayfly_image::Limit::FileBytes,
            mayfly_image::Limit::Entries,
            mayfly_image::Limit::Path,
            mayfly_image::Limit::Depth,
            mayfly_image::Limit::Ratio,
            mayfly_image::Limit::Input,
            mayfly_image::Limit::FreeSpace,
        ] {
            let value = if limit == mayfly_image::Limit::FreeSpace {
                "1G"
            } else {
                "7"
            };
            limits(&[limit.flag(), value]).unwrap_or_else(|e| panic!("{}: {e}", limit.flag()));
        }
    }

    #[test]
    fn bad_values_are_refused_with_what_is_expected() {
        let err = limits(&["--import-max-bytes", "lots"]).unwrap_err();
        assert!(err.contains("invalid size `lots`"), "{err}");
        let err = limits(&["--import-max-path", "5000"]).unwrap_err();
        assert!(err.contains("1..=4096"), "{err}");
        let err = limits(&["--import-min-free", "150%"]).unwrap_err();
        assert!(err.contains("0% to 100%"), "{err}");
    }
}

//! The arguments of resources: the limit flags (one struct, flattened into `launch`, `run` and
//! `flavor create`), `mayfly flavor …`, `mayfly set`, `mayfly stats`, `pause` and `resume`.
//!
//! Every value goes through [`Limits::set_key`], the parser the daemon uses, so a bad value is
//! refused before any request with the daemon's own message.

use std::ffi::OsStr;

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;
use clap::{Args, Subcommand};
use mayfly_api::Limits;

use crate::cli::JsonFlag;

/// Reads a limit flag's value with [`Limits::set_key`]: the error is the daemon's message.
#[derive(Debug, Clone, Copy)]
pub struct LimitValue(pub &'static str);

impl TypedValueParser for LimitValue {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<String, clap::Error> {
        let text = value.to_string_lossy();
        check_flag(self.0, &text)
            .map(|()| text.into_owned())
            .map_err(|why| {
                clap::Error::raw(ErrorKind::ValueValidation, format!("{why}\n")).with_cmd(cmd)
            })
    }
}

/// Whether `value` is a value of limit `key` as a flag gives it (`none` lifts a limit in
/// `mayfly set`; a flag sets one).
pub fn check_flag(key: &str, value: &str) -> Result<(), String> {
    if value.trim().eq_ignore_ascii_case("none") {
        return Err(format!(
            "invalid --{key} `{value}`: a flag sets a limit; leave --{key} out for none (`none` \
             lifts a limit of an instance: `mayfly set NAME {key}=none`)"
        ));
    }
    Limits::default().set_key(key, value)
}

/// Reads `KEY=VALUE` of `mayfly set` with [`Limits::set_key`].
#[derive(Debug, Clone, Copy)]
pub struct KeyValue;

impl TypedValueParser for KeyValue {
    type Value = (String, String);

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<(String, String), clap::Error> {
        parse_change(&value.to_string_lossy()).map_err(|why| {
            clap::Error::raw(ErrorKind::ValueValidation, format!("{why}\n")).with_cmd(cmd)
        })
    }
}

/// `memory=1G` → (`memory`, `1G`), checked.
pub fn parse_change(text: &str) -> Result<(String, String), String> {
    let Some((key, value)) = text.split_once('=') else {
        return Err(format!(
            "`{text}` is not KEY=VALUE (e.g. memory=1G cpus=2 pids=none; the keys are {})",
            mayfly_api::LIMIT_KEYS.join(", ")
        ));
    };
    Limits::default().set_key(key, value)?;
    Ok((key.trim().to_owned(), value.trim().to_owned()))
}

/// The help heading of the limit flags.
pub const LIMITS: &str = "Limits (docs/resources.md)";

/// The limit flags of `launch`, `run` and `flavor create`.
#[derive(Debug, Clone, Default, Args)]
pub struct LimitArgs {
    /// CPU time: at most this many CPUs' worth, e.g. 0.5, 2 (0.01 to 1024, 3 decimals).
    #[arg(long, help_heading = LIMITS, allow_negative_numbers = true, value_name = "CPUS", value_parser = LimitValue("cpus"))]
    pub cpus: Option<String>,
    /// CPU share against other instances when the CPUs are busy: 1 to 10000 (default 100).
    #[arg(long, help_heading = LIMITS, allow_negative_numbers = true, value_name = "WEIGHT", value_parser = LimitValue("cpu-weight"))]
    pub cpu_weight: Option<String>,
    /// The CPUs it may run on, e.g. 0-3,6.
    #[arg(long, help_heading = LIMITS, allow_negative_numbers = true, value_name = "LIST", value_parser = LimitValue("cpuset"))]
    pub cpuset: Option<String>,
    /// Memory limit, at least 6M, e.g. 512M, 2GiB, 1.5G (K/M/G/T: powers of 1024): past it
    /// the kernel reclaims, then OOM-kills a process of the instance (`info` counts them).
    #[arg(long, help_heading = LIMITS, allow_negative_numbers = true, value_name = "SIZE", value_parser = LimitValue("memory"))]
    pub memory: Option<String>,
    /// Memory guaranteed to it, e.g. 256M (at most --memory): launches and starts past the
    /// host's memory × the daemon's --memory-overcommit are refused.
    #[arg(long, help_heading = LIMITS, allow_negative_numbers = true, value_name = "SIZE", value_parser = LimitValue("memory-reserve"))]
    pub memory_reserve: Option<String>,
    /// Swap it may use, e.g. 1G (default: none, swap off).
    #[arg(long, help_heading = LIMITS, allow_negative_numbers = true, value_name = "SIZE", value_parser = LimitValue("swap"))]
    pub swap: Option<String>,
    /// Most processes and threads at once, at least 8 (a fork bomb stops there).
    #[arg(long, help_heading = LIMITS, allow_negative_numbers = true, value_name = "N", value_parser = LimitValue("pids"))]
    pub pids: Option<String>,
    /// IO share against other instances: 1 to 10000 (default 100).
    #[arg(long, help_heading = LIMITS, allow_negative_numbers = true, value_name = "WEIGHT", value_parser = LimitValue("io-weight"))]
    pub io_weight: Option<String>,
    /// IO limits on the state directory's disk: RATE (bytes/s, reads and writes each, e.g.
    /// 50M) or rbps=R,wbps=W,riops=N,wiops=N (any of them).
    #[arg(long, help_heading = LIMITS, allow_negative_numbers = true, value_name = "RATE|rbps=R,…", value_parser = LimitValue("io-max"))]
    pub io_max: Option<String>,
    /// Size of the writable layer, at least 16M, e.g. 2G: writing past it gives ENOSPC (a
    /// project quota where the state filesystem has them, else an ext4 image per instance;
    /// see docs/quotas.md).
    #[arg(long, help_heading = LIMITS, allow_negative_numbers = true, value_name = "SIZE", value_parser = LimitValue("disk"))]
    pub disk: Option<String>,
    /// Bandwidth of each network interface, each way: bytes/s (10M) or bits/s (100mbit,
    /// 512kbit, 1gbit); at least 8kbit.
    #[arg(long, help_heading = LIMITS, allow_negative_numbers = true, value_name = "RATE", value_parser = LimitValue("net-rate"))]
    pub net_rate: Option<String>,
}

impl LimitArgs {
    /// The limits the flags give.
    pub fn limits(&self) -> Result<Limits, String> {
        let mut limits = Limits::default();
        for (key, value) in self.pairs() {
            limits.set_key(key, value)?;
        }
        Ok(limits)
    }

    /// (key, value) of every flag given, in [`mayfly_api::LIMIT_KEYS`] order.
    fn pairs(&self) -> Vec<(&'static str, &str)> {
        [
            ("cpus", &self.cpus),
            ("cpu-weight", &self.cpu_weight),
            ("cpuset", &self.cpuset),
            ("memory", &self.memory),
            ("memory-reserve", &self.memory_reserve),
            ("swap", &self.swap),
            ("pids", &self.pids),
            ("io-weight", &self.io_weight),
            ("io-max", &self.io_max),
            ("disk", &self.disk),
            ("net-rate", &self.net_rate),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
        .collect()
    }
}

/// Flavor subcommands.
#[derive(Debug, Subcommand)]
pub enum FlavorCommand {
    /// Create a flavor: a named preset of limits (immutable: remove it and create it again
    /// to change it).
    #[command(after_help = "\
Examples:
  mayfly flavor create web-small --description 'front ends' --cpus 0.5 --memory 512M --pids 256
  mayfly flavor create batch --cpus 4 --cpu-weight 50 --memory 8G --memory-reserve 2G
  mayfly launch busybox --name web --flavor web-small")]
    Create(Box<FlavorCreateArgs>),
    /// List flavors (built-in ones first) and what each holds.
    #[command(
        visible_alias = "ls",
        after_help = "Examples:\n  mayfly flavor list\n  mayfly flavor list --json"
    )]
    List(JsonFlag),
    /// Show a flavor: its limits and the instances that use it.
    #[command(
        after_help = "Examples:\n  mayfly flavor info small\n  mayfly flavor info small --json"
    )]
    Info(FlavorInfoArgs),
    /// Delete flavors (refused for built-in ones, and while instances use one: the error
    /// names them).
    #[command(
        visible_alias = "remove",
        after_help = "Examples:\n  mayfly flavor rm web-small"
    )]
    Rm(FlavorRmArgs),
}

/// `mayfly flavor create`.
#[derive(Debug, Args)]
pub struct FlavorCreateArgs {
    /// Flavor name (a lowercase DNS label, like an instance's).
    pub name: String,
    /// What it is for.
    #[arg(long, short, value_name = "TEXT")]
    pub description: Option<String>,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Print the new flavor as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `mayfly flavor info`.
#[derive(Debug, Args)]
pub struct FlavorInfoArgs {
    /// Flavor name.
    pub name: String,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

/// `mayfly flavor rm`.
#[derive(Debug, Args)]
pub struct FlavorRmArgs {
    /// Flavor names.
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `mayfly set`.
#[derive(Debug, Args)]
pub struct SetArgs {
    /// Instance name.
    pub name: String,
    /// Changes, KEY=VALUE: cpus, cpu-weight, cpuset, memory, memory-reserve, swap, pids,
    /// io-weight, io-max, disk, net-rate (the forms of the launch flags; `_` may stand for
    /// `-`); VALUE `none` lifts the instance's own limit.
    #[arg(value_name = "KEY=VALUE", value_parser = KeyValue, required_unless_present = "flavor")]
    pub changes: Vec<(String, String)>,
    /// Take the limits from this flavor (the instance's own limits stay over it); `none`
    /// drops the flavor.
    #[arg(long, value_name = "FLAVOR|none")]
    pub flavor: Option<String>,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `mayfly stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Instances (default: every running one).
    pub names: Vec<String>,
    /// Print one sample as JSON.
    #[arg(long)]
    pub json: bool,
    /// Print one sample and exit (the default when the output is not a terminal).
    #[arg(long)]
    pub no_stream: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_use_the_limits_parser() {
        assert_eq!(check_flag("memory", "512M"), Ok(()));
        assert_eq!(
            check_flag("memory", "12XB").unwrap_err(),
            "invalid --memory `12XB`: unknown unit (e.g. 512M, 2GiB, 1.5G; K/M/G/T are powers \
             of 1024)"
        );
        assert!(
            check_flag("pids", "none")
                .unwrap_err()
                .contains("leave --pids out")
        );
        let args = LimitArgs {
            cpus: Some("1.5".into()),
            memory: Some("1G".into()),
            net_rate: Some("100mbit".into()),
            ..LimitArgs::default()
        };
        let limits = args.limits().unwrap();
        assert_eq!(limits.cpus, Some(mayfly_api::Cpus(1500)));
        assert_eq!(limits.memory, Some(1 << 30));
        assert_eq!(limits.net_rate, Some(12_500_000));
        assert!(LimitArgs::default().limits().unwrap().is_empty());
    }

    #[test]
    fn changes_are_key_value() {
        assert_eq!(
            parse_change("memory_reserve=1G"),
            Ok(("memory_reserve".into(), "1G".into()))
        );
        assert_eq!(
            parse_change("pids=none"),
            Ok(("pids".into(), "none".into()))
        );
        assert!(
            parse_change("memory")
                .unwrap_err()
                .contains("is not KEY=VALUE")
        );
        assert!(parse_change("memory=-1").unwrap_err().contains("negative"));
        assert!(
            parse_change("ram=1G")
                .unwrap_err()
                .contains("unknown limit `ram`")
        );
    }
}

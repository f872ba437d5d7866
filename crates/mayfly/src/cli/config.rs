//! The daemon's configuration file (`/etc/mayfly/config.toml`, `--config PATH`,
//! `MAYFLY_CONFIG`): one key per option of `mayfly daemon`, spelled as the option without its
//! dashes (`log-level = "debug"`, `listen = ["0.0.0.0:8443"]`).
//!
//! Precedence: the command line, then the environment, then the file, then the default. The
//! file is applied by adding `--KEY=VALUE` to the command line for each key whose option was
//! given neither on the command line nor in the environment, so a value from the file goes
//! through the very parser (and the very checks) the option has. A key no option has, or a
//! value the option refuses, stops the daemon with an error naming the file and the key.
//! docs/config.md documents every key; contrib/config.toml lists them with their defaults.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap::parser::ValueSource;

use super::Cli;

/// Where the daemon looks for its configuration when neither `--config` nor `MAYFLY_CONFIG`
/// names one (a missing file there is fine: every option has a default).
pub const DEFAULT_CONFIG: &str = "/etc/mayfly/config.toml";

/// The largest configuration file read (it holds a few dozen short keys).
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Options of `mayfly daemon` that are not configuration keys (nor are the global options
/// of the client, `--remote` or `--quiet`: of the global ones only `--socket` is a key).
const NOT_KEYS: &[&str] = &["config", "help", "version"];

/// The global option that is a key.
const GLOBAL_KEYS: &[&str] = &["socket"];

/// Why the configuration could not be applied.
#[derive(Debug)]
pub struct ConfigError(String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One configuration key: the daemon option it sets.
#[derive(Debug, Clone)]
pub struct Key {
    /// The key (the option's long name).
    pub name: String,
    /// clap's id of the option.
    id: String,
    /// Whether the option is a flag without a value (`true` adds it, `false` does nothing).
    flag: bool,
    /// Whether the option may be repeated (the key then takes an array too).
    repeated: bool,
    /// Whether the option's value is a path (a relative one in the file is relative to the
    /// file's directory).
    path: bool,
}

/// The `mayfly daemon` command, its global options (`--socket`) included.
fn daemon_command() -> clap::Command {
    let mut cli = Cli::command();
    cli.build();
    cli.find_subcommand("daemon")
        .cloned()
        .unwrap_or_else(|| clap::Command::new("daemon"))
}

/// Every configuration key, in the order of `mayfly daemon --help`.
pub fn keys() -> Vec<Key> {
    daemon_command()
        .get_arguments()
        .filter(|a| !a.is_positional())
        .filter_map(|a| {
            let name = a.get_long()?;
            if NOT_KEYS.contains(&name) || (a.is_global_set() && !GLOBAL_KEYS.contains(&name)) {
                return None;
            }
            let takes_value = a.get_action().takes_values();
            Some(Key {
                name: name.to_owned(),
                id: a.get_id().as_str().to_owned(),
                flag: !takes_value,
                repeated: matches!(a.get_action(), clap::ArgAction::Append),
                path: a.get_value_parser().type_id() == std::any::TypeId::of::<PathBuf>(),
            })
        })
        .collect()
}

/// The command line `argv` (of `mayfly daemon`) with the configuration file's values added.
/// `explicit` is the file `--config` or `MAYFLY_CONFIG` named: it must exist. Without it the
/// default file is read if it exists.
pub fn apply(argv: &[OsString], explicit: Option<&Path>) -> Result<Vec<OsString>, ConfigError> {
    let (path, text) = match explicit {
        Some(p) => (p.to_path_buf(), Some(read(p)?)),
        None => {
            let p = PathBuf::from(DEFAULT_CONFIG);
            match std::fs::symlink_metadata(&p) {
                Ok(_) => {
                    let text = read(&p)?;
                    (p, Some(text))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => (p, None),
                Err(e) => {
                    return Err(ConfigError(format!(
                        "cannot read the configuration file {}: {e}\n  hint: fix its permissions, or name another with --config",
                        p.display()
                    )));
                }
            }
        }
    };
    let Some(text) = text else {
        return Ok(argv.to_vec());
    };
    let added = arguments(&path, &text, argv)?;
    let mut out = argv.to_vec();
    out.extend(added);
    Ok(out)
}

fn read(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    let hint =
        "create it, or give another file with --config (or MAYFLY_CONFIG); see docs/config.md";
    let file = std::fs::File::open(path).map_err(|e| {
        ConfigError(format!(
            "cannot read the configuration file {}: {e}\n  hint: {hint}",
            path.display()
        ))
    })?;
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| {
            ConfigError(format!(
                "cannot read the configuration file {}: {e}\n  hint: it must be UTF-8 TOML text",
                path.display()
            ))
        })?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigError(format!(
            "the configuration file {} is larger than {MAX_CONFIG_BYTES} bytes\n  hint: it holds one short line per daemon option; see contrib/config.toml",
            path.display()
        )));
    }
    Ok(text)
}

/// The `--KEY=VALUE` arguments the file `text` (at `path`) adds to `argv`: one per key whose
/// option `argv` and the environment leave at its default, each checked by the option's parser.
fn arguments(path: &Path, text: &str, argv: &[OsString]) -> Result<Vec<OsString>, ConfigError> {
    let at = path.display();
    // Relative paths in the file are relative to the file's directory, not to wherever the
    // daemon happens to be started from.
    let base = std::path::absolute(path)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("/"));
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        ConfigError(format!(
            "the configuration file {at} is not valid TOML: {}\n  hint: one `key = value` per line, e.g. `log-level = \"debug\"`; see docs/config.md",
            e.message()
        ))
    })?;
    let keys = keys();
    let given = Cli::command()
        .try_get_matches_from(argv)
        .map_err(|e| ConfigError(clap_message(&e)))?;
    let given = given.subcommand_matches("daemon").unwrap_or(&given);
    let mut added = Vec::new();
    for (name, value) in &table {
        let Some(key) = keys.iter().find(|k| &k.name == name) else {
            return Err(unknown_key(&at.to_string(), name, &keys));
        };
        let source = given.value_source(&key.id);
        if matches!(
            source,
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let args = key_arguments(key, value, &base).map_err(|what| {
            ConfigError(format!(
                "the configuration file {at}: key `{name}`: {what}\n  hint: fix or remove it; see docs/config.md and `mayfly daemon --help` (--{name})"
            ))
        })?;
        // The option's own parser checks the value, alone, so the error names this key.
        let mut alone = vec![OsString::from("mayfly"), OsString::from("daemon")];
        alone.extend(args.iter().cloned());
        if let Err(e) = Cli::command().try_get_matches_from(&alone) {
            return Err(ConfigError(format!(
                "the configuration file {at}: key `{name}`: {}\n  hint: fix or remove it; see docs/config.md and `mayfly daemon --help` (--{name})",
                clap_message(&e)
            )));
        }
        added.extend(args);
    }
    Ok(added)
}

/// The arguments that give `key` the TOML `value` (a relative path taken relative to `base`).
fn key_arguments(key: &Key, value: &toml::Value, base: &Path) -> Result<Vec<OsString>, String> {
    let name = &key.name;
    if key.flag {
        return match value {
            toml::Value::Boolean(true) => Ok(vec![format!("--{name}").into()]),
            toml::Value::Boolean(false) => Ok(Vec::new()),
            _ => Err("give true or false".to_owned()),
        };
    }
    let argument = |v: &toml::Value| -> Result<OsString, String> {
        let text = scalar(v)?;
        let mut arg = OsString::from(format!("--{name}="));
        if key.path && !text.is_empty() && Path::new(&text).is_relative() {
            arg.push(base.join(&text));
        } else {
            arg.push(text);
        }
        Ok(arg)
    };
    match value {
        toml::Value::Array(items) if key.repeated => items.iter().map(argument).collect(),
        toml::Value::Array(_) => Err("takes one value, not an array".to_owned()),
        v => Ok(vec![argument(v)?]),
    }
}

/// The text of a string, number or boolean.
fn scalar(value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Datetime(d) => Ok(d.to_string()),
        toml::Value::Array(_) => Err("an array is not a value here".to_owned()),
        toml::Value::Table(_) => {
            Err("a table is not a value here (keys are not grouped in sections)".to_owned())
        }
    }
}

fn unknown_key(at: &str, name: &str, keys: &[Key]) -> ConfigError {
    let dashed = name.replace('_', "-");
    let hint = if name == "config" {
        "the configuration file cannot name another one: remove the key".to_owned()
    } else if keys.iter().any(|k| k.name == dashed) {
        format!("did you mean `{dashed}`? (keys are spelled like the options, with dashes)")
    } else {
        let all: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
        format!(
            "remove it, or use one of: {} (see docs/config.md)",
            all.join(", ")
        )
    };
    ConfigError(format!(
        "the configuration file {at}: unknown key `{name}`\n  hint: {hint}"
    ))
}

/// clap's error text without its `error: ` prefix and its usage lines.
fn clap_message(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let first = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    first.trim_start_matches("error: ").trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn added(text: &str, args: &[&str]) -> Result<Vec<String>, String> {
        arguments(Path::new("/x/config.toml"), text, &argv(args))
            .map(|a| a.iter().map(|s| s.to_string_lossy().into_owned()).collect())
            .map_err(|e| e.0)
    }

    /// `MAYFLY_LISTEN` (one variable) can name several listeners, as `listen` can.
    #[test]
    fn listen_takes_a_comma_separated_list() {
        use clap::Parser;
        let cli =
            Cli::try_parse_from(["mayfly", "daemon", "--listen", "127.0.0.1:1,[::1]:2"]).unwrap();
        let super::super::Command::Daemon(d) = cli.command else {
            panic!("not the daemon")
        };
        assert_eq!(d.listen, ["127.0.0.1:1", "[::1]:2"]);
    }

    #[test]
    fn relative_paths_are_relative_to_the_file() {
        let got = added(
            "state-dir = \"state\"\nsocket = \"../run/m.sock\"\nbusybox = \"/bin/busybox\"\nlog-level = \"debug\"\n",
            &["mayfly", "daemon"],
        )
        .unwrap();
        assert_eq!(
            got,
            [
                "--busybox=/bin/busybox",
                "--log-level=debug",
                "--socket=/x/../run/m.sock",
                "--state-dir=/x/state",
            ]
        );
    }

    #[test]
    fn every_option_of_the_daemon_is_a_key() {
        let names: Vec<String> = keys().into_iter().map(|k| k.name).collect();
        for n in [
            "state-dir",
            "socket",
            "busybox",
            "log-level",
            "cache-dir",
            "log-max-size",
            "cgroup-layout",
            "user-namespaces",
            "memory-overcommit",
            "import-max-bytes",
            "import-min-free",
            "listen",
        ] {
            assert!(names.iter().any(|k| k == n), "{n} in {names:?}");
        }
        for not in ["config", "remote", "quiet", "help"] {
            assert!(!names.iter().any(|k| k == not), "{not} in {names:?}");
        }
    }

    #[test]
    fn the_file_fills_what_the_command_line_leaves_at_its_default() {
        let got = added(
            "log-level = \"debug\"\nstate-dir = \"/srv/m\"\nlisten = [\"127.0.0.1:1\", \"[::1]:2\"]\nmemory-overcommit = 1.5\nlog-max-size = 4096\n",
            &["mayfly", "daemon", "--state-dir", "/given"],
        )
        .unwrap();
        assert_eq!(
            got,
            [
                "--listen=127.0.0.1:1",
                "--listen=[::1]:2",
                "--log-level=debug",
                "--log-max-size=4096",
                "--memory-overcommit=1.5",
            ]
        );
    }

    #[test]
    fn a_global_option_given_before_the_command_wins_too() {
        let file = "socket = \"/from/file.sock\"\n";
        assert_eq!(
            added(file, &["mayfly", "--socket", "/given.sock", "daemon"]).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            added(file, &["mayfly", "daemon", "--socket", "/given.sock"]).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            added(file, &["mayfly", "daemon"]).unwrap(),
            ["--socket=/from/file.sock"]
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_naming_the_key() {
        let e = added("log_level = \"debug\"", &["mayfly", "daemon"]).unwrap_err();
        assert!(e.contains("unknown key `log_level`"), "{e}");
        assert!(e.contains("did you mean `log-level`"), "{e}");
        let e = added("colour = 1", &["mayfly", "daemon"]).unwrap_err();
        assert!(
            e.contains("unknown key `colour`") && e.contains("state-dir"),
            "{e}"
        );
        let e = added("log-max-size = \"lots\"", &["mayfly", "daemon"]).unwrap_err();
        assert!(
            e.contains("key `log-max-size`") && e.contains("lots"),
            "{e}"
        );
        let e = added("log-level = \"loud\"", &["mayfly", "daemon"]).unwrap_err();
        assert!(e.contains("key `log-level`") && e.contains("loud"), "{e}");
        let e = added("cgroup-layout = [\"v1\"]", &["mayfly", "daemon"]).unwrap_err();
        assert!(e.contains("key `cgroup-layout`: takes one value"), "{e}");
        let e = added("[daemon]\nlog-level = \"info\"", &["mayfly", "daemon"]).unwrap_err();
        assert!(e.contains("unknown key `daemon`"), "{e}");
        let e = added("log-level = ", &["mayfly", "daemon"]).unwrap_err();
        assert!(e.contains("not valid TOML"), "{e}");
        let e = added("config = \"/etc/x\"", &["mayfly", "daemon"]).unwrap_err();
        assert!(e.contains("cannot name another"), "{e}");
    }

    #[test]
    fn a_missing_explicit_file_is_an_error() {
        let e = apply(
            &argv(&["mayfly", "daemon"]),
            Some(Path::new("/nonexistent/mayfly.toml")),
        )
        .unwrap_err();
        assert!(e.0.contains("/nonexistent/mayfly.toml"), "{e}");
    }

    /// Every key is documented in docs/config.md and listed, with its default, in
    /// contrib/config.toml; the defaults listed there are accepted.
    #[test]
    fn every_key_is_documented_with_a_valid_default() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let doc = std::fs::read_to_string(root.join("docs/config.md")).unwrap();
        let sample = std::fs::read_to_string(root.join("contrib/config.toml")).unwrap();
        // The sample's keys are commented out (`# key = default`): uncommented, they parse.
        let uncommented: String = sample
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| l.contains(" = "))
            .map(|l| format!("{l}\n"))
            .collect();
        let table: toml::Table = uncommented.parse().unwrap();
        added(&uncommented, &["mayfly", "daemon"]).unwrap();
        for k in keys() {
            assert!(
                doc.contains(&format!("`{}`", k.name)),
                "docs/config.md documents `{}`",
                k.name
            );
            assert!(
                table.contains_key(&k.name),
                "contrib/config.toml lists `{}`",
                k.name
            );
        }
        assert_eq!(
            table.len(),
            keys().len(),
            "no key listed that does not exist"
        );
    }
}

//! What a process inside an instance gets: its command (the template's entrypoint and cmd
//! with the instance's overrides, as OCI images and Docker have it), its user, its
//! environment and the signals it can be sent.

use mayfly_api::TemplateConfig;
use mayfly_store::InstanceConfig;

use crate::EngineError;

/// The command an instance's init runs: the instance's entrypoint if it has one, else the
/// template's; then the instance's arguments if it has any, else the template's `cmd` unless
/// the instance replaced the entrypoint (as `docker run --entrypoint` drops the image's
/// `Cmd`). Empty when nothing is left to run.
pub(crate) fn init_command(template: &TemplateConfig, instance: &InstanceConfig) -> Vec<String> {
    let (entrypoint, cmd) = template.entrypoint_and_cmd();
    let entrypoint = instance.entrypoint.as_deref().unwrap_or(entrypoint);
    let args = if !instance.command.is_empty() {
        &instance.command[..]
    } else if instance.entrypoint.is_some() {
        &[]
    } else {
        cmd
    };
    entrypoint.iter().chain(args).cloned().collect()
}

/// Who an instance's init (and, unless they say otherwise, its exec'd processes) runs as:
/// the instance's user, else the template's (empty: root).
pub(crate) fn init_user(template: &TemplateConfig, instance: &InstanceConfig) -> String {
    instance
        .user
        .clone()
        .unwrap_or_else(|| template.user.clone())
}

/// Checks a `USER[:GROUP]`; `whose` says where it came from (`--user`, the template's
/// default user) for the message.
pub(crate) fn check_user(user: &str, whose: &str) -> Result<(), EngineError> {
    mayfly_driver::UserSpec::parse(user).map(drop).map_err(|e| {
        EngineError::invalid(
            format!("invalid {whose} `{}`: {e}", user.escape_debug()),
            "use USER[:GROUP] with names or numbers, e.g. `--user nobody`, `--user 1000`, `--user 1000:1000` or `--user www-data:www-data`",
        )
    })
}

/// Checks what an instance asks to run on top of its template (`--entrypoint`, `--user`),
/// before anything is created.
pub(crate) fn check_overrides(config: &InstanceConfig) -> Result<(), EngineError> {
    if let Some(e) = &config.entrypoint
        && e.iter().any(|a| a.contains('\0'))
    {
        return Err(EngineError::invalid(
            "the entrypoint contains a NUL byte",
            "remove it",
        ));
    }
    if let Some(user) = &config.user {
        check_user(user, "user")?;
    }
    Ok(())
}

/// The command and user an instance of template `name` (with defaults `template`) runs, or
/// why it cannot run: nothing left to run, or an unusable default user.
pub(crate) fn init_process(
    name: &str,
    template: &TemplateConfig,
    instance: &InstanceConfig,
) -> Result<(Vec<String>, String), EngineError> {
    let args = init_command(template, instance);
    if args.is_empty() {
        return Err(if instance.entrypoint.is_some() {
            EngineError::invalid(
                "nothing to run: the entrypoint was cleared and no command was given",
                "give the command after `--`, e.g. `mayfly run --entrypoint '' IMAGE -- /bin/sh`",
            )
        } else {
            EngineError::invalid(
                format!("template `{name}` has no default command"),
                "give the command after `--`, e.g. `mayfly launch TEMPLATE -- /bin/sh -c 'sleep infinity'`",
            )
        });
    }
    let user = init_user(template, instance);
    if instance.user.is_none() {
        check_user(&user, &format!("default user of template `{name}`")).map_err(|e| match e {
            EngineError::Invalid { message, .. } => {
                EngineError::invalid(message, "give another with `--user USER[:GROUP]`")
            }
            e => e,
        })?;
    }
    Ok((args, user))
}

/// Builds a process environment: defaults, then the template's, the instance's and the
/// request's entries, later ones replacing earlier ones with the same key. `HOME` is left to
/// the forker, which takes it from the user's passwd entry inside the instance when no
/// entry here sets it.
pub(crate) fn environment(hostname: &str, tty: bool, layers: &[&[String]]) -> Vec<String> {
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), mayfly_driver::DEFAULT_PATH.into()),
        ("HOSTNAME".into(), hostname.into()),
        ("container".into(), "mayfly".into()),
    ];
    if tty {
        env.push(("TERM".into(), "xterm".into()));
    }
    for layer in layers {
        for entry in *layer {
            let (k, v) = entry.split_once('=').unwrap_or((entry.as_str(), ""));
            match env.iter_mut().find(|(key, _)| key == k) {
                Some(slot) => slot.1 = v.to_owned(),
                None => env.push((k.to_owned(), v.to_owned())),
            }
        }
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// Checks that a process given by a user fits the API's size limits (the forker protocol
/// carries every accepted one).
pub(crate) fn check_size(
    command: &[String],
    env: &[String],
    workdir: Option<&str>,
) -> Result<(), crate::EngineError> {
    mayfly_api::check_process_size(command, env, workdir).map_err(|message| {
        crate::EngineError::TooLarge {
            message,
            hint: Some(
                "pass large data through a file or standard input (`mayfly exec NAME -- sh -c '…' < FILE`)"
                    .into(),
            ),
        }
    })
}

/// Checks `KEY=VALUE` entries given by a user.
pub(crate) fn check_env(entries: &[String]) -> Result<(), String> {
    for e in entries {
        let key = e.split_once('=').map(|(k, _)| k);
        let ok = key.is_some_and(|k| {
            !k.is_empty()
                && !k.starts_with(|c: char| c.is_ascii_digit())
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
        if !ok || e.contains('\0') {
            return Err(format!(
                "invalid environment entry `{e}`: use KEY=VALUE with a key of letters, digits and `_`"
            ));
        }
    }
    Ok(())
}

const SIGNALS: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ABRT", libc::SIGABRT),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("USR2", libc::SIGUSR2),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("PWR", libc::SIGPWR),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("WINCH", libc::SIGWINCH),
];

/// The first real-time signal as programs inside see it: glibc keeps the kernel's first two
/// (32, 33) for itself, so its `SIGRTMIN` is 34, as Docker and the OCI runtimes number it.
/// systemd's halt request, `SIGRTMIN+3`, is signal 37.
const RTMIN: i32 = 34;
/// The last real-time signal (`SIGRTMAX`).
const RTMAX: i32 = 64;

/// Parses a signal: a name with or without `SIG` (`SIGTERM`, `term`), a real-time signal
/// (`SIGRTMIN+3`, `RTMAX-2`, numbered as glibc does: [`RTMIN`]) or a number from 1 to 64.
pub(crate) fn parse_signal(s: &str) -> Option<i32> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let offset = |rest: &str, sign: char| -> Option<i32> {
        if rest.is_empty() {
            return Some(0);
        }
        let n = rest.strip_prefix(sign)?;
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        n.parse::<i32>().ok()
    };
    let rt = if let Some(rest) = name.strip_prefix("RTMIN") {
        offset(rest, '+').map(|n| RTMIN + n)
    } else if let Some(rest) = name.strip_prefix("RTMAX") {
        offset(rest, '-').map(|n| RTMAX - n)
    } else {
        return SIGNALS.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
    };
    rt.filter(|n| (RTMIN..=RTMAX).contains(n))
}

/// The name of signal `n` as [`parse_signal`] reads it back (`SIGTERM`, `SIGRTMIN+3`, or the
/// number for one without a name).
pub(crate) fn signal_name(n: i32) -> String {
    if let Some((name, _)) = SIGNALS.iter().find(|(_, v)| *v == n) {
        return format!("SIG{name}");
    }
    if (RTMIN..=RTMAX).contains(&n) {
        return match n - RTMIN {
            0 => "SIGRTMIN".to_owned(),
            k => format!("SIGRTMIN+{k}"),
        };
    }
    n.to_string()
}

/// Checks a stop signal given by a user (`--stop-signal`, `stop --signal`); the answer is
/// its number and its canonical name.
pub(crate) fn check_stop_signal(s: &str, flag: &str) -> Result<(i32, String), EngineError> {
    match parse_signal(s) {
        Some(libc::SIGSTOP) | Some(libc::SIGCONT) => Err(EngineError::invalid(
            format!("{flag} {s}: that signal cannot end a process"),
            "give the init's own halt request, e.g. SIGRTMIN+3 for systemd, SIGUSR2 for busybox init, SIGPWR for sysvinit, SIGTERM for most programs",
        )),
        Some(n) => Ok((n, signal_name(n))),
        None => Err(EngineError::invalid(
            format!("{flag} `{}`: unknown signal", s.escape_debug()),
            "give a name (SIGTERM, TERM, SIGPWR, SIGUSR2, SIGRTMIN+3) or a number from 1 to 64",
        )),
    }
}

/// The signal that asks a template's init to stop.
pub(crate) fn stop_signal(config: &TemplateConfig) -> i32 {
    parse_signal(&config.stop_signal).unwrap_or(libc::SIGTERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_environment_entries_win() {
        let template = vec!["PATH=/opt/bin".to_string(), "A=1".to_string()];
        let instance = vec!["A=2".to_string()];
        let env = environment("web", false, &[&template, &instance]);
        assert!(env.contains(&"PATH=/opt/bin".to_string()));
        assert!(env.contains(&"A=2".to_string()));
        assert!(env.contains(&"HOSTNAME=web".to_string()));
        assert!(!env.iter().any(|e| e.starts_with("TERM=")));
    }

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    fn template(entrypoint: &str, cmd: &str) -> TemplateConfig {
        let mut t = TemplateConfig::default();
        t.set_command(words(entrypoint), words(cmd));
        t
    }

    fn instance(entrypoint: Option<&str>, command: &str) -> InstanceConfig {
        InstanceConfig {
            entrypoint: entrypoint.map(words),
            command: words(command),
            ..InstanceConfig::default()
        }
    }

    #[test]
    fn arguments_replace_cmd_and_follow_the_entrypoint() {
        let t = template("/bin/app --serve", "--port 80");
        assert_eq!(
            init_command(&t, &instance(None, "")),
            words("/bin/app --serve --port 80")
        );
        assert_eq!(
            init_command(&t, &instance(None, "--port 8080")),
            words("/bin/app --serve --port 8080")
        );
    }

    #[test]
    fn an_entrypoint_given_drops_cmd_unless_arguments_are_given() {
        let t = template("/bin/app", "--port 80");
        assert_eq!(
            init_command(&t, &instance(Some("/bin/sh"), "")),
            words("/bin/sh")
        );
        assert_eq!(
            init_command(&t, &instance(Some("/bin/sh"), "-c true")),
            words("/bin/sh -c true")
        );
        // An empty entrypoint clears it: the arguments are the whole command.
        assert_eq!(
            init_command(&t, &instance(Some(""), "id -u")),
            words("id -u")
        );
        assert!(init_command(&t, &instance(Some(""), "")).is_empty());
    }

    #[test]
    fn without_an_entrypoint_arguments_are_the_whole_command() {
        let t = template("", "/sbin/init");
        assert_eq!(init_command(&t, &instance(None, "")), words("/sbin/init"));
        assert_eq!(
            init_command(&t, &instance(None, "sh -c x")),
            words("sh -c x")
        );
    }

    #[test]
    fn the_instance_user_wins_over_the_template_user() {
        let mut t = template("", "sh");
        t.user = "nobody".into();
        assert_eq!(init_user(&t, &InstanceConfig::default()), "nobody");
        let own = InstanceConfig {
            user: Some("0".into()),
            ..InstanceConfig::default()
        };
        assert_eq!(init_user(&t, &own), "0");
        assert!(check_user("nobody:nogroup", "--user").is_ok());
        let e = check_user("a:b:c", "user").expect_err("a:b:c");
        assert!(e.to_string().contains("invalid user `a:b:c`"), "{e}");
    }

    #[test]
    fn environment_entries_are_checked() {
        assert!(check_env(&["A=1".into(), "B_2=".into()]).is_ok());
        for bad in ["A", "=1", "1A=x", "A-B=1"] {
            assert!(check_env(&[bad.into()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn signals_parse_by_name_and_number() {
        assert_eq!(parse_signal("SIGTERM"), Some(libc::SIGTERM));
        assert_eq!(parse_signal("USR2"), Some(libc::SIGUSR2));
        assert_eq!(parse_signal("9"), Some(9));
        assert_eq!(parse_signal("SIGNOPE"), None);
        assert_eq!(parse_signal("0"), None);
        assert_eq!(parse_signal("65"), None);
        assert_eq!(parse_signal("sigpwr"), Some(libc::SIGPWR));
    }

    #[test]
    fn real_time_signals_parse_as_glibc_numbers_them() {
        // systemd's halt request.
        assert_eq!(parse_signal("SIGRTMIN+3"), Some(37));
        assert_eq!(parse_signal("RTMIN+3"), Some(37));
        assert_eq!(parse_signal("SIGRTMIN"), Some(34));
        assert_eq!(parse_signal("SIGRTMAX"), Some(64));
        assert_eq!(parse_signal("SIGRTMAX-2"), Some(62));
        assert_eq!(parse_signal("37"), Some(37));
        for bad in [
            "SIGRTMIN+31",
            "SIGRTMIN+",
            "SIGRTMIN-1",
            "SIGRTMAX+1",
            "SIGRTMIN+x",
            "SIGRTMIN++3",
            "SIGRTMAX-31",
        ] {
            assert_eq!(parse_signal(bad), None, "{bad}");
        }
    }

    #[test]
    fn signal_names_read_back() {
        for n in 1..=64 {
            let name = signal_name(n);
            assert_eq!(parse_signal(&name), Some(n), "{n} -> {name}");
        }
        assert_eq!(signal_name(37), "SIGRTMIN+3");
        assert_eq!(signal_name(libc::SIGPWR), "SIGPWR");
        assert_eq!(
            check_stop_signal("rtmin+3", "--stop-signal")
                .map(|(_, n)| n)
                .ok(),
            Some("SIGRTMIN+3".to_owned())
        );
        let e = check_stop_signal("SIGFOO", "--signal").expect_err("SIGFOO");
        assert!(e.to_string().contains("unknown signal"), "{e}");
        assert!(check_stop_signal("STOP", "--signal").is_err());
    }
}

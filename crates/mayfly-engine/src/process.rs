//! What a process inside an instance gets: its environment and the signals it can be sent.

use mayfly_api::TemplateConfig;

/// Builds a process environment: defaults, then the template's, the instance's and the
/// request's entries, later ones replacing earlier ones with the same key.
pub(crate) fn environment(hostname: &str, tty: bool, layers: &[&[String]]) -> Vec<String> {
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), mayfly_driver::DEFAULT_PATH.into()),
        ("HOME".into(), "/root".into()),
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
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("USR2", libc::SIGUSR2),
    ("TERM", libc::SIGTERM),
    ("PWR", libc::SIGPWR),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("WINCH", libc::SIGWINCH),
];

/// Parses `SIGTERM`, `TERM` or `15`.
pub(crate) fn parse_signal(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let name = s.strip_prefix("SIG").unwrap_or(s);
    SIGNALS.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
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
    }
}

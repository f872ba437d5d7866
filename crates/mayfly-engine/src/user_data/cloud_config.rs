//! Cloud-config: parsing (errors with their line) and the subset mayfly's own runner
//! handles (translated to sh by [`super::to_sh`]).

use serde::Deserialize;

/// The top-level keys mayfly's runner handles (templates without cloud-init).
pub(crate) const SUPPORTED_KEYS: &[&str] = &["fqdn", "hostname", "runcmd", "users", "write_files"];

/// A cloud-config of the subset.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct CloudConfig {
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub fqdn: Option<String>,
    #[serde(default)]
    pub write_files: Vec<WriteFile>,
    #[serde(default)]
    pub runcmd: Vec<Command>,
    #[serde(default)]
    pub users: Vec<User>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WriteFile {
    pub path: String,
    #[serde(default)]
    pub content: String,
    #[serde(default)]
    pub encoding: Option<String>,
    #[serde(default)]
    pub permissions: Option<Permissions>,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub append: bool,
    /// cloud-init's: write after the packages are installed; mayfly installs none.
    #[serde(default)]
    #[allow(dead_code)]
    pub defer: bool,
}

/// `permissions:` as cloud-init reads it: a string is octal (`'0644'`, `'644'`, `0644`
/// unquoted, which YAML keeps as a string); an integer is its value (`420` = 0o644,
/// `0o644` too).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Permissions {
    Text(String),
    Number(u32),
}

#[derive(Debug)]
pub(crate) enum Command {
    Line(String),
    Argv(Vec<String>),
}

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Line(String),
            Argv(Vec<String>),
        }
        match Raw::deserialize(d) {
            Ok(Raw::Argv(a)) => Ok(Command::Argv(a)),
            Ok(Raw::Line(l)) => Ok(Command::Line(l)),
            Err(_) => Err(serde::de::Error::custom(
                "each command is a string or a list of strings",
            )),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum User {
    /// `- alice`: that user is made; `- default`, the distribution's default user, which
    /// mayfly's runner has none of, is ignored (said in the output).
    Name(String),
    Full(Box<FullUser>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FullUser {
    pub name: String,
    #[serde(default)]
    pub ssh_authorized_keys: Vec<String>,
    #[serde(default)]
    pub shell: Option<String>,
    #[serde(default)]
    pub groups: Option<Groups>,
    #[serde(default)]
    pub homedir: Option<String>,
    #[serde(default)]
    pub gecos: Option<String>,
    /// Ignored (mayfly's runner installs no sudo rules): said in the output.
    #[serde(default)]
    pub sudo: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    #[allow(dead_code)]
    pub lock_passwd: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Groups {
    List(Vec<String>),
    Text(String),
}

fn located(e: &serde_yaml_ng::Error) -> String {
    let text = e.to_string();
    match e.location() {
        // libyaml's messages say where (and often in what context) themselves.
        Some(_) if text.contains(" at line ") => text,
        Some(l) => format!("line {}: {text}", l.line()),
        None => text,
    }
}

/// Parses `text` (a `#cloud-config`): its YAML syntax and top-level mapping; with
/// `subset_only` (for mayfly's runner), also refuses keys outside [`SUPPORTED_KEYS`] and
/// checks the shape of those (else only `hostname` is taken, cloud-init checks the rest).
pub(crate) fn parse(text: &str, subset_only: bool) -> Result<CloudConfig, String> {
    let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(text)
        .map_err(|e| format!("malformed cloud-config: {}", located(&e)))?;
    let map = match &value {
        serde_yaml_ng::Value::Null => return Ok(CloudConfig::default()),
        serde_yaml_ng::Value::Mapping(m) => m,
        _ => {
            return Err(
                "malformed cloud-config: it must be a mapping of keys (`key: value`)".into(),
            );
        }
    };
    let mut unknown = Vec::new();
    for k in map.keys() {
        let Some(key) = k.as_str() else {
            return Err("malformed cloud-config: a top-level key is not a string".into());
        };
        if !SUPPORTED_KEYS.contains(&key) {
            unknown.push(key.to_owned());
        }
    }
    if !subset_only {
        // cloud-init checks its own schema (and knows more shapes than mayfly's subset):
        // only the hostname is taken, for the instance's UTS name and meta.json.
        let text_of = |k: &str| map.get(k).and_then(|h| h.as_str()).map(str::to_owned);
        let (hostname, fqdn) = (text_of("hostname"), text_of("fqdn"));
        for h in hostname.iter().chain(&fqdn) {
            check_hostname(h)?;
        }
        return Ok(CloudConfig {
            hostname,
            fqdn,
            ..CloudConfig::default()
        });
    }
    if !unknown.is_empty() {
        return Err(format!(
            "the cloud-config uses {} that mayfly's own runner does not handle (the template has no cloud-init); it handles: {}",
            unknown
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", "),
            SUPPORTED_KEYS.join(", ")
        ));
    }
    // Typed again from the text, so that a wrong shape is reported with its line.
    let config: CloudConfig = serde_yaml_ng::from_str(text)
        .map_err(|e| format!("invalid cloud-config: {}", located(&e)))?;
    for f in &config.write_files {
        if !f.path.starts_with('/') {
            return Err(format!(
                "invalid cloud-config: write_files path `{}` is not absolute",
                f.path
            ));
        }
        decode(f)?;
        mode_of(f)?;
    }
    if let Some(i) = config
        .runcmd
        .iter()
        .position(|c| matches!(c, Command::Argv(a) if a.is_empty()))
    {
        return Err(format!(
            "invalid cloud-config: {}runcmd #{}: an empty command `[]`: give a program and its arguments",
            nth_item_line(text, "runcmd", i).map_or_else(String::new, |l| format!("line {l}: ")),
            i + 1
        ));
    }
    for u in &config.users {
        let name = match u {
            User::Name(n) => n,
            User::Full(f) => &f.name,
        };
        if name != "default" && !safe_name(name) {
            return Err(format!(
                "invalid cloud-config: user name `{name}`: use letters, digits, `_`, `-` and `.`, not starting with `-` (and not `.` or `..`)"
            ));
        }
        if let User::Full(f) = u {
            for (what, v) in [
                ("gecos", &f.gecos),
                ("homedir", &f.homedir),
                ("shell", &f.shell),
            ] {
                if let Some(v) = v
                    && (v.contains(':') || v.contains('\n'))
                {
                    return Err(format!(
                        "invalid cloud-config: the {what} of user `{name}` holds a `:` or a newline, which /etc/passwd cannot"
                    ));
                }
            }
        }
        if let User::Full(full) = u
            && let Some(g) = &full.groups
        {
            let list = match g {
                Groups::List(l) => l.clone(),
                Groups::Text(t) => t.split(',').map(|x| x.trim().to_owned()).collect(),
            };
            if let Some(bad) = list.iter().find(|g| !safe_name(g)) {
                return Err(format!("invalid cloud-config: group name `{bad}`"));
            }
        }
    }
    for h in config.hostname.iter().chain(&config.fqdn) {
        check_hostname(h)?;
    }
    Ok(config)
}

/// The line (1-based) of the `n`th block-sequence item (`- …`) under the top-level `key:` of
/// `text`, when written in block style.
fn nth_item_line(text: &str, key: &str, n: usize) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.trim_end() == format!("{key}:"))?;
    let mut seen = 0;
    for (i, l) in lines.iter().enumerate().skip(start + 1) {
        if !l.is_empty() && !l.starts_with([' ', '-', '#']) {
            return None;
        }
        if l.trim_start().starts_with("- ") || l.trim() == "-" {
            let indent = l.len() - l.trim_start().len();
            let first = lines[start + 1..]
                .iter()
                .find(|x| x.trim_start().starts_with('-'))
                .map(|x| x.len() - x.trim_start().len());
            if Some(indent) == first {
                if seen == n {
                    return Some(i + 1);
                }
                seen += 1;
            }
        }
    }
    None
}

/// An account or group name: letters, digits, `_`, `-` and `.`, not starting with `-`, not
/// `.` or `..`.
fn safe_name(n: &str) -> bool {
    !n.is_empty()
        && n != "."
        && n != ".."
        && n.len() <= 32
        && !n.starts_with('-')
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// A hostname (or fqdn) given by a cloud-config: an RFC 1123 name, labels of 1 to 63
/// letters, digits and `-` (not first or last) separated by dots, 253 bytes at most.
pub(crate) fn check_hostname(h: &str) -> Result<(), String> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let name = h.strip_suffix('.').unwrap_or(h);
    if !name.is_empty() && name.len() <= 253 && name.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(format!(
            "invalid cloud-config: hostname `{h}`: use labels of 1 to 63 letters, digits and `-` (not first or last), separated by dots, 253 bytes at most"
        ))
    }
}

impl CloudConfig {
    /// The instance's UTS name the cloud-config asks for: the first label of `hostname`, else
    /// of `fqdn` (as cloud-init sets it when it does not prefer the fqdn).
    pub(crate) fn uts_name(&self) -> Option<String> {
        let h = self.hostname.as_ref().or(self.fqdn.as_ref())?;
        Some(h.split('.').next().unwrap_or(h).to_owned())
    }
}

pub(super) fn decode(f: &WriteFile) -> Result<Vec<u8>, String> {
    let bytes = match f.encoding.as_deref() {
        None | Some("text") | Some("text/plain") => f.content.as_bytes().to_vec(),
        Some("b64") | Some("base64") => base64_decode(&f.content).ok_or_else(|| {
            format!(
                "invalid cloud-config: the content of {} is not valid base64",
                f.path
            )
        })?,
        Some(other) => {
            return Err(format!(
                "invalid cloud-config: encoding `{other}` of {}: use b64, base64 or text",
                f.path
            ));
        }
    };
    if bytes.contains(&0) {
        return Err(format!(
            "invalid cloud-config: the content of {} holds a NUL byte, which mayfly's runner cannot write",
            f.path
        ));
    }
    Ok(bytes)
}

pub(super) fn mode_of(f: &WriteFile) -> Result<Option<u32>, String> {
    let text = match &f.permissions {
        None => return Ok(None),
        Some(Permissions::Text(t)) => t.clone(),
        Some(Permissions::Number(n)) if *n <= 0o7777 => return Ok(Some(*n)),
        Some(Permissions::Number(n)) => n.to_string(),
    };
    let digits = text.trim_start_matches("0o");
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .map(Some)
        .ok_or_else(|| {
            format!(
                "invalid cloud-config: permissions `{text}` of {}: use octal, e.g. '0644'",
                f.path
            )
        })
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    let mut padding = false;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => {
                padding = true;
                continue;
            }
            b' ' | b'\n' | b'\r' | b'\t' => continue,
            _ => return None,
        };
        if padding {
            return None;
        }
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from(acc >> bits).ok()?);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_yaml_is_refused_with_its_line() {
        let e = parse("#cloud-config\nruncmd:\n  - a\n - b: [\n", true).unwrap_err();
        assert!(e.contains("line 4"), "{e}");
        let e = parse("#cloud-config\nwrite_files: 3\n", true).unwrap_err();
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn keys_outside_the_subset_are_refused_without_cloud_init() {
        let text = "#cloud-config\npackages: [nginx]\nruncmd: [ls]\n";
        let e = parse(text, true).unwrap_err();
        assert!(e.contains("`packages`") && e.contains("write_files"), "{e}");
        assert!(parse(text, false).is_ok());
    }

    #[test]
    fn cloud_init_gets_what_only_it_understands() {
        let text = "#cloud-config\nhostname: h1\nusers:\n- name: a\n  passwd: x\nwrite_files:\n- path: /x\n  encoding: gz+b64\n  content: H4sI\n";
        let c = parse(text, false).unwrap();
        assert_eq!(c.hostname.as_deref(), Some("h1"));
        assert!(parse(text, true).is_err());
        assert!(parse("#cloud-config\nhostname: a_b\n", false).is_err());
    }

    #[test]
    fn dotted_hostnames_follow_rfc_1123() {
        let c = parse("#cloud-config\nhostname: web1.example.com\n", true).unwrap();
        assert_eq!(c.uts_name().as_deref(), Some("web1"));
        let c = parse("#cloud-config\nfqdn: db.example.org\n", true).unwrap();
        assert_eq!(c.uts_name().as_deref(), Some("db"));
        for bad in ["a-.b", "-a.b", "a..b", "a_b"] {
            assert!(
                parse(&format!("#cloud-config\nhostname: {bad}\n"), true).is_err(),
                "{bad}"
            );
        }
        let long = format!("{}.x", vec!["a".repeat(63); 4].join("."));
        assert!(parse(&format!("#cloud-config\nhostname: {long}\n"), false).is_err());
        assert!(check_hostname(&vec!["a".repeat(63); 3].join(".")).is_ok());
    }

    #[test]
    fn integer_permissions_are_their_value_strings_octal() {
        for (yaml, want) in [
            ("420", 0o644),
            ("0o644", 0o644),
            ("'0644'", 0o644),
            ("'644'", 0o644),
            ("0644", 0o644),
            ("0600", 0o600),
        ] {
            let c = parse(
                &format!("#cloud-config\nwrite_files:\n- path: /x\n  permissions: {yaml}\n"),
                true,
            )
            .unwrap();
            assert_eq!(mode_of(&c.write_files[0]).unwrap(), Some(want), "{yaml}");
        }
    }

    #[test]
    fn empty_runcmd_and_odd_users_are_refused() {
        let e = parse("#cloud-config\nruncmd:\n- [ls]\n- []\n", true).unwrap_err();
        assert!(e.contains("empty command") && e.contains("line 4"), "{e}");
        for bad in [
            "- '..'",
            "- name: .",
            "- name: a\n  gecos: \"x:y\"",
            "- name: a\n  shell: \"/bin/sh\\n\"",
        ] {
            assert!(
                parse(&format!("#cloud-config\nusers:\n{bad}\n"), true).is_err(),
                "{bad}"
            );
        }
        assert!(parse("#cloud-config\nusers:\n- alice\n- default\n", true).is_ok());
    }

    #[test]
    fn base64_and_permissions_are_checked() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGk=\n").unwrap(), b"hi");
        assert!(base64_decode("a$b").is_none());
        let e = parse(
            "#cloud-config\nwrite_files:\n- path: /x\n  permissions: '0999'\n",
            true,
        )
        .unwrap_err();
        assert!(e.contains("permissions"), "{e}");
    }
}

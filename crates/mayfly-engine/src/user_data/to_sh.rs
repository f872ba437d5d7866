//! The cloud-config subset translated to a POSIX sh script, which mayfly's runner (the
//! forker's, before the init) runs like a user-data script. The script is built as bytes:
//! a file's (b64-decoded) content goes into it unchanged.

use std::fmt::Write as _;

use super::cloud_config::{CloudConfig, Command, FullUser, Groups, User, decode, mode_of};

/// `s` quoted for sh.
fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Arbitrary bytes (no NUL: [`decode`] refuses them) quoted for sh.
fn q_bytes(b: &[u8]) -> Vec<u8> {
    let mut out = vec![b'\''];
    for &c in b {
        if c == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(c);
        }
    }
    out.push(b'\'');
    out
}

/// The sh script that does what `config` asks (checked by [`parse`] first).
///
/// [`parse`]: super::cloud_config::parse
pub(crate) fn to_script(config: &CloudConfig) -> Vec<u8> {
    let mut s = String::from(
        "#!/bin/sh\n# mayfly: the cloud-config's subset, translated\numask 022\nrc=0\nfail() { rc=$1; echo \"mayfly user data: $2 failed (status $1)\" >&2; }\n",
    );
    if !config.users.is_empty() {
        s.push_str(ACCOUNT_HELPERS);
    }
    for u in &config.users {
        match u {
            User::Name(n) if n == "default" => {
                let _ = writeln!(
                    s,
                    "echo {}",
                    q(
                        "mayfly user data: users: `default` ignored (no default user without cloud-init)"
                    )
                );
            }
            User::Name(n) => user_script(
                &mut s,
                &FullUser {
                    name: n.clone(),
                    ssh_authorized_keys: Vec::new(),
                    shell: None,
                    groups: None,
                    homedir: None,
                    gecos: None,
                    sudo: None,
                    lock_passwd: None,
                },
            ),
            User::Full(u) => user_script(&mut s, u),
        }
    }
    let mut out = s.into_bytes();
    for f in &config.write_files {
        let bytes = decode(f).unwrap_or_default();
        let path = q(&f.path);
        let redirect = if f.append { ">>" } else { ">" };
        out.extend_from_slice(
            format!("{{ mkdir -p \"$(dirname {path})\" && printf '%s' ").as_bytes(),
        );
        out.extend_from_slice(&q_bytes(&bytes));
        let mode = mode_of(f).ok().flatten().unwrap_or(0o644);
        let owner = f.owner.as_deref().unwrap_or("root:root");
        let mut tail = String::new();
        let _ = writeln!(
            tail,
            " {redirect} {path}; }} || fail $? {}",
            q(&format!("write_files {}", f.path))
        );
        let _ = writeln!(
            tail,
            "chmod {mode:o} {path} || fail $? {}",
            q(&format!("chmod {}", f.path))
        );
        let _ = writeln!(
            tail,
            "chown {} {path} || fail $? {}",
            q(owner),
            q(&format!("chown {}", f.path))
        );
        out.extend_from_slice(tail.as_bytes());
    }
    let mut s = String::new();
    for (i, c) in config.runcmd.iter().enumerate() {
        let line = match c {
            Command::Line(l) => format!("sh -c {}", q(l)),
            Command::Argv(a) => a.iter().map(|w| q(w)).collect::<Vec<_>>().join(" "),
        };
        let _ = writeln!(s, "{line} || fail $? {}", q(&format!("runcmd #{}", i + 1)));
    }
    s.push_str("exit $rc\n");
    out.extend_from_slice(s.as_bytes());
    out
}

/// For templates without useradd or adduser (a bare busybox): the account files by hand.
const ACCOUNT_HELPERS: &str = r#"mf_has() { awk -F: -v n="$1" '$1 == n { f = 1 } END { exit !f }' "$2" 2>/dev/null; }
mf_home() { awk -F: -v n="$1" '$1 == n { print $6; exit }' /etc/passwd; }
mf_adduser() {
  uid=1000
  while cut -d: -f3 /etc/passwd /etc/group 2>/dev/null | grep -qx "$uid"; do uid=$((uid + 1)); done
  echo "$1:x:$uid:$uid:$4:$2:$3" >> /etc/passwd || return 1
  mf_has "$1" /etc/group || echo "$1:x:$uid:" >> /etc/group || return 1
  if [ -e /etc/shadow ]; then echo "$1:!:0:0:99999:7:::" >> /etc/shadow; fi
  mkdir -p "$2" && chown "$uid:$uid" "$2" && chmod 755 "$2"
}
mf_addgroup() {
  mf_has "$2" /etc/group || return 1
  sed -i -e "/^$2:/ s/\$/,$1/" -e "/^$2:/ s/:,/:/" /etc/group
}
"#;

fn user_script(s: &mut String, u: &FullUser) {
    let name = q(&u.name);
    let shell = u.shell.as_deref().unwrap_or("/bin/sh");
    let mut add = format!("useradd -m -s {}", q(shell));
    let mut busybox = format!("adduser -D -s {}", q(shell));
    if let Some(h) = &u.homedir {
        let _ = write!(add, " -d {}", q(h));
        let _ = write!(busybox, " -h {}", q(h));
    }
    if let Some(g) = &u.gecos {
        let _ = write!(add, " -c {}", q(g));
        let _ = write!(busybox, " -g {}", q(g));
    }
    let home = u
        .homedir
        .clone()
        .unwrap_or_else(|| format!("/home/{}", u.name));
    let by_hand = format!(
        "mf_adduser {name} {} {} {}",
        q(&home),
        q(shell),
        q(u.gecos.as_deref().unwrap_or(""))
    );
    let _ = writeln!(
        s,
        "if ! mf_has {name} /etc/passwd; then if command -v useradd >/dev/null 2>&1; then {add} {name}; elif command -v adduser >/dev/null 2>&1; then {busybox} {name}; else {by_hand}; fi || fail $? {}; fi",
        q(&format!("users: create {}", u.name))
    );
    let groups: Vec<String> = match &u.groups {
        None => Vec::new(),
        Some(Groups::List(l)) => l.clone(),
        Some(Groups::Text(t)) => t
            .split(',')
            .map(|g| g.trim().to_owned())
            .filter(|g| !g.is_empty())
            .collect(),
    };
    for g in groups {
        let g = q(&g);
        let _ = writeln!(
            s,
            "if command -v usermod >/dev/null 2>&1; then usermod -aG {g} {name}; elif command -v addgroup >/dev/null 2>&1; then addgroup {name} {g}; else mf_addgroup {name} {g}; fi || fail $? {}",
            q(&format!("users: add {} to a group", u.name))
        );
    }
    if u.sudo.is_some() {
        let _ = writeln!(
            s,
            "echo {}",
            q(&format!(
                "mayfly user data: users: `sudo` of {} ignored (mayfly's runner writes no sudo rules)",
                u.name
            ))
        );
    }
    if !u.ssh_authorized_keys.is_empty() {
        let _ = writeln!(
            s,
            "home=$(mf_home {name}); group=$(id -g {name}); ak=\"$home/.ssh/authorized_keys\""
        );
        // A persistent instance runs this at every start: a key already there is not added
        // again.
        let mut add = String::new();
        for k in &u.ssh_authorized_keys {
            let k = q(k.trim());
            let _ = write!(
                add,
                " && {{ grep -qxF -- {k} \"$ak\" 2>/dev/null || printf '%s\\n' {k} >> \"$ak\"; }}"
            );
        }
        let _ = writeln!(
            s,
            "{{ mkdir -p \"$home/.ssh\"{add} && chmod 700 \"$home/.ssh\" && chmod 600 \"$ak\" && chown -R {name}:\"$group\" \"$home/.ssh\"; }} || fail $? {}",
            q(&format!("users: ssh keys of {}", u.name))
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::user_data::cloud_config::parse;

    fn script(yaml: &str) -> String {
        String::from_utf8_lossy(&to_script(&parse(yaml, true).unwrap())).into_owned()
    }

    #[test]
    fn the_script_quotes_what_it_writes() {
        let s = script(
            "#cloud-config\nwrite_files:\n- path: /a b\n  content: \"it's\"\n  permissions: '0600'\nruncmd:\n- [echo, \"x'y\"]\n",
        );
        assert!(s.contains("printf '%s' 'it'\\''s' > '/a b'"), "{s}");
        assert!(s.contains("chmod 600 '/a b'"), "{s}");
        assert!(s.contains("'echo' 'x'\\''y'"), "{s}");
    }

    #[test]
    fn binary_content_goes_in_unchanged() {
        // 0xff 0xfe 0x80 'A' (not UTF-8).
        let c = parse(
            "#cloud-config\nwrite_files:\n- path: /b\n  encoding: b64\n  content: //6AQQ==\n",
            true,
        )
        .unwrap();
        let s = to_script(&c);
        assert!(
            s.windows(6).any(|w| w == b"'\xff\xfe\x80A'"),
            "{}",
            String::from_utf8_lossy(&s)
        );
    }

    #[test]
    fn files_get_a_mode_and_an_owner_by_default() {
        let s = script("#cloud-config\nwrite_files:\n- path: /d\n  content: x\n");
        assert!(s.contains("umask 022"), "{s}");
        assert!(s.contains("chmod 644 '/d'"), "{s}");
        assert!(s.contains("chown 'root:root' '/d'"), "{s}");
    }

    #[test]
    fn users_are_found_exactly_and_keys_not_duplicated() {
        let s = script(
            "#cloud-config\nusers:\n- bob\n- name: al\n  ssh_authorized_keys: [ssh-ed25519 AAAA k]\n",
        );
        assert!(s.contains("mf_has 'bob' /etc/passwd"), "{s}");
        assert!(!s.contains("grep ^"), "{s}");
        assert!(s.contains("grep -qxF -- 'ssh-ed25519 AAAA k'"), "{s}");
    }
}

//! The cloud-config subset translated to a POSIX sh script, which mayfly's runner (the
//! forker's, before the init) runs like a user-data script.

use std::fmt::Write as _;

use super::cloud_config::{CloudConfig, Command, FullUser, Groups, User, decode, mode_of};

/// `s` quoted for sh.
fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The sh script that does what `config` asks (checked by [`parse`] first).
pub(crate) fn to_script(config: &CloudConfig) -> String {
    let mut s = String::from(
        "#!/bin/sh\n# mayfly: the cloud-config's subset, translated\nrc=0\nfail() { rc=$1; echo \"mayfly user data: $2 failed (status $1)\" >&2; }\n",
    );
    if !config.users.is_empty() {
        s.push_str(ACCOUNT_HELPERS);
    }
    for u in &config.users {
        match u {
            User::Name(n) => {
                let _ = writeln!(
                    s,
                    "echo {}",
                    q(&format!(
                        "mayfly user data: users: `{n}` ignored (no default user without cloud-init)"
                    ))
                );
            }
            User::Full(u) => user_script(&mut s, u),
        }
    }
    for f in &config.write_files {
        let bytes = decode(f).unwrap_or_default();
        let content = String::from_utf8_lossy(&bytes);
        let path = q(&f.path);
        let redirect = if f.append { ">>" } else { ">" };
        let _ = writeln!(
            s,
            "{{ mkdir -p \"$(dirname {path})\" && printf '%s' {} {redirect} {path}; }} || fail $? {}",
            q(&content),
            q(&format!("write_files {}", f.path))
        );
        if let Ok(Some(mode)) = mode_of(f) {
            let _ = writeln!(
                s,
                "chmod {mode:o} {path} || fail $? {}",
                q(&format!("chmod {}", f.path))
            );
        }
        if let Some(owner) = &f.owner {
            let _ = writeln!(
                s,
                "chown {} {path} || fail $? {}",
                q(owner),
                q(&format!("chown {}", f.path))
            );
        }
    }
    for (i, c) in config.runcmd.iter().enumerate() {
        let line = match c {
            Command::Line(l) => format!("sh -c {}", q(l)),
            Command::Argv(a) => a.iter().map(|w| q(w)).collect::<Vec<_>>().join(" "),
        };
        let _ = writeln!(s, "{line} || fail $? {}", q(&format!("runcmd #{}", i + 1)));
    }
    s.push_str("exit $rc\n");
    s
}

/// For templates without useradd or adduser (a bare busybox): the account files by hand.
const ACCOUNT_HELPERS: &str = r#"mf_adduser() {
  uid=1000
  while cut -d: -f3 /etc/passwd /etc/group 2>/dev/null | grep -qx "$uid"; do uid=$((uid + 1)); done
  echo "$1:x:$uid:$uid:$4:$2:$3" >> /etc/passwd || return 1
  grep -q "^$1:" /etc/group 2>/dev/null || echo "$1:x:$uid:" >> /etc/group || return 1
  if [ -e /etc/shadow ]; then echo "$1:!:0:0:99999:7:::" >> /etc/shadow; fi
  mkdir -p "$2" && chown "$uid:$uid" "$2" && chmod 755 "$2"
}
mf_addgroup() {
  grep -q "^$2:" /etc/group || return 1
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
        "if ! grep -q ^{}: /etc/passwd; then if command -v useradd >/dev/null 2>&1; then {add} {name}; elif command -v adduser >/dev/null 2>&1; then {busybox} {name}; else {by_hand}; fi || fail $? {}; fi",
        q(&u.name),
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
            "home=$(grep ^{}: /etc/passwd | cut -d: -f6); group=$(id -g {name})",
            q(&u.name)
        );
        let mut keys = String::new();
        for k in &u.ssh_authorized_keys {
            keys.push_str(k.trim());
            keys.push('\n');
        }
        let _ = writeln!(
            s,
            "{{ mkdir -p \"$home/.ssh\" && printf '%s' {} >> \"$home/.ssh/authorized_keys\" && chmod 700 \"$home/.ssh\" && chmod 600 \"$home/.ssh/authorized_keys\" && chown -R {name}:\"$group\" \"$home/.ssh\"; }} || fail $? {}",
            q(&keys),
            q(&format!("users: ssh keys of {}", u.name))
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::user_data::cloud_config::parse;

    #[test]
    fn the_script_quotes_what_it_writes() {
        let c = parse(
            "#cloud-config\nwrite_files:\n- path: /a b\n  content: \"it's\"\n  permissions: '0600'\nruncmd:\n- [echo, \"x'y\"]\n",
            true,
        )
        .unwrap();
        let s = to_script(&c);
        assert!(s.contains("printf '%s' 'it'\\''s' > '/a b'"), "{s}");
        assert!(s.contains("chmod 600 '/a b'"), "{s}");
        assert!(s.contains("'echo' 'x'\\''y'"), "{s}");
    }
}

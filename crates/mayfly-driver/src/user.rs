//! Who a process runs as: a `USER[:GROUP]` specification (an image's `User`, `--user`) and
//! its resolution against an instance's own `/etc/passwd` and `/etc/group`, by Docker's rules:
//!
//! - empty: root, that is uid 0 looked up like a numeric user;
//! - `NAME`: the passwd entry of that name gives uid, gid and home; it must exist;
//! - `UID` (digits): the passwd entry with that uid gives gid and home when there is one; a uid
//!   without an entry runs with gid 0 and home `/`;
//! - `:GROUP` sets the primary group: a name must be in `/etc/group`, a number is taken as is
//!   (with no user before it, the user is root; an empty group after `USER:` is no group);
//! - the supplementary groups are the primary group and, when no group was given and the user
//!   has a passwd entry, every group of `/etc/group` that lists the user's name (what
//!   `initgroups` does, and Docker since CVE-2022-36109: the primary group is always there,
//!   so that no program can shed it to get past a `rwx---rwx` file).
//!
//! The files are the instance's: the forker reads them inside the instance, just before the
//! program runs (see `forker::identity`), so an instance's own later changes count. They are
//! outside input: lines that cannot be read are skipped, unless they are the entry asked for
//! (then the error says which line); ids must be below 2^31 (as runc wants; the kernel's "no
//! change" value `-1` is never one).

use std::fmt;

/// The largest id accepted: runc's bound, well clear of the kernel's `(uid_t)-1`.
pub const MAX_ID: u32 = i32::MAX as u32;

/// Longest user or group name accepted (glibc has no limit; `useradd` allows 32).
const MAX_NAME: usize = 256;

/// Most supplementary groups a process can have (the kernel's `NGROUPS_MAX`).
const MAX_GROUPS: usize = 65536;

/// A user or a group, by name or by number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Account {
    /// A numeric id (the spec was all digits).
    Id(u32),
    /// A name to look up.
    Name(String),
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Account::Id(id) => write!(f, "{id}"),
            Account::Name(n) => f.write_str(n),
        }
    }
}

/// A parsed `USER[:GROUP]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserSpec {
    /// The user; `None` is root (uid 0).
    pub user: Option<Account>,
    /// The primary group, when given.
    pub group: Option<Account>,
}

impl UserSpec {
    /// Parses `""`, `USER`, `UID`, `USER:GROUP`, `UID:GID` (and the mixed forms; `:GROUP` is
    /// root with that group, `USER:` the user alone). The error says what is wrong, for a
    /// message that adds which setting it came from.
    pub fn parse(spec: &str) -> Result<UserSpec, String> {
        if spec.is_empty() {
            return Ok(UserSpec::default());
        }
        let (user, group) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        // As with Docker, `:GROUP` is root with that group and `USER:` is just the user.
        let user = match user {
            "" => None,
            u => Some(account(u, "user")?),
        };
        let group = match group {
            None | Some("") => None,
            Some(g) if g.contains(':') => {
                return Err("more than one `:` (use USER or USER:GROUP)".to_owned());
            }
            Some(g) => Some(account(g, "group")?),
        };
        Ok(UserSpec { user, group })
    }

    /// Whether resolving it needs a file: a user or group given by name.
    pub fn needs_files(&self) -> bool {
        matches!(self.user, Some(Account::Name(_))) || matches!(self.group, Some(Account::Name(_)))
    }
}

impl fmt::Display for UserSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.user {
            None => f.write_str("root")?,
            Some(u) => write!(f, "{u}")?,
        }
        if let Some(g) = &self.group {
            write!(f, ":{g}")?;
        }
        Ok(())
    }
}

fn account(s: &str, what: &str) -> Result<Account, String> {
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return match s.parse::<u32>() {
            Ok(id) if id <= MAX_ID => Ok(Account::Id(id)),
            _ => Err(format!("{what} id {s} is too large (at most {MAX_ID})")),
        };
    }
    if s.len() > MAX_NAME {
        return Err(format!(
            "the {what} name is {} bytes long (at most {MAX_NAME})",
            s.len()
        ));
    }
    if s.chars()
        .any(|c| c.is_control() || c == ',' || c.is_whitespace())
    {
        return Err(format!(
            "the {what} name `{}` has a space, comma or control character",
            s.escape_debug()
        ));
    }
    Ok(Account::Name(s.to_owned()))
}

/// What a process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Real, effective and saved uid.
    pub uid: u32,
    /// Real, effective and saved gid.
    pub gid: u32,
    /// Supplementary groups, the primary one first, without repeats.
    pub groups: Vec<u32>,
    /// Home directory (for `HOME` when the process's environment has none).
    pub home: String,
}

/// Which of the instance's account files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountFile {
    /// `/etc/passwd`.
    Passwd,
    /// `/etc/group`.
    Group,
}

impl AccountFile {
    /// Its path inside the instance.
    pub fn path(self) -> &'static str {
        match self {
            AccountFile::Passwd => "/etc/passwd",
            AccountFile::Group => "/etc/group",
        }
    }
}

/// Why a user specification cannot be resolved in an instance.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    /// No passwd entry has the name.
    #[error("no user `{name}` in the instance's /etc/passwd")]
    NoUser {
        /// The name.
        name: String,
    },
    /// No group entry has the name.
    #[error("no group `{name}` in the instance's /etc/group")]
    NoGroup {
        /// The name.
        name: String,
    },
    /// A name was asked for and the instance has no such file.
    #[error("the instance has no {}, so {what} `{name}` cannot be looked up", file.path())]
    NoFile {
        /// Which file.
        file: AccountFile,
        /// `user` or `group`.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// A name was asked for and the file cannot be read.
    #[error("cannot read the instance's {} to look up `{name}`: {reason}", file.path())]
    Unreadable {
        /// Which file.
        file: AccountFile,
        /// The name looked up.
        name: String,
        /// Why.
        reason: String,
    },
    /// The entry asked for is malformed.
    #[error("line {line} of the instance's {}, the entry of `{name}`, is malformed: {reason}", file.path())]
    Malformed {
        /// Which file.
        file: AccountFile,
        /// Line number, from 1.
        line: usize,
        /// The name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// More supplementary groups than a process can have.
    #[error("user `{name}` is in more than {MAX_GROUPS} groups in the instance's /etc/group")]
    TooManyGroups {
        /// The user.
        name: String,
    },
}

/// An account file as the resolver sees it.
#[derive(Debug, Clone, Copy)]
pub enum FileContent<'a> {
    /// The file's text.
    Text(&'a str),
    /// The instance has no such file.
    Missing,
    /// It exists but cannot be used (not a regular file, too large, unreadable): why.
    Unreadable(&'a str),
}

impl<'a> FileContent<'a> {
    /// The text, treating a missing or unreadable file as empty: for lookups by number,
    /// which work without the file (so that `--user 0` always works).
    fn lenient(self) -> &'a str {
        match self {
            FileContent::Text(t) => t,
            _ => "",
        }
    }

    /// The text for a lookup of `name`, which needs the file.
    fn strict(
        self,
        file: AccountFile,
        what: &'static str,
        name: &str,
    ) -> Result<&'a str, UserError> {
        match self {
            FileContent::Text(t) => Ok(t),
            FileContent::Missing => Err(UserError::NoFile {
                file,
                what,
                name: name.to_owned(),
            }),
            FileContent::Unreadable(reason) => Err(UserError::Unreadable {
                file,
                name: name.to_owned(),
                reason: reason.to_owned(),
            }),
        }
    }
}

/// One passwd entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

/// One group entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

/// The lines that hold entries: numbered from 1, without comments, blank lines and NIS
/// `+`/`-` entries.
fn entry_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split('\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)))
        .filter(|(_, l)| {
            let t = l.trim_start();
            !t.is_empty() && !t.starts_with('#') && !t.starts_with('+') && !t.starts_with('-')
        })
}

fn parse_id(field: Option<&str>, what: &str) -> Result<u32, String> {
    let f = field.ok_or_else(|| format!("it has no {what} field"))?;
    match f.trim().parse::<u32>() {
        Ok(id) if id <= MAX_ID => Ok(id),
        Ok(_) => Err(format!("its {what} {f} is too large")),
        Err(_) => Err(format!("its {what} `{}` is not a number", f.escape_debug())),
    }
}

/// `name:password:uid:gid:gecos:home:shell`; gecos, home and shell may be missing.
fn parse_passwd_line(line: &str) -> (&str, Result<PasswdEntry<'_>, String>) {
    let mut f = line.split(':');
    let name = f.next().unwrap_or("");
    let _password = f.next();
    let entry = (|| {
        let uid = parse_id(f.next(), "uid")?;
        let gid = parse_id(f.next(), "gid")?;
        let _gecos = f.next();
        let home = f.next().filter(|h| !h.is_empty()).unwrap_or("/");
        Ok(PasswdEntry {
            name,
            uid,
            gid,
            home,
        })
    })();
    (name, entry)
}

/// `name:password:gid:member,member`; the member list may be missing.
fn parse_group_line(line: &str) -> (&str, Result<GroupEntry<'_>, String>) {
    let mut f = line.split(':');
    let name = f.next().unwrap_or("");
    let _password = f.next();
    let entry = (|| {
        let gid = parse_id(f.next(), "gid")?;
        let members = f
            .next()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .collect();
        Ok(GroupEntry { name, gid, members })
    })();
    (name, entry)
}

/// The first entry named `name`; an error if that entry is malformed.
fn passwd_by_name<'a>(text: &'a str, name: &str) -> Result<Option<PasswdEntry<'a>>, UserError> {
    for (n, line) in entry_lines(text) {
        let (entry_name, entry) = parse_passwd_line(line);
        if entry_name == name {
            return entry.map(Some).map_err(|reason| UserError::Malformed {
                file: AccountFile::Passwd,
                line: n,
                name: name.to_owned(),
                reason,
            });
        }
    }
    Ok(None)
}

/// The first well-formed entry with `uid`.
fn passwd_by_uid(text: &str, uid: u32) -> Option<PasswdEntry<'_>> {
    entry_lines(text)
        .filter_map(|(_, line)| parse_passwd_line(line).1.ok())
        .find(|e| e.uid == uid)
}

/// Resolves `spec` against the instance's `/etc/passwd` and `/etc/group` (see the module
/// documentation for the rules).
pub fn resolve(
    spec: &UserSpec,
    passwd: FileContent<'_>,
    group: FileContent<'_>,
) -> Result<Identity, UserError> {
    let entry = match &spec.user {
        None => passwd_by_uid(passwd.lenient(), 0),
        Some(Account::Id(uid)) => passwd_by_uid(passwd.lenient(), *uid),
        Some(Account::Name(name)) => {
            let text = passwd.strict(AccountFile::Passwd, "user", name)?;
            Some(
                passwd_by_name(text, name)?
                    .ok_or_else(|| UserError::NoUser { name: name.clone() })?,
            )
        }
    };
    let (uid, mut gid, home) = match (&entry, &spec.user) {
        (Some(e), _) => (e.uid, e.gid, e.home.to_owned()),
        (None, Some(Account::Id(uid))) => (*uid, 0, "/".to_owned()),
        (None, _) => (0, 0, "/".to_owned()),
    };
    let mut groups = Vec::new();
    match &spec.group {
        Some(Account::Id(g)) => gid = *g,
        Some(Account::Name(name)) => {
            let text = group.strict(AccountFile::Group, "group", name)?;
            let mut found = None;
            for (n, line) in entry_lines(text) {
                let (entry_name, entry) = parse_group_line(line);
                if entry_name == name {
                    let e = entry.map_err(|reason| UserError::Malformed {
                        file: AccountFile::Group,
                        line: n,
                        name: name.clone(),
                        reason,
                    })?;
                    found = Some(e.gid);
                    break;
                }
            }
            gid = found.ok_or_else(|| UserError::NoGroup { name: name.clone() })?;
        }
        None => {
            if let Some(e) = &entry {
                groups = entry_lines(group.lenient())
                    .filter_map(|(_, line)| parse_group_line(line).1.ok())
                    .filter(|g| g.members.contains(&e.name))
                    .map(|g| g.gid)
                    .collect();
            }
        }
    }
    let mut all = Vec::with_capacity(groups.len() + 1);
    all.push(gid);
    for g in groups {
        if !all.contains(&g) {
            all.push(g);
        }
    }
    if all.len() > MAX_GROUPS {
        return Err(UserError::TooManyGroups {
            name: entry.map_or_else(|| uid.to_string(), |e| e.name.to_owned()),
        });
    }
    Ok(Identity {
        uid,
        gid,
        groups: all,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "\
# comment line
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin

bob:x:1000:1000:Bob,,,:/home/bob:/bin/bash
short:x:1001:1001
broken:x:notanumber:5:::
+nisuser::::::
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
twin:x:2000:2000::/first:
twin:x:2001:2001::/second:
#hidden:x:5:5::/:
";

    const GROUP: &str = "\
root:x:0:
wheel:x:10:root,bob
bob:x:1000:
staff:x:50: bob , alice
nogroup:x:65534:
bad:x:oops:bob
# audio:x:29:bob
nomembers:x:77
";

    fn spec(s: &str) -> UserSpec {
        UserSpec::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn ok(s: &str) -> Identity {
        resolve(
            &spec(s),
            FileContent::Text(PASSWD),
            FileContent::Text(GROUP),
        )
        .unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn err(s: &str) -> UserError {
        match resolve(
            &spec(s),
            FileContent::Text(PASSWD),
            FileContent::Text(GROUP),
        ) {
            Ok(id) => panic!("{s} resolved to {id:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn specs_parse_into_users_and_groups() {
        assert_eq!(spec(""), UserSpec::default());
        assert_eq!(spec("bob").user, Some(Account::Name("bob".into())));
        assert_eq!(spec("bob").group, None);
        assert_eq!(
            spec("1000:50"),
            UserSpec {
                user: Some(Account::Id(1000)),
                group: Some(Account::Id(50)),
            }
        );
        assert_eq!(
            spec("www-data:staff"),
            UserSpec {
                user: Some(Account::Name("www-data".into())),
                group: Some(Account::Name("staff".into())),
            }
        );
        assert_eq!(spec("0").to_string(), "0");
        assert_eq!(spec("").to_string(), "root");
        assert_eq!(spec("a:b").to_string(), "a:b");
        // Docker's lenient forms.
        assert_eq!(spec("bob:"), spec("bob"));
        assert_eq!(
            spec(":staff"),
            UserSpec {
                user: None,
                group: Some(Account::Name("staff".into())),
            }
        );
        assert_eq!(spec(":"), UserSpec::default());
        assert!(spec("bob:1").needs_files());
        assert!(spec("1:staff").needs_files());
        assert!(!spec("1:2").needs_files());
        assert!(!spec("").needs_files());
    }

    #[test]
    fn bad_specs_are_refused_with_the_reason() {
        for (bad, why) in [
            ("a:b:c", "more than one"),
            ("::", "more than one"),
            ("4294967296", "too large"),
            ("2147483648", "too large"),
            ("1:4294967295", "too large"),
            ("bo b", "space"),
            ("bob,x", "comma"),
            ("bob\n", "control"),
        ] {
            let e = UserSpec::parse(bad).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
        let long = "a".repeat(300);
        assert!(UserSpec::parse(&long).is_err());
    }

    #[test]
    fn root_by_default_from_its_entry() {
        let id = ok("");
        assert_eq!((id.uid, id.gid, id.home.as_str()), (0, 0, "/root"));
        // root is listed in wheel: a supplementary group, after the primary one.
        assert_eq!(id.groups, vec![0, 10]);
        assert_eq!(ok("0"), id);
    }

    #[test]
    fn names_give_ids_home_and_supplementary_groups() {
        let id = ok("bob");
        assert_eq!(
            (id.uid, id.gid, id.home.as_str()),
            (1000, 1000, "/home/bob")
        );
        // wheel and staff (members trimmed); not the commented audio, not the malformed bad.
        assert_eq!(id.groups, vec![1000, 10, 50]);
        let nobody = ok("nobody");
        assert_eq!((nobody.uid, nobody.gid), (65534, 65534));
        assert_eq!(nobody.groups, vec![65534]);
    }

    #[test]
    fn a_uid_with_an_entry_takes_its_gid_and_home() {
        let id = ok("1000");
        assert_eq!(
            (id.uid, id.gid, id.home.as_str()),
            (1000, 1000, "/home/bob")
        );
        assert_eq!(id.groups, vec![1000, 10, 50]);
    }

    #[test]
    fn a_uid_without_an_entry_runs_with_gid_0() {
        let id = ok("4242");
        assert_eq!(
            id,
            Identity {
                uid: 4242,
                gid: 0,
                groups: vec![0],
                home: "/".into(),
            }
        );
        let id = ok("4242:4343");
        assert_eq!((id.uid, id.gid), (4242, 4343));
        assert_eq!(id.groups, vec![4343]);
    }

    #[test]
    fn an_explicit_group_replaces_the_supplementary_ones() {
        let id = ok("bob:staff");
        assert_eq!((id.uid, id.gid), (1000, 50));
        assert_eq!(id.groups, vec![50]);
        let id = ok("bob:7");
        assert_eq!((id.uid, id.gid), (1000, 7));
        assert_eq!(id.groups, vec![7]);
        let id = ok("65534:65534");
        assert_eq!(
            (id.uid, id.gid, id.home.as_str()),
            (65534, 65534, "/nonexistent")
        );
        assert_eq!(id.groups, vec![65534]);
    }

    #[test]
    fn root_with_a_group_keeps_roots_home() {
        let id = ok(":staff");
        assert_eq!((id.uid, id.gid, id.home.as_str()), (0, 50, "/root"));
        assert_eq!(id.groups, vec![50]);
    }

    #[test]
    fn entries_with_missing_fields_default_home_to_root_dir() {
        let id = ok("short");
        assert_eq!((id.uid, id.gid, id.home.as_str()), (1001, 1001, "/"));
    }

    #[test]
    fn the_first_of_duplicate_entries_wins() {
        assert_eq!(ok("twin").home, "/first");
    }

    #[test]
    fn unknown_names_say_which_file_was_searched() {
        let e = err("alice");
        assert_eq!(
            e,
            UserError::NoUser {
                name: "alice".into()
            }
        );
        assert!(e.to_string().contains("/etc/passwd"), "{e}");
        let e = err("bob:audio");
        assert!(e.to_string().contains("no group `audio`"), "{e}");
        assert!(e.to_string().contains("/etc/group"), "{e}");
        // NIS entries and comments are not users.
        assert!(matches!(err("+nisuser"), UserError::NoUser { .. }));
        assert!(matches!(err("#hidden"), UserError::NoUser { .. }));
    }

    #[test]
    fn a_malformed_entry_asked_for_is_an_error_with_its_line() {
        let e = err("broken");
        assert!(
            matches!(
                e,
                UserError::Malformed {
                    line: 7,
                    file: AccountFile::Passwd,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("notanumber"), "{e}");
        let e = err("bob:bad");
        assert!(
            matches!(
                e,
                UserError::Malformed {
                    line: 6,
                    file: AccountFile::Group,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(
            ok("bob:nomembers").gid,
            77,
            "a group line without a member field is fine"
        );
    }

    #[test]
    fn numbers_work_without_the_files_and_names_do_not() {
        let none = |s: &str| resolve(&spec(s), FileContent::Missing, FileContent::Missing);
        let id = none("").expect("root without passwd");
        assert_eq!((id.uid, id.gid, id.home.as_str()), (0, 0, "/"));
        let id = none("65534:65534").expect("numeric without passwd");
        assert_eq!((id.uid, id.gid, id.groups), (65534, 65534, vec![65534]));
        let e = none("nobody").expect_err("a name needs passwd");
        assert!(
            e.to_string()
                .contains("the instance has no /etc/passwd, so user `nobody`"),
            "{e}"
        );
        let e = resolve(
            &spec("bob:staff"),
            FileContent::Text(PASSWD),
            FileContent::Missing,
        )
        .expect_err("a group name needs /etc/group");
        assert!(e.to_string().contains("no /etc/group"), "{e}");
        // An unusable file is ignored for numbers (root can always get in) and named for names.
        let bad = FileContent::Unreadable("it is not a regular file");
        assert_eq!(resolve(&spec("0"), bad, bad).expect("root").uid, 0);
        let e = resolve(&spec("bob"), bad, bad).expect_err("bob");
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }

    #[test]
    fn windows_line_endings_and_odd_spacing_are_read() {
        let passwd = "root:x:0:0::/root:/bin/sh\r\napp:x:10:20::/srv/app:/bin/sh\r\n";
        let group = "grp:x:30:app\r\n";
        let id = resolve(
            &spec("app"),
            FileContent::Text(passwd),
            FileContent::Text(group),
        )
        .expect("app");
        assert_eq!((id.uid, id.gid, id.home.as_str()), (10, 20, "/srv/app"));
        assert_eq!(id.groups, vec![20, 30]);
    }
}

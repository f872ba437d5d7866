//! Name rules, shared by the daemon (which enforces them) and the CLI (which can say early
//! what is wrong).
//!
//! Instance names are DNS labels because they become hostnames and, later, names on the
//! instances' networks. Template names follow the same rule, plus dots and underscores,
//! because `@` separates a version.

/// Checks an instance name: 1–63 characters of `a-z`, `0-9` and `-`, starting with a letter
/// and not ending with `-` (RFC 1123 label, lowercase).
pub fn check_instance_name(name: &str) -> Result<(), String> {
    let problem = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > 63 {
        Some("it is longer than 63 characters")
    } else if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        Some("it must start with a lowercase letter")
    } else if name.ends_with('-') {
        Some("it must not end with `-`")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        Some("only lowercase letters, digits and `-` are allowed")
    } else {
        None
    };
    match problem {
        Some(why) => Err(format!(
            "invalid instance name `{name}`: {why} (names are DNS labels, like `web-1`)"
        )),
        None => Ok(()),
    }
}

/// Checks a template name: 1–64 characters of `a-z`, `0-9`, `-`, `_` and `.`, starting with a
/// letter or digit.
pub fn check_template_name(name: &str) -> Result<(), String> {
    let problem = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > 64 {
        Some("it is longer than 64 characters")
    } else if !name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        Some("it must start with a lowercase letter or a digit")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' || c == '.')
    {
        Some("only lowercase letters, digits, `-`, `_` and `.` are allowed")
    } else {
        None
    };
    match problem {
        Some(why) => Err(format!(
            "invalid template name `{name}`: {why} (for example `debian` or `nginx-1.24`)"
        )),
        None => Ok(()),
    }
}

/// Checks a snapshot name: the same characters as a template name (`snap0`,
/// `before-upgrade`, `2026-11-23`).
pub fn check_snapshot_name(name: &str) -> Result<(), String> {
    check_template_name(name).map_err(|e| {
        e.replacen("invalid template name", "invalid snapshot name", 1)
            .replace(
                "(for example `debian` or `nginx-1.24`)",
                "(for example `before-upgrade`)",
            )
    })
}

/// A template reference: `NAME` (follow the current version) or `NAME@N` (pin version N).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateRef {
    /// Template name.
    pub name: String,
    /// Pinned version, if any.
    pub version: Option<u32>,
}

impl TemplateRef {
    /// Parses and checks `NAME` or `NAME@N`.
    pub fn parse(s: &str) -> Result<TemplateRef, String> {
        let (name, version) = match s.split_once('@') {
            None => (s, None),
            Some((name, v)) => {
                let version = v.parse::<u32>().ok().filter(|v| *v > 0).ok_or_else(|| {
                    format!("invalid template version in `{s}`: use NAME@N with N a number from 1")
                })?;
                (name, Some(version))
            }
        };
        check_template_name(name)?;
        Ok(TemplateRef {
            name: name.to_owned(),
            version,
        })
    }
}

impl std::fmt::Display for TemplateRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.version {
            Some(v) => write!(f, "{}@{v}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_names_follow_dns_label_rules() {
        for good in ["a", "web-1", "x0", &"a".repeat(63)] {
            assert!(check_instance_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "1abc",
            "Web",
            "a_b",
            "a.b",
            "a b",
            &"a".repeat(64),
            "é",
        ] {
            assert!(check_instance_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn template_refs_parse_name_and_version() {
        assert_eq!(
            TemplateRef::parse("debian@3").unwrap(),
            TemplateRef {
                name: "debian".into(),
                version: Some(3)
            }
        );
        assert_eq!(TemplateRef::parse("busybox").unwrap().version, None);
        for bad in [
            "debian@", "debian@0", "debian@x", "@3", "Deb", "a/b", "../x",
        ] {
            assert!(TemplateRef::parse(bad).is_err(), "{bad}");
        }
    }
}

//! Merging the dpkg status files of application layers built on the same base, so that a stack
//! of several applications has one `var/lib/dpkg/status` that knows every package installed.
//!
//! A status file is a list of Debian control-file paragraphs, one per package and architecture
//! (`Package:` and `Architecture:` identify it). Each application layer holds the whole file as
//! dpkg left it after installing that application on the base; what the application changed is
//! the paragraphs that differ from the base's. Paragraphs are compared and copied as text,
//! byte for byte, so whatever fields dpkg wrote survive unparsed.

use std::collections::BTreeMap;

/// Two application layers changed the same package differently, so no merged status can
/// describe both.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "package `{package}` was changed differently by two layers (versions {})",
    .versions.join(" and ")
)]
pub struct DpkgConflict {
    /// The package name.
    pub package: String,
    /// The `Version:` of each conflicting paragraph (empty if it has none), in layer order.
    pub versions: Vec<String>,
}

/// Merges the dpkg status files `apps` of application layers into the `base` layer's status:
/// the base's paragraphs, replaced or joined by every paragraph an application has that differs
/// from the base's for that package and architecture. Two applications changing the same
/// package to different paragraphs is a [`DpkgConflict`]; the same change twice is fine. A
/// package an application dropped stays as the base has it. The result lists the paragraphs by
/// package name, then architecture (dpkg accepts any order), each as its source spelled it,
/// separated by one blank line and ending with a newline; it is empty if there are none.
pub fn merge_dpkg_status(base: &[u8], apps: &[&[u8]]) -> Result<Vec<u8>, DpkgConflict> {
    let base = paragraphs(base);
    let mut merged: BTreeMap<Key<'_>, &[u8]> = base.iter().map(|(key, p)| (*key, p.text)).collect();
    let mut changed: BTreeMap<Key<'_>, Paragraph<'_>> = BTreeMap::new();
    for app in apps {
        for (key, paragraph) in paragraphs(app) {
            if base.get(&key).is_some_and(|b| b.text == paragraph.text) {
                continue;
            }
            match changed.get(&key) {
                Some(earlier) if earlier.text != paragraph.text => {
                    return Err(DpkgConflict {
                        package: String::from_utf8_lossy(key.0).into_owned(),
                        versions: vec![
                            String::from_utf8_lossy(earlier.version).into_owned(),
                            String::from_utf8_lossy(paragraph.version).into_owned(),
                        ],
                    });
                }
                Some(_) => {}
                None => {
                    merged.insert(key, paragraph.text);
                    changed.insert(key, paragraph);
                }
            }
        }
    }
    let mut out = Vec::new();
    for text in merged.values() {
        if !out.is_empty() {
            out.push(b'\n');
        }
        out.extend_from_slice(text);
        out.push(b'\n');
    }
    Ok(out)
}

/// Package name and architecture (empty if the paragraph has none).
type Key<'a> = (&'a [u8], &'a [u8]);

#[derive(Debug, Clone, Copy)]
struct Paragraph<'a> {
    /// The paragraph's lines, without the newline after the last one.
    text: &'a [u8],
    version: &'a [u8],
}

/// The paragraphs of a control file by package and architecture; a later paragraph for the same
/// key replaces an earlier one. A paragraph without `Package:` is keyed by its whole text, so
/// it is kept (once) rather than lost.
fn paragraphs(input: &[u8]) -> BTreeMap<Key<'_>, Paragraph<'_>> {
    let mut out = BTreeMap::new();
    let mut start = None;
    let mut end = 0;
    let mut offset = 0;
    for line in input.split_inclusive(|&b| b == b'\n') {
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        if content.iter().all(|&b| b == b' ' || b == b'\t') {
            if let Some(s) = start.take() {
                add(&mut out, &input[s..end]);
            }
        } else {
            start.get_or_insert(offset);
            end = offset + content.len();
        }
        offset += line.len();
    }
    if let Some(s) = start {
        add(&mut out, &input[s..end]);
    }
    out
}

fn add<'a>(out: &mut BTreeMap<Key<'a>, Paragraph<'a>>, text: &'a [u8]) {
    let field = |name: &str| {
        text.split(|&b| b == b'\n')
            // Continuation lines start with a space or tab and belong to the field above.
            .filter(|line| !line.starts_with(b" ") && !line.starts_with(b"\t"))
            .find_map(|line| {
                let colon = line.iter().position(|&b| b == b':')?;
                line[..colon]
                    .eq_ignore_ascii_case(name.as_bytes())
                    .then(|| line[colon + 1..].trim_ascii())
            })
    };
    let key = match field("Package") {
        Some(package) => (package, field("Architecture").unwrap_or_default()),
        None => (&b""[..], text),
    };
    let version = field("Version").unwrap_or_default();
    out.insert(key, Paragraph { text, version });
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "\
Package: libc6
Status: install ok installed
Architecture: amd64
Version: 2.36-9
Description: GNU C Library
 Contains the standard libraries.

Package: base-files
Status: install ok installed
Architecture: amd64
Version: 12.4

Package: libssl3
Status: install ok installed
Architecture: amd64
Version: 3.0.11-1
";

    fn merge(base: &str, apps: &[&str]) -> Result<String, DpkgConflict> {
        let apps: Vec<&[u8]> = apps.iter().map(|a| a.as_bytes()).collect();
        merge_dpkg_status(base.as_bytes(), &apps).map(|out| String::from_utf8(out).unwrap())
    }

    const NGINX: &str =
        "Package: nginx\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.22.1-9\n";
    const REDIS: &str = "Package: redis\nStatus: install ok installed\nArchitecture: amd64\nVersion: 7.0.15-1\nDepends: libc6 (>= 2.34),\n libssl3 (>= 3.0.0)\n";

    fn ssl(version: &str) -> String {
        format!(
            "Package: libssl3\nStatus: install ok installed\nArchitecture: amd64\nVersion: {version}\n"
        )
    }

    #[test]
    fn different_additions_merge_to_base_and_both() {
        let web = format!("{BASE}\n{NGINX}");
        // Paragraph order and the number of blank lines between them do not matter.
        let cache = format!("{REDIS}\n \t\n\n{BASE}");
        let merged = merge(BASE, &[&web, &cache]).unwrap();
        let base_files =
            "Package: base-files\nStatus: install ok installed\nArchitecture: amd64\nVersion: 12.4";
        let libc = "Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.36-9\nDescription: GNU C Library\n Contains the standard libraries.";
        let expected = format!(
            "{base_files}\n\n{libc}\n\n{}\n{NGINX}\n{REDIS}",
            ssl("3.0.11-1")
        );
        assert_eq!(merged, expected);
        assert!(merged.ends_with("libssl3 (>= 3.0.0)\n"));
    }

    #[test]
    fn the_same_upgrade_twice_is_fine() {
        let upgraded = BASE.replace(&ssl("3.0.11-1"), &ssl("3.0.13-1"));
        assert_ne!(upgraded, BASE);
        let web = format!("{upgraded}\n{NGINX}");
        let cache = format!("{upgraded}\n{REDIS}");
        let merged = merge(BASE, &[&web, &cache]).unwrap();
        assert!(merged.contains(&ssl("3.0.13-1")), "{merged}");
        assert!(!merged.contains("3.0.11-1"), "{merged}");
        assert!(merged.contains(NGINX) && merged.contains(REDIS));
        // An application that changed nothing changes nothing.
        assert_eq!(merge(BASE, &[BASE]).unwrap(), merge(BASE, &[]).unwrap());
    }

    #[test]
    fn different_upgrades_of_one_package_conflict() {
        let web = BASE.replace(&ssl("3.0.11-1"), &ssl("3.0.13-1"));
        let cache = BASE.replace(&ssl("3.0.11-1"), &ssl("3.1.0-1"));
        let err = merge(BASE, &[&web, BASE, &cache]).unwrap_err();
        assert_eq!(
            err,
            DpkgConflict {
                package: "libssl3".to_owned(),
                versions: vec!["3.0.13-1".to_owned(), "3.1.0-1".to_owned()],
            }
        );
        assert_eq!(
            err.to_string(),
            "package `libssl3` was changed differently by two layers (versions 3.0.13-1 and 3.1.0-1)"
        );
        // Two new packages of the same name that differ conflict too.
        let other_nginx = NGINX.replace("1.22.1-9", "1.24.0-1");
        let err = merge(BASE, &[NGINX, &other_nginx]).unwrap_err();
        assert_eq!(err.package, "nginx");
    }

    #[test]
    fn architectures_are_separate_packages() {
        let i386 =
            "Package: libc6\nStatus: install ok installed\nArchitecture: i386\nVersion: 2.36-9\n";
        let merged = merge(BASE, &[i386]).unwrap();
        let amd64_at = merged.find("Architecture: amd64\nVersion: 2.36-9").unwrap();
        let i386_at = merged.find("Architecture: i386").unwrap();
        assert!(amd64_at < i386_at, "{merged}");
        // Field names are case-insensitive.
        let lower = "package: nginx\narchitecture: amd64\nversion: 1\n";
        let merged = merge(BASE, &[NGINX, lower]).unwrap_err();
        assert_eq!(merged.versions, ["1.22.1-9", "1"]);
    }

    #[test]
    fn empty_inputs_merge_to_nothing() {
        assert_eq!(merge("", &[]).unwrap(), "");
        assert_eq!(merge("\n\n", &["  \n"]).unwrap(), "");
        assert_eq!(merge("", &[NGINX]).unwrap(), NGINX);
    }
}

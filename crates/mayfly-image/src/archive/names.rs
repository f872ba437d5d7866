//! Checking and normalising the names archive entries carry, and the errors that name them.

use std::ffi::CString;
use std::io;
use std::path::PathBuf;

use tar::EntryType;

use crate::ImageError;

/// Why a name cannot be used.
#[derive(Debug, Clone, Copy)]
pub(crate) enum NameProblem {
    Empty,
    Absolute,
    ParentDir,
    Nul,
}

impl NameProblem {
    /// The reason, with `subject` ("it", "its link target `x`") as the grammatical subject.
    pub(crate) fn reason(self, subject: &str) -> String {
        match self {
            Self::Empty => format!("{subject} is empty"),
            Self::Absolute => format!("{subject} is an absolute path"),
            Self::ParentDir => format!("{subject} climbs out of the root with `..`"),
            Self::Nul => format!("{subject} contains a NUL byte"),
        }
    }
}

/// Normalises an archive name to `a/b/c` (empty for the root): drops `.` and empty components,
/// refuses absolute names, `..` and NUL bytes.
pub(crate) fn normalize(name: &[u8]) -> Result<Vec<u8>, NameProblem> {
    if name.is_empty() {
        return Err(NameProblem::Empty);
    }
    if name.starts_with(b"/") {
        return Err(NameProblem::Absolute);
    }
    if name.contains(&0) {
        return Err(NameProblem::Nul);
    }
    let mut out = Vec::with_capacity(name.len());
    for component in name.split(|&b| b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => return Err(NameProblem::ParentDir),
            _ => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(component);
            }
        }
    }
    Ok(out)
}

/// Splits a normalised non-root path into its parent (empty for top level) and final component.
pub(super) fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (b"", path),
    }
}

pub(super) fn c_name(component: &[u8], name: &str) -> Result<CString, ImageError> {
    // `normalize` already refused NUL bytes; this only converts.
    CString::new(component).map_err(|_| unsafe_entry(name, NameProblem::Nul.reason("it")))
}

pub(super) fn describe_type(kind: EntryType) -> String {
    match kind.as_byte() {
        b'V' => "GNU volume label".to_owned(),
        b'M' => "GNU multi-volume continuation".to_owned(),
        b'D' => "GNU dump directory".to_owned(),
        b'N' => "old GNU long name".to_owned(),
        byte if byte.is_ascii_graphic() => format!("entry type `{}`", char::from(byte)),
        byte => format!("entry type byte {byte:#04x}"),
    }
}

pub(super) fn unsafe_entry(name: &str, reason: String) -> ImageError {
    ImageError::UnsafeEntry {
        entry: name.to_owned(),
        reason,
    }
}

pub(super) fn create(name: &str, source: io::Error) -> ImageError {
    ImageError::Create {
        path: PathBuf::from(name),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalise() {
        assert_eq!(normalize(b"./a//b/./c/").unwrap(), b"a/b/c");
        assert_eq!(normalize(b"./").unwrap(), b"");
        assert_eq!(normalize(b".").unwrap(), b"");
        assert!(matches!(normalize(b"/a"), Err(NameProblem::Absolute)));
        assert!(matches!(normalize(b"a/.."), Err(NameProblem::ParentDir)));
        assert!(matches!(normalize(b""), Err(NameProblem::Empty)));
        assert!(matches!(normalize(b"a\0b"), Err(NameProblem::Nul)));
        assert_eq!(normalize(b"a..b/...").unwrap(), b"a..b/...");
    }
}

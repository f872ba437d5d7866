//! What a tar header and its PAX records say about an entry besides its name and type: owner,
//! mode, mtime (with nanoseconds) and the xattrs we keep.

use std::io::{self, Read};
use std::path::PathBuf;

use crate::ImageError;
use crate::inode::{Inode, PERMISSION_BITS, Time};
use crate::xattr::{self, Node, XattrPolicy, Xattrs};

const PAX_XATTR: &[u8] = b"SCHILY.xattr.";
const PAX_SPARSE: &[u8] = b"GNU.sparse.";

/// What the header and its PAX records say about an entry besides name and type.
pub(super) struct Meta {
    pub(super) inode: Inode,
    pub(super) xattrs: Xattrs,
}

/// Reads owner, mode, mtime (with PAX nanoseconds) and portable xattrs of an entry.
pub(super) fn read_meta<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    name: &str,
) -> Result<Meta, ImageError> {
    let header = entry.header();
    let mode = header.mode().map_err(ImageError::bad_archive)? & PERMISSION_BITS;
    let id = |value: u64, what: &str| {
        u32::try_from(value)
            .ok()
            .filter(|&id| id != u32::MAX)
            .ok_or_else(|| ImageError::UnsupportedEntry {
                entry: name.to_owned(),
                kind: format!("{what} {value} is not a valid id"),
            })
    };
    let uid = id(header.uid().map_err(ImageError::bad_archive)?, "owner")?;
    let gid = id(header.gid().map_err(ImageError::bad_archive)?, "group")?;
    let header_mtime = header.mtime().map_err(ImageError::bad_archive)?;
    let mut mtime = Time {
        sec: i64::try_from(header_mtime).map_err(|_| bad_field("mtime", name))?,
        nsec: 0,
    };
    let mut xattrs = Xattrs::new();
    if let Some(records) = entry.pax_extensions().map_err(ImageError::bad_archive)? {
        for record in records {
            let record = record.map_err(ImageError::bad_archive)?;
            let key = record.key_bytes();
            if key == b"mtime" {
                mtime = parse_pax_time(record.value_bytes())
                    .ok_or_else(|| bad_field("PAX mtime", name))?;
            } else if let Some(xattr) = key.strip_prefix(PAX_XATTR) {
                if XattrPolicy::Portable.keeps(xattr) {
                    xattrs.push((xattr.to_vec(), record.value_bytes().to_vec()));
                }
            } else if key.starts_with(PAX_SPARSE) {
                return Err(ImageError::UnsupportedEntry {
                    entry: name.to_owned(),
                    kind: "PAX sparse file".to_owned(),
                });
            }
        }
    }
    Ok(Meta {
        inode: Inode {
            mode,
            uid,
            gid,
            atime: mtime,
            mtime,
        },
        xattrs,
    })
}

fn bad_field(field: &str, name: &str) -> ImageError {
    ImageError::bad_archive(io::Error::new(
        io::ErrorKind::InvalidData,
        format!("bad {field} for `{name}`"),
    ))
}

/// Parses a PAX time: decimal seconds, optionally negative, optionally with a fraction.
fn parse_pax_time(value: &[u8]) -> Option<Time> {
    let value = std::str::from_utf8(value).ok()?;
    let (negative, value) = match value.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) {
        return None;
    }
    let sec: i64 = whole.parse().ok()?;
    // Nanoseconds are the first nine digits of the fraction; finer digits cannot be stored.
    let mut nsec = 0u32;
    for i in 0..9 {
        let digit = fraction
            .as_bytes()
            .get(i)
            .map_or(0, |b| u32::from(b - b'0'));
        nsec = nsec * 10 + digit;
    }
    Some(match (negative, nsec) {
        (false, _) => Time { sec, nsec },
        (true, 0) => Time { sec: -sec, nsec: 0 },
        (true, _) => Time {
            sec: -sec - 1,
            nsec: 1_000_000_000 - nsec,
        },
    })
}

pub(super) fn write_xattrs(node: Node<'_>, xattrs: &Xattrs, name: &str) -> Result<(), ImageError> {
    for (key, value) in xattrs {
        xattr::write(node, key, value).map_err(|source| ImageError::SetXattr {
            path: PathBuf::from(name),
            name: String::from_utf8_lossy(key).into_owned(),
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times_parse() {
        let t = |sec, nsec| Some(Time { sec, nsec });
        assert_eq!(parse_pax_time(b"1700000000"), t(1_700_000_000, 0));
        assert_eq!(parse_pax_time(b"1.5"), t(1, 500_000_000));
        assert_eq!(parse_pax_time(b"1.1234567899"), t(1, 123_456_789));
        assert_eq!(parse_pax_time(b"-1.25"), t(-2, 750_000_000));
        assert_eq!(parse_pax_time(b"-3"), t(-3, 0));
        assert_eq!(parse_pax_time(b""), None);
        assert_eq!(parse_pax_time(b"1.2e3"), None);
        assert_eq!(parse_pax_time(b".5"), None);
    }
}

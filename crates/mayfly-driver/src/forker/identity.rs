//! The child's side of "who runs it": reading the instance's own `/etc/passwd` and
//! `/etc/group` and resolving the process's `USER[:GROUP]` against them (rules in
//! [`crate::user`]).
//!
//! Runs inside the instance's mount namespace, with its root as `/` (a container's init after
//! `pivot_root`, an exec helper after `setns`), as the instance's root and before anything of
//! the process's own is set up. The files are the instance's, so outside input: they are
//! opened without following magic links (a `/proc/self/fd/N` link would reach the forker's
//! descriptors) and without blocking (a FIFO there must not stall the start), used only if
//! they are regular files, and read up to [`MAX_ACCOUNT_FILE`] bytes.

use std::io::Read;

use rustix::fs::{Mode, OFlags, ResolveFlags};

use super::child::ChildFailure;
use crate::user::{AccountFile, FileContent, Identity, UserSpec, resolve};

/// Largest `/etc/passwd` or `/etc/group` read.
pub(crate) const MAX_ACCOUNT_FILE: u64 = 4 << 20;

/// An account file as read: its text, absent, or unusable (and why).
enum AccountText {
    Text(String),
    Missing,
    Unusable(String),
}

impl AccountText {
    fn content(&self) -> FileContent<'_> {
        match self {
            AccountText::Text(t) => FileContent::Text(t),
            AccountText::Missing => FileContent::Missing,
            AccountText::Unusable(why) => FileContent::Unreadable(why),
        }
    }
}

fn read_account_file(file: AccountFile) -> AccountText {
    let root = match rustix::fs::open(
        "/",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(e) => return AccountText::Unusable(format!("cannot open the root: {e}")),
    };
    let rel = file.path().trim_start_matches('/');
    let fd = match rustix::fs::openat2(
        &root,
        rel,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return AccountText::Missing,
        Err(e) => return AccountText::Unusable(e.to_string()),
    };
    let st = match rustix::fs::fstat(&fd) {
        Ok(st) => st,
        Err(e) => return AccountText::Unusable(e.to_string()),
    };
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return AccountText::Unusable("it is not a regular file".to_owned());
    }
    let mut text = Vec::new();
    let mut reader = std::fs::File::from(fd).take(MAX_ACCOUNT_FILE + 1);
    if let Err(e) = reader.read_to_end(&mut text) {
        return AccountText::Unusable(e.to_string());
    }
    if text.len() as u64 > MAX_ACCOUNT_FILE {
        return AccountText::Unusable(format!("it is larger than {} MiB", MAX_ACCOUNT_FILE >> 20));
    }
    match String::from_utf8(text) {
        Ok(t) => AccountText::Text(t),
        // Names are compared as bytes that are UTF-8 on our side; other lines stay unusable.
        Err(e) => AccountText::Text(String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

/// Resolves `user` (a `USER[:GROUP]`, empty for root) in the instance whose root is `/`.
pub(crate) fn resolve_user(user: &str) -> Result<Identity, ChildFailure> {
    let spec = UserSpec::parse(user).map_err(|e| ChildFailure::bad_user(user, e))?;
    let passwd = read_account_file(AccountFile::Passwd);
    let group = read_account_file(AccountFile::Group);
    resolve(&spec, passwd.content(), group.content())
        .map_err(|e| ChildFailure::bad_user(user, e.to_string()))
}

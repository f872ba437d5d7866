//! `mayfly completion SHELL` and `mayfly man [--dir DIR]`: a completion script and manual pages
//! generated from the CLI definition (clap_complete, clap_mangen), so that they never drift
//! from `--help`.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::CommandFactory;

use crate::cli::Cli;
use crate::cli::args::meta::{CompletionArgs, ManArgs};

pub(super) fn completion(args: CompletionArgs) -> i32 {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "mayfly", &mut out);
    write_stdout(&out)
}

pub(super) fn man(args: ManArgs) -> i32 {
    let cmd = Cli::command();
    match args.dir {
        Some(dir) => {
            let mut cmd = cmd.disable_help_subcommand(true);
            cmd.build();
            if let Err((path, e)) = std::fs::create_dir_all(&dir)
                .map_err(|e| (dir.clone(), e))
                .and_then(|()| write_pages(&cmd, &dir))
            {
                let hint = if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                    "it is a symbolic link, which is never followed: remove it, or give another directory"
                } else {
                    "give a directory you can write to, e.g. `--dir ./man`"
                };
                eprintln!(
                    "error: cannot write the manual page {}: {e}\n  hint: {hint}",
                    path.display()
                );
                return 1;
            }
            0
        }
        None => {
            let mut out = Vec::new();
            if let Err(e) = clap_mangen::Man::new(cmd).render(&mut out) {
                eprintln!("error: cannot render the manual page: {e}");
                return 1;
            }
            write_stdout(&out)
        }
    }
}

/// Writes the page of `cmd` (built) and of each of its visible subcommands into `dir`,
/// replacing pages already there but never following a symbolic link out of it.
fn write_pages(cmd: &clap::Command, dir: &Path) -> Result<(), (PathBuf, std::io::Error)> {
    use std::os::unix::fs::OpenOptionsExt;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, dir)?;
    }
    let man = clap_mangen::Man::new(cmd.clone());
    let path = dir.join(man.get_filename());
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&path)
        .and_then(|mut file| {
            man.render(&mut file)?;
            file.flush()
        })
        .map_err(|e| (path, e))
}

/// Writes `bytes` to stdout; a reader that left early (`| head`) is not an error.
fn write_stdout(bytes: &[u8]) -> i32 {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => 0,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("error: cannot write to stdout: {e}");
            1
        }
    }
}

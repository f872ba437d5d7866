//! `mayfly completion SHELL` and `mayfly man [--dir DIR]`: a completion script and manual pages
//! generated from the CLI definition (clap_complete, clap_mangen), so that they never drift
//! from `--help`.

use std::io::Write;

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
            if let Err(e) =
                std::fs::create_dir_all(&dir).and_then(|()| clap_mangen::generate_to(cmd, &dir))
            {
                eprintln!(
                    "error: cannot write the manual pages into {}: {e}\n  hint: give a directory you can write to, e.g. `--dir ./man`",
                    dir.display()
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

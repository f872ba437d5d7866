//! Human-readable output: tables fitted to the terminal, sizes, ages, JSON, and `--quiet`
//! (no informational lines; lists print their first column, the names, only).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

/// Whether `--quiet` was given.
static QUIET: AtomicBool = AtomicBool::new(false);

/// Columns between two cells of a table.
const GAP: usize = 2;

/// The fewest characters a column is cut to (its header's width if shorter).
const MIN_COLUMN: usize = 4;

/// The width long cells are cut to before the names, or any short cell (an address, a
/// state, an age), is.
const COMFORTABLE: usize = 16;

/// Sets `--quiet` for this run.
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// Whether `--quiet` was given.
pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// Prints an informational line (a confirmation, a note) on stdout, unless `--quiet`.
pub fn say(line: std::fmt::Arguments<'_>) {
    if !quiet() {
        println!("{line}");
    }
}

/// The width of the terminal stdout is, or `None` when it is not one (a pipe, a file: then
/// tables are printed whole).
pub fn terminal_width() -> Option<usize> {
    let stdout = std::io::stdout();
    if !stdout.is_terminal() {
        return None;
    }
    rustix::termios::tcgetwinsize(&stdout)
        .ok()
        .map(|w| usize::from(w.ws_col))
        .filter(|&w| w > 0)
}

/// Prints rows as left-aligned columns under a header, fitted to the terminal; with
/// `--quiet`, only each row's first cell (its name).
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    if quiet() {
        for first in rows.iter().filter_map(|r| r.first()) {
            println!("{first}");
        }
        return;
    }
    print!("{}", table_text(header, rows));
}

/// Rows as left-aligned columns under a header, one line each (ending in a newline), fitted
/// to the terminal's width.
pub fn table_text(header: &[&str], rows: &[Vec<String>]) -> String {
    table_text_width(header, rows, terminal_width())
}

/// Rows as left-aligned columns under a header, one line each (ending in a newline). With a
/// `width`, the widest columns are cut (their cells end in `…`) until a line fits in it, down
/// to [`MIN_COLUMN`] characters each (or the header's width): a line never wraps.
pub fn table_text_width(header: &[&str], rows: &[Vec<String>], width: Option<usize>) -> String {
    // A cell is one line of plain text: its control characters (a newline in a description,
    // a terminal escape in a label) are shown escaped, never sent to the terminal.
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| one_line(c)).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| columns(h)).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(columns(cell));
            }
        }
    }
    if let Some(width) = width {
        fit(&mut widths, header, width);
    }
    let mut text = String::new();
    let mut line = |cells: &[String]| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            let cell = cut(cell, w);
            out.push_str(&cell);
            if i + 1 < cells.len() {
                let pad = w.saturating_sub(columns(&cell));
                out.push_str(&" ".repeat(pad + GAP));
            }
        }
        text.push_str(out.trim_end());
        text.push('\n');
    };
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    line(&header);
    for row in &rows {
        line(row);
    }
    text
}

/// `cell` on one line: every control character (newlines and tabs included) escaped.
fn one_line(cell: &str) -> String {
    mayfly_api::text::show_bytes(cell.as_bytes())
}

/// The terminal columns `c` takes: 0 for combining marks and zero-width characters, 2 for
/// wide (East Asian, emoji) ones, else 1.
fn char_columns(c: char) -> usize {
    let u = u32::from(c);
    match u {
        0x0300..=0x036F | 0x1AB0..=0x1AFF | 0x1DC0..=0x1DFF | 0x20D0..=0x20FF | 0xFE20..=0xFE2F => {
            0
        }
        0x200B..=0x200F | 0x2028..=0x202E | 0x2060..=0x2064 | 0xFE00..=0xFE0F | 0xFEFF => 0,
        0x1100..=0x115F
        | 0x231A..=0x231B
        | 0x2329..=0x232A
        | 0x23E9..=0x23EC
        | 0x2E80..=0x303E
        | 0x3041..=0x33FF
        | 0x3400..=0x4DBF
        | 0x4E00..=0x9FFF
        | 0xA000..=0xA4CF
        | 0xA960..=0xA97F
        | 0xAC00..=0xD7A3
        | 0xF900..=0xFAFF
        | 0xFE30..=0xFE4F
        | 0xFF00..=0xFF60
        | 0xFFE0..=0xFFE6
        | 0x1F300..=0x1F64F
        | 0x1F900..=0x1F9FF
        | 0x20000..=0x2FFFD
        | 0x30000..=0x3FFFD => 2,
        _ => 1,
    }
}

/// The terminal columns `text` (one line, no control character) takes.
fn columns(text: &str) -> usize {
    text.chars().map(char_columns).sum()
}

/// Narrows the widest columns until the line (cells and gaps) fits in `width`, in three
/// rounds: the long cells of the other columns (descriptions, images) down to [`COMFORTABLE`]
/// columns while the first column, the names, stays whole; then the names too; then every
/// column down to [`MIN_COLUMN`] (or its header's width).
fn fit(widths: &mut [usize], header: &[&str], width: usize) {
    let floor_at = |least: usize| -> Vec<usize> {
        widths
            .iter()
            .zip(header)
            .map(|(w, h)| (*w).min(columns(h).max(least)))
            .collect()
    };
    let comfortable = floor_at(COMFORTABLE);
    let floor = floor_at(MIN_COLUMN);
    let mut names_whole = comfortable.clone();
    if let (Some(f), Some(w)) = (names_whole.first_mut(), widths.first()) {
        *f = *w;
    }
    narrow(widths, &names_whole, width);
    narrow(widths, &comfortable, width);
    narrow(widths, &floor, width);
}

/// Narrows the widest columns, down to `floor`, until the line fits in `width`.
fn narrow(widths: &mut [usize], floor: &[usize], width: usize) {
    let gaps = GAP * widths.len().saturating_sub(1);
    loop {
        let total: usize = widths.iter().sum::<usize>() + gaps;
        if total <= width {
            return;
        }
        // The widest column that may still be cut (the leftmost of equals), and the width of
        // the next widest: columns of equal width are cut in turn.
        let Some(widest) = (0..widths.len())
            .filter(|&i| widths[i] > floor[i])
            .max_by_key(|&i| (widths[i], std::cmp::Reverse(i)))
        else {
            return;
        };
        let next = (0..widths.len())
            .filter(|&i| i != widest && widths[i] > floor[i])
            .map(|i| widths[i])
            .max()
            .unwrap_or(0)
            .max(floor[widest]);
        let step = widths[widest].saturating_sub(next).clamp(1, total - width);
        widths[widest] -= step;
    }
}

/// `cell` cut to `width` terminal columns, its last one `…` when cut.
fn cut(cell: &str, width: usize) -> String {
    if columns(cell) <= width {
        return cell.to_owned();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in cell.chars() {
        let w = char_columns(c);
        if used + w + 1 > width {
            break;
        }
        out.push(c);
        used += w;
    }
    out.push('…');
    out
}

/// `1.5 MiB`-style size.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `3 minutes ago`-style age of an RFC 3339 time.
pub fn ago(rfc3339: &str) -> String {
    let Ok(t) = humantime::parse_rfc3339(rfc3339) else {
        return rfc3339.to_owned();
    };
    let secs = SystemTime::now()
        .duration_since(t)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let (n, unit) = match secs {
        0..=59 => (secs, "second"),
        60..=3599 => (secs / 60, "minute"),
        3600..=86399 => (secs / 3600, "hour"),
        _ => (secs / 86400, "day"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

/// Pretty JSON on stdout.
pub fn json<T: serde::Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("error: cannot encode JSON: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<Vec<String>> {
        vec![
            vec![
                "web".into(),
                "running".into(),
                "busybox@3 with a rather long template description".into(),
                "10.0.0.2".into(),
            ],
            vec![
                "a-very-long-instance-name-indeed".into(),
                "stopped".into(),
                "debian".into(),
                "-".into(),
            ],
        ]
    }

    const HEADER: [&str; 4] = ["NAME", "STATE", "TEMPLATE", "IPV4"];

    #[test]
    fn without_a_width_nothing_is_cut() {
        let text = table_text_width(&HEADER, &rows(), None);
        assert!(text.contains("busybox@3 with a rather long template description"));
        assert!(text.contains("a-very-long-instance-name-indeed"));
        assert!(!text.contains('…'));
    }

    #[test]
    fn a_table_is_fitted_by_cutting_its_widest_columns() {
        for width in [90, 60, 50, 40] {
            let text = table_text_width(&HEADER, &rows(), Some(width));
            for line in text.lines() {
                assert!(
                    line.chars().count() <= width,
                    "{line:?} is wider than {width}:\n{text}"
                );
            }
            assert!(text.contains('…'), "{text}");
            // The narrow columns are kept whole; the header too.
            assert!(
                text.contains("running") && text.contains("10.0.0.2"),
                "{text}"
            );
            assert!(text.starts_with("NAME"), "{text}");
        }
        // At 90 the template column (the widest) is cut, the name kept whole.
        let text = table_text_width(&HEADER, &rows(), Some(90));
        assert!(text.contains("a-very-long-instance-name-indeed"), "{text}");
        assert!(!text.contains("description"), "{text}");
    }

    #[test]
    fn a_terminal_too_narrow_keeps_the_columns_at_their_floor() {
        let text = table_text_width(&HEADER, &rows(), Some(10));
        let first = text.lines().nth(1).unwrap_or_default();
        assert!(first.starts_with("web "), "{text}");
        assert!(
            text.lines()
                .all(|l| l.chars().count() <= 4 + 2 + 7 + 2 + 8 + 2 + 8),
            "{text}"
        );
    }

    #[test]
    fn the_name_column_is_cut_last() {
        // At 70 the template column can make room: the name stays whole.
        let text = table_text_width(&HEADER, &rows(), Some(70));
        assert!(text.contains("a-very-long-instance-name-indeed"), "{text}");
        assert!(text.contains("busybox@3 with a…"), "{text}");
        assert!(text.lines().all(|l| columns(l) <= 70), "{text}");
        // At 40 it cannot: the name is cut too, rather than the line wrapping, and the
        // short cells are kept whole.
        let text = table_text_width(&HEADER, &rows(), Some(40));
        assert!(text.lines().all(|l| columns(l) <= 40), "{text}");
        assert!(
            text.contains("stopped") && text.contains("10.0.0.2"),
            "{text}"
        );
    }

    #[test]
    fn control_characters_stay_on_one_line_escaped() {
        let rows = vec![vec![
            "web".to_owned(),
            "two\nlines \x1b[2J\tand a tab".to_owned(),
        ]];
        let text = table_text_width(&["NAME", "DESCRIPTION"], &rows, None);
        assert_eq!(text.lines().count(), 2, "{text:?}");
        assert!(!text.contains('\x1b') && !text.contains('\t'), "{text:?}");
        assert!(
            text.contains("two\\x0alines \\x1b[2J\\x09and a tab"),
            "{text:?}"
        );
    }

    #[test]
    fn wide_characters_count_two_columns() {
        let rows = vec![
            vec![
                "a".to_owned(),
                "日本語のテンプレートの説明です".to_owned(),
                "x".to_owned(),
            ],
            vec!["bb".to_owned(), "plain".to_owned(), "y".to_owned()],
        ];
        let header = ["NAME", "DESCRIPTION", "IPV4"];
        // Whole: the third column starts at the same terminal column on every line.
        let text = table_text_width(&header, &rows, None);
        let at: Vec<usize> = text
            .lines()
            .map(|l| columns(l) - columns(l.rsplit(' ').next().unwrap_or_default()))
            .collect();
        assert!(at.windows(2).all(|w| w[0] == w[1]), "{text}\n{at:?}");
        // Fitted: no line is wider than the terminal.
        for width in [30, 25, 23] {
            let text = table_text_width(&header, &rows, Some(width));
            assert!(text.contains('…'), "{text}");
            for l in text.lines() {
                assert!(columns(l) <= width, "{l:?} is wider than {width}:\n{text}");
            }
        }
    }

    #[test]
    fn cells_are_cut_with_an_ellipsis() {
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(cut("abc", 4), "abc");
        assert_eq!(cut("héllo wörld", 5), "héll…");
        assert_eq!(cut("日本語です", 6), "日本…");
        assert_eq!(cut("日本語です", 5), "日本…");
    }
}

#[cfg(test)]
mod json_everywhere {
    use clap::CommandFactory;

    /// Commands whose output is not a report: attached streams (their program's own output),
    /// the daemon, and generated files.
    const RAW: &[&str] = &[
        "mayfly daemon",
        "mayfly forker",
        "mayfly run",
        "mayfly exec",
        "mayfly logs",
        "mayfly console",
        "mayfly completion",
        "mayfly man",
        // Part R's commands (issue 24): they print a secret once, or configure this client;
        // remove them from here once they take --json.
        "mayfly token create",
        "mayfly token revoke",
        "mayfly remote add",
        "mayfly remote rm",
    ];

    fn leaves(cmd: &clap::Command, path: String, out: &mut Vec<(String, clap::Command)>) {
        let subs: Vec<_> = cmd.get_subcommands().collect();
        for s in &subs {
            leaves(s, format!("{path} {}", s.get_name()), out);
        }
        if subs.is_empty() {
            out.push((path, cmd.clone()));
        }
    }

    #[test]
    fn every_command_that_prints_a_report_takes_json() {
        let mut all = Vec::new();
        leaves(&crate::cli::Cli::command(), "mayfly".into(), &mut all);
        let missing: Vec<&String> = all
            .iter()
            .filter(|(path, cmd)| {
                !RAW.contains(&path.as_str()) && !cmd.get_arguments().any(|a| a.get_id() == "json")
            })
            .map(|(path, _)| path)
            .collect();
        assert!(missing.is_empty(), "without --json: {missing:?}");
        for raw in RAW {
            assert!(
                all.iter().any(|(path, _)| path == raw),
                "{raw} is no command any more: remove it from RAW"
            );
        }
    }
}

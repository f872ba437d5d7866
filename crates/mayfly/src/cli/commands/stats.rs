//! `mayfly stats`: one sample (`--json`, `--no-stream`, or output that is not a terminal), or
//! a table redrawn every second on a terminal, like `docker stats`, until Ctrl-C.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use mayfly_api::actions::encode;
use mayfly_api::{Action, InstanceStats};

use crate::cli::StatsArgs;
use crate::cli::client::{Client, ClientError};
use crate::cli::output::{json, size, table_text};

/// Time between two redraws.
const REFRESH: Duration = Duration::from_secs(1);

/// The API path of one sample of `names` (every running instance when empty).
fn stats_path(names: &[&str]) -> String {
    let all = Action::Stats.path(&[]);
    if names.is_empty() {
        return all;
    }
    let list: Vec<String> = names.iter().map(|n| encode(n)).collect();
    format!("{all}?instances={}", list.join(","))
}

/// The daemon that has `names` (`REMOTE:NAME` for a remote's: they must all be on one) and
/// their bare names.
fn stats_target<'a>(
    client: &Client,
    names: &'a [String],
) -> Result<(Client, Vec<&'a str>), ClientError> {
    let mut daemon: Option<(Client, &str)> = None;
    let mut bare = Vec::with_capacity(names.len());
    for n in names {
        let (c, b) = client.target(n)?;
        let prefix = n.strip_suffix(b).unwrap_or(n);
        match &daemon {
            Some((_, p)) if *p != prefix => {
                return Err(ClientError::Api(
                    mayfly_api::ApiError::new(
                        mayfly_api::ErrorCode::InvalidArgument,
                        format!("`{n}` is not on the same daemon as `{}`", names[0]),
                    )
                    .with_hint("run one `mayfly stats` per daemon"),
                ));
            }
            Some(_) => {}
            None => daemon = Some((c, prefix)),
        }
        bare.push(b);
    }
    Ok((daemon.map_or_else(|| client.clone(), |(c, _)| c), bare))
}

/// `mayfly stats [NAME…]`.
pub(super) async fn stats(client: &Client, a: StatsArgs) -> Result<i32, ClientError> {
    let (client, names) = stats_target(client, &a.names)?;
    let client = &client;
    let path = stats_path(&names);
    let stream = !a.json && !a.no_stream && std::io::stdout().is_terminal();
    if !stream {
        let sample: Vec<InstanceStats> = client
            .call(
                crate::cli::client::method(Action::Stats),
                &path,
                None::<&()>,
            )
            .await?;
        if a.json {
            json(&sample);
        } else {
            print!("{}", render(&sample));
        }
        return Ok(0);
    }
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    let mut out = std::io::stdout();
    loop {
        let began = Instant::now();
        let sample: Vec<InstanceStats> = tokio::select! {
            sample = client.call(crate::cli::client::method(Action::Stats), &path, None::<&()>) => sample?,
            _ = &mut ctrl_c => break,
        };
        // Home, clear the screen, draw: one write, so the table does not flicker.
        let frame = format!("\x1b[H\x1b[2J{}", render(&sample));
        if out
            .write_all(frame.as_bytes())
            .and_then(|()| out.flush())
            .is_err()
        {
            return Ok(0);
        }
        tokio::select! {
            () = tokio::time::sleep(REFRESH.saturating_sub(began.elapsed())) => {}
            _ = &mut ctrl_c => break,
        }
    }
    Ok(0)
}

/// `used / limit`, or `used` alone without a limit.
fn of(used: String, limit: Option<String>) -> String {
    match limit {
        Some(l) => format!("{used} / {l}"),
        None => used,
    }
}

/// The table of one sample.
fn render(sample: &[InstanceStats]) -> String {
    let rows: Vec<Vec<String>> = sample
        .iter()
        .map(|s| {
            let mem_percent = match s.memory_limit {
                Some(l) if l > 0 => format!("{:.1}%", s.memory_bytes as f64 * 100.0 / l as f64),
                _ => "-".to_owned(),
            };
            vec![
                s.name.clone(),
                s.state.to_string(),
                format!("{:.1}%", s.cpu_percent),
                of(size(s.memory_bytes), s.memory_limit.map(size)),
                mem_percent,
                of(s.pids.to_string(), s.pids_limit.map(|n| n.to_string())),
                match s.disk_bytes {
                    Some(d) => of(size(d), s.disk_limit.map(size)),
                    None => "-".to_owned(),
                },
                format!("{} / {}", size(s.io_read_bytes), size(s.io_write_bytes)),
                format!("{} / {}", size(s.net_rx_bytes), size(s.net_tx_bytes)),
                s.oom_kills.to_string(),
            ]
        })
        .collect();
    table_text(
        &[
            "NAME",
            "STATE",
            "CPU",
            "MEMORY / LIMIT",
            "MEM",
            "PIDS",
            "DISK / QUOTA",
            "IO READ / WRITE",
            "NET RX / TX",
            "OOM KILLS",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> InstanceStats {
        InstanceStats {
            name: "web".into(),
            id: "0123".into(),
            state: mayfly_api::InstanceState::Running,
            cpu_percent: 12.345,
            cpu_usage_ns: 1,
            memory_bytes: 64 << 20,
            memory_limit: Some(256 << 20),
            pids: 3,
            pids_limit: Some(64),
            disk_bytes: Some(1 << 20),
            disk_limit: None,
            io_read_bytes: 2048,
            io_write_bytes: 0,
            net_rx_bytes: 10,
            net_tx_bytes: 20,
            oom_kills: 1,
        }
    }

    #[test]
    fn the_table_shows_every_figure() {
        let text = render(&[sample()]);
        let mut lines = text.lines();
        assert!(lines.next().unwrap().starts_with("NAME  STATE"));
        let row = lines.next().unwrap();
        for part in [
            "web",
            "running",
            "12.3%",
            "64.0 MiB / 256.0 MiB",
            "25.0%",
            "3 / 64",
            "1.0 MiB",
            "2.0 KiB / 0 B",
            "10 B / 20 B",
        ] {
            assert!(row.contains(part), "{part} in {row}");
        }
        assert!(row.ends_with(" 1"), "{row}");
    }

    #[test]
    fn paths_name_the_instances() {
        let all = Action::Stats.path(&[]);
        assert_eq!(stats_path(&[]), all);
        assert_eq!(
            stats_path(&["a", "b-2", "c d"]),
            format!("{all}?instances=a,b-2,c%20d")
        );
    }
}

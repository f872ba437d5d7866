//! `template import`: a root directory is imported by path, an archive (or stdin) uploaded
//! as a stream under a progress bar; both then follow the daemon's import events.

use std::path::Path;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::Method;
use hyper::body::Frame as BodyFrame;
use mayfly_api::{ApiError, ErrorCode, ImportEvent, ImportTemplate, paths};

use super::enc;
use super::template::{parse_cmd, print_version_summary, progress_bar, read_events};
use crate::cli::ImportArgs;
use crate::cli::client::{Client, ClientError, full};
use crate::cli::output::{json, size};

pub(super) async fn import(client: &Client, args: ImportArgs) -> Result<i32, ClientError> {
    let command = parse_cmd(&args.cmd)?;
    let source = Path::new(&args.source);
    let is_dir = args.source != "-" && source.is_dir();
    let response = if is_dir {
        let path = std::fs::canonicalize(source).map_err(|e| {
            ClientError::Protocol(format!("cannot read source {}: {e}", source.display()))
        })?;
        let body = ImportTemplate {
            name: args.name.clone(),
            path: path.display().to_string(),
            command,
            message: args.message.clone(),
        };
        let bytes = serde_json::to_vec(&body).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let req = Client::request(
            Method::POST,
            paths::TEMPLATES,
            "application/json",
            full(bytes),
        )?;
        (client.send(req).await?, progress_bar(None))
    } else {
        refuse_before_upload(client, &args.name).await?;
        let (reader, total): (Box<dyn tokio::io::AsyncRead + Send + Unpin>, Option<u64>) = if args
            .source
            == "-"
        {
            (Box::new(tokio::io::stdin()), None)
        } else {
            let f = tokio::fs::File::open(source).await.map_err(|e| {
                ClientError::Protocol(format!(
                    "cannot open source {}: {e}\n  hint: give a root directory or a .tar, .tar.gz or .tar.zst of one",
                    source.display()
                ))
            })?;
            let len = f.metadata().await.ok().map(|m| m.len());
            (Box::new(f), len)
        };
        let bar = progress_bar(total);
        bar.set_message(format!("uploading {}", args.source));
        let counter = bar.clone();
        let stream = tokio_util_like_reader_stream(reader).map(move |chunk| {
            if let Ok(b) = &chunk {
                counter.inc(u64::try_from(b.len()).unwrap_or(0));
            }
            chunk.map(BodyFrame::data)
        });
        let body = BodyExt::boxed_unsync(StreamBody::new(stream));
        let mut path = format!("{}?name={}", paths::TEMPLATES, enc(&args.name));
        if let Some(c) = &command {
            let j = serde_json::to_string(c).unwrap_or_default();
            path.push_str(&format!("&command={}", enc(&j)));
        }
        if let Some(m) = &args.message {
            path.push_str(&format!("&message={}", enc(m)));
        }
        let req = Client::request(Method::POST, &path, "application/x-tar", body)?;
        (client.send(req).await?, bar)
    };
    let (response, bar) = response;
    if !response.status().is_success() {
        bar.finish_and_clear();
        return Err(Client::error_of(response).await);
    }
    if is_dir {
        bar.set_message(format!("copying {}", args.source));
    } else {
        bar.set_message("unpacking");
    }
    let source = args.source.clone();
    let mut outcome: Option<ImportEvent> = None;
    let streamed = read_events(response, "import", |ev: ImportEvent| match ev {
        ImportEvent::Progress { entries, bytes } => {
            if is_dir {
                bar.set_message(format!(
                    "copying {source}: {entries} entries, {}",
                    size(bytes)
                ));
            }
        }
        ImportEvent::Log { line } => bar.println(line),
        ev => outcome = Some(ev),
    })
    .await;
    bar.finish_and_clear();
    // A refused upload larger than what the daemon reads after a refusal ends in a closed
    // connection under a client still sending: the result, received before, is what counts.
    if outcome.is_none() {
        streamed?;
    }
    match outcome {
        Some(ImportEvent::Done(t)) => {
            if args.json {
                json(&t);
            } else {
                let v = t.current();
                print_version_summary("imported", &t);
                if v.is_some_and(|v| v.config.command.is_empty()) {
                    println!(
                        "note: it has no /sbin/init; give instances a command (`mayfly launch {} -- CMD`) or import with --cmd",
                        t.name
                    );
                }
            }
            Ok(0)
        }
        Some(ImportEvent::Error(e)) => Err(ClientError::Api(e)),
        _ => Err(ClientError::Protocol(
            "the import ended without a result".into(),
        )),
    }
}

/// What the daemon would refuse before reading an upload (a bad name, a name in use), asked
/// before sending what may be gigabytes. The daemon checks again: this only saves the upload.
async fn refuse_before_upload(client: &Client, name: &str) -> Result<(), ClientError> {
    if let Err(e) = mayfly_api::names::check_template_name(name) {
        return Err(ClientError::Api(ApiError {
            code: ErrorCode::InvalidArgument,
            message: e,
            hint: Some("e.g. `mayfly template import debian ./rootfs.tar.zst`".into()),
        }));
    }
    let path = paths::template(&enc(name));
    match client
        .call::<serde_json::Value>(Method::GET, &path, None::<&()>)
        .await
    {
        Ok(_) => Err(ClientError::Api(ApiError {
            code: ErrorCode::AlreadyExists,
            message: format!("template `{name}` already exists"),
            hint: Some(format!(
                "choose another name, or remove the existing template first (a new version of it: `mayfly template patch {name} --from DIR`)"
            )),
        })),
        Err(ClientError::Api(e)) if e.code == ErrorCode::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Chunks of an async reader as a stream (what tokio-util's ReaderStream does).
fn tokio_util_like_reader_stream(
    reader: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    futures_util::stream::unfold(Some(reader), |state| async move {
        let mut reader = state?;
        let mut buf = vec![0u8; 256 * 1024];
        match tokio::io::AsyncReadExt::read(&mut reader, &mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), Some(reader)))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
}

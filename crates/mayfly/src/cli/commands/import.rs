//! `template import`: a directory (a root filesystem or an OCI layout) is imported by path,
//! following the daemon's progress events; an archive (or stdin) is uploaded as a stream
//! under a progress bar, and the answer is the outcome. `SOURCE:TAG` or `--tag` chooses one
//! image of a layout or archive that holds several.

use std::path::Path;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame as BodyFrame;
use mayfly_api::{Action, ApiError, ErrorCode, ImportEvent, ImportTemplate, TemplateInfo};

use super::template::{parse_cmd, print_version_summary, progress_bar, read_events};
use super::{path_with, request};
use crate::cli::ImportArgs;
use crate::cli::client::{Client, ClientError, full};
use crate::cli::output::{json, size};

pub(super) async fn import(client: &Client, args: ImportArgs) -> Result<i32, ClientError> {
    let command = parse_cmd(&args.cmd)?;
    // `PATH:TAG` names an image of a layout or archive, when `PATH:TAG` itself does not exist.
    let (source, tag) = if args.source == "-" {
        (args.source.as_str(), args.tag.clone())
    } else {
        let (path, tag) =
            mayfly_api::split_image_tag(&args.source, |p| std::fs::symlink_metadata(p).is_ok());
        let tag = match (tag, &args.tag) {
            (Some(tag), Some(given)) if tag != given => {
                return Err(ClientError::Api(ApiError {
                    code: ErrorCode::InvalidArgument,
                    message: format!(
                        "two images asked for: `{tag}` after the path, and `--tag {given}`"
                    ),
                    hint: Some("name the image once: `PATH:TAG`, or --tag".into()),
                }));
            }
            (Some(tag), _) => Some(tag.to_owned()),
            (None, given) => given.clone(),
        };
        (path, tag)
    };
    let source_path = Path::new(source);
    let is_dir = source != "-" && source_path.is_dir();
    let response = if is_dir {
        let path = std::fs::canonicalize(source_path).map_err(|e| {
            ClientError::Protocol(format!("cannot read source {}: {e}", source_path.display()))
        })?;
        let body = ImportTemplate {
            name: args.name.clone(),
            path: path.display().to_string(),
            tag: tag.clone(),
            command,
            message: args.message.clone(),
        };
        let bytes = serde_json::to_vec(&body).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let path = Action::ImportTemplate.path(&[]);
        let mut req = request(
            Action::ImportTemplate,
            &path,
            "application/json",
            full(bytes),
        )?;
        // A directory is copied or unpacked by the daemon: follow its progress.
        req.headers_mut().insert(
            hyper::header::ACCEPT,
            hyper::header::HeaderValue::from_static(mayfly_api::NDJSON),
        );
        (client.send(req).await?, progress_bar(None))
    } else {
        refuse_before_upload(client, &args.name).await?;
        let (reader, total): (Box<dyn tokio::io::AsyncRead + Send + Unpin>, Option<u64>) = if source
            == "-"
        {
            (Box::new(tokio::io::stdin()), None)
        } else {
            let f = tokio::fs::File::open(source_path).await.map_err(|e| {
                    ClientError::Protocol(format!(
                        "cannot open source {}: {e}\n  hint: give a root directory or a .tar, .tar.gz or .tar.zst of one, or an image",
                        source_path.display()
                    ))
                })?;
            let len = f.metadata().await.ok().map(|m| m.len());
            (Box::new(f), len)
        };
        let bar = progress_bar(total);
        bar.set_message(format!("uploading {source}"));
        let counter = bar.clone();
        let ended = bar.clone();
        let stream = tokio_util_like_reader_stream(reader, move || {
            ended.set_message("importing");
        })
        .map(move |chunk| {
            if let Ok(b) = &chunk {
                counter.inc(u64::try_from(b.len()).unwrap_or(0));
            }
            chunk.map(BodyFrame::data)
        });
        let body = BodyExt::boxed_unsync(StreamBody::new(stream));
        let command = command.map(|c| serde_json::to_string(&c).unwrap_or_default());
        let mut query = vec![("name", args.name.as_str())];
        if let Some(t) = &tag {
            query.push(("tag", t.as_str()));
        }
        if let Some(c) = &command {
            query.push(("command", c.as_str()));
        }
        if let Some(m) = &args.message {
            query.push(("message", m.as_str()));
        }
        let path = path_with(Action::ImportTemplate, &[], &query);
        // No `Accept: application/x-ndjson`: the answer comes when the import has ended, its
        // status the outcome (the bar shows the upload meanwhile).
        let req = request(Action::ImportTemplate, &path, "application/x-tar", body)?;
        (client.send(req).await?, bar)
    };
    let (response, bar) = response;
    if !response.status().is_success() {
        bar.finish_and_clear();
        return Err(Client::error_of(response).await);
    }
    let outcome = if is_dir {
        bar.set_message(format!("copying {source}"));
        follow_events(response, &bar, source).await?
    } else {
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Protocol(format!("read the daemon's answer: {e}")))?
            .to_bytes();
        let info: TemplateInfo = serde_json::from_slice(&body)
            .map_err(|e| ClientError::Protocol(format!("decode the daemon's answer: {e}")))?;
        info
    };
    bar.finish_and_clear();
    if args.json {
        json(&outcome);
    } else if !crate::cli::output::quiet() {
        let v = outcome.current();
        print_version_summary("imported", &outcome);
        if v.is_some_and(|v| v.config.command.is_empty()) {
            println!(
                "note: it has no /sbin/init; give instances a command (`mayfly launch {} -- CMD`) or import with --cmd",
                outcome.name
            );
        }
    }
    Ok(0)
}

/// Follows the import events of a directory's import to the template, or the error.
async fn follow_events(
    response: hyper::Response<hyper::body::Incoming>,
    bar: &indicatif::ProgressBar,
    source: &str,
) -> Result<TemplateInfo, ClientError> {
    let mut outcome: Option<ImportEvent> = None;
    let streamed = read_events(response, "import", |ev: ImportEvent| match ev {
        ImportEvent::Progress { entries, bytes } => {
            bar.set_message(format!(
                "copying {source}: {entries} entries, {}",
                size(bytes)
            ));
        }
        ImportEvent::Log { line } => bar.println(mayfly_api::text::printable(&line)),
        ev => outcome = Some(ev),
    })
    .await;
    bar.finish_and_clear();
    if outcome.is_none() {
        streamed?;
    }
    match outcome {
        Some(ImportEvent::Done(t)) => Ok(*t),
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
    match client
        .act::<serde_json::Value>(Action::TemplateInfo, &[name], None::<&()>)
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

/// Chunks of an async reader as a stream (what tokio-util's ReaderStream does); `at_end` is
/// called when the reader is exhausted.
fn tokio_util_like_reader_stream(
    reader: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
    at_end: impl FnOnce() + Send + 'static,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    futures_util::stream::unfold(Some((reader, Some(at_end))), |state| async move {
        let (mut reader, mut at_end) = state?;
        let mut buf = vec![0u8; 256 * 1024];
        match tokio::io::AsyncReadExt::read(&mut reader, &mut buf).await {
            Ok(0) => {
                if let Some(f) = at_end.take() {
                    f();
                }
                None
            }
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), Some((reader, at_end))))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
}

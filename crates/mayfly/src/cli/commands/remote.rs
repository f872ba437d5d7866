//! `mayfly remote …`: the remote daemons this CLI can target (`--remote NAME`,
//! `NAME:INSTANCE`), trusted on first use.

use std::io::{BufRead, IsTerminal, Write};

use crate::cli::args::remote::{RemoteAddArgs, RemoteCommand};
use crate::cli::client::{Client, ClientError};
use crate::cli::output::{json, table};
use crate::cli::remote::{Endpoint, Remote, RemoteConfig, Remotes, normalize_fingerprint};

pub(super) async fn remote(client: &Client, command: RemoteCommand) -> Result<i32, ClientError> {
    match command {
        RemoteCommand::Add(a) => add(client, a).await,
        RemoteCommand::List(a) => {
            let remotes = Remotes::load().map_err(ClientError::Config)?;
            if a.json {
                // Never the tokens.
                let list: Vec<serde_json::Value> = remotes
                    .remotes
                    .iter()
                    .map(|(name, r)| {
                        serde_json::json!({
                            "name": name,
                            "url": r.url,
                            "fingerprint": r.fingerprint,
                            "token": r.token.is_some(),
                        })
                    })
                    .collect();
                json(&list);
            } else {
                let rows: Vec<Vec<String>> = remotes
                    .remotes
                    .iter()
                    .map(|(name, r)| {
                        vec![
                            name.clone(),
                            r.url.clone(),
                            if r.token.is_some() { "yes" } else { "no" }.to_owned(),
                            r.fingerprint.clone(),
                        ]
                    })
                    .collect();
                table(&["NAME", "URL", "TOKEN", "FINGERPRINT (SHA-256)"], &rows);
            }
            Ok(0)
        }
        RemoteCommand::Rm(a) => {
            let mut remotes = Remotes::load().map_err(ClientError::Config)?;
            let mut code = 0;
            for name in &a.names {
                if remotes.remotes.remove(name).is_some() {
                    println!("removed remote {name}");
                } else {
                    eprintln!(
                        "error: remote `{name}` is not configured\n  hint: see `mayfly remote list`"
                    );
                    code = 1;
                }
            }
            remotes.save().map_err(ClientError::Config)?;
            Ok(code)
        }
    }
}

/// Asks on the terminal whether to trust `fingerprint`.
fn ask(url: &str) -> Result<bool, ClientError> {
    eprint!(
        "Compare it with `mayfly info` on the daemon's host. Trust the certificate of {url}? [y/N] "
    );
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| ClientError::Config(format!("cannot read the answer: {e}")))?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes" | "Yes"))
}

async fn add(client: &Client, a: RemoteAddArgs) -> Result<i32, ClientError> {
    mayfly_api::names::check_instance_name(&a.name).map_err(|e| {
        ClientError::Config(format!(
            "{}\n  hint: e.g. `mayfly remote add lab https://lab.example:8443`",
            e.replace("instance name", "remote name")
        ))
    })?;
    let mut remotes = Remotes::load().map_err(ClientError::Config)?;
    if remotes.remotes.contains_key(&a.name) {
        return Err(ClientError::Config(format!(
            "remote `{}` exists already\n  hint: remove it first with `mayfly remote rm {}`",
            a.name, a.name
        )));
    }
    let endpoint = Endpoint::parse(&a.url).map_err(ClientError::Config)?;
    let url = endpoint.url();

    // First look: which certificate does it show? (Nothing is sent before it is trusted.)
    let probe = Remote::new(None, endpoint.clone(), None, None).map_err(ClientError::Config)?;
    drop(Client::tls_connect(&probe).await?);
    let seen = probe
        .pin
        .seen()
        .ok_or_else(|| ClientError::Protocol(format!("{url} showed no certificate")))?;
    eprintln!("certificate fingerprint (SHA-256) of {url}:\n  {seen}");
    let trusted = match &a.fingerprint {
        Some(expected) => {
            let expected = normalize_fingerprint(expected);
            if expected != seen {
                return Err(ClientError::Certificate(format!(
                    "the certificate of {url} is not the expected one\n  expected (--fingerprint): {expected}\n  presented:                {seen}\n  hint: check the fingerprint with `mayfly info` on the daemon's host; someone may be intercepting the connection"
                )));
            }
            true
        }
        None if a.accept_certificate => true,
        None if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() => ask(&url)?,
        None => {
            return Err(ClientError::Certificate(format!(
                "not trusting the certificate of {url} without a confirmation\n  hint: compare the fingerprint above with `mayfly info` on the daemon's host, then pass --fingerprint {seen} (or --accept-certificate)"
            )));
        }
    };
    if !trusted {
        eprintln!("not added: the certificate was not trusted");
        return Ok(1);
    }

    // With the certificate pinned, check the token.
    let remote = Remote::new(
        Some(a.name.clone()),
        endpoint,
        a.token.clone(),
        Some(seen.clone()),
    )
    .map_err(ClientError::Config)?;
    let pinned = Client::for_remote(client.socket().to_owned(), remote);
    match pinned
        .act::<mayfly_api::DaemonInfo>(mayfly_api::Action::Info, &[], None::<&()>)
        .await
    {
        Ok(info) => eprintln!("remote daemon: mayfly {}", info.version),
        Err(ClientError::Api(e)) if e.code == mayfly_api::ErrorCode::Unauthenticated => {
            if a.token.is_some() {
                return Err(ClientError::Api(
                    mayfly_api::ApiError::new(
                        e.code,
                        format!("{url} refused the token: {}", e.message),
                    )
                    .with_hint("make a token on the daemon's host with `mayfly token create NAME` and pass it with --token"),
                ));
            }
            eprintln!(
                "warning: no token given: {url} will refuse requests (add the remote again with --token SECRET)"
            );
        }
        Err(e) => return Err(e),
    }
    remotes.remotes.insert(
        a.name.clone(),
        RemoteConfig {
            url: url.clone(),
            fingerprint: seen,
            token: a.token,
        },
    );
    remotes.save().map_err(ClientError::Config)?;
    println!("added remote {} ({url})", a.name);
    Ok(0)
}

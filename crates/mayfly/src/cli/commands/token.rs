//! `mayfly token …`: API tokens for remote clients and the web page.

use mayfly_api::{Action, CreateToken, CreatedToken, TokenInfo};

use crate::cli::args::token::TokenCommand;
use crate::cli::client::{Client, ClientError};
use crate::cli::output::{ago, json, table};

pub(super) async fn token(client: &Client, command: TokenCommand) -> Result<i32, ClientError> {
    match command {
        TokenCommand::Create(a) => {
            let created: CreatedToken = client
                .act(
                    Action::CreateToken,
                    &[],
                    Some(&CreateToken { name: a.name }),
                )
                .await?;
            if a.json.json {
                json(&created);
            } else {
                println!("{}", created.secret);
                eprintln!(
                    "token `{}` created; its secret (above) is shown only now: keep it safe",
                    created.name
                );
                if let Some(fp) = &created.fingerprint {
                    eprintln!("the daemon's certificate fingerprint (SHA-256): {fp}");
                }
                eprintln!(
                    "use it: mayfly remote add NAME https://HOST:PORT --token SECRET (or log in on the web page)"
                );
            }
            Ok(0)
        }
        TokenCommand::List(a) => {
            let tokens: Vec<TokenInfo> = client.act(Action::ListTokens, &[], None::<&()>).await?;
            if a.json {
                json(&tokens);
            } else {
                let rows: Vec<Vec<String>> = tokens
                    .iter()
                    .map(|t| {
                        vec![
                            t.name.clone(),
                            ago(&t.created_at),
                            t.last_used
                                .as_deref()
                                .map_or_else(|| "never".to_owned(), ago),
                        ]
                    })
                    .collect();
                table(&["NAME", "CREATED", "LAST USED"], &rows);
            }
            Ok(0)
        }
        TokenCommand::Revoke(a) => {
            let mut code = 0;
            for name in &a.names {
                match client
                    .act::<()>(Action::RevokeToken, &[name], None::<&()>)
                    .await
                {
                    Ok(()) => println!("revoked token {name}"),
                    Err(e) => {
                        eprintln!("error: {e}");
                        code = code.max(e.exit_code());
                    }
                }
            }
            Ok(code)
        }
    }
}

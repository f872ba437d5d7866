//! `mayfly info` without a name: the daemon's own facts (version, state directory, cgroup
//! mode, user namespaces, counts).

use mayfly_api::{Action, DaemonInfo};

use crate::cli::client::{Client, ClientError};
use crate::cli::output::json;

pub(super) async fn daemon_info(client: &Client, as_json: bool) -> Result<i32, ClientError> {
    let info: DaemonInfo = client.act(Action::Info, &[], None::<&()>).await?;
    if as_json {
        json(&info);
        return Ok(0);
    }
    println!("version:          {}", info.version);
    println!("state directory:  {}", info.state_dir);
    match client.remote() {
        Some(r) => println!("remote:           {}", r.label()),
        None => println!("socket:           {}", client.socket().display()),
    }
    println!("cgroups:          {}", info.cgroup_mode);
    match &info.user_namespaces_off_reason {
        None => println!("user namespaces:  yes (idmapped template layers)"),
        Some(why) => println!("user namespaces:  no ({why})"),
    }
    if let Some(pid) = info.forker_pid {
        println!("forker pid:       {pid}");
    }
    if let Some(fp) = &info.tls_fingerprint {
        println!("TLS fingerprint:  {fp} (SHA-256)");
    }
    println!("templates:        {}", info.templates);
    println!(
        "instances:        {} ({} running)",
        info.instances, info.running
    );
    Ok(0)
}

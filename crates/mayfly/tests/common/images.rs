//! Container images for tests: OCI image layouts and `docker save` archives, built by hand.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use super::{CLI_TIMEOUT, run_command};

/// SHA-256 of `data`, lowercase hex (the mayfly crate has no sha2 dev-dependency).
pub fn sha256_hex(data: &[u8]) -> String {
    let out = run_command(Command::new("sha256sum"), Some(data), CLI_TIMEOUT);
    assert!(out.success(), "sha256sum: {out}");
    let hex = out
        .stdout
        .split_whitespace()
        .next()
        .expect("sha256sum output")
        .to_owned();
    assert_eq!(hex.len(), 64, "sha256sum printed {out}");
    hex
}

/// A blob written into an OCI layout's `blobs/sha256/`; returns its descriptor.
pub fn write_blob(layout: &Path, media_type: &str, data: &[u8]) -> Value {
    let hex = sha256_hex(data);
    let dir = layout.join("blobs/sha256");
    std::fs::create_dir_all(&dir).expect("mkdir blobs");
    std::fs::write(dir.join(&hex), data).expect("write blob");
    json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": data.len()})
}

pub const OCI_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_TAR_GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// An image config document.
pub fn image_config(
    env: &[&str],
    entrypoint: &[&str],
    cmd: &[&str],
    workdir: &str,
    diff_ids: &[String],
) -> Vec<u8> {
    json!({
        "architecture": if cfg!(target_arch = "aarch64") { "arm64" } else { "amd64" },
        "os": "linux",
        "config": {
            "Env": env,
            "Entrypoint": entrypoint,
            "Cmd": cmd,
            "WorkingDir": workdir,
            "StopSignal": "SIGINT",
        },
        "rootfs": {
            "type": "layers",
            "diff_ids": diff_ids.iter().map(|h| format!("sha256:{h}")).collect::<Vec<_>>(),
        },
    })
    .to_string()
    .into_bytes()
}

/// Writes an OCI image layout at `dir`: `layers` (media type, blob), a config.
pub fn write_oci_layout(dir: &Path, layers: &[(&str, Vec<u8>)], config: &[u8]) {
    std::fs::create_dir_all(dir).expect("mkdir layout");
    let layer_descs: Vec<Value> = layers
        .iter()
        .map(|(mt, blob)| write_blob(dir, mt, blob))
        .collect();
    let config_desc = write_blob(dir, "application/vnd.oci.image.config.v1+json", config);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": layer_descs,
    })
    .to_string();
    let manifest_desc = write_blob(
        dir,
        "application/vnd.oci.image.manifest.v1+json",
        manifest.as_bytes(),
    );
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [manifest_desc],
    });
    std::fs::write(dir.join("index.json"), index.to_string()).expect("index.json");
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("oci-layout");
}

/// A `docker save` archive of one image: `layers` are plain tars.
pub fn docker_save(layers: &[&[u8]], config: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(u64::try_from(data.len()).expect("size"));
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, data).expect("append");
    };
    let config_hex = sha256_hex(config);
    add(&format!("{config_hex}.json"), config);
    let mut paths = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        // docker save names layer directories by an id that is not the content digest.
        let id = sha256_hex(format!("layer-id-{i}-{}", layer.len()).as_bytes());
        add(&format!("{id}/VERSION"), b"1.0");
        add(
            &format!("{id}/json"),
            format!("{{\"id\":\"{id}\"}}").as_bytes(),
        );
        add(&format!("{id}/layer.tar"), layer);
        paths.push(format!("{id}/layer.tar"));
    }
    let manifest = json!([{
        "Config": format!("{config_hex}.json"),
        "RepoTags": ["mayfly-test:latest"],
        "Layers": paths,
    }]);
    add("manifest.json", manifest.to_string().as_bytes());
    add("repositories", b"{}");
    b.into_inner().expect("finish the tar")
}

use std::fs::{self, File};
use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::blobs::{Alg, Hasher};
use super::*;
use crate::fixtures::{Raw, TarWriter, budget, xattrs_of};
use crate::{NoProgress, flatten_layers, unpack_layer_archive};

fn sha256(bytes: &[u8]) -> String {
    let mut hasher = Hasher::new(Alg::Sha256);
    hasher.update(bytes);
    hasher.finish()
}

fn file<'a>(name: &'a [u8], data: &'a [u8]) -> Raw<'a> {
    let mut raw = Raw::new(name, b'0');
    raw.data = data;
    raw
}

/// The base layer: `etc/gone` and `opt/app/old` are removed by the second layer.
fn base_layer() -> Vec<u8> {
    TarWriter::default()
        .add(Raw::new(b"etc/", b'5'), &[])
        .add(file(b"etc/keep", b"kept"), &[])
        .add(file(b"etc/gone", b"deleted above"), &[])
        .add(Raw::new(b"opt/", b'5'), &[])
        .add(Raw::new(b"opt/app/", b'5'), &[])
        .add(file(b"opt/app/old", b"hidden above"), &[])
        .finish()
}

/// Deletes a file and replaces a directory.
fn upper_layer() -> Vec<u8> {
    TarWriter::default()
        .add(Raw::new(b"etc/", b'5'), &[])
        .add(Raw::new(b"etc/.wh.gone", b'0'), &[])
        .add(Raw::new(b"opt/app/", b'5'), &[])
        .add(Raw::new(b"opt/app/.wh..wh..opq", b'0'), &[])
        .add(file(b"opt/app/new", b"new app"), &[])
        .finish()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn config_json() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "APP_MODE=prod"],
            "Entrypoint": ["/usr/bin/app"],
            "Cmd": ["serve", "--port", "8080"],
            "WorkingDir": "/srv/app",
            "User": "",
            "StopSignal": null,
            "Labels": {"ignored": "yes"}
        },
        "rootfs": {"type": "layers", "diff_ids": []}
    }))
    .unwrap()
}

fn expected_config() -> OciConfig {
    OciConfig {
        env: vec![
            "PATH=/usr/local/bin:/usr/bin:/bin".to_owned(),
            "APP_MODE=prod".to_owned(),
        ],
        entrypoint: vec!["/usr/bin/app".to_owned()],
        cmd: vec!["serve".to_owned(), "--port".to_owned(), "8080".to_owned()],
        workdir: Some("/srv/app".to_owned()),
        user: None,
        stop_signal: None,
    }
}

/// Writes `bytes` as a blob of the layout at `dir` and returns its descriptor.
fn blob(dir: &Path, media_type: &str, bytes: &[u8]) -> serde_json::Value {
    let digest = sha256(bytes);
    let path = oci_blob_path(dir, &digest).unwrap();
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
    json!({"mediaType": media_type, "digest": digest, "size": bytes.len()})
}

fn json_blob(dir: &Path, media_type: &str, value: &serde_json::Value) -> serde_json::Value {
    blob(dir, media_type, &serde_json::to_vec(value).unwrap())
}

fn with_platform(mut descriptor: serde_json::Value, os: &str, arch: &str) -> serde_json::Value {
    descriptor["platform"] = json!({"os": os, "architecture": arch});
    descriptor
}

/// An OCI layout whose index points at a nested index for three platforms, ours one of them.
fn oci_layout(dir: &Path) -> (serde_json::Value, serde_json::Value) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let base = blob(
        dir,
        "application/vnd.oci.image.layer.v1.tar+gzip",
        &gzip(&base_layer()),
    );
    let upper = blob(
        dir,
        "application/vnd.oci.image.layer.v1.tar",
        &upper_layer(),
    );
    let config = blob(dir, CONFIG_TYPES[0], &config_json());
    let manifest = json_blob(
        dir,
        MANIFEST_TYPES[0],
        &json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPES[0],
            "config": config,
            "layers": [base, upper]
        }),
    );
    // Other platforms' manifests need not be present: only ours is read.
    let other = json!({
        "mediaType": MANIFEST_TYPES[0],
        "digest": format!("sha256:{}", "0".repeat(64)),
        "size": 10
    });
    let nested = json_blob(
        dir,
        INDEX_TYPES[0],
        &json!({
            "schemaVersion": 2,
            "manifests": [
                with_platform(other.clone(), "linux", "arm64"),
                with_platform(manifest.clone(), "linux", ARCH),
                with_platform(other, "unknown", "unknown"),
            ]
        }),
    );
    fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [nested]})).unwrap(),
    )
    .unwrap();
    (manifest, json!([base, upper]))
}

/// Unpacks each layer of `image` in `dir` next to it and returns the layer directories.
fn unpack_layers(dir: &Path, image: &OciImage, out: &Path) -> Vec<PathBuf> {
    image
        .layers
        .iter()
        .enumerate()
        .map(|(i, layer)| {
            let blob = image_layer_path(dir, layer).unwrap();
            let dest = out.join(format!("layer{i}"));
            fs::create_dir(&dest).unwrap();
            unpack_layer_archive(File::open(blob).unwrap(), &dest, &NoProgress, &budget()).unwrap();
            dest
        })
        .collect()
}

/// Checks the two unpacked layers and their flattened stack.
fn check_layers(layers: &[PathBuf], out: &Path) {
    assert_eq!(layers.len(), 2);
    let whiteout = fs::symlink_metadata(layers[1].join("etc/gone")).unwrap();
    assert_eq!(
        (whiteout.mode(), whiteout.rdev(), whiteout.mtime()),
        (0o020_000, 0, 0)
    );
    assert_eq!(
        xattrs_of(&layers[1].join("opt/app"))
            .get("trusted.overlay.opaque")
            .map(Vec::as_slice),
        Some(&b"y"[..])
    );
    assert!(fs::symlink_metadata(layers[1].join("etc/.wh.gone")).is_err());
    let flat = out.join("flat");
    flatten_layers(layers, &flat, &NoProgress).unwrap();
    let names = |rel: &str| {
        let mut names: Vec<_> = fs::read_dir(flat.join(rel))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    assert_eq!(names("etc"), ["keep"]);
    assert_eq!(names("opt/app"), ["new"]);
}

#[test]
fn reads_an_oci_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("layout");
    let (_, layers) = oci_layout(&dir);
    let image = open_oci_layout(&dir, None).unwrap();
    assert_eq!(image.config, expected_config());
    let expected: Vec<OciLayer> = layers
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let digest = d["digest"].as_str().unwrap().to_owned();
            OciLayer {
                path: PathBuf::from(format!("blobs/sha256/{}", &digest[7..])),
                digest,
                media_type: d["mediaType"].as_str().unwrap().to_owned(),
                size: d["size"].as_u64().unwrap(),
            }
        })
        .collect();
    assert_eq!(image.layers, expected);
    assert_eq!(open_image_dir(&dir, None).unwrap(), image);
    let layers = unpack_layers(&dir, &image, tmp.path());
    check_layers(&layers, tmp.path());
}

#[test]
fn an_only_manifest_needs_no_platform() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("layout");
    let (manifest, _) = oci_layout(&dir);
    let index = json!({"schemaVersion": 2, "manifests": [manifest]});
    fs::write(dir.join("index.json"), index.to_string()).unwrap();
    assert_eq!(open_oci_layout(&dir, None).unwrap().layers.len(), 2);

    let index = json!({"manifests": [with_platform(manifest.clone(), "linux", "pdp11")]});
    fs::write(dir.join("index.json"), index.to_string()).unwrap();
    let err = open_oci_layout(&dir, None).unwrap_err();
    assert!(
        err.to_string().ends_with(&format!(
            "its only image is for linux/pdp11, not linux/{ARCH}"
        )),
        "{err}"
    );

    let index = json!({"manifests": [
        with_platform(manifest.clone(), "linux", "pdp11"),
        with_platform(manifest, "windows", ARCH),
    ]});
    fs::write(dir.join("index.json"), index.to_string()).unwrap();
    let err = open_oci_layout(&dir, None).unwrap_err();
    assert!(
        err.to_string().ends_with(&format!(
            "none of its images is for linux/{ARCH} (it has linux/pdp11, windows/{ARCH})"
        )),
        "{err}"
    );
}

#[test]
fn malformed_layouts_fail_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("layout");
    let (manifest, layers) = oci_layout(&dir);

    // Missing index.
    fs::rename(dir.join("index.json"), tmp.path().join("index.json")).unwrap();
    let err = open_oci_layout(&dir, None).unwrap_err();
    assert_eq!(err.to_string(), "`index.json` is missing from the image");
    let err = open_image_dir(&dir, None).unwrap_err();
    assert!(matches!(err, ImageError::Missing { .. }), "{err:?}");
    fs::rename(tmp.path().join("index.json"), dir.join("index.json")).unwrap();

    // A digest that would climb out of the layout, in the index and in a manifest.
    let evil = "sha256:../../etc";
    let mut escaping = manifest.clone();
    escaping["digest"] = json!(evil);
    fs::write(
        dir.join("index.json"),
        json!({"manifests": [escaping]}).to_string(),
    )
    .unwrap();
    let err = open_oci_layout(&dir, None).unwrap_err();
    assert!(
        matches!(&err, ImageError::BadBlobDigest(d) if d == evil),
        "{err:?}"
    );
    let config = json!({"mediaType": CONFIG_TYPES[0], "digest": sha256(&config_json()), "size": config_json().len()});
    let mut evil_layer = layers[0].clone();
    evil_layer["digest"] = json!(format!("sha256:../../../../{}", "a".repeat(52)));
    let bad_manifest = json_blob(
        &dir,
        MANIFEST_TYPES[0],
        &json!({"config": config, "layers": [evil_layer]}),
    );
    fs::write(
        dir.join("index.json"),
        json!({"manifests": [bad_manifest]}).to_string(),
    )
    .unwrap();
    let err = open_oci_layout(&dir, None).unwrap_err();
    assert!(matches!(err, ImageError::BadBlobDigest(_)), "{err:?}");
    for bad in [
        evil,
        "sha256:",
        &format!("sha256:{}", "A".repeat(64)),
        &format!("sha384:{}", "a".repeat(96)),
        &format!("sha256:{}/", "a".repeat(63)),
        &format!("sha512:{}", "a".repeat(64)),
        "",
    ] {
        assert!(
            matches!(oci_blob_path(&dir, bad), Err(ImageError::BadBlobDigest(_))),
            "{bad}"
        );
    }
    let good = format!("sha512:{}", "a".repeat(128));
    assert_eq!(
        oci_blob_path(&dir, &good).unwrap(),
        dir.join("blobs/sha512").join("a".repeat(128))
    );

    // A manifest blob that does not match its digest.
    fs::write(
        dir.join("index.json"),
        json!({"manifests": [manifest]}).to_string(),
    )
    .unwrap();
    let manifest_path = oci_blob_path(&dir, manifest["digest"].as_str().unwrap()).unwrap();
    let original = fs::read(&manifest_path).unwrap();
    let mut tampered = original.clone();
    tampered[0] = b' ';
    fs::write(&manifest_path, &tampered).unwrap();
    let err = open_oci_layout(&dir, None).unwrap_err();
    assert!(
        matches!(&err, ImageError::BlobMismatch { path, .. }
                if dir.join(path) == manifest_path && path.is_relative()),
        "{err:?}"
    );
    fs::write(&manifest_path, &original).unwrap();

    // A layer blob that does not match: same size, other content; then another size.
    let image = open_oci_layout(&dir, None).unwrap();
    let layer_path = dir.join(&image.layers[1].path);
    let original = fs::read(&layer_path).unwrap();
    let mut tampered = original.clone();
    tampered[0] ^= 1;
    fs::write(&layer_path, &tampered).unwrap();
    let err = image_layer_path(&dir, &image.layers[1]).unwrap_err();
    assert!(
        matches!(&err, ImageError::BlobMismatch { expected, .. }
                if *expected == image.layers[1].digest),
        "{err:?}"
    );
    assert!(err.to_string().contains("expected sha256:"), "{err}");
    tampered.push(0);
    fs::write(&layer_path, &tampered).unwrap();
    let err = image_layer_path(&dir, &image.layers[1]).unwrap_err();
    assert!(
        err.to_string().ends_with(&format!(
            "expected {} bytes, found {} bytes",
            original.len(),
            original.len() + 1
        )),
        "{err}"
    );
    fs::write(&layer_path, &original).unwrap();
    image_layer_path(&dir, &image.layers[1]).unwrap();

    // A layer path or digest that was tampered with after opening.
    let mut moved = image.layers[1].clone();
    moved.path = PathBuf::from("../layout/blobs/sha256/x");
    let err = image_layer_path(&dir, &moved).unwrap_err();
    assert!(matches!(err, ImageError::BadImage { .. }), "{err:?}");
    moved.path = image.layers[1].path.clone();
    moved.digest = "sha256:..".to_owned();
    let err = image_layer_path(&dir, &moved).unwrap_err();
    assert!(matches!(err, ImageError::BadBlobDigest(_)), "{err:?}");

    // Not JSON, not a layout, not a container image.
    fs::write(dir.join("index.json"), "{").unwrap();
    let err = open_oci_layout(&dir, None).unwrap_err();
    assert!(err.to_string().contains("invalid JSON"), "{err}");
    let helm = json_blob(
        &dir,
        MANIFEST_TYPES[0],
        &json!({"config": blob(&dir, "application/vnd.cncf.helm.config.v1+json", b"{}"), "layers": []}),
    );
    fs::write(
        dir.join("index.json"),
        json!({"manifests": [helm]}).to_string(),
    )
    .unwrap();
    let err = open_oci_layout(&dir, None).unwrap_err();
    assert!(err.to_string().contains("not a container image"), "{err}");
    fs::remove_file(dir.join("oci-layout")).unwrap();
    fs::remove_file(dir.join("index.json")).unwrap();
    let err = open_image_dir(&dir, None).unwrap_err();
    assert!(err.to_string().contains("neither an OCI layout"), "{err}");
}

/// A `docker save` archive of the old kind: layers named by id, the repeated empty layer a
/// symlink to its first copy, the config named by its digest.
fn docker_save(extra: &[Raw<'_>], layers: &[&str]) -> Vec<u8> {
    let base = base_layer();
    let empty = TarWriter::default().finish();
    let upper = upper_layer();
    let config = config_json();
    let config_name = format!("{}.json", &sha256(&config)[7..]);
    let manifest = serde_json::to_vec(&json!([{
        "Config": config_name,
        "RepoTags": ["app:latest"],
        "Layers": layers,
    }]))
    .unwrap();
    let mut tar = TarWriter::default();
    tar.add(file(b"aaa/layer.tar", &base), &[])
        .add(file(b"bbb/layer.tar", &empty), &[])
        .add(file(b"ccc/layer.tar", &upper), &[]);
    let mut link = Raw::new(b"ddd/layer.tar", b'2');
    link.link = b"../bbb/layer.tar";
    tar.add(link, &[]);
    tar.add(file(config_name.as_bytes(), &config), &[])
        .add(file(b"manifest.json", &manifest), &[])
        .add(file(b"repositories", b"{}"), &[]);
    for raw in extra {
        tar.add(*raw, &[]);
    }
    tar.finish()
}

const SAVED_LAYERS: &[&str] = &[
    "aaa/layer.tar",
    "bbb/layer.tar",
    "./ccc//layer.tar",
    "ddd/layer.tar",
];

#[test]
fn reads_a_docker_save_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let staging = tmp.path().join("staging");
    fs::create_dir(&staging).unwrap();
    let archive = gzip(&docker_save(&[], SAVED_LAYERS));
    unpack_image_archive(&archive[..], &staging, &budget()).unwrap();
    let image = open_image_dir(&staging, None).unwrap();
    assert_eq!(image.config, expected_config());
    let empty = TarWriter::default().finish();
    let blobs = [&base_layer(), &empty, &upper_layer(), &empty];
    let paths = [
        "aaa/layer.tar",
        "bbb/layer.tar",
        "ccc/layer.tar",
        "ddd/layer.tar",
    ];
    let expected: Vec<OciLayer> = blobs
        .iter()
        .zip(paths)
        .map(|(blob, path)| OciLayer {
            digest: sha256(blob),
            media_type: DOCKER_TAR.to_owned(),
            size: blob.len() as u64,
            path: PathBuf::from(path),
        })
        .collect();
    assert_eq!(image.layers, expected);
    let layers = unpack_layers(&staging, &image, tmp.path());
    // The empty layers add nothing to the stack.
    check_layers(&[layers[0].clone(), layers[2].clone()], tmp.path());
    assert_eq!(fs::read_dir(&layers[3]).unwrap().count(), 0);
}

#[test]
fn docker_save_layers_named_by_digest_keep_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("saved");
    fs::create_dir(&dir).unwrap();
    let layer = gzip(&upper_layer());
    let digest = sha256(&layer);
    let rel = format!("blobs/sha256/{}", &digest[7..]);
    fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    fs::write(dir.join(&rel), &layer).unwrap();
    let config = config_json();
    let config_rel = format!("blobs/sha256/{}", &sha256(&config)[7..]);
    fs::write(dir.join(&config_rel), &config).unwrap();
    let manifest = json!([{"Config": config_rel, "Layers": [rel]}]);
    fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
    let image = open_image_dir(&dir, None).unwrap();
    assert_eq!(
        image.layers,
        [OciLayer {
            digest: digest.clone(),
            media_type: DOCKER_TAR_GZIP.to_owned(),
            size: layer.len() as u64,
            path: PathBuf::from(&rel),
        }]
    );
    image_layer_path(&dir, &image.layers[0]).unwrap();
    // The digest in the path is checked, like an OCI blob's.
    fs::write(dir.join(&rel), gzip(&base_layer())).unwrap();
    let err = image_layer_path(&dir, &image.layers[0]).unwrap_err();
    assert!(matches!(err, ImageError::BlobMismatch { .. }), "{err:?}");
    // So is a config named by its digest.
    fs::write(dir.join(&config_rel), b"{}").unwrap();
    let err = open_image_dir(&dir, None).unwrap_err();
    assert!(matches!(err, ImageError::BlobMismatch { .. }), "{err:?}");

    // A save with an OCI layout inside is read as the layout.
    let layout = tmp.path().join("layout");
    oci_layout(&layout);
    fs::write(layout.join("manifest.json"), manifest.to_string()).unwrap();
    assert_eq!(
        open_image_dir(&layout, None).unwrap(),
        open_oci_layout(&layout, None).unwrap()
    );
}

#[test]
fn malformed_docker_saves_fail_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let unpack = |name: &str, archive: &[u8]| {
        let staging = tmp.path().join(name);
        fs::create_dir(&staging).unwrap();
        unpack_image_archive(archive, &staging, &budget()).map(|()| staging)
    };

    let staging = unpack("dotdot", &docker_save(&[], &["../../etc/passwd"])).unwrap();
    let err = open_image_dir(&staging, None).unwrap_err();
    assert_eq!(
        mayfly_api_chain(&err),
        "layer 1 of 1 of the image: unusable image: a layer path `../../etc/passwd` climbs out \
         of the root with `..`"
    );
    let staging = unpack("absolute", &docker_save(&[], &["/etc/passwd"])).unwrap();
    let err = open_image_dir(&staging, None).unwrap_err();
    assert!(
        matches!(err.cause(), ImageError::BadImage { .. }),
        "{err:?}"
    );

    let mut escape = Raw::new(b"eee/layer.tar", b'2');
    escape.link = b"../../../../../../etc/passwd";
    let mut absolute = Raw::new(b"fff/layer.tar", b'2');
    absolute.link = b"/etc/passwd";
    let archive = docker_save(&[escape, absolute], &["aaa/layer.tar", "eee/layer.tar"]);
    let staging = unpack("escape", &archive).unwrap();
    let err = open_image_dir(&staging, None).unwrap_err();
    assert_eq!(
        mayfly_api_chain(&err),
        "layer 2 of 2 of the image: unusable image: `eee/layer.tar`: it resolves to outside the \
         image directory"
    );
    fs::write(
        staging.join("manifest.json"),
        json!([{"Config": "aaa/layer.tar", "Layers": ["fff/layer.tar"]}]).to_string(),
    )
    .unwrap();
    let err = open_image_dir(&staging, None).unwrap_err();
    assert!(
        matches!(err.cause(), ImageError::BadImage { .. }),
        "{err:?}"
    );
    fs::write(
        staging.join("manifest.json"),
        json!([{"Config": "x", "Layers": []}, {"Config": "y", "Layers": []}]).to_string(),
    )
    .unwrap();
    let err = open_image_dir(&staging, None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "this `docker save` archive holds 2 images that nothing tells apart: name one by its \
         id (it has x, y)"
    );

    let not_an_image = TarWriter::default()
        .add(file(b"hello.txt", b"hi"), &[])
        .finish();
    let err = unpack("plain", &not_an_image).unwrap_err();
    assert!(matches!(err, ImageError::BadImage { .. }), "{err:?}");
}

/// A manifest descriptor named `tag` by the `ref.name` annotation, as umoci and skopeo write.
fn tagged(mut descriptor: serde_json::Value, tag: &str) -> serde_json::Value {
    descriptor["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
    descriptor
}

#[test]
fn a_layout_with_several_tags_is_read_by_tag() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("layout");
    let (manifest, _) = oci_layout(&dir);
    // `b`: only the base layer, as `umoci new` + one `repack` would leave it.
    let config = blob(&dir, CONFIG_TYPES[0], &config_json());
    let base = blob(
        &dir,
        "application/vnd.oci.image.layer.v1.tar+gzip",
        &gzip(&base_layer()),
    );
    let only_base = json_blob(
        &dir,
        MANIFEST_TYPES[0],
        &json!({"schemaVersion": 2, "config": config, "layers": [base]}),
    );
    let empty = json_blob(
        &dir,
        MANIFEST_TYPES[0],
        &json!({"schemaVersion": 2, "config": config, "layers": []}),
    );
    let index = json!({"schemaVersion": 2, "manifests": [
        tagged(empty, "a"),
        tagged(only_base.clone(), "b"),
        tagged(manifest.clone(), "c"),
    ]});
    fs::write(dir.join("index.json"), index.to_string()).unwrap();
    let c = open_image_dir(&dir, Some("c")).unwrap();
    assert_eq!((c.name.as_deref(), c.layers.len()), (Some("c"), 2));
    let b = open_image_dir(&dir, Some("b")).unwrap();
    assert_eq!((b.name.as_deref(), b.layers.len()), (Some("b"), 1));
    assert_eq!(open_image_dir(&dir, Some("a")).unwrap().layers.len(), 0);
    // By the manifest's digest.
    let by_id = open_image_dir(&dir, Some(&only_base["digest"].as_str().unwrap()[..19])).unwrap();
    assert_eq!(by_id, b);

    let err = open_image_dir(&dir, None).unwrap_err();
    assert!(matches!(err, ImageError::ImageChoice { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "this OCI layout holds 3 images: say which one to import (it has a, b, c)"
    );
    let err = open_image_dir(&dir, Some("d")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "this OCI layout has no image named `d` (it has a, b, c)"
    );

    // One tag left: no need to name it, and naming it works too.
    let index = json!({"schemaVersion": 2, "manifests": [tagged(manifest, "c")]});
    fs::write(dir.join("index.json"), index.to_string()).unwrap();
    assert_eq!(open_image_dir(&dir, None).unwrap(), c);
    assert_eq!(open_image_dir(&dir, Some("c")).unwrap(), c);
}

#[test]
fn a_missing_layer_names_its_digest_and_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("layout");
    let (_, layers) = oci_layout(&dir);
    let digest = layers[1]["digest"].as_str().unwrap();
    let rel = format!("blobs/sha256/{}", &digest[7..]);
    fs::remove_file(dir.join(&rel)).unwrap();
    let err = open_image_dir(&dir, None).unwrap_err();
    assert!(
        matches!(err.cause(), ImageError::Missing { path } if *path == Path::new(&rel)),
        "{err:?}"
    );
    let message = mayfly_api_chain(&err);
    assert_eq!(
        message,
        format!("layer 2 of 2 ({digest}) of the image: `{rel}` is missing from the image")
    );
    assert!(!message.contains(tmp.path().to_str().unwrap()), "{message}");
    // Truncated: the size says so before anything is read.
    fs::write(dir.join(&rel), b"short").unwrap();
    let err = open_image_dir(&dir, None).unwrap_err();
    assert!(
        matches!(err.cause(), ImageError::BlobMismatch { path, .. } if *path == Path::new(&rel)),
        "{err:?}"
    );
}

/// An error with its causes, as the daemon reports it.
fn mayfly_api_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(source) = cur {
        out.push_str(": ");
        out.push_str(&source.to_string());
        cur = source.source();
    }
    out
}

#[test]
fn a_save_of_several_images_is_read_by_tag() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("saved");
    fs::create_dir_all(dir.join("l1")).unwrap();
    fs::create_dir_all(dir.join("l2")).unwrap();
    fs::write(dir.join("l1/layer.tar"), base_layer()).unwrap();
    fs::write(dir.join("l2/layer.tar"), upper_layer()).unwrap();
    let config = config_json();
    let config_name = format!("{}.json", &sha256(&config)[7..]);
    fs::write(dir.join(&config_name), &config).unwrap();
    let manifest = json!([
        {"Config": config_name, "RepoTags": ["localhost/app:1", "app:stable"],
         "Layers": ["l1/layer.tar"]},
        {"Config": config_name, "RepoTags": ["localhost/app:2"],
         "Layers": ["l1/layer.tar", "l2/layer.tar"]},
    ]);
    fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
    let two = open_image_dir(&dir, Some("app:2")).unwrap();
    assert_eq!(
        (two.name.as_deref(), two.layers.len()),
        (Some("localhost/app:2"), 2)
    );
    let one = open_image_dir(&dir, Some("stable")).unwrap();
    assert_eq!(
        (one.name.as_deref(), one.layers.len()),
        (Some("localhost/app:1"), 1)
    );
    assert_eq!(open_image_dir(&dir, Some("localhost/app:1")).unwrap(), one);
    let err = open_image_dir(&dir, None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "this `docker save` archive holds 2 images: say which one to import (it has \
         localhost/app:1 (also app:stable), localhost/app:2)"
    );
    let err = open_image_dir(&dir, Some("app")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("this `docker save` archive has no image named `app`"),
        "{err}"
    );
    // A layer file the manifest names but the archive lacks.
    fs::remove_file(dir.join("l2/layer.tar")).unwrap();
    let err = open_image_dir(&dir, Some("app:2")).unwrap_err();
    assert_eq!(
        mayfly_api_chain(&err),
        "layer 2 of 2 of the image: `l2/layer.tar` is missing from the image"
    );
}

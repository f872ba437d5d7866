//! The import limits, through the public unpack functions: each one refuses at the first byte
//! past it, names itself, and leaves no more written than it allowed.

use std::fs;
use std::io::Write as _;
use std::path::Path;

use crate::fixtures::{Raw, TarWriter};
use crate::{
    ImageError, ImportBudget, ImportLimits, Limit, MinFree, NoProgress, TreeStats, tree_stats,
    unpack_archive, unpack_layer_archive,
};

/// One zstd frame of `len` zeros.
fn zero_frame(len: usize) -> Vec<u8> {
    let mut enc = zstd::Encoder::new(Vec::new(), 19).unwrap();
    enc.write_all(&vec![0; len]).unwrap();
    enc.finish().unwrap()
}

/// A header for a regular file `name` of `size` bytes.
fn file_header(name: &str, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_path(name).unwrap();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(1_600_000_000);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    header
}

/// A compression bomb: a .tar.zst of one file `zeros` of `frames` × 8 MiB zeros, made of
/// concatenated zstd frames (a decoder reads them as one stream), so that building it costs
/// one small compression whatever its size.
fn bomb(frames: u64) -> Vec<u8> {
    const FRAME: usize = 8 << 20;
    let header = file_header("zeros", frames * FRAME as u64);
    let mut out = zstd::encode_all(header.as_bytes().as_slice(), 19).unwrap();
    let zeros = zero_frame(FRAME);
    for _ in 0..frames {
        out.extend_from_slice(&zeros);
    }
    // The content is a whole number of blocks: no padding, just the end-of-archive marker.
    out.extend_from_slice(&zero_frame(1024));
    out
}

fn unpack_with(
    archive: &[u8],
    limits: ImportLimits,
) -> (tempfile::TempDir, Result<TreeStats, ImageError>) {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("dest");
    fs::create_dir(&dest).unwrap();
    let budget = ImportBudget::new(limits);
    let result = unpack_archive(archive, &dest, &NoProgress, &budget);
    (tmp, result)
}

fn refused_by(result: Result<TreeStats, ImageError>, want: Limit) -> String {
    match result {
        Err(err @ ImageError::Limit { limit, .. }) if limit == want => err.to_string(),
        other => panic!("expected the {want:?} limit, got {other:?}"),
    }
}

fn files(n: usize) -> Vec<u8> {
    let names: Vec<String> = (0..n).map(|i| format!("f{i}")).collect();
    let mut tar = TarWriter::default();
    for name in &names {
        let mut raw = Raw::new(name.as_bytes(), b'0');
        raw.data = b"x";
        tar.add(raw, &[]);
    }
    tar.finish()
}

fn content_bytes(dest: &Path) -> u64 {
    tree_stats(dest).unwrap().bytes
}

#[test]
fn a_compression_bomb_is_refused_before_it_is_written() {
    let archive = bomb(64);
    assert!(archive.len() < 64 << 10, "{} bytes", archive.len());
    let limits = ImportLimits {
        ratio_floor: 4 << 20,
        ..ImportLimits::default()
    };
    let (tmp, result) = unpack_with(&archive, limits);
    let message = refused_by(result, Limit::Ratio);
    assert!(
        message.starts_with("the archive expands more than 200 times ("),
        "{message}"
    );
    assert!(message.contains("a compression bomb?"), "{message}");
    // The file was cut short at the floor (plus one read buffer), not written whole.
    let written = content_bytes(&tmp.path().join("dest"));
    assert!(written <= 5 << 20, "{written} bytes written");

    // Without the ratio check, the total limit stops it just as early.
    let limits = ImportLimits {
        max_ratio: 0,
        max_bytes: 3 << 20,
        ..ImportLimits::default()
    };
    let (tmp, result) = unpack_with(&bomb(2), limits);
    let message = refused_by(result, Limit::Bytes);
    assert!(message.starts_with("the archive unpacks to more than 3 MiB (--import-max-bytes); if this is a real template, raise it with `mayfly daemon --import-max-bytes SIZE`"), "{message}");
    assert!(content_bytes(&tmp.path().join("dest")) <= 3 << 20);

    // A small archive that compresses as well is fine below the floor.
    let (_tmp, result) = unpack_with(&bomb(1), ImportLimits::default());
    assert_eq!(result.unwrap().bytes, 8 << 20);
}

#[test]
fn a_file_larger_than_allowed_is_refused_at_its_header() {
    // Only the header: a file that claims 10 GiB. Refused before its (absent) content is read,
    // where a truncated archive would otherwise be reported.
    let header = file_header("huge", 10 << 30);
    let (tmp, result) = unpack_with(header.as_bytes(), ImportLimits::default());
    let message = refused_by(result, Limit::FileBytes);
    assert!(
        message.starts_with(
            "`huge` is 10 GiB, more than the 8 GiB a file may have (--import-max-file-size)"
        ),
        "{message}"
    );
    assert!(!tmp.path().join("dest/huge").exists());
    let limits = ImportLimits {
        max_bytes: 1 << 30,
        max_file_bytes: 20 << 30,
        ..ImportLimits::default()
    };
    let (_tmp, result) = unpack_with(header.as_bytes(), limits);
    refused_by(result, Limit::Bytes);
}

#[test]
fn entries_are_counted_and_limited() {
    let limits = ImportLimits {
        max_entries: 10,
        ..ImportLimits::default()
    };
    let (_tmp, result) = unpack_with(&files(10), limits);
    assert_eq!(result.unwrap().entries, 10);
    let (_tmp, result) = unpack_with(&files(11), limits);
    let message = refused_by(result, Limit::Entries);
    assert!(
        message.starts_with("the archive has more than 10 entries (--import-max-entries)"),
        "{message}"
    );
}

#[test]
fn long_and_deep_paths_are_refused() {
    let limits = ImportLimits {
        max_path: 20,
        max_depth: 3,
        ..ImportLimits::default()
    };
    let ok = TarWriter::default()
        .add(Raw::new(b"./a/b/c", b'5'), &[])
        .add(Raw::new(b"twenty-bytes-name-xy", b'0'), &[])
        .finish();
    let (_tmp, result) = unpack_with(&ok, limits);
    result.unwrap();
    let deep = TarWriter::default()
        .add(Raw::new(b"a/b/c/d", b'0'), &[])
        .finish();
    let (_tmp, result) = unpack_with(&deep, limits);
    let message = refused_by(result, Limit::Depth);
    assert!(
        message
            .starts_with("entry `a/b/c/d`: it is 4 levels deep, more than 3 (--import-max-depth)"),
        "{message}"
    );
    // A PAX path counts, not the header's.
    let long = "l".repeat(21);
    let archive = TarWriter::default()
        .add(Raw::new(b"short", b'0'), &[("path", long.as_bytes())])
        .finish();
    let (tmp, result) = unpack_with(&archive, limits);
    let message = refused_by(result, Limit::Path);
    assert!(
        message.starts_with(&format!(
            "entry `{long}`: its path is 21 bytes long, more than 20 (--import-max-path)"
        )),
        "{message}"
    );
    assert_eq!(fs::read_dir(tmp.path().join("dest")).unwrap().count(), 0);
}

#[test]
fn layers_of_one_image_share_a_budget() {
    let budget = ImportBudget::new(ImportLimits {
        max_entries: 15,
        ..ImportLimits::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    for (i, n) in [10, 5].into_iter().enumerate() {
        let dest = tmp.path().join(format!("layer-{i}"));
        fs::create_dir(&dest).unwrap();
        unpack_layer_archive(&files(n)[..], &dest, &NoProgress, &budget).unwrap();
    }
    let dest = tmp.path().join("layer-2");
    fs::create_dir(&dest).unwrap();
    let result = unpack_layer_archive(&files(1)[..], &dest, &NoProgress, &budget);
    refused_by(result, Limit::Entries);
}

#[test]
fn the_archive_itself_is_limited() {
    let archive = files(20);
    let limits = ImportLimits {
        max_input_bytes: 4096,
        ..ImportLimits::default()
    };
    let (_tmp, result) = unpack_with(&archive, limits);
    let message = refused_by(result, Limit::Input);
    assert!(
        message.starts_with("the archive is larger than 4 KiB (--import-max-upload)"),
        "{message}"
    );
    // Data after the end-of-archive marker counts too: the stream is read to its end.
    let mut padded = files(1);
    padded.extend_from_slice(&vec![0; 10_000]);
    let (_tmp, result) = unpack_with(&padded, limits);
    refused_by(result, Limit::Input);
}

#[test]
fn headers_cannot_take_unbounded_memory() {
    // A PAX record of 2 MiB: the tar reader would hold it in memory whole.
    let huge = vec![b'c'; 2 << 20];
    let archive = TarWriter::default()
        .add(Raw::new(b"f", b'0'), &[("comment", &huge)])
        .finish();
    let (_tmp, result) = unpack_with(&archive, ImportLimits::default());
    match result {
        Err(err @ ImageError::BadArchive { .. }) => {
            let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
            assert!(
                chain.contains("headers (long names, PAX records) take more than 1 MiB"),
                "{chain}"
            );
        }
        other => panic!("{other:?}"),
    }
    // A directory's data, which nobody reads, is not a header.
    let mut dir = Raw::new(b"d/", b'5');
    let data = vec![7; 3 << 20];
    dir.data = &data;
    let archive = TarWriter::default().add(dir, &[]).finish();
    let (_tmp, result) = unpack_with(&archive, ImportLimits::default());
    result.unwrap();
}

#[test]
fn the_free_space_reserve_is_kept() {
    let limits = ImportLimits {
        min_free: "100%".parse().unwrap(),
        ..ImportLimits::default()
    };
    let (tmp, result) = unpack_with(&files(1), limits);
    let message = refused_by(result, Limit::FreeSpace);
    assert!(
        message.contains("free on the state filesystem")
            && message.contains("(--import-min-free); free space on it first"),
        "{message}"
    );
    assert_eq!(fs::read_dir(tmp.path().join("dest")).unwrap().count(), 0);
    let limits = ImportLimits {
        min_free: MinFree {
            bytes: 0,
            percent: 0,
        },
        ..ImportLimits::default()
    };
    let (_tmp, result) = unpack_with(&files(1), limits);
    result.unwrap();
}

#[test]
fn a_sparse_file_is_held_to_the_ratio_too() {
    // A plain tar whose one GNU sparse file is 1 GiB of hole: 1.5 KiB of archive that the tar
    // reader alone (no decompressor) would expand into 1 GiB of zeros on disk.
    let mut header = tar::Header::new_gnu();
    header.set_path("holes").unwrap();
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(1_600_000_000);
    header.set_entry_type(tar::EntryType::GNUSparse);
    header.set_size(0);
    {
        let gnu = header.as_gnu_mut().unwrap();
        gnu.set_real_size(1 << 30);
        gnu.sparse[0].set_offset(1 << 30);
        gnu.sparse[0].set_length(0);
    }
    header.set_cksum();
    let mut archive = header.as_bytes().to_vec();
    archive.extend_from_slice(&[0; 1024]);
    let limits = ImportLimits {
        ratio_floor: 4 << 20,
        ..ImportLimits::default()
    };
    let (tmp, result) = unpack_with(&archive, limits);
    let message = refused_by(result, Limit::Ratio);
    assert!(message.contains("expands more than 200 times"), "{message}");
    assert!(content_bytes(&tmp.path().join("dest")) <= 5 << 20);
}

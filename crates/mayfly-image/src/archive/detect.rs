//! Telling the compression of an archive from its first bytes, and noticing where the stream
//! ends.

use std::io::{self, Read};
use std::rc::Rc;

use super::meter::{CountIn, CountOut, Meter};
use crate::ImageError;

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0];
const BZIP2_MAGIC: &[u8] = b"BZh";

/// Picks the decoder from the first bytes of the stream, and puts `meter` on both sides of it.
pub(super) fn decompress<'a, R: Read + 'a>(
    input: R,
    meter: &Rc<Meter>,
) -> Result<Box<dyn Read + 'a>, ImageError> {
    let mut input = CountIn {
        inner: input,
        meter: meter.clone(),
    };
    let mut magic = [0; 6];
    let mut len = 0;
    while len < magic.len() {
        match input.read(&mut magic[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(ImageError::bad_archive(err)),
        }
    }
    let head = &magic[..len];
    let whole = io::Cursor::new(magic).take(len as u64).chain(input);
    let decoded: Box<dyn Read + 'a> = if head.starts_with(GZIP_MAGIC) {
        meter.set_compressed();
        Box::new(flate2::read::MultiGzDecoder::new(whole))
    } else if head.starts_with(ZSTD_MAGIC) {
        meter.set_compressed();
        Box::new(zstd::Decoder::new(whole).map_err(ImageError::bad_archive)?)
    } else if head.starts_with(XZ_MAGIC) || head.starts_with(BZIP2_MAGIC) {
        return Err(ImageError::bad_archive(io::Error::new(
            io::ErrorKind::Unsupported,
            "only plain, gzip and zstd tarballs are supported",
        )));
    } else {
        Box::new(whole)
    };
    Ok(Box::new(CountOut {
        inner: decoded,
        meter: meter.clone(),
    }))
}

/// Remembers whether the decompressed stream ran out, as opposed to the tar reader stopping at
/// an end-of-archive marker.
pub(super) struct EndTracker<R> {
    pub(super) inner: R,
    pub(super) reached_end: bool,
}

impl<R: Read> Read for EndTracker<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.reached_end = true;
        }
        Ok(n)
    }
}

//! Counting an archive's stream as it is read: the bytes that come in (compressed, as uploaded),
//! the bytes the decompressor makes of them, and the bytes the tar reader consumes on its own
//! between two entries (headers, long names, PAX records, which it holds in memory).
//!
//! The readers cannot return our error through the tar and decompression crates, which only
//! carry `io::Error`s; so the first limit reached is kept in the [`Meter`] and the unpacker
//! reports it in place of whatever error came out the other end.

use std::cell::{Cell, RefCell};
use std::io::{self, Read};
use std::rc::Rc;

use mayfly_api::size::format_size;

use crate::{ImageError, ImportLimits, Limit};

/// The most the tar reader may consume between two entries: one header and its extensions (a
/// GNU long name and link, PAX records with paths and xattrs). Real archives use a few KiB; the
/// tar crate reads extensions whole into memory, so without this bound one PAX header could
/// claim gigabytes. Not a flag: nothing legitimate comes near it.
pub(super) const MAX_HEADERS: u64 = 1 << 20;

/// What the streams of one archive have carried, shared by its readers and the unpacker.
#[derive(Debug)]
pub(super) struct Meter {
    limits: ImportLimits,
    /// Bytes read from the archive as given (compressed or not).
    input: Cell<u64>,
    /// Bytes out of the decompressor (the tar stream).
    output: Cell<u64>,
    /// Bytes of file content written (more than the stream carried for a sparse file).
    content: Cell<u64>,
    /// Whether a decompressor sits between the two.
    compressed: Cell<bool>,
    /// Bytes of tar stream read since the last entry was handed over, while the tar reader
    /// looks for the next one; `None` while an entry is being unpacked.
    headers: Cell<Option<u64>>,
    /// The first limit reached.
    tripped: RefCell<Option<ImageError>>,
}

impl Meter {
    pub(super) fn new(limits: ImportLimits) -> Rc<Self> {
        Rc::new(Self {
            limits,
            input: Cell::new(0),
            output: Cell::new(0),
            content: Cell::new(0),
            compressed: Cell::new(false),
            headers: Cell::new(Some(0)),
            tripped: RefCell::new(None),
        })
    }

    pub(super) fn set_compressed(&self) {
        self.compressed.set(true);
    }

    /// The tar reader handed over an entry: its content is ours to read.
    pub(super) fn entry_started(&self) {
        self.headers.set(None);
    }

    /// The entry is done (its content read to the end): what follows is the next header.
    pub(super) fn entry_done(&self) {
        self.headers.set(Some(0));
    }

    /// The limit reached, if one was.
    pub(super) fn take_tripped(&self) -> Option<ImageError> {
        self.tripped.borrow_mut().take()
    }

    fn trip(&self, limit: Option<Limit>, what: String) -> io::Error {
        let err = match limit {
            Some(limit) => ImageError::limit(limit, what.clone()),
            None => {
                ImageError::bad_archive(io::Error::new(io::ErrorKind::InvalidData, what.clone()))
            }
        };
        self.tripped.borrow_mut().get_or_insert(err);
        io::Error::other(what)
    }

    fn tripped(&self) -> Option<io::Error> {
        self.tripped
            .borrow()
            .as_ref()
            .map(|e| io::Error::other(e.to_string()))
    }

    fn count_input(&self, n: u64) -> io::Result<()> {
        let input = self.input.get().saturating_add(n);
        self.input.set(input);
        if input > self.limits.max_input_bytes {
            return Err(self.trip(
                Some(Limit::Input),
                format!(
                    "the archive is larger than {}",
                    format_size(self.limits.max_input_bytes)
                ),
            ));
        }
        Ok(())
    }

    fn count_output(&self, n: u64) -> io::Result<()> {
        let output = self.output.get().saturating_add(n);
        self.output.set(output);
        if let Some(headers) = self.headers.get() {
            let headers = headers.saturating_add(n);
            self.headers.set(Some(headers));
            if headers > MAX_HEADERS {
                return Err(self.trip(
                    None,
                    format!(
                        "an entry's headers (long names, PAX records) take more than {}: no real archive has that",
                        format_size(MAX_HEADERS)
                    ),
                ));
            }
        }
        if self.compressed.get()
            && let Some(what) = self.too_expanded(output)
        {
            return Err(self.trip(Some(Limit::Ratio), what));
        }
        Ok(())
    }

    /// Counts `n` bytes of file content about to be written. The tar reader makes the holes
    /// of a sparse file out of nothing, so content is held to the ratio too, compressed or
    /// not.
    pub(super) fn count_content(&self, n: u64) -> Result<(), ImageError> {
        let content = self.content.get().saturating_add(n);
        self.content.set(content);
        match self.too_expanded(content) {
            Some(what) => Err(ImageError::limit(Limit::Ratio, what)),
            None => Ok(()),
        }
    }

    /// Why `bytes` made from the input so far is too much, if it is.
    fn too_expanded(&self, bytes: u64) -> Option<String> {
        let ratio = self.limits.max_ratio;
        let input = self.input.get();
        (ratio > 0 && bytes > self.limits.ratio_floor && bytes > input.saturating_mul(ratio)).then(
            || {
                format!(
                    "the archive expands more than {ratio} times ({} from {} so far): a compression bomb?",
                    format_size(bytes),
                    format_size(input)
                )
            },
        )
    }
}

/// Counts the bytes read from the archive as given.
pub(super) struct CountIn<R> {
    pub(super) inner: R,
    pub(super) meter: Rc<Meter>,
}

impl<R: Read> Read for CountIn<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(err) = self.meter.tripped() {
            return Err(err);
        }
        let n = self.inner.read(buf)?;
        self.meter.count_input(n as u64)?;
        Ok(n)
    }
}

/// Counts the bytes of the tar stream, after decompression.
pub(super) struct CountOut<R> {
    pub(super) inner: R,
    pub(super) meter: Rc<Meter>,
}

impl<R: Read> Read for CountOut<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(err) = self.meter.tripped() {
            return Err(err);
        }
        let n = self.inner.read(buf)?;
        self.meter.count_output(n as u64)?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ImportLimits {
        ImportLimits {
            max_ratio: 10,
            ratio_floor: 1000,
            max_input_bytes: 5000,
            ..ImportLimits::default()
        }
    }

    #[test]
    fn the_ratio_counts_only_compressed_streams_past_the_floor() {
        let meter = Meter::new(limits());
        meter.entry_started();
        meter.count_input(10).unwrap();
        // Plain: any ratio.
        meter.count_output(50_000).unwrap();
        let meter = Meter::new(limits());
        meter.entry_started();
        meter.set_compressed();
        meter.count_input(10).unwrap();
        // 900:10 is far above 10:1 but below the floor.
        meter.count_output(900).unwrap();
        let err = meter.count_output(200).unwrap_err();
        assert!(
            err.to_string().contains("expands more than 10 times"),
            "{err}"
        );
        let tripped = meter.take_tripped().unwrap();
        assert!(
            matches!(
                tripped,
                ImageError::Limit {
                    limit: Limit::Ratio,
                    ..
                }
            ),
            "{tripped}"
        );
        assert!(
            tripped.to_string().ends_with(
                "(--import-max-ratio); if this is a real template, raise it with `mayfly daemon --import-max-ratio N` (0: no limit)"
            ),
            "{tripped}"
        );
    }

    #[test]
    fn input_and_headers_are_bounded() {
        let meter = Meter::new(limits());
        meter.count_input(5000).unwrap();
        assert!(meter.count_input(1).is_err());
        assert!(matches!(
            meter.take_tripped(),
            Some(ImageError::Limit {
                limit: Limit::Input,
                ..
            })
        ));

        let meter = Meter::new(limits());
        meter.count_output(MAX_HEADERS).unwrap();
        meter.entry_started();
        // Content is not a header.
        meter.count_output(10 * MAX_HEADERS).unwrap();
        meter.entry_done();
        meter.count_output(MAX_HEADERS).unwrap();
        assert!(meter.count_output(1).is_err());
        assert!(matches!(
            meter.take_tripped(),
            Some(ImageError::BadArchive { .. })
        ));
    }

    #[test]
    fn readers_keep_failing_once_tripped() {
        let meter = Meter::new(limits());
        let mut reader = CountIn {
            inner: &[7u8; 6000][..],
            meter: meter.clone(),
        };
        let mut sink = Vec::new();
        assert!(reader.read_to_end(&mut sink).is_err());
        assert!(reader.read(&mut [0; 10]).is_err());
        assert!(sink.len() <= 5000 + 6000);
        assert!(meter.take_tripped().is_some());
    }
}

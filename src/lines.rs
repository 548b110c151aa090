//! Splits a byte stream into lines, with a bound on line length.
//!
//! Docker writes one JSON event per line. Lines may arrive several to a read
//! or split over many reads; `\r\n` endings and blank lines are tolerated.

use std::io::{self, Read};

/// What [`LineReader::next_line`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line<'a> {
    /// A complete, non-blank line without its line ending.
    Complete(&'a [u8]),
    /// A line longer than the limit ended; its bytes were discarded.
    TooLong { length: usize },
    /// The stream ended after this text without a final newline.
    Unterminated(&'a [u8]),
}

/// Reads lines of at most `max_line` bytes from `inner`.
///
/// Memory stays within about `max_line` plus one read, whatever the input.
#[derive(Debug)]
pub(crate) struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    /// Start of the unread data in `buf`.
    start: usize,
    /// End of the data in `buf`.
    end: usize,
    /// How far from `start` the data is known to hold no newline.
    scanned: usize,
    max_line: usize,
    /// Bytes of an overlong line dropped so far, while waiting for its end.
    discarding: Option<usize>,
    eof: bool,
}

/// How much is read at once.
const READ_SIZE: usize = 8 * 1024;

/// How much the first read asks for, before the stream has shown any traffic.
const FIRST_READ_SIZE: usize = 1024;

impl<R: Read> LineReader<R> {
    pub(crate) fn new(inner: R, max_line: usize) -> Self {
        LineReader {
            inner,
            buf: Vec::new(),
            start: 0,
            end: 0,
            scanned: 0,
            max_line: max_line.max(1),
            discarding: None,
            eof: false,
        }
    }

    pub(crate) fn max_line(&self) -> usize {
        self.max_line
    }

    /// The next line, or `None` at the end of the stream. Blocks until a line
    /// is complete or the stream ends.
    pub(crate) fn next_line(&mut self) -> io::Result<Option<Line<'_>>> {
        loop {
            let pending = &self.buf[self.start + self.scanned..self.end];
            if let Some(offset) = memchr::memchr(b'\n', pending) {
                let line_end = self.start + self.scanned + offset;
                let line_start = self.start;
                self.start = line_end + 1;
                self.scanned = 0;
                if let Some(dropped) = self.discarding.take() {
                    return Ok(Some(Line::TooLong {
                        length: dropped + (line_end - line_start),
                    }));
                }
                let (from, to) = trimmed(&self.buf, line_start, line_end);
                if from == to {
                    continue;
                }
                if to - from > self.max_line {
                    return Ok(Some(Line::TooLong { length: to - from }));
                }
                return Ok(Some(Line::Complete(&self.buf[from..to])));
            }
            self.scanned = self.end - self.start;

            if self.scanned > self.max_line {
                // No newline within the limit: drop what is buffered and keep
                // dropping until the line ends.
                *self.discarding.get_or_insert(0) += self.scanned;
                self.start = self.end;
                self.scanned = 0;
            }

            if self.eof {
                let length = self.end - self.start;
                let (from, to) = trimmed(&self.buf, self.start, self.end);
                self.start = self.end;
                self.scanned = 0;
                if let Some(dropped) = self.discarding.take() {
                    return Ok(Some(Line::TooLong {
                        length: dropped + length,
                    }));
                }
                if from < to {
                    return Ok(Some(Line::Unterminated(&self.buf[from..to])));
                }
                return Ok(None);
            }
            self.fill()?;
        }
    }

    /// Reads more into the buffer, moving unread bytes to its front first.
    /// The first read is small: a stream that stays idle keeps a small buffer.
    fn fill(&mut self) -> io::Result<()> {
        let want = if self.buf.is_empty() {
            FIRST_READ_SIZE
        } else {
            READ_SIZE
        };
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 && self.buf.len() - self.end < want {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < want {
            self.buf.resize(self.end + want, 0);
        }
        let amount = loop {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(amount) => break amount,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            }
        };
        if amount == 0 {
            self.eof = true;
        }
        self.end += amount;
        Ok(())
    }
}

/// The range of `buf[start..end]` without surrounding ASCII whitespace, which
/// takes a `\r` before the newline with it.
fn trimmed(buf: &[u8], mut start: usize, mut end: usize) -> (usize, usize) {
    while start < end && buf[start].is_ascii_whitespace() {
        start += 1;
    }
    while end > start && buf[end - 1].is_ascii_whitespace() {
        end -= 1;
    }
    (start, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out the input in the given pieces, one per read.
    struct Pieces(Vec<Vec<u8>>);

    impl Read for Pieces {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Ok(0);
            }
            let piece = &mut self.0[0];
            let n = piece.len().min(out.len());
            out[..n].copy_from_slice(&piece[..n]);
            piece.drain(..n);
            if piece.is_empty() {
                self.0.remove(0);
            }
            Ok(n)
        }
    }

    fn collect(pieces: &[&[u8]], max_line: usize) -> Vec<String> {
        let mut reader = LineReader::new(
            Pieces(
                pieces
                    .iter()
                    .filter(|p| !p.is_empty())
                    .map(|p| p.to_vec())
                    .collect(),
            ),
            max_line,
        );
        let mut out = Vec::new();
        while let Some(line) = reader.next_line().unwrap() {
            out.push(match line {
                Line::Complete(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                Line::TooLong { length } => format!("too long {length}"),
                Line::Unterminated(bytes) => format!("unterminated {}", bytes.len()),
            });
        }
        out
    }

    #[test]
    fn several_lines_in_one_read() {
        assert_eq!(collect(&[b"{a}\n{b}\n"], 100), ["{a}", "{b}"]);
    }

    #[test]
    fn one_line_over_several_reads() {
        assert_eq!(collect(&[b"{a", b"bc", b"d}", b"\n"], 100), ["{abcd}"]);
    }

    #[test]
    fn crlf_and_blank_lines() {
        assert_eq!(
            collect(&[b"{a}\r", b"\n\r\n\n  \n{b}\r\n"], 100),
            ["{a}", "{b}"]
        );
    }

    #[test]
    fn every_split_point_gives_the_same_lines() {
        let input = b"{\"x\":1}\r\n\r\n{\"y\":22}\n{\"z\":333}\r\n";
        for cut in 0..=input.len() {
            let (a, b) = input.split_at(cut);
            assert_eq!(
                collect(&[a, b], 100),
                ["{\"x\":1}", "{\"y\":22}", "{\"z\":333}"],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn overlong_line_is_reported_and_skipped() {
        let long = vec![b'x'; 50];
        let mut input = long.clone();
        input.extend_from_slice(b"\n{ok}\n");
        assert_eq!(collect(&[&input], 10), ["too long 50", "{ok}"]);
        // The same, arriving in small pieces so the limit trips mid-line.
        let pieces: Vec<&[u8]> = input.chunks(3).collect();
        assert_eq!(collect(&pieces, 10), ["too long 50", "{ok}"]);
    }

    #[test]
    fn endless_line_uses_bounded_memory() {
        struct Endless;
        impl Read for Endless {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                out.fill(b'a');
                Ok(out.len())
            }
        }
        let mut reader = LineReader::new(Endless.take(8 * 1024 * 1024), 1024);
        assert_eq!(
            reader.next_line().unwrap(),
            Some(Line::TooLong {
                length: 8 * 1024 * 1024
            })
        );
        assert!(
            reader.buf.len() <= 1024 + 2 * READ_SIZE,
            "{}",
            reader.buf.len()
        );
        assert_eq!(reader.next_line().unwrap(), None);
    }

    #[test]
    fn text_after_the_last_newline_is_unterminated() {
        assert_eq!(collect(&[b"{a}\n{\"half"], 100), ["{a}", "unterminated 6"]);
        assert_eq!(collect(&[b"{a}\n  \r\n"], 100), ["{a}"]);
    }
}

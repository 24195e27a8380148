//! Framing: messages to bytes (plus fds) and back, with no I/O.
//!
//! # Wire format (postcard codec)
//!
//! ```text
//! +----------------+-----------+---------------------------+
//! | len: u32 LE    | n_fds: u8 | postcard payload          |
//! +----------------+-----------+---------------------------+
//!   len counts n_fds and the payload, so it is never 0.
//! ```
//!
//! The frame's `n_fds` descriptors travel as `SCM_RIGHTS` attached to the
//! `sendmsg` call that writes the frame's first byte; that call writes only
//! this frame (never the tail of an earlier one, never a later one).
//!
//! # Design note: which frame do received fds belong to?
//!
//! We use a stream socket (frames of any size, partial writes for
//! backpressure, a codec any language can speak), where the kernel keeps no
//! message boundaries. What it does keep: fds attached to an skb are delivered by
//! the `recvmsg` that reads that skb's first byte, and that `recvmsg` stops right
//! after that skb (Linux never merges two fd-carrying skbs into one read). So a
//! read that returns fds *ends inside the frame that owns them*. We tag each
//! batch of received fds with the stream offset where that read ended, and when
//! a frame spanning `(start, end]` completes, the batches whose tag falls in it
//! are exactly its fds. A mismatch with `n_fds` is a typed error for that frame,
//! the fds that came are closed, and the stream stays in step. Partial reads,
//! frames split across reads and several frames per read need no special case.
//!
//! # Design note: a peer that sends more fds than it declares
//!
//! Waiting for a frame to complete before judging its fds would let one frame
//! fill our whole fd table: a hostile peer declares 0 fds, then sends the
//! body one byte per `sendmsg` with 253 fds attached to each, and every batch
//! would be kept until the last byte came (a child did exactly this and held
//! 19,986 of its parent's 20,000 fds). So a batch is judged the moment it is
//! read: the frame it belongs to is the one holding the read's last byte, and
//! that frame may hold at most the fds its header declared (at most
//! [`MAX_FDS`] while its header is still incomplete). Any surplus is closed at
//! once and only counted, and the frame ends in [`Error::FdMismatch`]. As a
//! read happens only when no complete frame is buffered, a channel's decoder
//! never holds more than `MAX_FDS` received fds, whatever the peer claims.
//!
//! `SOCK_SEQPACKET` would bind fds to packets for free, but caps a frame at the
//! socket buffer size, cannot do partial writes, and most languages' stdlib
//! line readers do not speak it; the offset rule above gives the same guarantee.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::Codec;
use crate::error::{Error, Result};

/// Bytes before a postcard frame's payload.
pub(crate) const HEADER_LEN: usize = 5;
/// The kernel's `SCM_MAX_FD`: most fds one `sendmsg` may carry.
pub(crate) const MAX_FDS: usize = 253;
/// The smallest free space a read is offered.
const MIN_READ: usize = 16 * 1024;
/// An idle read buffer larger than this is released.
const SHRINK_ABOVE: usize = 1 << 20;

/// Appends one encoded frame to `out`; returns the fds to attach to it.
/// On error `out` is left as it was.
pub(crate) fn encode<T: Serialize>(
    codec: Codec,
    max: u32,
    msg: &T,
    out: &mut Vec<u8>,
) -> Result<Vec<OwnedFd>> {
    let before = out.len();
    let (result, fds) = crate::fd::collect_outgoing(|| -> Result<()> {
        match codec {
            Codec::Postcard => {
                out.extend_from_slice(&[0; HEADER_LEN]);
                postcard::to_io(msg, &mut *out).map_err(|e| Error::Encode(Box::new(e)))?;
                Ok(())
            }
            Codec::JsonLines => {
                serde_json::to_writer(&mut *out, msg).map_err(|e| Error::Encode(Box::new(e)))?;
                out.push(b'\n');
                Ok(())
            }
        }
    });
    let checked = result.and_then(|()| {
        if fds.len() > MAX_FDS {
            return Err(Error::TooManyFds {
                count: fds.len(),
                max: MAX_FDS,
            });
        }
        if codec == Codec::JsonLines && !fds.is_empty() {
            return Err(Error::FdsNotSupported);
        }
        let len = match codec {
            Codec::Postcard => out.len() - before - 4,
            Codec::JsonLines => out.len() - before - 1,
        };
        if len > max as usize {
            return Err(Error::FrameTooLarge {
                len: len as u64,
                max,
            });
        }
        if codec == Codec::Postcard {
            let len = len as u32; // <= max, a u32
            out[before..before + 4].copy_from_slice(&len.to_le_bytes());
            out[before + 4] = fds.len() as u8; // <= MAX_FDS
        }
        Ok(())
    });
    match checked {
        Ok(()) => Ok(fds),
        Err(e) => {
            out.truncate(before);
            Err(e) // dropping `fds` closes the duplicates
        }
    }
}

/// Decodes one payload with its fds.
pub(crate) fn decode<T: DeserializeOwned>(
    codec: Codec,
    payload: &[u8],
    fds: Vec<OwnedFd>,
) -> Result<T> {
    let n_fds = fds.len();
    let len = payload.len();
    let (result, unclaimed) = crate::fd::with_incoming(fds, || match codec {
        Codec::Postcard => match postcard::take_from_bytes::<T>(payload) {
            Ok((msg, [])) => Ok(msg),
            Ok((_, rest)) => Err(Error::Decode {
                len,
                source: format!("{} trailing bytes after the message", rest.len()).into(),
            }),
            Err(postcard::Error::DeserializeUnexpectedEnd) => Err(Error::Truncated {
                len,
                source: Box::new(postcard::Error::DeserializeUnexpectedEnd),
            }),
            Err(e) => Err(Error::Decode {
                len,
                source: Box::new(e),
            }),
        },
        Codec::JsonLines => serde_json::from_slice::<T>(payload).map_err(|e| {
            if e.is_eof() {
                Error::Truncated {
                    len,
                    source: Box::new(e),
                }
            } else {
                Error::Decode {
                    len,
                    source: Box::new(e),
                }
            }
        }),
    });
    let msg = result?;
    if unclaimed > 0 {
        return Err(Error::Decode {
            len,
            source: format!(
                "the frame carried {n_fds} fds but the message used {}",
                n_fds - unclaimed
            )
            .into(),
        });
    }
    Ok(msg)
}

/// A batch of fds from one read, tagged with the stream offset where that read ended.
#[derive(Debug)]
struct Batch {
    end: u64,
    fds: Vec<OwnedFd>,
    /// Fds that came with this read beyond what their frame may hold; closed
    /// on arrival, counted for the error.
    surplus: usize,
    truncated: bool,
}

/// A frame cut out of the stream: its payload's place in the buffer and its fds.
#[derive(Debug)]
pub(crate) struct RawFrame {
    pub(crate) payload: std::ops::Range<usize>,
    pub(crate) fds: Vec<OwnedFd>,
}

/// Incremental frame decoder: reads go in through [`Decoder::spare`] and
/// [`Decoder::commit`], frames come out of [`Decoder::next_frame`].
#[derive(Debug)]
pub(crate) struct Decoder {
    codec: Codec,
    max: u32,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Stream offset of `buf[0]`.
    base: u64,
    /// Bytes the frame at `start` needs in all (postcard, once its header is in).
    need: usize,
    /// JSON: `buf[start..scanned]` holds no newline.
    scanned: usize,
    batches: VecDeque<Batch>,
}

impl Decoder {
    pub(crate) fn new(codec: Codec, max: u32) -> Self {
        Decoder {
            codec,
            max,
            buf: Vec::new(),
            start: 0,
            end: 0,
            base: 0,
            need: 0,
            scanned: 0,
            batches: VecDeque::new(),
        }
    }

    /// Free space for the next read. The buffer grows towards what the frame in
    /// progress needs (its length was checked against the maximum before we got
    /// here) at most twofold per read, as its bytes arrive: a 5-byte header
    /// announcing the maximum frame does not make us allocate the maximum.
    pub(crate) fn spare(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.base += self.start as u64;
            self.start = 0;
            self.end = 0;
            self.scanned = 0;
            if self.buf.len() > SHRINK_ABOVE {
                // A huge frame went by; do not keep its buffer for ever.
                self.buf = Vec::new();
            }
        }
        let avail = self.end - self.start;
        let want = self.need.min(2 * avail).max(avail + MIN_READ);
        if self.buf.len() - self.start < want {
            // Move the unfinished frame to the front, then grow if still short.
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.base += self.start as u64;
                self.end -= self.start;
                self.scanned = self.scanned.saturating_sub(self.start);
                self.start = 0;
            }
            if self.buf.len() < want {
                self.buf.resize(want, 0);
            }
        }
        &mut self.buf[self.end..]
    }

    /// Records a read of `n` bytes into [`Decoder::spare`] and the fds it carried.
    pub(crate) fn commit(&mut self, n: usize, fds: Vec<OwnedFd>, truncated: bool) {
        self.end += n;
        if !fds.is_empty() || truncated {
            self.batches.push_back(Batch {
                end: self.base + self.end as u64,
                fds,
                surplus: 0,
                truncated,
            });
            self.enforce_fd_bound();
        }
    }

    /// The frame that owns fds read up to the current end of the buffer (the
    /// frame holding its last byte): its stream offset, and how many fds it may
    /// hold (its declared count, or [`MAX_FDS`] while its header is incomplete).
    fn current_owner(&self) -> (u64, usize) {
        let mut at = self.start;
        loop {
            let offset = self.base + at as u64;
            match self.codec {
                // A JSON line never carries fds.
                Codec::JsonLines => return (self.base + self.start as u64, 0),
                Codec::Postcard => {
                    if self.end - at < HEADER_LEN {
                        return (offset, MAX_FDS);
                    }
                    let header = &self.buf[at..at + HEADER_LEN];
                    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
                    if len == 0 || len > self.max.saturating_add(1) {
                        // A stream error is coming; this frame gets nothing.
                        return (offset, 0);
                    }
                    let total = 4 + len as usize;
                    if at + total >= self.end {
                        return (offset, usize::from(header[4]));
                    }
                    at += total;
                }
            }
        }
    }

    /// Closes every fd beyond what the frame being read may hold (see the
    /// design note at the top of this module).
    fn enforce_fd_bound(&mut self) {
        let (owner_start, room) = self.current_owner();
        let mut held = 0;
        for batch in self.batches.iter_mut().filter(|b| b.end > owner_start) {
            let keep = batch.fds.len().min(room - held);
            let closed = batch.fds.len() - keep;
            batch.fds.truncate(keep); // drops, and so closes, the surplus
            batch.surplus += closed;
            held += keep;
        }
    }

    /// The payload bytes of a frame returned by [`Decoder::next_frame`]; valid
    /// until the next [`Decoder::spare`].
    pub(crate) fn payload(&self, frame: &RawFrame) -> &[u8] {
        &self.buf[frame.payload.clone()]
    }

    /// Cuts the next complete frame, if any. Frame-level errors (fd mismatch)
    /// consume the frame; stream-level errors (`is_fatal`) do not.
    pub(crate) fn next_frame(&mut self) -> Result<Option<RawFrame>> {
        match self.codec {
            Codec::Postcard => self.next_postcard(),
            Codec::JsonLines => self.next_line(),
        }
    }

    fn next_postcard(&mut self) -> Result<Option<RawFrame>> {
        let avail = self.end - self.start;
        if avail < HEADER_LEN {
            return Ok(None);
        }
        let header = &self.buf[self.start..self.start + HEADER_LEN];
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let offset = self.base + self.start as u64;
        if len == 0 {
            return Err(Error::ZeroLengthFrame { offset });
        }
        if len > self.max.saturating_add(1) {
            // `len` counts the fd-count byte, the limit is on the payload.
            return Err(Error::FrameTooLarge {
                len: u64::from(len) - 1,
                max: self.max,
            });
        }
        let total = 4 + len as usize;
        if avail < total {
            self.need = total;
            return Ok(None);
        }
        self.need = 0;
        let declared = usize::from(header[4]);
        let frame_start = self.start;
        self.start += total;
        let fds = self.claim_fds(offset, offset + total as u64, declared)?;
        Ok(Some(RawFrame {
            payload: frame_start + HEADER_LEN..frame_start + total,
            fds,
        }))
    }

    fn next_line(&mut self) -> Result<Option<RawFrame>> {
        let from = self.scanned.max(self.start);
        match memchr(b'\n', &self.buf[from..self.end]) {
            None => {
                self.scanned = self.end;
                let len = self.end - self.start;
                if len > self.max as usize {
                    return Err(Error::FrameTooLarge {
                        len: len as u64,
                        max: self.max,
                    });
                }
                Ok(None)
            }
            Some(i) => {
                let newline = from + i;
                let offset = self.base + self.start as u64;
                let line_start = self.start;
                let mut line_end = newline;
                if line_end > line_start && self.buf[line_end - 1] == b'\r' {
                    line_end -= 1;
                }
                if line_end - line_start > self.max as usize {
                    return Err(Error::FrameTooLarge {
                        len: (line_end - line_start) as u64,
                        max: self.max,
                    });
                }
                self.start = newline + 1;
                self.scanned = self.start;
                let fds = self.claim_fds(offset, self.base + self.start as u64, 0)?;
                if line_end == line_start {
                    return Err(Error::ZeroLengthFrame { offset });
                }
                Ok(Some(RawFrame {
                    payload: line_start..line_end,
                    fds,
                }))
            }
        }
    }

    /// Takes the fds of the frame spanning `(start, end]` of the stream.
    fn claim_fds(&mut self, start: u64, end: u64, declared: usize) -> Result<Vec<OwnedFd>> {
        let mut fds = Vec::new();
        let mut truncated = false;
        let mut misplaced = false;
        let mut surplus = 0;
        while self.batches.front().is_some_and(|b| b.end <= end) {
            let batch = self.batches.pop_front().expect("checked by is_some_and");
            misplaced |= batch.end <= start;
            truncated |= batch.truncated;
            surplus += batch.surplus;
            fds.extend(batch.fds);
        }
        let received = fds.len() + surplus;
        if truncated {
            return Err(Error::FdsTruncated { declared, received });
        }
        if received != declared || misplaced {
            return Err(Error::FdMismatch { declared, received });
        }
        Ok(fds)
    }

    /// What end-of-stream means now: a clean end, or a peer gone mid-frame.
    pub(crate) fn at_eof(&mut self) -> Result<()> {
        let have = self.end - self.start;
        if have == 0 && self.batches.is_empty() {
            Ok(())
        } else {
            self.batches.clear();
            Err(Error::PeerClosedMidFrame { have })
        }
    }
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 5-byte header announcing the largest frame allowed must not make the
    /// decoder allocate that frame before its bytes come.
    #[test]
    fn a_header_alone_does_not_allocate_the_announced_frame() {
        let max = 16 << 20;
        let mut decoder = Decoder::new(Codec::Postcard, max);
        let header = (max + 1).to_le_bytes();
        let spare = decoder.spare();
        spare[..4].copy_from_slice(&header);
        spare[4] = 0;
        decoder.commit(HEADER_LEN, Vec::new(), false);
        assert!(decoder.next_frame().unwrap().is_none());
        let mut have = HEADER_LEN;
        let mut grown = Vec::new();
        while have < 4 + max as usize + 1 {
            let spare = decoder.spare();
            grown.push(spare.len() + have);
            let n = spare.len().min(4 + max as usize + 1 - have);
            decoder.commit(n, Vec::new(), false);
            have += n;
        }
        // The buffer grew with the bytes, at most twofold per read.
        assert!(grown[0] < 64 << 10, "first read offered {} bytes", grown[0]);
        for pair in grown.windows(2) {
            assert!(pair[1] <= 2 * pair[0] + MIN_READ, "{pair:?}");
        }
        let frame = decoder
            .next_frame()
            .unwrap()
            .expect("the frame is complete");
        assert_eq!(decoder.payload(&frame).len(), max as usize);
    }

    /// Fds beyond what the frame being read declared are closed as they come.
    #[test]
    fn surplus_fds_are_closed_on_arrival_and_counted() {
        let mut decoder = Decoder::new(Codec::Postcard, 1 << 20);
        let open = |n: usize| -> Vec<OwnedFd> {
            (0..n)
                .map(|_| std::fs::File::open("/dev/null").unwrap().into())
                .collect()
        };
        // Header: 4 payload bytes, 2 fds declared; the header comes with 3 fds.
        let spare = decoder.spare();
        spare[..5].copy_from_slice(&[5, 0, 0, 0, 2]);
        decoder.commit(5, open(3), false);
        let held: usize = decoder.batches.iter().map(|b| b.fds.len()).sum();
        assert_eq!(held, 2);
        // Each further byte brings 10 more: none is kept.
        for _ in 0..4 {
            decoder.spare()[0] = 0;
            decoder.commit(1, open(10), false);
            let held: usize = decoder.batches.iter().map(|b| b.fds.len()).sum();
            assert_eq!(held, 2);
        }
        match decoder.next_frame() {
            Err(Error::FdMismatch { declared, received }) => {
                assert_eq!((declared, received), (2, 43));
            }
            other => panic!("{other:?}"),
        }
    }
}

//! Fixed-capacity, 16-byte aligned receive buffer.
//!
//! Allocated and zero-filled once at connection set-up and never grown, so a connection's
//! receive memory is bounded by `frame_bytes_max + recv_chunk_bytes`. Bytes live in
//! `[start, end)`; the kernel writes into `[end, capacity)`. Frames are consumed whole and are
//! multiples of 8 bytes, so `start` stays 8-aligned and every frame can be read in place.

use rkyv::util::AlignedVec;

use crate::wire::FRAME_ALIGN;

/// See the module docs.
#[derive(Debug)]
pub struct RecvBuf {
    bytes: AlignedVec<16>,
    start: usize,
    end: usize,
}

impl RecvBuf {
    /// A zero-filled buffer of exactly `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> RecvBuf {
        assert!(capacity > 0 && capacity % FRAME_ALIGN == 0);
        let mut bytes = AlignedVec::<16>::with_capacity(capacity);
        bytes.resize(capacity, 0);
        assert_eq!(bytes.len(), capacity);
        RecvBuf {
            bytes,
            start: 0,
            end: 0,
        }
    }

    /// Total capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.bytes.len()
    }

    /// Received, not yet consumed bytes.
    pub fn data(&self) -> &[u8] {
        &self.bytes[self.start..self.end]
    }

    /// Number of received, not yet consumed bytes.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether no unconsumed byte is buffered.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Marks `n` bytes (whole frames) as consumed.
    pub fn consume(&mut self, n: usize) {
        assert!(n <= self.len());
        assert!(n % FRAME_ALIGN == 0, "only whole frames are consumed");
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Moves unconsumed bytes to the front when the free tail is smaller than `want`.
    pub fn make_room(&mut self, want: usize) {
        if self.capacity() - self.end >= want || self.start == 0 {
            return;
        }
        let len = self.len();
        self.bytes.copy_within(self.start..self.end, 0);
        self.start = 0;
        self.end = len;
    }

    /// Free tail the kernel (or a copy) may fill.
    pub fn spare_mut(&mut self) -> &mut [u8] {
        let end = self.end;
        &mut self.bytes[end..]
    }

    /// Records that `n` bytes were written at the start of [`RecvBuf::spare_mut`].
    pub fn commit(&mut self, n: usize) {
        assert!(self.end + n <= self.capacity());
        self.end += n;
    }

    /// Appends `data`; returns false (and appends nothing) when it does not fit.
    pub fn extend(&mut self, data: &[u8]) -> bool {
        self.make_room(data.len());
        if self.capacity() - self.end < data.len() {
            return false;
        }
        self.spare_mut()[..data.len()].copy_from_slice(data);
        self.commit(data.len());
        true
    }
}

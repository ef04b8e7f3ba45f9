//! Typed errors for expected conditions. Broken invariants panic instead.

use crate::wire::FrameKind;

/// Why a byte sequence is not a valid frame. Each variant maps to one close reason counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The stream does not start with the frame magic: not our protocol, or desynchronised.
    #[error("bad frame magic")]
    BadMagic,
    /// The peer speaks a wire version this build does not.
    #[error("unsupported wire version {0}")]
    UnsupportedVersion(u8),
    /// Unknown frame kind byte.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// Flag bits this version does not define.
    #[error("unknown frame flags {0:#06x}")]
    UnknownFlags(u16),
    /// Frame larger than the configured maximum.
    #[error("frame of {len} bytes exceeds maximum {max}")]
    Oversized {
        /// Declared frame length.
        len: u64,
        /// Configured maximum.
        max: u64,
    },
    /// A frame without a message header.
    #[error("empty message header")]
    EmptyHeader,
    /// A handshake frame that carries a payload.
    #[error("payload on a frame kind that carries none")]
    UnexpectedPayload,
    /// CRC32C mismatch.
    #[error("checksum mismatch: header says {expected:#010x}, bytes give {actual:#010x}")]
    Checksum {
        /// CRC in the frame header.
        expected: u32,
        /// CRC computed over the bytes.
        actual: u32,
    },
    /// The frame does not start 8-byte aligned in the caller's buffer.
    #[error("frame not aligned for in-place access")]
    Misaligned,
    /// rkyv/bytecheck validation of the message header failed.
    #[error("malformed {0:?} message header")]
    Malformed(FrameKind),
    /// rkyv serialization failed (encode side only).
    #[error("message could not be encoded")]
    Encode,
}

/// Why a message was not queued. The caller keeps the message and decides (retry later,
/// drop, step down...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// No established connection to that destination right now.
    #[error("not connected")]
    NotConnected,
    /// The connection's send queue is at its byte budget: the peer is not reading fast enough.
    /// An [`crate::Event::Writable`] follows once it drained.
    #[error("send queue full")]
    QueueFull,
    /// The frame can never be sent (larger than the maximum frame size, or unencodable).
    #[error("frame rejected: {0}")]
    Frame(#[from] FrameError),
}

/// Ring driver errors.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    /// The in-flight operation budget is used up; reap completions first.
    #[error("in-flight operation limit reached")]
    Busy,
    /// The configuration can not work (sizes zero, not powers of two, CQ too small...).
    #[error("invalid ring config: {0}")]
    Config(&'static str),
    /// Setting up or entering the ring failed.
    #[error("io_uring: {0}")]
    Io(#[from] std::io::Error),
}

/// Transport set-up and polling errors. Per-connection failures never surface here: they
/// close that connection and are counted.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Ring driver failure.
    #[error(transparent)]
    Ring(#[from] RingError),
    /// Socket or entropy source failure at set-up.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// A listen address could not be bound (in use, not local, no permission).
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    /// The configuration can not work.
    #[error("invalid transport config: {0}")]
    Config(&'static str),
}

impl TransportError {
    /// True when a listen address was already taken by another socket.
    pub fn is_address_in_use(&self) -> bool {
        matches!(self, TransportError::Listen { source, .. }
            if source.kind() == std::io::ErrorKind::AddrInUse)
    }
}

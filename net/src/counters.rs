//! Per-reason connection close counters and traffic counters.

use crate::error::FrameError;

macro_rules! close_reasons {
    ($($(#[$doc:meta])* $name:ident => $bad:expr,)*) => {
        /// Why a connection was closed. Each reason has its own counter.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum CloseReason {
            $($(#[$doc])* $name,)*
        }

        impl CloseReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [CloseReason] = &[$(CloseReason::$name,)*];

            /// Whether the reason is bad input from the peer (logged as a warning).
            pub fn is_bad_input(self) -> bool {
                match self {
                    $(CloseReason::$name => $bad,)*
                }
            }
        }
    };
}

close_reasons! {
    /// Orderly end of stream between frames.
    PeerClosed => false,
    /// Socket error (reset, broken pipe...).
    Io => false,
    /// Outgoing connect failed.
    ConnectFailed => false,
    /// A newer connection from the same node replaced this one.
    Replaced => false,
    /// Local shutdown or explicit close.
    Local => false,
    /// End of stream in the middle of a frame.
    Truncated => true,
    /// Not our frame magic (random bytes, other protocol, desync).
    BadMagic => true,
    /// Unsupported wire version.
    BadVersion => true,
    /// Unknown frame kind or flags.
    BadKind => true,
    /// Frame larger than the configured maximum.
    Oversized => true,
    /// CRC32C mismatch.
    Checksum => true,
    /// rkyv/bytecheck validation failed or bad frame structure.
    Malformed => true,
    /// A frame not allowed in the connection's state (data before handshake...).
    ProtocolViolation => true,
    /// Handshake not finished in time.
    HandshakeTimeout => true,
    /// Peer belongs to another cluster.
    WrongCluster => true,
    /// Peer is not a member (or is us, or not the node we dialed).
    NotMember => true,
    /// Peer speaks another protocol version.
    VersionMismatch => true,
    /// One side has a cluster key and the other does not.
    AuthMissing => true,
    /// HMAC proof did not verify.
    AuthFailed => true,
}

impl CloseReason {
    /// Counter index.
    pub fn index(self) -> usize {
        CloseReason::ALL
            .iter()
            .position(|&r| r == self)
            .expect("every reason is listed")
    }
}

impl From<FrameError> for CloseReason {
    fn from(e: FrameError) -> CloseReason {
        match e {
            FrameError::BadMagic => CloseReason::BadMagic,
            FrameError::UnsupportedVersion(_) => CloseReason::BadVersion,
            FrameError::UnknownKind(_) | FrameError::UnknownFlags(_) => CloseReason::BadKind,
            FrameError::Oversized { .. } => CloseReason::Oversized,
            FrameError::Checksum { .. } => CloseReason::Checksum,
            FrameError::EmptyHeader
            | FrameError::UnexpectedPayload
            | FrameError::Misaligned
            | FrameError::Malformed(_)
            | FrameError::Encode => CloseReason::Malformed,
        }
    }
}

/// Counters exposed by the transport. Plain integers: the transport is single-threaded.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    closed: [u64; 19],
    /// Frames delivered to the caller.
    pub frames_in: u64,
    /// Frames queued by the caller.
    pub frames_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Send operations submitted (frames_out / sends = batching factor).
    pub sends: u64,
    /// Of those, the ones submitted zero-copy.
    pub sends_zero_copy: u64,
    /// `send` calls refused with `QueueFull`.
    pub queue_full: u64,
    /// Connections established (handshake done).
    pub established: u64,
}

const _: () = assert!(CloseReason::ALL.len() == 19);

impl Counters {
    /// Connections closed for `reason`.
    pub fn closed(&self, reason: CloseReason) -> u64 {
        self.closed[reason.index()]
    }

    /// Connections closed for bad input, all reasons together.
    pub fn closed_bad_input(&self) -> u64 {
        CloseReason::ALL
            .iter()
            .filter(|r| r.is_bad_input())
            .map(|&r| self.closed(r))
            .sum()
    }

    pub(crate) fn bump_closed(&mut self, reason: CloseReason) {
        self.closed[reason.index()] += 1;
    }
}

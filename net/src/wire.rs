//! Wire format: one frame = fixed 24-byte frame header + rkyv-encoded message header + optional raw
//! payload.
//!
//! ```text
//! offset 0   FrameHeader (24 bytes, little endian, layout pinned by const asserts)
//! offset 24  rkyv archive of the message header (`header_len` bytes), zero padded to 8
//!            payload (`payload_len` bytes, opaque to net), zero padded to 8
//! ```
//!
//! Every frame is a multiple of [`FRAME_ALIGN`] bytes long, so a receiver that keeps its read
//! buffer 16-byte aligned and consumes whole frames finds every rkyv header 8-byte aligned and
//! can read it in place with `rkyv::access` (bytecheck validation) without copying.
//! The CRC32C covers the frame header (except the CRC field itself) and everything after it,
//! padding included.

use rkyv::{Archive, Deserialize, Serialize};

use crate::error::FrameError;

/// "RFT1" in little endian: the first four bytes of every frame.
pub const FRAME_MAGIC: u32 = u32::from_le_bytes(*b"RFT1");
/// Version of the frame layout and of the message schema below. A peer speaking another
/// version is refused at the first frame.
pub const WIRE_VERSION: u8 = 1;
/// Size in bytes of the fixed frame header.
pub const FRAME_HEADER_LEN: usize = 24;
/// Every frame length, rkyv header start and payload start is a multiple of this.
pub const FRAME_ALIGN: usize = 8;
/// Frame flag: the CRC32C covers the frame and message headers but not the payload. Used for
/// AppendEntries whose records carry their own checksums (computed once, when the record was
/// written, and validated by the receiver's engine), so a leader does not checksum the same
/// bytes again for every follower and every retry.
pub const FLAG_PAYLOAD_UNCHECKED: u16 = 1;
/// Flags defined by this version. Any other bit set is refused.
pub const FRAME_FLAGS_KNOWN: u16 = FLAG_PAYLOAD_UNCHECKED;

const OFF_MAGIC: usize = 0;
const OFF_VERSION: usize = 4;
const OFF_KIND: usize = 5;
const OFF_FLAGS: usize = 6;
const OFF_SHARD: usize = 8;
const OFF_HEADER_LEN: usize = 12;
const OFF_PAYLOAD_LEN: usize = 16;
const OFF_CRC: usize = 20;

// Pin the frame header layout: fields are contiguous, non-overlapping, and fill 24 bytes.
const _: () = assert!(OFF_VERSION == OFF_MAGIC + 4);
const _: () = assert!(OFF_KIND == OFF_VERSION + 1);
const _: () = assert!(OFF_FLAGS == OFF_KIND + 1);
const _: () = assert!(OFF_SHARD == OFF_FLAGS + 2);
const _: () = assert!(OFF_HEADER_LEN == OFF_SHARD + 4);
const _: () = assert!(OFF_PAYLOAD_LEN == OFF_HEADER_LEN + 4);
const _: () = assert!(OFF_CRC == OFF_PAYLOAD_LEN + 4);
const _: () = assert!(FRAME_HEADER_LEN == OFF_CRC + 4);
const _: () = assert!(FRAME_HEADER_LEN % FRAME_ALIGN == 0);
// Archived headers must never need more alignment than a frame guarantees.
const _: () = assert!(core::mem::align_of::<ArchivedRaftMessage>() <= FRAME_ALIGN);
const _: () = assert!(core::mem::align_of::<ArchivedClientMessage>() <= FRAME_ALIGN);
const _: () = assert!(core::mem::align_of::<ArchivedHello>() <= FRAME_ALIGN);
const _: () = assert!(core::mem::align_of::<ArchivedAuth>() <= FRAME_ALIGN);
// Pin the archived sizes of the fixed-size control messages: a change here is a wire change
// and must bump WIRE_VERSION.
const _: () = assert!(core::mem::size_of::<ArchivedRaftMessage>() == 72);
const _: () = assert!(core::mem::size_of::<ArchivedHello>() == 56);
const _: () = assert!(core::mem::size_of::<ArchivedAuth>() == 32);

/// What the rkyv header of a frame is. Known before validation, so a receiver can route or
/// refuse a frame without touching its body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// Handshake, first frame each side sends: [`Hello`].
    Hello = 1,
    /// Handshake, HMAC proof when a cluster key is configured: [`Auth`].
    Auth = 2,
    /// Replica to replica: [`RaftMessage`].
    Raft = 3,
    /// Client to node and back: [`ClientMessage`].
    Client = 4,
}

impl FrameKind {
    /// Decodes the kind byte of a frame header.
    pub fn from_u8(byte: u8) -> Option<FrameKind> {
        match byte {
            1 => Some(FrameKind::Hello),
            2 => Some(FrameKind::Auth),
            3 => Some(FrameKind::Raft),
            4 => Some(FrameKind::Client),
            _ => None,
        }
    }
}

/// A Raft message between replicas of one shard. `from`/`to` are replica ids; which shard it
/// belongs to is carried by the frame header.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RaftMessage {
    /// Sending replica.
    pub from: u64,
    /// Receiving replica.
    pub to: u64,
    /// Sender's current term.
    pub term: u64,
    /// What the message says.
    pub body: RaftBody,
}

/// The Raft message bodies. AppendEntries records travel as the frame payload, not here.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum RaftBody {
    /// Pre-vote request (does not bump the receiver's term).
    PreVote {
        /// Candidate's last log index.
        last_index: u64,
        /// Term of the candidate's last log entry.
        last_term: u64,
    },
    /// Answer to a pre-vote.
    PreVoteResponse {
        /// Whether the vote would be granted.
        granted: bool,
    },
    /// Vote request.
    Vote {
        /// Candidate's last log index.
        last_index: u64,
        /// Term of the candidate's last log entry.
        last_term: u64,
        /// Leadership transfer: the receiver ignores its leader lease.
        transfer: bool,
    },
    /// Answer to a vote.
    VoteResponse {
        /// Whether the vote was granted.
        granted: bool,
    },
    /// Log replication. The frame payload holds `count` records in the storage record format,
    /// contiguous, starting at `prev_index + 1`.
    AppendEntries {
        /// Index just before the first carried record.
        prev_index: u64,
        /// Term of the entry at `prev_index`.
        prev_term: u64,
        /// Leader's commit index.
        commit: u64,
        /// Number of records in the payload.
        count: u32,
    },
    /// Answer to AppendEntries.
    AppendResponse {
        /// Success with a match index, or rejection with a backtracking hint.
        outcome: AppendOutcome,
        /// Follower's last log index.
        last_index: u64,
    },
    /// Leader heartbeat, also carries ReadIndex sequence numbers.
    Heartbeat {
        /// Leader's commit index.
        commit: u64,
        /// ReadIndex round this heartbeat confirms.
        read_seq: u64,
    },
    /// Answer to a heartbeat.
    HeartbeatResponse {
        /// ReadIndex round being acknowledged.
        read_seq: u64,
    },
    /// Leadership transfer: campaign now.
    TimeoutNow,
    /// A follower's applied index, reported to its leader so the leader can hold client
    /// writes while any in-sync follower's applier is too far behind its commit index.
    /// Not part of the Raft protocol: the engine handles it beside the core.
    Applied {
        /// Highest index the follower's state machine has applied.
        index: u64,
    },
    /// A replica rejoining after a loss of data asks for the receiver's current term
    /// (the receiver does not adopt or compare the message's term).
    TermQuery {
        /// Drawn by the asker for this rejoin; the reply echoes it.
        nonce: u64,
    },
    /// Answer to a term query: the message's term is the sender's current term.
    TermReply {
        /// The query's nonce.
        nonce: u64,
    },
}

/// Outcome of an AppendEntries.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum AppendOutcome {
    /// Log matches up to `match_index`.
    Match {
        /// Highest index known to match the leader's log.
        match_index: u64,
    },
    /// Log does not match at `prev_index`; fast backtracking hint.
    Reject {
        /// The `prev_index` that did not match.
        rejected_index: u64,
        /// Term of the conflicting entry (0 when the follower's log is too short).
        conflict_term: u64,
        /// First index the follower holds for `conflict_term`.
        conflict_first_index: u64,
    },
}

/// Result code of a client request.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum ClientStatus {
    /// Committed (submit) or served (read).
    Ok,
    /// This node is not the leader; see the leader hint.
    NotLeader,
    /// Queue full; retry later.
    Busy,
    /// Refused by the state machine or too large.
    Rejected,
    /// Not completed in time; outcome unknown.
    Timeout,
}

/// Client traffic. Net only carries it; the engine interprets it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum ClientMessage {
    /// Propose a batch of commands.
    Submit {
        /// Client-chosen id echoed in the reply.
        request_id: u64,
        /// Commands, one log entry each.
        payloads: Vec<Vec<u8>>,
    },
    /// Answer to `Submit`.
    Reply {
        /// Echo of the request id.
        request_id: u64,
        /// Result code.
        status: ClientStatus,
        /// Leader node id when known.
        leader_hint: Option<u64>,
        /// In a `NotLeader` reply, the leader's client address when known: where to retry.
        leader_addr: Option<String>,
        /// Log index of the last command of the batch when `Ok`.
        index: u64,
    },
    /// Linearizable read of one key.
    Read {
        /// Client-chosen id echoed in the reply.
        request_id: u64,
        /// Key to read.
        key: Vec<u8>,
    },
    /// Answer to `Read`.
    ReadReply {
        /// Echo of the request id.
        request_id: u64,
        /// Result code.
        status: ClientStatus,
        /// Leader node id when known.
        leader_hint: Option<u64>,
        /// In a `NotLeader` reply, the leader's client address when known: where to retry.
        leader_addr: Option<String>,
        /// Value when present.
        value: Option<Vec<u8>>,
    },
    /// Ask a node for the state of the frame's shard (any node answers).
    Status {
        /// Client-chosen id echoed in the reply.
        request_id: u64,
    },
    /// Answer to `Status`.
    StatusReply {
        /// Echo of the request id.
        request_id: u64,
        /// The shard's state on the answering node.
        status: ShardStatus,
    },
    /// Ask the leader to hand leadership of the frame's shard to node `to`.
    TransferLeader {
        /// Client-chosen id echoed in the reply.
        request_id: u64,
        /// Node that should lead.
        to: u64,
    },
    /// Answer to an administrative request.
    AdminReply {
        /// Echo of the request id.
        request_id: u64,
        /// Result code.
        status: ClientStatus,
        /// Leader node id when known.
        leader_hint: Option<u64>,
        /// Why a request was refused (empty when `Ok`).
        detail: String,
    },
}

impl ClientMessage {
    /// The request id the message carries (every client message has one).
    pub fn request_id(&self) -> u64 {
        match self {
            ClientMessage::Submit { request_id, .. }
            | ClientMessage::Reply { request_id, .. }
            | ClientMessage::Read { request_id, .. }
            | ClientMessage::ReadReply { request_id, .. }
            | ClientMessage::Status { request_id }
            | ClientMessage::StatusReply { request_id, .. }
            | ClientMessage::TransferLeader { request_id, .. }
            | ClientMessage::AdminReply { request_id, .. } => *request_id,
        }
    }
}

/// One shard's state on one node, for status tools and convergence checks. Also the
/// JSON status line a node prints when it stops (hence the serde derives).
#[derive(
    Archive,
    Serialize,
    Deserialize,
    serde::Serialize,
    serde::Deserialize,
    Debug,
    Clone,
    PartialEq,
    Eq,
)]
#[rkyv(derive(Debug))]
pub struct ShardStatus {
    /// Answering node.
    pub node_id: u64,
    /// Shard id.
    pub shard: u32,
    /// Raft role (`leader`, `follower`, `candidate`, `pre-candidate`).
    pub role: String,
    /// Current term.
    pub term: u64,
    /// Known leader.
    pub leader: Option<u64>,
    /// Commit index.
    pub commit: u64,
    /// Applied index of the state machine.
    pub applied: u64,
    /// Last log index.
    pub last_index: u64,
    /// Last index known durable.
    pub persisted_index: u64,
    /// State machine hash (equal on replicas that applied the same entries).
    pub state_hash: u64,
    /// Leader only: each follower's match index.
    pub followers: Vec<FollowerStatus>,
    /// AppendEntries messages carrying entries sent by this node (for batching figures).
    pub append_msgs_sent: u64,
    /// Entries carried by those messages.
    pub append_entries_sent: u64,
    /// Client submits this node, as leader, held because a replica's applier was more
    /// than `replication.apply_lag_entries_max` behind (counted once each).
    pub writes_held: u64,
    /// Rejoining after a loss of data and still asking for terms: the members whose
    /// terms it waits for (empty otherwise). The rejoin needs every one of them.
    pub rejoin_awaiting: Vec<u64>,
}

impl ShardStatus {
    /// Whether the answering node leads the shard.
    pub fn is_leader(&self) -> bool {
        self.role == "leader"
    }
}

/// A follower's replication progress as its leader sees it.
#[derive(
    Archive,
    Serialize,
    Deserialize,
    serde::Serialize,
    serde::Deserialize,
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
)]
#[rkyv(derive(Debug))]
pub struct FollowerStatus {
    /// Follower node.
    pub node_id: u64,
    /// Highest index known replicated and durable there.
    pub match_index: u64,
}

/// Handshake role of the sender.
pub const ROLE_NODE: u8 = 1;
/// Handshake role of the sender.
pub const ROLE_CLIENT: u8 = 2;

/// First frame each side of a connection sends.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Hello {
    /// Cluster the sender belongs to; must equal the receiver's.
    pub cluster_id: u64,
    /// Sender's node id (client id for clients).
    pub node_id: u64,
    /// Protocol version the sender speaks.
    pub protocol_version: u16,
    /// [`ROLE_NODE`] or [`ROLE_CLIENT`].
    pub role: u8,
    /// Sender has a cluster key and will authenticate (and require authentication).
    pub auth: bool,
    /// Fresh random challenge the receiver must MAC.
    pub nonce: [u8; 32],
}

/// HMAC-SHA256 proof of the cluster key, see `handshake`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Auth {
    /// MAC over the sender's identity and both nonces.
    pub mac: [u8; 32],
}

mod sealed {
    pub trait Sealed {}
}

/// A message type that can be the rkyv header of a frame.
pub trait WireMessage: sealed::Sealed {
    /// Kind byte written to the frame header.
    const KIND: FrameKind;
    /// Appends the rkyv archive of `self` to `out`.
    #[doc(hidden)]
    fn archive_into(&self, out: &mut Vec<u8>) -> Result<(), rkyv::rancor::Error>;
}

macro_rules! wire_message {
    ($t:ty, $kind:expr) => {
        impl sealed::Sealed for $t {}
        impl WireMessage for $t {
            const KIND: FrameKind = $kind;
            fn archive_into(&self, out: &mut Vec<u8>) -> Result<(), rkyv::rancor::Error> {
                rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(self, out).map(|_| ())
            }
        }
    };
}
wire_message!(RaftMessage, FrameKind::Raft);
wire_message!(ClientMessage, FrameKind::Client);
wire_message!(Hello, FrameKind::Hello);
wire_message!(Auth, FrameKind::Auth);

/// Rounds `n` up to the frame alignment.
pub const fn pad_to_align(n: usize) -> usize {
    (n + FRAME_ALIGN - 1) & !(FRAME_ALIGN - 1)
}

/// Total frame length for the given rkyv header and payload lengths.
pub const fn frame_len(header_len: usize, payload_len: usize) -> usize {
    FRAME_HEADER_LEN + pad_to_align(header_len) + pad_to_align(payload_len)
}

/// Appends one frame to `out`, its CRC covering everything. Frames are appended back to
/// back; each is a multiple of [`FRAME_ALIGN`] long. Returns the frame length. On error `out`
/// is left as it was.
pub fn encode_frame<M: WireMessage>(
    out: &mut Vec<u8>,
    shard: u32,
    message: &M,
    payload: &[u8],
    frame_bytes_max: usize,
) -> Result<usize, FrameError> {
    encode_frame_flags(out, shard, message, payload, frame_bytes_max, 0)
}

/// [`encode_frame`] with frame flags (e.g. [`FLAG_PAYLOAD_UNCHECKED`]).
pub fn encode_frame_flags<M: WireMessage>(
    out: &mut Vec<u8>,
    shard: u32,
    message: &M,
    payload: &[u8],
    frame_bytes_max: usize,
    flags: u16,
) -> Result<usize, FrameError> {
    let start = out.len();
    let total = encode_frame_head(out, shard, message, payload, frame_bytes_max, flags)?;
    out.extend_from_slice(payload);
    out.resize(start + total, 0);
    Ok(total)
}

/// Appends everything of a frame but the payload and its padding: the caller sends `payload`
/// from where it lives, followed by [`payload_padding`] zero bytes (vectored send, no copy).
/// The CRC is computed over `payload` as if it were appended. Returns the full frame length.
/// On error `out` is left as it was.
pub fn encode_frame_head<M: WireMessage>(
    out: &mut Vec<u8>,
    shard: u32,
    message: &M,
    payload: &[u8],
    frame_bytes_max: usize,
    flags: u16,
) -> Result<usize, FrameError> {
    assert_eq!(flags & !FRAME_FLAGS_KNOWN, 0, "unknown frame flags");
    let start = out.len();
    if M::KIND == FrameKind::Hello || M::KIND == FrameKind::Auth {
        assert!(payload.is_empty(), "handshake frames carry no payload");
    }
    out.extend_from_slice(&[0u8; FRAME_HEADER_LEN]);
    // rkyv aligns relative to the writer position, which must be 8-aligned where the archive
    // starts. `out` is a send queue whose wire offset is always aligned, but its own length
    // is not when spliced payloads (not stored in it) precede: archive into a scratch then.
    let archived = if out.len() % FRAME_ALIGN == 0 {
        message.archive_into(out)
    } else {
        let mut scratch = Vec::with_capacity(256);
        message
            .archive_into(&mut scratch)
            .map(|()| out.extend_from_slice(&scratch))
    };
    if archived.is_err() {
        out.truncate(start);
        return Err(FrameError::Encode);
    }
    let header_len = out.len() - start - FRAME_HEADER_LEN;
    assert!(header_len > 0);
    let total = frame_len(header_len, payload.len());
    if total > frame_bytes_max || total > u32::MAX as usize {
        out.truncate(start);
        return Err(FrameError::Oversized {
            len: total as u64,
            max: frame_bytes_max as u64,
        });
    }
    out.resize(start + FRAME_HEADER_LEN + pad_to_align(header_len), 0);

    let head = &mut out[start..];
    head[OFF_MAGIC..OFF_MAGIC + 4].copy_from_slice(&FRAME_MAGIC.to_le_bytes());
    head[OFF_VERSION] = WIRE_VERSION;
    head[OFF_KIND] = M::KIND as u8;
    head[OFF_FLAGS..OFF_FLAGS + 2].copy_from_slice(&flags.to_le_bytes());
    head[OFF_SHARD..OFF_SHARD + 4].copy_from_slice(&shard.to_le_bytes());
    head[OFF_HEADER_LEN..OFF_HEADER_LEN + 4].copy_from_slice(&(header_len as u32).to_le_bytes());
    head[OFF_PAYLOAD_LEN..OFF_PAYLOAD_LEN + 4]
        .copy_from_slice(&(payload.len() as u32).to_le_bytes());
    let mut crc = crc32c::crc32c(&head[..OFF_CRC]);
    crc = crc32c::crc32c_append(crc, &head[FRAME_HEADER_LEN..]);
    if flags & FLAG_PAYLOAD_UNCHECKED == 0 {
        crc = crc32c::crc32c_append(crc, payload);
        crc = crc32c::crc32c_append(crc, &[0u8; FRAME_ALIGN][..payload_padding(payload.len())]);
    }
    head[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_le_bytes());
    assert!(total % FRAME_ALIGN == 0);
    assert_eq!(out.len() - start + pad_to_align(payload.len()), total);
    Ok(total)
}

/// Zero bytes that follow a payload of `len` bytes on the wire.
pub const fn payload_padding(len: usize) -> usize {
    pad_to_align(len) - len
}

/// CRC32C over the concatenation of `parts`: the checksum frames use, exposed so that
/// baselines and tools compute it the same way.
pub fn checksum(parts: &[&[u8]]) -> u32 {
    parts
        .iter()
        .fold(0, |crc, part| crc32c::crc32c_append(crc, part))
}

/// End of the bytes the CRC covers.
const fn crc_end(flags: u16, header_len: usize, total: usize) -> usize {
    if flags & FLAG_PAYLOAD_UNCHECKED != 0 {
        FRAME_HEADER_LEN + pad_to_align(header_len)
    } else {
        total
    }
}

fn frame_crc(frame: &[u8]) -> u32 {
    assert!(frame.len() >= FRAME_HEADER_LEN);
    let crc = crc32c::crc32c(&frame[..OFF_CRC]);
    crc32c::crc32c_append(crc, &frame[FRAME_HEADER_LEN..])
}

fn read_u32(buf: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]])
}

/// A validated message header, read in place.
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    /// Handshake hello.
    Hello(&'a ArchivedHello),
    /// Handshake proof.
    Auth(&'a ArchivedAuth),
    /// Replica message.
    Raft(&'a ArchivedRaftMessage),
    /// Client message.
    Client(&'a ArchivedClientMessage),
}

/// One validated frame borrowed from the receive buffer.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// Shard the frame belongs to.
    pub shard: u32,
    /// Validated message header.
    pub body: Body<'a>,
    /// Raw payload (AppendEntries records), opaque to net.
    pub payload: &'a [u8],
    /// Bytes the frame occupies in the stream, padding included.
    pub len: usize,
}

/// Decodes the frame at the start of `buf`.
///
/// Returns `Ok(None)` when `buf` holds only a prefix of a possibly valid frame (read more),
/// `Ok(Some(frame))` for a complete valid frame, and an error as soon as the bytes can not be
/// the start of a valid frame (bad magic is detected from the first byte on). Never panics on
/// any input. `buf` must start 8-byte aligned for the in-place read; a misaligned complete
/// frame is refused with [`FrameError::Misaligned`].
pub fn decode_frame(buf: &[u8], frame_bytes_max: usize) -> Result<Option<Frame<'_>>, FrameError> {
    let magic = FRAME_MAGIC.to_le_bytes();
    let have = buf.len().min(4);
    if buf[..have] != magic[..have] {
        return Err(FrameError::BadMagic);
    }
    if buf.len() > OFF_VERSION && buf[OFF_VERSION] != WIRE_VERSION {
        return Err(FrameError::UnsupportedVersion(buf[OFF_VERSION]));
    }
    if buf.len() < FRAME_HEADER_LEN {
        return Ok(None);
    }
    let kind = FrameKind::from_u8(buf[OFF_KIND]).ok_or(FrameError::UnknownKind(buf[OFF_KIND]))?;
    let flags = u16::from_le_bytes([buf[OFF_FLAGS], buf[OFF_FLAGS + 1]]);
    if flags & !FRAME_FLAGS_KNOWN != 0 {
        return Err(FrameError::UnknownFlags(flags));
    }
    let shard = read_u32(buf, OFF_SHARD);
    let header_len = read_u32(buf, OFF_HEADER_LEN) as usize;
    let payload_len = read_u32(buf, OFF_PAYLOAD_LEN) as usize;
    // Computed in u64-safe usize on 64-bit targets: both lengths are < 2^32.
    let total = frame_len(header_len, payload_len);
    if total > frame_bytes_max {
        return Err(FrameError::Oversized {
            len: total as u64,
            max: frame_bytes_max as u64,
        });
    }
    if header_len == 0 {
        return Err(FrameError::EmptyHeader);
    }
    if matches!(kind, FrameKind::Hello | FrameKind::Auth) && payload_len != 0 {
        return Err(FrameError::UnexpectedPayload);
    }
    if buf.len() < total {
        return Ok(None);
    }
    let frame = &buf[..total];
    let expected = read_u32(frame, OFF_CRC);
    let actual = frame_crc(&frame[..crc_end(flags, header_len, total)]);
    if expected != actual {
        return Err(FrameError::Checksum { expected, actual });
    }
    let header = &frame[FRAME_HEADER_LEN..FRAME_HEADER_LEN + header_len];
    if (header.as_ptr() as usize) % FRAME_ALIGN != 0 {
        return Err(FrameError::Misaligned);
    }
    let payload_start = FRAME_HEADER_LEN + pad_to_align(header_len);
    let payload = &frame[payload_start..payload_start + payload_len];
    let malformed = |_: rkyv::rancor::Error| FrameError::Malformed(kind);
    let body = match kind {
        FrameKind::Hello => Body::Hello(
            rkyv::access::<ArchivedHello, rkyv::rancor::Error>(header).map_err(malformed)?,
        ),
        FrameKind::Auth => Body::Auth(
            rkyv::access::<ArchivedAuth, rkyv::rancor::Error>(header).map_err(malformed)?,
        ),
        FrameKind::Raft => Body::Raft(
            rkyv::access::<ArchivedRaftMessage, rkyv::rancor::Error>(header).map_err(malformed)?,
        ),
        FrameKind::Client => Body::Client(
            rkyv::access::<ArchivedClientMessage, rkyv::rancor::Error>(header)
                .map_err(malformed)?,
        ),
    };
    assert!(total % FRAME_ALIGN == 0 && total <= buf.len());
    Ok(Some(Frame {
        shard,
        body,
        payload,
        len: total,
    }))
}

//! Conversions between the core's messages and the wire's archived messages.
//!
//! The core's AppendEntries carries entry metadata; on the wire the same message carries
//! the record run as the frame payload, and the receiver rebuilds the metadata from the
//! record headers it validated. Nothing is re-encoded.

use net::wire::{AppendOutcome, ArchivedAppendOutcome, ArchivedRaftBody, ArchivedRaftMessage};
use net::wire::{RaftBody, RaftMessage};
use storage::RecordRun;

use crate::raft::{EntryMeta, Message, MessageBody, RejectHint};

/// Why a peer's frame was refused before it reached the core.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameRejected {
    #[error("AppendEntries records are invalid: {0}")]
    Records(#[from] storage::RecordError),
    #[error("AppendEntries announces {announced} records but carries {carried}")]
    CountMismatch { announced: u32, carried: u64 },
    #[error("AppendEntries records start at index {found}, expected {expected}")]
    WrongFirstIndex { expected: u64, found: u64 },
    #[error("record payload of {0} bytes does not fit the core's u32 length")]
    PayloadTooLarge(usize),
    #[error("payload attached to a {0} message")]
    UnexpectedPayload(&'static str),
    #[error("{0} is not a Raft message; the shard handles it before the core")]
    NotForCore(&'static str),
}

/// Rebuilds a core message from a validated wire header and its payload. For
/// AppendEntries the payload is validated as a record run (checksums included) and the
/// run is returned so the driver can append it verbatim.
pub fn from_wire<'p>(
    m: &ArchivedRaftMessage,
    payload: &'p [u8],
) -> Result<(Message, Option<RecordRun<'p>>), FrameRejected> {
    let term = m.term.to_native();
    let no_payload = |kind: &'static str| {
        if payload.is_empty() {
            Ok(())
        } else {
            Err(FrameRejected::UnexpectedPayload(kind))
        }
    };
    let mut run = None;
    let body = match &m.body {
        ArchivedRaftBody::PreVote {
            last_index,
            last_term,
        } => {
            no_payload("PreVote")?;
            MessageBody::PreVote {
                last_index: last_index.to_native(),
                last_term: last_term.to_native(),
            }
        }
        ArchivedRaftBody::PreVoteResponse { granted } => {
            no_payload("PreVoteResponse")?;
            MessageBody::PreVoteResponse { granted: *granted }
        }
        ArchivedRaftBody::Vote {
            last_index,
            last_term,
            transfer,
        } => {
            no_payload("Vote")?;
            MessageBody::Vote {
                last_index: last_index.to_native(),
                last_term: last_term.to_native(),
                transfer: *transfer,
            }
        }
        ArchivedRaftBody::VoteResponse { granted } => {
            no_payload("VoteResponse")?;
            MessageBody::VoteResponse { granted: *granted }
        }
        ArchivedRaftBody::AppendEntries {
            prev_index,
            prev_term,
            commit,
            count,
        } => {
            let prev_index = prev_index.to_native();
            let records = RecordRun::validate(payload)?;
            let count = count.to_native();
            if records.len() != u64::from(count) {
                return Err(FrameRejected::CountMismatch {
                    announced: count,
                    carried: records.len(),
                });
            }
            if let Some((first, _)) = records.first() {
                if first != prev_index + 1 {
                    return Err(FrameRejected::WrongFirstIndex {
                        expected: prev_index + 1,
                        found: first,
                    });
                }
            }
            let mut entries = Vec::with_capacity(count as usize);
            for e in records.iter() {
                let len = u32::try_from(e.payload.len())
                    .map_err(|_| FrameRejected::PayloadTooLarge(e.payload.len()))?;
                entries.push(EntryMeta { term: e.term, len });
            }
            run = Some(records);
            MessageBody::AppendEntries {
                prev_index,
                prev_term: prev_term.to_native(),
                commit: commit.to_native(),
                entries,
            }
        }
        ArchivedRaftBody::AppendResponse {
            outcome,
            last_index,
        } => {
            no_payload("AppendResponse")?;
            match outcome {
                ArchivedAppendOutcome::Match { match_index } => MessageBody::AppendResponse {
                    index: match_index.to_native(),
                    reject: None,
                },
                ArchivedAppendOutcome::Reject {
                    rejected_index,
                    conflict_term,
                    conflict_first_index,
                } => MessageBody::AppendResponse {
                    index: rejected_index.to_native(),
                    reject: Some(RejectHint {
                        last_index: last_index.to_native(),
                        conflict_term: conflict_term.to_native(),
                        conflict_first_index: conflict_first_index.to_native(),
                    }),
                },
            }
        }
        ArchivedRaftBody::Heartbeat { commit, read_seq } => {
            no_payload("Heartbeat")?;
            MessageBody::Heartbeat {
                commit: commit.to_native(),
                read_seq: read_seq.to_native(),
            }
        }
        ArchivedRaftBody::HeartbeatResponse { read_seq } => {
            no_payload("HeartbeatResponse")?;
            MessageBody::HeartbeatResponse {
                read_seq: read_seq.to_native(),
            }
        }
        ArchivedRaftBody::TimeoutNow => {
            no_payload("TimeoutNow")?;
            MessageBody::TimeoutNow
        }
        ArchivedRaftBody::TermQuery { nonce } => {
            no_payload("TermQuery")?;
            MessageBody::TermQuery {
                nonce: nonce.to_native(),
            }
        }
        ArchivedRaftBody::TermReply { nonce } => {
            no_payload("TermReply")?;
            MessageBody::TermReply {
                nonce: nonce.to_native(),
            }
        }
        ArchivedRaftBody::Applied { .. } => return Err(FrameRejected::NotForCore("Applied")),
    };
    let msg = Message {
        from: m.from.to_native(),
        to: m.to.to_native(),
        term,
        body,
    };
    Ok((msg, run))
}

/// The wire header of a core message. For AppendEntries, `count` is the core's batch
/// size; the shard builds the headers of batches it splits at segment boundaries itself.
pub fn to_wire(m: &Message, last_index: u64) -> RaftMessage {
    let body = match &m.body {
        MessageBody::PreVote {
            last_index,
            last_term,
        } => RaftBody::PreVote {
            last_index: *last_index,
            last_term: *last_term,
        },
        MessageBody::PreVoteResponse { granted } => RaftBody::PreVoteResponse { granted: *granted },
        MessageBody::Vote {
            last_index,
            last_term,
            transfer,
        } => RaftBody::Vote {
            last_index: *last_index,
            last_term: *last_term,
            transfer: *transfer,
        },
        MessageBody::VoteResponse { granted } => RaftBody::VoteResponse { granted: *granted },
        MessageBody::AppendEntries {
            prev_index,
            prev_term,
            commit,
            entries,
        } => RaftBody::AppendEntries {
            prev_index: *prev_index,
            prev_term: *prev_term,
            commit: *commit,
            count: u32::try_from(entries.len()).expect("batch_entries_max fits u32"),
        },
        MessageBody::AppendResponse { index, reject } => RaftBody::AppendResponse {
            outcome: match reject {
                None => AppendOutcome::Match {
                    match_index: *index,
                },
                Some(hint) => AppendOutcome::Reject {
                    rejected_index: *index,
                    conflict_term: hint.conflict_term,
                    conflict_first_index: hint.conflict_first_index,
                },
            },
            last_index: reject.map_or(last_index, |h| h.last_index),
        },
        MessageBody::Heartbeat { commit, read_seq } => RaftBody::Heartbeat {
            commit: *commit,
            read_seq: *read_seq,
        },
        MessageBody::HeartbeatResponse { read_seq } => RaftBody::HeartbeatResponse {
            read_seq: *read_seq,
        },
        MessageBody::TimeoutNow => RaftBody::TimeoutNow,
        MessageBody::TermQuery { nonce } => RaftBody::TermQuery { nonce: *nonce },
        MessageBody::TermReply { nonce } => RaftBody::TermReply { nonce: *nonce },
    };
    RaftMessage {
        from: m.from,
        to: m.to,
        term: m.term,
        body,
    }
}

//! Property tests of the frame decoder: random bytes and mutated valid frames never panic and
//! are never accepted as a different frame; valid frames round-trip however the stream is cut.

use net::wire::{self, ClientMessage, Frame, RaftBody, RaftMessage};
use net::FrameError;
use proptest::prelude::*;
use rkyv::util::AlignedVec;

const MAX: usize = 64 * 1024;

fn aligned(bytes: &[u8]) -> AlignedVec<16> {
    let mut v = AlignedVec::<16>::with_capacity(bytes.len().max(1));
    v.extend_from_slice(bytes);
    v
}

fn decode(bytes: &[u8]) -> Result<Option<Frame<'_>>, FrameError> {
    wire::decode_frame(bytes, MAX)
}

fn raft_strategy() -> impl Strategy<Value = RaftMessage> {
    let body = prop_oneof![
        (any::<u64>(), any::<u64>()).prop_map(|(last_index, last_term)| RaftBody::PreVote {
            last_index,
            last_term
        }),
        any::<bool>().prop_map(|granted| RaftBody::VoteResponse { granted }),
        (any::<u64>(), any::<u64>(), any::<bool>()).prop_map(
            |(last_index, last_term, transfer)| RaftBody::Vote {
                last_index,
                last_term,
                transfer
            }
        ),
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u32>()).prop_map(
            |(prev_index, prev_term, commit, count)| RaftBody::AppendEntries {
                prev_index,
                prev_term,
                commit,
                count
            }
        ),
        (any::<u64>(), any::<u64>())
            .prop_map(|(commit, read_seq)| RaftBody::Heartbeat { commit, read_seq }),
        Just(RaftBody::TimeoutNow),
        any::<u64>().prop_map(|nonce| RaftBody::TermQuery { nonce }),
        any::<u64>().prop_map(|nonce| RaftBody::TermReply { nonce }),
    ];
    (any::<u64>(), any::<u64>(), any::<u64>(), body).prop_map(|(from, to, term, body)| {
        RaftMessage {
            from,
            to,
            term,
            body,
        }
    })
}

fn encode(msg: &RaftMessage, shard: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    wire::encode_frame(&mut out, shard, msg, payload, MAX).unwrap();
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let buf = aligned(&bytes);
        let _ = decode(&buf);
        // Also with a valid magic and version in front, so deeper checks get exercised.
        let mut framed = b"RFT1\x01".to_vec();
        framed.extend_from_slice(&bytes);
        let buf = aligned(&framed);
        if let Ok(Some(f)) = decode(&buf) {
            prop_assert!(f.len <= buf.len());
        }
    }

    #[test]
    fn valid_frames_round_trip(msg in raft_strategy(), shard in any::<u32>(), payload in proptest::collection::vec(any::<u8>(), 0..300)) {
        let bytes = encode(&msg, shard, &payload);
        prop_assert_eq!(bytes.len() % wire::FRAME_ALIGN, 0);
        let buf = aligned(&bytes);
        let f = decode(&buf).unwrap().unwrap();
        prop_assert_eq!(f.len, bytes.len());
        prop_assert_eq!(f.shard, shard);
        prop_assert_eq!(f.payload, &payload[..]);
        let wire::Body::Raft(m) = f.body else { panic!("kind changed") };
        let back: RaftMessage = rkyv::deserialize::<RaftMessage, rkyv::rancor::Error>(m).unwrap();
        prop_assert_eq!(back, msg);
        // Every strict prefix asks for more bytes instead of failing or succeeding.
        for cut in [0, 1, 4, 5, 23, 24, bytes.len() / 2, bytes.len() - 1] {
            let prefix = aligned(&bytes[..cut]);
            prop_assert!(matches!(decode(&prefix), Ok(None)), "prefix {} of {}", cut, bytes.len());
        }
    }

    #[test]
    fn mutated_frames_are_rejected(msg in raft_strategy(), payload in proptest::collection::vec(any::<u8>(), 0..200), pos in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let mut bytes = encode(&msg, 1, &payload);
        let i = pos.index(bytes.len());
        bytes[i] ^= flip;
        let buf = aligned(&bytes);
        // A single corrupted byte is never accepted: CRC32C catches every error burst of
        // up to 32 bits, and header fields are checked before it.
        prop_assert!(!matches!(decode(&buf), Ok(Some(_))), "accepted a frame with byte {} flipped", i);
    }

    #[test]
    fn client_frames_with_random_batches_round_trip(batch in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16), id in any::<u64>()) {
        let msg = ClientMessage::Submit { request_id: id, payloads: batch };
        let mut out = Vec::new();
        wire::encode_frame(&mut out, 9, &msg, &[], MAX).unwrap();
        let buf = aligned(&out);
        let f = decode(&buf).unwrap().unwrap();
        let wire::Body::Client(m) = f.body else { panic!("kind changed") };
        let back: ClientMessage = rkyv::deserialize::<ClientMessage, rkyv::rancor::Error>(m).unwrap();
        prop_assert_eq!(back, msg);
    }
}

#[test]
fn oversized_and_misaligned_are_typed_errors() {
    let msg = RaftMessage {
        from: 1,
        to: 2,
        term: 3,
        body: RaftBody::TimeoutNow,
    };
    let bytes = encode(&msg, 0, &[0u8; 5000]);
    let buf = aligned(&bytes);
    assert!(matches!(
        wire::decode_frame(&buf, 4096),
        Err(FrameError::Oversized { .. })
    ));
    let mut shifted = AlignedVec::<16>::new();
    shifted.push(0);
    shifted.extend_from_slice(&bytes);
    assert_eq!(decode(&shifted[1..]).unwrap_err(), FrameError::Misaligned);
    let mut out = Vec::new();
    let err = wire::encode_frame(&mut out, 0, &msg, &[0u8; 5000], 4096).unwrap_err();
    assert!(matches!(err, FrameError::Oversized { .. }));
    assert!(out.is_empty(), "failed encode leaves the buffer untouched");
}

#[test]
fn header_only_checksum_leaves_payload_to_the_records() {
    let msg = RaftMessage {
        from: 1,
        to: 2,
        term: 3,
        body: RaftBody::TimeoutNow,
    };
    let mut bytes = Vec::new();
    wire::encode_frame_flags(
        &mut bytes,
        0,
        &msg,
        b"records!",
        MAX,
        wire::FLAG_PAYLOAD_UNCHECKED,
    )
    .unwrap();
    let payload_at = bytes.len() - 8;
    // A payload flip passes net (the engine validates record checksums)...
    let mut flipped = bytes.clone();
    flipped[payload_at] ^= 1;
    let buf = aligned(&flipped);
    let f = decode(&buf).unwrap().unwrap();
    assert_eq!(f.payload, b"secords!");
    // ...a header flip does not, nor does clearing the flag to claim full coverage.
    for i in [8, 30, 40] {
        let mut h = bytes.clone();
        h[i] ^= 1;
        assert!(decode(&aligned(&h)).is_err(), "byte {i}");
    }
    let mut unflagged = bytes.clone();
    unflagged[6] = 0;
    assert!(matches!(
        decode(&aligned(&unflagged)),
        Err(FrameError::Checksum { .. })
    ));
}

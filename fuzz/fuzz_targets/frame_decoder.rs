//! Feeds arbitrary bytes to the frame decoder the way a connection does: copied into an
//! aligned receive buffer, frames decoded and consumed one after another until the decoder
//! asks for more bytes or refuses the stream. Every accepted frame is fully deserialized to
//! exercise the validated archive. Must never panic, hang or read out of bounds.
//!
//! Run: `cargo +nightly fuzz run frame_decoder` from this directory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use net::wire::{self, Body, ClientMessage, RaftMessage};

const FRAME_BYTES_MAX: usize = 64 * 1024;

/// Rewrites the CRC of every complete frame so the fuzzer gets past the checksum and
/// explores header and archive validation too.
fn fix_checksums(bytes: &mut [u8]) {
    let mut at = 0;
    while bytes.len() - at >= wire::FRAME_HEADER_LEN {
        let f = &mut bytes[at..];
        let u32_at = |f: &[u8], o: usize| u32::from_le_bytes([f[o], f[o + 1], f[o + 2], f[o + 3]]) as usize;
        let flags = u16::from_le_bytes([f[6], f[7]]);
        let header_len = u32_at(f, 12);
        let total = wire::frame_len(header_len, u32_at(f, 16));
        if total > f.len() {
            return;
        }
        let covered = if flags & wire::FLAG_PAYLOAD_UNCHECKED != 0 {
            wire::FRAME_HEADER_LEN + wire::pad_to_align(header_len)
        } else {
            total
        };
        let crc = wire::checksum(&[&f[..20], &f[wire::FRAME_HEADER_LEN..covered]]);
        f[20..24].copy_from_slice(&crc.to_le_bytes());
        at += total;
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, data)) = input.split_first() else {
        return;
    };
    let capacity = wire::pad_to_align(data.len()).max(wire::FRAME_ALIGN);
    let mut buf = net::RecvBuf::with_capacity(capacity);
    buf.spare_mut()[..data.len()].copy_from_slice(data);
    if mode & 1 == 1 {
        fix_checksums(&mut buf.spare_mut()[..data.len()]);
    }
    buf.commit(data.len());
    let mut frames = 0usize;
    loop {
        let frame = match wire::decode_frame(buf.data(), FRAME_BYTES_MAX) {
            Ok(Some(frame)) => frame,
            Ok(None) | Err(_) => break,
        };
        assert!(frame.len % wire::FRAME_ALIGN == 0 && frame.len <= buf.len());
        assert!(frame.payload.len() <= frame.len);
        match frame.body {
            Body::Raft(m) => {
                let owned: RaftMessage = rkyv::deserialize::<_, rkyv::rancor::Error>(m).unwrap();
                // Re-encoding what was accepted must produce a frame that decodes again.
                let mut again = Vec::new();
                wire::encode_frame(&mut again, frame.shard, &owned, frame.payload, FRAME_BYTES_MAX)
                    .unwrap();
            }
            Body::Client(m) => {
                let _: ClientMessage = rkyv::deserialize::<_, rkyv::rancor::Error>(m).unwrap();
            }
            Body::Hello(h) => {
                let _ = (h.cluster_id.to_native(), h.node_id.to_native(), h.nonce);
            }
            Body::Auth(a) => {
                let _ = a.mac;
            }
        }
        let len = frame.len;
        buf.consume(len);
        frames += 1;
        assert!(frames <= data.len() / wire::FRAME_HEADER_LEN);
    }
});

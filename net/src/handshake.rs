//! Connection handshake.
//!
//! Both sides send a [`Hello`] as soon as the TCP connection is up (no extra round trip for
//! the dialer). Each side checks the other's cluster id, protocol version, role and
//! membership, and answers an accepted hello with an [`crate::wire::Auth`] frame; a side
//! considers the connection established only once the peer's Auth arrived, i.e. once the peer
//! accepted it too. Without a key the Auth MAC is zero and ignored. With a cluster key
//! configured, the Auth frame proves the key:
//! `HMAC-SHA256(key, label | cluster | sender node | sender role | receiver nonce | sender
//! nonce)`: a challenge-response in both directions over fresh nonces, so a process without
//! the key can neither join nor replay an old handshake, and a MAC can not be reflected back
//! (the sender's identity and the nonce order are bound in). Key presence must match on both
//! sides: a keyed node refuses an unkeyed peer and vice versa.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::wire::{ArchivedHello, Hello};
use crate::CloseReason;

type HmacSha256 = Hmac<Sha256>;

const AUTH_LABEL: &[u8] = b"raft-net-auth-v1";
/// Protocol version carried in hello frames; peers of another version are refused at the
/// handshake. 3: a heartbeat's commit index is bounded by what the receiving follower
/// acknowledged, and the follower commits it without an append (a follower of version 3
/// must never take a version-2 leader's unbounded commit on trust); rejoin's term query
/// and reply. 4: a status reply names the members a rejoining node waits for.
pub const PROTOCOL_VERSION: u16 = 4;

/// The fields of a peer's hello that outlive the receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerHello {
    /// Peer's cluster id.
    pub cluster_id: u64,
    /// Peer's node (or client) id.
    pub node_id: u64,
    /// Peer's protocol version.
    pub protocol_version: u16,
    /// Peer's role byte.
    pub role: u8,
    /// Whether the peer authenticates.
    pub auth: bool,
    /// Peer's challenge.
    pub nonce: [u8; 32],
}

impl PeerHello {
    /// Copies the validated archived hello out of the receive buffer.
    pub fn from_archived(h: &ArchivedHello) -> PeerHello {
        PeerHello {
            cluster_id: h.cluster_id.to_native(),
            node_id: h.node_id.to_native(),
            protocol_version: h.protocol_version.to_native(),
            role: h.role,
            auth: h.auth,
            nonce: h.nonce,
        }
    }
}

/// Why a peer's hello is refused, or `None` to accept it. Checked in this order: the same
/// cluster, the same protocol version, the peer's identity (`identity_ok`: who the
/// receiver accepts, which depends on which side dialed), and a cluster key on both sides
/// or on neither. The transport and the blocking connection both ask this.
pub(crate) fn refusal(
    peer: &PeerHello,
    cluster_id: u64,
    identity_ok: bool,
    keyed: bool,
) -> Option<CloseReason> {
    if peer.cluster_id != cluster_id {
        Some(CloseReason::WrongCluster)
    } else if peer.protocol_version != PROTOCOL_VERSION {
        Some(CloseReason::VersionMismatch)
    } else if !identity_ok {
        Some(CloseReason::NotMember)
    } else if peer.auth != keyed {
        Some(CloseReason::AuthMissing)
    } else {
        None
    }
}

/// Builds our hello.
pub fn hello(cluster_id: u64, node_id: u64, role: u8, auth: bool, nonce: [u8; 32]) -> Hello {
    Hello {
        cluster_id,
        node_id,
        protocol_version: PROTOCOL_VERSION,
        role,
        auth,
        nonce,
    }
}

fn mac_input(
    key: &[u8],
    cluster_id: u64,
    sender_node: u64,
    sender_role: u8,
    receiver_nonce: &[u8; 32],
    sender_nonce: &[u8; 32],
) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(AUTH_LABEL);
    mac.update(&cluster_id.to_le_bytes());
    mac.update(&sender_node.to_le_bytes());
    mac.update(&[sender_role]);
    mac.update(receiver_nonce);
    mac.update(sender_nonce);
    mac
}

/// Our proof: MAC over our identity, the peer's challenge and our own nonce.
pub fn prove(
    key: &[u8],
    cluster_id: u64,
    my_node: u64,
    my_role: u8,
    peer_nonce: &[u8; 32],
    my_nonce: &[u8; 32],
) -> [u8; 32] {
    let out = mac_input(key, cluster_id, my_node, my_role, peer_nonce, my_nonce).finalize();
    out.into_bytes().into()
}

/// Checks the peer's proof in constant time.
pub fn verify(
    key: &[u8],
    cluster_id: u64,
    peer: &PeerHello,
    my_nonce: &[u8; 32],
    mac: &[u8; 32],
) -> bool {
    mac_input(
        key,
        cluster_id,
        peer.node_id,
        peer.role,
        my_nonce,
        &peer.nonce,
    )
    .verify_slice(mac)
    .is_ok()
}

/// Fresh 32-byte nonce from the kernel's CSPRNG.
pub fn nonce() -> std::io::Result<[u8; 32]> {
    use std::io::Read;
    let mut n = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut n)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proof_verifies_only_with_same_key_and_nonces() {
        let a_nonce = [1u8; 32];
        let b_nonce = [2u8; 32];
        let a = PeerHello {
            cluster_id: 7,
            node_id: 1,
            protocol_version: PROTOCOL_VERSION,
            role: 1,
            auth: true,
            nonce: a_nonce,
        };
        let mac = prove(b"key", 7, 1, 1, &b_nonce, &a_nonce);
        assert!(verify(b"key", 7, &a, &b_nonce, &mac));
        assert!(!verify(b"other", 7, &a, &b_nonce, &mac));
        assert!(!verify(b"key", 8, &a, &b_nonce, &mac));
        assert!(!verify(b"key", 7, &a, &[3u8; 32], &mac));
        // Reflection: B's own proof is not accepted as A's.
        let b = PeerHello {
            node_id: 2,
            nonce: b_nonce,
            ..a
        };
        let b_mac = prove(b"key", 7, 2, 1, &a_nonce, &b_nonce);
        assert!(verify(b"key", 7, &b, &a_nonce, &b_mac));
        assert!(!verify(b"key", 7, &a, &b_nonce, &b_mac));
    }

    #[test]
    fn nonces_differ() {
        assert_ne!(nonce().unwrap(), nonce().unwrap());
    }
}

//! The shard thread: one Raft group driven on one io_uring that carries the peer
//! sockets, the client sockets and the log's fdatasync.
//!
//! One turn of the loop: turn wall time into ticks, poll the transport (frames are
//! validated, stepped into the core, and the core's log actions executed at once, while
//! the frame's bytes are still in the receive buffer, so a follower appends the records
//! it received verbatim), start a group-commit sync if the core asked for one, send what
//! the core emitted (AppendEntries take their records straight from the mapped log),
//! publish the commit index to the applier, and answer clients: submits once their
//! entries are committed, reads once the applier reached their read index.
//!
//! Submits are acknowledged at commit, not after apply: the shard checks every command
//! before proposing it ([`Command::decode`] is the KV's only way to refuse one), so a
//! committed command's outcome is already decided and the applier cannot reject it. A
//! later read still waits for the applier to pass its read index, so reads observe every
//! acknowledged write. This takes the applier's two thread hand-offs (shard to applier,
//! applier back to shard) off the write path.

use std::collections::{BTreeMap, VecDeque};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use net::wire::{ArchivedClientMessage, ClientMessage, ClientStatus, RaftBody, RaftMessage};
use net::{ConnId, Dest, Event, Idle, Origin, SendError};
use quanta::Instant;
use storage::{HardStateFile, Log, PendingSync, RecordRun};
use tracing::{debug, info, warn};

use super::apply_gate::{ApplyGate, ReportCadence};
use super::convert::{from_wire, to_wire};
use super::machine::SharedKv;
use super::port::Port;
use super::status::{shard_status, ShardCounters, ShardReport};
use super::submits::{Outcome, Submits};
use super::NodeError;
use crate::applier::{ApplyResult, ShardLink};
use crate::kv::Command;
use crate::raft::{Action, Message, MessageBody, ProposeError, Replica, Role};
use crate::tuning::IdleStrategy;

/// Token namespace of the log's fdatasync operations on the ring.
const SYNC_TOKEN_BASE: u64 = 1 << 40;
/// Token of the poll on the applier's wake-up socket.
const WAKE_TOKEN: u64 = 1 << 41;
/// While reads wait for the applier, the shard re-checks the applied watermark this
/// often instead of sleeping a whole tick.
const APPLY_POLL: Duration = Duration::from_micros(50);

/// Settings of one shard thread, derived from the tuning files.
#[derive(Debug, Clone)]
pub struct ShardSettings {
    pub shard: u32,
    pub node_id: u64,
    pub tick: Duration,
    pub idle: IdleStrategy,
    pub fsync: bool,
    /// Most client requests waiting for commit (or held) at once; more get `Busy`.
    pub client_queue_depth: usize,
    /// Bytes of records per AppendEntries frame (below the transport's frame limit).
    pub frame_records_bytes_max: usize,
    /// How long a graceful stop waits for followers to catch up.
    pub drain_timeout: Duration,
    /// Every member's client address as replies carry it (formatted once here, not for
    /// every reply), for redirects to the leader.
    pub client_addrs: Vec<(u64, String)>,
    /// Committed entries a live replica may have left to apply before the leader holds
    /// new writes (`replication.apply_lag_entries_max`).
    pub apply_lag_max: u64,
    /// A follower whose applied report is older than this (an election timeout) no longer
    /// holds writes back: it is treated as down.
    pub report_stale_after: Duration,
    /// Committed entries that wake a parked applier at once (`applier.batch_entries_max`);
    /// fewer wait for the next tick, unless a client waits for the applier.
    pub applier_wake_entries: u64,
    /// Where the shard's rejoin mark lives: present while the core rejoins after a loss
    /// of data, removed when it reports the rejoin complete.
    pub rejoin_mark: std::path::PathBuf,
}

/// A checked submit the leader holds while a replica's applier catches up (see
/// `State::appliers_behind`): proposed, in arrival order, once the lag is back in bounds.
/// Holding instead of answering `Busy` keeps clients' pipelines full without retries.
#[derive(Debug)]
struct HeldSubmit {
    conn: ConnId,
    request_id: u64,
    /// The commands, back to back; `lens` cuts them apart.
    bytes: Vec<u8>,
    lens: Vec<u32>,
}

/// A linearizable read waiting for its ReadIndex round, then for the applier.
#[derive(Debug)]
struct PendingRead {
    conn: ConnId,
    request_id: u64,
    key: Vec<u8>,
    /// Set by ReadReady: the read is served once this index is applied.
    ready_at: Option<u64>,
}

/// An fdatasync in flight on the ring.
#[derive(Debug)]
struct InflightSync {
    pending: PendingSync,
    results: Vec<Option<i32>>,
}

/// Everything the shard owns except the transport, so the transport's event callback can
/// borrow it mutably.
struct State {
    settings: ShardSettings,
    replica: Replica,
    log: Log,
    hard_state: HardStateFile,
    link: ShardLink,
    kv: SharedKv,
    actions: Vec<Action>,
    /// Core messages to send once the transport is free again.
    outbox: Vec<Message>,
    /// Client frames to send.
    replies: Vec<(ConnId, ClientMessage)>,
    /// Connections that sent bad input, to close.
    to_close: Vec<(ConnId, String)>,
    sync_wanted: bool,
    /// With fsync off, appended entries count as persisted at the end of the turn.
    persist_now: bool,
    inflight_sync: Option<InflightSync>,
    /// Client requests whose entries were proposed, by connection and request id.
    submits: Submits<(ConnId, u64)>,
    held: VecDeque<HeldSubmit>,
    reads: BTreeMap<u64, PendingRead>,
    next_read_ctx: u64,
    draining: bool,
    fatal: Option<NodeError>,
    frames_rejected: u64,
    counters: ShardCounters,
    /// The members a rejoin waited for when last logged (see `log_rejoin_wait`).
    rejoin_awaiting: Vec<u64>,
    /// The shard's end of the applier's wake-up socket, polled on the ring.
    wake: Option<UnixStream>,
    wake_armed: bool,
    /// The applied index the last answer pass saw.
    applied_seen: u64,
    /// Leader: followers' applied reports and the rule that holds writes.
    gate: ApplyGate,
    /// Follower: when to report the applied index to the leader.
    reports: ReportCadence,
    /// When each peer's last Raft message arrived (leader: which followers a drain waits
    /// for).
    heard: Vec<(u64, Instant)>,
}

/// A running shard: the core, its log, and the node's transport.
pub struct Shard {
    port: Port,
    state: State,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("shard", &self.state.settings.shard)
            .field("role", &self.state.replica.role())
            .finish()
    }
}

impl Shard {
    pub(crate) fn new(
        settings: ShardSettings,
        replica: Replica,
        log: Log,
        hard_state: HardStateFile,
        mut link: ShardLink,
        kv: SharedKv,
        port: Port,
    ) -> Self {
        // The shard wakes the applier itself (`after_poll`, and on ticks).
        link.defer_applier_wakes();
        let gate = ApplyGate::new(settings.apply_lag_max, settings.report_stale_after);
        let reports = ReportCadence::new(settings.apply_lag_max, settings.tick);
        Shard {
            port,
            state: State {
                settings,
                replica,
                log,
                hard_state,
                link,
                kv,
                actions: Vec::with_capacity(256),
                outbox: Vec::with_capacity(64),
                replies: Vec::new(),
                to_close: Vec::new(),
                sync_wanted: false,
                persist_now: false,
                inflight_sync: None,
                submits: Submits::default(),
                held: VecDeque::new(),
                reads: BTreeMap::new(),
                next_read_ctx: 1,
                draining: false,
                fatal: None,
                frames_rejected: 0,
                counters: ShardCounters::default(),
                rejoin_awaiting: Vec::new(),
                wake: None,
                wake_armed: false,
                applied_seen: 0,
                gate,
                reports,
                heard: Vec::new(),
            },
        }
    }

    /// Runs until `stop` is set, then drains: no new requests, pending ones answered,
    /// followers given (bounded) time to catch up, everything synced and applied.
    /// `others_running` (shard 0 only) counts the other shards still running: shard 0
    /// carries their traffic, so it keeps serving until they have drained.
    pub fn run(
        mut self,
        stop: &AtomicBool,
        others_running: Option<&AtomicUsize>,
    ) -> Result<ShardReport, NodeError> {
        {
            let s = &mut self.state;
            match s.link.wake_socket() {
                Ok(sock) => s.wake = Some(sock),
                // Without it the shard polls the applied watermark instead; slower only.
                Err(e) => warn!(error = %e, "no applier wake-up socket"),
            }
            s.replica.start(&mut s.actions);
            s.execute(None, None)?;
        }
        let tick = self.state.settings.tick;
        let mut next_tick = Instant::now() + tick;
        let mut last_work = Instant::now();
        let mut drain_deadline: Option<Instant> = None;
        loop {
            let now = Instant::now();
            if now >= next_tick {
                while now >= next_tick {
                    let s = &mut self.state;
                    s.replica.tick(&mut s.actions);
                    s.execute(None, None)?;
                    next_tick += tick;
                }
                // Commits that were not worth a wake-up of their own (see `after_poll`)
                // wait at most a tick.
                self.state.link.wake_applier();
                self.state.log_rejoin_wait();
            }
            if stop.load(Ordering::Acquire) && drain_deadline.is_none() {
                info!(shard = self.state.settings.shard, "draining");
                self.state.draining = true;
                drain_deadline = Some(now + self.state.settings.drain_timeout);
            }
            if let Some(deadline) = drain_deadline {
                let others_done = others_running.is_none_or(|n| n.load(Ordering::Acquire) == 0);
                // The others are bounded by their own drain timeout.
                let hard_deadline = deadline + self.state.settings.drain_timeout;
                if (self.state.drained() && others_done)
                    || now >= hard_deadline
                    || (now >= deadline && others_done)
                {
                    if now >= deadline {
                        warn!(shard = self.state.settings.shard, "drain timed out");
                    }
                    break;
                }
            }
            let idle = self.idle(now, next_tick, last_work);
            let state = &mut self.state;
            let worked = self.port.poll(idle, |event| state.on_event(event))?;
            if let Some(e) = self.state.fatal.take() {
                return Err(e);
            }
            let progressed = self.after_poll()?;
            if worked > 0 || progressed {
                last_work = Instant::now();
            }
        }
        self.finish()
    }

    fn idle(&self, now: Instant, next_tick: Instant, last_work: Instant) -> Idle {
        let until_tick = next_tick.saturating_duration_since(now);
        let waiting_apply = self.state.waits_for_applier();
        // Reads and held submits wait for the applier: sleep in the ring until it writes to the
        // wake-up socket (or the next tick), unless it already moved on.
        let woken_by_applier = waiting_apply
            && self.state.wake_armed
            && !self.state.draining
            && self.state.link.request_wake(self.state.applied_seen);
        let wait = if waiting_apply && !woken_by_applier {
            until_tick.min(APPLY_POLL)
        } else {
            until_tick
        };
        match self.state.settings.idle {
            IdleStrategy::Spin => Idle::Spin,
            IdleStrategy::SpinThenWait { spin_us } => {
                if now.duration_since(last_work) < Duration::from_micros(spin_us) {
                    Idle::Spin
                } else {
                    Idle::Wait(wait)
                }
            }
            IdleStrategy::Wait => Idle::Wait(wait),
        }
    }

    /// Work between polls: start syncs, send, publish, answer. Returns whether anything
    /// moved.
    fn after_poll(&mut self) -> Result<bool, NodeError> {
        let s = &mut self.state;
        if let (Some(sock), false) = (&s.wake, s.wake_armed) {
            if self
                .port
                .ring()
                .poll_readable(sock.as_raw_fd(), WAKE_TOKEN)
                .is_ok()
            {
                s.wake_armed = true;
            }
        }
        for (conn, why) in s.to_close.drain(..) {
            warn!(shard = s.settings.shard, reason = %why, "closing connection after bad input");
            self.port.close(conn);
        }
        if s.persist_now {
            s.persist_now = false;
            let last = s.log.last();
            s.replica
                .on_persisted(last.index, last.term, &mut s.actions);
            s.execute(None, None)?;
        }
        self.state.release_held()?;
        self.start_sync()?;
        let sent = self.flush_outbox();
        self.report_applied();
        let answered = self.state.answer_clients();
        let s = &mut self.state;
        for (conn, reply) in s.replies.drain(..) {
            match self
                .port
                .send_client(Dest::Conn(conn), s.settings.shard, &reply)
            {
                Ok(()) => {}
                Err(e) => debug!(error = %e, "client reply dropped"),
            }
        }
        // Messages and replies leave before the applier is woken: its wake-up is a futex
        // call and, on a shared core, a context switch that would otherwise delay them.
        self.port.flush_sends();
        let s = &mut self.state;
        s.link.flush();
        // Writes are answered at commit, so a parked applier is woken at once only for a
        // batch's worth of entries or a client waiting on it; otherwise at the next tick.
        // Waking it for every commit cost one client's latency about a tenth on a shared
        // 2-vCPU host (three wake-ups per request competing with the request's own).
        if s.waits_for_applier() || s.link.unwoken_entries() >= s.settings.applier_wake_entries {
            s.link.wake_applier();
        }
        Ok(sent || answered)
    }

    /// Follower: tells the leader how far its applier got, so the leader can hold writes
    /// while this replica falls behind (when: [`ReportCadence`]). At most once per turn,
    /// and a follower wakes at least once per tick.
    fn report_applied(&mut self) {
        let s = &mut self.state;
        let (Role::Follower, Some(leader)) = (s.replica.role(), s.replica.leader()) else {
            return;
        };
        let applied = s.link.applied_index();
        let term = s.replica.term();
        let now = Instant::now();
        if !s
            .reports
            .due(leader, term, applied, s.replica.commit(), now)
        {
            return;
        }
        let report = RaftMessage {
            from: s.settings.node_id,
            to: leader,
            term,
            body: RaftBody::Applied { index: applied },
        };
        match self
            .port
            .send_raft(Dest::Peer(leader), s.settings.shard, &report, &[])
        {
            Ok(()) => s.reports.sent(leader, term, applied, now),
            Err(e) => log_send_error(leader, e),
        }
    }

    fn start_sync(&mut self) -> Result<(), NodeError> {
        let s = &mut self.state;
        if !s.settings.fsync || !s.sync_wanted || s.inflight_sync.is_some() {
            return Ok(());
        }
        s.sync_wanted = false;
        let Some(pending) = s.log.begin_sync().map_err(NodeError::Storage)? else {
            // Everything appended is covered by a sync that already completed.
            let durable = s.log.durable();
            s.replica
                .on_persisted(durable.index, durable.term, &mut s.actions);
            return s.execute(None, None);
        };
        for (i, &fd) in pending.fds().iter().enumerate() {
            self.port
                .ring()
                .fdatasync(fd, SYNC_TOKEN_BASE + i as u64)
                .map_err(|e| NodeError::Transport(e.into()))?;
        }
        self.state.inflight_sync = Some(InflightSync {
            results: vec![None; pending.fds().len()],
            pending,
        });
        Ok(())
    }

    /// Sends what the core emitted. AppendEntries take their record bytes straight from
    /// the mapping; a batch crossing a segment boundary leaves as two frames.
    fn flush_outbox(&mut self) -> bool {
        let s = &mut self.state;
        let sent = !s.outbox.is_empty();
        let shard = s.settings.shard;
        let last_index = s.log.last_index();
        for msg in s.outbox.drain(..) {
            let to = msg.to;
            let (prev_index, prev_term, commit, count) = match &msg.body {
                MessageBody::AppendEntries {
                    prev_index,
                    prev_term,
                    commit,
                    entries,
                } if !entries.is_empty() => (*prev_index, *prev_term, *commit, entries.len()),
                _ => {
                    let wire = to_wire(&msg, last_index);
                    if let Err(e) = self.port.send_raft(Dest::Peer(to), shard, &wire, &[]) {
                        log_send_error(to, e);
                    }
                    continue;
                }
            };
            let last = prev_index + count as u64;
            let (mut prev, mut prev_t) = (prev_index, prev_term);
            while prev < last {
                let run = match s
                    .log
                    .read_run(prev + 1..=last, s.settings.frame_records_bytes_max)
                {
                    Ok(run) => run,
                    Err(e) => {
                        // The core only names entries it holds; a read failure is a storage
                        // fault. Stop sending this batch; the follower will be re-probed.
                        warn!(error = %e, "reading records for AppendEntries failed");
                        s.fatal.get_or_insert(NodeError::Storage(e));
                        break;
                    }
                };
                let (run_last, run_last_term) = run.last().expect("read_run returns >= 1 record");
                let records = run_last - prev;
                // The header straight from the range: the records carry their own terms.
                let wire = RaftMessage {
                    from: msg.from,
                    to,
                    term: msg.term,
                    body: RaftBody::AppendEntries {
                        prev_index: prev,
                        prev_term: prev_t,
                        commit,
                        count: u32::try_from(records).expect("batch_entries_max fits u32"),
                    },
                };
                if let Err(e) = self
                    .port
                    .send_raft(Dest::Peer(to), shard, &wire, run.bytes())
                {
                    log_send_error(to, e);
                    break;
                }
                s.counters.append_msgs += 1;
                s.counters.append_entries += records;
                prev = run_last;
                prev_t = run_last_term;
            }
        }
        sent
    }

    fn finish(mut self) -> Result<ShardReport, NodeError> {
        let s = &mut self.state;
        if s.settings.fsync {
            s.log.sync().map_err(NodeError::Storage)?;
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !s.link.flush() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(100));
        }
        s.link.wake_applier();
        let report = shard_status(
            s.settings.node_id,
            s.settings.shard,
            &s.replica,
            &s.kv,
            s.counters,
        );
        info!(
            shard = s.settings.shard,
            commit = report.commit,
            applied = report.applied,
            relay_drops = self.port.relay_drops(),
            frames_rejected = s.frames_rejected,
            "shard stopped"
        );
        Ok(report)
    }
}

fn log_send_error(to: u64, e: SendError) {
    match e {
        SendError::NotConnected => {}
        e => debug!(peer = to, error = %e, "peer send failed; the core will retry"),
    }
}

impl State {
    fn on_event(&mut self, event: Event<'_>) {
        if self.fatal.is_some() {
            return;
        }
        let result = match event {
            Event::Frame {
                conn,
                from: Origin::Peer(node),
                message: net::Message::Raft(m),
                payload,
                ..
            } => self.on_peer_frame(conn, node, m, payload),
            Event::Frame {
                conn,
                message: net::Message::Client(m),
                ..
            } => self.on_client_frame(conn, m),
            Event::Frame { conn, .. } => {
                self.to_close
                    .push((conn, "raft frame from a client".into()));
                Ok(())
            }
            Event::Foreign {
                token: WAKE_TOKEN, ..
            } => {
                self.wake_armed = false;
                if let Some(sock) = &self.wake {
                    let mut buf = [0u8; 64];
                    // Non-blocking: drain what the applier wrote, stop at WouldBlock.
                    while matches!((&*sock).read(&mut buf), Ok(n) if n > 0) {}
                }
                Ok(())
            }
            Event::Foreign { token, result, .. } => self.on_sync_done(token, result),
            Event::PeerUp { node, .. } => {
                info!(shard = self.settings.shard, peer = node, "peer connected");
                Ok(())
            }
            Event::PeerDown { node, .. } => {
                info!(
                    shard = self.settings.shard,
                    peer = node,
                    "peer disconnected"
                );
                Ok(())
            }
            _ => Ok(()),
        };
        if let Err(e) = result {
            self.fatal = Some(e);
        }
    }

    fn on_peer_frame(
        &mut self,
        conn: ConnId,
        node: u64,
        m: &net::wire::ArchivedRaftMessage,
        payload: &[u8],
    ) -> Result<(), NodeError> {
        let from = m.from.to_native();
        if from != node {
            self.frames_rejected += 1;
            self.to_close.push((
                conn,
                format!("peer {node} sent a message claiming to be from {from}"),
            ));
            return Ok(());
        }
        self.heard_from(node);
        if let net::wire::ArchivedRaftBody::Applied { index } = &m.body {
            if !payload.is_empty() {
                self.frames_rejected += 1;
                self.to_close.push((
                    conn,
                    format!("peer {node}: payload attached to an applied report"),
                ));
            } else if m.term.to_native() == self.replica.term() {
                self.on_applied_report(node, index.to_native());
            }
            return Ok(());
        }
        let (msg, run) = match from_wire(m, payload) {
            Ok(x) => x,
            Err(e) => {
                self.frames_rejected += 1;
                self.to_close.push((conn, format!("peer {node}: {e}")));
                return Ok(());
            }
        };
        if let Err(e) = self.replica.step(&msg, &mut self.actions) {
            debug!(shard = self.settings.shard, peer = node, reason = %e, "message ignored");
        }
        self.execute(run.as_ref(), None)
    }

    fn on_client_frame(
        &mut self,
        conn: ConnId,
        m: &ArchivedClientMessage,
    ) -> Result<(), NodeError> {
        match m {
            ArchivedClientMessage::Submit {
                request_id,
                payloads,
            } => self.on_submit(conn, request_id.to_native(), payloads),
            ArchivedClientMessage::Read { request_id, key } => {
                self.on_read(conn, request_id.to_native(), key.as_slice());
                Ok(())
            }
            ArchivedClientMessage::Status { request_id } => {
                let report = shard_status(
                    self.settings.node_id,
                    self.settings.shard,
                    &self.replica,
                    &self.kv,
                    self.counters,
                );
                self.replies.push((
                    conn,
                    ClientMessage::StatusReply {
                        request_id: request_id.to_native(),
                        status: report,
                    },
                ));
                Ok(())
            }
            ArchivedClientMessage::TransferLeader { request_id, to } => {
                let result = self
                    .replica
                    .transfer_leader(to.to_native(), &mut self.actions);
                let (status, detail) = match result {
                    Ok(()) => (ClientStatus::Ok, String::new()),
                    Err(crate::raft::AdminError::NotLeader { .. }) => {
                        (ClientStatus::NotLeader, String::new())
                    }
                    Err(e) => (ClientStatus::Rejected, e.to_string()),
                };
                self.replies.push((
                    conn,
                    ClientMessage::AdminReply {
                        request_id: request_id.to_native(),
                        status,
                        leader_hint: self.replica.leader(),
                        detail,
                    },
                ));
                self.execute(None, None)
            }
            _ => {
                self.to_close
                    .push((conn, "client sent a reply-kind message".into()));
                Ok(())
            }
        }
    }

    fn on_applied_report(&mut self, node: u64, applied: u64) {
        self.gate
            .on_report(node, applied, self.replica.commit(), Instant::now());
    }

    /// Leader: whether new writes must wait for an applier (see [`ApplyGate`]).
    fn appliers_behind(&self) -> bool {
        self.gate.holds_writes(
            self.replica.commit(),
            self.link.applied_index(),
            Instant::now(),
        )
    }

    fn reply(&mut self, conn: ConnId, request_id: u64, status: ClientStatus, index: u64) {
        let reply = write_reply(&self.replica, &self.settings, request_id, status, index);
        self.replies.push((conn, reply));
    }

    fn on_submit(
        &mut self,
        conn: ConnId,
        request_id: u64,
        payloads: &rkyv::vec::ArchivedVec<rkyv::vec::ArchivedVec<u8>>,
    ) -> Result<(), NodeError> {
        if self.draining || self.submits.len() + self.held.len() >= self.settings.client_queue_depth
        {
            self.reply(conn, request_id, ClientStatus::Busy, 0);
            return Ok(());
        }
        let slices: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
        let mut lens = Vec::with_capacity(slices.len());
        for p in &slices {
            // A command is checked here, before it enters the log, so the reply can leave
            // at commit: what the applier would refuse never gets proposed.
            let checked = Command::decode(p).map_err(|e| e.reason());
            match (u32::try_from(p.len()), checked) {
                (Ok(len), Ok(_)) => lens.push(len),
                (_, Err(reason)) => {
                    debug!(
                        shard = self.settings.shard,
                        request_id, reason, "submit rejected"
                    );
                    self.reply(conn, request_id, ClientStatus::Rejected, 0);
                    return Ok(());
                }
                (Err(_), _) => {
                    self.reply(conn, request_id, ClientStatus::Rejected, 0);
                    return Ok(());
                }
            }
        }
        if self.replica.role() == Role::Leader && (!self.held.is_empty() || self.appliers_behind())
        {
            self.counters.writes_held += 1;
            self.held.push_back(HeldSubmit {
                conn,
                request_id,
                bytes: slices.concat(),
                lens,
            });
            return Ok(());
        }
        self.propose_submit(conn, request_id, &slices, &lens)
    }

    /// Proposes held submits, oldest first, while the appliers are within bounds; answers
    /// them `NotLeader` if leadership was lost and `Busy` if the node is draining.
    fn release_held(&mut self) -> Result<(), NodeError> {
        while let Some(front) = self.held.front() {
            let refused = if self.draining {
                Some(ClientStatus::Busy)
            } else if self.replica.role() != Role::Leader {
                Some(ClientStatus::NotLeader)
            } else if self.appliers_behind() {
                return Ok(());
            } else {
                None
            };
            let (conn, request_id) = (front.conn, front.request_id);
            if let Some(status) = refused {
                self.held.pop_front();
                self.reply(conn, request_id, status, 0);
                continue;
            }
            let held = self.held.pop_front().expect("front exists");
            let mut slices = Vec::with_capacity(held.lens.len());
            let mut at = 0;
            for &len in &held.lens {
                slices.push(&held.bytes[at..at + len as usize]);
                at += len as usize;
            }
            self.propose_submit(conn, request_id, &slices, &held.lens)?;
        }
        Ok(())
    }

    /// Proposes a checked submit and executes the core's actions.
    fn propose_submit(
        &mut self,
        conn: ConnId,
        request_id: u64,
        slices: &[&[u8]],
        lens: &[u32],
    ) -> Result<(), NodeError> {
        match self.replica.propose(lens, &mut self.actions) {
            Ok((term, first_index)) => {
                let last_index = first_index + lens.len() as u64 - 1;
                self.submits.push((conn, request_id), term, last_index);
                self.execute(None, Some(slices))
            }
            Err(ProposeError::NotLeader { .. }) => {
                self.reply(conn, request_id, ClientStatus::NotLeader, 0);
                Ok(())
            }
            Err(ProposeError::Backpressure | ProposeError::TransferInProgress) => {
                self.reply(conn, request_id, ClientStatus::Busy, 0);
                Ok(())
            }
            Err(ProposeError::Empty) => {
                self.reply(conn, request_id, ClientStatus::Rejected, 0);
                Ok(())
            }
        }
    }

    fn on_read(&mut self, conn: ConnId, request_id: u64, key: &[u8]) {
        let status = if self.draining {
            Some(ClientStatus::Busy)
        } else {
            let ctx = self.next_read_ctx;
            self.next_read_ctx += 1;
            match self.replica.read_index(ctx, &mut self.actions) {
                Ok(()) => {
                    self.reads.insert(
                        ctx,
                        PendingRead {
                            conn,
                            request_id,
                            key: key.to_vec(),
                            ready_at: None,
                        },
                    );
                    None
                }
                Err(_) => Some(ClientStatus::NotLeader),
            }
        };
        if let Some(status) = status {
            self.read_reply(conn, request_id, status, None);
        }
        // Read rounds only emit messages and ReadReady/ReadFailed; no log payload needed.
        if let Err(e) = self.execute(None, None) {
            self.fatal = Some(e);
        }
    }

    fn read_reply(
        &mut self,
        conn: ConnId,
        request_id: u64,
        status: ClientStatus,
        value: Option<Vec<u8>>,
    ) {
        self.replies.push((
            conn,
            ClientMessage::ReadReply {
                request_id,
                status,
                leader_hint: self.replica.leader(),
                leader_addr: leader_addr(&self.replica, &self.settings, status),
                value,
            },
        ));
    }

    fn on_sync_done(&mut self, token: u64, result: i32) -> Result<(), NodeError> {
        let slot = token
            .checked_sub(SYNC_TOKEN_BASE)
            .expect("only syncs are foreign operations") as usize;
        let inflight = self.inflight_sync.as_mut().expect("a sync is in flight");
        assert!(
            inflight.results[slot].is_none(),
            "sync slot {slot} completed twice"
        );
        inflight.results[slot] = Some(result);
        if inflight.results.iter().any(Option::is_none) {
            return Ok(());
        }
        let InflightSync { pending, results } = self.inflight_sync.take().expect("checked");
        let results: Vec<i32> = results.into_iter().map(|r| r.expect("all set")).collect();
        let durable = self
            .log
            .complete_sync(pending, &results)
            .map_err(NodeError::Storage)?;
        self.replica
            .on_persisted(durable.index, durable.term, &mut self.actions);
        self.execute(None, None)
    }

    /// Executes the core's actions in order. `run` is the record run of the AppendEntries
    /// just stepped; `proposal` the payloads of the proposal just accepted.
    fn execute(
        &mut self,
        run: Option<&RecordRun<'_>>,
        proposal: Option<&[&[u8]]>,
    ) -> Result<(), NodeError> {
        let mut actions = std::mem::take(&mut self.actions);
        let result = self.execute_all(&mut actions, run, proposal);
        actions.clear();
        self.actions = actions;
        result
    }

    fn execute_all(
        &mut self,
        actions: &mut Vec<Action>,
        run: Option<&RecordRun<'_>>,
        proposal: Option<&[&[u8]]>,
    ) -> Result<(), NodeError> {
        for action in actions.drain(..) {
            match action {
                Action::PersistHardState(hs) => {
                    self.hard_state
                        .save(storage::HardState {
                            term: hs.term,
                            voted_for: hs.vote,
                            commit: hs.commit,
                        })
                        .map_err(NodeError::Storage)?;
                }
                Action::AppendProposal {
                    term,
                    first_index,
                    count,
                } => {
                    let empty: [&[u8]; 1] = [&[]];
                    let payloads = match proposal {
                        Some(p) => {
                            assert_eq!(p.len() as u64, count, "proposal size");
                            p
                        }
                        None => {
                            // The only proposal the core makes by itself is the no-op.
                            assert_eq!(count, 1, "unexpected core-made proposal");
                            &empty[..]
                        }
                    };
                    self.log
                        .append_entries(term, first_index, payloads.iter().copied())
                        .map_err(NodeError::Storage)?;
                }
                Action::Truncate { index } => {
                    self.log.truncate_after(index).map_err(NodeError::Storage)?;
                    // A deposed leader's submits whose entries the new leader overwrote.
                    self.submits.truncated(index, |(conn, id), outcome, last| {
                        let reply = submit_reply(&self.replica, &self.settings, id, outcome, last);
                        self.replies.push((conn, reply));
                    });
                }
                Action::Append {
                    first_index,
                    last_index,
                } => {
                    let run = run.expect("Append follows an AppendEntries");
                    let sub = suffix(run, first_index)?;
                    assert_eq!(sub.last().map(|(i, _)| i), Some(last_index));
                    self.log.append_run(&sub).map_err(NodeError::Storage)?;
                }
                Action::Sync => {
                    if self.settings.fsync {
                        self.sync_wanted = true;
                    } else {
                        self.persist_now = true;
                    }
                }
                Action::Send(m) => self.outbox.push(m),
                Action::Apply { last, .. } => {
                    self.log.publish_readable(last);
                    self.link.publish_commit(last);
                }
                Action::ReadReady { ctx, index } => {
                    if let Some(read) = self.reads.get_mut(&ctx) {
                        read.ready_at = Some(index);
                    }
                }
                Action::ReadFailed { ctx, .. } => {
                    if let Some(read) = self.reads.remove(&ctx) {
                        self.read_reply(read.conn, read.request_id, ClientStatus::NotLeader, None);
                    }
                }
                Action::RejoinComplete { index } => {
                    let mark = &self.settings.rejoin_mark;
                    super::identity::clear_rejoin_mark(mark).map_err(|e| {
                        NodeError::DataDir(format!(
                            "cannot remove the rejoin mark {}: {e}",
                            mark.display()
                        ))
                    })?;
                    info!(
                        shard = self.settings.shard,
                        index, "rejoin complete: caught up with the leader, voting again"
                    );
                }
                Action::RoleChanged { role, term, leader } => {
                    info!(shard = self.settings.shard, %role, term, ?leader, "role changed");
                    if role == Role::Leader {
                        self.link.became_leader(term);
                    }
                }
            }
        }
        Ok(())
    }

    /// Answers submits whose entries are committed and reads whose read index the
    /// applier has reached.
    fn answer_clients(&mut self) -> bool {
        while let Some(applied) = self.link.pop_result() {
            if let ApplyResult::Rejected(r) = applied.result {
                // Cannot happen: commands are checked before they are proposed. Logged so a
                // state machine that breaks that contract is visible.
                warn!(
                    shard = self.settings.shard,
                    index = applied.index,
                    reason = r.reason,
                    "the state machine rejected a command that passed its check"
                );
            }
        }
        let applied = self.link.applied_index();
        self.applied_seen = applied;
        let replica = &self.replica;
        let mut answered = self.submits.committed(
            replica.commit(),
            |i| replica.term_at(i),
            |(conn, id), outcome, last| {
                let reply = submit_reply(replica, &self.settings, id, outcome, last);
                self.replies.push((conn, reply));
            },
        );
        let ready: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, r)| r.ready_at.is_some_and(|i| i <= applied))
            .map(|(&ctx, _)| ctx)
            .collect();
        for ctx in ready {
            let read = self.reads.remove(&ctx).expect("listed above");
            let value = self.kv.lock().get(&read.key).map(<[u8]>::to_vec);
            self.read_reply(read.conn, read.request_id, ClientStatus::Ok, value);
            answered = true;
        }
        answered
    }

    /// Whether clients wait for the applier: reads whose read index is known, writes held
    /// for the appliers, or a graceful stop.
    fn waits_for_applier(&self) -> bool {
        !self.held.is_empty() || self.reads.values().any(|r| r.ready_at.is_some()) || self.draining
    }

    /// A graceful stop is complete when every accepted request was answered, the applier
    /// has applied the commit index, and (on a leader) every follower holds it.
    fn drained(&self) -> bool {
        if !self.submits.is_empty()
            || !self.held.is_empty()
            || !self.reads.is_empty()
            || self.inflight_sync.is_some()
        {
            return false;
        }
        let commit = self.replica.commit();
        if self.link.applied_index() < commit {
            return false;
        }
        if self.replica.role() == Role::Leader {
            // Only followers heard from within an election timeout: a dead or cut-off one
            // cannot catch up, and would only make the drain wait out its timeout. (Not
            // the core's `recently_active`: check-quorum clears it each election timeout,
            // so right after a clear a live, lagging follower would not be waited for.)
            let now = Instant::now();
            return self
                .replica
                .status()
                .progress
                .iter()
                .all(|p| p.match_index >= commit || !self.heard_within(p.id, now));
        }
        true
    }

    /// Rejoining: says which members' terms the rejoin still waits for whenever that
    /// changes (it waits for all of them, so an operator needs to know who is missing).
    fn log_rejoin_wait(&mut self) {
        let awaiting = self.replica.rejoin_awaiting();
        if awaiting == self.rejoin_awaiting {
            return;
        }
        if awaiting.is_empty() {
            info!(
                shard = self.settings.shard,
                "rejoin: every member told its term; catching up before voting"
            );
        } else {
            info!(
                shard = self.settings.shard,
                nodes = ?awaiting,
                "rejoin: waiting for these members' terms (every member must answer)"
            );
        }
        self.rejoin_awaiting = awaiting;
    }

    fn heard_from(&mut self, node: u64) {
        let now = Instant::now();
        match self.heard.iter_mut().find(|(id, _)| *id == node) {
            Some((_, at)) => *at = now,
            None => self.heard.push((node, now)),
        }
    }

    /// Whether `node` sent a Raft message within the last election timeout.
    fn heard_within(&self, node: u64, now: Instant) -> bool {
        self.heard.iter().any(|&(id, at)| {
            id == node && now.saturating_duration_since(at) < self.settings.report_stale_after
        })
    }
}

/// The known leader's client address, for a `NotLeader` reply only: where to retry. A
/// reply with any other status comes from the node the client should keep using, so it
/// carries none (and no per-reply copy of the address).
fn leader_addr(
    replica: &Replica,
    settings: &ShardSettings,
    status: ClientStatus,
) -> Option<String> {
    if status != ClientStatus::NotLeader {
        return None;
    }
    let leader = replica.leader()?;
    settings
        .client_addrs
        .iter()
        .find(|(node, _)| *node == leader)
        .map(|(_, addr)| addr.clone())
}

/// A reply to a client's request, with the leader's id (and address, on `NotLeader`).
fn write_reply(
    replica: &Replica,
    settings: &ShardSettings,
    request_id: u64,
    status: ClientStatus,
    index: u64,
) -> ClientMessage {
    ClientMessage::Reply {
        request_id,
        status,
        leader_hint: replica.leader(),
        leader_addr: leader_addr(replica, settings, status),
        index,
    }
}

/// How a client hears what became of its write, whose entries end at `last`.
fn submit_reply(
    replica: &Replica,
    settings: &ShardSettings,
    request_id: u64,
    outcome: Outcome,
    last: u64,
) -> ClientMessage {
    let status = match outcome {
        Outcome::Committed => ClientStatus::Ok,
        // Not written: sending it again cannot apply it twice.
        Outcome::Replaced => ClientStatus::NotLeader,
        // Outcome unknown: it may still be committed.
        Outcome::Unknown => ClientStatus::Timeout,
    };
    write_reply(replica, settings, request_id, status, last)
}

/// The part of `run` from `first_index` on (the prefix was already in the log).
fn suffix<'a>(run: &RecordRun<'a>, first_index: u64) -> Result<RecordRun<'a>, NodeError> {
    let (run_first, _) = run.first().expect("Append names records of the run");
    if first_index == run_first {
        return Ok(*run);
    }
    let mut offset = 0usize;
    for e in run.iter() {
        if e.index == first_index {
            break;
        }
        offset += storage::record_len(e.payload.len());
    }
    // Re-validation of the tail is cheap next to the rare overlap that needs it.
    RecordRun::validate(&run.bytes()[offset..]).map_err(|e| NodeError::Corrupt(e.to_string()))
}

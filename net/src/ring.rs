//! The ring driver: one io_uring per shard thread, shared by sockets and foreign operations
//! (e.g. the log's fdatasync).
//!
//! Ownership rule: every buffer an operation reads or writes is moved into the driver's slot
//! table when the SQE is pushed and handed back only with its final completion. A slot index
//! is the SQE's `user_data`; the caller's token travels in the slot. The slot table is sized
//! at start-up, so in-flight operations are bounded ([`RingError::Busy`] past the limit), and
//! the completion queue is sized so that it cannot overflow.
//!
//! This module and nothing else in the crate contains `unsafe`.

use std::alloc::{self, Layout};
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, IoUring, Probe};

use crate::buf::RecvBuf;
use crate::error::RingError;

/// Slots kept back for the driver's own operations (cancels, wait timeouts).
const RESERVED_SLOTS: u32 = 16;
/// Buffer group id of the provided-buffer ring.
const BUF_GROUP: u16 = 0;
/// How long dropping a ring waits for the kernel to give back in-flight buffers.
const DROP_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Ring sizing and features to try. Filled from the host tuning file; every feature is
/// probed and falls back (one log line) when the kernel lacks it.
#[derive(Debug, Clone)]
pub struct RingConfig {
    /// Submission queue entries (power of two).
    pub sq_entries: u32,
    /// Completion queue entries (power of two); must cover in-flight ops plus provided buffers.
    pub cq_entries: u32,
    /// Maximum caller operations in flight at once.
    pub inflight_ops_max: u32,
    /// Kernel submission polling thread.
    pub sqpoll: bool,
    /// CPU the SQPOLL thread is pinned to.
    pub sqpoll_cpu: Option<u32>,
    /// SQPOLL thread idle time before it sleeps.
    pub sqpoll_idle_ms: u32,
    /// Size of the sparse registered-file table (0 = do not register files).
    pub registered_files: u32,
    /// Use a provided-buffer ring with multishot receive: one SQE per connection instead of
    /// one per receive, at the cost of one copy from the shared buffer into the connection's
    /// frame buffer. Off by default: single-shot receives land directly in the frame buffer,
    /// which is what bulk replication wants.
    pub provided_buffers: bool,
    /// Number of provided buffers (power of two, <= 32768).
    pub provided_buf_count: u16,
    /// Size of each provided buffer.
    pub provided_buf_bytes: u32,
    /// Use zero-copy send for large sends.
    pub send_zc: bool,
    /// Sends at least this large use SEND_ZC when available.
    pub send_zc_threshold_bytes: usize,
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            sq_entries: 256,
            cq_entries: 2048,
            inflight_ops_max: 1024,
            sqpoll: false,
            sqpoll_cpu: None,
            sqpoll_idle_ms: 1000,
            registered_files: 256,
            provided_buffers: false,
            provided_buf_count: 256,
            provided_buf_bytes: 64 * 1024,
            send_zc: true,
            send_zc_threshold_bytes: 64 * 1024,
        }
    }
}

impl RingConfig {
    fn validate(&self) -> Result<(), RingError> {
        if !self.sq_entries.is_power_of_two() || !self.cq_entries.is_power_of_two() {
            return Err(RingError::Config(
                "sq_entries and cq_entries must be powers of two",
            ));
        }
        if self.inflight_ops_max == 0 {
            return Err(RingError::Config("inflight_ops_max must be > 0"));
        }
        if self.provided_buffers {
            if !self.provided_buf_count.is_power_of_two() || self.provided_buf_count > 32768 {
                return Err(RingError::Config(
                    "provided_buf_count must be a power of two <= 32768",
                ));
            }
            if self.provided_buf_bytes == 0 {
                return Err(RingError::Config("provided_buf_bytes must be > 0"));
            }
        }
        let bufs = if self.provided_buffers {
            u32::from(self.provided_buf_count)
        } else {
            0
        };
        let need = self.inflight_ops_max + RESERVED_SLOTS + bufs;
        if self.cq_entries < need {
            return Err(RingError::Config(
                "cq_entries must be >= inflight_ops_max + 16 + provided_buf_count",
            ));
        }
        Ok(())
    }
}

/// What the kernel turned out to support, after probing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Features {
    /// SQPOLL thread running.
    pub sqpoll: bool,
    /// Sparse registered-file table available.
    pub registered_files: bool,
    /// Provided-buffer ring registered (multishot receive is tried on top of it).
    pub provided_buffers: bool,
    /// Multishot receive works (cleared at the first EINVAL).
    pub recv_multishot: bool,
    /// SEND_ZC supported.
    pub send_zc: bool,
    /// Waits with a timeout go through IORING_ENTER_EXT_ARG.
    pub ext_arg: bool,
    /// COOP_TASKRUN + TASKRUN_FLAG: completion work runs when we enter the ring, signalled by
    /// a flag a spinning thread checks, instead of interrupting the thread.
    pub coop_taskrun: bool,
}

/// A file descriptor as operations should name it: registered slot when available.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdRef {
    raw: RawFd,
    fixed: Option<u32>,
    copy_only: bool,
}

impl FdRef {
    /// Whether the fd sits in the registered-file table.
    pub fn is_fixed(&self) -> bool {
        self.fixed.is_some()
    }

    /// The same fd, never sent to with zero-copy sends. For a socket whose peer is on this
    /// host: loopback delivery copies every zero-copy fragment into the receiver's buffer
    /// anyway (`skb_copy_ubufs`), after pinning the pages, and posts a notification per
    /// send, so zero copy costs more than a plain copying send there.
    pub fn copy_only(self) -> FdRef {
        FdRef {
            copy_only: true,
            ..self
        }
    }
}

macro_rules! with_fd {
    ($fd:expr, |$t:ident| $body:expr) => {
        match $fd.fixed {
            Some(slot) => {
                let $t = types::Fixed(slot);
                $body
            }
            None => {
                let $t = types::Fd($fd.raw);
                $body
            }
        }
    };
}

/// A finished operation, with its buffer handed back.
#[derive(Debug)]
pub enum Completion {
    /// A foreign operation pushed with [`Ring::push_foreign`].
    Foreign {
        /// Caller's token.
        token: u64,
        /// CQE result (negative errno on failure).
        result: i32,
        /// CQE flags.
        flags: u32,
    },
    /// A send finished. `result` bytes from wire offset `off` went out (or `-errno`).
    Sent {
        /// Caller's token.
        token: u64,
        /// Bytes sent or `-errno`.
        result: i32,
        /// The buffer, handed back.
        buf: SendBuf,
        /// Offset the send started at.
        off: usize,
    },
    /// A single-shot receive finished; the received bytes are already committed to `buf`.
    Received {
        /// Caller's token.
        token: u64,
        /// Bytes received, 0 at end of stream, or `-errno`.
        result: i32,
        /// The buffer, handed back.
        buf: RecvBuf,
    },
    /// One multishot receive completion. Its bytes sit in `buf` (read them with
    /// [`Ring::provided`]) until the caller hands the buffer back with [`Ring::recycle`].
    /// When `more` is false the multishot ended and must be re-armed.
    ReceivedProvided {
        /// Caller's token.
        token: u64,
        /// Bytes received, 0 at end of stream, or `-errno`.
        result: i32,
        /// Whether the multishot receive is still armed.
        more: bool,
        /// The provided buffer holding the bytes, when the kernel picked one.
        buf: Option<ProvidedBuf>,
    },
    /// An accept finished.
    Accepted {
        /// Caller's token.
        token: u64,
        /// The connection, or `-errno`.
        result: Result<TcpStream, i32>,
    },
    /// A connect finished; on failure drop the stream.
    Connected {
        /// Caller's token.
        token: u64,
        /// 0 or `-errno`.
        result: i32,
        /// The socket (connected when `result == 0`).
        stream: TcpStream,
    },
}

/// A payload sent in place (never copied by net): anything that derefs to stable bytes, e.g.
/// `Vec<u8>`, `Arc<[u8]>`, or a handle keeping a log segment mapped.
pub type SharedPayload = Box<dyn AsRef<[u8]> + Send>;

/// Bytes of one send: an inline buffer with caller payloads spliced in at byte offsets
/// (`ext` offsets are non-decreasing and at most `bytes.len()`). Without splices it goes out
/// with one send; with them, with one sendmsg whose iovecs point into the payloads.
#[derive(Default)]
pub struct SendBuf {
    /// Inline bytes (frame headers, small payloads, padding).
    pub bytes: Vec<u8>,
    /// Payloads inserted before `bytes[offset]`.
    pub ext: Vec<(usize, SharedPayload)>,
}

impl std::fmt::Debug for SendBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBuf")
            .field("bytes", &self.bytes.len())
            .field("ext", &self.ext.len())
            .finish()
    }
}

impl SendBuf {
    /// Total bytes on the wire.
    pub fn len(&self) -> usize {
        self.bytes.len()
            + self
                .ext
                .iter()
                .map(|(_, p)| (**p).as_ref().len())
                .sum::<usize>()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty() && self.ext.is_empty()
    }

    /// Empties it, keeping the inline allocation.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ext.clear();
    }

    /// The wire bytes in order, as slices, skipping the first `skip` bytes.
    fn segments(&self, mut skip: usize, mut f: impl FnMut(&[u8])) {
        let mut at = 0;
        let mut emit = |seg: &[u8]| {
            if skip >= seg.len() {
                skip -= seg.len();
            } else {
                f(&seg[skip..]);
                skip = 0;
            }
        };
        for (offset, payload) in &self.ext {
            assert!(
                *offset >= at && *offset <= self.bytes.len(),
                "splice offsets out of order"
            );
            emit(&self.bytes[at..*offset]);
            emit((**payload).as_ref());
            at = *offset;
        }
        emit(&self.bytes[at..]);
    }
}

/// iovecs and header of a vectored send, boxed so their addresses are stable.
struct VecMsg {
    _iov: Box<[libc::iovec]>,
    msg: Box<libc::msghdr>,
}

impl std::fmt::Debug for VecMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VecMsg")
            .field("iovecs", &self.msg.msg_iovlen)
            .finish()
    }
}

// SAFETY: the raw pointers inside only point into the iovec box and into the SendBuf owned by
// the same slot; nothing is shared with another thread.
unsafe impl Send for VecMsg {}

/// A provided buffer lent to the caller by a multishot receive completion. Not `Clone`: it
/// must go back exactly once through [`Ring::recycle`], or the kernel runs out of buffers.
#[derive(Debug, PartialEq, Eq)]
pub struct ProvidedBuf {
    bid: u16,
    len: usize,
}

impl ProvidedBuf {
    /// Bytes received into the buffer.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer holds no byte.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[derive(Debug)]
enum Op {
    Foreign,
    Send {
        buf: SendBuf,
        off: usize,
        zc: bool,
        first_result: Option<i32>,
        // Kept alive until the completion when the send is vectored.
        _vec: Option<VecMsg>,
    },
    Recv {
        buf: RecvBuf,
    },
    RecvMulti,
    Accept,
    Connect {
        stream: TcpStream,
        // Kept alive until the completion: the kernel reads it asynchronously.
        _addr: Box<libc::sockaddr_storage>,
    },
    Timeout {
        // Kept alive until the completion: the kernel reads it asynchronously.
        _ts: Box<types::Timespec>,
    },
    Cancel,
}

#[derive(Debug)]
struct Slot {
    token: u64,
    op: Option<Op>,
}

/// The io_uring driver. See the module docs for the ownership rule.
pub struct Ring {
    // Field order matters: the ring is dropped (and the kernel stops touching memory) before
    // the provided buffers are freed.
    uring: IoUring,
    bufs: Option<BufRing>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    caller_inflight: u32,
    inflight_max: u32,
    files_free: Vec<u32>,
    features: Features,
    send_zc_threshold_bytes: usize,
    zero_copy_sends: u64,
    cqe_batch: Vec<cqueue::Entry>,
    submitted_batches: u64,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("features", &self.features)
            .field("caller_inflight", &self.caller_inflight)
            .finish_non_exhaustive()
    }
}

impl Ring {
    /// Builds the ring, probing each requested feature and falling back when missing.
    pub fn new(cfg: &RingConfig) -> Result<Ring, RingError> {
        cfg.validate()?;
        let mut features = Features::default();
        let build = |sqpoll: bool, coop: bool| {
            let mut b = IoUring::builder();
            b.setup_cqsize(cfg.cq_entries);
            if coop {
                // No IPI to run completion task work while we spin in user space; the kernel
                // raises IORING_SQ_TASKRUN instead and `submit` enters only when it is set.
                b.setup_coop_taskrun();
                b.setup_taskrun_flag();
            }
            if sqpoll {
                b.setup_sqpoll(cfg.sqpoll_idle_ms);
                if let Some(cpu) = cfg.sqpoll_cpu {
                    b.setup_sqpoll_cpu(cpu);
                }
            }
            b.build(cfg.sq_entries)
        };
        let build = |sqpoll: bool, features: &mut Features| match build(sqpoll, true) {
            Ok(u) => {
                features.coop_taskrun = true;
                Ok(u)
            }
            Err(e) => {
                tracing::info!(error = %e, "io_uring COOP_TASKRUN unavailable, completions interrupt the thread");
                build(sqpoll, false)
            }
        };
        let uring = if cfg.sqpoll {
            match build(true, &mut features) {
                Ok(u) => {
                    features.sqpoll = true;
                    u
                }
                Err(e) => {
                    tracing::warn!(error = %e, "io_uring SQPOLL unavailable, submitting from the shard thread");
                    build(false, &mut features)?
                }
            }
        } else {
            build(false, &mut features)?
        };
        features.ext_arg = uring.params().is_feature_ext_arg();
        if !features.ext_arg {
            tracing::info!("io_uring EXT_ARG unavailable, timed waits use a timeout SQE");
        }

        let mut probe = Probe::new();
        let probed = uring.submitter().register_probe(&mut probe).is_ok();
        if cfg.send_zc {
            features.send_zc = probed && probe.is_supported(opcode::SendZc::CODE);
            if !features.send_zc {
                tracing::info!("io_uring SEND_ZC unavailable, large sends copy");
            }
        }

        let mut files_free = Vec::new();
        if cfg.registered_files > 0 {
            match uring
                .submitter()
                .register_files_sparse(cfg.registered_files)
            {
                Ok(()) => {
                    features.registered_files = true;
                    files_free = (0..cfg.registered_files).rev().collect();
                }
                Err(e) => {
                    tracing::info!(error = %e, "io_uring registered files unavailable, using plain fds")
                }
            }
        }

        let mut bufs = None;
        if cfg.provided_buffers {
            match BufRing::new(&uring, cfg.provided_buf_count, cfg.provided_buf_bytes) {
                Ok(b) => {
                    features.provided_buffers = true;
                    features.recv_multishot = true;
                    bufs = Some(b);
                }
                Err(e) => {
                    tracing::info!(error = %e, "io_uring provided-buffer ring unavailable, single-shot receive")
                }
            }
        }

        let slot_count = cfg.inflight_ops_max + RESERVED_SLOTS;
        let slots = (0..slot_count)
            .map(|_| Slot { token: 0, op: None })
            .collect();
        let free = (0..slot_count).rev().collect();
        tracing::info!(?features, "io_uring ready");
        Ok(Ring {
            uring,
            bufs,
            slots,
            free,
            caller_inflight: 0,
            inflight_max: cfg.inflight_ops_max,
            files_free,
            features,
            send_zc_threshold_bytes: cfg.send_zc_threshold_bytes,
            zero_copy_sends: 0,
            cqe_batch: Vec::with_capacity(256),
            submitted_batches: 0,
        })
    }

    /// Features in use after probing.
    pub fn features(&self) -> Features {
        self.features
    }

    /// Caller operations currently in flight.
    pub fn inflight(&self) -> u32 {
        self.caller_inflight
    }

    /// Whether `n` more caller operations fit.
    pub fn has_room(&self, n: u32) -> bool {
        self.caller_inflight + n <= self.inflight_max
    }

    /// Number of `io_uring_enter` submissions made so far.
    pub fn submitted_batches(&self) -> u64 {
        self.submitted_batches
    }

    /// Stops using multishot receive (the kernel refused it).
    pub fn disable_recv_multishot(&mut self) {
        if self.features.recv_multishot {
            tracing::warn!("io_uring multishot receive refused by the kernel, single-shot receive");
        }
        self.features.recv_multishot = false;
    }

    fn alloc_slot(&mut self, token: u64, op: Op, caller: bool) -> Result<u32, Op> {
        if caller && self.caller_inflight >= self.inflight_max {
            return Err(op);
        }
        let Some(idx) = self.free.pop() else {
            return Err(op);
        };
        let slot = &mut self.slots[idx as usize];
        assert!(slot.op.is_none(), "free list holds a busy slot");
        slot.token = token;
        slot.op = Some(op);
        if caller {
            self.caller_inflight += 1;
        }
        Ok(idx)
    }

    fn release_slot(&mut self, idx: u32, caller: bool) {
        let slot = &mut self.slots[idx as usize];
        assert!(slot.op.is_none(), "released slot still holds an op");
        self.free.push(idx);
        if caller {
            assert!(self.caller_inflight > 0);
            self.caller_inflight -= 1;
        }
        assert!(self.free.len() <= self.slots.len());
    }

    /// Pushes an SQE, submitting first when the SQ is full.
    ///
    /// # Safety
    ///
    /// All memory and fds `entry` refers to must stay valid until its completion is reaped.
    unsafe fn push_sqe(&mut self, entry: &squeue::Entry) -> Result<(), RingError> {
        loop {
            // SAFETY: forwarded from this function's contract.
            let pushed = unsafe { self.uring.submission().push(entry) };
            if pushed.is_ok() {
                return Ok(());
            }
            self.submit()?;
        }
    }

    /// Waits (one-shot) until `fd` is readable; the completion comes back as
    /// [`Completion::Foreign`] with `token`. Safe for the same reason as
    /// [`Ring::fdatasync`]: the operation names only a file descriptor.
    pub fn poll_readable(&mut self, fd: RawFd, token: u64) -> Result<(), RingError> {
        let entry = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32).build();
        // SAFETY: a poll SQE references no buffer, iovec or path, so nothing can be freed
        // or moved under the kernel before its completion.
        unsafe { self.push_foreign(entry, token) }
    }

    /// Submits `fdatasync(fd)`; the completion comes back as [`Completion::Foreign`] with
    /// `token`. Safe: the operation names no memory, only `fd`, which the caller keeps
    /// open until the completion (a closed fd fails with `EBADF`; a reused number would
    /// sync another file, which costs time but cannot corrupt memory).
    pub fn fdatasync(&mut self, fd: RawFd, token: u64) -> Result<(), RingError> {
        let entry = opcode::Fsync::new(types::Fd(fd))
            .flags(types::FsyncFlags::DATASYNC)
            .build();
        // SAFETY: an fsync SQE references no buffer, iovec or path, so nothing can be
        // freed or moved under the kernel before its completion.
        unsafe { self.push_foreign(entry, token) }
    }

    /// Pushes an operation owned by someone else (e.g. storage's fdatasync or write SQE). Its
    /// completion comes back from [`Ring::reap`] as [`Completion::Foreign`] with `token`.
    /// The entry's `user_data` is overwritten by the driver.
    ///
    /// # Safety
    ///
    /// Every buffer, iovec, path or other memory `entry` points to must stay valid, unmoved
    /// and not otherwise accessed (for kernel writes) until the completion carrying `token`
    /// has been returned by [`Ring::reap`], and any fd it names must stay open until then.
    pub unsafe fn push_foreign(
        &mut self,
        entry: squeue::Entry,
        token: u64,
    ) -> Result<(), RingError> {
        let idx = self
            .alloc_slot(token, Op::Foreign, true)
            .map_err(|_| RingError::Busy)?;
        let entry = entry.user_data(u64::from(idx));
        // SAFETY: the caller guarantees the entry's memory outlives its completion.
        unsafe { self.push_sqe(&entry) }
    }

    /// Sends the wire bytes of `buf` from offset `off` on `fd`. The buffer (and every payload
    /// spliced into it) is owned by the driver until [`Completion::Sent`]; on error it is
    /// handed back.
    pub fn send(
        &mut self,
        fd: FdRef,
        buf: SendBuf,
        off: usize,
        token: u64,
    ) -> Result<(), (RingError, SendBuf)> {
        let total = buf.len();
        assert!(off < total, "empty send");
        let zc = self.zero_copy(fd, total - off);
        let vec = if buf.ext.is_empty() {
            None
        } else {
            let mut iov = Vec::with_capacity(2 * buf.ext.len() + 1);
            buf.segments(off, |seg| {
                if !seg.is_empty() {
                    iov.push(libc::iovec {
                        iov_base: seg.as_ptr().cast_mut().cast(),
                        iov_len: seg.len(),
                    });
                }
            });
            assert!(
                !iov.is_empty() && iov.len() <= 1024,
                "iovec count out of range"
            );
            let mut iov = iov.into_boxed_slice();
            // SAFETY: msghdr is plain old data; all-zero is a valid value.
            let mut msg: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
            msg.msg_iov = iov.as_mut_ptr();
            msg.msg_iovlen = iov.len() as _;
            Some(VecMsg { _iov: iov, msg })
        };
        let msg_ptr = vec
            .as_ref()
            .map(|v| std::ptr::from_ref::<libc::msghdr>(&v.msg));
        let (ptr, len) = {
            let seg = &buf.bytes[off.min(buf.bytes.len())..];
            (seg.as_ptr(), u32::try_from(seg.len()).unwrap_or(u32::MAX))
        };
        let op = Op::Send {
            buf,
            off,
            zc,
            first_result: None,
            _vec: vec,
        };
        let idx = match self.alloc_slot(token, op, true) {
            Ok(idx) => idx,
            Err(Op::Send { buf, .. }) => return Err((RingError::Busy, buf)),
            Err(_) => unreachable!("alloc_slot hands back the op it was given"),
        };
        let entry = match (msg_ptr, zc) {
            (Some(msg), true) => with_fd!(fd, |t| opcode::SendMsgZc::new(t, msg)
                .flags(libc::MSG_NOSIGNAL as u32)
                .build()),
            (Some(msg), false) => with_fd!(fd, |t| opcode::SendMsg::new(t, msg)
                .flags(libc::MSG_NOSIGNAL as u32)
                .build()),
            (None, true) => with_fd!(fd, |t| opcode::SendZc::new(t, ptr, len)
                .flags(libc::MSG_NOSIGNAL)
                .build()),
            (None, false) => with_fd!(fd, |t| opcode::Send::new(t, ptr, len)
                .flags(libc::MSG_NOSIGNAL)
                .build()),
        };
        let entry = entry.user_data(u64::from(idx));
        // SAFETY: every pointer in the SQE points into memory owned by slot `idx` until this
        // op's final completion releases it: the inline Vec's heap block and the boxed
        // payloads (moving the SendBuf moves neither), and the boxed msghdr and iovecs. A
        // payload's bytes come from `AsRef` on an object the slot owns and nobody can mutate.
        match unsafe { self.push_sqe(&entry) } {
            Ok(()) => {
                self.zero_copy_sends += u64::from(zc);
                Ok(())
            }
            Err(e) => Err((e, self.undo_send(idx))),
        }
    }

    /// Sends submitted zero-copy so far.
    pub fn zero_copy_sends(&self) -> u64 {
        self.zero_copy_sends
    }

    /// Sends what the socket takes right now of `buf` from wire offset `off`, with one
    /// non-blocking send(2) on the calling thread, and returns how many bytes went (0 when the
    /// socket buffer is full). No SQE and no completion: a small reply leaves before the ring
    /// is entered. Only inline bytes below the zero-copy threshold go this way (what
    /// [`Ring::send`] would hand to a plain SEND); for anything else it returns `Ok(0)` and
    /// the bytes must go through [`Ring::send`]. The caller must have no other send on `fd`
    /// in flight, or the bytes would overtake it.
    pub fn send_now(&mut self, fd: FdRef, buf: &SendBuf, off: usize) -> io::Result<usize> {
        if !buf.ext.is_empty() || off >= buf.bytes.len() {
            return Ok(0);
        }
        let seg = &buf.bytes[off..];
        if self.zero_copy(fd, seg.len()) {
            return Ok(0);
        }
        // SAFETY: `seg` is an initialized slice borrowed for the whole call and send(2) only
        // reads `seg.len()` bytes from it; `fd.raw` is the caller's open socket.
        let n = unsafe {
            libc::send(
                fd.raw,
                seg.as_ptr().cast(),
                seg.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if let Ok(n) = usize::try_from(n) {
            return Ok(n);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN | libc::EINTR) => Ok(0),
            _ => Err(e),
        }
    }

    /// Whether a send of `len` bytes on `fd` goes zero-copy.
    fn zero_copy(&self, fd: FdRef, len: usize) -> bool {
        self.features.send_zc && !fd.copy_only && len >= self.send_zc_threshold_bytes
    }

    fn undo_send(&mut self, idx: u32) -> SendBuf {
        let op = self.slots[idx as usize].op.take();
        self.release_slot(idx, true);
        match op {
            Some(Op::Send { buf, .. }) => buf,
            _ => unreachable!("slot just filled with a send"),
        }
    }

    /// Receives into the free tail of `buf` (single shot). The buffer is owned by the driver
    /// until [`Completion::Received`]; on error it is handed back.
    pub fn recv(
        &mut self,
        fd: FdRef,
        mut buf: RecvBuf,
        token: u64,
    ) -> Result<(), (RingError, RecvBuf)> {
        let spare = buf.spare_mut();
        assert!(!spare.is_empty(), "receive into a full buffer");
        let ptr = spare.as_mut_ptr();
        let len = u32::try_from(spare.len()).unwrap_or(u32::MAX);
        let idx = match self.alloc_slot(token, Op::Recv { buf }, true) {
            Ok(idx) => idx,
            Err(Op::Recv { buf }) => return Err((RingError::Busy, buf)),
            Err(_) => unreachable!("alloc_slot hands back the op it was given"),
        };
        let entry =
            with_fd!(fd, |t| opcode::Recv::new(t, ptr, len).build()).user_data(u64::from(idx));
        // SAFETY: `ptr..ptr+len` is the spare tail of the RecvBuf now owned by slot `idx`; its
        // heap block does not move and nobody reads or writes it until the completion.
        match unsafe { self.push_sqe(&entry) } {
            Ok(()) => Ok(()),
            Err(e) => {
                let op = self.slots[idx as usize].op.take();
                self.release_slot(idx, true);
                match op {
                    Some(Op::Recv { buf }) => Err((e, buf)),
                    _ => unreachable!("slot just filled with a recv"),
                }
            }
        }
    }

    /// Arms a multishot receive on `fd` using the provided-buffer ring. Requires
    /// [`Features::recv_multishot`].
    pub fn recv_multi(&mut self, fd: FdRef, token: u64) -> Result<(), RingError> {
        assert!(self.features.recv_multishot && self.bufs.is_some());
        let idx = self
            .alloc_slot(token, Op::RecvMulti, true)
            .map_err(|_| RingError::Busy)?;
        let entry = with_fd!(fd, |t| opcode::RecvMulti::new(t, BUF_GROUP).build())
            .user_data(u64::from(idx));
        // SAFETY: the op writes only into provided buffers, which live as long as the ring.
        let pushed = unsafe { self.push_sqe(&entry) };
        if pushed.is_err() {
            self.slots[idx as usize].op = None;
            self.release_slot(idx, true);
        }
        pushed
    }

    /// Accepts one connection on the listening socket `listener`.
    pub fn accept(&mut self, listener: RawFd, token: u64) -> Result<(), RingError> {
        let idx = self
            .alloc_slot(token, Op::Accept, true)
            .map_err(|_| RingError::Busy)?;
        let entry = opcode::Accept::new(
            types::Fd(listener),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
        .flags(libc::SOCK_CLOEXEC)
        .build()
        .user_data(u64::from(idx));
        // SAFETY: no memory is referenced (null address out-params); the caller keeps the
        // listener open while the accept is in flight.
        let pushed = unsafe { self.push_sqe(&entry) };
        if pushed.is_err() {
            self.slots[idx as usize].op = None;
            self.release_slot(idx, true);
        }
        pushed
    }

    /// Opens a TCP socket (TCP_NODELAY set) and connects it to `addr`.
    pub fn connect(&mut self, addr: SocketAddr, token: u64) -> Result<(), RingError> {
        if !self.has_room(1) {
            return Err(RingError::Busy);
        }
        let domain = if addr.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        // SAFETY: plain syscall without pointer arguments.
        let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(RingError::Io(io::Error::last_os_error()));
        }
        // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
        let stream = TcpStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
        stream.set_nodelay(true)?;
        let (addr_box, addr_len) = sockaddr_from(addr);
        let addr_ptr =
            std::ptr::from_ref::<libc::sockaddr_storage>(&addr_box).cast::<libc::sockaddr>();
        let op = Op::Connect {
            stream,
            _addr: addr_box,
        };
        let idx = self
            .alloc_slot(token, op, true)
            .map_err(|_| RingError::Busy)?;
        let entry = opcode::Connect::new(types::Fd(fd), addr_ptr, addr_len)
            .build()
            .user_data(u64::from(idx));
        // SAFETY: the sockaddr is boxed inside slot `idx` (stable address) and the socket is
        // owned by the same slot, both until the completion releases it.
        let pushed = unsafe { self.push_sqe(&entry) };
        if pushed.is_err() {
            self.slots[idx as usize].op = None;
            self.release_slot(idx, true);
        }
        pushed
    }

    /// Asks the kernel to cancel every in-flight operation carrying `token`. Their
    /// completions still arrive (usually with `-ECANCELED`).
    pub fn cancel(&mut self, token: u64) -> Result<(), RingError> {
        let targets: Vec<u32> = (0..self.slots.len() as u32)
            .filter(|&i| {
                let s = &self.slots[i as usize];
                s.token == token
                    && matches!(
                        s.op,
                        Some(
                            Op::Send { .. }
                                | Op::Recv { .. }
                                | Op::RecvMulti
                                | Op::Accept
                                | Op::Connect { .. }
                                | Op::Foreign
                        )
                    )
            })
            .collect();
        for target in targets {
            let idx = self
                .alloc_slot(u64::MAX, Op::Cancel, false)
                .map_err(|_| RingError::Busy)?;
            let entry = opcode::AsyncCancel::new(u64::from(target))
                .build()
                .user_data(u64::from(idx));
            // SAFETY: a cancel references no memory.
            unsafe { self.push_sqe(&entry)? };
        }
        Ok(())
    }

    /// Puts `stream`'s fd into the registered-file table when possible.
    pub fn register_file(&mut self, raw: RawFd) -> FdRef {
        if let Some(slot) = self.files_free.pop() {
            match self.uring.submitter().register_files_update(slot, &[raw]) {
                Ok(_) => {
                    return FdRef {
                        raw,
                        fixed: Some(slot),
                        copy_only: false,
                    }
                }
                Err(e) => {
                    self.files_free.push(slot);
                    tracing::warn!(error = %e, "registered file update failed, using a plain fd");
                }
            }
        }
        FdRef {
            raw,
            fixed: None,
            copy_only: false,
        }
    }

    /// Removes an fd from the registered-file table. Call only once no operation on it is in
    /// flight.
    pub fn unregister_file(&mut self, fd: FdRef) {
        if let Some(slot) = fd.fixed {
            if let Err(e) = self.uring.submitter().register_files_update(slot, &[-1]) {
                tracing::warn!(error = %e, slot, "registered file removal failed; slot leaked");
                return;
            }
            self.files_free.push(slot);
        }
    }

    /// Submits pushed SQEs without waiting (the spin half of an idle strategy). Enters the
    /// kernel (never blocking) unless completions are already waiting to be reaped.
    pub fn submit(&mut self) -> Result<usize, RingError> {
        let idle = {
            let sq = self.uring.submission();
            sq.is_empty() && !sq.taskrun() && !sq.cq_overflow()
        };
        // Completion work for sockets runs as task work of this thread, which the kernel does
        // not interrupt a busy user-space loop for (COOP_TASKRUN; and measured: even the
        // TASKRUN flag is not a prompt signal on this kernel). So a spinning caller that has
        // no completion to reap enters (non-blocking) to let that work run; with completions
        // ready it reaps them first.
        if idle && !self.features.sqpoll && !self.uring.completion().is_empty() {
            return Ok(0);
        }
        self.submitted_batches += 1;
        match self.uring.submit() {
            Ok(n) => Ok(n),
            Err(e) if is_transient(&e) => Ok(0),
            Err(e) => Err(RingError::Io(e)),
        }
    }

    /// Submits pushed SQEs and sleeps until at least one completion is ready or `timeout`
    /// passes (the sleep half of an idle strategy).
    pub fn submit_and_wait(&mut self, timeout: Duration) -> Result<usize, RingError> {
        if !self.uring.completion().is_empty() || timeout.is_zero() {
            return self.submit();
        }
        self.submitted_batches += 1;
        let ts = types::Timespec::new()
            .sec(timeout.as_secs())
            .nsec(timeout.subsec_nanos());
        if self.features.ext_arg {
            let args = types::SubmitArgs::new().timespec(&ts);
            return match self.uring.submitter().submit_with_args(1, &args) {
                Ok(n) => Ok(n),
                Err(e) if is_transient(&e) || e.raw_os_error() == Some(libc::ETIME) => Ok(0),
                Err(e) => Err(RingError::Io(e)),
            };
        }
        let ts = Box::new(ts);
        let ts_ptr = std::ptr::from_ref::<types::Timespec>(&ts);
        let Ok(idx) = self.alloc_slot(u64::MAX, Op::Timeout { _ts: ts }, false) else {
            return self.submit();
        };
        let entry = opcode::Timeout::new(ts_ptr)
            .build()
            .user_data(u64::from(idx));
        // SAFETY: the timespec is boxed inside slot `idx` until the timeout's completion.
        unsafe { self.push_sqe(&entry)? };
        match self.uring.submit_and_wait(1) {
            Ok(n) => Ok(n),
            Err(e) if is_transient(&e) => Ok(0),
            Err(e) => Err(RingError::Io(e)),
        }
    }

    /// The bytes of a provided buffer from [`Completion::ReceivedProvided`].
    pub fn provided(&self, buf: &ProvidedBuf) -> &[u8] {
        self.bufs
            .as_ref()
            .expect("provided buffer without a buffer ring")
            .data(buf.bid, buf.len)
    }

    /// Hands a provided buffer back to the kernel.
    pub fn recycle(&mut self, buf: ProvidedBuf) {
        self.bufs
            .as_mut()
            .expect("provided buffer without a buffer ring")
            .recycle(buf.bid);
    }

    /// Moves every ready completion into `out`.
    pub fn reap(&mut self, out: &mut Vec<Completion>) -> usize {
        let mut reaped = 0;
        let mut batch = std::mem::take(&mut self.cqe_batch);
        loop {
            batch.clear();
            batch.extend(self.uring.completion().take(256));
            if batch.is_empty() {
                break;
            }
            for cqe in &batch {
                reaped += 1;
                self.complete(cqe, out);
            }
        }
        self.cqe_batch = batch;
        reaped
    }

    fn complete(&mut self, cqe: &cqueue::Entry, out: &mut Vec<Completion>) {
        let idx = cqe.user_data() as u32;
        assert!(
            (idx as usize) < self.slots.len(),
            "completion for unknown slot {idx}"
        );
        let result = cqe.result();
        let flags = cqe.flags();
        let token = self.slots[idx as usize].token;
        let op = self.slots[idx as usize]
            .op
            .take()
            .unwrap_or_else(|| panic!("completion for free slot {idx}"));
        match op {
            Op::Foreign => {
                if cqueue::more(flags) {
                    self.slots[idx as usize].op = Some(Op::Foreign);
                } else {
                    self.release_slot(idx, true);
                }
                out.push(Completion::Foreign {
                    token,
                    result,
                    flags,
                });
            }
            Op::Send {
                buf,
                off,
                zc,
                first_result,
                _vec,
            } => {
                if zc && cqueue::notif(flags) {
                    let result = first_result.expect("SEND_ZC notification before its result");
                    self.release_slot(idx, true);
                    out.push(Completion::Sent {
                        token,
                        result,
                        buf,
                        off,
                    });
                } else if zc && cqueue::more(flags) {
                    // The kernel still references the pages; wait for the notification.
                    assert!(first_result.is_none());
                    self.slots[idx as usize].op = Some(Op::Send {
                        buf,
                        off,
                        zc,
                        first_result: Some(result),
                        _vec,
                    });
                } else {
                    self.release_slot(idx, true);
                    out.push(Completion::Sent {
                        token,
                        result,
                        buf,
                        off,
                    });
                }
            }
            Op::Recv { mut buf } => {
                if result > 0 {
                    buf.commit(result as usize);
                }
                self.release_slot(idx, true);
                out.push(Completion::Received { token, result, buf });
            }
            Op::RecvMulti => {
                let more = cqueue::more(flags);
                let buf = cqueue::buffer_select(flags).map(|bid| {
                    assert!(self.bufs.is_some(), "buffer id without a buffer ring");
                    ProvidedBuf {
                        bid,
                        len: result.max(0) as usize,
                    }
                });
                if more {
                    self.slots[idx as usize].op = Some(Op::RecvMulti);
                } else {
                    self.release_slot(idx, true);
                }
                out.push(Completion::ReceivedProvided {
                    token,
                    result,
                    more,
                    buf,
                });
            }
            Op::Accept => {
                self.release_slot(idx, true);
                let result = if result >= 0 {
                    // SAFETY: a successful accept returns a fresh fd that only we own.
                    Ok(TcpStream::from(unsafe { OwnedFd::from_raw_fd(result) }))
                } else {
                    Err(result)
                };
                out.push(Completion::Accepted { token, result });
            }
            Op::Connect { stream, _addr } => {
                self.release_slot(idx, true);
                out.push(Completion::Connected {
                    token,
                    result,
                    stream,
                });
            }
            Op::Timeout { .. } | Op::Cancel => self.release_slot(idx, false),
        }
    }
}

impl Drop for Ring {
    /// Buffers stay owned by the driver until the kernel is done with them: cancel whatever
    /// is still in flight and wait (bounded) for the completions. Whatever the kernel has not
    /// returned by then is leaked rather than freed under its feet.
    fn drop(&mut self) {
        let busy: Vec<u32> = (0..self.slots.len() as u32)
            .filter(|&i| self.slots[i as usize].op.is_some())
            .collect();
        if busy.is_empty() {
            return;
        }
        for &target in &busy {
            let entry = opcode::AsyncCancel::new(u64::from(target))
                .build()
                .user_data(u64::MAX - 1);
            // SAFETY: a cancel references no memory.
            // Its completion carries a user_data outside the slot range and is skipped below.
            let _ = unsafe { self.uring.submission().push(&entry) };
        }
        let deadline = Instant::now() + DROP_DRAIN_TIMEOUT;
        while self.slots.iter().any(|s| s.op.is_some()) && Instant::now() < deadline {
            let ts = types::Timespec::new().nsec(10_000_000);
            let args = types::SubmitArgs::new().timespec(&ts);
            let _ = self.uring.submitter().submit_with_args(1, &args);
            let cqes: Vec<cqueue::Entry> = self.uring.completion().collect();
            for cqe in cqes {
                let idx = cqe.user_data() as usize;
                if idx >= self.slots.len() {
                    continue;
                }
                let flags = cqe.flags();
                let keep = match &mut self.slots[idx].op {
                    Some(Op::Send {
                        zc: true,
                        first_result,
                        ..
                    }) if !cqueue::notif(flags) && cqueue::more(flags) => {
                        *first_result = Some(cqe.result());
                        true
                    }
                    Some(Op::RecvMulti) => {
                        if let (Some(bid), Some(b)) =
                            (cqueue::buffer_select(flags), self.bufs.as_mut())
                        {
                            b.recycle(bid);
                        }
                        cqueue::more(flags)
                    }
                    Some(Op::Foreign) => cqueue::more(flags),
                    _ => false,
                };
                if !keep {
                    self.slots[idx].op = None;
                }
            }
        }
        let mut leaked = 0usize;
        for slot in &mut self.slots {
            if let Some(op) = slot.op.take() {
                // The kernel may still read or write this op's buffer: never free it.
                std::mem::forget(op);
                leaked += 1;
            }
        }
        if leaked > 0 {
            tracing::warn!(
                leaked,
                "io_uring dropped with operations the kernel did not return; leaking their buffers"
            );
            // Keep the ring (and the provided buffers) alive forever: the kernel may still
            // write into them.
            let uring = std::mem::replace(&mut self.uring, IoUring::new(1).expect("tiny ring"));
            std::mem::forget(uring);
            std::mem::forget(self.bufs.take());
        }
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
    )
}

fn sockaddr_from(addr: SocketAddr) -> (Box<libc::sockaddr_storage>, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut storage: Box<libc::sockaddr_storage> = Box::new(unsafe { std::mem::zeroed() });
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe {
                std::ptr::write(
                    std::ptr::from_mut(&mut *storage).cast::<libc::sockaddr_in>(),
                    sin,
                )
            };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe {
                std::ptr::write(
                    std::ptr::from_mut(&mut *storage).cast::<libc::sockaddr_in6>(),
                    sin6,
                )
            };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// Provided-buffer ring: `count` buffers of `size` bytes the kernel picks from for multishot
/// receives. Ring and buffer memory are allocated once and freed after the io_uring is gone.
struct BufRing {
    ring: NonNull<types::BufRingEntry>,
    ring_layout: Layout,
    bufs: NonNull<u8>,
    bufs_layout: Layout,
    count: u16,
    size: u32,
    tail: u16,
}

impl std::fmt::Debug for BufRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufRing")
            .field("count", &self.count)
            .field("size", &self.size)
            .finish()
    }
}

impl BufRing {
    fn new(uring: &IoUring, count: u16, size: u32) -> io::Result<BufRing> {
        assert!(count.is_power_of_two());
        let ring_layout = Layout::from_size_align(
            usize::from(count) * std::mem::size_of::<types::BufRingEntry>(),
            4096,
        )
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let bufs_layout = Layout::from_size_align(usize::from(count) * size as usize, 64)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: both layouts have non-zero size (count > 0, size > 0 checked by config).
        let ring = NonNull::new(unsafe { alloc::alloc_zeroed(ring_layout) })
            .unwrap_or_else(|| alloc::handle_alloc_error(ring_layout))
            .cast::<types::BufRingEntry>();
        // SAFETY: as above.
        let bufs = NonNull::new(unsafe { alloc::alloc_zeroed(bufs_layout) })
            .unwrap_or_else(|| alloc::handle_alloc_error(bufs_layout));
        let mut this = BufRing {
            ring,
            ring_layout,
            bufs,
            bufs_layout,
            count,
            size,
            tail: 0,
        };
        // SAFETY: the ring memory is valid for `count` entries and outlives the registration:
        // `Ring` drops the io_uring (which unregisters) before this BufRing.
        unsafe {
            uring.submitter().register_buf_ring_with_flags(
                ring.as_ptr() as u64,
                count,
                BUF_GROUP,
                0,
            )?
        };
        for bid in 0..count {
            this.recycle(bid);
        }
        Ok(this)
    }

    fn data(&self, bid: u16, len: usize) -> &[u8] {
        assert!(bid < self.count);
        assert!(len <= self.size as usize);
        // SAFETY: buffer `bid` lies inside the allocation; the kernel finished writing `len`
        // bytes before posting the CQE, and does not touch it again until it is recycled.
        unsafe {
            std::slice::from_raw_parts(
                self.bufs
                    .as_ptr()
                    .add(usize::from(bid) * self.size as usize),
                len,
            )
        }
    }

    /// Hands buffer `bid` (back) to the kernel.
    fn recycle(&mut self, bid: u16) {
        assert!(bid < self.count);
        let mask = self.count - 1;
        let addr = self.bufs.as_ptr() as u64 + u64::from(bid) * u64::from(self.size);
        // SAFETY: `tail & mask` < count, inside the ring allocation. The kernel only reads
        // entries between its head and the published tail, and this entry is past the tail.
        let entry = unsafe { &mut *self.ring.as_ptr().add(usize::from(self.tail & mask)) };
        entry.set_addr(addr);
        entry.set_len(self.size);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail field sits inside entry 0 of the ring allocation, is 2-byte aligned
        // and is only ever accessed atomically by us (store) and the kernel (load).
        let tail = unsafe {
            AtomicU16::from_ptr(types::BufRingEntry::tail(self.ring.as_ptr()).cast_mut())
        };
        tail.store(self.tail, Ordering::Release);
    }
}

// SAFETY: BufRing exclusively owns both allocations; nothing else aliases them from another
// thread, so moving it to another thread (with its Ring) is sound.
unsafe impl Send for BufRing {}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with exactly these layouts; the io_uring that could
        // write into them is already dropped (field order of `Ring`).
        unsafe {
            alloc::dealloc(self.ring.as_ptr().cast(), self.ring_layout);
            alloc::dealloc(self.bufs.as_ptr(), self.bufs_layout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_for(ring: &mut Ring, want: usize) -> Vec<Completion> {
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while out.len() < want {
            assert!(Instant::now() < deadline, "completions did not arrive");
            ring.submit_and_wait(Duration::from_millis(10)).unwrap();
            ring.reap(&mut out);
        }
        out
    }

    #[test]
    fn foreign_ops_complete_with_their_tokens() {
        let mut ring = Ring::new(&RingConfig::default()).unwrap();
        for token in [7u64, u64::MAX - 3, 0] {
            let entry = opcode::Nop::new().build();
            // SAFETY: a NOP references no memory and no fd.
            unsafe { ring.push_foreign(entry, token).unwrap() };
        }
        assert_eq!(ring.inflight(), 3);
        let mut tokens: Vec<u64> = wait_for(&mut ring, 3)
            .into_iter()
            .map(|c| match c {
                Completion::Foreign { token, result, .. } => {
                    assert_eq!(result, 0);
                    token
                }
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        tokens.sort_unstable();
        assert_eq!(tokens, vec![0, 7, u64::MAX - 3]);
        assert_eq!(ring.inflight(), 0);
    }

    #[test]
    fn sqpoll_ring_or_its_fallback_completes_ops() {
        let cfg = RingConfig {
            sqpoll: true,
            sqpoll_idle_ms: 10,
            ..RingConfig::default()
        };
        let mut ring = Ring::new(&cfg).unwrap();
        println!("features with SQPOLL requested: {:?}", ring.features());
        for token in 0..8 {
            // SAFETY: a NOP references no memory and no fd.
            unsafe {
                ring.push_foreign(opcode::Nop::new().build(), token)
                    .unwrap()
            };
        }
        assert_eq!(wait_for(&mut ring, 8).len(), 8);
        assert_eq!(ring.inflight(), 0);
    }

    #[test]
    fn inflight_limit_is_enforced() {
        let cfg = RingConfig {
            inflight_ops_max: 4,
            ..RingConfig::default()
        };
        let mut ring = Ring::new(&cfg).unwrap();
        for token in 0..4 {
            // SAFETY: a NOP references no memory and no fd.
            unsafe {
                ring.push_foreign(opcode::Nop::new().build(), token)
                    .unwrap()
            };
        }
        // SAFETY: as above.
        let fifth = unsafe { ring.push_foreign(opcode::Nop::new().build(), 4) };
        assert!(matches!(fifth, Err(RingError::Busy)));
        assert_eq!(wait_for(&mut ring, 4).len(), 4);
        // SAFETY: as above.
        unsafe { ring.push_foreign(opcode::Nop::new().build(), 5).unwrap() };
    }

    #[test]
    fn bad_config_is_rejected() {
        let cfg = RingConfig {
            cq_entries: 64,
            ..RingConfig::default()
        };
        assert!(matches!(Ring::new(&cfg), Err(RingError::Config(_))));
    }

    /// A connected loopback pair: (the peer's end, our end, our end as the ring names it).
    fn socket_pair(ring: &mut Ring) -> (TcpStream, TcpStream, FdRef) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (ours, _) = listener.accept().unwrap();
        let fd = ring.register_file(std::os::fd::AsRawFd::as_raw_fd(&ours));
        (peer, ours, fd)
    }

    #[test]
    fn send_now_sends_small_inline_bytes_and_declines_the_rest() {
        use std::io::Read;
        let mut ring = Ring::new(&RingConfig::default()).unwrap();
        let (mut peer, _ours, fd) = socket_pair(&mut ring);
        let buf = SendBuf {
            bytes: b"hello now".to_vec(),
            ext: Vec::new(),
        };
        assert_eq!(ring.send_now(fd, &buf, 6).unwrap(), 3);
        let mut got = [0u8; 3];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"now");
        // Spliced payloads go through the ring (one sendmsg), never inline.
        let spliced = SendBuf {
            bytes: b"head".to_vec(),
            ext: vec![(4, Box::new(vec![1u8; 8]) as SharedPayload)],
        };
        assert_eq!(ring.send_now(fd, &spliced, 0).unwrap(), 0);
        assert_eq!(ring.inflight(), 0);
        drop(peer);
    }

    #[test]
    fn send_and_receive_over_a_socket_pair() {
        use std::io::{Read, Write};
        for provided in [false, true] {
            let cfg = RingConfig {
                provided_buffers: provided,
                send_zc_threshold_bytes: 1,
                ..RingConfig::default()
            };
            let mut ring = Ring::new(&cfg).unwrap();
            let (mut peer, ours, fd) = socket_pair(&mut ring);
            let buf = SendBuf {
                bytes: b"hello ring".to_vec(),
                ext: Vec::new(),
            };
            ring.send(fd, buf, 6, 1).unwrap();
            let sent = wait_for(&mut ring, 1);
            assert!(matches!(
                &sent[0],
                Completion::Sent {
                    token: 1,
                    result: 4,
                    off: 6,
                    ..
                }
            ));
            let mut got = [0u8; 4];
            peer.read_exact(&mut got).unwrap();
            assert_eq!(&got, b"ring");
            peer.write_all(b"back").unwrap();
            if ring.features().recv_multishot {
                ring.recv_multi(fd, 2).unwrap();
                let done = wait_for(&mut ring, 1);
                match done.into_iter().next().unwrap() {
                    Completion::ReceivedProvided {
                        token: 2,
                        result: 4,
                        buf: Some(b),
                        ..
                    } => {
                        assert_eq!(ring.provided(&b), b"back");
                        ring.recycle(b);
                    }
                    other => panic!("unexpected {other:?}"),
                }
                ring.cancel(2).unwrap();
            } else {
                ring.recv(fd, RecvBuf::with_capacity(64), 2).unwrap();
                match wait_for(&mut ring, 1).into_iter().next().unwrap() {
                    Completion::Received {
                        token: 2,
                        result: 4,
                        buf,
                    } => assert_eq!(buf.data(), b"back"),
                    other => panic!("unexpected {other:?}"),
                }
            }
            drop(ring);
            drop(ours);
        }
    }
}

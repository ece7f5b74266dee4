//! Tail probes: an empty QUIC datagram shortly after the last bytes written on a connection,
//! so that the loss of a small message's only packet is found within about one round trip.
//!
//! QUIC finds a lost packet when a later one is acknowledged (RFC 9002: three packets later, or one
//! packet later once 9/8 of a round trip has passed since the loss). A short message (a request, an
//! answer, a channel message) often travels in one packet with nothing after it; if that packet is
//! lost, only the probe timeout finds it: the smoothed RTT plus 4 RTT variances plus the peer's 25
//! ms maximum ACK delay. And quinn's probe on that timeout carries no stream data (an IMMEDIATE_ACK
//! or a PING), so the message is declared lost and sent again only when the probe's acknowledgement
//! returns, one more round trip later. At 20 ms of RTT a lost message arrived 70-75 ms late (the
//! bench's 1% loss cells, docs/BENCH.md).
//!
//! A tail probe is that later packet, sent on purpose: once writes on the connection pause for
//! [`LinkConfig::tail_probe`](super::LinkConfig::tail_probe), an empty datagram follows (the
//! endpoint already reads and drops datagrams: they are its liveness probes). If the message's
//! packet was lost, the peer sees a gap and acknowledges the probe at once (RFC 9000 13.2.1), and
//! the time threshold declares the message lost 9/8 of a round trip after it was sent: it arrives
//! 1.3 round trips late instead of 3.7 (26 ms against 74 at 20 ms RTT, measured in quinn's trace of
//! the bench). If nothing was lost, the probe costs one small packet and the peer's
//! acknowledgement, once per pause rather than once per message.
//!
//! A lost packet is sent again when QUIC declares it lost, with nothing after it either: so
//! after a probe, until the next write, the task watches the connection's count of lost
//! packets and probes again after each retransmission, so that a lost retransmission is found
//! the same way (without, it waited for the probe timeout: one lost message in a hundred).
//!
//! The probe also carries copies of the last channel messages written before the pause
//! ([`copies`](super::copies), when [`LinkConfig::message_copies`](super::LinkConfig) is on):
//! then a lost message is delivered from its copy, without waiting for its recovery at all.
//!
//! A write returns once QUIC holds the bytes, not once they left: when a large object is still
//! queued behind the congestion window as its writes end, the probe (quinn puts datagrams
//! ahead of stream data) leaves with the object's packets rather than after them, and the
//! object's own last packet is still covered by the probe timeout alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use super::copies::{Of, Recent};
use super::incoming::Counters;

/// The handle that write paths tell of their writes; cheap to clone. A disabled one (no
/// probes configured, or a connection not served yet) ignores them.
#[derive(Clone, Debug, Default)]
pub(crate) struct TailProbe {
    shared: Option<Arc<Shared>>,
}

#[derive(Debug, Default)]
struct Shared {
    /// Bytes were written since the probe task last looked.
    written: AtomicBool,
    /// Wakes the probe task after a write.
    wake: Notify,
    /// Copies of the channel messages written since the last probe, for the next; `None` when
    /// copies are off.
    recent: Option<Recent>,
}

impl TailProbe {
    /// Starts the probe task of `connection`: after every pause of `delay` in its writes, one
    /// empty datagram. The task ends with the connection. `None` sends no probes.
    ///
    /// Must be called within a tokio runtime.
    pub(crate) fn start(
        connection: &quinn::Connection,
        delay: Option<Duration>,
        copies: bool,
        counters: Arc<Counters>,
    ) -> Self {
        let Some(delay) = delay else {
            return Self::default();
        };
        let shared = Arc::new(Shared {
            recent: copies.then(Recent::default),
            ..Shared::default()
        });
        tokio::spawn(probe_after_writes(
            connection.clone(),
            shared.clone(),
            delay,
            counters,
        ));
        Self {
            shared: Some(shared),
        }
    }

    /// Bytes were just written on the connection (handed to QUIC).
    pub(crate) fn wrote(&self) {
        if let Some(shared) = &self.shared {
            shared.written.store(true, Ordering::Release);
            shared.wake.notify_one();
        }
    }

    /// Whether the probes carry copies (of messages, requests and small objects).
    pub(crate) fn copies(&self) -> bool {
        self.shared
            .as_ref()
            .is_some_and(|shared| shared.recent.is_some())
    }

    /// A channel message, or a request or small object stream (`of`), was just written on
    /// stream `stream`: the next probe carries a copy of it (if copies are on and it is small).
    pub(crate) fn wrote_copied(&self, stream: u64, of: Of, body: &bytes::Bytes) {
        if let Some(recent) = self
            .shared
            .as_ref()
            .and_then(|shared| shared.recent.as_ref())
        {
            recent.wrote(stream, of, body);
        }
        self.wrote();
    }
}

async fn probe_after_writes(
    connection: quinn::Connection,
    shared: Arc<Shared>,
    delay: Duration,
    counters: Arc<Counters>,
) {
    loop {
        // A wake-up left over from writes that a probe already followed finds nothing new.
        while !shared.written.swap(false, Ordering::AcqRel) {
            tokio::select! {
                () = shared.wake.notified() => {}
                _ = connection.closed() => return,
            }
        }
        // The probe must leave in a packet of its own after the last write's packets: wait
        // until the writes pause for `delay` (a steady flow of writes needs no probe, each
        // packet is the next one's).
        loop {
            tokio::time::sleep(delay).await;
            if !shared.written.swap(false, Ordering::AcqRel) {
                break;
            }
        }
        if let Some(recent) = &shared.recent {
            send_copies(&connection, recent, &counters);
        }
        if probe(&connection, &counters) {
            follow_retransmissions(&connection, &shared, delay, &counters).await;
        }
    }
}

/// How long after a probe a loss it reveals may be declared: the probe's acknowledgement
/// comes a round trip later, and QUIC declares a packet lost 9/8 of a round trip after it was
/// sent (at least its 1 ms timer granularity): two round trips and a few pauses cover both,
/// with the peer's scheduling.
fn watch(connection: &quinn::Connection, delay: Duration) -> Duration {
    connection.rtt() * 2 + delay * 4
}

/// Sends one tail probe; false when it could not go.
fn probe(connection: &quinn::Connection, counters: &Counters) -> bool {
    // Fails only when the connection closed or the peer takes no datagrams; then there is
    // nothing to probe for.
    let sent = connection.send_datagram(bytes::Bytes::new()).is_ok();
    if sent {
        counters.tail_probes.fetch_add(1, Ordering::Relaxed);
    }
    sent
}

/// Sends the copies of the messages written since the last probe, each in a datagram of its
/// own, right before the probe (quinn may put them in one packet with it). Usually the
/// messages' own packets left before the pause, and the copies travel apart from them; when
/// the congestion window holds stream data back, quinn sends the datagrams first, and the
/// receiver then takes the copies and drops the stream's bytes (once each either way).
fn send_copies(connection: &quinn::Connection, recent: &Recent, counters: &Counters) {
    let room = connection.max_datagram_size().unwrap_or(0);
    for copy in recent.take() {
        let datagram = copy.encode();
        // A path too small for the copy (or a peer that takes no datagrams): the stream alone.
        if datagram.len() <= room && connection.send_datagram(datagram).is_ok() {
            counters.copies_sent.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// After a probe, while nothing is written: a loss that QUIC declares meanwhile (the probe's
/// acknowledgement reveals it about 9/8 of a round trip after the lost packet left) is sent
/// again at once, and that retransmission is the connection's new last packet, with nothing
/// after it; so it gets a probe of its own, or its loss would wait for the probe timeout (70-75
/// ms at 20 ms RTT). Looks every eighth of a round trip (at least `delay`) and returns on a
/// write (whose own probe follows everything before it), when the connection closes, or
/// [`watch`] after the last probe without a new loss.
async fn follow_retransmissions(
    connection: &quinn::Connection,
    shared: &Shared,
    delay: Duration,
    counters: &Counters,
) {
    let mut lost = connection.stats().path.lost_packets;
    let mut until = tokio::time::Instant::now() + watch(connection, delay);
    loop {
        let step = (connection.rtt() / 8).max(delay);
        tokio::select! {
            () = tokio::time::sleep(step) => {}
            _ = connection.closed() => return,
        }
        if shared.written.load(Ordering::Acquire) {
            return;
        }
        let now_lost = connection.stats().path.lost_packets;
        if now_lost > lost {
            lost = now_lost;
            // The retransmission left when the loss was declared: the probe follows it after
            // the same pause as after a write.
            tokio::time::sleep(delay).await;
            if shared.written.load(Ordering::Acquire) || !probe(connection, counters) {
                return;
            }
            until = tokio::time::Instant::now() + watch(connection, delay);
        } else if tokio::time::Instant::now() >= until {
            return;
        }
    }
}

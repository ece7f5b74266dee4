//! [`Role`]: what the driver needs from a sans-IO role, implemented by the three of them.

use std::future::Future;
use std::net::SocketAddr;
use std::time::SystemTime;

use crate::client::{Client, ClientEvent, Output};
use crate::gate::PeerLoad;
use crate::ids::Tid;
use crate::master::{Master, MasterEvent};
use crate::protocol::{Message, ProtocolError, Transmit, decode_from};

/// A sans-IO role of the two-phase commit, as the [driver](super) runs it.
///
/// Implemented by [`Master`], [`Client`] and, for the storage role with its persistence
/// executor, [`ThreadedStorage`](crate::persist::ThreadedStorage); each method forwards to the
/// role's method of the same name (`handle_message` to `handle`), and `handle_bytes` decodes
/// for all of them.
pub trait Role: Send + 'static {
    /// What the role reports to its user.
    type Event: Send + 'static;

    /// Decodes bytes from `from` and handles the message.
    fn handle_bytes(
        &mut self,
        now: SystemTime,
        from: &str,
        bytes: &[u8],
    ) -> Result<(), ProtocolError> {
        self.handle_message(now, from, decode_from(from, bytes)?)
    }
    /// Handles one message from `from` (decoded from its bytes, or a store that came through
    /// the fan-out).
    fn handle_message(
        &mut self,
        now: SystemTime,
        from: &str,
        message: Message,
    ) -> Result<(), ProtocolError>;
    /// Handles expired timers.
    fn handle_timeout(&mut self, now: SystemTime) -> Result<(), ProtocolError>;
    /// The connection to `peer` is lost.
    fn peer_lost(&mut self, now: SystemTime, peer: &str) -> Result<(), ProtocolError>;
    /// When [`handle_timeout`](Self::handle_timeout) must be called next.
    fn poll_timeout(&self) -> Option<SystemTime>;
    /// The next message to send.
    fn poll_transmit(&mut self) -> Option<Transmit>;
    /// The next event.
    fn poll_event(&mut self) -> Option<Self::Event>;
    /// Where `peer` accepts connections, if the role learned it from the protocol; used for
    /// peers missing from [`DriverConfig::directory`](super::DriverConfig::directory).
    fn peer_address(&self, peer: &str) -> Option<SocketAddr> {
        let _ = peer;
        None
    }
    /// What the role holds for `peer` (with whether `ttid` is one of its open transactions),
    /// for the per-peer limits of the driver's [`Gate`](crate::gate::Gate). Nothing, by
    /// default.
    fn peer_load(&self, peer: &str, ttid: Option<Tid>) -> PeerLoad {
        let _ = (peer, ttid);
        PeerLoad::default()
    }
    /// The master the node's [`NodeReport`](crate::protocol::NodeReport)s go to now (the
    /// primary it follows); `None`: [`DriverConfig::report_to`](super::DriverConfig::report_to).
    fn report_target(&self) -> Option<String> {
        None
    }
    /// The peers whose received bytes the role needs before its timers fire (a client's
    /// reads: a replica still sending is not given up). None, by default.
    fn watched_peers(&self) -> Vec<String> {
        Vec::new()
    }
    /// The bytes received so far on the current connection to `peer` (`None`: not
    /// connected), for [`watched_peers`](Self::watched_peers).
    fn peer_received(&mut self, peer: &str, bytes: Option<u64>) {
        let _ = (peer, bytes);
    }
    /// Why the role cannot go on, if it cannot (a master whose log could not be written or
    /// read): the driver then stops, and [`DriverHandle::stop`](super::DriverHandle::stop)
    /// gives the role back to say why. Never, by default.
    fn failure(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        None
    }
    /// What to send next, in the order the role made it: a message, or a store for the
    /// fan-out (only the client has any). By default the next message.
    fn poll_output(&mut self) -> Option<Output> {
        self.poll_transmit().map(Output::Message)
    }
    /// The fan-out `id` did not reach `peer`.
    fn fanout_failed(&mut self, now: SystemTime, id: u64, peer: &str) {
        let _ = (now, id, peer);
    }
    /// The fan-out `id` reached `peer` (or, sent inline, was queued on its channel).
    fn fanout_delivered(&mut self, now: SystemTime, id: u64, peer: &str) {
        let _ = (now, id, peer);
    }
    /// Waits for work the role handed out of the driver (a storage's writes and reads, run by
    /// its executor's threads) and takes its outcome in; the driver awaits it beside its other
    /// inputs, then sends what the role produced. Never ready by default.
    fn background(&mut self) -> impl Future<Output = ()> + Send + '_ {
        std::future::pending()
    }
    /// Whether the driver may hand the role stores now; a storage whose disk is behind says
    /// no, and the driver leaves the fan-out's with the transport and holds a writer's next
    /// store on its channel, with what follows it, until it says yes again. Yes by default.
    fn takes_stores(&self) -> bool {
        true
    }
    /// Answers `request`, which `from` sent on a request stream: one answer per request,
    /// sent back on that stream; an error goes back as the request's error.
    ///
    /// The request path stands apart from the peer's one-way messages: it takes no sequence
    /// number and does not count `from` as connected, so anyone holding a cluster certificate,
    /// even under the name of a node that is running, may ask without disturbing that node.
    /// Whatever the role sends meanwhile (through [`poll_transmit`](Self::poll_transmit)) goes
    /// out as usual. By default every request is refused.
    fn answer(
        &mut self,
        now: SystemTime,
        from: &str,
        request: Message,
    ) -> Result<Message, ProtocolError> {
        let _ = now;
        Err(ProtocolError::Unexpected {
            from: from.to_owned(),
            kind: request.kind(),
        })
    }
    /// Answers `request` as [`answer`](Self::answer) does, or defers the answer: `Ok(None)`
    /// means it comes later from [`poll_answer`](Self::poll_answer) with `token` (a master's
    /// answer to a change waits until the change is committed in the masters' log). Every
    /// deferred request gets its answer or an error. By default the answer comes at once.
    fn answer_or_defer(
        &mut self,
        now: SystemTime,
        from: &str,
        request: Message,
        token: u64,
    ) -> Result<Option<Message>, ProtocolError> {
        let _ = token;
        self.answer(now, from, request).map(Some)
    }
    /// A deferred answer that is ready: the token [`answer_or_defer`](Self::answer_or_defer)
    /// was given, and the answer or the refusal.
    fn poll_answer(&mut self) -> Option<(u64, Result<Message, ProtocolError>)> {
        None
    }
}

impl Role for Master {
    type Event = MasterEvent;

    fn handle_message(
        &mut self,
        now: SystemTime,
        from: &str,
        message: Message,
    ) -> Result<(), ProtocolError> {
        Master::handle(self, now, from, message)
    }
    fn handle_timeout(&mut self, now: SystemTime) -> Result<(), ProtocolError> {
        Master::handle_timeout(self, now)
    }
    fn peer_lost(&mut self, now: SystemTime, peer: &str) -> Result<(), ProtocolError> {
        Master::peer_lost(self, now, peer)
    }
    fn failure(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        Master::failure(self).map(|failure| failure as _)
    }
    fn poll_timeout(&self) -> Option<SystemTime> {
        Master::poll_timeout(self)
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        Master::poll_transmit(self)
    }
    fn poll_event(&mut self) -> Option<MasterEvent> {
        Master::poll_event(self)
    }
    fn answer(
        &mut self,
        now: SystemTime,
        from: &str,
        request: Message,
    ) -> Result<Message, ProtocolError> {
        Master::answer(self, now, from, request)
    }
    fn peer_load(&self, peer: &str, ttid: Option<Tid>) -> PeerLoad {
        Master::peer_load(self, peer, ttid)
    }
    fn answer_or_defer(
        &mut self,
        now: SystemTime,
        from: &str,
        request: Message,
        token: u64,
    ) -> Result<Option<Message>, ProtocolError> {
        Master::answer_or_defer(self, now, from, request, token)
    }
    fn poll_answer(&mut self) -> Option<(u64, Result<Message, ProtocolError>)> {
        Master::poll_answer(self)
    }
    fn peer_address(&self, peer: &str) -> Option<SocketAddr> {
        Master::peer_address(self, peer)
    }
    async fn background(&mut self) {
        // The log's writer made a batch durable: what waited for it goes on.
        let written = self.next_log_written().await;
        if let Err(error) = self.log_written(SystemTime::now(), written) {
            tracing::warn!(%error, "after the master's log was written");
        }
    }
}

impl Role for Client {
    type Event = ClientEvent;

    fn handle_message(
        &mut self,
        now: SystemTime,
        from: &str,
        message: Message,
    ) -> Result<(), ProtocolError> {
        Client::handle(self, now, from, message)
    }
    fn handle_timeout(&mut self, now: SystemTime) -> Result<(), ProtocolError> {
        Client::handle_timeout(self, now);
        Ok(())
    }
    fn peer_lost(&mut self, now: SystemTime, peer: &str) -> Result<(), ProtocolError> {
        Client::peer_lost(self, now, peer);
        Ok(())
    }
    fn poll_timeout(&self) -> Option<SystemTime> {
        Client::poll_timeout(self)
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        Client::poll_transmit(self)
    }
    fn poll_event(&mut self) -> Option<ClientEvent> {
        Client::poll_event(self)
    }
    fn peer_address(&self, peer: &str) -> Option<SocketAddr> {
        self.storage_addresses().get(peer).copied()
    }
    fn poll_output(&mut self) -> Option<Output> {
        Client::poll_output(self)
    }
    fn report_target(&self) -> Option<String> {
        Some(self.master().to_owned())
    }
    fn fanout_failed(&mut self, now: SystemTime, id: u64, peer: &str) {
        Client::fanout_failed(self, now, id, peer);
    }
    fn fanout_delivered(&mut self, now: SystemTime, id: u64, peer: &str) {
        Client::fanout_delivered(self, now, id, peer);
    }
    fn watched_peers(&self) -> Vec<String> {
        Client::reading_from(self)
    }
    fn peer_received(&mut self, peer: &str, bytes: Option<u64>) {
        Client::set_link_received(self, peer, bytes);
    }
}

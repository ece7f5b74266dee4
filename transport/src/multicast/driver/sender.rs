//! [`MulticastSender`]: a tokio task driving the protocol core's sender on a real socket.

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

#[cfg(feature = "netem")]
use super::ImpairmentConfig;
use super::delivery::{DeliveryHandle, DeliveryOutcome, DeliveryTracker};
use super::io::{DatagramIo, DriverSocket, earliest, sleep_until};
use super::{
    BindError, DriverClosed, MulticastSendError, MulticastSocketConfig, SocketError, SocketStats,
    sender_socket,
};
use crate::multicast::proto::{
    self, Destination, GroupKey, ReceiverKey, SenderConfig, SenderEvent,
};

/// The bytes in flight [`MulticastSenderConfig::new`] allows (sent and not yet read by the
/// slowest receiver): 4 MiB, which the default socket buffer cap of Linux
/// (`net.core.rmem_max`, 4 MiB, doubled by the kernel) holds. It is also the largest object.
pub const DEFAULT_FLIGHT_BYTES: u64 = 4 << 20;

/// The transmit window (the retransmit buffer) [`MulticastSenderConfig::new`] sets: 32 MiB,
/// the flight and seven more flights' worth of data that receivers have read but cannot
/// acknowledge while a loss before it awaits its repair (a repair waits behind what is
/// queued for the receiver, so it takes longer the fuller the flight is).
pub const DEFAULT_WINDOW_BYTES: u64 = 32 << 20;

/// How to run a [`MulticastSender`].
#[derive(Debug, Clone)]
pub struct MulticastSenderConfig {
    /// The group and socket options.
    pub socket: MulticastSocketConfig,
    /// The protocol's settings (window, rate, timers, bounds).
    pub protocol: SenderConfig,
    /// The session id receivers know this sender by.
    pub session_id: u64,
    /// Emulated links at the sender's socket (feature `netem`): the receive link delays or
    /// drops what it reads (NACKs, status reports), the send link everything it sends (one
    /// queue, so a rate limit there is the sender's link rate). Tests and benchmarks only.
    #[cfg(feature = "netem")]
    pub impairment: Option<ImpairmentConfig>,
}

impl MulticastSenderConfig {
    /// Settings for session `session_id` on `socket`'s group: the protocol's defaults, except
    /// that at most [`DEFAULT_FLIGHT_BYTES`] are in flight (and that is the largest object)
    /// and the transmit window is [`DEFAULT_WINDOW_BYTES`].
    ///
    /// The flight limit is what keeps an unpaced sender from running ahead of its receivers,
    /// so it should not exceed what a receiver's socket buffer holds: beyond that, datagrams
    /// are lost in the receivers' kernels, and the repairs cost more than the flight gained.
    /// Raise it together with `net.core.rmem_max` (or set a rate limit) for longer paths.
    /// The window beyond the flight holds what receivers read behind a loss, so that new
    /// data keeps flowing while the loss is repaired.
    pub fn new(socket: MulticastSocketConfig, session_id: u64) -> Self {
        let mut protocol = SenderConfig::default();
        protocol.window_bytes = protocol.window_bytes.min(DEFAULT_WINDOW_BYTES);
        protocol.flight_bytes = protocol.flight_bytes.min(DEFAULT_FLIGHT_BYTES);
        protocol.max_object_size = protocol.max_object_size.min(DEFAULT_FLIGHT_BYTES);
        Self {
            socket,
            protocol,
            session_id,
            #[cfg(feature = "netem")]
            impairment: None,
        }
    }
}

/// Counters of a [`MulticastSender`].
#[derive(Debug, Clone)]
pub struct MulticastSenderStats {
    /// The protocol core's counters (data and repairs sent, NACKs received, drops by reason).
    pub protocol: proto::SenderStats,
    /// The socket's counters.
    pub socket: SocketStats,
    /// Objects whose delivery is not yet known at every receiver.
    pub outstanding_objects: usize,
}

enum Command {
    Send {
        object_id: u64,
        data: Bytes,
        reply: oneshot::Sender<Result<DeliveryHandle, MulticastSendError>>,
    },
    AddReceiver(ReceiverKey),
    RemoveReceiver(u32),
    InstallKey(GroupKey),
    Stats(oneshot::Sender<MulticastSenderStats>),
    Close(oneshot::Sender<MulticastSenderStats>),
}

/// Sends objects to a multicast group and reports, per receiver, whether each arrived.
///
/// The protocol runs in a task on the current tokio runtime; this is a handle to it. Dropping
/// the handle closes the sender like [`close`](Self::close), without waiting.
///
/// # Example
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use bytes::Bytes;
/// use replicast_transport::multicast::driver::{
///     MulticastSender, MulticastSenderConfig, MulticastSocketConfig,
/// };
/// use replicast_transport::multicast::proto::{GroupKey, ReceiverKey};
///
/// let socket = MulticastSocketConfig::new("239.255.10.1:47000".parse()?);
/// let group_key = GroupKey { epoch: 1, secret: [7; 32] };
/// let sender = MulticastSender::bind(MulticastSenderConfig::new(socket, 42), group_key)?;
/// sender.add_receiver(ReceiverKey { receiver_id: 1, secret: [9; 32] }).await?;
/// let handle = sender.send(1, Bytes::from_static(b"object")).await?;
/// assert!(handle.wait().await.all_delivered());
/// sender.close().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct MulticastSender {
    commands: mpsc::Sender<Command>,
    local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

impl MulticastSender {
    /// Opens the sender's socket and starts the protocol with `group_key` as the current
    /// epoch's key. Must be called within a tokio runtime.
    pub fn bind(config: MulticastSenderConfig, group_key: GroupKey) -> Result<Self, BindError> {
        check_mtu(&config)?;
        let bound = sender_socket(&config.socket)?;
        let local_addr = bound
            .socket
            .local_addr()
            .map_err(|source| SocketError::Io {
                operation: "getsockname",
                group: config.socket.group,
                source,
            })?;
        let socket = DriverSocket::new(bound.socket).map_err(|source| SocketError::Io {
            operation: "UDP offload setup",
            group: config.socket.group,
            source,
        })?;
        let core = proto::Sender::new(
            config.protocol.clone(),
            config.session_id,
            group_key,
            Instant::now(),
        )
        .map_err(BindError::Config)?;
        let (commands, command_rx) = mpsc::channel(64);
        let driver = SenderDriver {
            core,
            socket,
            group: config.socket.group,
            io: DatagramIo::new(
                #[cfg(feature = "netem")]
                config.impairment,
                SocketStats {
                    buffers: bound.buffers,
                    ..SocketStats::default()
                },
            ),
            commands: command_rx,
            receivers: BTreeSet::new(),
            tracker: DeliveryTracker::default(),
            waiting_for_window: VecDeque::new(),
            closing: None,
        };
        let task = tokio::spawn(driver.run());
        Ok(Self {
            commands,
            local_addr,
            task,
        })
    }

    /// The sender's unicast address (receivers see datagrams come from it).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Hands an object to the group. Waits while the transmit window is full (backpressure),
    /// then returns a handle that resolves per receiver.
    pub async fn send(
        &self,
        object_id: u64,
        data: Bytes,
    ) -> Result<DeliveryHandle, MulticastSendError> {
        let (reply, answer) = oneshot::channel();
        self.command(Command::Send {
            object_id,
            data,
            reply,
        })
        .await?;
        answer.await.map_err(|_| MulticastSendError::Closed)?
    }

    /// Adds a receiver: objects accepted from now on await its acknowledgement.
    pub async fn add_receiver(&self, key: ReceiverKey) -> Result<(), DriverClosed> {
        self.command(Command::AddReceiver(key)).await
    }

    /// Removes a receiver; handles awaiting it resolve [`DeliveryOutcome::Removed`] for it.
    pub async fn remove_receiver(&self, receiver_id: u32) -> Result<(), DriverClosed> {
        self.command(Command::RemoveReceiver(receiver_id)).await
    }

    /// Installs a new epoch's group key; the old one drains.
    pub async fn install_key(&self, key: GroupKey) -> Result<(), DriverClosed> {
        self.command(Command::InstallKey(key)).await
    }

    /// A snapshot of the counters.
    pub async fn stats(&self) -> Result<MulticastSenderStats, DriverClosed> {
        let (reply, answer) = oneshot::channel();
        self.command(Command::Stats(reply)).await?;
        answer.await.map_err(|_| DriverClosed)
    }

    /// Stops accepting objects, waits until every accepted object is resolved at every
    /// receiver (delivered or abandoned, which the protocol bounds in time), and stops.
    /// Returns the final counters.
    pub async fn close(self) -> Result<MulticastSenderStats, DriverClosed> {
        let (reply, answer) = oneshot::channel();
        self.command(Command::Close(reply)).await?;
        let stats = answer.await.map_err(|_| DriverClosed)?;
        // The task ends right after answering; a join error would be a panic in the driver.
        let _ = self.task.await;
        Ok(stats)
    }

    async fn command(&self, command: Command) -> Result<(), DriverClosed> {
        self.commands.send(command).await.map_err(|_| DriverClosed)
    }
}

/// Refuses a datagram size the interface cannot carry unfragmented (when its MTU is known).
fn check_mtu(config: &MulticastSenderConfig) -> Result<(), BindError> {
    let headers = if config.socket.group.is_ipv4() {
        20 + 8
    } else {
        40 + 8
    };
    let needed = config.protocol.max_datagram_size + headers;
    match config.socket.interface.mtu() {
        Some(mtu) if mtu < needed => Err(BindError::DatagramTooLarge {
            datagram_size: config.protocol.max_datagram_size,
            needed,
            interface: config.socket.interface.clone(),
            mtu,
        }),
        _ => Ok(()),
    }
}

struct SenderDriver {
    core: proto::Sender,
    socket: DriverSocket,
    group: SocketAddr,
    io: DatagramIo,
    commands: mpsc::Receiver<Command>,
    /// Current members, so a handle knows whose outcomes to expect.
    receivers: BTreeSet<u32>,
    tracker: DeliveryTracker,
    /// Sends that met a full window, retried in order when the core says it is writable.
    waiting_for_window: VecDeque<Command>,
    /// Set by `close` (or when every handle is gone): answer and stop once nothing is pending.
    closing: Option<Option<oneshot::Sender<MulticastSenderStats>>>,
}

impl SenderDriver {
    async fn run(mut self) {
        loop {
            // Datagrams an emulated receive link held and now releases.
            let core = &mut self.core;
            self.io.release_received(Instant::now(), |from, datagram| {
                core.handle_datagram(Instant::now(), from, datagram)
            });
            self.flush();
            self.process_events();
            if self.closing.is_some()
                && self.tracker.outstanding() == 0
                && self.waiting_for_window.is_empty()
                && !self.io.is_blocked()
            {
                let stats = self.stats();
                if let Some(Some(reply)) = self.closing.take() {
                    let _ = reply.send(stats);
                }
                return;
            }
            let core_deadline = self.core.poll_timeout();
            let deadline =
                earliest(core_deadline, self.io.next_release()).map(tokio::time::Instant::from_std);
            let accepting = self.closing.is_none();
            // Commands are handled after the select: their handler needs all of `self`.
            let command = tokio::select! {
                command = self.commands.recv(), if accepting => match command {
                    Some(command) => Some(command),
                    None => {
                        // Every handle is gone: finish what was accepted, then stop.
                        self.closing = Some(None);
                        None
                    }
                },
                readable = self.socket.socket.readable() => {
                    if readable.is_ok() {
                        let core = &mut self.core;
                        self.io.read_ready(&self.socket, |from, datagram| {
                            core.handle_datagram(Instant::now(), from, datagram)
                        });
                    }
                    None
                }
                // Only wakes the loop, whose flush retries the blocked datagram.
                _ = self.socket.socket.writable(), if self.io.is_blocked() => None,
                // The core's timer or an emulated link's release; the loop's top releases.
                () = sleep_until(deadline), if deadline.is_some() => {
                    let now = Instant::now();
                    if core_deadline.is_some_and(|due| due <= now) {
                        self.core.handle_timeout(now);
                    }
                    None
                }
            };
            if let Some(command) = command {
                self.handle_command(command);
            }
        }
    }

    fn handle_command(&mut self, command: Command) {
        match command {
            Command::Send { .. } => {
                if self.waiting_for_window.is_empty() {
                    self.try_send(command);
                } else {
                    // Keep the order callers asked in.
                    self.waiting_for_window.push_back(command);
                }
            }
            Command::AddReceiver(key) => {
                self.receivers.insert(key.receiver_id);
                self.core.add_receiver(key);
            }
            Command::RemoveReceiver(receiver_id) => {
                self.receivers.remove(&receiver_id);
                self.core.remove_receiver(receiver_id);
                self.tracker.remove_receiver(receiver_id);
            }
            Command::InstallKey(key) => self.core.install_key(key),
            Command::Stats(reply) => {
                let _ = reply.send(self.stats());
            }
            Command::Close(reply) => self.closing = Some(Some(reply)),
        }
    }

    /// Offers a send to the core; a full window parks it until the core is writable again.
    fn try_send(&mut self, command: Command) {
        let Command::Send {
            object_id,
            data,
            reply,
        } = command
        else {
            return;
        };
        match self
            .core
            .send_object(object_id, data.clone(), Instant::now())
        {
            Ok(()) => {
                let handle = self
                    .tracker
                    .track(object_id, self.receivers.iter().copied().collect());
                let _ = reply.send(Ok(handle));
            }
            Err(proto::SendError::WindowFull) => {
                self.waiting_for_window.push_front(Command::Send {
                    object_id,
                    data,
                    reply,
                });
            }
            Err(error) => {
                let _ = reply.send(Err(MulticastSendError::Rejected(error)));
            }
        }
    }

    fn retry_waiting_sends(&mut self) {
        while let Some(command) = self.waiting_for_window.pop_front() {
            let before = self.waiting_for_window.len();
            self.try_send(command);
            if self.waiting_for_window.len() > before {
                return; // Still full.
            }
        }
    }

    fn process_events(&mut self) {
        while let Some(event) = self.core.poll_event() {
            match event {
                SenderEvent::Delivered {
                    object_id,
                    receiver_id,
                } => self
                    .tracker
                    .resolve(object_id, receiver_id, DeliveryOutcome::Delivered),
                SenderEvent::Abandoned {
                    object_id,
                    receiver_id,
                } => self
                    .tracker
                    .resolve(object_id, receiver_id, DeliveryOutcome::Abandoned),
                SenderEvent::Writable => self.retry_waiting_sends(),
            }
        }
        // A send may have completed the window's release without an explicit event.
        if !self.waiting_for_window.is_empty() {
            self.retry_waiting_sends();
        }
    }

    /// Hands the core's datagrams to the socket until it has none or the socket is full.
    fn flush(&mut self) {
        let (core, group) = (&mut self.core, self.group);
        self.io.flush(&self.socket, || {
            let transmit = core.poll_transmit(Instant::now())?;
            let destination = match transmit.destination {
                Destination::Group => group,
                Destination::Unicast(address) => address,
            };
            Some((destination, transmit.payload))
        });
    }

    fn stats(&self) -> MulticastSenderStats {
        MulticastSenderStats {
            protocol: *self.core.stats(),
            socket: self.io.stats(),
            outstanding_objects: self.tracker.outstanding(),
        }
    }
}

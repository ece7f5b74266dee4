//! [`MulticastReceiver`]: a tokio task driving the protocol core's receiver on real sockets.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

#[cfg(feature = "netem")]
use super::ImpairmentConfig;
use super::io::{DatagramIo, DriverSocket, earliest, sleep_until};
use super::{
    BindError, DriverClosed, MulticastSocketConfig, SocketError, SocketStats, receiver_sockets,
};
use crate::multicast::proto::{self, GroupKey, ReceiverConfig, ReceiverEvent, ReceiverKey};

/// How to run a [`MulticastReceiver`].
#[derive(Debug, Clone)]
pub struct MulticastReceiverConfig {
    /// The group and socket options.
    pub socket: MulticastSocketConfig,
    /// The protocol's settings (buffers, NACK timers, repair deadline).
    pub protocol: ReceiverConfig,
    /// Objects (and loss reports) queued for the application. When the application stops
    /// reading and the queue fills, the receiver stops reading the group, so the sender sees
    /// it fall behind instead of it dropping objects it has acknowledged.
    pub queue_capacity: usize,
    /// Emulated links at the receiver's sockets (feature `netem`): the receive link is the
    /// path from the sender (every datagram read), the send link carries its NACKs and
    /// status reports. Tests and benchmarks only.
    #[cfg(feature = "netem")]
    pub impairment: Option<ImpairmentConfig>,
}

impl MulticastReceiverConfig {
    /// Default protocol settings on `socket`'s group, 256 queued objects.
    pub fn new(socket: MulticastSocketConfig) -> Self {
        Self {
            socket,
            protocol: ReceiverConfig::default(),
            queue_capacity: 256,
            #[cfg(feature = "netem")]
            impairment: None,
        }
    }
}

/// An object that arrived whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedObject {
    /// The sender's session.
    pub session_id: u64,
    /// The object's id.
    pub object_id: u64,
    /// Its bytes, exactly as sent.
    pub data: Bytes,
}

/// What a [`MulticastReceiver`] yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// An object arrived whole.
    Object(ReceivedObject),
    /// An object could not be repaired within the configured deadline: fetch it another way.
    Lost {
        /// The sender's session.
        session_id: u64,
        /// The object's id.
        object_id: u64,
    },
}

/// Counters of a [`MulticastReceiver`].
#[derive(Debug, Clone)]
pub struct MulticastReceiverStats {
    /// The protocol core's counters (datagrams accepted, NACKs sent and suppressed, drops by
    /// reason, objects delivered and lost).
    pub protocol: proto::ReceiverStats,
    /// Both sockets' counters together.
    pub socket: SocketStats,
}

enum Command {
    /// A session, and the member it answers as (`None`: the receiver's own key).
    AddSession(u64, GroupKey, Option<ReceiverKey>),
    RemoveSession(u64),
    Stats(oneshot::Sender<MulticastReceiverStats>),
    LastHeard(u64, oneshot::Sender<Option<Instant>>),
}

/// Receives the objects multicast by the sessions it was given keys for, as a stream.
///
/// The protocol runs in a task on the current tokio runtime; dropping this handle stops it.
///
/// # Example
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use replicast_transport::multicast::driver::{
///     MulticastReceiver, MulticastReceiverConfig, MulticastSocketConfig, Received,
/// };
/// use replicast_transport::multicast::proto::{GroupKey, ReceiverKey};
///
/// let socket = MulticastSocketConfig::new("239.255.10.1:47000".parse()?);
/// let key = ReceiverKey { receiver_id: 1, secret: [9; 32] };
/// let mut receiver = MulticastReceiver::bind(MulticastReceiverConfig::new(socket), key)?;
/// receiver.add_session(42, GroupKey { epoch: 1, secret: [7; 32] }).await?;
/// while let Some(received) = receiver.recv().await {
///     match received {
///         Received::Object(object) => println!("{} bytes", object.data.len()),
///         Received::Lost { object_id, .. } => println!("fetch {object_id} over QUIC"),
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct MulticastReceiver {
    received: mpsc::Receiver<Received>,
    commands: mpsc::Sender<Command>,
    control_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

impl MulticastReceiver {
    /// Joins the group and starts the protocol as the receiver `key` names. Must be called
    /// within a tokio runtime.
    pub fn bind(config: MulticastReceiverConfig, key: ReceiverKey) -> Result<Self, BindError> {
        let (group, control) = receiver_sockets(&config.socket)?;
        let control_addr = control
            .socket
            .local_addr()
            .map_err(|source| SocketError::Io {
                operation: "getsockname",
                group: config.socket.group,
                source,
            })?;
        let offload = |source| SocketError::Io {
            operation: "UDP offload setup",
            group: config.socket.group,
            source,
        };
        let group_buffers = group.buffers;
        let group = DriverSocket::new(group.socket).map_err(offload)?;
        let control = DriverSocket::new(control.socket).map_err(offload)?;
        let core = proto::Receiver::new(config.protocol.clone(), key, Instant::now());
        let (received_tx, received) = mpsc::channel(config.queue_capacity.max(1));
        let (commands, command_rx) = mpsc::channel(16);
        let driver = ReceiverDriver {
            core,
            group,
            control,
            io: DatagramIo::new(
                #[cfg(feature = "netem")]
                config.impairment,
                SocketStats {
                    buffers: group_buffers,
                    ..SocketStats::default()
                },
            ),
            commands: command_rx,
            received: received_tx,
            undelivered: None,
        };
        let task = tokio::spawn(driver.run());
        Ok(Self {
            received,
            commands,
            control_addr,
            task,
        })
    }

    /// The unicast address NACKs and status reports leave from (the sender answers there).
    pub fn control_addr(&self) -> SocketAddr {
        self.control_addr
    }

    /// Accepts the session `session_id` with its current group key (call again with the next
    /// epoch's key when the sender rotates).
    pub async fn add_session(&self, session_id: u64, key: GroupKey) -> Result<(), DriverClosed> {
        self.command(Command::AddSession(session_id, key, None))
            .await
    }

    /// [`add_session`](Self::add_session), answering as the member `member` names in that
    /// session (its own id and key there), whatever key the receiver was bound with: one
    /// socket can serve the sessions of several senders that each number their members
    /// themselves. A session already known keeps the member it was added as and takes only
    /// the new epoch; [`remove_session`](Self::remove_session) first to answer as another.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use replicast_transport::multicast::driver::{
    ///     MulticastReceiver, MulticastReceiverConfig, MulticastSocketConfig,
    /// };
    /// use replicast_transport::multicast::proto::{GroupKey, ReceiverKey};
    ///
    /// let socket = MulticastSocketConfig::new("239.255.10.1:47000".parse()?);
    /// let first = ReceiverKey { receiver_id: 1, secret: [9; 32] };
    /// let receiver = MulticastReceiver::bind(MulticastReceiverConfig::new(socket), first.clone())?;
    /// receiver.add_session_as(42, GroupKey { epoch: 1, secret: [7; 32] }, first).await?;
    /// // Another sender on the group, which knows this member as its receiver 5.
    /// let second = ReceiverKey { receiver_id: 5, secret: [3; 32] };
    /// receiver.add_session_as(43, GroupKey { epoch: 1, secret: [8; 32] }, second).await?;
    /// # Ok(()) }
    /// ```
    pub async fn add_session_as(
        &self,
        session_id: u64,
        key: GroupKey,
        member: ReceiverKey,
    ) -> Result<(), DriverClosed> {
        self.command(Command::AddSession(session_id, key, Some(member)))
            .await
    }

    /// Forgets a session.
    pub async fn remove_session(&self, session_id: u64) -> Result<(), DriverClosed> {
        self.command(Command::RemoveSession(session_id)).await
    }

    /// The next object or loss report; `None` once the driver has stopped.
    pub async fn recv(&mut self) -> Option<Received> {
        self.received.recv().await
    }

    /// A snapshot of the counters.
    pub async fn stats(&self) -> Result<MulticastReceiverStats, DriverClosed> {
        ask(&self.commands, Command::Stats).await
    }

    /// A handle for asking after the receiver's sessions from another task than the one that
    /// reads its objects.
    pub fn observer(&self) -> ReceiverObserver {
        ReceiverObserver {
            commands: self.commands.clone(),
        }
    }

    async fn command(&self, command: Command) -> Result<(), DriverClosed> {
        self.commands.send(command).await.map_err(|_| DriverClosed)
    }
}

/// Asks a [`MulticastReceiver`]'s protocol task after its sessions, from a task other than the
/// one that owns the receiver and reads its objects ([`MulticastReceiver::observer`]).
///
/// ```no_run
/// # async fn run(receiver: &replicast_transport::multicast::driver::MulticastReceiver) {
/// let observer = receiver.observer();
/// if let Ok(Some(at)) = observer.last_heard(42).await {
///     println!("session 42 last heard {:?} ago", at.elapsed());
/// }
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct ReceiverObserver {
    commands: mpsc::Sender<Command>,
}

impl ReceiverObserver {
    /// When a datagram of session `session_id` last passed authentication (`None`: none yet,
    /// or no such session).
    pub async fn last_heard(&self, session_id: u64) -> Result<Option<Instant>, DriverClosed> {
        ask(&self.commands, |reply| {
            Command::LastHeard(session_id, reply)
        })
        .await
    }
}

/// Sends the driver the command `question` makes around a reply channel, and waits for the
/// answer.
async fn ask<T>(
    commands: &mpsc::Sender<Command>,
    question: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Result<T, DriverClosed> {
    let (reply, answer) = oneshot::channel();
    commands
        .send(question(reply))
        .await
        .map_err(|_| DriverClosed)?;
    answer.await.map_err(|_| DriverClosed)
}

impl Drop for MulticastReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct ReceiverDriver {
    core: proto::Receiver,
    group: DriverSocket,
    control: DriverSocket,
    io: DatagramIo,
    commands: mpsc::Receiver<Command>,
    received: mpsc::Sender<Received>,
    /// An event the application's full queue could not take yet. While it waits, the group
    /// is not read: that is how a slow application slows the sender down.
    undelivered: Option<Received>,
}

impl ReceiverDriver {
    async fn run(mut self) {
        loop {
            // Datagrams an emulated receive link held and now releases.
            let core = &mut self.core;
            self.io.release_received(Instant::now(), |from, datagram| {
                core.handle_datagram_in_place(Instant::now(), from, datagram)
            });
            self.flush();
            if !self.deliver_events() {
                return; // The application dropped its handle.
            }
            let core_deadline = self.core.poll_timeout();
            let deadline =
                earliest(core_deadline, self.io.next_release()).map(tokio::time::Instant::from_std);
            let reading = self.undelivered.is_none();
            // Commands are handled after the select: their handler needs all of `self`.
            let command = tokio::select! {
                command = self.commands.recv() => match command {
                    Some(command) => Some(command),
                    None => return,
                },
                permit = self.received.reserve(), if self.undelivered.is_some() => {
                    let Ok(permit) = permit else { return };
                    if let Some(received) = self.undelivered.take() {
                        permit.send(received);
                    }
                    None
                }
                readable = self.group.socket.readable(), if reading => {
                    if readable.is_ok() {
                        let core = &mut self.core;
                        self.io.read_ready(&self.group, |from, datagram| {
                            core.handle_datagram_in_place(Instant::now(), from, datagram)
                        });
                    }
                    None
                }
                readable = self.control.socket.readable(), if reading => {
                    if readable.is_ok() {
                        let core = &mut self.core;
                        self.io.read_ready(&self.control, |from, datagram| {
                            core.handle_datagram_in_place(Instant::now(), from, datagram)
                        });
                    }
                    None
                }
                // Only wakes the loop, whose flush retries the blocked datagram.
                _ = self.control.socket.writable(), if self.io.is_blocked() => None,
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
            Command::AddSession(session_id, key, None) => self.core.add_session(session_id, key),
            Command::AddSession(session_id, key, Some(member)) => {
                self.core.add_session_as(session_id, key, &member)
            }
            Command::RemoveSession(session_id) => self.core.remove_session(session_id),
            Command::Stats(reply) => {
                let _ = reply.send(MulticastReceiverStats {
                    protocol: *self.core.stats(),
                    socket: self.io.stats(),
                });
            }
            Command::LastHeard(session_id, reply) => {
                let _ = reply.send(self.core.last_heard(session_id));
            }
        }
    }

    /// Moves the core's events into the application's queue until it is full. Returns false
    /// when the application is gone.
    fn deliver_events(&mut self) -> bool {
        while self.undelivered.is_none() {
            let Some(event) = self.core.poll_event() else {
                break;
            };
            let received = match event {
                ReceiverEvent::Object {
                    session_id,
                    object_id,
                    data,
                } => Received::Object(ReceivedObject {
                    session_id,
                    object_id,
                    data,
                }),
                ReceiverEvent::Lost {
                    session_id,
                    object_id,
                } => Received::Lost {
                    session_id,
                    object_id,
                },
            };
            match self.received.try_send(received) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(received)) => self.undelivered = Some(received),
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
            }
        }
        true
    }

    /// NACKs and status reports go out of the control socket, so the sender's answers come
    /// back to it rather than to the shared group port.
    fn flush(&mut self) {
        let core = &mut self.core;
        self.io.flush(&self.control, || {
            loop {
                let transmit = core.poll_transmit(Instant::now())?;
                // A receiver has nothing to say to the whole group.
                if let proto::Destination::Unicast(destination) = transmit.destination {
                    return Some((destination, transmit.payload));
                }
            }
        });
    }
}

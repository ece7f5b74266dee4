//! [`Memberships`]: the writer sessions a fan-out replica is a member of, and the multicast
//! sockets they share.
//!
//! Every writer of a cluster usually sends to the same group (one `[multicast]` section for
//! the whole cluster). Were each writer's session given a socket of its own, W writers on a
//! group would mean W sockets joined to the same group and port, and the kernel would hand
//! every datagram of every writer to all W of them: W² receive work for W times the traffic.
//! So the replica keeps one socket (one [`MulticastReceiver`](crate::multicast::driver::MulticastReceiver),
//! one task) per group address and port (on the one interface its configuration names), and
//! adds each writer's session to it with that writer's keys; the protocol core tells the
//! sessions apart by their ids, and the matching of objects with their announcements by
//! (session, object id).
//!
//! A socket closes when its last session ends (the writer left, joined again elsewhere, or
//! another session of it replaced this one): a replica that no writer sends to any more
//! leaves the group, so no traffic reaches it for nothing.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::error::JoinRefusal;
use super::verification::Verification;
use super::wire::Membership;
use crate::multicast::driver::{BindError, ReceiverObserver};
use crate::multicast::proto::{GroupKey, ReceiverKey};

/// What a group socket's task is told to do with its multicast receiver.
pub(super) enum SocketCommand {
    /// Accept a session (or its next epoch's key), answering as `member`.
    Add {
        session_id: u64,
        key: GroupKey,
        member: ReceiverKey,
        /// Told once the receiver took the session; dropped if it had stopped.
        installed: Option<oneshot::Sender<()>>,
    },
    /// Forget a session.
    Remove(u64),
}

/// A group socket's task: it reads the group for every session on it.
pub(super) struct SocketTask {
    /// Its commands, in the order the memberships changed.
    pub(super) commands: mpsc::UnboundedSender<SocketCommand>,
    /// Asks its multicast receiver when a session was last heard.
    pub(super) observer: ReceiverObserver,
    /// The task, which owns the socket: aborting it closes the socket (leaving the group).
    pub(super) task: JoinHandle<()>,
}

impl Drop for SocketTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SocketTask {
    /// Whether the task still takes commands (its multicast receiver has not stopped).
    fn is_running(&self) -> bool {
        !self.commands.is_closed()
    }

    /// Hands the task `command`; a stopped task is left alone: its sessions receive nothing
    /// more by multicast, and their writers fall back to unicast.
    fn send(&self, command: SocketCommand) {
        let _ = self.commands.send(command);
    }
}

/// One multicast socket, and the sessions it serves.
#[derive(Default)]
struct GroupSocket {
    /// `None` once [`Memberships::stop_multicast`] closed it.
    task: Option<SocketTask>,
    sessions: HashSet<u64>,
}

/// One writer session this replica is a member of.
struct Session {
    writer: String,
    /// The group (the key of its socket).
    group: SocketAddr,
    /// The replica's id and key in the session: its NACKs and reports are sealed with it.
    member: ReceiverKey,
    /// Who checks the session's bytes ([`Verification::Application`]: nobody here).
    verification: Verification,
}

/// The writer sessions of a replica and the group sockets they share, one per group address
/// and port. Kept under one lock, so that a socket is never closed while a session is being
/// added to it, and the sockets' commands follow the memberships' order.
#[derive(Default)]
pub(super) struct Memberships {
    sessions: HashMap<u64, Session>,
    sockets: HashMap<SocketAddr, GroupSocket>,
}

impl Memberships {
    /// Writer sessions this replica is a member of.
    pub(super) fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Multicast sockets open (and reading) now.
    pub(super) fn sockets(&self) -> usize {
        self.sockets
            .values()
            .filter(|socket| socket.task.as_ref().is_some_and(SocketTask::is_running))
            .count()
    }

    /// The observer of the multicast receiver serving session `session_id` (`None`: no such
    /// session, or its socket stopped).
    pub(super) fn observer(&self, session_id: u64) -> Option<ReceiverObserver> {
        let group = self.sessions.get(&session_id)?.group;
        let task = self.sockets.get(&group)?.task.as_ref()?;
        Some(task.observer.clone())
    }

    /// The writer of session `session_id` if its multicast objects are delivered as they
    /// arrive, announced by nobody ([`Verification::Application`]).
    pub(super) fn unannounced_writer(&self, session_id: u64) -> Option<&str> {
        self.sessions
            .get(&session_id)
            .filter(|session| session.verification == Verification::Application)
            .map(|session| session.writer.as_str())
    }

    /// Whether `writer` holds session `session_id` here.
    pub(super) fn is_member(&self, writer: &str, session_id: u64) -> bool {
        self.sessions
            .get(&session_id)
            .is_some_and(|session| session.writer == writer)
    }

    /// Makes `writer` a member of `membership`'s session, on its group's socket, which `open`
    /// binds (with its task) if no running socket serves the group. A writer has one session
    /// at a time: a new session id from it ends its older ones (so that no peer can open
    /// sessions here without bound), and joining the same session again starts it afresh (a
    /// writer that restarted). The answer resolves once the socket's receiver has the
    /// session's key, or fails if it stopped first.
    pub(super) fn join(
        &mut self,
        writer: &str,
        membership: &Membership,
        max_sessions: usize,
        open: impl FnOnce(SocketAddr, ReceiverKey) -> Result<SocketTask, BindError>,
    ) -> Result<oneshot::Receiver<()>, JoinRefusal> {
        let session_id = membership.session_id;
        let group = membership.group;
        // Sessions of several writers share a socket, where only their ids tell them apart.
        if self
            .sessions
            .get(&session_id)
            .is_some_and(|existing| existing.writer != writer)
        {
            return Err(JoinRefusal::AnotherWritersSession { session_id });
        }
        // A writer joining again replaces its own session: only a new writer counts.
        if self.sessions.len() >= max_sessions
            && !self
                .sessions
                .values()
                .any(|session| session.writer == writer)
        {
            return Err(JoinRefusal::Limit { max: max_sessions });
        }
        let member = ReceiverKey {
            receiver_id: membership.receiver_id,
            secret: membership.receiver_secret,
        };
        // Bound before anything changes: a writer whose new group cannot be joined keeps its
        // session on the old one.
        let running = self
            .sockets
            .get(&group)
            .and_then(|socket| socket.task.as_ref())
            .is_some_and(SocketTask::is_running);
        if !running {
            let task = open(group, member.clone())
                .map_err(|source| JoinRefusal::Bind { group, source })?;
            // Sessions of a socket that stopped stay on its replacement, still without
            // multicast: their writers join again to get it back.
            self.sockets.entry(group).or_default().task = Some(task);
        }
        let ended: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, session)| session.writer == writer)
            .map(|(id, _)| *id)
            .collect();
        for id in ended {
            self.end(id);
        }
        let (installed, answer) = oneshot::channel();
        let socket = self.sockets.entry(group).or_default();
        socket.sessions.insert(session_id);
        if let Some(task) = &socket.task {
            task.send(SocketCommand::Add {
                session_id,
                key: GroupKey {
                    epoch: membership.epoch,
                    secret: membership.group_secret,
                },
                member: member.clone(),
                installed: Some(installed),
            });
        }
        self.sessions.insert(
            session_id,
            Session {
                writer: writer.to_owned(),
                group,
                member,
                verification: membership.verification,
            },
        );
        self.close_idle_sockets();
        Ok(answer)
    }

    /// Hands session `session_id`'s socket the key of a new epoch; false if `writer` does not
    /// hold the session.
    pub(super) fn rekey(&self, writer: &str, session_id: u64, key: GroupKey) -> bool {
        let Some(session) = self
            .sessions
            .get(&session_id)
            .filter(|session| session.writer == writer)
        else {
            return false;
        };
        if let Some(task) = self
            .sockets
            .get(&session.group)
            .and_then(|socket| socket.task.as_ref())
        {
            task.send(SocketCommand::Add {
                session_id,
                key,
                member: session.member.clone(),
                installed: None,
            });
        }
        true
    }

    /// Ends `writer`'s session `session_id` (nothing if it holds no such session); its socket
    /// closes if no other session uses it.
    pub(super) fn leave(&mut self, writer: &str, session_id: u64) {
        if self.is_member(writer, session_id) {
            self.end(session_id);
            self.close_idle_sockets();
        }
    }

    /// Closes every socket (leaving the groups) and keeps the sessions, which then get
    /// nothing by multicast until their writers join again.
    pub(super) fn stop_multicast(&mut self) {
        for socket in self.sockets.values_mut() {
            socket.task = None;
        }
    }

    /// Ends every session and closes every socket.
    pub(super) fn clear(&mut self) {
        self.sessions.clear();
        self.sockets.clear();
    }

    /// Removes a session from the books and from its socket's receiver; the socket stays
    /// open until [`close_idle_sockets`](Self::close_idle_sockets).
    fn end(&mut self, session_id: u64) {
        let Some(session) = self.sessions.remove(&session_id) else {
            return;
        };
        if let Some(socket) = self.sockets.get_mut(&session.group) {
            socket.sessions.remove(&session_id);
            if let Some(task) = &socket.task {
                task.send(SocketCommand::Remove(session_id));
            }
        }
    }

    /// Closes the sockets no session uses any more (dropping a task aborts it).
    fn close_idle_sockets(&mut self) {
        self.sockets.retain(|_, socket| !socket.sessions.is_empty());
    }
}

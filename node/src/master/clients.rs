//! The client-master conversation on the primary: a client's hello, the begin, finish and
//! abort of its transactions, and its questions about the last commit and new object ids.
//! Each is taken only from a client the primary welcomed (the hello from any node that is not
//! a storage); the work itself is in `begin`, `oids` and the finish in `mod.rs`.

use std::time::SystemTime;

use super::{Master, unexpected};
use crate::protocol::{Message, ProtocolError};

impl Master {
    /// A client's message: its hello, the begin, finish and abort of its transactions, its
    /// questions about the last commit and new object ids.
    pub(super) fn client_message(
        &mut self,
        now: SystemTime,
        from: &str,
        is_storage: bool,
        message: Message,
    ) -> Result<(), ProtocolError> {
        match message {
            Message::ClientHello if !is_storage => self.welcome_client(now, from)?,
            Message::Begin {
                ttid,
                table_version,
            } if self.clients.contains(from) => {
                self.begin_own(from, ttid, table_version)?;
            }
            Message::AskBeginAt { tid } if self.clients.contains(from) => {
                if tid <= self.state.last_tid {
                    let last = self.state.last_tid;
                    self.out.send(from, Message::BeginRefused { tid, last });
                } else {
                    self.begin_at(now, from, tid)?;
                }
            }
            Message::AskLastTransaction { request } if self.clients.contains(from) => {
                let tid = self.last_announced();
                self.out
                    .send(from, Message::AnswerLastTransaction { request, tid });
            }
            Message::AskNewOids { count } if self.clients.contains(from) => {
                self.hand_out_oids(from, count)?;
            }
            Message::AskFinish {
                ttid,
                oids,
                voters,
                failed,
            } if self.clients.contains(from) => {
                self.ask_finish(now, from, ttid, oids, voters, failed)?;
            }
            Message::AbortTransaction { ttid } if self.clients.contains(from) => {
                let open = self
                    .open
                    .get(&ttid)
                    .ok_or(ProtocolError::UnknownTransaction {
                        from: from.to_owned(),
                        kind: "AbortTransaction",
                        ttid,
                    })?;
                if open.client != from || open.finish_queued {
                    return Err(ProtocolError::OutOfOrder {
                        from: from.to_owned(),
                        kind: "AbortTransaction",
                        ttid,
                    });
                }
                self.abort(ttid, false);
            }
            other => return Err(unexpected(from, &other)),
        }
        Ok(())
    }
}

//! The storage's answers to an operator's inspections ([`Message::AskInspect`]): digests and
//! listings of a partition's revisions, for `replicast check`.
//!
//! They come on request streams (the driver's [`Role::answer_or_defer`]); the role defers
//! each one, hands the engine a [`Read::Inspect`] and gives the answer back with
//! [`Storage::poll_answer`] once read. A question about a partition this storage does not
//! hold readable, or beyond [`StorageConfig::max_pending_reads`](super::StorageConfig), is
//! answered [`InspectAnswer::Unavailable`] at once.
//!
//! [`Role::answer_or_defer`]: crate::driver::Role::answer_or_defer

use super::persist::{AfterRead, Read};
use super::{Storage, StorageEvent};
use crate::engine::EngineError;
use crate::ids::Tid;
use crate::protocol::{InspectAnswer, Message, ProtocolError};

impl Storage {
    /// Answers an operator's request from `from` (one that came on a request stream): a
    /// [`Message::AskInspect`] is answered at once when this storage cannot, else deferred
    /// (`Ok(None)`) until the engine read it, its answer then coming from
    /// [`poll_answer`](Self::poll_answer) with `token`. Anything else is refused with
    /// [`ProtocolError::Unexpected`].
    ///
    /// ```
    /// use std::time::SystemTime;
    /// use replicast_node::engine::StartupState;
    /// use replicast_node::ids::Tid;
    /// use replicast_node::protocol::{InspectAnswer, InspectAsk, Message, OidRange};
    /// use replicast_node::storage::{Storage, StorageConfig};
    ///
    /// let now = SystemTime::now();
    /// let mut storage =
    ///     Storage::open(now, "s1", "master", StartupState::default(), StorageConfig::default());
    /// let ask = InspectAsk::Digest { partition: 0, range: OidRange::ALL, up_to: Tid(5) };
    /// // No table yet: the storage holds nothing readable.
    /// let answer = storage.answer_or_defer(now, "admin", Message::AskInspect { request: 4, ask }, 1)?;
    /// assert_eq!(
    ///     answer,
    ///     Some(Message::AnswerInspect { request: 4, answer: InspectAnswer::Unavailable })
    /// );
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn answer_or_defer(
        &mut self,
        now: std::time::SystemTime,
        from: &str,
        request: Message,
        token: u64,
    ) -> Result<Option<Message>, ProtocolError> {
        let _ = now;
        let Message::AskInspect { request, ask } = request else {
            return Err(ProtocolError::Unexpected {
                from: from.to_owned(),
                kind: request.kind(),
            });
        };
        if !self.readable_here(ask.partition()) || !self.persistence.takes_reads(&self.config) {
            return Ok(Some(Message::AnswerInspect {
                request,
                answer: InspectAnswer::Unavailable,
            }));
        }
        let num_partitions = self.num_partitions();
        self.persistence.read(
            Read::Inspect {
                ask,
                num_partitions,
            },
            AfterRead::Inspect { token, request },
        );
        Ok(None)
    }

    /// The next deferred answer of [`answer_or_defer`](Self::answer_or_defer) that is ready:
    /// its token and the answer.
    pub fn poll_answer(&mut self) -> Option<(u64, Result<Message, ProtocolError>)> {
        self.answers.pop_front()
    }

    /// The engine read what request `request` (deferred under `token`) asked: its answer is
    /// ready; a failure is reported as an event and answered [`InspectAnswer::Unavailable`].
    pub(super) fn answer_inspect(
        &mut self,
        token: u64,
        request: u64,
        answer: Result<InspectAnswer, EngineError>,
    ) {
        let answer = answer.unwrap_or_else(|error| {
            self.events.push_back(StorageEvent::EngineError {
                ttid: Tid::ZERO,
                error: format!("answering an inspection: {error}"),
            });
            InspectAnswer::Unavailable
        });
        self.answers
            .push_back((token, Ok(Message::AnswerInspect { request, answer })));
    }
}

//! Answering fan-out work the gate refused.

use replicast_transport::quic::Incoming;

use crate::protocol::Refusal;

/// Answers refused fan-out work with the refusal's text (the fan-out's answers are the
/// transport's, which carry no protocol message), in a task of its own: a peer that does not
/// read its answer holds up nothing.
pub fn refuse_incoming(incoming: Incoming, refusal: &Refusal) {
    let text = refusal.to_string();
    tokio::spawn(async move {
        let peer = incoming.peer().to_owned();
        let sent = match incoming {
            Incoming::Request(request) => request.respond_err(&text).await,
            Incoming::Object(object) => object.respond_err(&text).await,
            // A message, or a channel's end, needs no answer.
            Incoming::Message(_) | Incoming::ChannelEnded(_) => Ok(()),
        };
        if let Err(error) = sent {
            tracing::debug!(%peer, %error, "cannot answer refused fan-out work");
        }
    });
}

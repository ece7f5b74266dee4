//! `[link]`: tuning of the QUIC links between nodes.

use std::time::Duration;

use replicast_transport::quic::Congestion;
use serde::Deserialize;
use toml::Spanned;

use super::check::Checker;
use super::error::ConfigError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [link] table")]
pub(super) struct RawLink {
    keep_alive_ms: Option<Spanned<u64>>,
    idle_timeout_ms: Option<Spanned<u64>>,
    stream_receive_window: Option<Spanned<u64>>,
    send_window: Option<Spanned<u64>>,
    message_copies: Option<bool>,
    congestion: Option<Spanned<String>>,
}

/// The optional `[link]` section: QUIC transport settings. Every key has a default.
///
/// quinn's own defaults suit about 100 Mbit/s at 100 ms; these defaults allow more data in
/// flight, for links between sites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkTuning {
    /// Interval of keep-alive packets (`link.keep_alive_ms`; 0 turns them off). Must be well
    /// below the idle timeout, or quiet links close.
    pub keep_alive: Option<Duration>,
    /// A link silent for this long is closed and its peer counts as lost
    /// (`link.idle_timeout_ms`): the failure detection time. QUIC raises it to three probe
    /// timeouts (about three round trips) where the round trip is longer, so one setting fits
    /// a LAN and a WAN.
    pub idle_timeout: Duration,
    /// Bytes a peer may send on one stream before it is read (`link.stream_receive_window`).
    pub stream_receive_window: u64,
    /// Bytes this node keeps unacknowledged per connection (`link.send_window`).
    pub send_window: u64,
    /// Whether the packet that follows a pause in this node's writes (the transport's tail
    /// probe) carries copies of its last small messages (`link.message_copies`, default
    /// true): a peer then takes a message whose packet was lost from its copy instead of
    /// waiting about 1.3 round trips for QUIC to send it again. Off saves a few hundred bytes
    /// per pause, for links that do not lose packets.
    pub message_copies: bool,
    /// The QUIC congestion controller of this node's links (`link.congestion`: `"cubic"`, the
    /// default, `"strict-cubic"` or `"bbr"`): the default keeps its window through losses
    /// that come without a queue (a WAN path's random loss), `"strict-cubic"` shrinks it at
    /// every loss as TCP does, BBR paces by what it measures
    /// ([`Congestion`](replicast_transport::quic::Congestion) has the measurements).
    pub congestion: Congestion,
}

impl Default for LinkTuning {
    fn default() -> Self {
        Self {
            keep_alive: Some(Duration::from_millis(250)),
            idle_timeout: Duration::from_secs(1),
            stream_receive_window: 8 << 20,
            send_window: 32 << 20,
            message_copies: true,
            congestion: Congestion::default(),
        }
    }
}

/// Largest value QUIC can encode in a variable-length integer (RFC 9000, section 16).
const MAX_VARINT: u64 = (1 << 62) - 1;

impl LinkTuning {
    pub(super) fn check(
        raw: Option<Spanned<RawLink>>,
        check: &Checker<'_>,
    ) -> Result<Self, ConfigError> {
        let mut tuning = Self::default();
        let Some(raw) = raw else {
            return Ok(tuning);
        };
        let raw = raw.into_inner();
        if let Some(copies) = raw.message_copies {
            tuning.message_copies = copies;
        }
        if let Some(name) = &raw.congestion {
            tuning.congestion = Congestion::from_name(name.get_ref()).ok_or_else(|| {
                check.invalid(
                    "link.congestion",
                    name,
                    name.get_ref(),
                    Congestion::expected(),
                )
            })?;
        }
        if let Some(idle) = &raw.idle_timeout_ms {
            // quinn takes the idle timeout as a QUIC varint of milliseconds.
            if !(1..=MAX_VARINT).contains(idle.get_ref()) {
                return Err(check.invalid(
                    "link.idle_timeout_ms",
                    idle,
                    idle.get_ref(),
                    format!("1 to {MAX_VARINT} milliseconds"),
                ));
            }
            tuning.idle_timeout = Duration::from_millis(*idle.get_ref());
        }
        if let Some(keep_alive) = &raw.keep_alive_ms {
            tuning.keep_alive = match *keep_alive.get_ref() {
                0 => None,
                millis => Some(Duration::from_millis(millis)),
            };
        }
        if let Some(keep_alive) = tuning.keep_alive
            && keep_alive >= tuning.idle_timeout
        {
            let (key, shown, span) = match &raw.keep_alive_ms {
                Some(value) => ("link.keep_alive_ms", *value.get_ref(), value.span()),
                None => (
                    "link.idle_timeout_ms",
                    tuning.idle_timeout.as_millis() as u64,
                    raw.idle_timeout_ms.as_ref().map_or(0..0, Spanned::span),
                ),
            };
            return Err(check.invalid(
                key,
                &Spanned::new(span, ()),
                shown,
                format!(
                    "a keep-alive interval ({} ms) below the idle timeout ({} ms), or \
                         quiet links close",
                    keep_alive.as_millis(),
                    tuning.idle_timeout.as_millis()
                ),
            ));
        }
        for (value, key, target) in [
            (
                &raw.stream_receive_window,
                "link.stream_receive_window",
                &mut tuning.stream_receive_window,
            ),
            (
                &raw.send_window,
                "link.send_window",
                &mut tuning.send_window,
            ),
        ] {
            if let Some(value) = value {
                if !(1..=MAX_VARINT).contains(value.get_ref()) {
                    return Err(check.invalid(
                        key,
                        value,
                        value.get_ref(),
                        format!("1 to {MAX_VARINT} bytes"),
                    ));
                }
                *target = *value.get_ref();
            }
        }
        Ok(tuning)
    }
}

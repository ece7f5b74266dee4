//! A peer whose process is gone without a word, over real QUIC on 127.0.0.1 (Linux: the
//! endpoint's socket reads ICMP errors, `quic/icmp.rs`): the next keep-alive to its port is
//! answered with ICMP port unreachable, the endpoint probes the connection, nothing answers,
//! and the connection closes as unreachable, long before its idle timeout (set out of reach
//! here, so nothing else can close it); the connection to a live peer goes on.
#![cfg(target_os = "linux")]

mod quic_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use quic_support::*;
use quinn::AsyncUdpSocket;
use quinn::udp::Transmit;
use replicast_testkit::endpoint as testkit;
use replicast_transport::quic::{Endpoint, LinkConfig, LinkError};
use replicast_transport::wrapped_socket::{SocketWrapper, WrappedSocket};

/// Longer than the test may take: only the ICMP path can close the connection in time.
const IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// A socket that can be struck dumb: once `muted`, nothing it sends leaves (a process that
/// died says no goodbye).
#[derive(Debug)]
struct Mutable {
    inner: Arc<dyn AsyncUdpSocket>,
    muted: Arc<AtomicBool>,
}

impl SocketWrapper for Mutable {
    fn inner(&self) -> &Arc<dyn AsyncUdpSocket> {
        &self.inner
    }

    fn try_send(&self, transmit: &Transmit) -> std::io::Result<()> {
        if self.muted.load(Ordering::Acquire) {
            return Ok(());
        }
        self.inner.try_send(transmit)
    }
}

fn link_config() -> LinkConfig {
    LinkConfig {
        keep_alive: Some(Duration::from_millis(100)),
        idle_timeout: Some(IDLE_TIMEOUT),
        ..LinkConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_gone_silently_is_closed_as_unreachable_before_its_idle_timeout() {
    let ca = ca("cluster");
    // The peer runs on a runtime of its own, so that ending it drops its endpoint and closes
    // its socket, as the end of its process would.
    let muted = Arc::new(AtomicBool::new(false));
    let (bound_tx, bound) = std::sync::mpsc::channel();
    let (end_tx, end) = tokio::sync::oneshot::channel::<()>();
    let config = testkit::config(&identity(&ca, "storage-1"), loopback(), link_config())
        .expect("an endpoint configuration");
    let peer_muted = muted.clone();
    let peer = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("the peer's runtime");
        runtime.block_on(async move {
            let std_socket = std::net::UdpSocket::bind(config.listen).expect("a UDP socket");
            let inner = quinn::default_runtime()
                .expect("a tokio runtime")
                .wrap_udp_socket(std_socket)
                .expect("a quinn socket");
            let socket = WrappedSocket::new(Mutable {
                inner,
                muted: peer_muted,
            });
            let endpoint = Endpoint::bind_with_socket(config, socket).expect("the peer binds");
            bound_tx.send(addr(&endpoint)).expect("the test waits");
            let _serving = serve(endpoint, None);
            let _ = end.await;
        });
        // The runtime drops here, and with it the endpoint and its socket.
    });
    let peer_address = bound.recv().expect("the peer's address");

    bounded(async {
        let client = endpoint(&identity(&ca, "client-1"), link_config());
        // A live peer too: an ICMP error alone does not wake the socket's reader, which
        // looks at the error queue when it has read the socket dry (in a cluster, other
        // peers' traffic makes that often).
        let live = endpoint(&identity(&ca, "storage-2"), link_config());
        let _serving_live = serve(live.clone(), None);
        let live_link = client.link("storage-2", addr(&live)).await.expect("a link");
        let link = client
            .link("storage-1", peer_address)
            .await
            .expect("a link");
        let Pong(answer) = link.request(&Request::Ping(1)).await.expect("an answer");
        assert_eq!(answer, 1);
        let channel = link.channel();
        channel
            .send(bytes::Bytes::from_static(b"hello"))
            .await
            .expect("queued");

        muted.store(true, Ordering::Release);
        end_tx.send(()).expect("the peer runs");
        tokio::task::spawn_blocking(move || peer.join())
            .await
            .expect("joined")
            .expect("the peer's thread ends");

        // Closed by this side (an idle timeout would be `TimedOut`), as unreachable.
        let reason = channel.closed().await;
        assert!(
            matches!(
                &reason,
                LinkError::ConnectionLost {
                    reason: quinn::ConnectionError::LocallyClosed,
                    ..
                }
            ),
            "{reason:?}"
        );
        assert_eq!(client.stats().unreachable_closed, 1);
        // The live peer's connection is untouched.
        let Pong(answer) = live_link
            .request(&Request::Ping(2))
            .await
            .expect("an answer");
        assert_eq!(answer, 2);
    })
    .await;
}

//! Two QUIC nodes with mutual TLS: one asks, the other answers.
//!
//! `cargo run -p replicast-transport --example request_response`
//!
//! A cluster CA issues both nodes' certificates (replicast-certs); each endpoint accepts and
//! dials on one UDP socket on 127.0.0.1, and a peer is named by its certificate.

use replicast_certs::ClusterCa;
use replicast_transport::quic::{Endpoint, EndpointConfig, Incoming, LinkConfig};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Ping(u64);

#[derive(Serialize, Deserialize)]
struct Pong(u64);

fn endpoint(ca: &ClusterCa, name: &str) -> Result<Endpoint, Box<dyn std::error::Error>> {
    let identity = ca.issue(name, &[])?;
    Ok(Endpoint::bind(EndpointConfig {
        listen: "127.0.0.1:0".parse()?,
        server_tls: identity.server_config()?,
        client_tls: identity.client_config()?,
        link: LinkConfig::default(),
    })?)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ca = ClusterCa::generate("example")?;
    let asker = endpoint(&ca, "asker")?;
    let answerer = endpoint(&ca, "answerer")?;
    let answerer_addr = answerer.local_addr()?;

    // The answerer serves requests until its endpoint is dropped.
    let server = tokio::spawn(async move {
        while let Some(incoming) = answerer.accept().await {
            if let Incoming::Request(request) = incoming {
                let Ping(n) = request.decode()?;
                request.respond(&Pong(n + 1)).await?;
            }
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    });

    let link = asker.link("answerer", answerer_addr).await?;
    for n in 0..3 {
        let Pong(answer) = link.request(&Ping(n)).await?;
        println!("asked {n}, answerer said {answer}");
        assert_eq!(answer, n + 1);
    }
    server.abort();
    Ok(())
}

//! One QUIC node sends a 4 MiB object to another, which checks it and answers.
//!
//! `cargo run -p replicast-transport --example object_transfer`
//!
//! The object travels in chunks on its own stream (zstd where a chunk shrinks) with an
//! XXH3-128 checksum; the receiver reads the application header before the payload.

use bytes::Bytes;
use replicast_certs::ClusterCa;
use replicast_transport::quic::{Endpoint, EndpointConfig, Incoming, LinkConfig};

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
    let sender = endpoint(&ca, "sender")?;
    let receiver = endpoint(&ca, "receiver")?;
    let receiver_addr = receiver.local_addr()?;

    let server = tokio::spawn(async move {
        while let Some(incoming) = receiver.accept().await {
            if let Incoming::Object(mut object) = incoming {
                let name: String = object.header()?; // decided on before the payload is read
                let payload = object.receive().await?; // length and checksum verified
                println!("{} sent {name}: {} bytes", object.peer(), payload.len());
                object.respond(&(payload.len() as u64)).await?;
            }
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    });

    let payload: Bytes = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    let link = sender.link("receiver", receiver_addr).await?;
    let stored: u64 = link
        .send_object(&"object-42".to_owned(), payload.clone())
        .await?;
    println!("receiver stored {stored} bytes");
    assert_eq!(stored, payload.len() as u64);
    server.abort();
    Ok(())
}

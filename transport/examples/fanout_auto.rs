//! The fan-out with `Strategy::Auto`: a writer hands objects to three replicas, by
//! multicast to those proven reachable on the group and by QUIC to the rest, and learns per
//! replica how each object arrived.
//!
//! `cargo run -p replicast-transport --example fanout_auto`

use bytes::Bytes;
use replicast_certs::ClusterCa;
use replicast_transport::fanout::{
    Fanout, FanoutConfig, FanoutReceiver, FanoutReceiverConfig, Strategy,
};
use replicast_transport::multicast::driver::{MulticastSenderConfig, MulticastSocketConfig};
use replicast_transport::quic::{Endpoint, EndpointConfig, LinkConfig};

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
    let mut replicas = Vec::new();
    let mut addresses = Vec::new();
    for name in ["replica-1", "replica-2", "replica-3"] {
        let endpoint = endpoint(&ca, name)?;
        addresses.push((name, endpoint.local_addr()?));
        replicas.push(FanoutReceiver::start(
            endpoint,
            FanoutReceiverConfig::default(),
        ));
    }

    let port = 40_000 + (std::process::id() % 20_000) as u16;
    let group = MulticastSocketConfig::new(format!("239.255.42.9:{port}").parse()?);
    let mut config = FanoutConfig::new(MulticastSenderConfig::new(group, 7));
    config.strategy = Strategy::Auto;
    let writer = Fanout::bind(endpoint(&ca, "writer")?, config)?;
    for (name, addr) in &addresses {
        writer.add_replica(name, *addr).await?;
    }

    for object_id in 0..10u64 {
        let data = Bytes::from(vec![object_id as u8; 64 * 1024]);
        let report = writer.send(object_id, data).await?.wait().await;
        println!("object {object_id}: {:?}", report.outcomes);
        assert!(report.all_delivered());
    }
    for replica in &mut replicas {
        for _ in 0..10 {
            let object = replica.recv().await.ok_or("replica stopped")?;
            assert_eq!(object.data.len(), 64 * 1024);
        }
    }
    println!("reachability: {:?}", writer.reachability());
    writer.close().await?;
    Ok(())
}

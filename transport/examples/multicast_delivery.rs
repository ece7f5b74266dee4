//! A multicast sender, three receivers on loopback, and a delivery report per object and
//! receiver.
//!
//! `cargo run -p replicast-transport --example multicast_delivery`
//!
//! Keys are fixed here; in replicast they are handed out over the authenticated QUIC links.
//! The group is 239.255.x.y with TTL 1 on the loopback interface.

use bytes::Bytes;
use replicast_transport::multicast::driver::{
    MulticastReceiver, MulticastReceiverConfig, MulticastSender, MulticastSenderConfig,
    MulticastSocketConfig, Received,
};
use replicast_transport::multicast::proto::{FecConfig, GroupKey, ReceiverKey};

const RECEIVERS: u32 = 3;
const OBJECTS: u64 = 20;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port = 40_000 + (std::process::id() % 20_000) as u16;
    let socket = MulticastSocketConfig::new(format!("239.255.42.7:{port}").parse()?);
    let group_key = GroupKey {
        epoch: 1,
        secret: [7; 32],
    };
    let receiver_key = |receiver_id| ReceiverKey {
        receiver_id,
        secret: [receiver_id as u8; 32],
    };

    let mut receivers = Vec::new();
    for id in 1..=RECEIVERS {
        let config = MulticastReceiverConfig::new(socket.clone());
        let receiver = MulticastReceiver::bind(config, receiver_key(id))?;
        receiver.add_session(42, group_key.clone()).await?;
        receivers.push(receiver);
    }

    let mut config = MulticastSenderConfig::new(socket, 42);
    // Reed-Solomon parity: 3% sent with the data (a paced sender, `protocol.rate_limit`, also
    // sends more on demand and as the receivers' loss calls for; unpaced, losses beyond the
    // 3% are repaired by retransmission, which costs the receivers less CPU than decoding).
    config.protocol.fec = Some(FecConfig {
        max_block: 64,
        proactive: 0.03,
    });
    let sender = MulticastSender::bind(config, group_key)?;
    for id in 1..=RECEIVERS {
        sender.add_receiver(receiver_key(id)).await?;
    }

    let mut handles = Vec::new();
    for object_id in 0..OBJECTS {
        let data = Bytes::from(vec![object_id as u8; 100_000]);
        handles.push(sender.send(object_id, data).await?); // waits while the window is full
    }
    // Each receiver gets every object whole (or a loss report to fetch it another way).
    for (index, receiver) in receivers.iter_mut().enumerate() {
        for _ in 0..OBJECTS {
            match receiver.recv().await {
                Some(Received::Object(object)) => assert_eq!(object.data.len(), 100_000),
                Some(Received::Lost { object_id, .. }) => {
                    println!("receiver {index}: {object_id} lost")
                }
                None => return Err("receiver stopped".into()),
            }
        }
    }
    for handle in handles {
        let report = handle.wait().await; // Delivered / Abandoned / Removed per receiver
        println!("object {}: {:?}", report.object_id, report.outcomes);
        assert!(report.all_delivered());
    }
    let stats = sender.close().await?;
    println!(
        "{} data datagrams, {} parity, {} repairs",
        stats.protocol.data_datagrams_sent,
        stats.protocol.parity_sent,
        stats.protocol.repairs_multicast + stats.protocol.repairs_unicast
    );
    Ok(())
}

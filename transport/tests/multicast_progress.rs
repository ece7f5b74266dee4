//! The sender gives up on a receiver for lack of progress, never for being slow.
//!
//! One sender and one slow receiver on a virtual clock: the sender puts an object on the wire at
//! once, the receiver works through its datagrams at a fixed rate, so it acknowledges long after
//! the object was sent while making steady progress.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use replicast_transport::multicast::proto::{
    Destination, GroupKey, Receiver, ReceiverConfig, ReceiverEvent, ReceiverKey, Sender,
    SenderConfig, SenderEvent,
};

const SESSION: u64 = 7;
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(1);
/// Bytes per second the receiver gets through: a 250 kB object takes it about 3.5 s.
const RECEIVER_RATE: f64 = 70_000.0;

struct Run {
    sender: Sender,
    receiver: Receiver,
    now: Instant,
    sender_addr: SocketAddr,
    receiver_addr: SocketAddr,
    start: Instant,
    /// Datagrams waiting for the slow receiver.
    inbox: VecDeque<Vec<u8>>,
    /// When the receiver is done with the datagram it is working on.
    busy_until: Instant,
}

impl Run {
    fn new() -> Self {
        let now = Instant::now();
        let group_key = GroupKey {
            epoch: 1,
            secret: [3; 32],
        };
        let receiver_key = ReceiverKey {
            receiver_id: 1,
            secret: [4; 32],
        };
        let config = SenderConfig {
            delivery_timeout: DELIVERY_TIMEOUT,
            ..SenderConfig::default()
        };
        let mut sender = Sender::new(config, SESSION, group_key.clone(), now).expect("config");
        sender.add_receiver(receiver_key.clone());
        let mut receiver = Receiver::new(ReceiverConfig::default(), receiver_key, now);
        receiver.add_session(SESSION, group_key);
        Self {
            sender,
            receiver,
            now,
            sender_addr: "127.0.0.1:5000".parse().expect("literal"),
            receiver_addr: "127.0.0.1:6000".parse().expect("literal"),
            start: now,
            inbox: VecDeque::new(),
            busy_until: now,
        }
    }

    /// Runs until `until` on the virtual clock; returns the sender's events with their times.
    fn run_until(&mut self, until: Instant, connected: bool) -> Vec<(Instant, SenderEvent)> {
        let mut events = Vec::new();
        for _ in 0..1_000_000 {
            while let Some(transmit) = self.sender.poll_transmit(self.now) {
                if connected {
                    self.inbox.push_back(transmit.payload);
                }
            }
            if !connected {
                self.inbox.clear();
            }
            while self.busy_until <= self.now
                && let Some(datagram) = self.inbox.pop_front()
            {
                self.receiver
                    .handle_datagram(self.now, self.sender_addr, &datagram);
                self.busy_until =
                    self.now + Duration::from_secs_f64(datagram.len() as f64 / RECEIVER_RATE);
            }
            while let Some(transmit) = self.receiver.poll_transmit(self.now) {
                assert_eq!(transmit.destination, Destination::Unicast(self.sender_addr));
                if connected {
                    self.sender
                        .handle_datagram(self.now, self.receiver_addr, &transmit.payload);
                }
            }
            while let Some(event) = self.sender.poll_event() {
                events.push((self.now, event));
            }
            while let Some(event) = self.receiver.poll_event() {
                assert!(
                    !connected || matches!(event, ReceiverEvent::Object { .. }),
                    "{event:?} at {:?}, receiver {:?}",
                    self.now - self.start,
                    self.receiver.stats()
                );
            }
            let receiver_ready = (!self.inbox.is_empty()).then_some(self.busy_until);
            let next = [
                self.sender.poll_timeout(),
                self.receiver.poll_timeout(),
                receiver_ready,
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(until)
            .max(self.now + Duration::from_micros(100));
            if next > until {
                self.now = until;
                return events;
            }
            self.now = next;
            self.sender.handle_timeout(self.now);
            self.receiver.handle_timeout(self.now);
        }
        panic!("the simulation did not reach its end time");
    }
}

#[test]
fn a_slow_receiver_that_keeps_progressing_is_not_given_up() {
    let mut run = Run::new();
    // Sent at once; the receiver needs about 3.5 s, three and a half delivery timeouts.
    let object = Bytes::from((0..250_000u32).map(|i| i as u8).collect::<Vec<_>>());
    run.sender
        .send_object(1, object, run.now)
        .expect("fits the window");
    let start = run.now;
    let events = run.run_until(start + Duration::from_secs(15), true);
    assert_eq!(run.sender.stats().receivers_detached, 0);
    let delivered: Vec<_> = events
        .iter()
        .filter(|(_, event)| matches!(event, SenderEvent::Delivered { object_id: 1, .. }))
        .collect();
    assert_eq!(delivered.len(), 1, "events: {events:?}");
    assert!(
        delivered[0].0 - start > DELIVERY_TIMEOUT * 3,
        "the receiver was meant to take several delivery timeouts"
    );
    assert!(run.sender.stats().data_datagrams_sent > 0);
    // Nothing was lost: a receiver must not NACK what the sender has not sent yet.
    assert_eq!(run.receiver.stats().nacks_sent, 0);
}

#[test]
fn a_receiver_that_stops_progressing_is_given_up_one_timeout_later() {
    let mut run = Run::new();
    let object = Bytes::from(vec![9u8; 250_000]);
    run.sender
        .send_object(1, object, run.now)
        .expect("fits the window");
    let start = run.now;
    // Connected for two seconds (longer than the timeout, the object long sent), then cut off.
    let early = run.run_until(start + Duration::from_secs(2), true);
    assert!(early.is_empty(), "{early:?}");
    let cut_at = run.now;
    let late = run.run_until(cut_at + Duration::from_secs(10), false);
    let abandoned: Vec<_> = late
        .iter()
        .filter(|(_, event)| matches!(event, SenderEvent::Abandoned { object_id: 1, .. }))
        .collect();
    assert_eq!(abandoned.len(), 1, "events: {late:?}");
    let given_up_after = abandoned[0].0 - cut_at;
    // Its last progress was at most a status interval or two before the cut.
    assert!(given_up_after >= DELIVERY_TIMEOUT - Duration::from_millis(50));
    assert!(
        given_up_after <= DELIVERY_TIMEOUT + Duration::from_millis(100),
        "given up {given_up_after:?} after the cut"
    );
    assert_eq!(run.sender.stats().receivers_detached, 1);
}

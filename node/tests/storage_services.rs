//! A storage's endpoint serves two protocols, the node protocol (an operator's `replicast
//! check`, `status`) and the transport's fan-out (a writer's announcements, joins, unicast
//! objects), and goes by the service each request names: over real QUIC, a fan-out request
//! whose bytes also read as a node message reaches the fan-out all the same, a node request
//! reaches the storage's role, and a request for a service the storage does not serve is
//! refused.

use replicast_node::ids::Tid;
use replicast_node::protocol::{InspectAsk, Message, OidRange, decode, encode};
use replicast_testkit::cluster::{Cluster, WAIT};
use replicast_transport::fanout::{
    self,
    wire::{ControlAnswer, ControlRequest, Expectation, Verdict},
};
use replicast_transport::quic::{Link, LinkError, Service};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The announcements of `objects` objects of fan-out session `session_id`, in one request.
fn announcements(session_id: u64, objects: u64) -> ControlRequest {
    ControlRequest::ExpectBatch(
        (0..objects)
            .map(|n| Expectation {
                session_id,
                multicast_id: n,
                object_id: n,
                len: 1,
                digest: [0; 32],
            })
            .collect(),
    )
}

/// The node message `request`'s bytes read as when they are taken for a node request (a
/// `Vec<u8>` holding an encoded message), if they do.
fn as_node_message(request: &ControlRequest) -> Option<Message> {
    let bytes = postcard::to_stdvec(request).ok()?;
    let inner: Vec<u8> = postcard::from_bytes(&bytes).ok()?;
    decode(&inner).ok()
}

/// `request` on `link`, its answer bounded by [`WAIT`].
async fn ask<Q: Serialize, A: DeserializeOwned>(link: &Link, request: &Q) -> Result<A, LinkError> {
    tokio::time::timeout(WAIT, link.request(request))
        .await
        .expect("an answer in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_routes_requests_by_their_service_not_their_bytes() {
    // A batch of announcements whose bytes read as a node message too (with this protocol
    // version's numbering, a batch of 6 of session 51 reads as an order of the primary).
    // Before requests named their service, the storage took it for one: its role answered,
    // and the writer's announcements failed.
    let (request, objects, message) = (0..1000)
        .flat_map(|session| (1..=16).map(move |objects| (session, objects)))
        .find_map(|(session, objects)| {
            let request = announcements(session, objects);
            let message = as_node_message(&request)?;
            Some((request, objects, message))
        })
        .expect("some batch of announcements reads as a node message");

    let cluster = Cluster::builder("storage-services-test")
        .start()
        .await
        .expect("the cluster starts");
    let writer = cluster.endpoint("client-1").expect("a client's endpoint");
    let storage = writer
        .link("storage-1", cluster.directory["storage-1"])
        .await
        .expect("the writer reaches the storage");

    let fanout = storage.clone().for_service(fanout::SERVICE);
    let answer: ControlAnswer = ask(&fanout, &request)
        .await
        .unwrap_or_else(|e| panic!("the fan-out answers what also reads as {message:?}: {e}"));
    // The writer never joined: every announcement is of a session the storage is not in.
    assert_eq!(
        answer,
        ControlAnswer::Verdicts(vec![Verdict::NotMember; objects as usize])
    );

    // A node request (the default service) goes to the role: its answer is a node message.
    let inspect = Message::AskInspect {
        request: 1,
        ask: InspectAsk::Digest {
            partition: 0,
            range: OidRange::ALL,
            up_to: Tid(u64::MAX),
        },
    };
    let answer: Vec<u8> = ask(&storage, &encode(&inspect))
        .await
        .expect("the role answers");
    let answer = decode(&answer).expect("a node message");
    assert!(
        matches!(answer, Message::AnswerInspect { .. } | Message::Refused(_)),
        "{answer:?}"
    );
    // The same node request for the fan-out is the fan-out's to refuse.
    match ask::<_, ControlAnswer>(&fanout, &encode(&inspect)).await {
        Err(LinkError::Remote { message, .. }) => {
            assert!(message.contains("not a fan-out request"), "{message}")
        }
        other => panic!("the fan-out refuses a node request, got {other:?}"),
    }
    // A service the storage does not serve.
    let unknown = storage.clone().for_service(Service::new(7));
    match ask::<_, Vec<u8>>(&unknown, &encode(&inspect)).await {
        Err(LinkError::Remote { message, .. }) => {
            assert!(message.contains("service 7 is not served"), "{message}")
        }
        other => panic!("a service not served is refused, got {other:?}"),
    }
    cluster.stop().await;
}

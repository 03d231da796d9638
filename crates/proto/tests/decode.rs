//! Property test (issue 11): every message of the agent protocol decodes
//! from arbitrary bytes to a value or an error, never a panic.
//! `PROPTEST_CASES` sets the number of cases (`scripts/test` runs 2,000).

use outpost_proto::v1::{
    AgentMessage, ControlMessage, EnrollRequest, EnrollResponse, SyncRequest, SyncResponse,
};
use proptest::prelude::*;
use prost::Message;

/// Arbitrary bytes, and well-formed messages with bytes flipped: both
/// reach the decoders' deeper paths.
fn wire_bytes() -> impl Strategy<Value = Vec<u8>> {
    let valid = AgentMessage {
        body: Some(outpost_proto::v1::agent_message::Body::Hello(
            outpost_proto::v1::Hello {
                agent_version: "1.0".into(),
                protocol_version: 1,
                applied_revision: 7,
                facts: Some(outpost_proto::v1::HostFacts {
                    labels: [("arch".to_string(), "amd64".to_string())].into(),
                }),
                site_address: "10.0.0.2:7803".into(),
            },
        )),
    }
    .encode_to_vec();
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..400),
        prop::collection::vec((any::<usize>(), any::<u8>()), 1..6).prop_map(move |flips| {
            let mut bytes = valid.clone();
            for (at, byte) in flips {
                let at = at % bytes.len();
                bytes[at] = byte;
            }
            bytes
        }),
    ]
}

proptest! {
    #[test]
    fn every_message_decodes_or_refuses(bytes in wire_bytes()) {
        let _ = AgentMessage::decode(bytes.as_slice());
        let _ = ControlMessage::decode(bytes.as_slice());
        let _ = SyncRequest::decode(bytes.as_slice());
        let _ = SyncResponse::decode(bytes.as_slice());
        let _ = EnrollRequest::decode(bytes.as_slice());
        let _ = EnrollResponse::decode(bytes.as_slice());
    }

}

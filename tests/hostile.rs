//! The hostile-peer layer's own tests: a client written from the contract alone
//! (`common::raw`) does what the contract allows but the SDK never does, and the relay keeps
//! its promises anyway.

#![allow(clippy::unwrap_used)]

mod common;

use common::raw::RawClient;
use common::Relay;
use relaybox::wire::messages::{client_frame, server_frame, GetStatus};

const ALICE: &str = "+14155550101";

#[tokio::test]
async fn a_client_written_from_the_contract_logs_in_and_is_answered() {
    let relay = Relay::start();
    let alice = relay.user("alice", ALICE).await;
    let mut raw = RawClient::login_as(&relay.addr, &alice).await;
    match raw
        .request(client_frame::Body::GetStatus(GetStatus {}))
        .await
    {
        server_frame::Body::Status(s) => assert_eq!(s.account, ALICE),
        other => panic!("expected a Status, got {other:?}"),
    }
}

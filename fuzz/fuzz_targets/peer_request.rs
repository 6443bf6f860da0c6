//! Feeds arbitrary bytes to the Raft peer request decoder (what an authenticated peer's
//! frame body is read as): it must never panic, and what decodes must encode and decode
//! to the same request.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    dledger::network::fuzz_peer_request(data);
});

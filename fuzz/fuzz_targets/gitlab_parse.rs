//! GitLab project/group webhooks and system hooks. Input: bit 0 of byte 0 picks the system-hook
//! route, the rest is the body.
#![no_main]

use agentctl::ingest::gitlab;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [route, body @ ..] = data else { return };
    let system = route & 1 == 1;
    if let Ok(p) = gitlab::parse(body, system) {
        if system && let Some(item) = &p.item {
            assert_eq!(item.kind, agentctl::task::Kind::MergeRequest, "system hooks only yield merge requests");
        }
        agentctl_fuzz::decide_every_way(&p);
    }
});

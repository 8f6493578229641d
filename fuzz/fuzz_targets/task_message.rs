//! `Task::from_message`: whatever a producer (or anyone with access to the queue) publishes.
//! Besides never panicking: a message agentctl accepted, written back with `to_json` (as every
//! retry, replay and dead-letter publish does), reads back as the same task.
#![no_main]

use agentctl::task::Task;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(task) = Task::from_message(data) else { return };
    let again = Task::from_message(&task.to_json()).expect("a task agentctl wrote reads back");
    assert_eq!(again, task, "a task round-trips through to_json/from_message");
});

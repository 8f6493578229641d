//! Actions go through `ops` on this process's journal handle, so on a shared journal they reach
//! jobs that other instances run: the owner learns of a drop from the journal.

use super::*;
use crate::config::Config;
use crate::store::pg::testing::TestSchema;
use crate::store::tasks::Claim;
use crate::store::{Journal, Lease, TaskState};
use crate::task::Task;
use crate::ui::console::Op;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_of_a_job_another_instance_runs_is_sent_to_it_through_the_shared_journal() {
    let db = TestSchema::new().await;
    let mut config = Config::default();
    config.storage.url = db.url.clone();
    // Never reached: dropping a running job only writes to the journal.
    config.broker.url = "amqp://guest:guest@127.0.0.1:5672/%2f".into();
    let journal = Journal::from_config(&config.storage).await.unwrap();
    assert!(journal.shared());
    // Another instance claimed the task: it runs there, under that instance's lease.
    let task =
        Task::from_message(br#"{"type":"github_issue","owner":"o","repo":"r","number":1,"uuid":"elsewhere"}"#).unwrap();
    let other = Lease { owner: "instance-b".into(), ms: 60_000 };
    assert_eq!(journal.claim(task, other).await.unwrap(), Claim::Run);
    let broker = crate::broker::from_config(&config, &journal);
    let ops = Arc::new(Ops::new(config, journal.clone(), broker));

    // The console's confirmed drop, as the loop carries it out.
    let (tx, mut rx) = mpsc::channel(1);
    spawn(&tokio::runtime::Handle::current(), Effect::Run(Op::DropJob("elsewhere".into())), ops, Bus::default(), tx);
    match rx.recv().await.expect("an outcome") {
        Outcome::Done { message, job } => {
            assert!(message.contains("cancelling"), "{message}");
            assert_eq!(job, Some(("elsewhere".to_string(), TaskState::Running)), "it runs until its owner stops it");
        }
        Outcome::Failed(e) => panic!("the drop failed: {e}"),
        _ => panic!("not an operation's outcome"),
    }
    // The owner's worker asks the journal for cancel requests every second or two: it is there.
    assert_eq!(journal.cancel_requests("instance-b".into()).await.unwrap(), ["elsewhere"]);
    assert!(journal.cancel_requests("instance-a".into()).await.unwrap().is_empty());
}

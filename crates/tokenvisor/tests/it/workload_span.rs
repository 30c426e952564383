//! Every log line of a workload's handling and of its attempts names the workload: the token
//! actor runs its handlers, and an attempt its request, in a span `workload{name=…}`. Paused
//! clock, in-memory transport, logs captured by a `fmt` subscriber writing to a buffer.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokenvisor::spec::{GrantSpec, WorkloadSpec};
use tokenvisor::testing::{FakeReply, FakeTransport};
use tokenvisor::{Runtime, RuntimeConfig};
use tokenvisor_core::{Secret, Timestamp, WorkloadName, WorkloadStatus};
use tokenvisor_test_support::wait::wait_until_within;

const S: fn(u64) -> Duration = Duration::from_secs;

fn capture() -> (Arc<Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
    let buf = Arc::new(Mutex::new(Vec::<u8>::new()));
    let sink = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || Capture(sink.clone()))
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    // This thread only: the paused-clock runtime runs every actor and task on it.
    (buf, tracing::subscriber::set_default(subscriber))
}

fn text_of(buf: &Mutex<Vec<u8>>) -> String {
    String::from_utf8(buf.lock().unwrap().clone()).unwrap()
}

fn spec(n: &str) -> WorkloadSpec {
    WorkloadSpec::new(
        WorkloadName::new(n).unwrap(),
        "http://127.0.0.1:9/token".parse().unwrap(),
        n,
        GrantSpec::RefreshToken {
            token: Secret::from(format!("rt-initial-{n}")),
            file: None,
        },
    )
    .with_client_secret("client-secret-value")
}

/// A `fmt` writer appending to a shared buffer.
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn log_lines_of_an_attempt_carry_the_workload_name() {
    let (buf, _logs) = capture();

    let dir = tempfile::tempdir().unwrap();
    let fake = FakeTransport::new();
    let mut cfg = RuntimeConfig::new(dir.path(), Arc::new(fake.clone()));
    cfg.seed = Some(7);
    cfg.clock = Some(tokenvisor::Clock::anchored(Timestamp::from_millis(
        1_800_000_000_000,
    )));
    let rt = Runtime::start(cfg).await.unwrap();
    fake.set_default(FakeReply::token(300));
    // "alpha"'s first attempt gets a 429: the attempt logs the endpoint hold, a line that
    // names only the endpoint by itself. "beta" shares the endpoint.
    fake.push("alpha", [FakeReply::too_many(30)]);
    let alpha = rt.add(spec("alpha")).await.unwrap();
    let beta = rt.add(spec("beta")).await.unwrap();
    wait_until_within("both running", S(600), || {
        alpha.status().map(|r| r.status) == Some(WorkloadStatus::Running)
            && beta.status().map(|r| r.status) == Some(WorkloadStatus::Running)
    })
    .await;
    rt.shutdown(S(5)).await.unwrap();

    let text = text_of(&buf);
    let lines: Vec<&str> = text.lines().collect();
    // The attempt's own line (in `send`, after the 429) is in alpha's span.
    let hold: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains("endpoint asked to wait"))
        .collect();
    assert_eq!(hold.len(), 1, "{text}");
    assert!(hold[0].contains("workload{name=alpha}"), "{text}");
    // Each handler's lines are in its workload's span, once (not nested in a span that an
    // attempt's message carried).
    for n in ["alpha", "beta"] {
        let changes: Vec<&&str> = lines
            .iter()
            .filter(|l| l.contains("state change") && l.contains(&format!("workload={n} ")))
            .collect();
        assert!(changes.len() >= 2, "{n}: {text}");
        for l in changes {
            assert!(l.contains(&format!("workload{{name={n}}}: ")), "{l}");
            assert_eq!(l.matches("workload{").count(), 1, "{l}");
        }
    }
    // Every line of the token actor's module is in a workload's span.
    for l in lines.iter().filter(|l| l.contains("tokenvisor::token:")) {
        assert!(l.contains("workload{name="), "{l}");
    }
}

/// An actor that logs every message it handles.
struct Logger;

impl ractor::Actor for Logger {
    type Msg = &'static str;
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ractor::ActorRef<Self::Msg>,
        _args: (),
    ) -> Result<(), ractor::ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ractor::ActorRef<Self::Msg>,
        msg: Self::Msg,
        _state: &mut (),
    ) -> Result<(), ractor::ActorProcessingErr> {
        tracing::info!("handled {msg}");
        Ok(())
    }
}

/// ractor is built without `message_span_propogation`: a message sent from inside a
/// workload's span (a token actor's status update to the persistence actor) does not carry
/// the span, so the receiver's lines are not attributed to that workload, and a queued
/// message keeps no span alive.
#[tokio::test(start_paused = true)]
async fn a_message_does_not_carry_its_senders_span() {
    let (buf, _logs) = capture();
    let (logger, task) = ractor::Actor::spawn(None, Logger, ()).await.unwrap();
    tracing::error_span!("workload", name = "alpha").in_scope(|| logger.cast("inside").unwrap());
    // Drain: every queued message is handled before the actor stops.
    logger.drain_and_wait(None).await.unwrap();
    task.await.unwrap();
    let text = text_of(&buf);
    let line = text
        .lines()
        .find(|l| l.contains("handled inside"))
        .expect(&text);
    assert!(!line.contains("workload{"), "{line}");
}

//! Every state change of a runtime, collected by a task, with whether the collector lagged
//! (which would make "never X" assertions unsound: [`Events::assert_never`] checks it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokenvisor::{Runtime, StateChange};
use tokenvisor_core::WorkloadStatus;
use tokio::sync::broadcast::error::RecvError;

/// The state changes of one runtime, in order.
#[derive(Clone, Default)]
pub struct Events {
    log: Arc<Mutex<Vec<StateChange>>>,
    lagged: Arc<AtomicU64>,
}

impl Events {
    /// Subscribes to `rt` and collects from now on (on the current tokio runtime).
    pub fn collect(rt: &Runtime) -> Events {
        let events = Events::default();
        let mut rx = rt.subscribe();
        let sink = events.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(change) => sink
                        .log
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(change),
                    Err(RecvError::Lagged(n)) => {
                        sink.lagged.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        });
        events
    }

    /// The statuses one workload went through, in order.
    pub fn statuses_of(&self, workload: &str) -> Vec<WorkloadStatus> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|e| e.name.as_str() == workload)
            .map(|e| e.status)
            .collect()
    }

    /// Whether a workload was ever in `status`.
    pub fn ever(&self, workload: &str, status: WorkloadStatus) -> bool {
        self.statuses_of(workload).contains(&status)
    }

    /// How many workloads were ever in `status`.
    pub fn count_ever(&self, status: WorkloadStatus) -> usize {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        let mut names: Vec<&str> = log
            .iter()
            .filter(|e| e.status == status)
            .map(|e| e.name.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        names.len()
    }

    /// Events the collector missed because it lagged.
    pub fn lagged(&self) -> u64 {
        self.lagged.load(Ordering::Relaxed)
    }

    /// How many events were collected.
    pub fn len(&self) -> usize {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether none was collected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Asserts that no workload was ever in `status`, and that no event was lost.
    pub fn assert_never(&self, status: WorkloadStatus) {
        assert_eq!(self.lagged(), 0, "the event collector lagged");
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = log.iter().find(|e| e.status == status) {
            panic!("{} became {}", e.name, status.as_str());
        }
    }
}

//! A prefetching loader: the batches of a [`Schedule`], assembled on worker threads, handed
//! out in schedule order.
//!
//! The loader knows nothing of tensors: `assemble` turns a batch of dataset indices into
//! whatever the training loop consumes (for Burn, typically a batcher that reads the images,
//! builds both views and returns tensors on the device). The binding examples are part of the
//! indices, so they go through `assemble` like every other example. Order and content depend
//! only on the schedule and the start position, never on thread timing, so a run restarted
//! from a saved [`Position`] receives exactly the batches an uninterrupted run would have.
//!
//! ```
//! use scl_batching::{BatchingConfig, Loader, Position, Schedule, ScheduleKind};
//!
//! let labels = [0, 0, 0, 0, 1, 1, 1, 1];
//! let schedule = Schedule::new(&labels, 2, &BatchingConfig::new(ScheduleKind::Shuffle, 4), 7)
//!     .unwrap();
//! let sizes: Vec<usize> = Loader::new(schedule, Position::START, 3, 2, 4, |batch| batch.len())
//!     .map(|b| b.item)
//!     .collect();
//! assert_eq!(sizes, vec![4; 6]); // three epochs of two batches
//! ```

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};

use crate::Schedule;

/// A place in a schedule: the batch `batch` of epoch `epoch`. Save it with a checkpoint to
/// resume there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Position {
    /// Epoch, from 0.
    pub epoch: u64,
    /// Batch within the epoch, from 0.
    pub batch: usize,
}

impl Position {
    /// The first batch of the first epoch.
    pub const START: Position = Position { epoch: 0, batch: 0 };
}

/// One batch as the loader hands it out.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedBatch<T> {
    /// Where this batch sits in the schedule.
    pub position: Position,
    /// The position right after this batch: save it to resume after this batch.
    pub next: Position,
    /// The dataset indices of the batch, binding examples included.
    pub indices: Vec<usize>,
    /// What `assemble` made of the indices.
    pub item: T,
}

type Job = (u64, Vec<usize>);

/// Iterates over the batches of a schedule from a start position to the end of an epoch,
/// assembling them on worker threads with a bounded number in flight.
pub struct Loader<T: Send + 'static> {
    plan: Vec<(Position, Position, Vec<usize>)>,
    issued: usize,
    consumed: usize,
    prefetch: usize,
    jobs: Option<Sender<Job>>,
    results: Receiver<(u64, T)>,
    ready: BTreeMap<u64, T>,
    workers: Vec<JoinHandle<()>>,
}

impl<T: Send + 'static> Loader<T> {
    /// A loader over `schedule` from `start` up to (not including) epoch `end_epoch`, with
    /// `workers` threads (at least 1) and at most `prefetch` batches (at least 1) assembled
    /// ahead of the consumer.
    pub fn new(
        schedule: Schedule,
        start: Position,
        end_epoch: u64,
        workers: usize,
        prefetch: usize,
        assemble: impl Fn(&[usize]) -> T + Send + Sync + 'static,
    ) -> Self {
        let mut plan = Vec::new();
        for epoch in start.epoch..end_epoch {
            let batches = schedule.epoch(epoch);
            let count = batches.len();
            let first = if epoch == start.epoch { start.batch } else { 0 };
            for (batch, indices) in batches.into_iter().enumerate().skip(first) {
                let next = if batch + 1 < count {
                    Position {
                        epoch,
                        batch: batch + 1,
                    }
                } else {
                    Position {
                        epoch: epoch + 1,
                        batch: 0,
                    }
                };
                plan.push((Position { epoch, batch }, next, indices));
            }
        }
        let (job_tx, job_rx) = channel::<Job>();
        let (result_tx, results) = channel();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let assemble = Arc::new(assemble);
        let workers = (0..workers.max(1))
            .map(|_| {
                let job_rx = Arc::clone(&job_rx);
                let result_tx = result_tx.clone();
                let assemble = Arc::clone(&assemble);
                std::thread::spawn(move || {
                    loop {
                        let job = job_rx.lock().map(|rx| rx.recv());
                        let Ok(Ok((seq, indices))) = job else { break };
                        if result_tx.send((seq, assemble(&indices))).is_err() {
                            break;
                        }
                    }
                })
            })
            .collect();
        Self {
            plan,
            issued: 0,
            consumed: 0,
            prefetch: prefetch.max(1),
            jobs: Some(job_tx),
            results,
            ready: BTreeMap::new(),
            workers,
        }
    }

    /// Number of batches left to hand out.
    pub fn remaining(&self) -> usize {
        self.plan.len() - self.consumed
    }
}

impl<T: Send + 'static> Iterator for Loader<T> {
    type Item = LoadedBatch<T>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.consumed == self.plan.len() {
            return None;
        }
        let jobs = self
            .jobs
            .as_ref()
            .expect("jobs are open until the loader is dropped");
        while self.issued < self.plan.len() && self.issued < self.consumed + self.prefetch {
            let indices = self.plan[self.issued].2.clone();
            jobs.send((self.issued as u64, indices))
                .expect("workers live as long as the loader");
            self.issued += 1;
        }
        let want = self.consumed as u64;
        let item = loop {
            if let Some(item) = self.ready.remove(&want) {
                break item;
            }
            let (seq, item) = self
                .results
                .recv()
                .expect("a worker panicked while assembling a batch");
            self.ready.insert(seq, item);
        };
        let (position, next, indices) = self.plan[self.consumed].clone();
        self.consumed += 1;
        Some(LoadedBatch {
            position,
            next,
            indices,
            item,
        })
    }
}

impl<T: Send + 'static> Drop for Loader<T> {
    fn drop(&mut self) {
        // Closing the job channel ends the workers once they finish their current batch.
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

//! An `scl-batching` schedule as a Burn [`DataLoader`]: the batches (shuffle, batch-binding,
//! fixed, class-balanced) of your [`Dataset`], stacked by your [`Batcher`], so that
//! burn-train's trainer, or any loop over `DataLoader::iter`, trains on them.
//!
//! Burn's `DataLoaderBuilder` draws batches with its own sampler, which cannot append the same
//! binding examples to every batch; here the schedule picks every batch's indices. Each call
//! of [`DataLoader::iter`] is the next epoch of the schedule (burn-train calls it once per
//! epoch), so the batches of epoch `e` depend only on the labels, the schedule and the seed,
//! never on threads or timing. A run resumed at a [`Position`] receives exactly the batches an
//! uninterrupted one would have: [`ScheduledLoader::start_at`].
//!
//! ```
//! use burn::data::dataloader::DataLoader;
//! use burn::data::dataloader::batcher::Batcher;
//! use burn::data::dataset::InMemDataset;
//! use burn::tensor::Device;
//! use scl_batching::{BatchingConfig, Schedule, ScheduleKind};
//! use scl_learner::ScheduledLoader;
//!
//! /// Batches as the list of the labels they hold.
//! #[derive(Clone)]
//! struct Labels;
//! impl Batcher<usize, Vec<usize>> for Labels {
//!     fn batch(&self, items: Vec<usize>, _: &Device) -> Vec<usize> {
//!         items
//!     }
//! }
//!
//! let labels = vec![0, 0, 0, 0, 0, 0, 1, 1];
//! let schedule = Schedule::new(&labels, 2, &BatchingConfig::new(ScheduleKind::BatchBinding, 3), 7)
//!     .unwrap();
//! let loader = ScheduledLoader::new(schedule, InMemDataset::new(labels), Labels);
//! for epoch in 0..3 {
//!     for batch in loader.iter() {
//!         let batch = batch.unwrap();
//!         // Three shuffled examples and one binding example of each class.
//!         assert_eq!(batch.len(), 5);
//!         assert!(batch.contains(&1));
//!     }
//! }
//! assert_eq!(loader.next_position().epoch, 3);
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataloader::{DataLoader, DataLoaderIterator, Progress};
use burn::data::dataset::{Dataset, DatasetError};
use burn::tensor::Device;
use scl_batching::{Position, Schedule};

/// A hook called with the epoch (from 0) at the start of every epoch, e.g. to give a batcher
/// fresh augmentations (`scl_data::SclBatcher::set_epoch`).
pub type EpochHook = Arc<dyn Fn(u64) + Send + Sync>;

/// A Burn [`DataLoader`] whose batches are those of an `scl-batching` [`Schedule`] (see the
/// module documentation). Batches are assembled on the calling thread, in schedule order.
pub struct ScheduledLoader<I, O> {
    schedule: Arc<Schedule>,
    dataset: Arc<dyn Dataset<I>>,
    batcher: Arc<dyn Batcher<I, O>>,
    device: Device,
    /// The epoch the next `iter` runs, shared by the copies `to_device` and `slice` make, so
    /// that the handle the caller keeps follows the trainer's.
    next_epoch: Arc<AtomicU64>,
    /// Batches of the first epoch already trained on (a resumed run); taken by the first
    /// `iter`.
    skip: Arc<Mutex<usize>>,
    on_epoch: Option<EpochHook>,
    /// Only the items `[start, end)` of every epoch (`DataLoader::slice`).
    range: Option<(usize, usize)>,
}

impl<I, O> Clone for ScheduledLoader<I, O> {
    fn clone(&self) -> Self {
        Self {
            schedule: self.schedule.clone(),
            dataset: self.dataset.clone(),
            batcher: self.batcher.clone(),
            device: self.device.clone(),
            next_epoch: self.next_epoch.clone(),
            skip: self.skip.clone(),
            on_epoch: self.on_epoch.clone(),
            range: self.range,
        }
    }
}

impl<I, O> ScheduledLoader<I, O>
where
    I: Send + Sync + 'static,
    O: Send + 'static,
{
    /// A loader of `schedule`'s batches over `dataset` (the schedule's indices are indices
    /// of `dataset`), starting at epoch 0, on Burn's default device (burn-train moves it to
    /// the training device; [`ScheduledLoader::with_device`] sets one).
    pub fn new(
        schedule: Schedule,
        dataset: impl Dataset<I> + 'static,
        batcher: impl Batcher<I, O> + 'static,
    ) -> Self {
        Self {
            schedule: Arc::new(schedule),
            dataset: Arc::new(dataset),
            batcher: Arc::new(batcher),
            device: Default::default(),
            next_epoch: Arc::new(AtomicU64::new(0)),
            skip: Arc::new(Mutex::new(0)),
            on_epoch: None,
            range: None,
        }
    }

    /// Starts at `position`: the first `iter` is epoch `position.epoch` from batch
    /// `position.batch`. With burn-train, resuming from the checkpoint of epoch `n`
    /// (`SupervisedTraining::checkpoint(n)`, epochs counted from 1) is
    /// `Position { epoch: n, batch: 0 }`.
    #[must_use]
    pub fn start_at(self, position: Position) -> Self {
        self.next_epoch.store(position.epoch, Ordering::SeqCst);
        *self.skip.lock().unwrap_or_else(|e| e.into_inner()) = position.batch;
        self
    }

    /// Calls `hook(epoch)` at the start of every epoch.
    #[must_use]
    pub fn on_epoch(mut self, hook: impl Fn(u64) + Send + Sync + 'static) -> Self {
        self.on_epoch = Some(Arc::new(hook));
        self
    }

    /// Assembles batches on `device`.
    #[must_use]
    pub fn with_device(mut self, device: &Device) -> Self {
        self.device = device.clone();
        self
    }

    /// The position the next `iter` starts at.
    pub fn next_position(&self) -> Position {
        Position {
            epoch: self.next_epoch.load(Ordering::SeqCst),
            batch: *self.skip.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }

    /// The batches of `epoch`, restricted to the loader's item range.
    fn batches(&self, epoch: u64) -> Vec<Vec<usize>> {
        let all = self.schedule.epoch(epoch);
        match self.range {
            None => all,
            Some((start, end)) => {
                let mut offset = 0;
                all.into_iter()
                    .filter(|b| {
                        let keep = offset >= start && offset < end;
                        offset += b.len();
                        keep
                    })
                    .collect()
            }
        }
    }
}

/// The iterator of one epoch.
struct EpochIter<'a, I, O> {
    loader: &'a ScheduledLoader<I, O>,
    batches: std::vec::IntoIter<Vec<usize>>,
    processed: usize,
    total: usize,
}

impl<I, O> Iterator for EpochIter<'_, I, O> {
    type Item = Result<O, DatasetError>;

    fn next(&mut self) -> Option<Self::Item> {
        let indices = self.batches.next()?;
        self.processed += indices.len();
        // The schedule's indices are indices of the dataset it was built for; a dataset
        // without them is a mistake of the caller, named here (`Dataset::get` would panic).
        let len = self.loader.dataset.len();
        let items: Result<Vec<I>, DatasetError> = indices
            .iter()
            .map(|&i| {
                if i >= len {
                    return Err(DatasetError::new(std::io::Error::other(format!(
                        "the schedule names example {i}, but the dataset has {len} examples: \
                         build the schedule from this dataset's labels"
                    ))));
                }
                self.loader.dataset.get(i)
            })
            .collect();
        Some(items.map(|items| self.loader.batcher.batch(items, &self.loader.device)))
    }
}

impl<I, O> DataLoaderIterator<O> for EpochIter<'_, I, O> {
    fn progress(&self) -> Progress {
        Progress::new(self.processed, self.total, Some("items".to_string()))
    }
}

impl<I, O> DataLoader<O> for ScheduledLoader<I, O>
where
    I: Send + Sync + 'static,
    O: Send + 'static,
{
    fn iter<'a>(&'a self) -> Box<dyn DataLoaderIterator<O> + 'a> {
        let epoch = self.next_epoch.fetch_add(1, Ordering::SeqCst);
        if let Some(hook) = &self.on_epoch {
            hook(epoch);
        }
        let mut batches = self.batches(epoch);
        let total = batches.iter().map(Vec::len).sum();
        let skip = std::mem::take(&mut *self.skip.lock().unwrap_or_else(|e| e.into_inner()));
        let skipped: usize = batches.iter().take(skip).map(Vec::len).sum();
        batches.drain(..skip.min(batches.len()));
        Box::new(EpochIter {
            loader: self,
            batches: batches.into_iter(),
            processed: skipped,
            total,
        })
    }

    fn num_items(&self) -> usize {
        // Every epoch of a schedule has the same batch sizes.
        self.batches(self.next_epoch.load(Ordering::SeqCst))
            .iter()
            .map(Vec::len)
            .sum()
    }

    fn to_device(&self, device: &Device) -> Arc<dyn DataLoader<O>> {
        Arc::new(self.clone().with_device(device))
    }

    fn slice(&self, start: usize, end: usize) -> Arc<dyn DataLoader<O>> {
        let (base, _) = self.range.unwrap_or((0, usize::MAX));
        let mut sliced = self.clone();
        sliced.range = Some((base + start, base + end));
        // Each slice (one per device) runs every epoch once: its own epoch counter.
        let position = self.next_position();
        sliced.next_epoch = Arc::new(AtomicU64::new(position.epoch));
        sliced.skip = Arc::new(Mutex::new(position.batch));
        Arc::new(sliced)
    }
}

/// The validation loader of the workspace's evaluation protocol: the whole training set, then
/// the whole test set, in order, in batches of `batch_size`, each tagged with its
/// [`Part`](crate::Part), for the geometry metrics ([`crate::metrics`]). Give it a batcher
/// of one view without augmentation.
pub struct EvaluationLoader<I> {
    train: Arc<dyn Dataset<I>>,
    test: Arc<dyn Dataset<I>>,
    batcher: Arc<dyn Batcher<I, scl_data::SclBatch>>,
    batch_size: usize,
    device: Device,
}

impl<I> Clone for EvaluationLoader<I> {
    fn clone(&self) -> Self {
        Self {
            train: self.train.clone(),
            test: self.test.clone(),
            batcher: self.batcher.clone(),
            batch_size: self.batch_size,
            device: self.device.clone(),
        }
    }
}

/// An [`EvaluationLoader`] of `train` and `test` (any batch size below 1 counts as 1), as burn-train's
/// validation loader takes it.
pub fn evaluation_loader<I>(
    train: impl Dataset<I> + 'static,
    test: impl Dataset<I> + 'static,
    batcher: impl Batcher<I, scl_data::SclBatch> + 'static,
    batch_size: usize,
) -> Arc<dyn DataLoader<crate::EvalBatch>>
where
    I: Send + Sync + 'static,
{
    Arc::new(EvaluationLoader {
        train: Arc::new(train),
        test: Arc::new(test),
        batcher: Arc::new(batcher),
        batch_size: batch_size.max(1),
        device: Default::default(),
    })
}

/// The iterator of one evaluation pass.
struct EvaluationIter<'a, I> {
    loader: &'a EvaluationLoader<I>,
    /// (part, first index) of every batch still to come.
    batches: std::vec::IntoIter<(crate::Part, usize)>,
    processed: usize,
    total: usize,
}

impl<I> Iterator for EvaluationIter<'_, I> {
    type Item = Result<crate::EvalBatch, DatasetError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (part, start) = self.batches.next()?;
        let set = match part {
            crate::Part::Train => &self.loader.train,
            crate::Part::Test => &self.loader.test,
        };
        let end = (start + self.loader.batch_size).min(set.len());
        let items: Result<Vec<I>, DatasetError> = (start..end).map(|i| set.get(i)).collect();
        self.processed += end - start;
        Some(items.map(|items| crate::EvalBatch {
            batch: self.loader.batcher.batch(items, &self.loader.device),
            part,
        }))
    }
}

impl<I> DataLoaderIterator<crate::EvalBatch> for EvaluationIter<'_, I> {
    fn progress(&self) -> Progress {
        Progress::new(self.processed, self.total, Some("items".to_string()))
    }
}

impl<I> DataLoader<crate::EvalBatch> for EvaluationLoader<I>
where
    I: Send + Sync + 'static,
{
    fn iter<'a>(&'a self) -> Box<dyn DataLoaderIterator<crate::EvalBatch> + 'a> {
        let starts = |part, n: usize| (0..n).step_by(self.batch_size).map(move |s| (part, s));
        let batches: Vec<_> = starts(crate::Part::Train, self.train.len())
            .chain(starts(crate::Part::Test, self.test.len()))
            .collect();
        Box::new(EvaluationIter {
            loader: self,
            batches: batches.into_iter(),
            processed: 0,
            total: self.num_items(),
        })
    }

    fn num_items(&self) -> usize {
        self.train.len() + self.test.len()
    }

    fn to_device(&self, device: &Device) -> Arc<dyn DataLoader<crate::EvalBatch>> {
        let mut moved = self.clone();
        moved.device = device.clone();
        Arc::new(moved)
    }

    fn slice(&self, _start: usize, _end: usize) -> Arc<dyn DataLoader<crate::EvalBatch>> {
        // The geometry is a measure of the whole sets: every device evaluates all of them.
        Arc::new(self.clone())
    }
}

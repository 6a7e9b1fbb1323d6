//! The schedule loader against the schedule itself, and burn-train training the digits MLP
//! with batch-binding: the metrics it logs equal the geometry of the model it returns, and a
//! run resumed from a checkpoint logs what an uninterrupted one does.

use std::sync::Arc;

use burn::data::dataloader::DataLoader;
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::InMemDataset;
use burn::optim::AdamConfig;
use burn::tensor::Device;
use burn::train::metric::LossMetric;
use burn::train::{Learner, SupervisedTraining};
use scl_batching::{BatchingConfig, Position, Schedule, ScheduleKind};
use scl_data::{DataDir, ImageSet, LoadOptions, Manifest, SclBatcher, Split, ViewPreset, load};
use scl_models::{Architecture, MlpConfig, SclModel, SclModelConfig};

use crate::*;

/// A batch as the dataset items it holds.
#[derive(Clone)]
struct Items;

impl Batcher<usize, Vec<usize>> for Items {
    fn batch(&self, items: Vec<usize>, _: &Device) -> Vec<usize> {
        items
    }
}

fn schedule(kind: ScheduleKind) -> (Vec<usize>, Schedule) {
    let labels: Vec<usize> = (0..50)
        .map(|i| usize::from(i % 5 == 0) + usize::from(i % 7 == 0))
        .collect();
    let s = Schedule::new(&labels, 3, &BatchingConfig::new(kind, 8), 11).unwrap();
    (labels, s)
}

#[test]
fn each_iteration_is_the_next_epoch_of_the_schedule_and_resumes_at_a_position() {
    for kind in [
        ScheduleKind::Shuffle,
        ScheduleKind::BatchBinding,
        ScheduleKind::Fixed,
        ScheduleKind::ClassBalanced,
    ] {
        let (_, s) = schedule(kind);
        // The dataset's item i is i, so a batch is its indices.
        let data = InMemDataset::new((0..50).collect::<Vec<usize>>());
        let loader = ScheduledLoader::new(s.clone(), data, Items);
        for epoch in 0..3 {
            let mut it = loader.iter();
            let mut got = Vec::new();
            for batch in it.by_ref() {
                got.push(batch.unwrap());
            }
            assert_eq!(got, s.epoch(epoch), "{kind:?} epoch {epoch}");
            let p = it.progress();
            assert_eq!(p.items_processed, p.items_total);
            assert_eq!(p.items_total, loader.num_items());
        }
        assert_eq!(loader.next_position(), Position { epoch: 3, batch: 0 });

        // Started in the middle of epoch 1: the rest of epoch 1, then epoch 2.
        let data = InMemDataset::new((0..50).collect::<Vec<usize>>());
        let resumed =
            ScheduledLoader::new(s.clone(), data, Items).start_at(Position { epoch: 1, batch: 2 });
        let moved = resumed.to_device(&Device::flex());
        let rest: Vec<_> = moved.iter().map(Result::unwrap).collect();
        assert_eq!(rest, s.epoch(1)[2..], "{kind:?}");
        // The handle follows the copy burn-train iterates.
        assert_eq!(resumed.next_position(), Position { epoch: 2, batch: 0 });
        assert_eq!(
            moved.iter().map(Result::unwrap).collect::<Vec<_>>(),
            s.epoch(2)
        );

        // Slices of the items of an epoch partition its batches.
        let data = InMemDataset::new((0..50).collect::<Vec<usize>>());
        let whole = ScheduledLoader::new(s.clone(), data, Items);
        let n = whole.num_items();
        let (a, b) = (whole.slice(0, n / 2), whole.slice(n / 2, n));
        let mut joined: Vec<_> = a.iter().map(Result::unwrap).collect();
        joined.extend(b.iter().map(Result::unwrap));
        assert_eq!(joined, s.epoch(0), "{kind:?}");
    }
}

#[test]
fn hooks_see_every_epoch_and_a_batch_binding_epoch_holds_every_class_in_every_batch() {
    let (labels, s) = schedule(ScheduleKind::BatchBinding);
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let data = InMemDataset::new(labels);
    let loader = ScheduledLoader::new(s, data, Items)
        .start_at(Position { epoch: 4, batch: 0 })
        .on_epoch(move |e| log.lock().unwrap().push(e));
    for _ in 0..2 {
        for batch in loader.iter() {
            let batch = batch.unwrap();
            for class in 0..3 {
                assert!(batch.contains(&class), "{batch:?}");
            }
        }
    }
    assert_eq!(*seen.lock().unwrap(), [4, 5]);
}

fn digits() -> (Manifest, ImageSet, ImageSet) {
    let m = Manifest::named("sklearn-digits").unwrap();
    let opts = LoadOptions::offline(DataDir::resolve(None));
    let train = load(&m, Split::Train, &opts).unwrap();
    let test = load(&m, Split::Test, &opts).unwrap();
    // STEP imbalance R = 10: a small, imbalanced training set.
    let step = scl_data::Imbalance::Step {
        ratio: 10.0,
        n_majority: Some(60),
        minority: None,
    };
    let selection = step.select(train.labels(), 10, 1).unwrap();
    (m, train.subset(&selection.indices), test)
}

/// Trains the digits MLP with batch-binding for `epochs` epochs into `dir`; `resume_from`:
/// continue from that epoch's checkpoint.
fn train_digits(dir: &std::path::Path, epochs: usize, resume_from: Option<usize>) -> SclModel {
    let (m, train, test) = digits();
    let batcher = |views: ViewPreset| {
        SclBatcher::new(
            views.views(&m),
            train.shape(),
            train.max_value(),
            m.mean.clone(),
            m.std.clone(),
            5,
        )
        .unwrap()
    };
    let views = batcher(ViewPreset::VerticalFlip);
    let schedule = Schedule::new(
        train.labels(),
        10,
        &BatchingConfig::new(ScheduleKind::BatchBinding, 32),
        5,
    )
    .unwrap();
    let hook = views.clone();
    let train_loader = ScheduledLoader::<_, _>::new(schedule, train.clone(), views)
        .start_at(Position {
            epoch: resume_from.unwrap_or(0) as u64,
            batch: 0,
        })
        .on_epoch(move |e| hook.set_epoch(e));
    let single = batcher(ViewPreset::Single);
    let valid_loader = evaluation_loader(train, test, single, 128);
    let device = Device::flex().autodiff();
    device.seed(5);
    let model =
        SclModelConfig::new(Architecture::Mlp(MlpConfig::new(64, vec![64, 16])), 10).init(&device);
    let objective = Objective::SupCon(
        scl_loss::SupConLossConfig::new()
            .with_temperature(0.1)
            .init(),
    );
    let mut training = SupervisedTraining::new(dir, Arc::new(train_loader), valid_loader)
        .metrics((LossMetric::new(),))
        .metrics(metrics::geometry_metrics(10))
        .with_default_checkpointers()
        .renderer(Box::new(EpochLines::new()))
        .with_application_logger(None)
        .num_epochs(epochs);
    if let Some(epoch) = resume_from {
        training = training.checkpoint(epoch);
    }
    let learner = Learner::new(
        SclLearner::new(model, objective),
        AdamConfig::new().init(),
        3e-3,
    );
    let result = training.launch(learner);
    if let Some(error) = result.error {
        panic!("training failed: {error}");
    }
    result.model.model
}

/// The last entry burn-train logged for a validation metric in `epoch`.
fn logged(dir: &std::path::Path, epoch: usize, name: &str) -> String {
    let path = dir.join(format!(
        "valid/epoch-{epoch}/{}.log",
        name.replace(' ', "_")
    ));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().last().unwrap_or_default().to_string()
}

#[test]
fn burn_train_trains_with_batch_binding_and_logs_the_geometry_of_the_model_it_returns() {
    let whole = tempfile::tempdir().unwrap();
    let model = train_digits(whole.path(), 3, None);
    let (m, train, test) = digits();

    // The geometry of the returned model, measured here as the workspace's own runs do.
    let eval = SclBatcher::new(
        ViewPreset::Single.views(&m),
        train.shape(),
        train.max_value(),
        m.mean.clone(),
        m.std.clone(),
        0,
    )
    .unwrap();
    let embed = |set: &ImageSet| {
        let items: Vec<_> = (0..set.len())
            .map(|i| burn::data::dataset::Dataset::get(set, i).unwrap())
            .collect();
        let batch: scl_data::SclBatch = eval.batch(items, &Device::flex());
        scl_geometry::Embeddings::from_tensor(model.embed(batch.images)).unwrap()
    };
    let (train_z, test_z) = (embed(&train), embed(&test));
    let g = scl_geometry::geometry(&train_z, train.labels(), 10).unwrap();
    let classes: Vec<usize> = (0..10).collect();
    let means = scl_geometry::class_means(&train_z, train.labels(), &classes).unwrap();
    let (_, balanced, _) = scl_geometry::nearest_class_mean(&test_z, test.labels(), &means);

    // One entry per epoch, the value of the whole validation pass.
    let value = |name: &str| -> f64 {
        let path = whole
            .path()
            .join(format!("valid/epoch-3/{}.log", name.replace(' ', "_")));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1, "{name}: {text}");
        let entry = logged(whole.path(), 3, name);
        let (v, kind) = entry
            .split_once(',')
            .unwrap_or_else(|| panic!("{name}: {entry}"));
        assert_eq!(kind, "final", "{name}");
        v.parse().unwrap()
    };
    for (name, want) in [
        ("OF distance", g.of_distance),
        ("ETF distance", g.etf_distance),
        ("NC1", g.nc1),
        ("Mean cosine", g.mean_cosine),
        ("Balanced NCC accuracy", 100.0 * balanced),
    ] {
        let got = value(name);
        assert!(
            (got - want).abs() <= 1e-9 * want.abs().max(1.0),
            "{name}: logged {got}, the returned model gives {want}"
        );
    }
    // SCL on the digits separates the classes well within three epochs.
    assert!(100.0 * balanced > 70.0, "balanced NCC accuracy {balanced}");

    // Stopped after epoch 2 and resumed from its checkpoint, the run ends as the
    // uninterrupted one: the same batches, the same state.
    let split = tempfile::tempdir().unwrap();
    train_digits(split.path(), 2, None);
    let resumed = train_digits(split.path(), 3, Some(2));
    // Each epoch's logs under its own number: the resumed epoch 3 in epoch-3, epoch 1's
    // logs (written by the first run) left as they were.
    for name in ["OF distance", "NC1", "Balanced NCC accuracy", "Loss"] {
        for epoch in [1, 3] {
            assert_eq!(
                logged(split.path(), epoch, name),
                logged(whole.path(), epoch, name),
                "{name}, epoch {epoch}"
            );
        }
    }
    let z = embed(&train);
    let z2 = {
        let items: Vec<_> = (0..train.len())
            .map(|i| burn::data::dataset::Dataset::get(&train, i).unwrap())
            .collect();
        let batch: scl_data::SclBatch = eval.batch(items, &Device::flex());
        scl_geometry::Embeddings::from_tensor(resumed.embed(batch.images)).unwrap()
    };
    assert_eq!(z, z2, "the resumed run's model differs");
}

use super::*;
use proptest::prelude::*;

/// STEP-imbalanced labels: `majority` samples for the first half of `k` classes, `minority`
/// for the rest, class by class.
fn step_labels(k: usize, majority: usize, minority: usize) -> Vec<usize> {
    (0..k)
        .flat_map(|c| std::iter::repeat_n(c, if c < k / 2 { majority } else { minority }))
        .collect()
}

fn schedule(labels: &[usize], k: usize, config: BatchingConfig, seed: u64) -> Schedule {
    Schedule::new(labels, k, &config, seed).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn batch_binding_puts_every_class_in_every_batch(
        k in 2usize..8, majority in 2usize..30, minority in 1usize..5,
        b in 1usize..20, seed in 0u64..1000, epoch in 0u64..5,
    ) {
        let labels = step_labels(k, majority, minority);
        // A batch larger than the data is refused (an epoch would have none).
        let b = b.min(labels.len());
        let s = schedule(&labels, k, BatchingConfig::new(ScheduleKind::BatchBinding, b), seed);
        prop_assert!(!s.epoch(epoch).is_empty());
        for batch in s.epoch(epoch) {
            for c in 0..k {
                prop_assert!(batch.iter().any(|&i| labels[i] == c));
            }
        }
        // The authors' choice: the first example of each class in dataset order.
        let firsts: Vec<usize> = (0..k).map(|c| labels.iter().position(|&l| l == c).unwrap()).collect();
        prop_assert_eq!(s.binding_examples(), &firsts[..]);
    }

    #[test]
    fn shuffling_uses_every_index_once_per_epoch_and_repeats_for_the_same_seed(
        n in 1usize..200, b in 1usize..40, seed in 0u64..1000, epoch in 0u64..5,
    ) {
        let labels: Vec<usize> = (0..n).map(|i| i % 3).collect();
        let mut config = BatchingConfig::new(ScheduleKind::Shuffle, b);
        config.drop_last = false;
        let s = schedule(&labels, 3, config.clone(), seed);
        let mut all: Vec<usize> = s.epoch(epoch).concat();
        all.sort_unstable();
        prop_assert_eq!(all, (0..n).collect::<Vec<_>>());
        prop_assert_eq!(s.epoch(epoch), schedule(&labels, 3, config.clone(), seed).epoch(epoch));
        // Dropping the last batch keeps floor(n / b) full batches of distinct indices; a batch
        // larger than the data is refused then.
        config.drop_last = true;
        if b > n {
            prop_assert_eq!(
                Schedule::new(&labels, 3, &config, seed).unwrap_err(),
                BatchingError::LargerThanData { batch_size: b, n }
            );
        } else {
            let kept = schedule(&labels, 3, config, seed).epoch(epoch);
            prop_assert_eq!(kept.len(), n / b);
            prop_assert!(kept.iter().all(|batch| batch.len() == b));
        }
    }

    #[test]
    fn class_balanced_batches_have_equal_class_counts(
        k in 2usize..6, majority in 4usize..40, minority in 1usize..4,
        per_class in 1usize..5, seed in 0u64..1000,
    ) {
        let labels = step_labels(k, majority, minority);
        let s = schedule(&labels, k, BatchingConfig::new(ScheduleKind::ClassBalanced, per_class * k), seed);
        let batches = s.epoch(0);
        prop_assert!(!batches.is_empty());
        for batch in batches {
            for c in 0..k {
                prop_assert_eq!(batch.iter().filter(|&&i| labels[i] == c).count(), per_class);
            }
        }
    }
}

#[test]
fn shuffled_batches_change_between_epochs_and_fixed_batches_do_not() {
    let labels = step_labels(4, 50, 5);
    let shuffle = schedule(
        &labels,
        4,
        BatchingConfig::new(ScheduleKind::Shuffle, 10),
        1,
    );
    assert_ne!(shuffle.epoch(0), shuffle.epoch(1));
    let fixed = schedule(&labels, 4, BatchingConfig::new(ScheduleKind::Fixed, 10), 1);
    assert_eq!(fixed.epoch(0), fixed.epoch(7));
    assert_ne!(
        fixed.epoch(0),
        schedule(&labels, 4, BatchingConfig::new(ScheduleKind::Fixed, 10), 2).epoch(0)
    );
}

#[test]
fn invalid_settings_are_refused_with_a_sentence() {
    let labels = step_labels(4, 10, 2);
    let e = Schedule::new(
        &labels,
        4,
        &BatchingConfig::new(ScheduleKind::Shuffle, 0),
        0,
    )
    .unwrap_err();
    assert_eq!(e, BatchingError::BatchSize);
    assert_eq!(
        e.to_string(),
        "batch_size = 0 is not allowed: it must be at least 1"
    );
    // Larger than the data with incomplete batches dropped: an epoch would have no batch.
    let n = labels.len();
    for kind in [
        ScheduleKind::Shuffle,
        ScheduleKind::Fixed,
        ScheduleKind::BatchBinding,
    ] {
        let e = Schedule::new(&labels, 4, &BatchingConfig::new(kind, n + 1), 0).unwrap_err();
        assert_eq!(
            e,
            BatchingError::LargerThanData {
                batch_size: n + 1,
                n
            }
        );
        assert!(
            e.to_string()
                .contains("an epoch would have no batch; it must be at most"),
            "{e}"
        );
        assert_eq!(
            schedule(&labels, 4, BatchingConfig::new(kind, n), 0)
                .epoch(0)
                .len(),
            1
        );
    }
    // Keeping incomplete batches, the same size is one batch of every example.
    let mut keep_last = BatchingConfig::new(ScheduleKind::Shuffle, n + 1);
    keep_last.drop_last = false;
    let batches = schedule(&labels, 4, keep_last, 0).epoch(0);
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].len(), n);
    let mut too_many = BatchingConfig::new(ScheduleKind::BatchBinding, 8);
    too_many.binding_per_class = 3;
    let e = Schedule::new(&labels, 4, &too_many, 0).unwrap_err();
    assert_eq!(
        e,
        BatchingError::BindingTooLarge {
            k: 3,
            class: 2,
            size: 2
        }
    );
    let e = Schedule::new(
        &labels,
        4,
        &BatchingConfig::new(ScheduleKind::ClassBalanced, 3),
        0,
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("at least the number of classes (4)"),
        "{e}"
    );
}

#[test]
fn exclusion_and_random_binding_choice_behave_as_configured() {
    let labels = step_labels(2, 6, 3);
    let mut config = BatchingConfig::new(ScheduleKind::BatchBinding, 2);
    config.exclude_binding_from_shuffle = true;
    config.drop_last = false;
    let s = schedule(&labels, 2, config.clone(), 5);
    for batch in s.epoch(0) {
        // Each binding example appears once per batch: appended, never shuffled in.
        for b in s.binding_examples() {
            assert_eq!(batch.iter().filter(|&&i| i == *b).count(), 1);
        }
    }
    config.binding_choice = BindingChoice::Random;
    config.binding_per_class = 2;
    let r = schedule(&labels, 2, config, 5);
    assert_eq!(r.binding_examples().len(), 4);
    assert!(r.binding_examples()[..2].iter().all(|&i| labels[i] == 0));
}

// The validator on hand-made schedules, each breaking one condition.
const LABELS: [usize; 6] = [0, 0, 0, 1, 1, 1];

#[test]
fn a_full_batch_is_accepted() {
    let v = validate(&LABELS, 2, &[vec![0, 1, 2, 3, 4, 5]]);
    assert!(
        v.accepted() && v.graph_connected && v.every_batch_has_every_class,
        "{v:?}"
    );
    assert!(v.reasons().is_empty());
}

#[test]
fn a_class_split_across_batches_without_a_shared_member_fails_condition_a() {
    // Class 0: {0, 1} in one batch, {2} only with class 1. Class pairs all meet.
    let v = validate(&LABELS, 2, &[vec![0, 1, 3, 4], vec![2, 5, 3]]);
    assert_eq!(v.disconnected_classes, vec![0]);
    assert!(v.separated_class_pairs.is_empty());
    assert_eq!(v.lonely_samples, vec![2]);
    assert!(
        v.graph_connected,
        "the whole graph is connected through class 1"
    );
    assert!(!v.accepted());
    assert!(v.reasons()[0].starts_with("condition (a) fails"));
}

#[test]
fn classes_that_never_meet_fail_condition_b() {
    let v = validate(&LABELS, 2, &[vec![0, 1, 2], vec![3, 4, 5]]);
    assert!(v.disconnected_classes.is_empty());
    assert_eq!(v.separated_class_pairs, vec![(0, 1)]);
    assert!(!v.graph_connected && !v.every_batch_has_every_class);
    assert!(!v.accepted());
}

#[test]
fn connected_classes_that_meet_are_accepted_even_if_some_batch_lacks_a_class() {
    // Every batch having every class is not required by (a) and (b).
    let v = validate(&LABELS, 2, &[vec![0, 1, 2, 3], vec![3, 4, 5]]);
    assert!(v.accepted(), "{v:?}");
    assert!(!v.every_batch_has_every_class);
}

#[test]
fn batch_binding_schedules_are_accepted_and_small_fixed_ones_can_fail() {
    let labels = step_labels(4, 20, 2);
    let bound = schedule(
        &labels,
        4,
        BatchingConfig::new(ScheduleKind::BatchBinding, 8),
        3,
    );
    // One epoch drops the incomplete last batch, so 44 mod 8 = 4 samples go unseen and
    // their classes are not connected: the validator says so.
    let v = validate(&labels, 4, &bound.epoch(0));
    assert_eq!(v.unseen_samples.len(), 4);
    assert!(!v.accepted());
    // Over three epochs every sample is seen and the binding examples join everything.
    let three: Vec<Vec<usize>> = (0..3).flat_map(|e| bound.epoch(e)).collect();
    let v = validate(&labels, 4, &three);
    assert!(v.accepted() && v.every_batch_has_every_class, "{v:?}");
    // Fixed batches of 4 over 44 samples: the 2-sample minority classes cannot all be joined.
    let fixed = schedule(&labels, 4, BatchingConfig::new(ScheduleKind::Fixed, 4), 3);
    let v = validate(&labels, 4, &fixed.epoch(0));
    assert!(!v.accepted(), "{v:?}");
    assert!(!v.reasons().is_empty());
}

#[test]
fn different_seeds_and_epochs_give_different_permutations() {
    // Regression: an earlier seed mixer made (seed 0, epoch 2) and (seed 2, epoch 0) collide,
    // so three seeds of a sweep saw the same batches in a different order.
    let labels = step_labels(10, 200, 2);
    let mut seen = std::collections::HashSet::new();
    for seed in 0..4 {
        let s = schedule(
            &labels,
            10,
            BatchingConfig::new(ScheduleKind::Shuffle, 32),
            seed,
        );
        for epoch in 0..50 {
            assert!(
                seen.insert(s.epoch(epoch)),
                "seed {seed} epoch {epoch} repeats a permutation"
            );
        }
    }
}

#[test]
fn the_loader_hands_out_the_schedule_in_order_and_resumes_at_a_saved_position() {
    let labels = step_labels(4, 30, 3);
    let schedule = schedule(
        &labels,
        4,
        BatchingConfig::new(ScheduleKind::BatchBinding, 8),
        9,
    );
    let expected: Vec<Vec<usize>> = (0..3).flat_map(|e| schedule.epoch(e)).collect();
    // Assembly takes a varying time so the workers finish out of order.
    let lookup = labels.clone();
    let slow = move |batch: &[usize]| {
        std::thread::sleep(std::time::Duration::from_micros(
            (batch[0] % 7) as u64 * 200,
        ));
        batch.iter().map(|&i| lookup[i]).collect::<Vec<usize>>()
    };
    let got: Vec<LoadedBatch<Vec<usize>>> =
        Loader::new(schedule.clone(), Position::START, 3, 3, 4, slow).collect();
    let indices: Vec<Vec<usize>> = got.iter().map(|b| b.indices.clone()).collect();
    assert_eq!(indices, expected);
    for b in &got {
        // The binding examples travel with the batch and were assembled with it.
        assert!(
            schedule
                .binding_examples()
                .iter()
                .all(|i| b.indices.contains(i))
        );
        assert_eq!(
            b.item,
            b.indices.iter().map(|&i| labels[i]).collect::<Vec<_>>()
        );
    }
    // Stop after 7 batches, save the position, restart: the rest is identical.
    let saved = got[6].next;
    let resumed: Vec<Vec<usize>> = Loader::new(schedule, saved, 3, 2, 2, |b| b.len())
        .map(|b| b.indices)
        .collect();
    assert_eq!(resumed, expected[7..].to_vec());
}

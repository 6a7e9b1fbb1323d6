//! The batch validator against what optimisation does: on tiny hand-made fixed schedules,
//! mini-batch UFM+ reaches the orthogonal frame from every start where the validator
//! accepts, and ends elsewhere from some start where it rejects.

use burn::tensor::Device;
use scl_batching::validate;
use scl_train::config::{OptimizerKind, UfmConfig};
use scl_train::ufm::run_ufm_on_batches;

fn config(num_classes: usize, seed: u64) -> UfmConfig {
    UfmConfig {
        num_classes,
        dim: Some(8),
        n_majority: 1,
        ratio: 1.0,
        relu: true,
        temperature: 1.0,
        steps: 1500,
        lr: 0.05,
        lr_schedule: scl_train::config::LrSchedule::Constant,
        adam_epsilon: None,
        optimizer: OptimizerKind::Adam,
        seed,
        log_every: 1500,
        schedule: None,
        batch_size: None,
    }
}

/// Final OF distance from each of five random starts.
fn final_of_distances(num_classes: usize, labels: &[usize], batches: &[Vec<usize>]) -> Vec<f64> {
    (0..5)
        .map(|seed| {
            let out = run_ufm_on_batches(
                &config(num_classes, seed),
                labels,
                batches,
                &Device::flex().autodiff(),
            )
            .unwrap();
            out.points.last().unwrap().geometry.overall.of_distance
        })
        .collect()
}

fn report(what: &str, d: &[f64]) {
    eprintln!("{what}: final OF distances {d:.4?}");
}

const LABELS: [usize; 6] = [0, 0, 0, 1, 1, 1];

#[test]
fn accepted_schedules_reach_the_orthogonal_frame_from_every_start() {
    // (a) class 0 joined through {0,1} and {1,2}, class 1 through the last batch; (b) the
    // classes meet in every batch; no batch holds the whole data set.
    let batches = vec![
        vec![0, 1, 3],
        vec![1, 2, 4],
        vec![2, 0, 5],
        vec![3, 4, 5, 0],
    ];
    assert!(validate(&LABELS, 2, &batches).accepted());
    let d = final_of_distances(2, &LABELS, &batches);
    report("accepted", &d);
    assert!(
        d.iter().all(|&v| v < 0.05),
        "accepted schedule, final OF distances {d:?}"
    );
}

#[test]
fn classes_that_never_meet_end_away_from_the_orthogonal_frame() {
    // Condition (b) fails: nothing relates the two classes.
    let batches = vec![vec![0, 1, 2], vec![3, 4, 5]];
    let v = validate(&LABELS, 2, &batches);
    assert_eq!(v.separated_class_pairs, vec![(0, 1)]);
    let d = final_of_distances(2, &LABELS, &batches);
    report("rejected (b)", &d);
    assert!(
        d.iter().any(|&v| v > 0.1),
        "rejected (b), final OF distances {d:?}"
    );
}

#[test]
fn a_sample_cut_off_from_its_class_ends_away_from_the_orthogonal_frame() {
    // Condition (a) fails: sample 2 never shares a batch with another class-0 sample.
    let batches = vec![vec![0, 1, 3, 4], vec![2, 5, 3]];
    let v = validate(&LABELS, 2, &batches);
    assert_eq!(v.disconnected_classes, vec![0]);
    let d = final_of_distances(2, &LABELS, &batches);
    report("rejected (a)", &d);
    assert!(
        d.iter().any(|&v| v > 0.1),
        "rejected (a), final OF distances {d:?}"
    );
}

#[test]
fn batches_need_not_hold_every_class_when_both_conditions_hold() {
    // Accepted, but {1, 2} has no class-1 sample and {3, 4, 5} no class-0 sample: the
    // reviewers' "every batch contains every class" is not needed here.
    let batches = vec![vec![0, 1, 3], vec![1, 2], vec![2, 0, 4, 5], vec![3, 4, 5]];
    let v = validate(&LABELS, 2, &batches);
    assert!(v.accepted() && !v.every_batch_has_every_class);
    let d = final_of_distances(2, &LABELS, &batches);
    report("accepted, some batch lacks a class", &d);
    assert!(d.iter().all(|&v| v < 0.05), "final OF distances {d:?}");
}

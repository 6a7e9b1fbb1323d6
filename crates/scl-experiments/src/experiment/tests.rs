//! Tests of experiment files: grids, profiles, overrides, ids and the sentences of bad input.

use super::*;

const BASE: &str = r#"
    [experiment]
    name = "t"
    [base]
    n_majority = 10
    temperature = 1.0
    steps = 5
    lr = 0.1
    optimizer = "adam"
    log_every = 1
    num_classes = 4
    [grid]
    ratio = [1, 10]
    relu = [true, false]
    seed = [0, 1, 2]
    [profiles.smoke.grid]
    seed = [7]
"#;

#[test]
fn the_grid_is_the_product_of_its_axes_with_the_last_axis_fastest() {
    let e = Experiment::parse(BASE, "x", None).unwrap();
    assert_eq!(e.cells.len(), 12);
    assert_eq!(e.cells[1].axes[2], ("seed".to_string(), "1".to_string()));
    assert_eq!(
        e.cells[3].axes[1],
        ("relu".to_string(), "false".to_string())
    );
    assert_eq!(e.cells[6].config.ratio, 10.0);
    let ids: std::collections::HashSet<_> = e.cells.iter().map(|c| &c.id).collect();
    assert_eq!(ids.len(), 12, "ids are unique");
}

#[test]
fn a_profile_replaces_axes_and_the_ids_stay_stable() {
    let e = Experiment::parse(BASE, "x", Some("smoke")).unwrap();
    assert_eq!(e.cells.len(), 4);
    assert!(e.cells.iter().all(|c| c.config.seed == 7));
    assert_eq!(e.folder_name(), "t-smoke");
    let again = Experiment::parse(BASE, "x", Some("smoke")).unwrap();
    assert_eq!(e.cells[2].id, again.cells[2].id);
    assert!(
        e.cells[0].id.starts_with("ufm-K4-R1-relu-s7-"),
        "{}",
        e.cells[0].id
    );
}

#[test]
fn wrong_settings_name_the_key_and_the_allowed_values() {
    let unknown = BASE.replace("lr = 0.1", "lr = 0.1\nlearning_rate = 3");
    let e = Experiment::parse(&unknown, "x", None).unwrap_err();
    assert!(
        e.message()
            .starts_with("unknown key `learning_rate` in [base]: the allowed keys are num_classes"),
        "{e}"
    );

    let cold = BASE.replace("temperature = 1.0", "temperature = 0.0");
    let e = Experiment::parse(&cold, "x", None).unwrap_err();
    assert!(
        e.message()
            .starts_with("temperature = 0 is not allowed: it must be a finite number above 0"),
        "{e}"
    );

    let small = BASE.replace("ratio = [1, 10]", "ratio = [0.5]");
    let e = Experiment::parse(&small, "x", None).unwrap_err();
    assert!(e.message().starts_with("ratio = 0.5 is not allowed"), "{e}");

    let narrow = BASE.replace("num_classes = 4", "num_classes = 4\ndim = 3");
    let e = Experiment::parse(&narrow, "x", None).unwrap_err();
    assert!(
        e.message()
            .starts_with("dim = 3 is not allowed: it must be at least num_classes = 4"),
        "{e}"
    );

    let e = Experiment::parse(BASE, "x", Some("huge")).unwrap_err();
    assert!(e.message().contains("\"smoke\""), "{e}");

    let empty = BASE.replace("seed = [0, 1, 2]", "seed = []");
    assert!(
        Experiment::parse(&empty, "x", None)
            .unwrap_err()
            .message()
            .contains("seed is empty")
    );
}

const DEEP: &str = r#"
    [experiment]
    name = "d"
    [base]
    n_majority = 10
    temperature = 1.0
    steps = 5
    lr = 0.1
    optimizer = "adam"
    log_every = 1
    num_classes = 4
    ratio = 1
    relu = true
    seed = 0
    [parts.net]
    kind = "deep"
    [parts.net.base]
    dataset = "sklearn-digits"
    model = "mlp"
    epochs = 3
    [parts.net.grid]
    final_activation = ["relu", "none"]
    schedule = ["shuffle", "batch-binding"]
    [profiles.smoke.parts.net.grid]
    schedule = ["batch-binding"]
"#;

#[test]
fn parts_add_deep_cells_after_the_main_grid_and_profiles_reach_them() {
    let e = Experiment::parse(DEEP, "x", None).unwrap();
    assert_eq!((e.cells.len(), e.deep_cells.len()), (1, 4));
    let ids: Vec<&str> = e.deep_cells.iter().map(|c| c.id.as_str()).collect();
    assert!(
        ids[0].starts_with("sklearn-digits-mlp-none-relu-shuffle-scl-s0-"),
        "{ids:?}"
    );
    assert!(
        ids[3].starts_with("sklearn-digits-mlp-none-norelu-batch-binding-scl-s0-"),
        "{ids:?}"
    );
    let smoke = Experiment::parse(DEEP, "x", Some("smoke")).unwrap();
    assert_eq!(smoke.deep_cells.len(), 2);
    assert_eq!(smoke.ids().len(), 3);
}

#[test]
fn deep_settings_errors_name_the_key() {
    let bad = DEEP.replace("epochs = 3", "epochs = 3\nepoch = 4");
    let e = Experiment::parse(&bad, "x", None).unwrap_err();
    assert!(
        e.message()
            .starts_with("unknown key `epoch` in [base] of [parts.net]"),
        "{e}"
    );
    let bad = DEEP.replace("model = \"mlp\"", "model = \"vgg\"");
    let e = Experiment::parse(&bad, "x", None).unwrap_err();
    assert!(e.message().contains("unknown variant `vgg`"), "{e}");
    let bad = DEEP.replace("dataset = \"sklearn-digits\"", "dataset = \"imagenet\"");
    let e = Experiment::parse(&bad, "x", None).unwrap_err();
    assert!(e.message().contains("unknown dataset `imagenet`"), "{e}");
    let bad = DEEP.replace("kind = \"deep\"", "kind = \"gan\"");
    let e = Experiment::parse(&bad, "x", None).unwrap_err();
    assert!(
        e.message()
            .contains("the allowed kinds are \"ufm\", \"deep\""),
        "{e}"
    );
    let bad = DEEP.replace(
        "[profiles.smoke.parts.net.grid]",
        "[profiles.smoke.parts.other.grid]",
    );
    let e = Experiment::parse(&bad, "x", Some("smoke")).unwrap_err();
    assert!(
        e.message().contains("overrides a part that does not exist"),
        "{e}"
    );
}

/// The expansion of a grid as text: index, id and axis values of every cell.
fn expansion(e: &Experiment) -> String {
    let mut out = format!("{} ({} cells)\n", e.folder_name(), e.len());
    let axes = e
        .cells
        .iter()
        .map(|c| (c.index, &c.id, &c.axes))
        .chain(e.deep_cells.iter().map(|c| (c.index, &c.id, &c.axes)));
    for (i, id, axes) in axes {
        let values: Vec<String> = axes.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push_str(&format!("{i:>3} {id} {}\n", values.join(" ")));
    }
    out
}

const ZIPPED: &str = r#"
    [experiment]
    name = "z"
    [base]
    n_majority = 10
    temperature = 1.0
    steps = 5
    optimizer = "adam"
    log_every = 1
    num_classes = 4
    [grid]
    ratio = [1, 10]
    relu = [true, false]
    [zip]
    seed = [0, 1, 2]
    lr = [0.1, 0.05, 0.01]
    [profiles.smoke.base]
    steps = 2
    [profiles.smoke.grid]
    ratio = [10]
    [profiles.smoke.zip]
    seed = [5]
    lr = [0.2]
"#;

#[test]
fn an_unknown_key_in_a_profile_that_is_not_selected_is_refused() {
    for (profile, place) in [
        ("[profiles.big.base]\nstepz = 5\n", "[profiles.big.base]"),
        ("[profiles.big.grid]\nseedz = [1]\n", "[profiles.big.grid]"),
        ("[profiles.big]\nbasee = 1\n", "[profiles.big]"),
    ] {
        let text = format!("{BASE}\n{profile}");
        for selected in [None, Some("smoke")] {
            let e = Experiment::parse(&text, "x", selected).unwrap_err();
            assert!(
                e.message().starts_with("unknown key `") && e.message().contains(place),
                "{selected:?}: {e}"
            );
        }
    }
}

#[test]
fn an_experiment_name_that_is_not_one_folder_name_is_refused() {
    let long = "a".repeat(300);
    for name in [
        "../../escape",
        "/abs/path",
        "",
        ".hidden",
        "a/b",
        "a\\b",
        "a\nb",
        "tab\there",
        long.as_str(),
    ] {
        let text = format!(
            "[experiment]\nname = {name:?}\n{}",
            &BASE[BASE.find("[base]").unwrap()..]
        );
        let e = Experiment::parse(&text, "x", None).unwrap_err();
        assert!(e.message().starts_with("name "), "{name:?}: {e}");
        assert!(e.message().contains("not allowed"), "{name:?}: {e}");
    }
    let text = format!(
        "[experiment]\nname = \"ok name-1.2\"\n{}",
        &BASE[BASE.find("[base]").unwrap()..]
    );
    assert_eq!(
        Experiment::parse(&text, "x", None).unwrap().name,
        "ok name-1.2"
    );
}

#[test]
fn grid_expansions_match_their_snapshots() {
    let quick = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/quick.toml"),
    )
    .unwrap();
    let cases = [
        ("product", BASE, None),
        ("product-smoke", BASE, Some("smoke")),
        ("zip", ZIPPED, None),
        ("zip-smoke", ZIPPED, Some("smoke")),
        ("parts", DEEP, None),
        ("parts-smoke", DEEP, Some("smoke")),
        ("quick-smoke", quick.as_str(), Some("smoke")),
    ];
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/snapshots");
    for (name, text, profile) in cases {
        let got = expansion(&Experiment::parse(text, "x", profile).unwrap());
        let path = dir.join(format!("grid-{name}.txt"));
        if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &got).unwrap();
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_SNAPSHOTS=1 writes it)", path.display()));
        assert_eq!(
            got, want,
            "{name}: rerun with UPDATE_SNAPSHOTS=1 after an intended change"
        );
    }
}

#[test]
fn zipped_axes_move_together_and_a_bad_zip_is_one_sentence() {
    let e = Experiment::parse(ZIPPED, "x", None).unwrap();
    assert_eq!(e.cells.len(), 12);
    for c in &e.cells {
        let pairs = [(0, 0.1), (1, 0.05), (2, 0.01)];
        assert!(
            pairs.contains(&(c.config.seed, c.config.lr)),
            "{:?}",
            c.axes
        );
    }
    let both = ZIPPED.replace("relu = [true, false]", "relu = [true, false]\nseed = [0]");
    let e = Experiment::parse(&both, "x", None).unwrap_err();
    assert!(
        e.message()
            .contains("seed is both a [grid] and a [zip] axis"),
        "{e}"
    );
}

#[test]
fn ufm_cells_take_the_imbalance_table_of_deep_cells_and_keep_their_ids() {
    let flat = Experiment::parse(BASE, "x", None).unwrap();
    let table = BASE.replace("    n_majority = 10\n", "").replace(
        "ratio = [1, 10]",
        "imbalance = [{ kind = \"step\", ratio = 1, n_majority = 10 }, \
         { kind = \"step\", ratio = 10, n_majority = 10 }]",
    );
    let tabled = Experiment::parse(&table, "x", None).unwrap();
    let ids = |e: &Experiment| e.cells.iter().map(|c| c.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&flat), ids(&tabled));
    assert_eq!(tabled.cells[6].config.ratio, 10.0);
    assert_eq!(tabled.cells[6].config.n_majority, 10);

    let long_tail = table.replace(
        "kind = \"step\", ratio = 10",
        "kind = \"long-tail\", ratio = 10",
    );
    let long_tail = long_tail.replace("ratio = 10, n_majority = 10", "ratio = 10, n_max = 10");
    let e = Experiment::parse(&long_tail, "x", None).unwrap_err();
    assert!(
        e.message().contains(
            "is not allowed for ufm cells: the unconstrained-features model has STEP imbalance"
        ),
        "{e}"
    );
    let both = table.replace("num_classes = 4", "num_classes = 4\n    ratio = 5");
    let e = Experiment::parse(&both, "x", None).unwrap_err();
    assert!(
        e.message()
            .starts_with("imbalance and ratio are both set: give the imbalance once"),
        "{e}"
    );
}

#[test]
fn a_deep_cell_with_burns_dampening_keeps_the_id_it_had_before_the_key_existed() {
    let cfg = |extra: &str| -> DeepConfig {
        toml::from_str(&format!(
            "dataset = \"mnist\"\nmodel = \"mlp\"\nepochs = 1\n{extra}"
        ))
        .unwrap()
    };
    let burn = cfg("dampening = 0.1");
    let json = serde_json::to_string(&burn).unwrap();
    assert!(json.contains(",\"dampening\":0.1,"), "{json}");
    let before = json.replacen(",\"dampening\":0.1", "", 1);
    assert!(
        burn.cell_id()
            .ends_with(&format!("{:08x}", fnv1a(before.as_bytes()) as u32))
    );
    // The default is PyTorch's 0, a different run with a different id.
    assert_eq!(cfg("").dampening, 0.0);
    assert_eq!(cfg("").cell_id(), cfg("dampening = 0").cell_id());
    assert_ne!(cfg("").cell_id(), burn.cell_id());
}

//! Worked examples of the scl crates; the programs are this package's examples (see
//! `examples/README.md`):
//!
//! - `supcon_in_your_loop`: the SupCon loss of `scl-loss` in your own Burn model and loop;
//! - `batch_binding_with_burn`: batch-binding from `scl-batching` through Burn's `Dataset`,
//!   `Batcher` and `DataLoader`;
//! - `geometry_from_file`: the metrics of `scl-geometry` for embeddings saved by any
//!   framework (`.npy` or CSV).
#![warn(missing_docs)]

//! Where and how a deep run runs: its options and the folder of saved embeddings.

use super::*;

/// Where and how to run.
#[derive(Clone, Debug)]
pub struct DeepRunOptions {
    /// The run directory (created if missing).
    pub run_dir: PathBuf,
    /// The cell and experiment the run computes, for its records.
    pub label: RunLabel,
    /// Where the dataset files are.
    pub data_dir: DataDir,
    /// Continue from the newest checkpoint in `run_dir` if there is one.
    pub resume: bool,
    /// The backend, for the records.
    pub backend: crate::backend::BackendKind,
    /// Stop after this many epochs of this invocation (tests of resumption); `None`: run on.
    pub stop_after_epochs: Option<usize>,
    /// At every evaluated epoch, also write the embeddings the geometry is measured on, and
    /// the labels, as NumPy files: `embeddings/epoch-NNNN-{train,test}.npy` (`[n, d]`, `f32`,
    /// L2-normalised, eval mode, one view without augmentation) and
    /// `embeddings/epoch-NNNN-{train,test}-labels.npy` (`[n]`, `i64`).
    pub save_embeddings: bool,
    /// When the run finishes, also write the trained model's weights (and batch-norm running
    /// statistics) to this SafeTensors file, named by their module paths (Burn's store), for
    /// other frameworks (`safetensors.torch.load_file`). Written atomically.
    pub export_safetensors: Option<PathBuf>,
}

/// The folder of a run directory that `save_embeddings` writes to.
pub const EMBEDDINGS_DIR: &str = "embeddings";

//! End-to-end tests of the workspace: one test binary, one module per area.

mod quick_sweep;
mod ufm_batching;
mod validator_vs_optimisation;

//! Stopping a run cleanly: Ctrl-C (SIGINT) or SIGTERM asks every deep-network run of the
//! process to save a checkpoint at its current step and return [`crate::RunError::Interrupted`];
//! a second Ctrl-C ends the process at once (exit code 130).
//!
//! The request is one process-wide flag. Command-line tools call [`install_handler`] once
//! their configuration is validated and work begins (until then a signal keeps its default
//! action and ends the process at once); a library user may instead call [`request`] from anywhere (a GUI button, a time
//! limit) to the same effect. Training loops poll [`requested`] after every optimiser step.
//!
//! ```
//! // Without a handler nothing has asked for a stop.
//! assert!(!scl_train::interrupt::requested());
//! ```

use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);
static INSTALL: Once = Once::new();

/// Exit code of a process ended by a second Ctrl-C (the shell's 128 + SIGINT).
pub const EXIT_CODE: u8 = 130;

/// Has a stop been asked for (by a signal or by [`request`])?
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// Asks every run of this process to checkpoint and stop after its current step.
pub fn request() {
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Makes SIGINT and SIGTERM set the flag of [`requested`], and a second SIGINT or SIGTERM end
/// the process with [`EXIT_CODE`] without waiting for a checkpoint. Idempotent; does nothing on
/// platforms without POSIX signals.
///
/// # Errors
/// A sentence naming the signal whose handler could not be installed.
pub fn install_handler() -> Result<(), String> {
    let mut result = Ok(());
    INSTALL.call_once(|| result = install());
    result
}

#[cfg(unix)]
fn install() -> Result<(), String> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    use signal_hook::flag;
    for (signal, name) in [(SIGINT, "SIGINT"), (SIGTERM, "SIGTERM")] {
        // The shutdown must be registered first: on the first signal the flag is still false,
        // so only the second one ends the process.
        flag::register_conditional_shutdown(signal, i32::from(EXIT_CODE), &REQUESTED)
            .and_then(|_| flag::register(signal, &REQUESTED))
            .map_err(|e| format!("cannot install the {name} handler: {e}"))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn install() -> Result<(), String> {
    Ok(())
}

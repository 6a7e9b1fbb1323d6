//! A cell process's stderr that cannot fail: on a full disk, writing a warning to the log file
//! would make `eprintln!` panic and end the cell with an empty reason. The process's stderr is
//! pointed at a pipe, and a thread copies what arrives to the original stderr (the cell's log),
//! dropping what the log cannot take.

use std::io::{Read, Write};

/// The thread that copies the process's stderr to its log; [`StderrRelay::finish`] points
/// stderr back at the log and waits until everything written has been copied.
pub struct StderrRelay {
    #[cfg(unix)]
    log: std::os::fd::OwnedFd,
    thread: std::thread::JoinHandle<()>,
}

impl StderrRelay {
    /// Starts relaying; `None` where the platform or the process's descriptors do not allow
    /// it (stderr then stays as it was).
    #[cfg(unix)]
    pub fn start() -> Option<Self> {
        use std::os::fd::{AsFd, AsRawFd};
        let log = std::io::stderr().as_fd().try_clone_to_owned().ok()?;
        let mut sink = std::fs::File::from(log.try_clone().ok()?);
        let (mut reader, writer) = std::io::pipe().ok()?;
        std::io::stderr().flush().ok()?;
        // SAFETY: both descriptors are open and owned by this process; dup2 replaces fd 2,
        // which std's stderr handle uses unbuffered, atomically.
        #[allow(unsafe_code)]
        let replaced = unsafe { libc::dup2(writer.as_raw_fd(), 2) };
        if replaced < 0 {
            return None;
        }
        drop(writer);
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        let _ = sink.write_all(&buf[..n]);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        });
        Some(Self { log, thread })
    }

    /// Starts relaying; `None` where the platform or the process's descriptors do not allow
    /// it (stderr then stays as it was).
    #[cfg(not(unix))]
    pub fn start() -> Option<Self> {
        None
    }

    /// Points stderr back at the log (closing the pipe) and waits for the relay to copy what
    /// is left, so that the log is complete when the process exits.
    pub fn finish(self) {
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: as in `start`; afterwards no descriptor of the pipe's writing end is
            // left, so the relay reads end-of-file.
            #[allow(unsafe_code)]
            let restored = unsafe { libc::dup2(self.log.as_raw_fd(), 2) };
            if restored < 0 {
                return;
            }
        }
        let _ = self.thread.join();
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn what_is_written_to_stderr_reaches_the_log_before_finish_returns() {
        // Only this test in this binary touches fd 2's target for long; it points fd 2 at a
        // file first so that the relay's log is that file.
        use std::os::fd::AsRawFd;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let file = std::fs::File::create(&path).unwrap();
        #[allow(unsafe_code)]
        // SAFETY: saving and replacing fd 2 with descriptors this test owns.
        let saved = unsafe { libc::dup(2) };
        assert!(saved >= 0);
        #[allow(unsafe_code)]
        // SAFETY: as above.
        unsafe {
            libc::dup2(file.as_raw_fd(), 2);
        }
        let relay = StderrRelay::start().expect("the relay starts");
        // Written to fd 2 directly: the test harness captures `eprintln!`.
        for i in 0..1000 {
            writeln!(std::io::stderr(), "line {i}").unwrap();
        }
        relay.finish();
        #[allow(unsafe_code)]
        // SAFETY: restores the saved descriptor.
        unsafe {
            libc::dup2(saved, 2);
            libc::close(saved);
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1000);
        assert_eq!(text.lines().last(), Some("line 999"));
    }
}

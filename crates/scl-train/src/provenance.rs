//! Where a run's code came from, recorded in every run's `config.json`.

/// The git revision of the current directory's repository, `-dirty` when it has changes,
/// or `unknown` outside a repository (or without git).
pub fn git_revision() -> String {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match run(&["rev-parse", "HEAD"]) {
        Some(rev) => match run(&["status", "--porcelain"]) {
            Some(s) if !s.is_empty() => format!("{rev}-dirty"),
            _ => rev,
        },
        None => "unknown".to_string(),
    }
}

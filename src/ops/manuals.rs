//! `relaybox completions SHELL` and `relaybox manpage DIR`: shell completion scripts and man
//! pages generated from the clap definitions in `cli.rs`, so that they describe exactly the
//! binary that prints them. The .deb ships both (`cross/deb-assets.sh` runs these commands
//! on the binary it packages).
//!
//! This module owns only the generation; the commands and their arguments live in `cli.rs`,
//! which hands its `clap::Command` in (so `ops` does not import `cli`).

use std::io::Write;
use std::path::{Path, PathBuf};

pub use clap_complete::Shell;

/// Writes the completion script of `cmd` for `shell` to `out`.
pub fn completions(mut cmd: clap::Command, shell: Shell, out: &mut dyn Write) {
    clap_complete::generate(shell, &mut cmd, "relaybox", out);
}

/// Writes `relaybox.1` (for `cmd`, the whole command line) and one page per subcommand (`relaybox-client-send.1`, …) into `dir`,
/// creating it if needed; returns the pages written, in sorted order.
pub fn manpages(cmd: clap::Command, dir: &Path) -> Result<Vec<PathBuf>, ManpageError> {
    if dir.exists() && !dir.is_dir() {
        return Err(ManpageError::NotADirectory(dir.to_owned()));
    }
    std::fs::create_dir_all(dir).map_err(|e| ManpageError::Write(dir.to_owned(), e))?;
    let mut written = Vec::new();
    write_pages(cmd, "relaybox", dir, &mut written)?;
    written.sort();
    Ok(written)
}

/// Why `relaybox manpage DIR` failed; the operator (or the packaging script) gave a bad `DIR`.
#[derive(Debug, thiserror::Error)]
pub enum ManpageError {
    /// `DIR` exists and is not a directory.
    #[error("{0} exists and is not a directory")]
    NotADirectory(PathBuf),
    /// `DIR` or a page in it could not be created or written.
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, #[source] std::io::Error),
}

/// Renders `cmd` as `<name>.1` and recurses into its visible subcommands, each named
/// `<name>-<sub>` so that `man relaybox-client-send` finds it. The page title is the full
/// name too, so that a page's `.TH` matches its file name (lintian checks this).
fn write_pages(
    cmd: clap::Command,
    name: &str,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> Result<(), ManpageError> {
    // clap fills in the help subcommand and flags only when a command is built.
    let mut cmd = cmd.name(name.to_owned()).bin_name(name.replace('-', " "));
    cmd.build();
    let path = dir.join(format!("{name}.1"));
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .title(name.to_owned())
        .source(format!("relaybox {}", env!("CARGO_PKG_VERSION")))
        .render(&mut page)
        .and_then(|()| std::fs::write(&path, &page))
        .map_err(|e| ManpageError::Write(path.clone(), e))?;
    written.push(path);
    for sub in cmd.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        let sub_name = format!("{name}-{}", sub.get_name());
        write_pages(sub.clone(), &sub_name, dir, written)?;
    }
    Ok(())
}

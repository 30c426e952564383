//! `tokenvisor check-config`: load and validate a configuration, print it with secrets masked.
//! Warnings (secret files that needed trimming or are readable by group or others, an
//! `http://` token URL to a host that is not loopback) go to stderr as
//! `FILE:LINE: KEY: warning: reason`; they do not change the exit code.

use std::path::PathBuf;

use clap::Args;
use clap::error::ErrorKind;

use crate::exit::Exit;
use crate::{EXIT_PROBLEM, usage_error};

/// Arguments of `tokenvisor check-config`.
#[derive(Debug, Args)]
#[command(group(
    clap::ArgGroup::new("file_choice")
        .args(["file", "config"])
        .required(true)
        .multiple(false)
))]
pub(crate) struct CheckConfigArgs {
    /// The configuration file.
    #[arg(value_name = "FILE")]
    file: Option<PathBuf>,
    /// The configuration file (the same as FILE, spelled as for `run --config`).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// Runs the command; returns the exit code.
pub(crate) fn run(args: &CheckConfigArgs) -> anyhow::Result<u8> {
    let Some(path) = args.file.as_ref().or(args.config.as_ref()) else {
        return Err(usage_error(
            "check-config",
            ErrorKind::MissingRequiredArgument,
            "no configuration file given".to_owned(),
        ));
    };
    must_exist("check-config", path)?;
    match tokenvisor::config::load(path) {
        Ok(config) => {
            print!("{}", config.describe_masked());
            for line in config.warning_lines() {
                eprintln!("{line}");
            }
            Ok(Exit::Ok.code())
        }
        Err(e) => {
            eprintln!("{e}");
            let n = e.problems().len();
            eprintln!(
                "{}: invalid configuration: {n} problem{}",
                e.file().display(),
                if n == 1 { "" } else { "s" }
            );
            Ok(EXIT_PROBLEM)
        }
    }
}

/// A configuration file that does not exist is a usage error of `sub` (exit code 2, the
/// same for every command); anything else (permissions, not a file) is left for the loader
/// to report, naming the file.
pub(crate) fn must_exist(sub: &str, path: &std::path::Path) -> anyhow::Result<()> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(usage_error(
            sub,
            ErrorKind::ValueValidation,
            format!("no such file: {}", path.display()),
        )),
        Ok(_) | Err(_) => Ok(()),
    }
}

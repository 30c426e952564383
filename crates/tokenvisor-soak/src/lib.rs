//! `tokenvisor-soak`: the demo and the soak and benchmark scenarios of tokenvisor, each run
//! in one process against an embedded fault-injecting provider (`tokenvisor-idp` on
//! 127.0.0.1). The `tokenvisor` binary mounts them as `tokenvisor demo` and `tokenvisor soak`
//! behind its default `soak` feature; a build without that feature links neither this crate
//! nor the provider.
//!
//! # Layout
//! - [`demo`]: the embedded default — N workloads through a scripted storyline (a WAF 403
//!   window, a 429 with `Retry-After`, a 503 burst, a revoked grant), shown live.
//! - [`idp`]: `tokenvisor idp`, the local provider `config/local.toml` runs against, with
//!   its fault syntax in `--help`.
//! - [`soak`]: load, soak and benchmark scenarios (soak, storm, scale, burst, timers,
//!   recovery), one submodule each, sharing a harness, a chaos profile
//!   (`config/soak-*.toml`), a metrics recorder and bare baseline loops.
//! - `progress`: a progress bar (indicatif) on a terminal, periodic plain lines otherwise,
//!   for the long phases of a soak run (adding and settling N workloads), on stderr.
//! - [`Error`]: why a run could not be carried out (a usage error, or a step that failed).
//!
//! Each command is a clap argument struct (`demo::DemoArgs`, `soak::SoakArgs`) and a
//! blocking `run` that starts its own tokio runtime, prints to stdout and returns the exit
//! status: [`EXIT_OK`] or [`EXIT_PROBLEM`]. A [`Error::Usage`] is for the front end to
//! report like its own parser's usage errors (exit status 2). Secrets (client secrets,
//! refresh and access tokens) are never printed.

use std::fmt::Display;

pub mod demo;
pub mod idp;
mod progress;
pub mod soak;

/// Exit status: every check held.
pub const EXIT_OK: u8 = 0;
/// Exit status: a check failed.
pub const EXIT_PROBLEM: u8 = 1;

/// Why a demo or soak run could not be carried out (a failed check is not an error: it is
/// an exit status).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The arguments do not fit together; the front end reports it as a usage error of the
    /// subcommand.
    #[error("{message}")]
    Usage {
        /// clap's kind of usage error.
        kind: clap::error::ErrorKind,
        /// What is wrong, for the user.
        message: String,
    },
    /// A step failed: `context` says which, `source` why.
    #[error("{context}")]
    Step {
        /// The step that failed.
        context: String,
        /// Why it failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// A step failed without an underlying error.
    #[error("{0}")]
    Failed(String),
    /// The runtime refused or failed an operation.
    #[error(transparent)]
    Runtime(#[from] tokenvisor::RuntimeError),
    /// The HTTP client could not be built.
    #[error(transparent)]
    Http(#[from] tokenvisor::HttpError),
    /// A status file could not be read or written.
    #[error(transparent)]
    Store(#[from] tokenvisor::StoreError),
    /// The embedded provider failed.
    #[error(transparent)]
    Idp(#[from] tokenvisor_idp::IdpError),
    /// A generated workload name was refused.
    #[error(transparent)]
    Name(#[from] tokenvisor_core::NameError),
    /// The embedded provider's token URL was refused.
    #[error(transparent)]
    TokenUrl(#[from] tokenvisor_core::TokenUrlError),
    /// A file or directory operation failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A soak profile is not valid TOML for its schema.
    #[error(transparent)]
    Profile(#[from] toml::de::Error),
}

/// The result of a demo or soak step.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A usage error of kind `kind`.
    pub(crate) fn usage(kind: clap::error::ErrorKind, message: String) -> Self {
        Error::Usage { kind, message }
    }

    /// A failure described by `message` alone.
    pub(crate) fn failed(message: impl Display) -> Self {
        Error::Failed(message.to_string())
    }
}

/// Adds the failed step to an error, the way the binary reports it (`step: cause: …`).
pub(crate) trait Context<T> {
    /// Names the step that failed.
    fn context<C: Display>(self, context: C) -> Result<T>;
    /// Names the step that failed, built only on failure.
    fn with_context<C: Display, F: FnOnce() -> C>(self, f: F) -> Result<T>;
}

impl<T, E> Context<T> for std::result::Result<T, E>
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn context<C: Display>(self, context: C) -> Result<T> {
        self.map_err(|e| Error::Step {
            context: context.to_string(),
            source: Box::new(e),
        })
    }

    fn with_context<C: Display, F: FnOnce() -> C>(self, f: F) -> Result<T> {
        self.map_err(|e| Error::Step {
            context: f().to_string(),
            source: Box::new(e),
        })
    }
}

impl<T> Context<T> for Option<T> {
    fn context<C: Display>(self, context: C) -> Result<T> {
        self.ok_or_else(|| Error::failed(context))
    }

    fn with_context<C: Display, F: FnOnce() -> C>(self, f: F) -> Result<T> {
        self.ok_or_else(|| Error::failed(f()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_names_itself_and_keeps_its_cause() {
        let io: std::result::Result<(), _> = Err(std::io::Error::other("disk full"));
        let err = io.context("cannot write the status file").unwrap_err();
        assert_eq!(err.to_string(), "cannot write the status file");
        let cause = std::error::Error::source(&err).map(ToString::to_string);
        assert_eq!(cause.as_deref(), Some("disk full"));
        let none: Option<u8> = None;
        assert_eq!(
            none.context("no sample").unwrap_err().to_string(),
            "no sample"
        );
    }
}

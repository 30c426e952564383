//! `tokenvisor check-config`: load and validate a configuration, print it with secrets masked.
//! Warnings (secret files that needed trimming or are readable by group or others, an
//! `http://` token URL to a host that is not loopback) go to stderr as
//! `FILE:LINE: KEY: warning: reason`; they do not change the exit code.
//!
//! `--online` also fetches each `issuer`'s metadata (once per issuer, with the settings of
//! its first workload: roots, proxy, timeouts), prints what was discovered as comments, and
//! warns (`FILE: workload NAME: auth_method: warning: …`) for each workload whose
//! `auth_method` the provider does not advertise. A discovery that fails is a problem (exit
//! 1), reported as `FILE: workload NAME: issuer: reason`.

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
    /// Also fetch each issuer's discovery document: show what was discovered, warn when a
    /// workload's auth_method is not advertised, fail when it cannot be fetched.
    #[arg(long)]
    online: bool,
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
            match args.online && !online(&config)? {
                true => Ok(EXIT_PROBLEM),
                false => Ok(Exit::Ok.code()),
            }
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

/// `--online`: discovery of every issuer; false when one failed.
fn online(config: &tokenvisor::config::Config) -> anyhow::Result<bool> {
    let file = config.source.display();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let transport = tokenvisor::HttpTransport::new(tokenvisor::HttpConfig::default())?;
    let mut ok = true;
    let mut seen = std::collections::BTreeMap::new();
    for w in &config.workloads {
        let Some(issuer) = &w.policy.provider.issuer else {
            continue;
        };
        let p = &w.policy;
        let first = !seen.contains_key(issuer);
        let found = seen.entry(issuer.clone()).or_insert_with(|| {
            runtime.block_on(transport.discover(
                issuer,
                &p.provider,
                p.connect_timeout,
                p.request_timeout,
            ))
        });
        let name = w.name.as_str();
        match found {
            Ok(doc) => {
                if first {
                    let list = |v: &[String]| match v.is_empty() {
                        true => "(not stated)".to_owned(),
                        false => v.join(", "),
                    };
                    println!("\n# discovered from issuer {issuer}:");
                    println!("#   token_endpoint = {}", doc.token_endpoint.redacted());
                    println!(
                        "#   token_endpoint_auth_methods_supported = {}",
                        list(&doc.token_endpoint_auth_methods_supported)
                    );
                    println!(
                        "#   grant_types_supported = {}",
                        list(&doc.grant_types_supported)
                    );
                }
                if let Some(why) = doc.method_warning(w.auth_method.registered_name()) {
                    eprintln!("{file}: workload {name}: auth_method: warning: {why}");
                }
            }
            Err(e) => {
                ok = false;
                eprintln!("{file}: workload {name}: issuer: {e}");
            }
        }
    }
    Ok(ok)
}

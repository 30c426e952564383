//! `[service] log_level`: a filter the logger would read as something else (a bare word is a
//! target enabled at `trace`, so `"verbose"` silences every line) is refused as
//! `FILE:LINE: service.log_level: reason`, with a "did you mean" when close to a level.

use std::path::Path;

use tokenvisor_config as config;

fn parse(level: &str) -> Result<config::Config, config::ConfigError> {
    let text =
        format!("[service]\nstatus_dir = \"/s\"\nadmin_listen = \"off\"\nlog_level = {level:?}\n");
    config::parse(&text, Path::new("/etc/tv.toml"), &|_| None)
}

#[track_caller]
fn refused(level: &str, reason: &str) {
    let Err(err) = parse(level) else {
        panic!("log_level = {level:?} was accepted")
    };
    let rendered = err.to_string();
    assert!(
        rendered
            .lines()
            .any(|l| l.starts_with("/etc/tv.toml:4: service.log_level: ") && l.contains(reason)),
        "log_level = {level:?}: no `FILE:LINE: KEY: …{reason}…` in:\n{rendered}"
    );
}

#[test]
fn a_word_that_is_not_a_level_is_refused() {
    refused(
        "verbose",
        "\"verbose\" is not a log level; a level is one of off, error",
    );
    refused("", "must not be empty");
    refused("  ", "must not be empty");
}

#[test]
fn a_misspelt_level_gets_a_did_you_mean() {
    refused("inof", "did you mean `info`?");
    refused("warning", "did you mean `warn`?");
    refused(
        "info,tokenvisor=debgu",
        "\"debgu\" (for tokenvisor) is not a log level; did you mean `debug`?",
    );
}

#[test]
fn empty_directives_are_refused() {
    refused("info,", "empty directive");
    refused("=debug", "empty directive");
}

#[test]
fn levels_and_target_directives_are_accepted() {
    for ok in [
        "info",
        "TRACE",
        "off",
        "warn,tokenvisor=debug",
        "debug, tokenvisor_admin=trace",
        "tokenvisor[refresh]=trace",
        "error,tokenvisor::oauth=info",
    ] {
        if let Err(e) = parse(ok) {
            panic!("log_level = {ok:?} was refused:\n{e}");
        }
    }
}

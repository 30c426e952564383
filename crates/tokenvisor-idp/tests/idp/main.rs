//! Integration tests: real HTTP on 127.0.0.1 against a running `tokenvisor-idp`.

mod admin;
mod binary;
mod chaos;
mod common;
mod faults;
mod token;

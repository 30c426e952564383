//! Scrubber tests.
use super::*;

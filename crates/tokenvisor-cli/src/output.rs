//! Output helpers. The text itself (tables, durations, safe cells) is the core's
//! [`tokenvisor_core::text`]; the views are the libraries'.

use std::time::SystemTime;

use tokenvisor_core::Timestamp;

/// The wall clock now.
pub(crate) fn now() -> Timestamp {
    Timestamp::from_system_time(SystemTime::now())
}

//! Scenarios written once over an endpoint abstraction (filled in below).

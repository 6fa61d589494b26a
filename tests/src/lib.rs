//! Test support: origin servers and HTTP clients over loopback.

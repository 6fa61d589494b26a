//! Tests of the built `aether` binary, spawned as a user would run it: flags, messages, exit
//! codes, both runtimes, and tunnels through a `serve` and a `share` of its own.

mod commands;
mod support;
mod tunnels;

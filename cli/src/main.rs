//! `aether`: expose a local HTTP service at a public URL (`share`), or run the
//! public server (`serve`). Parses flags, picks a runtime, hands over to the command.

mod log;
mod mem;
mod serve;
mod share;
mod units;

use std::process::ExitCode;

use argh::FromArgs;

use crate::log::say;

#[global_allocator]
static ALLOC: mem::Counting = mem::Counting;

/// aether: make a service on this machine reachable at a public URL.
#[derive(FromArgs)]
struct Args {
    /// async runtime: tokio (default) or smol
    #[argh(option, default = "Runtime::Tokio", from_str_fn(runtime))]
    runtime: Runtime,
    /// print the version and exit
    #[argh(switch, short = 'V')]
    version: bool,
    #[argh(subcommand)]
    command: Option<Command>,
}

/// `--runtime`: which adapter runs the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Runtime {
    Tokio,
    Smol,
}

fn runtime(s: &str) -> Result<Runtime, String> {
    match s {
        "tokio" => Ok(Runtime::Tokio),
        "smol" => Ok(Runtime::Smol),
        _ => Err(format!("unknown runtime `{s}`: use tokio or smol")),
    }
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Serve(serve::Serve),
    Share(share::Share),
}

fn main() -> ExitCode {
    let args: Args = argh::from_env();
    if args.version {
        println!("aether {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let result = match args.command {
        Some(Command::Serve(s)) => serve::run(args.runtime, s),
        Some(Command::Share(s)) => share::run(args.runtime, s),
        None => Err("no command given: try `aether share 3000` or `aether --help`".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            say!("aether: {msg}");
            ExitCode::FAILURE
        }
    }
}

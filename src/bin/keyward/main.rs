//! `keyward`: the operator's command-line tool for a keyward key database
//! (feature `cli`). Create, list, show, revoke, reactivate, delete, roll
//! and rename keys, mint an admin key when every admin key is lost, run
//! the maintenance sweep, import keys from another system and read the
//! audit trail.
//!
//! ```sh
//! keyward --db sqlite:keys.db --catalog catalog.toml keys list
//! keyward --db postgres://localhost/keys --catalog catalog.toml keys revoke AbCd1234
//! ```
//!
//! Exit codes: see [`exit`]; the README's "Command line" lists them too.

mod args;
mod commands;
mod config;
mod failure;
mod output;

use std::process::ExitCode;

use clap::Parser;

use args::Cli;

/// The exit codes, each documented in `keyward --help`.
pub mod exit {
    /// Done.
    pub const OK: u8 = 0;
    /// Something unexpected failed (a bug, or an I/O error writing the
    /// output).
    pub const INTERNAL: u8 = 1;
    /// The command line is wrong (clap's own code).
    pub const USAGE: u8 = 2;
    /// The configuration is wrong: the catalog file, the database URL, a
    /// database that does not exist.
    pub const CONFIG: u8 = 3;
    /// The key named does not exist.
    pub const NOT_FOUND: u8 = 4;
    /// The request was refused: an invalid name, permission, tenant or
    /// duration, a tenant policy, a key that cannot be rolled.
    pub const REFUSED: u8 = 5;
    /// The database could not be reached or failed.
    pub const UNAVAILABLE: u8 = 6;
    /// An import finished, but some rows were rejected (the report lists
    /// them); the others were imported.
    pub const REJECTED_ROWS: u8 = 7;
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the runtime: {e}");
            return ExitCode::from(exit::INTERNAL);
        }
    };
    let json = cli.json;
    let code = runtime.block_on(commands::run(cli));
    match code {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            output::failure(json, &failure);
            ExitCode::from(failure.code)
        }
    }
}

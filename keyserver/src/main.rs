//! `keyserver`: see `keyserver --help`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = keyserver::cli::Cli::parse();
    keyserver::cli::init_log(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("keyserver: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(keyserver::cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyserver: {e}");
            ExitCode::FAILURE
        }
    }
}

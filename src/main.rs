//! The subledger binary: everything is in the library; see `subledger --help`.

fn main() -> std::process::ExitCode {
    subledger::cli::main()
}

//! The `fewstep` command line (native). On wasm32 the library is the whole program (see web/).

#[cfg(not(target_arch = "wasm32"))]
fn main() -> std::process::ExitCode {
    fewstep::cli::main()
}

#[cfg(target_arch = "wasm32")]
fn main() {}

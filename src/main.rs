//! The msctl binary: everything is in the library.

fn main() -> std::process::ExitCode {
    msctl::run()
}

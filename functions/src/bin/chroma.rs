//! The `chroma` command line; everything is in the library.

fn main() -> std::process::ExitCode {
    chroma_functions::main()
}

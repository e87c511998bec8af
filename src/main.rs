/// mimalloc: the request path allocates many small, short-lived values (JSON trees, headers),
/// where glibc's malloc cost a third of every request's instructions.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    scimgate::cli::main()
}

// The system allocator took about 7 % of the ingest benchmark's CPU in
// malloc/free. mimalloc (maintained, widely used) raised events/s by about
// 15 % in the same benchmark; without transparent huge pages its resident
// memory stays close to the system allocator's (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tally::alloc::tune();
    tally::cli::main()
}

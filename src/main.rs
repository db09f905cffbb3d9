//! The `idem` command-line tool. See `idem --help`.

mod cli;

/// mimalloc instead of the system allocator: candle allocates a fresh buffer per tensor op, and
/// glibc serves buffers above its mmap threshold (≤ 32 MiB) with mmap/munmap, so every EGNN op
/// paid page faults and cross-core TLB shootdowns (half the time of a training step).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` (mimalloc.h): with the default 10 ms, freed tensor memory went back
/// to the OS between ops and was faulted in again (zeroed huge pages); -1 keeps it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> std::process::ExitCode {
    // SAFETY: sets a process-wide allocator option; no allocation is in flight on another thread.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    cli::main()
}

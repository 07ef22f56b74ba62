//! Settings of the global allocator (mimalloc), shared by `tally` and the
//! benchmark's ceiling so both run with the same allocator behaviour.

/// `mi_option_purge_delay` in the option list of the mimalloc the crate
/// builds (version 3; `extended` exposes the setter but not this name).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Freed memory goes back to the OS after 10 ms (mimalloc 2's delay)
/// instead of a second. The server frees a second of events at a time;
/// kept that long, those pages made about a tenth of its resident memory
/// under load (see BENCHMARKS.md). Call once, at the start of `main`.
pub fn tune() {
    // SAFETY: sets a process-wide option; mimalloc reads it at each purge.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 10) };
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        // mimalloc 3 documents a default of 1000 ms for the purge delay; no
        // other option has that default.
        let delay = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(delay, 1000);
    }
}

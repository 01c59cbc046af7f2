//! How the flusher's threads share a core with the threads that answer
//! requests: their priority, the time slice they ask for, and the pacing of
//! their long store writes.
//!
//! The flusher's work (taking deltas, building batches, store writes) must
//! keep up with every flush interval, yet never hold a request up for long.
//! On a core that requests keep busy, the kernel switches tasks only at a
//! timer tick (4 ms at `HZ=250`) unless one blocks or yields; a store write
//! of 10,000 keys (~40 ms of CPU on the embedded store then; 25 ms since its
//! rows are written in key order) held every request on that core up for a
//! whole tick, a few dozen times a second, which was luot's p99 under load
//! (BENCHMARKS.md). So the flusher's threads
//! run at nice 10, ask for a 100 µs slice, and their long loops yield the
//! core every 100 µs ([`pace`]).
//!
//! This module knows nothing of stores or batches; it only sets and paces
//! the calling thread.
//!
//! Invariant: [`pace`] yields only on the flusher's threads, so code that
//! request threads also run may call it; it is never called under a lock
//! that beacons take, and it never yields while the ledger's write lock is
//! held: the write guard carries an [`Unpaced`], under which [`pace`] does
//! nothing, so a reader never waits on a low-priority thread that gave
//! its core away with the lock in hand.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// The `nice` value of the flusher's threads (see [`background_priority`]).
pub const BACKGROUND_NICE: i8 = 10;

/// The time slice the flusher's threads ask the scheduler for (Linux 6.12
/// and later honour it, from 100 µs up; older kernels ignore it).
pub const BACKGROUND_SLICE: Duration = Duration::from_micros(100);

/// How long a paced write runs before it offers the core to requests.
pub const WORK_BEFORE_YIELD: Duration = Duration::from_micros(100);

/// Lowers the calling thread to [`BACKGROUND_NICE`] and asks for a
/// [`BACKGROUND_SLICE`]. The flusher's thread and every blocking thread its
/// runtime starts (store writes, the write-ahead file) call it; store calls
/// made to answer a request run on the main runtime's threads, at the
/// priority requests have.
///
/// Why nice 10: at that weight (110 against a request thread's 1,024) the
/// flusher gets up to a tenth of a core that requests keep busy — enough to
/// flush 10,000 keys a second (~25 ms of work on the embedded store) with
/// room to spare — and yields the rest. Lower classes starved it: with its
/// writes in `SCHED_IDLE` and itself at nice 19, a core saturated by
/// requests flushed once in five seconds or never (measured with the load
/// script's flush counts), so the store fell behind and a crash could lose
/// far more than one flush interval.
///
/// Why the short slice: paced work ([`pace`]) yields every 100 µs, and
/// a thread that yields is picked again only once its virtual deadline is
/// the earliest; with the default slice (1.4 ms here) that came so late
/// that the paced writes fell behind (0.2 batches applied a second against
/// the one needed, load script, same run). With a 100 µs slice they keep
/// up (1.0 a second).
pub fn background_priority() {
    PACED.set(Some((Instant::now(), 0)));
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadPriorityValue, ThreadSchedulePolicy,
    };
    // The crate maps a portable p (0–99) to nice -20 + trunc(39 × (1 −
    // p / 99)) on Linux: 22 gives 10 (a test reads it back).
    const P: u8 = 22;
    if let Ok(p) = ThreadPriorityValue::try_from(P) {
        let _ = thread_priority::set_thread_priority_and_policy(
            thread_priority::thread_native_id(),
            ThreadPriority::Crossplatform(p),
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other),
        );
    }
    short_slice();
}

/// The kernel's `struct sched_attr` (include/uapi/linux/sched/types.h), up
/// to the fields every kernel since 3.14 reads (`SCHED_ATTR_SIZE_VER0`).
#[cfg(target_os = "linux")]
#[repr(C)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    /// For `SCHED_OTHER` since Linux 6.12: the requested slice.
    runtime: u64,
    deadline: u64,
    period: u64,
}

/// Asks for [`BACKGROUND_SLICE`] with `sched_setattr`, keeping the normal
/// class and [`BACKGROUND_NICE`]. Neither libc nor `thread-priority` wraps
/// the call for the normal class, hence the one `unsafe` block of the
/// library. Measured (load script, quiet beacons on the embedded store,
/// same run): with the pacing and the slice, p99 4.0 ms → 1.3–1.9 ms at the
/// same throughput and one batch applied a second; without the slice the
/// paced writes fell behind (above).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn short_slice() {
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: libc::SCHED_OTHER as u32,
        flags: 0,
        nice: i32::from(BACKGROUND_NICE),
        priority: 0,
        runtime: BACKGROUND_SLICE.as_nanos() as u64,
        deadline: 0,
        period: 0,
    };
    // SAFETY: sched_setattr(2) reads `attr.size` bytes from a live,
    // properly laid out `sched_attr` and changes only this thread (tid 0).
    // A kernel that refuses it leaves the nice value set above.
    let _ = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
}

#[cfg(not(target_os = "linux"))]
fn short_slice() {}

thread_local! {
    /// On a thread that called [`background_priority`]: when it last
    /// yielded in [`pace`], and the steps since it last read the clock.
    static PACED: Cell<Option<(Instant, u32)>> = const { Cell::new(None) };
}

/// Notes one step of long work (a page, a row). On a flusher thread (one
/// that called [`background_priority`]) it yields the core (`sched_yield`)
/// once [`WORK_BEFORE_YIELD`] has passed since it last yielded, so a
/// request thread waiting on the same core runs before the work goes on
/// (where none waits, a yield returns at once); on any other thread it
/// does nothing.
///
/// Why: the kernel switches from a running thread only at a timer tick
/// (4 ms at `HZ=250`) unless it blocks or yields, so each unpaced stretch
/// of the flusher's own work (taking 10,000 pages' deltas from the tally:
/// 2.8 ms of CPU; building their batch: 2.2 ms; rolling kept readings
/// forward: 1.6 ms; thread CPU clock, quiet beacons under load) held every
/// request on the core up to a tick, a few times a second.
pub fn pace() {
    pace_with(|| {
        #[cfg(test)]
        ON_YIELD.with_borrow(|hook| {
            if let Some(hook) = hook {
                hook();
            }
        });
        std::thread::yield_now();
    });
}

#[cfg(test)]
thread_local! {
    /// Called at each yield of [`pace`] on this thread (tests look at
    /// what is locked when the flusher would let the core go).
    pub(crate) static ON_YIELD: std::cell::RefCell<Option<Box<dyn Fn()>>> =
        const { std::cell::RefCell::new(None) };
}

fn pace_with(yield_now: impl FnOnce()) {
    if UNPACED.get() > 0 {
        return;
    }
    let Some((since, steps)) = PACED.get() else {
        return;
    };
    let steps = steps.wrapping_add(1);
    if !steps.is_multiple_of(CHECK_EVERY) || since.elapsed() < WORK_BEFORE_YIELD {
        PACED.set(Some((since, steps)));
        return;
    }
    yield_now();
    PACED.set(Some((Instant::now(), steps)));
}

thread_local! {
    /// How many [`Unpaced`] guards this thread holds.
    static UNPACED: Cell<u32> = const { Cell::new(0) };
}

/// While one lives, [`pace`] never yields on this thread. Held with every
/// lock that readers wait for (the ledger's write guard): a thread at
/// nice 10 that yielded with such a lock held might not run again for
/// milliseconds while requests keep the core, and every reader of the
/// site would wait that long. Work under it runs to its end instead, so
/// it must be short.
pub struct Unpaced(std::marker::PhantomData<*const ()>);

impl Unpaced {
    /// Suspends pacing on this thread until the guard drops.
    pub fn new() -> Self {
        UNPACED.set(UNPACED.get() + 1);
        Unpaced(std::marker::PhantomData)
    }
}

impl Default for Unpaced {
    fn default() -> Self {
        Unpaced::new()
    }
}

impl Drop for Unpaced {
    fn drop(&mut self) {
        UNPACED.set(UNPACED.get().saturating_sub(1));
    }
}

/// Steps between clock reads (a step is a few microseconds of work).
const CHECK_EVERY: u32 = 8;

#[cfg(test)]
mod tests {
    use super::*;

    /// This thread's `/proc/thread-self/stat` field `n` (1-based, after the
    /// command name).
    fn stat_field(n: usize) -> Option<i64> {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
        // The command name may hold spaces; fields follow its ')'.
        let rest = &stat[stat.rfind(')')? + 2..];
        rest.split(' ').nth(n - 3)?.parse().ok()
    }

    /// This thread's `se.slice` in nanoseconds, from `/proc` (kernels with
    /// the EEVDF scheduler).
    fn slice_of_this_thread() -> Option<u64> {
        let sched = std::fs::read_to_string("/proc/thread-self/sched").ok()?;
        let line = sched.lines().find(|l| l.starts_with("se.slice"))?;
        line.rsplit(' ').next()?.trim().parse().ok()
    }

    /// Whether the running kernel is at least `major.minor`.
    fn kernel_at_least(major: u32, minor: u32) -> bool {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut parts = release
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|p| p.parse::<u32>().ok());
        let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        found >= (major, minor)
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn background_priority_sets_the_background_nice_and_slice() {
        let (before, after, slice) = std::thread::spawn(|| {
            let before = stat_field(19);
            background_priority();
            (before, stat_field(19), slice_of_this_thread())
        })
        .join()
        .unwrap();
        if before.is_some_and(|n| n > i64::from(BACKGROUND_NICE)) {
            // Run at a lower priority already (which only root may raise).
            return;
        }
        assert_eq!(after, Some(i64::from(BACKGROUND_NICE)));
        if kernel_at_least(6, 12) {
            assert_eq!(slice, Some(BACKGROUND_SLICE.as_nanos() as u64));
        }
    }

    /// Steps of at least 20 µs each, `n` of them, through `pace_with`.
    fn paced_steps(n: usize) -> u64 {
        let calls = std::cell::Cell::new(0u64);
        for _ in 0..n {
            let step = Instant::now();
            while step.elapsed() < Duration::from_micros(20) {
                std::hint::spin_loop();
            }
            pace_with(|| calls.set(calls.get() + 1));
        }
        calls.get()
    }

    #[test]
    fn pace_yields_on_a_flusher_thread_only() {
        let (request, flusher) = std::thread::spawn(|| {
            let request = paced_steps(80);
            PACED.set(Some((Instant::now(), 0)));
            (request, paced_steps(80))
        })
        .join()
        .unwrap();
        assert_eq!(
            request, 0,
            "a thread that is not the flusher's never yields"
        );
        // Steps of at least 20 µs: every clock read (each 8th step) finds at
        // least 160 µs since the last yield, so each one yields.
        assert_eq!(flusher, 10);
    }

    #[test]
    fn pace_lets_quick_work_run_on() {
        let calls = std::cell::Cell::new(0u64);
        let started = std::thread::spawn(move || {
            // Timed from before the pace's own start, so that a thread
            // stopped between the two still has the stop in `elapsed`.
            let started = Instant::now();
            PACED.set(Some((Instant::now(), 0)));
            for _ in 0..1_000 {
                pace_with(|| calls.set(calls.get() + 1));
            }
            (started.elapsed(), calls.get())
        })
        .join()
        .unwrap();
        let (elapsed, yields) = started;
        // At most one yield per WORK_BEFORE_YIELD that passed (none, unless
        // the machine stopped this thread).
        let most = (elapsed.as_micros() / WORK_BEFORE_YIELD.as_micros()) as u64;
        assert!(yields <= most, "yields: {yields}, at most {most}");
    }
}

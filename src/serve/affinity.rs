//! One core per HTTP worker (`HTTP_PIN_WORKERS`, on by default): with more than one worker and
//! no more workers than the cores this process may use, worker `i` runs only on the `i`-th of
//! them. Left to the scheduler, the workers, the load's other processes and their wake-ups
//! were placed so that in some rounds the workers ran out of ready work four times as often and
//! served 0.69-0.77x nginx's rate, pinned 0.86x at worst (`bench/HISTORY.md`). A single worker
//! is left free to move: it has no sibling to collide with.

use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;

/// The core each of `workers` is pinned to, in worker order; empty when they are not pinned.
pub fn plan(workers: usize, allowed: &[usize]) -> Vec<usize> {
    if workers < 2 || workers > allowed.len() {
        return Vec::new();
    }
    allowed[..workers].to_vec()
}

/// The cores this process may run on, in order (its affinity mask, which a container's cpuset
/// narrows).
pub fn allowed_cores() -> Vec<usize> {
    let Ok(set) = sched_getaffinity(Pid::from_raw(0)) else {
        return Vec::new();
    };
    (0..CpuSet::count())
        .filter(|core| set.is_set(*core).unwrap_or(false))
        .collect()
}

/// Pins the calling thread to `core`; a failure is logged and the thread left free.
pub fn pin_current_thread(core: usize) {
    let mut set = CpuSet::new();
    let pinned = set
        .set(core)
        .and_then(|()| sched_setaffinity(Pid::from_raw(0), &set));
    if let Err(error) = pinned {
        tracing::warn!(core, error = %error, "an HTTP worker could not be pinned to its core");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_workers_get_the_allowed_cores_in_order_and_one_or_too_many_get_none() {
        assert_eq!(plan(2, &[0, 1]), [0, 1]);
        assert_eq!(plan(2, &[2, 5, 7]), [2, 5]);
        assert!(plan(1, &[0, 1]).is_empty());
        assert!(plan(3, &[0, 1]).is_empty());
        assert!(plan(2, &[]).is_empty());
    }

    #[test]
    fn a_pinned_thread_runs_on_its_core_alone() {
        let allowed = allowed_cores();
        assert!(!allowed.is_empty(), "a process may run somewhere");
        let core = *allowed.last().unwrap();
        let seen = std::thread::spawn(move || {
            pin_current_thread(core);
            allowed_cores()
        })
        .join()
        .unwrap();
        assert_eq!(seen, [core]);
    }
}

//! Each worker thread's own map of the keys its calls presented. With the directory's maps
//! alone, every call took their read locks and counted references to its key and its account:
//! writes to lines that every worker's calls share, which the other core must then fetch
//! again. Here a call's look-up writes only lines of its own thread. The directory stays the
//! truth: an entry it forgets is marked so, and a worker drops its copy at the next call that
//! meets it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use thread_local::ThreadLocal;

/// What a worker keeps: it tells when the directory has forgotten it.
pub(super) trait Forgettable {
    fn is_forgotten(&self) -> bool;
}

/// Forgotten entries are swept out when a map has grown to twice what it kept after the last
/// sweep, and never before it holds this many.
const FIRST_SWEEP: usize = 1024;

pub(super) struct NearKeys<T: Send + Sync> {
    per_thread: ThreadLocal<RefCell<Near<T>>>,
}

/// Digests are SHA-256 outputs of what a stranger presented: no stranger chooses where they
/// fall, and only keys found in the directory are kept.
struct Near<T> {
    known: HashMap<Vec<u8>, Arc<T>, foldhash::fast::RandomState>,
    sweep_at: usize,
}

impl<T: Send + Sync> Default for NearKeys<T> {
    fn default() -> Self {
        NearKeys {
            per_thread: ThreadLocal::new(),
        }
    }
}

impl<T: Forgettable + Send + Sync> NearKeys<T> {
    /// This thread's copy of the entry of `digest`, unless the directory forgot it since.
    pub(super) fn get(&self, digest: &[u8]) -> Option<Arc<T>> {
        let mut near = self.per_thread.get()?.borrow_mut();
        let known = near.known.get(digest)?;
        if known.is_forgotten() {
            near.known.remove(digest);
            return None;
        }
        Some(known.clone())
    }

    /// Keeps what the directory found for `digest` on this thread.
    pub(super) fn keep(&self, digest: &[u8], known: Arc<T>) {
        let mut near = self
            .per_thread
            .get_or(|| {
                RefCell::new(Near {
                    known: HashMap::default(),
                    sweep_at: FIRST_SWEEP,
                })
            })
            .borrow_mut();
        if near.known.len() >= near.sweep_at {
            near.known.retain(|_, known| !known.is_forgotten());
            near.sweep_at = (near.known.len() * 2).max(FIRST_SWEEP);
        }
        near.known.insert(digest.to_vec(), known);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    struct Entry(AtomicBool);

    impl Forgettable for Entry {
        fn is_forgotten(&self) -> bool {
            self.0.load(Ordering::Relaxed)
        }
    }

    fn entry() -> Arc<Entry> {
        Arc::new(Entry(AtomicBool::new(false)))
    }

    #[test]
    fn a_thread_finds_what_it_kept_until_the_directory_forgets_it() {
        let near = NearKeys::default();
        let kept = entry();
        near.keep(b"digest", kept.clone());
        assert!(
            near.get(b"digest")
                .is_some_and(|found| Arc::ptr_eq(&found, &kept))
        );
        assert!(near.get(b"other").is_none());
        // Another thread has its own map: it finds nothing until it keeps its own copy.
        std::thread::scope(|scope| {
            scope.spawn(|| assert!(near.get(b"digest").is_none()));
        });
        kept.0.store(true, Ordering::Relaxed);
        assert!(
            near.get(b"digest").is_none(),
            "a forgotten entry is dropped"
        );
    }

    #[test]
    fn forgotten_entries_are_swept_when_the_map_doubles() {
        let near = NearKeys::default();
        let forgotten: Vec<Arc<Entry>> = (0..FIRST_SWEEP).map(|_| entry()).collect();
        for (n, known) in forgotten.iter().enumerate() {
            near.keep(&n.to_be_bytes(), known.clone());
            known.0.store(true, Ordering::Relaxed);
        }
        near.keep(b"live", entry());
        let size = |near: &NearKeys<Entry>| near.per_thread.get().unwrap().borrow().known.len();
        assert_eq!(
            size(&near),
            1,
            "the forgotten were swept before the new one was kept"
        );
        assert!(forgotten.iter().all(|known| Arc::strong_count(known) == 1));
    }
}

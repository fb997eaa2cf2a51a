//! The plans whose limits the gateway applies, read once and kept until plans may have changed:
//! a batch of cold accounts then reads no plan rows, and waits for one query fewer (issue 18).

use std::collections::HashMap;
use std::sync::Mutex;

use sqlx::PgPool;

use super::repo::{self, Plan};

/// Plans by id, and the active free plan, as last read.
#[derive(Default)]
pub struct Catalog {
    kept: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    /// Moves on every `forget`: a reading that began before it is not kept.
    generation: u64,
    /// The active free plan (`Some(None)`: there is none), once read.
    free: Option<Option<Plan>>,
    /// Plans by id; `None`: no such plan.
    by_id: HashMap<i64, Option<Plan>>,
}

impl Catalog {
    /// The plans of `ids` (`None` for an id with no plan) and the active free plan, reading
    /// only what is not kept.
    pub async fn plans(
        &self,
        pool: &PgPool,
        ids: &[i64],
    ) -> Result<(HashMap<i64, Option<Plan>>, Option<Plan>), sqlx::Error> {
        let (generation, free, mut found, missing) = {
            let kept = self.lock();
            let mut found = HashMap::new();
            let mut missing = Vec::new();
            for id in ids {
                match kept.by_id.get(id) {
                    Some(plan) => drop(found.insert(*id, plan.clone())),
                    None => missing.push(*id),
                }
            }
            (kept.generation, kept.free.clone(), found, missing)
        };
        if free.is_some() && missing.is_empty() {
            return Ok((found, free.flatten()));
        }
        let (free, read) = tokio::try_join!(
            async {
                match free {
                    Some(free) => Ok(free),
                    None => repo::active_free(pool).await,
                }
            },
            async {
                if missing.is_empty() {
                    return Ok(Vec::new());
                }
                repo::find_many(pool, &missing).await
            }
        )?;
        let mut read: HashMap<i64, Option<Plan>> =
            read.into_iter().map(|plan| (plan.id, Some(plan))).collect();
        for id in missing {
            read.entry(id).or_insert(None);
        }
        let mut kept = self.lock();
        // A change said while reading may not be in what was read: it is used, not kept.
        if kept.generation == generation {
            kept.free = Some(free.clone());
            kept.by_id.extend(read.clone());
        }
        found.extend(read);
        Ok((found, free))
    }

    /// Forgets every plan: the next reading reads them again.
    pub fn forget(&self) {
        let mut kept = self.lock();
        kept.generation += 1;
        kept.free = None;
        kept.by_id.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

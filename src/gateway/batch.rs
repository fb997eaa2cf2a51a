//! Look-ups that share one query when many arrive at once (issue 18): cold keys and cold
//! accounts, when many accounts make their first call together. A single task takes every
//! request queued while the last query ran, so a lone look-up waits for nobody and a crowd
//! waits for one query (a few, for an account) instead of one each.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

use tokio::sync::{mpsc, oneshot};

use crate::api::is_outage;

/// The most look-ups answered by one query.
const MAX_BATCH: usize = 1000;
/// How long a batch that found a crowd waits for the rest of it.
const LINGER: std::time::Duration = std::time::Duration::from_millis(1);

/// A failed batch, told to each of its requests (a database error cannot be cloned).
#[derive(Clone, Debug)]
pub(super) struct Failure {
    pub outage: bool,
    pub message: String,
}

impl Failure {
    pub fn of(error: &sqlx::Error) -> Failure {
        Failure {
            outage: is_outage(error),
            message: error.to_string(),
        }
    }
}

impl From<Failure> for sqlx::Error {
    fn from(failure: Failure) -> sqlx::Error {
        let error = std::io::Error::other(failure.message);
        if failure.outage {
            // Counted as an outage (503), like the error it stands for.
            sqlx::Error::Io(error)
        } else {
            sqlx::Error::Decode(Box::new(error))
        }
    }
}

type Reply<V> = oneshot::Sender<Result<Option<V>, Failure>>;

/// Look-ups of `V` by `K`, answered in batches by one loader.
pub(super) struct Batched<K, V> {
    queue: mpsc::UnboundedSender<(K, Reply<V>)>,
}

impl<K, V> Batched<K, V>
where
    K: Eq + Hash + Clone + Send + 'static,
    V: Clone + Send + 'static,
{
    /// Starts the task that runs `load` for each batch of distinct keys (it ends with the last
    /// sender). `load` answers with what it found; a key it did not find is `None`.
    pub fn start<F, Fut>(what: &'static str, load: F) -> Batched<K, V>
    where
        F: Fn(Vec<K>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<HashMap<K, V>, sqlx::Error>> + Send + 'static,
    {
        let (queue, requests) = mpsc::unbounded_channel();
        tokio::spawn(run(what, load, requests));
        Batched { queue }
    }

    /// `key`'s value, with whatever other look-ups are queued.
    pub async fn get(&self, key: K) -> Result<Option<V>, sqlx::Error> {
        let (reply, answer) = oneshot::channel();
        let stopped = || sqlx::Error::WorkerCrashed;
        self.queue.send((key, reply)).map_err(|_| stopped())?;
        Ok(answer.await.map_err(|_| stopped())??)
    }
}

/// Takes what is queued into `batch`, up to `MAX_BATCH`.
fn drain<T>(requests: &mut mpsc::UnboundedReceiver<T>, batch: &mut Vec<T>) {
    while batch.len() < MAX_BATCH {
        match requests.try_recv() {
            Ok(request) => batch.push(request),
            Err(_) => break,
        }
    }
}

async fn run<K, V, F, Fut>(
    what: &'static str,
    load: F,
    mut requests: mpsc::UnboundedReceiver<(K, Reply<V>)>,
) where
    K: Eq + Hash + Clone,
    V: Clone,
    F: Fn(Vec<K>) -> Fut,
    Fut: Future<Output = Result<HashMap<K, V>, sqlx::Error>>,
{
    while let Some(first) = requests.recv().await {
        let mut batch = vec![first];
        drain(&mut requests, &mut batch);
        // A crowd is forming (others queued while the last query ran): the rest of it arrives
        // within a moment, and then shares this query instead of paying for another.
        if batch.len() > 1 && batch.len() < MAX_BATCH {
            tokio::time::sleep(LINGER).await;
            drain(&mut requests, &mut batch);
        }
        let keys: HashSet<K> = batch.iter().map(|(key, _)| key.clone()).collect();
        match load(keys.into_iter().collect()).await {
            Ok(found) => {
                for (key, reply) in batch {
                    let _ = reply.send(Ok(found.get(&key).cloned()));
                }
            }
            Err(error) => {
                let failure = Failure::of(&error);
                tracing::warn!(what, requests = batch.len(), error = %error,
                    "a batch of look-ups failed");
                for (_, reply) in batch {
                    let _ = reply.send(Err(failure.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn look_ups_queued_together_share_one_load_and_each_gets_its_own_answer() {
        let loads = Arc::new(AtomicUsize::new(0));
        let counted = loads.clone();
        let doubled = Batched::start("test", move |keys: Vec<u32>| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move {
                Ok(keys
                    .into_iter()
                    .filter(|key| key % 10 != 0)
                    .map(|key| (key, key * 2))
                    .collect())
            }
        });
        // Queued before the task runs: one batch (the duplicate 7 included).
        let answers =
            futures_util::future::join_all([7, 3, 7, 10].map(|key| doubled.get(key))).await;
        let answers: Vec<Option<u32>> = answers.into_iter().map(Result::unwrap).collect();
        assert_eq!(answers, [Some(14), Some(6), Some(14), None]);
        assert_eq!(loads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failed_load_fails_every_look_up_of_its_batch_as_what_it_was() {
        let failing = Batched::start("test", |_: Vec<u32>| async {
            Err::<HashMap<u32, u32>, _>(sqlx::Error::PoolTimedOut)
        });
        let answers = futures_util::future::join_all([1, 2].map(|key| failing.get(key))).await;
        for answer in answers {
            assert!(is_outage(&answer.unwrap_err()), "an outage stays an outage");
        }
    }
}

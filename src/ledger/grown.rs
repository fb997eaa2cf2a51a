//! This process hears at once that an account's credits grew: the instance that wrote a top-up
//! serves the very next call on it, instead of the call racing the `credits:` notification
//! (which tells the other instances) and finding the gateway's last empty reservation believed.

use std::cell::RefCell;
use std::sync::Arc;

use uuid::Uuid;

/// Who in this process is told that an account's credits grew: the gateway, wired in
/// `startup.rs`. Told after the commit: told before it, a call could still reserve from the old
/// balance and believe that again. Telling too often costs one reservation more, never a credit.
#[derive(Clone)]
pub struct CreditsGrown(Arc<dyn Fn(Uuid) + Send + Sync>);

impl CreditsGrown {
    pub fn new(listener: impl Fn(Uuid) + Send + Sync + 'static) -> Self {
        Self(Arc::new(listener))
    }

    pub fn tell(&self, user_id: Uuid) {
        (self.0)(user_id)
    }
}

tokio::task_local! {
    static GROWN: RefCell<Vec<Uuid>>;
}

/// Runs `work` and answers, beside its outcome, every account that a movement inside it
/// (`super::apply`) added credits to: for work whose accounts are found deep inside it (a
/// Stripe event's), to tell `CreditsGrown` once the work is committed.
pub async fn noting_growth<T>(work: impl Future<Output = T>) -> (T, Vec<Uuid>) {
    GROWN
        .scope(RefCell::new(Vec::new()), async {
            let outcome = work.await;
            (outcome, GROWN.with(RefCell::take))
        })
        .await
}

/// Notes `user_id` for the `noting_growth` around the caller, if there is one.
pub(super) fn note(user_id: Uuid) {
    let _outside_any = GROWN.try_with(|grown| grown.borrow_mut().push(user_id));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn growth_is_noted_inside_noting_growth_only() {
        let (one, two) = (Uuid::new_v4(), Uuid::new_v4());
        // Outside any noting (a background job's grant): nothing to tell, nothing fails.
        note(one);
        let ((), grown) = noting_growth(async {
            note(one);
            tokio::task::yield_now().await;
            note(two);
        })
        .await;
        assert_eq!(grown, vec![one, two]);
        let ((), grown) = noting_growth(async {}).await;
        assert!(grown.is_empty());
    }
}

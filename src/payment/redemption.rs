//! Redemption codes: the statements on `redemption_batches` and `redemption_codes`, the codes'
//! form, and what redeeming one grants. A code is 16 characters of an alphabet without the
//! look-alikes (0/O, 1/I/L), shown in groups of four: about 79 random bits, so guessing is
//! hopeless within the per-user and per-client limits on wrong guesses.

use chrono::{DateTime, Utc};
use rand::Rng;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgExecutor};
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::PaymentError;
use super::grant::grant_manual_order;
use crate::api::PageRequest;
use crate::ledger::{self, Movement};
use crate::plans;

const ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";
const CODE_LENGTH: usize = 16;

/// A new random code, `XXXX-XXXX-XXXX-XXXX`.
pub fn new_code() -> String {
    let mut rng = rand::rng();
    let raw: Vec<u8> = (0..CODE_LENGTH)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())])
        .collect();
    raw.chunks(4)
        .map(|group| String::from_utf8_lossy(group).into_owned())
        .collect::<Vec<_>>()
        .join("-")
}

/// The digest a code is stored and looked up by: of its characters upper-cased, without the
/// dashes and spaces people type; None when it cannot be a code.
pub fn digest(code: &str) -> Option<Vec<u8>> {
    let normal: String = code
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let well_formed =
        normal.len() == CODE_LENGTH && normal.bytes().all(|byte| ALPHABET.contains(&byte));
    well_formed.then(|| Sha256::digest(normal.as_bytes()).to_vec())
}

/// A batch as admins see it.
#[derive(Serialize, ToSchema)]
pub struct BatchView {
    pub id: i64,
    /// Credits each code grants; null for a plan batch.
    pub credits: Option<i64>,
    /// The plan each code grants one period of; null for a credits batch.
    pub plan_id: Option<i64>,
    pub count: i32,
    pub used: i64,
    pub unused: i64,
    pub expires_at: Option<DateTime<Utc>>,
    pub note: String,
    pub disabled_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// What a new batch is worth.
pub struct NewBatch<'a> {
    pub credits: Option<i64>,
    pub plan_id: Option<i64>,
    pub expires_at: Option<DateTime<Utc>>,
    pub note: &'a str,
    pub created_by: Uuid,
    pub now: DateTime<Utc>,
}

/// Creates a batch of `codes` (their digests stored) and returns its id.
pub async fn insert_batch(
    connection: &mut PgConnection,
    batch: NewBatch<'_>,
    codes: &[String],
) -> Result<i64, sqlx::Error> {
    let count = i32::try_from(codes.len()).unwrap_or(i32::MAX);
    let id = sqlx::query_scalar!(
        r#"INSERT INTO redemption_batches (credits, plan_id, code_count, expires_at, note,
                                           created_by, created_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id"#,
        batch.credits,
        batch.plan_id,
        count,
        batch.expires_at,
        batch.note,
        batch.created_by,
        batch.now
    )
    .fetch_one(&mut *connection)
    .await?;
    let digests: Vec<Vec<u8>> = codes.iter().filter_map(|code| digest(code)).collect();
    sqlx::query!(
        r#"INSERT INTO redemption_codes (code_hash, batch_id)
           SELECT code_hash, $2 FROM unnest($1::bytea[]) AS code_hash"#,
        &digests,
        id
    )
    .execute(connection)
    .await?;
    Ok(id)
}

/// Batches newest first with their used and unused counts.
pub async fn list_batches(
    executor: impl PgExecutor<'_>,
    page: PageRequest,
    only: Option<i64>,
) -> Result<Vec<BatchView>, sqlx::Error> {
    sqlx::query_as!(
        BatchView,
        r#"SELECT b.id, b.credits, b.plan_id, b.code_count AS count,
                  count(c.redeemed_at) AS "used!",
                  b.code_count - count(c.redeemed_at) AS "unused!",
                  b.expires_at, b.note, b.disabled_at, b.created_at
           FROM redemption_batches b LEFT JOIN redemption_codes c ON c.batch_id = b.id
           WHERE $3::bigint IS NULL OR b.id = $3
           GROUP BY b.id ORDER BY b.id DESC LIMIT $1 OFFSET $2"#,
        page.limit(),
        page.offset(),
        only
    )
    .fetch_all(executor)
    .await
}

pub async fn count_batches(executor: impl PgExecutor<'_>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT count(*) AS "count!" FROM redemption_batches"#)
        .fetch_one(executor)
        .await
}

/// Disables a batch (its unused codes stop working); false when there is no such batch.
pub async fn disable_batch(
    executor: impl PgExecutor<'_>,
    id: i64,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query!(
        r#"UPDATE redemption_batches SET disabled_at = COALESCE(disabled_at, $2) WHERE id = $1"#,
        id,
        now
    )
    .execute(executor)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// What redeeming a code gave.
pub struct Redeemed {
    pub credits_added: i64,
    pub plan_id: Option<i64>,
}

/// Redeems the code with `code_hash` for `user_id`: the one statement that claims it also
/// checks its batch is enabled and unexpired, so two concurrent redemptions cannot both win.
/// `Err(RedemptionInvalid)` names why it did not.
pub async fn redeem(
    connection: &mut PgConnection,
    code_hash: &[u8],
    user_id: Uuid,
    now: DateTime<Utc>,
) -> Result<Redeemed, PaymentError> {
    let claimed = sqlx::query!(
        r#"UPDATE redemption_codes c SET redeemed_by = $2, redeemed_at = $3
           FROM redemption_batches b
           WHERE c.code_hash = $1 AND b.id = c.batch_id AND c.redeemed_at IS NULL
             AND b.disabled_at IS NULL AND (b.expires_at IS NULL OR b.expires_at > $3)
           RETURNING b.id, b.credits, b.plan_id"#,
        code_hash,
        user_id,
        now
    )
    .fetch_optional(&mut *connection)
    .await?;
    let Some(claimed) = claimed else {
        return Err(PaymentError::RedemptionInvalid(
            why_not(connection, code_hash, now).await?,
        ));
    };
    let key = format!("redeem:{}", hex::encode(code_hash));
    match (claimed.credits, claimed.plan_id) {
        (Some(credits), _) => {
            let reference = format!("redemption batch {}", claimed.id);
            let movement = Movement {
                user_id,
                amount: credits,
                reason: "redemption",
                reference: Some(&reference),
                key: &key,
            };
            ledger::apply(connection, movement, now).await?;
            Ok(Redeemed {
                credits_added: credits,
                plan_id: None,
            })
        }
        (None, Some(plan_id)) => {
            let plan = plans::find(&mut *connection, plan_id)
                .await?
                .ok_or(PaymentError::InvalidPlan)?;
            grant_manual_order(connection, user_id, &plan, now).await?;
            Ok(Redeemed {
                credits_added: plan.credits,
                plan_id: Some(plan_id),
            })
        }
        (None, None) => Err(PaymentError::Internal(anyhow::anyhow!(
            "a redemption batch worth nothing"
        ))),
    }
}

/// Why a code could not be claimed, in words for the answer's detail.
async fn why_not(
    connection: &mut PgConnection,
    code_hash: &[u8],
    now: DateTime<Utc>,
) -> Result<&'static str, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT c.redeemed_at, b.disabled_at, b.expires_at
           FROM redemption_codes c JOIN redemption_batches b ON b.id = c.batch_id
           WHERE c.code_hash = $1"#,
        code_hash
    )
    .fetch_optional(connection)
    .await?;
    Ok(match row {
        None => "No such code.",
        Some(row) if row.redeemed_at.is_some() => "This code was already redeemed.",
        Some(row) if row.disabled_at.is_some() => "This code was withdrawn.",
        Some(row) if row.expires_at.is_some_and(|at| at <= now) => "This code has expired.",
        Some(_) => "This code cannot be redeemed now.",
    })
}

//! The operator's commands beside serving: apply the migrations, grant or revoke the admin role
//! of an existing account (out of band, so `ADMIN_EMAILS` need not name an address nobody has
//! registered yet).

use anyhow::Context;

use crate::auth::Email;
use crate::auth::users::{self, Role};
use crate::config::Settings;
use crate::db::Database;

/// Connects (starting the private cluster when `DATABASE_URL` is unset), applies the migrations
/// and stops again.
pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let database = Database::connect(settings).await?;
    println!("the migrations are applied");
    database.shut_down().await;
    Ok(())
}

/// Gives the account of `email` the role `role`; an address with no account is an error.
pub async fn set_role(settings: &Settings, email: &str, role: Role) -> anyhow::Result<()> {
    let email =
        Email::parse(email).map_err(|_| anyhow::anyhow!("{email:?} is not an email address"))?;
    let database = Database::connect(settings).await?;
    let changed = users::set_role(&database.pool, email.as_str(), role)
        .await
        .context("the role could not be changed");
    database.shut_down().await;
    match changed? {
        true => {
            println!("{} is now {}", email.as_str(), role.as_str());
            Ok(())
        }
        false => anyhow::bail!("no account has the address {}", email.as_str()),
    }
}

use clap::{Parser, Subcommand};
use meterapi::auth::users::Role;
use meterapi::{Application, Settings, cli, telemetry};

// mimalloc: the gateway allocates small, short-lived buffers per call, where glibc's malloc
// showed up at several per cent of the profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The account-and-billing backend of a paid data API. Configured by environment variables (or
/// a `.env` file); see `.env.example`.
#[derive(Parser)]
#[command(name = "meterapi", version)]
struct Command {
    #[command(subcommand)]
    action: Option<Action>,
}

#[derive(Subcommand)]
enum Action {
    /// Serve the API (what `meterapi` alone does).
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
    /// Change an existing account's role.
    Admin {
        #[command(subcommand)]
        change: RoleChange,
    },
}

#[derive(Subcommand)]
enum RoleChange {
    /// Give the account with this address the admin role.
    Grant { email: String },
    /// Take the admin role from the account with this address.
    Revoke { email: String },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // An unknown argument is an error (exit 2), `--help` and `--version` answer: never a start.
    let command = Command::parse();
    // `.env` fills in what the environment leaves unset; its absence is fine.
    let _ = dotenvy::dotenv();
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("{error}");
            std::process::exit(2);
        }
    };
    telemetry::init(settings.app_env);
    match command.action.unwrap_or(Action::Serve) {
        Action::Serve => {
            let application = Application::build(settings).await?;
            tracing::info!(port = application.port(), "serving");
            application.run_until_stopped().await
        }
        Action::Migrate => cli::migrate(&settings).await,
        Action::Admin { change } => match change {
            RoleChange::Grant { email } => cli::set_role(&settings, &email, Role::Admin).await,
            RoleChange::Revoke { email } => cli::set_role(&settings, &email, Role::User).await,
        },
    }
}

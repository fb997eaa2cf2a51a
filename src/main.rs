use meterapi::{Application, Settings, telemetry};

// mimalloc: the gateway allocates small, short-lived buffers per call, where glibc's malloc
// showed up at several per cent of the profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
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
    let application = Application::build(settings).await?;
    tracing::info!(port = application.port(), "serving");
    application.run_until_stopped().await
}

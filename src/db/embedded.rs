//! The private PostgreSQL cluster used when `DATABASE_URL` is unset: created with `initdb`,
//! started with `pg_ctl` from the machine's PostgreSQL binaries, listening only on a Unix socket,
//! and reused by the next run. PostgreSQL refuses to run as root, so under root the cluster
//! belongs to the `postgres` system user (or `nobody`), as a packaged PostgreSQL does; when that
//! user cannot reach the data directory (a checkout under root's private home), the cluster
//! lives under `/var/lib/meterapi` instead, and no permission of the user's directories changes.

use std::fs::{self, File};
use std::os::unix::fs::{DirBuilderExt, chown};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, anyhow, bail};
use nix::fcntl::{Flock, FlockArg};
use nix::unistd::{Gid, Uid, User};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

/// Unix socket paths are limited to about 107 bytes; past this the socket goes under /tmp.
const MAX_SOCKET_DIR_LEN: usize = 80;
const PORT: u16 = 5432;
const SUPERUSER: &str = "postgres";

#[derive(Clone, Debug)]
pub struct EmbeddedCluster {
    bin_dir: PathBuf,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    /// The unprivileged owner when this process runs as root.
    owner: Option<(Uid, Gid)>,
}

impl EmbeddedCluster {
    /// Describes the cluster in `data_dir` (nothing is started yet), or, under root, in a
    /// place of its own when the unprivileged owner cannot reach `data_dir` (see
    /// [`EmbeddedCluster::data_dir`]). Fails when no PostgreSQL binaries can be found.
    pub fn new(data_dir: &Path) -> anyhow::Result<EmbeddedCluster> {
        let bin_dir = find_postgres_binaries()?;
        let data_dir = std::path::absolute(data_dir)
            .with_context(|| format!("cannot resolve {}", data_dir.display()))?;
        let owner = if Uid::effective().is_root() {
            Some(unprivileged_owner()?)
        } else {
            None
        };
        let data_dir = match owner {
            Some((uid, gid)) => reachable_location(data_dir, uid, gid)?,
            None => data_dir,
        };
        let socket_dir = if data_dir.as_os_str().len() <= MAX_SOCKET_DIR_LEN {
            data_dir.clone()
        } else {
            std::env::temp_dir().join(format!("meterapi-pg-{:016x}", path_digest(&data_dir)))
        };
        Ok(EmbeddedCluster {
            bin_dir,
            data_dir,
            socket_dir,
            owner,
        })
    }

    /// Where the cluster's files are: the directory asked for, or the one it was moved to.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Creates the cluster when it does not exist and starts it when it is not running.
    /// Returns whether this call started it. Safe to call from several processes at once.
    pub async fn start(&self) -> anyhow::Result<bool> {
        let cluster = self.clone();
        tokio::task::spawn_blocking(move || cluster.start_blocking())
            .await
            .context("the cluster start task failed")?
    }

    /// Stops the cluster (fast shutdown: open sessions are ended).
    pub async fn stop(&self) -> anyhow::Result<()> {
        let cluster = self.clone();
        tokio::task::spawn_blocking(move || cluster.stop_blocking())
            .await
            .context("the cluster stop task failed")?
    }

    /// `stop` for places that cannot await (a guard's `Drop`).
    pub fn stop_blocking(&self) -> anyhow::Result<()> {
        let output = self.pg_ctl(&["stop", "-m", "fast", "-w"])?;
        check(&output, "pg_ctl stop")
    }

    /// Connection options for `database` over the cluster's socket.
    pub fn connect_options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new()
            .socket(&self.socket_dir)
            .port(PORT)
            .username(SUPERUSER)
            .database(database)
    }

    /// A `DATABASE_URL` for `database` over the cluster's socket.
    pub fn url(&self, database: &str) -> String {
        let socket: String =
            url::form_urlencoded::byte_serialize(self.socket_dir.to_string_lossy().as_bytes())
                .collect();
        format!("postgres://{SUPERUSER}@localhost:{PORT}/{database}?host={socket}")
    }

    /// Creates `database` unless it exists.
    pub async fn ensure_database(&self, database: &str) -> anyhow::Result<()> {
        let mut connection = PgConnection::connect_with(&self.connect_options("postgres"))
            .await
            .context("cannot connect to the private PostgreSQL cluster")?;
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(database)
                .fetch_one(&mut connection)
                .await?;
        if !exists {
            // An identifier cannot be a bind parameter; it is quoted with its quotes doubled.
            let statement = format!("CREATE DATABASE \"{}\"", database.replace('"', "\"\""));
            let statement = sqlx::AssertSqlSafe(statement);
            if let Err(error) = sqlx::raw_sql(statement).execute(&mut connection).await {
                // Another process may have created it in the meantime.
                let duplicate = error
                    .as_database_error()
                    .and_then(|e| e.code())
                    .is_some_and(|code| code == "42P04");
                if !duplicate {
                    return Err(error).context("cannot create the application database");
                }
            }
        }
        connection.close().await?;
        Ok(())
    }

    fn start_blocking(&self) -> anyhow::Result<bool> {
        let parent = self
            .data_dir
            .parent()
            .ok_or_else(|| anyhow!("the data dir has no parent"))?;
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
        let lock_path = parent.join(".postgres.lock");
        let lock_file = File::create(&lock_path)
            .with_context(|| format!("cannot create {}", lock_path.display()))?;
        let _lock = Flock::lock(lock_file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| anyhow!("cannot lock {}: {errno}", lock_path.display()))?;

        if !self.data_dir.join("PG_VERSION").exists() {
            self.init()?;
        }
        self.prepare_socket_dir()?;
        if self.pg_ctl(&["status"])?.status.success() {
            return Ok(false);
        }
        let log_file = self.data_dir.join("server.log");
        let server_options = format!(
            "-c listen_addresses='' -c unix_socket_directories='{}' -c port={PORT}",
            self.socket_dir.display()
        );
        let output = self.pg_ctl(&[
            "start",
            "-w",
            "-t",
            "60",
            "-l",
            &log_file.to_string_lossy(),
            "-o",
            &server_options,
        ])?;
        check(&output, "pg_ctl start").with_context(|| {
            format!(
                "the private PostgreSQL did not start; see {}",
                log_file.display()
            )
        })?;
        tracing::info!(data_dir = %self.data_dir.display(), "started the private PostgreSQL cluster");
        Ok(true)
    }

    /// `initdb` into a fresh directory beside the target, renamed into place only when it
    /// succeeded, so an interrupted run never leaves a half-made cluster behind.
    fn init(&self) -> anyhow::Result<()> {
        let staging = self.data_dir.with_extension("initdb");
        if staging.exists() {
            fs::remove_dir_all(&staging)
                .with_context(|| format!("cannot remove {}", staging.display()))?;
        }
        self.make_owned_dir(&staging)?;
        let output = self
            .command("initdb")
            .arg("-D")
            .arg(&staging)
            .args([
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            ])
            .output()
            .context("cannot run initdb")?;
        check(&output, "initdb")?;
        if self.data_dir.exists() {
            // An empty or broken leftover without PG_VERSION.
            fs::remove_dir_all(&self.data_dir)
                .with_context(|| format!("cannot remove {}", self.data_dir.display()))?;
        }
        fs::rename(&staging, &self.data_dir)
            .with_context(|| format!("cannot move the new cluster to {}", self.data_dir.display()))
    }

    fn prepare_socket_dir(&self) -> anyhow::Result<()> {
        if self.socket_dir != self.data_dir && !self.socket_dir.exists() {
            self.make_owned_dir(&self.socket_dir)?;
        }
        Ok(())
    }

    fn make_owned_dir(&self, dir: &Path) -> anyhow::Result<()> {
        fs::DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        if let Some((uid, gid)) = self.owner {
            chown(dir, Some(uid.as_raw()), Some(gid.as_raw()))
                .with_context(|| format!("cannot hand {} to the postgres user", dir.display()))?;
        }
        Ok(())
    }

    fn pg_ctl(&self, args: &[&str]) -> anyhow::Result<Output> {
        self.command("pg_ctl")
            .arg("-D")
            .arg(&self.data_dir)
            .args(args)
            .output()
            .context("cannot run pg_ctl")
    }

    /// A PostgreSQL tool, run as the unprivileged owner when this process is root.
    fn command(&self, tool: &str) -> Command {
        let mut command = Command::new(self.bin_dir.join(tool));
        command
            .env_remove("PGDATA")
            .stdin(std::process::Stdio::null());
        if let Some((uid, gid)) = self.owner {
            use std::os::unix::process::CommandExt;
            command.uid(uid.as_raw()).gid(gid.as_raw()).current_dir("/");
        }
        command
    }
}

fn check(output: &Output, what: &str) -> anyhow::Result<()> {
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    bail!(
        "{what} failed ({}): {}{}",
        output.status,
        stderr.trim(),
        stdout.trim()
    )
}

/// `initdb` and `pg_ctl` from PATH, else from the newest `/usr/lib/postgresql/<version>/bin`.
fn find_postgres_binaries() -> anyhow::Result<PathBuf> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(path) = std::env::var_os("PATH")
        && let Some(dir) = std::env::split_paths(&path).find(|dir| has_tools(dir))
    {
        return Ok(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| has_tools(dir))
        .collect();
    versions.sort();
    versions.pop().map(|(_, dir)| dir).ok_or_else(|| {
        anyhow!(
            "no PostgreSQL binaries (initdb, pg_ctl) found on PATH or under \
             /usr/lib/postgresql/<version>/bin: install PostgreSQL or set DATABASE_URL"
        )
    })
}

/// A stable short name for a path (FNV-1a), for directories derived from it.
fn path_digest(path: &Path) -> u64 {
    path.to_string_lossy()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}

/// Where a cluster asked for at `data_dir` can live when its files belong to `uid`: there, if
/// `uid` can pass through every directory above it; else under `/var/lib/meterapi` (or the
/// temporary directory without one), in a directory named after `data_dir` so the next run
/// finds it again. Root's own directories keep their permissions.
fn reachable_location(data_dir: PathBuf, uid: Uid, gid: Gid) -> anyhow::Result<PathBuf> {
    let parent = data_dir
        .parent()
        .ok_or_else(|| anyhow!("the data dir has no parent"))?;
    fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    if can_pass_through(parent, uid, gid) {
        return Ok(data_dir);
    }
    let name = format!("{:016x}", path_digest(&data_dir));
    let home = [
        PathBuf::from("/var/lib/meterapi"),
        std::env::temp_dir().join("meterapi"),
    ]
    .into_iter()
    .find(|base| {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(base)
            .is_ok()
    })
    .ok_or_else(|| anyhow!("cannot create /var/lib/meterapi or a temporary directory"))?;
    let moved = home.join(name).join("postgres");
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(moved.parent().unwrap_or(&home))
        .with_context(|| format!("cannot create {}", moved.display()))?;
    tracing::warn!(
        asked = %data_dir.display(),
        location = %moved.display(),
        "the postgres user cannot reach the data directory; the private cluster lives elsewhere"
    );
    Ok(moved)
}

/// Whether `uid` (with primary group `gid`) may search every directory from `/` to `dir`, by
/// the permission bits (a supplementary group or an ACL that would allow it is not counted, so
/// at worst the cluster moves when it need not).
fn can_pass_through(dir: &Path, uid: Uid, gid: Gid) -> bool {
    use std::os::unix::fs::MetadataExt;
    dir.ancestors().all(|ancestor| {
        let Ok(meta) = fs::metadata(ancestor) else {
            return false;
        };
        let bit = if meta.uid() == uid.as_raw() {
            0o100
        } else if meta.gid() == gid.as_raw() {
            0o010
        } else {
            0o001
        };
        meta.mode() & bit != 0
    })
}

fn unprivileged_owner() -> anyhow::Result<(Uid, Gid)> {
    for name in ["postgres", "nobody"] {
        if let Some(user) = User::from_name(name).context("cannot read the user database")? {
            return Ok((user.uid, user.gid));
        }
    }
    bail!("running as root, but neither a `postgres` nor a `nobody` user exists to own the cluster")
}

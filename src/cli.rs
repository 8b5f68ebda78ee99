//! Command line: `subledger serve`, `subledger migrate`, `subledger bench`, `subledger bench-redis-lock`. Flags fall back to environment variables.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::store::{PgStore, SqliteStore, Store};
use crate::telemetry::{self, LogFormat};

/// The SQLite file's name inside --data-dir.
const SQLITE_FILE_NAME: &str = "subledger.db";

#[derive(Parser)]
#[command(
    name = "subledger",
    version,
    about = "A gRPC subscription ledger for capped offerings"
)]
struct Cli {
    /// Log line format on stderr (filter with RUST_LOG, default "info").
    #[arg(
        long,
        env = "SUBLEDGER_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the gRPC API (applies pending migrations first).
    Serve(ServeArgs),
    /// Apply pending migrations and exit.
    Migrate(DatabaseArgs),
    /// Load a running server (or several replicas) and report throughput and latency.
    Bench(crate::bench::BenchArgs),
    /// Strategy (e) of bench/strategies.sh: Subscribes under a Redis lock, straight to PostgreSQL.
    BenchRedisLock(crate::bench::redis_lock::RedisLockArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "SUBLEDGER_LISTEN", default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    #[command(flatten)]
    database: DatabaseArgs,
}

#[derive(Args)]
struct DatabaseArgs {
    /// postgres://... or sqlite://PATH; unset: the SQLite file subledger.db in --data-dir.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// Folder of the embedded SQLite database (created if missing).
    #[arg(long, env = "SUBLEDGER_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// PostgreSQL connections per process.
    #[arg(long, env = "SUBLEDGER_MAX_CONNECTIONS", default_value_t = 16)]
    max_connections: u32,
}

enum Database {
    Postgres(String),
    Sqlite(PathBuf),
}

impl DatabaseArgs {
    fn database(&self) -> anyhow::Result<Database> {
        let Some(url) = &self.database_url else {
            return Ok(Database::Sqlite(self.data_dir.join(SQLITE_FILE_NAME)));
        };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Database::Postgres(url.clone()));
        }
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            let path = path.split('?').next().unwrap_or_default();
            if path.is_empty() {
                bail!("database URL {url:?} names no file (expected sqlite://PATH)");
            }
            return Ok(Database::Sqlite(PathBuf::from(path)));
        }
        bail!("database URL {url:?} is neither postgres://... nor sqlite://PATH")
    }
}

/// Entry point of the binary: runs the command, prints a failure as one line, sets the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("subledger: error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("subledger: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => serve(args).await,
        Command::Bench(args) => crate::bench::run(args).await,
        Command::BenchRedisLock(args) => crate::bench::redis_lock::run(args).await,
        Command::Migrate(args) => match args.database()? {
            Database::Postgres(url) => {
                let store = open_postgres(&url, args.max_connections).await?;
                tracing::info!(backend = "postgres", database = %describe_pg(&url), "migrations applied");
                drop(store);
                Ok(())
            }
            Database::Sqlite(path) => {
                open_sqlite(&path).await?;
                tracing::info!(backend = "sqlite", path = %path.display(), "migrations applied");
                Ok(())
            }
        },
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let database = args.database.database()?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let address = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    match database {
        Database::Postgres(url) => {
            let store = open_postgres(&url, args.database.max_connections).await?;
            tracing::info!(%address, backend = "postgres", database = %describe_pg(&url), "subledger serving");
            serve_until_shutdown(store, listener, shutdown).await
        }
        Database::Sqlite(path) => {
            let store = open_sqlite(&path).await?;
            tracing::info!(%address, backend = "sqlite", path = %path.display(), "subledger serving");
            serve_until_shutdown(store, listener, shutdown).await
        }
    }
}

async fn serve_until_shutdown<S: Store>(
    store: S,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    crate::server::serve(store, listener, shutdown).await?;
    tracing::info!("subledger stopped");
    Ok(())
}

/// Connects and applies pending migrations.
pub async fn open_postgres(url: &str, max_connections: u32) -> anyhow::Result<PgStore> {
    let store = PgStore::connect(url, max_connections)
        .await
        .with_context(|| format!("cannot connect to PostgreSQL at {}", describe_pg(url)))?;
    store
        .migrate()
        .await
        .context("cannot apply PostgreSQL migrations")?;
    Ok(store)
}

/// Opens (creating it and its folder if missing) and applies pending migrations.
pub async fn open_sqlite(path: &Path) -> anyhow::Result<SqliteStore> {
    if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(folder)
            .with_context(|| format!("cannot create data folder {}", folder.display()))?;
    }
    let store = SqliteStore::open(path)
        .await
        .with_context(|| format!("cannot open SQLite database {}", path.display()))?;
    store
        .migrate()
        .await
        .with_context(|| format!("cannot apply SQLite migrations to {}", path.display()))?;
    Ok(store)
}

/// host:port/database of a PostgreSQL URL, without credentials, for logs and errors.
fn describe_pg(url: &str) -> String {
    match url.parse::<sqlx::postgres::PgConnectOptions>() {
        Ok(options) => format!(
            "{}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or("")
        ),
        Err(_) => "an unparsable URL".to_owned(),
    }
}

/// SIGTERM or SIGINT starts a graceful shutdown.
async fn cancel_on_signal(shutdown: CancellationToken) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    tracing::info!("shutdown requested: finishing calls in flight");
    shutdown.cancel();
}

//! Command line: `subledger serve`, `subledger migrate`, `subledger verify`, `subledger export`,
//! `subledger bench` (the subledger-bench crate), `subledger token`. Flags fall back to
//! environment variables.
//!
//! Exit status: 0 done; 1 `verify` checked and found a problem; 2 the command could not do what
//! it was asked (as for a usage error).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::ServiceLimits;
use crate::api::auth::{Authenticator, Role, check_principal_name, new_token};
use crate::publish::NatsConfig;
use crate::server::{ConnectionLimits, ServerConfig};
use crate::store::{PgSettings, PgStore, PgTargets, SqliteStore, StartAt, Store};
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
    /// Serve the gRPC API (applies pending migrations first, unless --no-migrate).
    Serve(Box<ServeArgs>),
    /// Apply pending migrations and exit (as the owner role; --grant-to then gives the runtime
    /// role what serving needs).
    Migrate(MigrateArgs),
    /// Verify offerings offline, straight from the database (every one, or --offering), or an
    /// export file with no database; exit 0 only if everything holds.
    Verify(VerifyArgs),
    /// Write one offering's head, history (with hashes) and positions as JSON lines, for
    /// `subledger verify --export` on another machine.
    Export(ExportArgs),
    /// Load a running server (or several replicas) and report throughput and latency.
    Bench(subledger_bench::BenchArgs),
    /// Bearer tokens for the auth file.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Ed25519 keys that sign digests (serve --signing-key) and check them
    /// (--trusted-public-key).
    #[command(subcommand)]
    Key(KeyCommand),
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Write a new random private key to FILE (PKCS#8 PEM, mode 0600; an existing file is
    /// never replaced), and print its key id.
    New {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Print the public key of the private key in FILE, to hand out: SPKI PEM ("BEGIN PUBLIC
    /// KEY"), what --trusted-public-key reads. Its key id goes to stderr.
    Public {
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a fresh random 256-bit token, and the auth-file block that holds its SHA-256.
    New {
        /// The principal's name, recorded as the actor of what it does.
        #[arg(long)]
        name: String,
        /// Its roles: reader, subscriber, operator (repeat or separate with commas).
        #[arg(long = "role", value_delimiter = ',', required = true, value_parser = parse_role)]
        roles: Vec<Role>,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// HOST:PORT to listen on; a host name (localhost:50051) is served on every address it
    /// resolves to. Without --auth-file only loopback addresses are allowed, unless
    /// --allow-anonymous says otherwise.
    #[arg(long, env = "SUBLEDGER_LISTEN", default_value = "127.0.0.1:50051")]
    listen: String,
    /// Serve TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "SUBLEDGER_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "SUBLEDGER_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Mutual TLS: clients must present a certificate signed by this CA (PEM).
    #[arg(long, env = "SUBLEDGER_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Principals and their roles (TOML); re-read on SIGHUP. Without it every caller is
    /// "anonymous" and may call everything.
    #[arg(long, env = "SUBLEDGER_AUTH_FILE")]
    auth_file: Option<PathBuf>,
    /// Serve without authentication on a non-loopback address (logged as a warning).
    #[arg(long, env = "SUBLEDGER_ALLOW_ANONYMOUS")]
    allow_anonymous: bool,
    /// Accept an auth file that names no principal (every call is then refused), at start-up
    /// and on SIGHUP; without it such a file is refused and the principals in force stay.
    #[arg(long, env = "SUBLEDGER_ALLOW_EMPTY_AUTH", requires = "auth_file")]
    allow_empty_auth: bool,
    /// Client connections open at once; past it new ones are closed at once.
    #[arg(
        long,
        env = "SUBLEDGER_MAX_CLIENT_CONNECTIONS",
        default_value_t = 10_000
    )]
    max_client_connections: usize,
    /// Client connections open at once from one IP address (all clients behind one proxy or
    /// NAT share one); past it that peer's new ones are closed at once.
    #[arg(
        long,
        env = "SUBLEDGER_MAX_CLIENT_CONNECTIONS_PER_PEER",
        default_value_t = 1_000
    )]
    max_client_connections_per_peer: usize,
    /// A new connection must finish its handshake (TLS, then the HTTP/2 preface) within this,
    /// however slowly its bytes arrive.
    #[arg(long, env = "SUBLEDGER_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = subledger_client::duration::parse)]
    handshake_timeout: Duration,
    /// A connection that sends nothing for this long is closed (10s, 500ms, 2m; bare = seconds).
    /// Live clients answer the PINGs the server sends after a third of it.
    #[arg(long, env = "SUBLEDGER_IDLE_TIMEOUT", default_value = "60s", value_parser = subledger_client::duration::parse)]
    idle_timeout: Duration,
    /// WatchHistory streams open at once on this process.
    #[arg(long, env = "SUBLEDGER_MAX_WATCH_STREAMS", default_value_t = ServiceLimits::default().max_watch_streams)]
    max_watch_streams: usize,
    /// WatchHistory streams one principal may hold open on this process; anonymous callers
    /// are counted per peer address, so those behind one proxy share one quota.
    #[arg(long, env = "SUBLEDGER_MAX_WATCH_STREAMS_PER_PRINCIPAL", default_value_t = ServiceLimits::default().max_watch_streams_per_principal)]
    max_watch_streams_per_principal: usize,
    /// Investors one offering may have positions for; a new investor past it is refused
    /// (RESOURCE_EXHAUSTED INVESTOR_LIMIT_REACHED). Allocation handles them all at once.
    #[arg(long, env = "SUBLEDGER_MAX_INVESTORS_PER_OFFERING", default_value_t = ServiceLimits::default().max_investors_per_offering, value_parser = clap::value_parser!(i64).range(1..))]
    max_investors_per_offering: i64,
    /// Serve Prometheus metrics at http://ADDR/metrics (off when unset).
    #[arg(long, env = "SUBLEDGER_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Sign every digest GetDigest returns with this Ed25519 private key (`subledger key new`);
    /// unset: digests are unsigned. Its public key is trusted by VerifyOffering.
    #[arg(long, env = "SUBLEDGER_SIGNING_KEY", value_name = "FILE")]
    signing_key: Option<PathBuf>,
    /// A public key (`subledger key public`) whose signed digests VerifyOffering believes, as
    /// well as --signing-key's; repeat to trust several (a key rotation).
    #[arg(long = "trusted-public-key", value_name = "FILE")]
    trusted_public_keys: Vec<PathBuf>,
    /// Take every option not given as a flag or in the environment from this TOML file (keys:
    /// the long flag names; deploy/subledger.toml is an example).
    #[arg(long, env = "SUBLEDGER_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Do not migrate: check that the database is migrated exactly as this binary would, and
    /// refuse to start otherwise. For a runtime role that may not migrate (`subledger migrate
    /// --grant-to`, run by the owner, does it).
    #[arg(long, env = "SUBLEDGER_NO_MIGRATE")]
    no_migrate: bool,
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    database: DatabaseArgs,
}

#[derive(Args)]
struct MigrateArgs {
    /// PostgreSQL: then give this existing role exactly what `serve` needs (docs/operations.md,
    /// "Roles"), and nothing more; serve connects as it with --no-migrate.
    #[arg(long, env = "SUBLEDGER_GRANT_TO", value_name = "ROLE")]
    grant_to: Option<String>,
    #[command(flatten)]
    database: DatabaseArgs,
}

/// Publication of the history to NATS JetStream (README "Events", docs/operations.md).
#[derive(Args)]
struct NatsArgs {
    /// Publish every history entry to NATS JetStream at this URL (nats://HOST:PORT, tls://...
    /// to require TLS; several separated by commas). Off when unset.
    #[arg(long, env = "SUBLEDGER_NATS_URL", hide_env_values = true)]
    nats_url: Option<String>,
    /// NATS credentials file (.creds: a user JWT and its NKey seed).
    #[arg(
        long,
        env = "SUBLEDGER_NATS_CREDS",
        value_name = "FILE",
        requires = "nats_url"
    )]
    nats_creds: Option<PathBuf>,
    /// Read a NATS token from this file (its first line); or set SUBLEDGER_NATS_TOKEN. Never a
    /// flag value, which `ps` would show.
    #[arg(
        long,
        env = "SUBLEDGER_NATS_TOKEN_FILE",
        value_name = "FILE",
        requires = "nats_url",
        conflicts_with = "nats_creds"
    )]
    nats_token_file: Option<PathBuf>,
    /// The JetStream stream to publish to, created if missing (subjects subledger.entries.>
    /// and subledger.digests.>).
    #[arg(long, env = "SUBLEDGER_NATS_STREAM", default_value = crate::publish::config::STREAM_DEFAULT)]
    nats_stream: String,
    /// The duplicate window of a stream created by subledger: a repeated Nats-Msg-Id within it
    /// is dropped by JetStream. At least 1m.
    #[arg(long, env = "SUBLEDGER_NATS_DUPLICATE_WINDOW", default_value = crate::publish::config::DUPLICATE_WINDOW_DEFAULT, value_parser = subledger_client::duration::parse)]
    nats_duplicate_window: Duration,
    /// When publication is first enabled on a database: publish every existing entry (all,
    /// oldest first per offering) or only entries recorded from then on (now).
    #[arg(
        long,
        env = "SUBLEDGER_NATS_PUBLISH_FROM",
        value_enum,
        default_value = "all"
    )]
    nats_publish_from: PublishFrom,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum PublishFrom {
    All,
    Now,
}

impl NatsArgs {
    /// None when --nats-url is not given.
    fn config(&self) -> anyhow::Result<Option<NatsConfig>> {
        use crate::publish::config::{DUPLICATE_WINDOW_MIN, TOKEN_ENV};
        let Some(url) = &self.nats_url else {
            return Ok(None);
        };
        if self.nats_duplicate_window < DUPLICATE_WINDOW_MIN {
            bail!(
                "--nats-duplicate-window {:?} is below {DUPLICATE_WINDOW_MIN:?}: it must cover a publication lease takeover many times over",
                self.nats_duplicate_window
            );
        }
        let token = match &self.nats_token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read --nats-token-file {}", path.display()))?;
                match text.lines().map(str::trim).find(|line| !line.is_empty()) {
                    Some(token) => Some(token.to_owned()),
                    None => bail!("--nats-token-file {} holds no token", path.display()),
                }
            }
            None => std::env::var(TOKEN_ENV)
                .ok()
                .filter(|token| !token.is_empty()),
        };
        Ok(Some(NatsConfig {
            url: url.clone(),
            creds: self.nats_creds.clone(),
            token,
            stream: self.nats_stream.clone(),
            duplicate_window: self.nats_duplicate_window,
            start: match self.nats_publish_from {
                PublishFrom::All => StartAt::Beginning,
                PublishFrom::Now => StartAt::Heads,
            },
        }))
    }
}

#[derive(Args)]
struct VerifyArgs {
    /// Verify only this offering (repeat for more); default: every offering.
    #[arg(long = "offering", value_name = "ID")]
    offerings: Vec<String>,
    /// Earlier digests to hold the chains against (GetDigest replies as grpcurl prints them, or
    /// JSON lines); repeat for more files.
    #[arg(long = "digests", alias = "digest", value_name = "FILE")]
    digests: Vec<PathBuf>,
    /// Verify this file, written by `subledger export`, instead of a database.
    #[arg(long, value_name = "FILE", conflicts_with = "offerings")]
    export: Option<PathBuf>,
    /// Check GetInclusionProof replies (as grpcurl prints them) against --digests, instead of a
    /// database; repeat for more files.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["offerings", "export"])]
    inclusion: Vec<PathBuf>,
    /// Check GetConsistencyProof replies (as grpcurl prints them) against --digests, instead
    /// of a database; repeat for more files.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["offerings", "export"])]
    consistency: Vec<PathBuf>,
    /// Require every digest of --digests to be signed by one of these public keys (`subledger
    /// key public`), and, checking a database, to be of its ledger; repeat to trust several.
    #[arg(long = "trusted-public-key", alias = "public-key", value_name = "FILE")]
    trusted_public_keys: Vec<PathBuf>,
    #[command(flatten)]
    database: DatabaseArgs,
}

#[derive(Args)]
struct ExportArgs {
    /// The offering to export.
    #[arg(long, value_name = "ID")]
    offering: String,
    /// Write here instead of to standard output.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    #[command(flatten)]
    database: DatabaseArgs,
}

fn parse_role(name: &str) -> Result<Role, String> {
    Role::parse(name)
        .ok_or_else(|| format!("{name:?} is not a role: reader, subscriber or operator"))
}

#[derive(Args)]
struct DatabaseArgs {
    /// postgres://USER@HOST[:PORT][,HOST2[:PORT2]...]/DB or sqlite://PATH; unset: the SQLite
    /// file subledger.db in --data-dir. With several PostgreSQL hosts, the one that takes
    /// writes is used and followed through a failover (target_session_attrs=read-write).
    /// A flag shows in `ps`: prefer DATABASE_URL, --database-url-file, or a password from
    /// PGPASSWORD or PGPASSFILE.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Read the database URL from this file (its first line; a mounted secret, say).
    #[arg(
        long,
        env = "SUBLEDGER_DATABASE_URL_FILE",
        value_name = "PATH",
        conflicts_with = "database_url"
    )]
    database_url_file: Option<PathBuf>,
    /// Folder of the embedded SQLite database (created if missing).
    #[arg(long, env = "SUBLEDGER_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// PostgreSQL connections per process.
    #[arg(long, env = "SUBLEDGER_MAX_CONNECTIONS", default_value_t = 16)]
    max_connections: u32,
    /// PostgreSQL: a statement with no answer for this long is abandoned and its connection
    /// closed, and the primary looked for again (a partition sends no error). Keep it above
    /// lock_timeout (10s) and a synchronous commit's wait.
    #[arg(long, env = "SUBLEDGER_DB_IO_TIMEOUT", default_value = "15s", value_parser = subledger_client::duration::parse)]
    db_io_timeout: Duration,
}

enum Database {
    Postgres(String),
    Sqlite(PathBuf),
}

impl DatabaseArgs {
    fn postgres_settings(&self) -> PgSettings {
        PgSettings {
            max_connections: self.max_connections,
            io_timeout: self.db_io_timeout,
        }
    }

    /// The URL from --database-url or the first line of --database-url-file.
    fn database_url(&self) -> anyhow::Result<Option<String>> {
        let Some(path) = &self.database_url_file else {
            return Ok(self.database_url.clone());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --database-url-file {}", path.display()))?;
        match text.lines().map(str::trim).find(|line| !line.is_empty()) {
            Some(url) => Ok(Some(url.to_owned())),
            None => bail!("--database-url-file {} holds no URL", path.display()),
        }
    }

    fn database(&self) -> anyhow::Result<Database> {
        let Some(url) = self.database_url()? else {
            return Ok(Database::Sqlite(self.data_dir.join(SQLITE_FILE_NAME)));
        };
        let url = &url;
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Database::Postgres(url.clone()));
        }
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            let path = path.split('?').next().unwrap_or_default();
            if path.is_empty() {
                bail!("the database URL names no file (expected sqlite://PATH)");
            }
            return Ok(Database::Sqlite(PathBuf::from(path)));
        }
        bail!(
            "the database URL is neither postgres://... nor sqlite://PATH (its scheme is {:?})",
            scheme_of(url)
        )
    }

    /// The database, which must already exist: an audit never creates an empty one.
    fn existing_database(&self) -> anyhow::Result<Database> {
        let database = self.database()?;
        if let Database::Sqlite(path) = &database
            && !path.is_file()
        {
            bail!(
                "no SQLite database at {} (pass --data-dir or --database-url)",
                path.display()
            );
        }
        Ok(database)
    }
}

/// What comes before "://" (or nothing): all of a URL an error may show, since whatever
/// follows may hold a password.
fn scheme_of(url: &str) -> &str {
    url.split_once("://").map_or("", |(scheme, _)| scheme)
}

/// Entry point of the binary: runs the command, prints a failure as one line, sets the exit code.
pub fn main() -> ExitCode {
    // Cli::parse(), with serve's defaults from --config (config_file.rs has read `config`).
    let cli: Cli = crate::config_file::parse();
    telemetry::init(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("subledger: error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("subledger: error: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs the command; Ok holds the exit status, which only `verify` sets to a failure itself.
async fn run(command: Command) -> anyhow::Result<ExitCode> {
    let done = ExitCode::SUCCESS;
    match command {
        Command::Serve(args) => serve(*args).await.map(|()| done),
        Command::Bench(args) => subledger_bench::run(args).await.map(|()| done),
        Command::Token(TokenCommand::New { name, roles }) => {
            print_new_token(&name, &roles).map(|()| done)
        }
        Command::Key(KeyCommand::New { out }) => {
            let key_id = crate::signing::write_new_key(&out)?;
            println!("{key_id}");
            Ok(done)
        }
        Command::Key(KeyCommand::Public { input }) => {
            let key = crate::signing::read_signing_key(&input)?.verifying_key();
            eprintln!("key id {}", crate::signing::KeyId::of(&key));
            print!("{}", crate::signing::public_key_pem(&key)?);
            Ok(done)
        }
        Command::Migrate(args) => migrate(args).await.map(|()| done),
        Command::Verify(args) => verify(args).await,
        Command::Export(args) => export(args).await.map(|()| done),
    }
}

async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    match args.database.database()? {
        Database::Postgres(url) => {
            let store = open_postgres(&url, args.database.postgres_settings()).await?;
            tracing::info!(backend = "postgres", database = %describe_pg(&url), "migrations applied");
            if let Some(role) = &args.grant_to {
                store
                    .grant_runtime(role)
                    .await
                    .context("cannot grant the runtime role its privileges")?;
                tracing::info!(role, "runtime role granted what serving needs");
            }
        }
        Database::Sqlite(path) => {
            if args.grant_to.is_some() {
                bail!("--grant-to names a PostgreSQL role; SQLite has no roles");
            }
            open_sqlite(&path).await?;
            tracing::info!(backend = "sqlite", path = %path.display(), "migrations applied");
        }
    }
    Ok(())
}

/// `subledger verify`: prints one line per failed offering, then the summary.
async fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let mut digests = Vec::new();
    for path in &args.digests {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        digests.extend(
            crate::audit::digests::parse(&text)
                .with_context(|| format!("in {}", path.display()))?,
        );
    }
    let trusted = crate::signing::read_trusted_keys(&args.trusted_public_keys)?;
    let mut out = std::io::stdout().lock();
    if !args.inclusion.is_empty() || !args.consistency.is_empty() {
        let (digests, refused) = crate::audit::check_signatures(digests, &trusted, None, &mut out)?;
        let read = |paths: &[PathBuf]| -> anyhow::Result<Vec<String>> {
            paths
                .iter()
                .map(|path| {
                    std::fs::read_to_string(path)
                        .with_context(|| format!("cannot read {}", path.display()))
                })
                .collect()
        };
        let (inclusion, consistency) = (read(&args.inclusion)?, read(&args.consistency)?);
        let mut summary =
            crate::audit::proofs::check(&inclusion, &consistency, &digests, &mut out)?;
        summary.checked += refused;
        summary.failed += refused;
        use std::io::Write as _;
        writeln!(out, "{summary}")?;
        return Ok(if summary.holds() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let summary = match &args.export {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let (digests, refused) =
                crate::audit::check_signatures(digests, &trusted, None, &mut out)?;
            let mut summary = crate::audit::verify_export(&text, &digests, &mut out)
                .with_context(|| format!("{} is not an export", path.display()))?;
            summary.add_refused(refused);
            summary
        }
        None => match args.database.existing_database()? {
            Database::Postgres(url) => {
                let store = connect_postgres(&url, args.database.postgres_settings()).await?;
                verify_store(&store, &args.offerings, digests, &trusted, &mut out).await?
            }
            Database::Sqlite(path) => {
                let store = connect_sqlite(&path).await?;
                verify_store(&store, &args.offerings, digests, &trusted, &mut out).await?
            }
        },
    };
    use std::io::Write as _;
    writeln!(out, "{summary}")?;
    Ok(if summary.holds() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `verify` of a database: the digests' signatures (with its ledger id), then the offerings.
async fn verify_store<S: Store>(
    store: &S,
    offerings: &[String],
    digests: Vec<crate::ledger::chain::Digest>,
    trusted: &crate::signing::TrustedKeys,
    out: &mut impl std::io::Write,
) -> anyhow::Result<crate::audit::Summary> {
    let ledger_id = if trusted.is_empty() {
        None
    } else {
        Some(
            store
                .ledger_id()
                .await
                .context("cannot read the ledger id")?,
        )
    };
    let (digests, refused) = crate::audit::check_signatures(digests, trusted, ledger_id, out)?;
    let mut summary = crate::audit::verify_database(store, offerings, digests, out).await?;
    summary.add_refused(refused);
    Ok(summary)
}

/// `subledger export`: the file to stdout or --output.
async fn export(args: ExportArgs) -> anyhow::Result<()> {
    let out: Box<dyn std::io::Write + Send> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    let lines = match args.database.existing_database()? {
        Database::Postgres(url) => {
            let store = connect_postgres(&url, args.database.postgres_settings()).await?;
            crate::audit::export(&store, &args.offering, out).await?
        }
        Database::Sqlite(path) => {
            let store = connect_sqlite(&path).await?;
            crate::audit::export(&store, &args.offering, out).await?
        }
    };
    tracing::info!(offering_id = %args.offering, lines, "exported");
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    if let Some(path) = &args.config {
        tracing::info!(path = %path.display(), "options not given as flags or in the environment come from this file");
    }
    let database = args.database.database()?;
    let addresses = resolve_listen(&args.listen).await?;
    let mut config = server_config(&args, &addresses)?;
    let nats = args.nats.config()?;
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    tokio::spawn(reload_on_hangup(config.authenticator.clone()));
    let tls = args.tls_cert.is_some();
    let mutual_tls = args.tls_client_ca.is_some();
    // The ports are bound only once the schema is current: until then a client is refused at
    // once instead of waiting on calls that cannot be answered.
    match database {
        Database::Postgres(url) => {
            let settings = args.database.postgres_settings();
            let store = if args.no_migrate {
                open_postgres_migrated(&url, settings).await?
            } else {
                open_postgres(&url, settings).await?
            };
            let listeners = bind(&args, &addresses, &mut config).await?;
            tracing::info!(listen = %args.listen, addresses = ?local_addresses(&listeners), backend = "postgres", database = %describe_pg(&url), tls, mutual_tls, "subledger serving");
            serve_until_shutdown(store, listeners, config, nats, shutdown).await
        }
        Database::Sqlite(path) => {
            let store = if args.no_migrate {
                open_sqlite_migrated(&path).await?
            } else {
                open_sqlite(&path).await?
            };
            let listeners = bind(&args, &addresses, &mut config).await?;
            tracing::info!(listen = %args.listen, addresses = ?local_addresses(&listeners), backend = "sqlite", path = %path.display(), tls, mutual_tls, "subledger serving");
            serve_until_shutdown(store, listeners, config, nats, shutdown).await
        }
    }
}

/// Every address `--listen` names: HOST:PORT, the host an IP address or a name to resolve.
async fn resolve_listen(listen: &str) -> anyhow::Result<Vec<SocketAddr>> {
    let mut addresses: Vec<SocketAddr> = tokio::net::lookup_host(listen)
        .await
        .with_context(|| {
            format!("--listen {listen:?}: not HOST:PORT, or the host does not resolve")
        })?
        .collect();
    addresses.sort();
    addresses.dedup();
    if addresses.is_empty() {
        bail!("--listen {listen:?}: the host resolves to no address");
    }
    Ok(addresses)
}

/// The gRPC listeners, one per address, and the metrics listener if asked for.
async fn bind(
    args: &ServeArgs,
    addresses: &[SocketAddr],
    config: &mut ServerConfig,
) -> anyhow::Result<Vec<TcpListener>> {
    if let Some(address) = args.metrics_listen {
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen for metrics on {address}"))?;
        tracing::info!(address = %listener.local_addr()?, "metrics at /metrics");
        config.metrics_listener = Some(listener);
    }
    let mut listeners: Vec<TcpListener> = Vec::with_capacity(addresses.len());
    for address in addresses {
        let mut address = *address;
        // Port 0 picks a free port: the same one on every address of the name.
        if let (0, Some(first)) = (address.port(), listeners.first()) {
            address.set_port(first.local_addr()?.port());
        }
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen on {address} (--listen {})", args.listen))?;
        listeners.push(listener);
    }
    Ok(listeners)
}

fn local_addresses(listeners: &[TcpListener]) -> Vec<SocketAddr> {
    listeners
        .iter()
        .filter_map(|listener| listener.local_addr().ok())
        .collect()
}

/// TLS, principals and limits from the flags, and the refusal to serve anyone on the network
/// anonymously unless told to.
fn server_config(args: &ServeArgs, addresses: &[SocketAddr]) -> anyhow::Result<ServerConfig> {
    // Every address counts: a name that resolves to one public address is exposed.
    let exposed = addresses.iter().any(|address| !address.ip().is_loopback());
    let authenticator = match &args.auth_file {
        Some(path) => {
            let authenticator = Authenticator::from_file(path, args.allow_empty_auth)?;
            if exposed && args.tls_cert.is_none() {
                tracing::warn!(listen = %args.listen, "--auth-file without --tls-cert on a non-loopback address: bearer tokens travel in clear");
            }
            authenticator
        }
        None if exposed && !args.allow_anonymous => bail!(
            "refusing to serve {} without authentication: pass --auth-file PATH, or --allow-anonymous to let anyone who can connect call everything",
            args.listen
        ),
        None => {
            if args.allow_anonymous {
                tracing::warn!(listen = %args.listen, "--allow-anonymous: every caller may call every RPC, recorded as \"anonymous\"");
            }
            Authenticator::disabled()
        }
    };
    Ok(ServerConfig {
        tls: tls_config(args)?,
        authenticator: Arc::new(authenticator),
        connections: ConnectionLimits {
            max_connections: args.max_client_connections,
            max_connections_per_peer: args.max_client_connections_per_peer,
            idle_timeout: args.idle_timeout,
            handshake_timeout: args.handshake_timeout,
        },
        service: ServiceLimits {
            max_watch_streams: args.max_watch_streams,
            max_watch_streams_per_principal: args.max_watch_streams_per_principal,
            max_investors_per_offering: args.max_investors_per_offering,
        },
        metrics_listener: None,
        digest_keys: digest_keys(args)?,
    })
}

/// --signing-key and --trusted-public-key, read once at start-up.
fn digest_keys(args: &ServeArgs) -> anyhow::Result<crate::signing::DigestKeys> {
    let signing_key = args
        .signing_key
        .as_deref()
        .map(crate::signing::read_signing_key)
        .transpose()?;
    let trusted = crate::signing::read_trusted_keys(&args.trusted_public_keys)?;
    let keys = crate::signing::DigestKeys::new(signing_key, trusted);
    if let Some(signer) = &keys.signer {
        tracing::info!(key_id = %crate::signing::KeyId::of(&signer.public_key()), "signing digests");
    }
    Ok(keys)
}

fn tls_config(args: &ServeArgs) -> anyhow::Result<Option<tonic::transport::ServerTlsConfig>> {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        return Ok(None);
    };
    let read = |path: &Path| {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
    };
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
    if let Some(ca) = &args.tls_client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    Ok(Some(tls))
}

async fn serve_until_shutdown<S: Store>(
    store: S,
    listeners: Vec<TcpListener>,
    config: ServerConfig,
    nats: Option<NatsConfig>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if config.metrics_listener.is_some() {
        // Before the publisher registers its metrics: handles taken earlier would record nowhere.
        crate::telemetry::metrics::install().map_err(anyhow::Error::msg)?;
    }
    let publisher = match nats {
        Some(nats) => Some(start_publisher(&store, &nats, shutdown.clone()).await?),
        None => None,
    };
    crate::server::serve(store, listeners, config, shutdown.clone()).await?;
    if let Some(publisher) = publisher {
        // Its lease is let go, so that another replica publishes at once, not after its TTL.
        shutdown.cancel();
        if tokio::time::timeout(PUBLISHER_STOP_WAIT, publisher)
            .await
            .is_err()
        {
            tracing::warn!("the NATS publisher did not stop in time; its lease expires by itself");
        }
    }
    tracing::info!("subledger stopped");
    Ok(())
}

/// How long a stopping server waits for the publisher to let its lease go.
const PUBLISHER_STOP_WAIT: Duration = Duration::from_secs(5);

/// Connects to NATS (in the background: a NATS that is down does not stop serve) and starts
/// the publisher, which stops with `shutdown`.
async fn start_publisher<S: Store>(
    store: &S,
    nats: &NatsConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let handle = crate::publish::Nats::connect(nats).await?;
    tracing::info!(stream = %nats.stream, duplicate_window_s = nats.duplicate_window.as_secs(), start = ?nats.start, "publishing the history to NATS JetStream");
    Ok(tokio::spawn(crate::publish::publisher::run(
        store.clone(),
        handle,
        nats.start,
        shutdown,
    )))
}

/// SIGHUP re-reads the auth file; one that does not load leaves the principals as they were.
async fn reload_on_hangup(authenticator: Arc<Authenticator>) {
    use tokio::signal::unix::{SignalKind, signal};
    if !authenticator.is_enabled() {
        return;
    }
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP: the auth file is read only at start-up");
        return;
    };
    while hangups.recv().await.is_some() {
        match authenticator.reload() {
            Ok(principals) => tracing::info!(principals, "auth file reloaded"),
            Err(error) => {
                tracing::error!(%error, "auth file not reloaded: the principals loaded before stay in force");
            }
        }
    }
}

fn print_new_token(name: &str, roles: &[Role]) -> anyhow::Result<()> {
    check_principal_name(name).map_err(anyhow::Error::msg)?;
    let (token, digest) = new_token()
        .map_err(|error| anyhow::anyhow!("no randomness from the operating system: {error}"))?;
    let roles: Vec<String> = roles.iter().map(|r| format!("{:?}", r.name())).collect();
    println!("# The bearer token, for the caller alone (\"authorization: Bearer <token>\"):");
    println!("# token: {token}");
    println!("# The auth-file block, which holds only the token's SHA-256:");
    println!("[[principal]]");
    println!("name = {name:?}");
    println!("roles = [{}]", roles.join(", "));
    println!("token_sha256 = \"{digest}\"");
    Ok(())
}

/// Connects and applies pending migrations.
pub async fn open_postgres(url: &str, settings: PgSettings) -> anyhow::Result<PgStore> {
    let store = connect_postgres(url, settings).await?;
    store
        .migrate()
        .await
        .context("cannot apply PostgreSQL migrations")?;
    Ok(store)
}

/// Connects and checks, changing nothing, that the database is migrated exactly as this binary
/// would (`serve --no-migrate`, as a runtime role that may not migrate).
pub async fn open_postgres_migrated(url: &str, settings: PgSettings) -> anyhow::Result<PgStore> {
    let store = connect_postgres(url, settings).await?;
    store.check_migrated().await?;
    Ok(store)
}

/// Connects and changes nothing: an audit reads the database as it is.
async fn connect_postgres(url: &str, settings: PgSettings) -> anyhow::Result<PgStore> {
    PgStore::connect(url, settings)
        .await
        .with_context(|| format!("cannot connect to PostgreSQL at {}", describe_pg(url)))
}

/// Opens an existing file and changes nothing: an audit reads the database as it is.
async fn connect_sqlite(path: &Path) -> anyhow::Result<SqliteStore> {
    SqliteStore::open(path)
        .await
        .with_context(|| format!("cannot open SQLite database {}", path.display()))
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

/// Opens an existing file and checks, changing nothing, that it is migrated exactly as this
/// binary would (`serve --no-migrate`).
async fn open_sqlite_migrated(path: &Path) -> anyhow::Result<SqliteStore> {
    if !path.is_file() {
        bail!(
            "no SQLite database at {}: run `subledger migrate` first, or serve without --no-migrate",
            path.display()
        );
    }
    let store = connect_sqlite(path).await?;
    store.check_migrated().await?;
    Ok(store)
}

/// host:port[,host:port...]/database of a PostgreSQL URL, without credentials, for logs and
/// errors.
fn describe_pg(url: &str) -> String {
    match url.parse::<PgTargets>() {
        Ok(targets) => targets.describe(),
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

#[cfg(test)]
mod tests {
    /// What crates that cannot depend on the server (it depends on them) repeat of it.
    #[test]
    fn the_bench_and_the_proto_crate_repeat_the_servers_constants() {
        assert_eq!(
            subledger_bench::SERVER_UNITS_MAX,
            crate::ledger::limits::UNITS_MAX
        );
        assert_eq!(
            subledger_bench::watch::COMMIT_OFFERINGS,
            crate::telemetry::metrics::COMMIT_OFFERINGS
        );
        assert_eq!(
            subledger_bench::watch::WATCH_READS,
            crate::telemetry::metrics::WATCH_READS
        );
        assert_eq!(crate::proto::ERROR_DOMAIN, crate::api::error::ERROR_DOMAIN);
    }
}

//! `subledger-bench-redis-lock`: strategy (e) of `bench/strategies.sh`, a Subscribe guarded by a
//! distributed lock in Redis, written the way teams write one when they reach for it.
//!
//! Per call: take the offering's lock (`SET key token NX PX ttl`, a random token, retried after a
//! short jittered sleep while someone else holds it), then one PostgreSQL transaction at READ
//! COMMITTED that reads the head without locking it, checks the cap, and appends (position,
//! history entry, head), then release the lock with a compare-and-delete Lua script, so that a
//! holder never deletes a lock that is no longer its own.
//!
//! The lock is a lease: if the transaction outlives `--lock-ttl-ms`, Redis lets the next caller
//! in while the first still acts on what it read. `--slow-fraction` and `--slow-ms` inject such
//! transactions (a `pg_sleep` between the check and the writes, standing in for a slow disk, a
//! pause or a slow network), and the release counts the leases that had run out.
//!
//! It works on the strategies schema (`bench/strategies/schema.sql` over the pg-anchor tables),
//! which `bench/strategies.sh` creates. It talks to loopback addresses only, and every run is
//! bounded in time, in calls and in how long a call may wait for the lock.
//!
//! A binary of its own (not a subcommand of `subledger`), so that the product never links a
//! Redis client: `bench/strategies.sh` builds and runs it beside the server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use redis::aio::MultiplexedConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

/// A run longer than this is a mistake, not a benchmark.
const DURATION_S_MAX: f64 = 600.0;
/// Latencies are recorded in microseconds up to this.
const LATENCY_US_MAX: u64 = 60_000_000;
/// Positions are spread over this many investors per offering (as in the pgbench scripts).
const INVESTORS: u64 = 100_000;
/// Characters of a run's id: enough that two runs' lock keys do not meet.
const RUN_ID_LEN: usize = 8;
/// An injected slow transaction sleeps at most this long.
const SLOW_MS_MAX: u64 = 10_000;

/// Deletes the lock only if it still holds this caller's token (the release from the Redis
/// documentation of SET). Returns 1 if it deleted it, 0 if the lease had run out.
const RELEASE_LUA: &str = r#"
if redis.call("get", KEYS[1]) == ARGV[1] then
    return redis.call("del", KEYS[1])
else
    return 0
end
"#;

#[derive(clap::Parser, Debug)]
#[command(
    name = "subledger-bench-redis-lock",
    version,
    about = "Strategy (e) of bench/strategies.sh: Subscribes under a Redis lock, straight to PostgreSQL"
)]
struct RedisLockArgs {
    /// The strategies database (pg-anchor tables plus bench/strategies/schema.sql).
    #[arg(long)]
    database_url: String,
    #[arg(long, default_value = "redis://127.0.0.1:6379/")]
    redis_url: String,
    /// Calls in flight at once (one PostgreSQL connection each).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// How long to send calls, in seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many calls if that comes before --duration.
    #[arg(long)]
    requests: Option<u64>,
    /// Calls pick an offering uniformly among offering_id 1..=N (1 = one hot offering).
    #[arg(long, default_value_t = 1)]
    offerings: u64,
    /// Units per Subscribe, uniformly 1..=N (1 for a sell-out run).
    #[arg(long, default_value_t = 10)]
    units_max: u64,
    /// The lock's expiry (PX).
    #[arg(long, default_value_t = 10_000)]
    lock_ttl_ms: u64,
    /// Sleep between tries to take a held lock, jittered by +-50%.
    #[arg(long, default_value_t = 5)]
    retry_delay_ms: u64,
    /// A call that has not got the lock after this long gives up (counted as lock_timeouts).
    #[arg(long, default_value_t = 10_000)]
    acquire_timeout_ms: u64,
    /// Fraction of calls (0..=1) whose transaction sleeps --slow-ms between check and writes.
    #[arg(long, default_value_t = 0.0)]
    slow_fraction: f64,
    #[arg(long, default_value_t = 0)]
    slow_ms: u64,
}

/// What one worker saw.
struct Tally {
    latency_us: Histogram<u64>,
    accepted: u64,
    refused: u64,
    errors: u64,
    lock_retries: u64,
    lock_timeouts: u64,
    /// Releases that found the lock gone or someone else's: the lease had run out.
    leases_lost: u64,
    /// The first database or Redis error, for the report.
    first_error: Option<String>,
}

impl Tally {
    fn new() -> Self {
        Self {
            latency_us: Histogram::new_with_bounds(1, LATENCY_US_MAX, 3)
                .expect("valid histogram bounds"),
            accepted: 0,
            refused: 0,
            errors: 0,
            lock_retries: 0,
            lock_timeouts: 0,
            leases_lost: 0,
            first_error: None,
        }
    }

    fn merge(&mut self, other: Tally) {
        let _ = self.latency_us.add(other.latency_us);
        self.accepted += other.accepted;
        self.refused += other.refused;
        self.errors += other.errors;
        self.lock_retries += other.lock_retries;
        self.lock_timeouts += other.lock_timeouts;
        self.leases_lost += other.leases_lost;
        self.first_error = self.first_error.take().or(other.first_error);
    }
}

/// One Subscribe's parameters.
struct Call {
    offering_id: i64,
    investor_id: i64,
    units: i64,
    request_id: String,
    slow: bool,
}

enum Outcome {
    Accepted,
    /// Over the cap: nothing written.
    Refused,
}

/// Prints the summary line; a failure is one line on stderr and exit status 2.
fn main() -> std::process::ExitCode {
    let args = <RedisLockArgs as clap::Parser>::parse();
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(run(args)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("subledger-bench-redis-lock: error: {error:#}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn run(args: RedisLockArgs) -> anyhow::Result<()> {
    check_args(&args)?;
    let pg_options: PgConnectOptions = args.database_url.parse().context("bad --database-url")?;
    ensure_loopback("--database-url", pg_options.get_host())?;
    let redis_client = redis::Client::open(args.redis_url.as_str()).context("bad --redis-url")?;
    match redis_client.get_connection_info().addr() {
        redis::ConnectionAddr::Tcp(host, _) => ensure_loopback("--redis-url", host)?,
        _ => bail!("--redis-url must be redis://127.0.0.1:PORT/ (plain TCP)"),
    }
    let pool = PgPoolOptions::new()
        .max_connections(args.concurrency as u32)
        .min_connections(args.concurrency as u32)
        .connect_with(pg_options)
        .await
        .context("cannot connect to PostgreSQL")?;
    let redis = redis_client
        .get_multiplexed_async_connection()
        .await
        .context("cannot connect to Redis")?;
    // Lock keys unique to this run: a lock left behind by an earlier run cannot stall this one.
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..RUN_ID_LEN].to_owned();

    let deadline = Instant::now() + Duration::from_secs_f64(args.duration);
    let calls_per_worker = args
        .requests
        .map(|requests| requests.div_ceil(args.concurrency as u64));
    let args = Arc::new(args);
    let started = Instant::now();
    let workers: Vec<_> = (0..args.concurrency as u64)
        .map(|worker| {
            let state = Worker {
                pool: pool.clone(),
                redis: redis.clone(),
                release: redis::Script::new(RELEASE_LUA),
                args: args.clone(),
                run_id: format!("{run_id}-{worker}"),
                tally: Tally::new(),
                seed: 0x9E37_79B9_7F4A_7C15u64 ^ (worker + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9),
            };
            tokio::spawn(state.drive(deadline, calls_per_worker))
        })
        .collect();
    let mut tally = Tally::new();
    for worker in workers {
        tally.merge(worker.await.context("bench worker")?);
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    pool.close().await;
    print_summary(&args, &tally, elapsed_s);
    if let Some(error) = &tally.first_error {
        eprintln!("subledger-bench-redis-lock: first error: {error}");
    }
    Ok(())
}

fn check_args(args: &RedisLockArgs) -> anyhow::Result<()> {
    if args.concurrency == 0 || args.offerings == 0 || args.units_max == 0 {
        bail!("--concurrency, --offerings and --units-max must be positive");
    }
    if !(args.duration > 0.0 && args.duration <= DURATION_S_MAX) {
        bail!("--duration must be in (0, {DURATION_S_MAX}] seconds");
    }
    if !(0.0..=1.0).contains(&args.slow_fraction) || args.slow_ms > SLOW_MS_MAX {
        bail!("--slow-fraction must be in [0, 1] and --slow-ms at most {SLOW_MS_MAX}");
    }
    if args.lock_ttl_ms == 0 || args.retry_delay_ms == 0 {
        bail!("--lock-ttl-ms and --retry-delay-ms must be positive");
    }
    Ok(())
}

/// A load generator is pointed at the machine it runs on, never at a shared server.
fn ensure_loopback(flag: &str, host: &str) -> anyhow::Result<()> {
    match host {
        "127.0.0.1" | "localhost" | "::1" | "[::1]" => Ok(()),
        _ => bail!("{flag} must point at 127.0.0.1 (this load generator is for local runs only)"),
    }
}

/// One worker's connections and state.
struct Worker {
    pool: PgPool,
    redis: MultiplexedConnection,
    release: redis::Script,
    args: Arc<RedisLockArgs>,
    run_id: String,
    tally: Tally,
    /// A cheap pseudo-random sequence (xorshift), as in the gRPC bench.
    seed: u64,
}

impl Worker {
    fn random(&mut self) -> u64 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        self.seed
    }

    /// Calls back to back until the deadline or its share of --requests.
    async fn drive(mut self, deadline: Instant, calls_max: Option<u64>) -> Tally {
        let mut call_number = 0u64;
        while Instant::now() < deadline && calls_max.is_none_or(|max| call_number < max) {
            call_number += 1;
            let call = Call {
                offering_id: 1 + (self.random() % self.args.offerings) as i64,
                investor_id: 1 + (self.random() % INVESTORS) as i64,
                units: 1 + (self.random() % self.args.units_max) as i64,
                request_id: format!("{}-{call_number}", self.run_id),
                slow: (self.random() % 1_000_000) as f64 / 1_000_000.0 < self.args.slow_fraction,
            };
            let started = Instant::now();
            match self.subscribe(&call).await {
                Ok(Some(Outcome::Accepted)) => self.tally.accepted += 1,
                Ok(Some(Outcome::Refused)) => self.tally.refused += 1,
                Ok(None) => self.tally.lock_timeouts += 1,
                Err(error) => {
                    self.tally.errors += 1;
                    self.tally
                        .first_error
                        .get_or_insert_with(|| format!("{error:#}"));
                }
            }
            let latency_us = (started.elapsed().as_micros() as u64).clamp(1, LATENCY_US_MAX);
            let _ = self.tally.latency_us.record(latency_us);
        }
        self.tally
    }

    /// Lock, read-check-write, release. None: the lock was not obtained in time.
    async fn subscribe(&mut self, call: &Call) -> anyhow::Result<Option<Outcome>> {
        let key = format!(
            "subledger-bench:{}:lock:{}",
            &self.run_id[..RUN_ID_LEN],
            call.offering_id
        );
        let token = uuid::Uuid::new_v4().simple().to_string();
        if !self.acquire(&key, &token).await? {
            return Ok(None);
        }
        let outcome = read_check_write(&self.pool, call, self.args.slow_ms).await;
        // Released whatever the transaction did, so that an error does not hold the lock to its
        // expiry.
        let released: i64 = self
            .release
            .key(&key)
            .arg(&token)
            .invoke_async(&mut self.redis)
            .await
            .context("releasing the Redis lock")?;
        if released == 0 {
            self.tally.leases_lost += 1;
        }
        outcome.map(Some)
    }

    /// SET NX PX until it succeeds or --acquire-timeout-ms has passed.
    async fn acquire(&mut self, key: &str, token: &str) -> anyhow::Result<bool> {
        let give_up_at = Instant::now() + Duration::from_millis(self.args.acquire_timeout_ms);
        loop {
            let set: Option<String> = redis::cmd("SET")
                .arg(key)
                .arg(token)
                .arg("NX")
                .arg("PX")
                .arg(self.args.lock_ttl_ms)
                .query_async(&mut self.redis)
                .await
                .context("taking the Redis lock")?;
            if set.is_some() {
                return Ok(true);
            }
            if Instant::now() >= give_up_at {
                return Ok(false);
            }
            self.tally.lock_retries += 1;
            // Jitter (50% to 150% of the delay) keeps waiters from retrying in step.
            let delay_ms = self.args.retry_delay_ms;
            let delay_us = delay_ms * 500 + self.random() % (delay_ms * 1000);
            tokio::time::sleep(Duration::from_micros(delay_us)).await;
        }
    }
}

/// The transaction run under the lock, at READ COMMITTED: nothing in it locks the head, the
/// Redis lock is trusted to.
async fn read_check_write(pool: &PgPool, call: &Call, slow_ms: u64) -> anyhow::Result<Outcome> {
    let mut tx = pool.begin().await?;
    let (subscribed_units, max_units): (i64, i64) = sqlx::query_as(
        "SELECT subscribed_units, max_units FROM anchor_head WHERE offering_id = $1",
    )
    .bind(call.offering_id)
    .fetch_one(&mut *tx)
    .await?;
    let _seen: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM anchor_history WHERE offering_id = $1 AND request_id = $2",
    )
    .bind(call.offering_id)
    .bind(&call.request_id)
    .fetch_one(&mut *tx)
    .await?;
    if subscribed_units + call.units > max_units {
        tx.rollback().await?;
        return Ok(Outcome::Refused);
    }
    if call.slow {
        sqlx::query("SELECT pg_sleep($1)")
            .bind(slow_ms as f64 / 1000.0)
            .execute(&mut *tx)
            .await?;
    }
    let investor_units: i64 = sqlx::query_scalar(
        "INSERT INTO anchor_position (offering_id, investor_id, units) VALUES ($1, $2, $3)
         ON CONFLICT (offering_id, investor_id)
         DO UPDATE SET units = anchor_position.units + EXCLUDED.units, update_time = now()
         RETURNING units",
    )
    .bind(call.offering_id)
    .bind(call.investor_id)
    .bind(call.units)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO anchor_history (offering_id, sequence, investor_id, units_delta,
                                     investor_units_after, offering_units_after, request_id)
         VALUES ($1, nextval('strategy_entry_sequence'), $2, $3, $4, $5, $6)",
    )
    .bind(call.offering_id)
    .bind(call.investor_id)
    .bind(call.units)
    .bind(investor_units)
    .bind(subscribed_units + call.units)
    .bind(&call.request_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE anchor_head SET subscribed_units = subscribed_units + $2, version = version + 1,
                                update_time = now()
         WHERE offering_id = $1",
    )
    .bind(call.offering_id)
    .bind(call.units)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Outcome::Accepted)
}

/// One line of key=value pairs, parsed by bench/strategies.sh.
fn print_summary(args: &RedisLockArgs, tally: &Tally, elapsed_s: f64) {
    let calls = tally.latency_us.len();
    let ms = |quantile: f64| tally.latency_us.value_at_quantile(quantile) as f64 / 1000.0;
    println!(
        "redis-lock concurrency={} offerings={} lock_ttl_ms={} slow_fraction={} slow_ms={} \
         seconds={elapsed_s:.2} calls={calls} calls_per_s={:.1} accepted={} refused={} errors={} \
         lock_timeouts={} p50_ms={:.2} p99_ms={:.2} lock_retries={} leases_lost={}",
        args.concurrency,
        args.offerings,
        args.lock_ttl_ms,
        args.slow_fraction,
        args.slow_ms,
        calls as f64 / elapsed_s,
        tally.accepted,
        tally.refused,
        tally.errors,
        tally.lock_timeouts,
        ms(0.5),
        ms(0.99),
        tally.lock_retries,
        tally.leases_lost,
    );
}

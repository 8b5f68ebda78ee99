//! Offline audit: `subledger verify` and `subledger export`, for an auditor who trusts neither
//! the server nor, past the digests they kept, the database.
//!
//! `verify` reads the database directly, with no server, and runs the same verification as
//! VerifyOffering (`ledger::verify`) on every offering or the named ones, holding each chain
//! against the digests given. `export` writes one offering's snapshot to a file that
//! `verify --export` checks the same way with no database at all. `verify --inclusion` and
//! `--consistency` check Merkle proofs against kept digests, with neither.

pub mod digests;
pub mod export;
pub mod proofs;

use std::collections::HashMap;
use std::fmt;
use std::io::Write;

use anyhow::Context;

use crate::ledger::chain::Digest;
use crate::ledger::limits::PAGE_SIZE_MAX;
use crate::ledger::verify::Report;
use crate::signing::{SignatureError, TrustedKeys};
use crate::store::{Store, Verification};
use export::ExportWriter;

/// Problems printed per failed offering; the rest are counted ("and 7 more").
const PROBLEMS_PRINTED_MAX: usize = 3;

/// What a verification run found, over all the offerings it checked.
#[derive(Debug, Default)]
pub struct Summary {
    pub offerings: u64,
    pub offerings_failed: u64,
    pub entries: i64,
    pub digests_checked: usize,
    pub digests_failed: usize,
}

impl Summary {
    /// True when every offering and every digest holds.
    pub fn holds(&self) -> bool {
        self.offerings_failed == 0 && self.digests_failed == 0
    }

    /// Counts one offering's report, and prints one line for it if it has problems.
    fn add(
        &mut self,
        offering_id: &str,
        report: &Report,
        out: &mut impl Write,
    ) -> std::io::Result<()> {
        self.offerings += 1;
        self.entries += report.entries_checked;
        self.digests_checked += report.digests_checked;
        self.digests_failed += report.digests_failed;
        if report.problems.is_empty() {
            return Ok(());
        }
        self.offerings_failed += 1;
        let shown = report.problems.iter().take(PROBLEMS_PRINTED_MAX);
        let mut line = format!("FAILED {offering_id}: ");
        line.push_str(&shown.cloned().collect::<Vec<_>>().join("; "));
        let more = report.problems.len().saturating_sub(PROBLEMS_PRINTED_MAX);
        if more > 0 {
            line.push_str(&format!("; and {more} more"));
        }
        writeln!(out, "{line}")
    }

    /// Counts digests refused for their signature (`check_signatures` printed why).
    pub fn add_refused(&mut self, refused: usize) {
        self.digests_checked += refused;
        self.digests_failed += refused;
    }

    /// A digest of an offering that is not there any more.
    fn add_missing(&mut self, digest: &Digest, out: &mut impl Write) -> std::io::Result<()> {
        self.offerings_failed += 1;
        self.digests_checked += 1;
        self.digests_failed += 1;
        writeln!(
            out,
            "FAILED {}: a digest at sequence {} names it but the offering does not exist",
            digest.offering_id, digest.sequence
        )
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = |n: u64, one: &str, many: &str| match n {
            1 => format!("1 {one}"),
            n => format!("{n} {many}"),
        };
        write!(
            f,
            "{}: {}, {}, {} checked; {} failed, {} not matched",
            if self.holds() { "OK" } else { "FAILED" },
            count(self.offerings, "offering", "offerings"),
            count(self.entries as u64, "entry", "entries"),
            count(self.digests_checked as u64, "digest", "digests"),
            count(self.offerings_failed, "offering", "offerings"),
            count(self.digests_failed as u64, "digest", "digests"),
        )
    }
}

/// With trusted keys, keeps only the digests signed by one of them (of ledger `ledger_id`, when
/// known) and prints one line per digest refused; the digests kept and how many were refused.
/// With none, every digest is kept, signed or not, as before signing existed.
pub fn check_signatures(
    digests: Vec<Digest>,
    trusted: &TrustedKeys,
    ledger_id: Option<uuid::Uuid>,
    out: &mut impl Write,
) -> std::io::Result<(Vec<Digest>, usize)> {
    if trusted.is_empty() {
        return Ok((digests, 0));
    }
    let mut kept = Vec::with_capacity(digests.len());
    let mut refused = 0;
    for digest in digests {
        let error = match trusted.check(&digest, ledger_id) {
            Ok(true) => {
                kept.push(digest);
                continue;
            }
            Ok(false) => SignatureError::Unsigned,
            Err(error) => error,
        };
        refused += 1;
        writeln!(
            out,
            "FAILED {}: the digest at sequence {}: {error}",
            digest.offering_id, digest.sequence
        )?;
    }
    Ok((kept, refused))
}

/// Verifies `offering_ids` (every offering when empty) in the database, each against the
/// digests of it; a digest whose offering is missing fails too. One line per failed offering
/// goes to `out`, and progress to the terminal, if there is one.
pub async fn verify_database<S: Store>(
    store: &S,
    offering_ids: &[String],
    digests: Vec<Digest>,
    out: &mut impl Write,
) -> anyhow::Result<Summary> {
    let ids = if offering_ids.is_empty() {
        all_offering_ids(store).await?
    } else {
        offering_ids.to_vec()
    };
    let mut digests_by_offering: HashMap<String, Vec<Digest>> = HashMap::new();
    for digest in digests {
        digests_by_offering
            .entry(digest.offering_id.clone())
            .or_default()
            .push(digest);
    }
    let progress = progress_bar(ids.len() as u64);
    let mut summary = Summary::default();
    for offering_id in &ids {
        let digests = digests_by_offering.remove(offering_id).unwrap_or_default();
        let report = store
            .verify_offering(offering_id, &digests)
            .await
            .with_context(|| format!("cannot read offering {offering_id:?}"))?;
        progress.inc(1);
        progress.suspend(|| match report {
            Some(report) => summary.add(offering_id, &report, out),
            None => {
                summary.offerings_failed += 1;
                writeln!(out, "FAILED {offering_id}: no such offering")
            }
        })?;
    }
    progress.finish_and_clear();
    // Digests of offerings that were not checked: missing ones fail, unselected ones wait.
    if offering_ids.is_empty() {
        for digest in digests_by_offering.into_values().flatten() {
            summary.add_missing(&digest, out)?;
        }
    }
    Ok(summary)
}

/// Verifies an export file on its own, against `digests` (all of its offering).
pub fn verify_export(
    text: &str,
    digests: &[Digest],
    out: &mut impl Write,
) -> anyhow::Result<Summary> {
    let mut verification = Verification::new(digests);
    export::read(text, &mut verification)?;
    let (offering_id, report) = verification
        .into_report()
        .context("the export holds no offering")?;
    let mut summary = Summary::default();
    for digest in digests.iter().filter(|d| d.offering_id != offering_id) {
        writeln!(
            out,
            "FAILED {}: a digest names it but the export is of offering {offering_id}",
            digest.offering_id
        )?;
        summary.digests_checked += 1;
        summary.digests_failed += 1;
    }
    summary.add(&offering_id, &report, out)?;
    Ok(summary)
}

/// Writes one offering's snapshot as an export file; the number of lines. Errors if the
/// offering does not exist.
pub async fn export<S: Store>(
    store: &S,
    offering_id: &str,
    out: impl Write + Send,
) -> anyhow::Result<u64> {
    let mut writer = ExportWriter::new(out);
    let found = store
        .read_snapshot(offering_id, &mut writer)
        .await
        .with_context(|| format!("cannot read offering {offering_id:?}"))?;
    if !found {
        anyhow::bail!("no offering {offering_id:?}");
    }
    writer.finish().context("cannot write the export")
}

async fn all_offering_ids<S: Store>(store: &S) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    loop {
        let page = store
            .list_offerings(ids.last().map(String::as_str), PAGE_SIZE_MAX)
            .await
            .context("cannot list the offerings")?;
        let last_page = page.len() < PAGE_SIZE_MAX as usize;
        ids.extend(page.into_iter().map(|offering| offering.offering_id));
        if last_page {
            return Ok(ids);
        }
    }
}

/// Drawn on stderr only when it is a terminal, so a script's output stays clean.
fn progress_bar(total: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("verifying {pos}/{len} offerings [{bar:24}] {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

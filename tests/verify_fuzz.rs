//! The strict verifier against hostile exports: a valid export, built from the domain types as
//! the server would write it, has one field changed to a value no release accepts, every hash
//! recomputed so that the chain agrees, and `subledger verify --export`'s code path must neither
//! panic nor say OK. A property test with a fixed number of cases, so it runs in `cargo test`.

use proptest::prelude::*;

use subledger::audit;
use subledger::audit::export::ExportWriter;
use subledger::ledger::chain;
use subledger::ledger::limits::{DEMAND_TOTAL_MAX, UNITS_MAX};
use subledger::ledger::{
    Allocation, Batch, Command, Entry, EntryKind, NewOffering, Offering, Position, Request,
    TermChanges, Timestamp, UNKNOWN_ACTOR,
};
use subledger::store::SnapshotReader;

/// Enough cases to hit every mutation many times over, in a few seconds.
const CASES: u32 = 256;

fn now() -> Timestamp {
    Timestamp::from_timestamp(1_800_000_000, 0).expect("a valid time")
}

struct Stored {
    head: Offering,
    entries: Vec<Entry>,
    positions: Vec<Position>,
}

fn request(request_id: &str, command: Command) -> Request {
    Request {
        request_id: request_id.into(),
        actor: "checkout".into(),
        command,
    }
}

/// What the server stores for: created (lot 1, minimum 2), alice subscribes 4, bob 3, the name
/// is amended, alice cancels 1, closed.
fn valid() -> Stored {
    let new = NewOffering {
        offering_id: "deal".into(),
        name: "Deal".into(),
        max_units: 10,
        max_units_per_investor: 5,
        request_id: "create".into(),
        actor: "ops".into(),
        allocation: Allocation::FirstCome,
        open_time: None,
        close_time: None,
        lot_units: 1,
        min_units_per_investor: 2,
        max_total_demand: 0,
    };
    let (head, created) = new.first_rows(now());
    let mut batch = Batch::new(head, vec![], true, vec![], now());
    let investor = |investor_id: &str, units| (investor_id.to_owned(), units);
    let commands = [
        ("a", {
            let (investor_id, units) = investor("alice", 4);
            Command::Subscribe { investor_id, units }
        }),
        ("b", {
            let (investor_id, units) = investor("bob", 3);
            Command::Subscribe { investor_id, units }
        }),
        (
            "amend",
            Command::Amend {
                expected_version: 3,
                changes: TermChanges {
                    name: Some("Deal, renamed".into()),
                    ..TermChanges::default()
                },
            },
        ),
        ("c", {
            let (investor_id, units) = investor("alice", 1);
            Command::Cancel { investor_id, units }
        }),
        (
            "close",
            Command::Close {
                expected_version: 0,
            },
        ),
    ];
    for (id, command) in commands {
        batch.apply(&request(id, command)).expect("a valid request");
    }
    let writes = batch.into_writes();
    Stored {
        head: writes.head,
        entries: [vec![created], writes.entries].concat(),
        positions: writes.positions,
    }
}

/// The export as `subledger export` writes it, with the chain recomputed over the entries as
/// they now stand.
fn export(mut stored: Stored) -> String {
    stored.head.last_hash = chain::link_all(chain::GENESIS, &mut stored.entries);
    stored.head.tree =
        subledger::ledger::merkle::Frontier::of(stored.entries.iter().map(|e| &e.entry_hash));
    let mut out = Vec::new();
    let mut writer = ExportWriter::new(&mut out);
    writer.head(&stored.head);
    for entry in &stored.entries {
        writer.entry(entry);
    }
    writer.positions(stored.positions);
    writer.finish().expect("written to memory");
    String::from_utf8(out).expect("JSON is UTF-8")
}

/// True when `verify --export` would exit 0.
fn verifies(text: &str) -> bool {
    let mut out = Vec::new();
    match audit::verify_export(text, &[], &mut out) {
        Ok(summary) => summary.holds(),
        Err(_) => false,
    }
}

/// Renames an investor everywhere, so that every total still agrees.
fn rename_investor(stored: &mut Stored, from: &str, to: &str) {
    for entry in &mut stored.entries {
        if entry.investor_id == from {
            entry.investor_id = to.to_owned();
        }
    }
    for position in &mut stored.positions {
        if position.investor_id == from {
            position.investor_id = to.to_owned();
        }
    }
}

/// Sets the creation terms and the head alike.
fn set_created_terms(stored: &mut Stored, max_units: i64, max_units_per_investor: i64) {
    let terms = stored.entries[0].terms_after.as_mut().expect("recorded");
    terms.max_units = max_units;
    terms.max_units_per_investor = max_units_per_investor;
    for entry in &mut stored.entries {
        for terms in [&mut entry.terms_before, &mut entry.terms_after]
            .into_iter()
            .flatten()
        {
            terms.max_units = max_units;
            terms.max_units_per_investor = max_units_per_investor;
        }
    }
    stored.head.max_units = max_units;
    stored.head.max_units_per_investor = max_units_per_investor;
}

/// A character that can make text display as other text, or end it.
fn hostile_char() -> impl Strategy<Value = char> {
    prop_oneof![
        Just('\u{202E}'),
        Just('\0'),
        Just('\u{200B}'),
        Just('\n'),
        Just('\u{FEFF}'),
    ]
}

/// `text` with `c` inserted at `at` (modulo its length).
fn with_char(text: &str, c: char, at: usize) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    let at = at % (chars.len() + 1);
    chars.insert(at, c);
    chars.into_iter().collect()
}

/// One change that no release could have written.
#[derive(Clone, Debug)]
enum Mutation {
    MaxUnits(i64),
    PerInvestorCap(i64),
    LotUnits(i64),
    Minimum(i64),
    MaxTotalDemand(i64),
    LongName(usize),
    NameWith(char, usize),
    AmendedNameWith(char, usize),
    InvestorIdWith(char, usize),
    RequestIdWith(char, usize, usize),
    LongActor(usize),
    ActorWith(char, usize),
    UnknownActorOnAmendment,
    UnitsDelta(usize, i64),
    RequestedUnits(i64),
    ExpectedVersion(i64),
    UnknownKind(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let entry = 0..6usize;
    prop_oneof![
        prop_oneof![UNITS_MAX + 1..=i64::MAX, i64::MIN..=0].prop_map(Mutation::MaxUnits),
        prop_oneof![i64::MIN..0, 11..=i64::MAX].prop_map(Mutation::PerInvestorCap),
        prop_oneof![i64::MIN..0, 11..=i64::MAX].prop_map(Mutation::LotUnits),
        prop_oneof![i64::MIN..0, 6..=i64::MAX].prop_map(Mutation::Minimum),
        prop_oneof![i64::MIN..0, 1..=DEMAND_TOTAL_MAX].prop_map(Mutation::MaxTotalDemand),
        (257..20_000usize).prop_map(Mutation::LongName),
        (hostile_char(), any::<usize>()).prop_map(|(c, at)| Mutation::NameWith(c, at)),
        (hostile_char(), any::<usize>()).prop_map(|(c, at)| Mutation::AmendedNameWith(c, at)),
        (hostile_char(), any::<usize>()).prop_map(|(c, at)| Mutation::InvestorIdWith(c, at)),
        (hostile_char(), entry.clone(), any::<usize>())
            .prop_map(|(c, i, at)| Mutation::RequestIdWith(c, i, at)),
        (129..(1usize << 20)).prop_map(Mutation::LongActor),
        (
            prop_oneof![hostile_char(), Just(' '), Just('é')],
            any::<usize>()
        )
            .prop_map(|(c, at)| Mutation::ActorWith(c, at)),
        Just(Mutation::UnknownActorOnAmendment),
        (
            1..5usize,
            prop_oneof![Just(i64::MAX), Just(i64::MIN), any::<i64>()]
        )
            .prop_map(|(i, delta)| Mutation::UnitsDelta(i, delta)),
        (i64::MIN..0).prop_map(Mutation::RequestedUnits),
        (i64::MIN..0).prop_map(Mutation::ExpectedVersion),
        entry.prop_map(Mutation::UnknownKind),
    ]
}

/// Applies `mutation`; the export text for the ones only text can carry.
fn apply(mutation: &Mutation) -> String {
    let mut stored = valid();
    match *mutation {
        Mutation::MaxUnits(max_units) => set_created_terms(&mut stored, max_units, 5),
        Mutation::PerInvestorCap(cap) => set_created_terms(&mut stored, 10, cap),
        Mutation::LotUnits(lot) => stored.head.lot_units = lot,
        Mutation::Minimum(min) => stored.head.min_units_per_investor = min,
        Mutation::MaxTotalDemand(bound) => stored.head.max_total_demand = bound,
        Mutation::LongName(chars) => {
            // The creation's name: the amendment's before must then say the same.
            let name = "n".repeat(chars);
            stored.entries[0].terms_after.as_mut().unwrap().name = name.clone();
            stored.entries[3].terms_before.as_mut().unwrap().name = name;
        }
        Mutation::NameWith(c, at) => {
            let name = with_char("Deal", c, at);
            stored.entries[0].terms_after.as_mut().unwrap().name = name.clone();
            stored.entries[3].terms_before.as_mut().unwrap().name = name;
        }
        Mutation::AmendedNameWith(c, at) => {
            let name = with_char("Deal, renamed", c, at);
            stored.entries[3].terms_after.as_mut().unwrap().name = name.clone();
            stored.head.name = name;
        }
        Mutation::InvestorIdWith(c, at) => {
            rename_investor(&mut stored, "bob", &with_char("bob", c, at));
        }
        Mutation::RequestIdWith(c, i, at) => {
            let entry = &mut stored.entries[i];
            entry.request_id = with_char(&entry.request_id, c, at);
        }
        Mutation::LongActor(len) => stored.entries[1].actor = "a".repeat(len),
        Mutation::ActorWith(c, at) => {
            stored.entries[1].actor = with_char("checkout", c, at);
        }
        Mutation::UnknownActorOnAmendment => {
            stored.entries[3].actor = UNKNOWN_ACTOR.to_owned();
        }
        Mutation::UnitsDelta(i, delta) => {
            // The stored totals follow the delta as a wrapping release build would sum it.
            let entry = &mut stored.entries[i];
            let change = delta.wrapping_sub(entry.units_delta);
            if change == 0 {
                entry.units_delta = delta.wrapping_add(1);
            } else {
                entry.units_delta = delta;
                entry.investor_units_after = entry.investor_units_after.wrapping_add(change);
                for later in &mut stored.entries[i..] {
                    later.offering_units_after = later.offering_units_after.wrapping_add(change);
                }
            }
        }
        Mutation::RequestedUnits(units) => stored.entries[1].requested_units = units,
        Mutation::ExpectedVersion(version) => stored.entries[3].expected_version = version,
        Mutation::UnknownKind(i) => {
            let kind = stored.entries[i].kind.name();
            let text = export(stored);
            let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
            lines[i + 1] = lines[i + 1].replace(
                &format!("\"kind\":\"{kind}\""),
                "\"kind\":\"OFFERING_REOPENED\"",
            );
            return lines.join("\n");
        }
    }
    export(stored)
}

#[test]
fn the_valid_history_verifies() {
    let stored = valid();
    assert_eq!(
        stored
            .entries
            .iter()
            .map(|e| e.kind)
            .collect::<Vec<EntryKind>>(),
        [
            EntryKind::OfferingCreated,
            EntryKind::Subscribed,
            EntryKind::Subscribed,
            EntryKind::OfferingAmended,
            EntryKind::Cancelled,
            EntryKind::OfferingClosed
        ]
    );
    assert!(verifies(&export(stored)));
}

#[test]
fn a_ten_megabyte_name_and_a_one_megabyte_actor_fail() {
    assert!(!verifies(&apply(&Mutation::LongName(10 << 20))));
    assert!(!verifies(&apply(&Mutation::LongActor(1 << 20))));
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn an_export_no_release_could_write_never_verifies(mutation in mutation()) {
        let text = apply(&mutation);
        prop_assert!(!verifies(&text), "verified OK after {mutation:?}");
    }
}

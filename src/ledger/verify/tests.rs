use super::*;
use crate::ledger::apply::Batch;
use crate::ledger::testing::{cancel, new_offering, now, request, subscribe};

/// What a store holds after the rules wrote: the head, the history in sequence order and
/// every position.
struct Stored {
    head: Offering,
    entries: Vec<Entry>,
    positions: Vec<Position>,
}

/// Created, alice subscribes 4, bob 3, alice cancels 1.
fn stored() -> Stored {
    let (head, created) = new_offering(10, 5).first_rows(now());
    let mut batch = Batch::new(head, vec![], false, vec![], now());
    for (id, command) in [
        ("a", subscribe("alice", 4)),
        ("b", subscribe("bob", 3)),
        ("c", cancel("alice", 1)),
    ] {
        batch.apply(&request(id, command)).unwrap();
    }
    let writes = batch.into_writes();
    Stored {
        head: writes.head,
        entries: [vec![created], writes.entries].concat(),
        positions: writes.positions,
    }
}

fn verify(stored: &Stored, digests: &[Digest]) -> Report {
    let mut verifier = Verifier::new(&stored.head, digests);
    for entry in &stored.entries {
        verifier.check_entry(entry);
    }
    verifier.finish(&stored.head, &stored.positions)
}

/// Hashes the history again from `from` on, as someone covering an edit would, and points
/// the head at the new end of the chain and its Merkle tree.
fn rehash_from(stored: &mut Stored, from: usize) {
    let previous = stored.entries[from - 1].entry_hash;
    stored.head.last_hash = chain::link_all(previous, &mut stored.entries[from..]);
    regrow_tree(stored);
}

/// The head's Merkle tree made again from the entries' hashes as they now stand.
fn regrow_tree(stored: &mut Stored) {
    stored.head.tree = Frontier::of(stored.entries.iter().map(|e| &e.entry_hash));
}

#[test]
fn a_history_written_by_the_rules_verifies_clean() {
    let stored = stored();
    let report = verify(&stored, &[Digest::of(&stored.head)]);
    assert_eq!(report.problems, Vec::<String>::new());
    assert_eq!(report.entries_checked, 4);
    assert_eq!(report.first_bad_sequence, 0);
    assert_eq!((report.digests_checked, report.digests_failed), (1, 0));
}

#[test]
fn a_wrong_running_total_is_found_even_when_the_chain_was_hashed_again() {
    let mut stored = stored();
    stored.entries[2].offering_units_after += 1;
    rehash_from(&mut stored, 2);
    let report = verify(&stored, &[]);
    assert_eq!(report.first_bad_sequence, 0, "the chain itself holds");
    assert_eq!(
        report.problems,
        ["sequence 3: offering_units_after is 8 but the history sums to 7"]
    );
}

#[test]
fn an_entry_changed_in_place_breaks_the_chain_at_its_sequence() {
    let mut stored = stored();
    stored.entries[1].actor = "someone-else".into();
    let report = verify(&stored, &[]);
    assert_eq!(report.first_bad_sequence, 2);
    assert_eq!(report.problems.len(), 3, "{:?}", report.problems);
    assert!(report.problems[0].starts_with("sequence 2: entry_hash"));
    assert!(report.problems[1].starts_with("head last_hash"));
    assert!(report.problems[2].starts_with("head Merkle tree of size 4"));
}

#[test]
fn a_digest_whose_merkle_root_differs_fails_and_a_head_tree_that_differs_is_reported() {
    let mut stored = stored();
    let mut taken = Digest::of(&stored.head);
    assert_eq!(
        taken.root_hash,
        Some(Frontier::of(stored.entries.iter().map(|e| &e.entry_hash)).root())
    );
    taken.root_hash = Some([3; 32]);
    stored.head.tree = Frontier::of(stored.entries[..3].iter().map(|e| &e.entry_hash));
    let report = verify(&stored, &[taken]);
    assert_eq!((report.digests_checked, report.digests_failed), (1, 1));
    assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
    assert!(report.problems[0].contains("the Merkle tree of the history gives root"));
    assert!(report.problems[1].starts_with("head Merkle tree of size 3"));
}

#[test]
fn an_earlier_digest_catches_a_history_hashed_again_after_an_edit() {
    let mut stored = stored();
    let mut taken = Digest::of(&stored.head);
    taken.sequence = 2;
    taken.entry_hash = stored.entries[1].entry_hash;
    taken.record_time = Some(stored.entries[1].record_time);
    stored.entries[1].actor = "someone-else".into();
    rehash_from(&mut stored, 1);
    let report = verify(&stored, &[taken]);
    assert_eq!(report.first_bad_sequence, 0);
    assert_eq!((report.digests_checked, report.digests_failed), (1, 1));
}

#[test]
fn a_missing_entry_is_a_gap_and_the_head_disagrees() {
    let mut stored = stored();
    stored.entries.remove(2);
    let report = verify(&stored, &[]);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p == "sequence 4 follows 2: not gapless"),
        "{:?}",
        report.problems
    );
    assert_eq!(report.first_bad_sequence, 4, "the chain skips an entry too");
}

#[test]
fn a_stored_position_that_disagrees_with_the_history_is_reported() {
    let mut stored = stored();
    let alice = stored
        .positions
        .iter_mut()
        .find(|p| p.investor_id == "alice")
        .unwrap();
    alice.units = 4;
    let report = verify(&stored, &[]);
    assert_eq!(
        report.problems,
        ["investor \"alice\": position holds 4 units and 0 demand but the history sums to 3 and 0"]
    );
}

#[test]
fn a_position_over_the_per_investor_cap_in_force_is_reported() {
    let mut stored = stored();
    // Bob's 3 made 6: within the offering's 10, over the cap of 5 per investor.
    let bob = &mut stored.entries[2];
    bob.units_delta = 6;
    bob.investor_units_after = 6;
    for (entry, total) in stored.entries[2..].iter_mut().zip([10, 9]) {
        entry.offering_units_after = total;
    }
    stored.head.subscribed_units = 9;
    stored.positions.iter_mut().for_each(|p| {
        if p.investor_id == "bob" {
            p.units = 6;
        }
    });
    rehash_from(&mut stored, 2);
    let report = verify(&stored, &[]);
    assert_eq!(
        report.problems,
        ["sequence 3: investor \"bob\" units 6, outside 0..=5"]
    );
}

#[test]
fn a_lifecycle_out_of_order_is_reported() {
    let mut stored = stored();
    stored.entries[3].kind = EntryKind::OfferingFinalized;
    stored.entries[3].investor_id.clear();
    let report = verify(&stored, &[]);
    assert!(
        report.problems.iter().any(|p| p
            .starts_with("sequence 4: OfferingFinalized is not allowed after status Some(Open)")),
        "{:?}",
        report.problems
    );
}

/// The problems of the stored history after `change`, with every hash recomputed (as an
/// editor covering their tracks would) so that only the rules can tell.
fn problems_after(change: impl FnOnce(&mut Stored)) -> Vec<String> {
    let mut stored = stored();
    change(&mut stored);
    stored.head.last_hash = chain::link_all(chain::GENESIS, &mut stored.entries);
    regrow_tree(&mut stored);
    let report = verify(&stored, &[]);
    assert_eq!(report.first_bad_sequence, 0, "the chain itself holds");
    report.problems
}

/// Asserts that one of `problems` starts with `prefix`.
fn assert_reported(problems: &[String], prefix: &str) {
    assert!(
        problems.iter().any(|p| p.starts_with(prefix)),
        "no problem starts with {prefix:?}: {problems:?}"
    );
}

/// The creation terms and the head changed alike, so that only the rule can object.
fn set_terms(stored: &mut Stored, change: impl Fn(&mut Terms)) {
    change(stored.entries[0].terms_after.as_mut().unwrap());
    let mut terms = stored.head.terms();
    change(&mut terms);
    stored.head.name = terms.name;
    stored.head.max_units = terms.max_units;
    stored.head.max_units_per_investor = terms.max_units_per_investor;
}

#[test]
fn a_cap_no_release_accepts_fails_naming_the_entry() {
    let problems = problems_after(|s| set_terms(s, |t| t.max_units = i64::MAX));
    assert_reported(&problems, "sequence 1: max_units is 9223372036854775807");
    let problems = problems_after(|s| set_terms(s, |t| t.max_units_per_investor = -1));
    assert_reported(&problems, "sequence 1: max_units_per_investor is -1");
}

#[test]
fn a_negative_lot_fails_at_the_creation_entry() {
    let problems = problems_after(|s| s.head.lot_units = -3);
    assert_reported(&problems, "sequence 1: lot_units is -3");
}

#[test]
fn a_minimum_off_the_lot_fails() {
    let problems = problems_after(|s| {
        s.head.lot_units = 5;
        s.head.min_units_per_investor = 3;
    });
    assert_reported(&problems, "sequence 1: min_units_per_investor is 3");
}

#[test]
fn a_huge_name_fails_and_the_report_stays_short() {
    let problems = problems_after(|s| set_terms(s, |t| t.name = "x".repeat(10 << 20)));
    assert_reported(&problems, "sequence 1: name must be 1-256 characters");
    assert!(problems.iter().all(|p| p.len() < 1000), "{problems:?}");
}

#[test]
fn a_name_with_a_bidi_override_fails_when_written_by_a_release_that_refused_it() {
    let problems = problems_after(|s| set_terms(s, |t| t.name = "evil\u{202E}gnp".into()));
    assert_reported(
        &problems,
        "sequence 1: name must not contain control or format",
    );
    let problems = problems_after(|s| set_terms(s, |t| t.name = "nul\0".into()));
    assert_reported(&problems, "sequence 1: name must not contain");
}

#[test]
fn an_investor_id_or_request_id_outside_the_id_alphabet_fails() {
    let problems = problems_after(|s| {
        for entry in &mut s.entries[1..] {
            entry.investor_id = entry.investor_id.replace("bob", "bob\u{202E}");
        }
        s.positions
            .iter_mut()
            .for_each(|p| p.investor_id = p.investor_id.replace("bob", "bob\u{202E}"));
    });
    assert_reported(&problems, "sequence 3: investor_id contains '\\u{202e}'");
    let problems = problems_after(|s| s.entries[1].request_id = "a\nb".into());
    assert_reported(&problems, "sequence 2: request_id contains '\\n'");
    let problems = problems_after(|s| s.entries[0].offering_id.push('x'));
    assert_reported(
        &problems,
        "sequence 1: offering_id \"dealx\" is not the head's",
    );
}

#[test]
fn an_actor_of_any_other_form_fails_and_the_report_stays_short() {
    let problems = problems_after(|s| s.entries[1].actor = "a".repeat(1 << 20));
    assert_reported(&problems, "sequence 2: actor must be 1-128 characters");
    assert!(problems.iter().all(|p| p.len() < 1000), "{problems:?}");
    let problems = problems_after(|s| s.entries[1].actor = "ops\n".into());
    assert_reported(&problems, "sequence 2: actor must be");
}

#[test]
fn system_is_the_clocks_actor_or_a_second_release_principals() {
    // The second release let a principal be named "system", and wrote no terms.
    let problems = problems_after(|s| s.entries[1].actor = SYSTEM_ACTOR.into());
    assert_eq!(problems, Vec::<String>::new());
    let problems = problems_after(|s| s.entries[0].actor = SYSTEM_ACTOR.into());
    assert_reported(
        &problems,
        "sequence 1: actor \"system\" on a OFFERING_CREATED",
    );
    let problems = problems_after(|s| s.entries[1].request_id = "@close_time".into());
    assert_reported(
        &problems,
        "sequence 2: request_id \"@close_time\" is the clock's",
    );
}

#[test]
fn unknown_is_only_on_what_the_first_release_wrote() {
    // Terms on the creation entry were recorded from the third release on.
    let problems = problems_after(|s| s.entries[0].actor = UNKNOWN_ACTOR.into());
    assert_reported(
        &problems,
        "sequence 1: actor \"unknown\" on a OFFERING_CREATED",
    );
    let problems = problems_after(|s| {
        s.entries[0].terms_after = None;
        s.entries[2].actor = UNKNOWN_ACTOR.into();
    });
    assert_eq!(
        problems,
        Vec::<String>::new(),
        "a subscription it could write"
    );
}

/// The first release wrote no terms and no actor, and its name rule let format characters
/// through: such a history verifies, and so does one amended since.
#[test]
fn a_history_the_first_release_wrote_verifies() {
    let old = |s: &mut Stored| {
        s.entries[0].terms_after = None;
        s.head.name = "Deal\u{200B}".into();
        for entry in &mut s.entries {
            entry.actor = UNKNOWN_ACTOR.into();
        }
    };
    assert_eq!(problems_after(old), Vec::<String>::new());
    let problems = problems_after(|s| {
        old(s);
        s.entries[0].actor = "ops".into();
    });
    assert_reported(
        &problems,
        "sequence 1: name must not contain control or format",
    );
}

#[test]
fn an_offering_created_without_terms_and_amended_later_verifies() {
    let problems = problems_after(|s| {
        s.entries[0].terms_after = None;
        let before = s.head.terms();
        let after = Terms {
            max_units: 20,
            ..before.clone()
        };
        let mut amended = s.entries[3].clone();
        amended.sequence = 5;
        amended.kind = EntryKind::OfferingAmended;
        amended.investor_id.clear();
        amended.units_delta = 0;
        amended.investor_units_after = 0;
        amended.requested_units = 0;
        amended.request_id = "amend".into();
        amended.terms_before = Some(before);
        amended.terms_after = Some(after);
        s.entries.push(amended);
        s.head.max_units = 20;
        s.head.version = 5;
    });
    assert_eq!(problems, Vec::<String>::new());
}

#[test]
fn a_sum_past_i64_is_a_problem_of_the_entry_not_a_wrap() {
    let problems = problems_after(|s| {
        s.entries[1].units_delta = i64::MAX;
        s.entries[2].units_delta = i64::MAX;
    });
    assert_reported(&problems, "sequence 3: offering_units_after overflows");
}

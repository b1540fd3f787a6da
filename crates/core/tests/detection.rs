//! Detection: the incident rule, the lifecycle on a fake clock, arrival-order independence, and racing writers.

use std::sync::Arc;

use proptest::prelude::*;
use tokenwatch_core::detect::{
    CredentialState, Detector, MemoryStore, NoticeKind, Observation, PENDING_GRACE_SECONDS, Policy,
    observe_all,
};
use tokenwatch_core::record::Record;
use tokenwatch_core::{ErrorCodes, Failure, Timestamp};

const T0: i64 = 1_780_000_000;

fn failure(id: &str, key: &str, at: i64) -> Failure {
    let json = format!(
        r#"{{"eventID":"{id}","eventTime":"{}","errorCode":"ExpiredToken","eventSource":"s3.amazonaws.com","eventName":"GetObject",
        "awsRegion":"eu-west-1","sourceIPAddress":"10.0.0.{}","userAgent":"agent-{}",
        "userIdentity":{{"type":"AssumedRole","arn":"arn:aws:sts::111122223333:assumed-role/etl/job-{key}","accountId":"111122223333",
        "accessKeyId":"{key}","sessionContext":{{"sessionIssuer":{{"arn":"arn:aws:iam::111122223333:role/etl"}},
        "attributes":{{"creationDate":"{}"}}}}}}}}"#,
        Timestamp::from_unix(at).rfc3339(),
        at % 3,
        at % 11,
        Timestamp::from_unix(T0 - 3600).rfc3339(),
    );
    let record = Record::from_slice(json.as_bytes()).expect("record");
    Failure::from_record(&record, &ErrorCodes::default())
        .expect("valid")
        .expect("failure")
}

fn observation(key: &str, times: &[i64]) -> Observation {
    let failures: Vec<Failure> = times
        .iter()
        .enumerate()
        .map(|(i, t)| failure(&format!("{key}-{i}-{t}"), key, *t))
        .collect();
    observe_all(&failures)
        .into_values()
        .next()
        .expect("one credential")
}

fn at(offset: i64) -> Timestamp {
    Timestamp::from_unix(T0 + offset)
}

#[test]
fn the_rule_needs_both_count_and_span() {
    let policy = Policy::default();
    assert!(
        !observation("ASIA1", &[T0, T0 + 100, T0 + 200]).meets(&policy),
        "span too short"
    );
    assert!(
        !observation("ASIA1", &[T0, T0 + 400]).meets(&policy),
        "too few"
    );
    assert!(observation("ASIA1", &[T0, T0 + 100, T0 + 300]).meets(&policy));
    let strict = Policy {
        min_failures: 5,
        min_span_seconds: 60,
        ..policy
    };
    assert!(!observation("ASIA1", &[T0, T0 + 100, T0 + 300]).meets(&strict));
}

#[test]
fn lifecycle_open_renotify_resolve_reopen() {
    let policy = Policy::default();
    let (mut state, due) = CredentialState::first(
        &observation("ASIA1", &[T0, T0 + 100, T0 + 200]),
        &policy,
        at(260),
    );
    assert_eq!(due, None, "below the span");

    assert_eq!(
        state.observe(&observation("ASIA1", &[T0 + 400]), &policy, at(460)),
        Some(NoticeKind::Opened)
    );
    assert_eq!(state.observation.failures, 4);
    // Not confirmed yet: more failures do not add a second notice.
    assert_eq!(
        state.observe(&observation("ASIA1", &[T0 + 500]), &policy, at(560)),
        None
    );
    state.mark_sent(NoticeKind::Opened, at(570));
    assert_eq!(state.pending, None);

    // Within the re-notify interval: nothing, however many failures.
    assert_eq!(
        state.observe(
            &observation("ASIA1", &[T0 + 1000, T0 + 2000]),
            &policy,
            at(2060)
        ),
        None
    );
    assert_eq!(state.sweep(&policy, at(3000)), None);
    // An hour after the last notification, with new failures: one update.
    assert_eq!(
        state.observe(&observation("ASIA1", &[T0 + 4100]), &policy, at(570 + 3600)),
        Some(NoticeKind::Update)
    );
    state.mark_sent(NoticeKind::Update, at(570 + 3600));
    assert_eq!(state.notified_failures, 8);

    // Quiet: resolved exactly `quiet` after the last failure, by the sweep.
    let last = 4100;
    assert_eq!(state.sweep(&policy, at(last + 1799)), None);
    assert_eq!(
        state.sweep(&policy, at(last + 1800)),
        Some(NoticeKind::Resolved)
    );
    state.mark_sent(NoticeKind::Resolved, at(last + 1800));
    assert!(!state.is_open());

    // A late delivery of an old failure counts but does not reopen.
    assert_eq!(
        state.observe(
            &observation("ASIA1", &[T0 + 3000]),
            &policy,
            at(last + 2000)
        ),
        None
    );
    assert_eq!(state.observation.failures, 9);
    // A new failure means the process is at it again.
    assert_eq!(
        state.observe(&observation("ASIA1", &[T0 + 9000]), &policy, at(9060)),
        Some(NoticeKind::Opened)
    );
}

#[test]
fn an_unconfirmed_notice_is_sent_again_by_the_sweep_after_a_grace() {
    let policy = Policy::default();
    let (mut state, due) = CredentialState::first(
        &observation("ASIA1", &[T0, T0 + 300, T0 + 600]),
        &policy,
        at(600),
    );
    assert_eq!(due, Some(NoticeKind::Opened));
    assert_eq!(
        state.sweep(&policy, at(600 + PENDING_GRACE_SECONDS - 1)),
        None
    );
    assert_eq!(
        state.sweep(&policy, at(600 + PENDING_GRACE_SECONDS)),
        Some(NoticeKind::Opened)
    );
    state.mark_sent(NoticeKind::Opened, at(1000));
    assert_eq!(state.sweep(&policy, at(1100)), None);
}

#[test]
fn a_notice_its_sender_gave_up_on_is_sent_by_the_next_sweep_and_only_once() {
    let policy = Policy::default();
    let (mut state, due) = CredentialState::first(
        &observation("ASIA1", &[T0, T0 + 300, T0 + 600]),
        &policy,
        at(600),
    );
    assert_eq!(due, Some(NoticeKind::Opened));
    // Giving up on another kind of notice changes nothing.
    state.mark_unsent(NoticeKind::Resolved);
    assert_eq!(state.sweep(&policy, at(601)), None);
    state.mark_unsent(NoticeKind::Opened);
    assert_eq!(state.sweep(&policy, at(601)), Some(NoticeKind::Opened));
    // The sweep is now the sender: until it too gives up, the grace period applies again.
    assert_eq!(state.sweep(&policy, at(602)), None);
    state.mark_sent(NoticeKind::Opened, at(603));
    assert_eq!(state.pending, None);
    assert!(!state.abandoned);
}

#[test]
fn an_incident_whose_opening_was_never_sent_is_announced_before_it_resolves() {
    let policy = Policy::default();
    let (mut state, _) = CredentialState::first(
        &observation("ASIA1", &[T0, T0 + 300, T0 + 600]),
        &policy,
        at(600),
    );
    state.mark_unsent(NoticeKind::Opened);
    let quiet = 600 + policy.quiet_seconds;
    assert_eq!(state.sweep(&policy, at(quiet)), Some(NoticeKind::Opened));
    state.mark_sent(NoticeKind::Opened, at(quiet));
    assert_eq!(
        state.sweep(&policy, at(quiet + 300)),
        Some(NoticeKind::Resolved)
    );
}

#[test]
fn detector_over_a_store_notifies_once_and_resolves() {
    let detector = Detector::new(MemoryStore::new(), Policy::default());
    let obs = observation("ASIA1", &[T0, T0 + 300, T0 + 600]);
    let first = pollster::block_on(detector.observe(&obs, at(700)))
        .expect("store")
        .expect("notice");
    assert_eq!(first.kind, NoticeKind::Opened);
    pollster::block_on(detector.mark_sent(&first, at(701))).expect("store");
    // The same delivery again (a retry) merges but does not notify.
    assert_eq!(
        pollster::block_on(detector.observe(&obs, at(710))).expect("store"),
        None
    );
    let swept = pollster::block_on(detector.sweep(at(600 + 1800))).expect("store");
    assert_eq!(
        swept.iter().map(|n| n.kind).collect::<Vec<_>>(),
        [NoticeKind::Resolved]
    );
    pollster::block_on(detector.mark_sent(&swept[0], at(2500))).expect("store");
    assert!(
        pollster::block_on(detector.sweep(at(9000)))
            .expect("store")
            .is_empty()
    );
}

#[test]
fn racing_writers_open_each_incident_exactly_once() {
    let detector = Arc::new(Detector::new(MemoryStore::new(), Policy::default()));
    let keys: Vec<String> = (0..300).map(|i| format!("ASIARACE{i:04}")).collect();
    let batches: Vec<Observation> = keys
        .iter()
        .map(|k| observation(k, &[T0, T0 + 300, T0 + 600]))
        .collect();
    let batches = Arc::new(batches);
    let opened: usize = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let detector = Arc::clone(&detector);
                let batches = Arc::clone(&batches);
                scope.spawn(move || {
                    batches
                        .iter()
                        .filter_map(|obs| {
                            pollster::block_on(detector.observe(obs, at(700))).expect("store")
                        })
                        .filter(|notice| notice.kind == NoticeKind::Opened)
                        .count()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("worker")).sum()
    });
    assert_eq!(opened, keys.len(), "one Opened per credential, whoever won");
    for state in detector.store().snapshot() {
        assert_eq!(
            state.observation.failures, 12,
            "all four writers' failures merged"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn arrival_order_does_not_change_the_incidents(
        events in prop::collection::vec((0usize..4, 0i64..7200), 1..60),
        order in any::<prop::sample::Index>(),
        batch in 1usize..8,
    ) {
        let failures: Vec<Failure> = events
            .iter()
            .enumerate()
            .map(|(i, (cred, t))| failure(&format!("e{i}"), &format!("ASIAPROP{cred}"), T0 + t))
            .collect();
        let mut shuffled = failures.clone();
        // A deterministic shuffle from the drawn index.
        let mut seed = order.index(usize::MAX) as u64 | 1;
        for i in (1..shuffled.len()).rev() {
            seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17;
            shuffled.swap(i, (seed % (i as u64 + 1)) as usize);
        }
        let now = at(8000);
        let run = |input: &[Failure]| {
            let detector = Detector::new(MemoryStore::new(), Policy::default());
            let mut opened = std::collections::BTreeMap::new();
            for chunk in input.chunks(batch) {
                for obs in observe_all(chunk).values() {
                    if let Some(n) = pollster::block_on(detector.observe(obs, now)).expect("store") {
                        *opened.entry(obs.credential.clone()).or_insert(0) += usize::from(n.kind == NoticeKind::Opened);
                    }
                }
            }
            (detector.store().snapshot(), opened)
        };
        let (in_order, opened_in_order) = run(&failures);
        let (permuted, opened_permuted) = run(&shuffled);
        prop_assert_eq!(&in_order, &permuted);
        prop_assert_eq!(&opened_in_order, &opened_permuted);
        for state in &in_order {
            let expected = usize::from(state.observation.meets(&Policy::default()));
            prop_assert_eq!(opened_in_order.get(&state.observation.credential).copied().unwrap_or(0), expected);
        }
    }
}

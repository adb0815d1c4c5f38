//! Delivery, retry, resend and the dedup claim on the in-memory fakes: the Graph port's
//! [`FakeGraph`], [`MemoryStore`] for every store port and [`MemorySecrets`]. The same
//! paths run against DynamoDB Local, moto and the Graph simulator in `tests/`.

use super::event::{Conversion, EventName};
use super::*;
use crate::graph::fake::FakeGraph;
use crate::meta::connection::{MetaDeps, exchange_code};
use crate::secrets::{CachedSecrets, MemorySecrets};
use crate::store::memory::MemoryStore;
use crate::store::{ConnectionStatus, Connections, ConversionEvents};

const ACCOUNT: &str = "acme";
const APP_SECRET_ID: &str = "stack/webhook";

struct World {
    deps: CapiDeps,
    graph: Arc<FakeGraph>,
    store: Arc<MemoryStore>,
}

async fn world(connected: bool) -> World {
    let graph = Arc::new(FakeGraph::new());
    let store = Arc::new(MemoryStore::default());
    let secrets = Arc::new(MemorySecrets::with(
        APP_SECRET_ID,
        r#"{"app_secret":"app-secret","verify_token":"v"}"#,
    ));
    let meta = MetaDeps {
        graph: graph.clone(),
        connections: store.clone(),
        secrets: Arc::new(CachedSecrets::new(
            secrets.clone(),
            Duration::from_secs(300),
        )),
        secret_writer: secrets,
        app_secret_id: APP_SECRET_ID.into(),
        app_id: "1234".into(),
        token_secret_prefix: "stack/meta-token/".into(),
    };
    if connected {
        exchange_code(&meta, ACCOUNT, "code-1", None, crate::time::now_millis())
            .await
            .expect("the fake connects");
    }
    let deps = CapiDeps {
        accounts: store.clone(),
        conversations: store.clone(),
        settings: store.clone(),
        events: store.clone(),
        meta: Arc::new(meta),
        policy: RetryPolicy {
            attempts: 3,
            base_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
            budget: Duration::from_millis(500),
            lease: Duration::from_secs(60),
            resend_delay: Duration::from_secs(60),
            max_resend_delay: Duration::from_secs(3600),
        },
        audit_ttl_days: None,
    };
    World { deps, graph, store }
}

fn record(w: &World, event_id: &str) -> EventRecord {
    let now = crate::time::now_millis();
    let conversion = Conversion {
        event_name: EventName::parse("Purchase").unwrap(),
        event_id: event_id.into(),
        event_time: now / 1000,
        waba_id: "102290129340398".into(),
        ctwa_clid: format!("ARAkLkA8rmlFeiCktEJQ-{event_id}"),
        currency: Some(event::Currency::parse("INR").unwrap()),
        value: Some(1499.0),
        ph: None,
        em: None,
        custom_data: None,
    };
    new_record(
        &w.deps,
        &conversion,
        RecordContext {
            account_id: ACCOUNT.into(),
            dataset_id: "1500000000000".into(),
            conversation_id: Some("conv1".into()),
            test_event_code: None,
            warnings: Vec::new(),
            ad_id: Some("120210000000000001".into()),
        },
        now,
    )
}

async fn stored(w: &World, event_id: &str) -> EventRecord {
    w.store
        .get_event(ACCOUNT, event_id)
        .await
        .unwrap()
        .expect("the record is kept")
}

#[tokio::test]
async fn delivers_once_and_a_duplicate_gets_the_first_outcome() {
    let w = world(true).await;
    let first = deliver(&w.deps, vec![record(&w, "ev1")]).await.unwrap();
    assert_eq!(first[0].record.status, EventStatus::Delivered);
    assert!(!first[0].duplicate);
    assert_eq!(first[0].record.events_received, Some(1));
    // A client retry with the same event id: claimed already, not sent again.
    let again = deliver(&w.deps, vec![record(&w, "ev1")]).await.unwrap();
    assert!(again[0].duplicate);
    assert_eq!(again[0].record.status, EventStatus::Delivered);
    assert_eq!(w.graph.sent().len(), 1, "one Meta call for two requests");
    let sent = &w.graph.sent()[0];
    assert_eq!(sent.events[0]["event_id"], "ev1");
    assert_eq!(sent.token.expose(), "long-short-code-1");
}

#[tokio::test]
async fn concurrent_duplicates_make_one_meta_call() {
    let w = world(true).await;
    let (a, b) = tokio::join!(
        deliver(&w.deps, vec![record(&w, "ev-race")]),
        deliver(&w.deps, vec![record(&w, "ev-race")])
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(w.graph.sent().len(), 1);
    assert_ne!(a[0].duplicate, b[0].duplicate, "exactly one claim wins");
    assert_eq!(b[0].record.status, EventStatus::Delivered);
    assert_eq!(a[0].record.status, EventStatus::Delivered);
}

#[tokio::test]
async fn transient_failures_are_retried_within_the_call() {
    let w = world(true).await;
    w.graph.answer_events(Err(FakeGraph::error(503, 2, None)));
    w.graph.answer_events(Err(FakeGraph::error(400, 613, None)));
    let out = deliver(&w.deps, vec![record(&w, "ev-retry")])
        .await
        .unwrap();
    assert_eq!(out[0].record.status, EventStatus::Delivered);
    assert_eq!(out[0].record.attempts, 3);
    assert_eq!(w.graph.sent().len(), 3);
    assert_eq!(stored(&w, "ev-retry").await.status, EventStatus::Delivered);
}

#[tokio::test]
async fn a_permanent_refusal_fails_without_retrying() {
    let w = world(true).await;
    w.graph
        .answer_events(Err(FakeGraph::error(400, 100, Some(2_804_087))));
    let out = deliver(&w.deps, vec![record(&w, "ev-bad")]).await.unwrap();
    let rec = &out[0].record;
    assert_eq!(rec.status, EventStatus::Failed);
    assert_eq!(FailureReason::of(rec), Some(FailureReason::MetaRefused));
    assert_eq!(
        rec.error.as_ref().unwrap()["meta_error"]["error_subcode"],
        2_804_087
    );
    assert_eq!(rec.fbtrace_id.as_deref(), Some("FakeTrace"));
    assert_eq!(rec.next_attempt_at_ms, None);
    assert_eq!(w.graph.sent().len(), 1);
}

#[tokio::test]
async fn one_bad_event_does_not_fail_the_others() {
    let w = world(true).await;
    let invalid = Err(FakeGraph::error(400, 100, Some(2_804_087)));
    // The pair is refused, then the halves: the first goes, the second is the bad one.
    w.graph.answer_events(invalid.clone());
    w.graph.answer_events(Ok(EventsResponse {
        events_received: 1,
        ..Default::default()
    }));
    w.graph.answer_events(invalid);
    let out = deliver(&w.deps, vec![record(&w, "ev-a"), record(&w, "ev-b")])
        .await
        .unwrap();
    assert_eq!(out[0].record.event_id, "ev-a");
    assert_eq!(out[0].record.status, EventStatus::Delivered);
    assert_eq!(out[1].record.status, EventStatus::Failed);
    assert_eq!(w.graph.sent().len(), 3);
}

#[tokio::test]
async fn a_refused_token_fails_the_event_and_breaks_the_connection() {
    let w = world(true).await;
    w.graph
        .answer_events(Err(FakeGraph::error(401, 190, Some(463))));
    // The re-read after a 190 finds the same token: no second call with it.
    let out = deliver(&w.deps, vec![record(&w, "ev-190")]).await.unwrap();
    let rec = &out[0].record;
    assert_eq!(rec.status, EventStatus::Failed);
    assert_eq!(
        FailureReason::of(rec),
        Some(FailureReason::MetaTokenInvalid)
    );
    let conn = w.store.get_connection(ACCOUNT).await.unwrap().unwrap();
    assert_eq!(conn.status, ConnectionStatus::Broken);
    // The next conversion is not sent with the refused token.
    let next = deliver(&w.deps, vec![record(&w, "ev-after")])
        .await
        .unwrap();
    assert_eq!(
        FailureReason::of(&next[0].record),
        Some(FailureReason::MetaNotConnected)
    );
    assert_eq!(w.graph.sent().len(), 1);
}

#[tokio::test]
async fn without_a_connection_nothing_is_sent() {
    let w = world(false).await;
    let out = deliver(&w.deps, vec![record(&w, "ev-nc")]).await.unwrap();
    let rec = &out[0].record;
    assert_eq!(rec.status, EventStatus::Failed);
    assert_eq!(
        FailureReason::of(rec),
        Some(FailureReason::MetaNotConnected)
    );
    assert!(FailureReason::MetaNotConnected.needs_reconnect());
    assert!(w.graph.sent().is_empty());
}

#[tokio::test]
async fn a_corrupt_payload_fails_alone_and_is_never_sent() {
    let w = world(true).await;
    let mut corrupt = record(&w, "ev-corrupt");
    corrupt.payload = "{not json".into();
    let out = deliver(&w.deps, vec![corrupt, record(&w, "ev-fine")])
        .await
        .unwrap();
    assert_eq!(
        FailureReason::of(&out[0].record),
        Some(FailureReason::CorruptPayload)
    );
    assert_eq!(out[1].record.status, EventStatus::Delivered);
    let sent = w.graph.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].events.len(), 1);
    assert_eq!(sent[0].events[0]["event_id"], "ev-fine");
}

#[tokio::test]
async fn still_failing_stays_pending_and_the_resend_job_delivers_it() {
    let w = world(true).await;
    for _ in 0..3 {
        w.graph.answer_events(Err(FakeGraph::error(500, 2, None)));
    }
    let out = deliver(&w.deps, vec![record(&w, "ev-later")])
        .await
        .unwrap();
    let rec = &out[0].record;
    assert_eq!(rec.status, EventStatus::Pending);
    let next = rec.next_attempt_at_ms.expect("a time to try again");
    let now = crate::time::now_millis();
    assert!(next >= now + 59_000, "the resend delay applies");
    // Not due yet: nothing happens.
    let far = std::time::Instant::now() + Duration::from_secs(30);
    let early = resend_due(&w.deps, now, 10, far).await.unwrap();
    assert_eq!(early.due, 0);
    // Due: sent again with the same event id, and delivered.
    let report = resend_due(&w.deps, next + 1, 10, far).await.unwrap();
    assert_eq!((report.due, report.delivered), (1, 1), "{report:?}");
    let rec = stored(&w, "ev-later").await;
    assert_eq!(rec.status, EventStatus::Delivered);
    assert_eq!(rec.attempts, 4);
    let sent = w.graph.sent();
    assert_eq!(sent.len(), 4);
    assert!(sent.iter().all(|s| s.events[0]["event_id"] == "ev-later"));
    // Delivered is final: a later run has nothing to do.
    let after = resend_due(&w.deps, next + 10_000_000, 10, far)
        .await
        .unwrap();
    assert_eq!(after.delivered, 0);
    assert_eq!(w.graph.sent().len(), 4);
}

#[tokio::test]
async fn the_resend_job_gives_up_on_events_meta_would_refuse_as_too_old() {
    let w = world(true).await;
    for _ in 0..3 {
        w.graph.answer_events(Err(FakeGraph::error(500, 2, None)));
    }
    let mut old = record(&w, "ev-old");
    old.event_time = crate::time::now_secs() - MAX_EVENT_AGE_SECS + 60;
    let out = deliver(&w.deps, vec![old]).await.unwrap();
    assert_eq!(out[0].record.status, EventStatus::Pending);
    // Eight days later it may not be sent any more.
    let later = crate::time::now_millis() + 8 * 86_400_000;
    let far = std::time::Instant::now() + Duration::from_secs(30);
    let mut rec = stored(&w, "ev-old").await;
    rec.event_time -= 2 * 86_400;
    w.store.save_event(&rec, &rec.lease_id).await.unwrap();
    let report = resend_due(&w.deps, later, 10, far).await.unwrap();
    assert_eq!(report.failed, 1, "{report:?}");
    let rec = stored(&w, "ev-old").await;
    assert_eq!(FailureReason::of(&rec), Some(FailureReason::TooOld));
    assert_eq!(w.graph.sent().len(), 3, "not sent again");
}

#[tokio::test]
async fn the_dedup_claim_is_conditional() {
    let w = world(true).await;
    let rec = record(&w, "ev-claim");
    assert!(w.store.claim_event(&rec).await.unwrap());
    assert!(!w.store.claim_event(&rec).await.unwrap());
    // Only the lease holder settles it.
    let mut done = rec.clone();
    done.status = EventStatus::Delivered;
    assert!(!w.store.save_event(&done, "someone-else").await.unwrap());
    assert!(w.store.save_event(&done, &rec.lease_id).await.unwrap());
}

mod attribution {
    use super::*;
    use crate::capi::conversion::{AccountContext, ConversionBody, NO_CLICK_BEFORE, prepare};
    use crate::domain::{Channel, Click, Referral};
    use crate::store::{ClickRecord, Conversations};

    const DAY_MS: i64 = 86_400_000;

    async fn click(w: &World, ad: &str, at_ms: i64) {
        let rec = ClickRecord {
            account_id: ACCOUNT.into(),
            customer_key: "wa:919876543210".into(),
            click: Click {
                conversation_id: "conv1".into(),
                message_id: format!("wamid.{ad}"),
                channel: Channel::Cloud,
                clicked_at_ms: at_ms,
                referral: Referral {
                    ctwa_clid: Some(format!("clid-{ad}")),
                    source_id: Some(ad.into()),
                    ..Default::default()
                },
            },
        };
        assert!(w.store.record_click(&rec).await.unwrap());
    }

    fn purchase(event_time_s: i64) -> ConversionBody {
        serde_json::from_value(serde_json::json!({
            "phone": "0091 98765 43210",
            "event_name": "Purchase",
            "currency": "INR",
            "value": 1499,
            "event_time": event_time_s,
        }))
        .unwrap()
    }

    fn ctx() -> AccountContext {
        AccountContext {
            account_id: ACCOUNT.into(),
            waba_id: "102290129340398".into(),
            dataset_id: "1500000000000".into(),
        }
    }

    async fn credited(w: &World, event_time_s: i64) -> Result<(String, Vec<String>), String> {
        let now = crate::time::now_millis();
        match prepare(&w.deps, &ctx(), purchase(event_time_s), now)
            .await
            .unwrap()
        {
            Prepared::Ready(r) => Ok((r.conversion.ctwa_clid.clone(), r.warnings.clone())),
            Prepared::NoClick(reason) => Err(reason.to_string()),
        }
    }

    use crate::capi::conversion::Prepared;

    #[tokio::test]
    async fn the_last_click_is_the_one_before_the_conversion() {
        let w = world(true).await;
        let now = crate::time::now_millis();
        click(&w, "111", now - 5 * DAY_MS).await;
        click(&w, "222", now - 3_600_000).await;
        let now_s = now / 1000;
        // Three days ago the customer had only seen ad 111.
        assert_eq!(
            credited(&w, now_s - 3 * 86_400).await.unwrap().0,
            "clid-111"
        );
        // Now, the newest click.
        assert_eq!(credited(&w, now_s).await.unwrap().0, "clid-222");
        // Within the clock-skew tolerance a click counts as before.
        let skew = (crate::capi::CLICK_CLOCK_SKEW_MS / 1000) - 5;
        assert_eq!(
            credited(&w, (now - 3_600_000) / 1000 - skew)
                .await
                .unwrap()
                .0,
            "clid-222"
        );
        // Before every click: nothing is sent, with its own reason.
        assert_eq!(
            credited(&w, now_s - 6 * 86_400).await.unwrap_err(),
            NO_CLICK_BEFORE
        );
    }

    #[tokio::test]
    async fn the_seven_day_warning_runs_from_the_click_to_the_conversion() {
        let w = world(true).await;
        let now = crate::time::now_millis();
        click(&w, "333", now - 9 * DAY_MS).await;
        let now_s = now / 1000;
        // Six days from click to conversion: no warning, though the click is 9 days old.
        let (_, warnings) = credited(&w, now_s - 3 * 86_400).await.unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        // Nine days from click to conversion: warned.
        let (_, warnings) = credited(&w, now_s).await.unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("before event_time"));
    }
}

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
            // Twice this is the requests' time in a delivery: more than MIN_SEND_TIME.
            budget: Duration::from_secs(1),
            lease: Duration::from_secs(60),
            resend_delay: Duration::from_secs(60),
            max_resend_delay: Duration::from_secs(3600),
            click_wait: Duration::from_secs(900),
        },
        audit_ttl_days: None,
        partner_agent: Some("ctwa-tests".into()),
    };
    World { deps, graph, store }
}

fn record(w: &World, event_id: &str) -> EventRecord {
    let now = crate::time::now_millis();
    let conversion = Conversion {
        event_name: EventName::parse("Purchase").unwrap(),
        event_id: event_id.into(),
        event_time: now / 1000,
        keys: event::UserKeys::Whatsapp {
            waba_id: "102290129340398".into(),
            ctwa_clid: format!("ARAkLkA8rmlFeiCktEJQ-{event_id}"),
        },
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
async fn a_send_without_an_answer_is_unknown_and_never_sent_again() {
    let w = world(true).await;
    // The request went out and no answer came (Meta may have taken the event); a
    // request that never left is known not sent, and retried as before.
    w.graph
        .answer_events(Err(GraphError::NoAnswer("timeout".into())));
    let out = deliver(&w.deps, vec![record(&w, "ev-lost")]).await.unwrap();
    let rec = &out[0].record;
    assert_eq!(rec.status, EventStatus::Unknown, "{rec:?}");
    assert_eq!(rec.attempts, 1, "not retried in the call");
    assert_eq!(rec.next_attempt_at_ms, None, "not due for the resend job");
    let error = rec.error.as_ref().expect("the audit row says why");
    assert_eq!(error["reason"], OUTCOME_UNKNOWN);
    assert_eq!(
        error["meta_error"]["message"],
        "Meta did not answer: timeout"
    );
    assert_eq!(stored(&w, "ev-lost").await.status, EventStatus::Unknown);
    // A client retry with the same event id answers the recorded outcome, unsent.
    let again = deliver(&w.deps, vec![record(&w, "ev-lost")]).await.unwrap();
    assert!(again[0].duplicate);
    assert_eq!(again[0].record.status, EventStatus::Unknown);
    // The resend job never takes it, however late it runs.
    let far = std::time::Instant::now() + Duration::from_secs(30);
    let later = crate::time::now_millis() + 86_400_000;
    let report = resend_due(&w.deps, later, 10, far).await.unwrap();
    assert_eq!((report.due, report.delivered), (0, 0), "{report:?}");
    assert_eq!(w.graph.sent().len(), 1, "one request, never repeated");

    // A connection that could not be made: nothing reached Meta, retried at once.
    w.graph
        .answer_events(Err(GraphError::Transport("connection failed".into())));
    let out = deliver(&w.deps, vec![record(&w, "ev-refused-connection")])
        .await
        .unwrap();
    assert_eq!(out[0].record.status, EventStatus::Delivered);
    assert_eq!(out[0].record.attempts, 2);
}

#[tokio::test]
async fn a_delivery_never_starts_a_request_it_cannot_finish_before_its_end() {
    let w = world(true).await;
    // The invocation ends in 2.5 s: less than the answer's margin, the outcomes'
    // reserve and one request's minimum: not sent, left pending (known not sent).
    let end = delivery_end(
        &w.deps.policy,
        Some(std::time::Instant::now() + Duration::from_millis(2_500)),
    );
    let t = std::time::Instant::now();
    let out = deliver_by(&w.deps, vec![record(&w, "ev-late")], end)
        .await
        .unwrap();
    assert_eq!(out[0].record.status, EventStatus::Pending);
    assert!(w.graph.sent().is_empty());
    assert!(t.elapsed() < Duration::from_millis(500));
    // With time enough, it goes.
    let end = delivery_end(
        &w.deps.policy,
        Some(std::time::Instant::now() + Duration::from_secs(29)),
    );
    let out = deliver_by(&w.deps, vec![record(&w, "ev-in-time")], end)
        .await
        .unwrap();
    assert_eq!(out[0].record.status, EventStatus::Delivered);
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
                time_unverified: false,
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
        AccountContext::whatsapp_only(ACCOUNT, "102290129340398", "1500000000000")
    }

    async fn credited(w: &World, event_time_s: i64) -> Result<(String, Vec<String>), String> {
        let now = crate::time::now_millis();
        match prepare(&w.deps, &ctx(), purchase(event_time_s), now)
            .await
            .unwrap()
        {
            Prepared::Ready(r) => Ok((
                r.conversion.keys.ctwa_clid().to_string(),
                r.warnings.clone(),
            )),
            Prepared::NoClick(reason) => Err(reason.to_string()),
            Prepared::Wait(_) => Err("waiting_for_click".into()),
        }
    }

    const CUSTOMER: &str = "wa:919876543210";

    /// A purchase now with no click yet: its waiting record, claimed.
    async fn waiting(w: &World, event_id: &str) -> SendResult {
        let now = crate::time::now_millis();
        let mut body = purchase(now / 1000);
        body.event_id = Some(event_id.into());
        let Prepared::Wait(wait) = prepare(&w.deps, &ctx(), body, now).await.unwrap() else {
            panic!("no click yet: the conversion waits");
        };
        assert_eq!(wait.customer_key, CUSTOMER);
        let rec = new_waiting_record(
            &w.deps,
            &wait.conversion,
            RecordContext {
                account_id: ACCOUNT.into(),
                dataset_id: "1500000000000".into(),
                conversation_id: wait.conversation_id.clone(),
                test_event_code: None,
                warnings: Vec::new(),
                ad_id: None,
            },
            wait.customer_key.clone(),
            now,
        );
        deliver(&w.deps, vec![rec]).await.unwrap().remove(0)
    }

    #[tokio::test]
    async fn a_conversion_before_its_click_waits_and_is_sent_once_when_the_click_lands() {
        let w = world(true).await;
        let first = waiting(&w, "lead-1").await;
        assert_eq!(first.record.status, EventStatus::WaitingForClick);
        assert!(!first.duplicate);
        // A client retry of the same event id while it waits: the same answer.
        let again = waiting(&w, "lead-1").await;
        assert!(again.duplicate);
        assert_eq!(again.record.status, EventStatus::WaitingForClick);
        assert!(w.graph.sent().is_empty(), "nothing is sent without a click");
        // The click is captured; two takers at once (capture of two messages): one send.
        click(&w, "444", crate::time::now_millis() - 1_000).await;
        let (a, b) = tokio::join!(
            click_captured(&w.deps, ACCOUNT, CUSTOMER),
            click_captured(&w.deps, ACCOUNT, CUSTOMER)
        );
        assert_eq!(a.unwrap() + b.unwrap(), 1);
        let sent = w.graph.sent();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].events[0]["event_id"], "lead-1");
        assert_eq!(sent[0].events[0]["user_data"]["ctwa_clid"], "clid-444");
        let rec = stored(&w, "lead-1").await;
        assert_eq!(rec.status, EventStatus::Delivered);
        assert_eq!(
            (rec.ctwa_clid.as_str(), rec.ad_id.as_deref()),
            ("clid-444", Some("444"))
        );
        assert_eq!(rec.conversation_id.as_deref(), Some("conv1"));
        assert_eq!(rec.waiting_for, None);
        // Nothing waits any more; the resend job finds nothing to do.
        assert_eq!(click_captured(&w.deps, ACCOUNT, CUSTOMER).await.unwrap(), 0);
        let far = std::time::Instant::now() + Duration::from_secs(60);
        let later = crate::time::now_millis() + 3_600_000;
        let report = resend_due(&w.deps, later, 10, far).await.unwrap();
        assert_eq!(report.due, 0, "{report:?}");
        assert_eq!(w.graph.sent().len(), 1);
    }

    #[tokio::test]
    async fn a_click_after_the_claim_is_found_by_the_look_after_the_claim() {
        let w = world(true).await;
        // The click lands between the lookup and the claim: `deliver` looks once more.
        let now = crate::time::now_millis();
        let mut body = purchase(now / 1000);
        body.event_id = Some("lead-race".into());
        let Prepared::Wait(wait) = prepare(&w.deps, &ctx(), body, now).await.unwrap() else {
            panic!("waits");
        };
        click(&w, "555", now - 2_000).await;
        let rec = new_waiting_record(
            &w.deps,
            &wait.conversion,
            RecordContext {
                account_id: ACCOUNT.into(),
                dataset_id: "1500000000000".into(),
                conversation_id: None,
                test_event_code: None,
                warnings: Vec::new(),
                ad_id: None,
            },
            wait.customer_key.clone(),
            now,
        );
        let r = deliver(&w.deps, vec![rec]).await.unwrap().remove(0);
        assert_eq!(r.record.status, EventStatus::Delivered);
        assert_eq!(r.record.ctwa_clid, "clid-555");
        assert_eq!(w.graph.sent().len(), 1);
    }

    #[tokio::test]
    async fn a_wait_with_no_click_ends_as_the_no_op_and_sends_nothing() {
        let w = world(true).await;
        let first = waiting(&w, "lead-organic").await;
        let until = first.record.next_attempt_at_ms.unwrap();
        let far = std::time::Instant::now() + Duration::from_secs(60);
        let early = resend_due(&w.deps, until - 1_000, 10, far).await.unwrap();
        assert_eq!(early.due, 0, "{early:?}");
        let report = resend_due(&w.deps, until + 1, 10, far).await.unwrap();
        assert_eq!((report.due, report.no_click), (1, 1), "{report:?}");
        let rec = stored(&w, "lead-organic").await;
        assert_eq!(rec.status, EventStatus::NoClick);
        assert_eq!(
            rec.error.as_ref().unwrap()["reason"],
            "no_ctwa_click_id_for_phone"
        );
        assert!(
            w.graph.sent().is_empty(),
            "an organic customer costs nothing at Meta"
        );
        // A click captured after the wait changes nothing.
        click(&w, "666", crate::time::now_millis()).await;
        assert_eq!(click_captured(&w.deps, ACCOUNT, CUSTOMER).await.unwrap(), 0);
        assert!(w.graph.sent().is_empty());
    }

    use crate::capi::conversion::Prepared;

    /// A small deterministic generator (xorshift64*): the cases are the same on every run.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
        }
    }

    /// One Cloud API message with a click, from the customer of `purchase`.
    fn click_webhook(wamid: &str, ts_s: i64, clid: &str) -> Vec<u8> {
        serde_json::json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp", "metadata": {"phone_number_id": "PN1"},
            "contacts": [{"wa_id": "919876543210"}],
            "messages": [{"from": "919876543210", "id": wamid, "timestamp": ts_s.to_string(), "type": "text",
                "referral": {"source_id": format!("ad-{clid}"), "source_type": "ad", "ctwa_clid": clid}}]}}]}]})
        .to_string()
        .into_bytes()
    }

    /// Property (issue 13): for random click histories and conversion times, the chosen
    /// click is the newest one at or before the event time (within the clock-skew
    /// tolerance; on the same second, the larger message id), and delivering the
    /// webhooks in another order, or twice, never changes it.
    #[tokio::test]
    async fn property_the_chosen_click_is_the_newest_before_the_event_whatever_the_delivery() {
        use crate::capture::{CaptureDeps, process_item};
        use crate::meta::webhook::parse_cloud_webhook;
        use crate::store::Accounts;
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let now = crate::time::now_millis();
        let now_s = now / 1000;
        let skew_s = CLICK_CLOCK_SKEW_MS / 1000;
        for case in 0..150 {
            let n = 1 + rng.below(6) as usize;
            // Clicks over the last five days on an hourly grid, so that ties happen.
            let clicks: Vec<(String, i64, String)> = (0..n)
                .map(|i| {
                    let ts = now_s - 5 * 86_400 + rng.below(120) as i64 * 3_600;
                    (format!("wamid.P{case}-{i}"), ts, format!("clid-{case}-{i}"))
                })
                .collect();
            // Conversion times: random, each click's own second, and the skew's edges.
            let mut times: Vec<i64> = (0..4)
                .map(|_| now_s - 6 * 86_400 + rng.below(6 * 86_400) as i64)
                .collect();
            for (_, ts, _) in &clicks {
                times.extend([*ts, ts - skew_s, ts - skew_s - 1]);
            }
            let oracle = |t: i64| -> Option<String> {
                clicks
                    .iter()
                    .filter(|(_, ts, _)| *ts <= t + skew_s)
                    .max_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)))
                    .map(|(_, _, clid)| clid.clone())
            };
            let mut orders = vec![(0..n).collect::<Vec<_>>()];
            let mut shuffled: Vec<usize> = (0..n).chain(0..n).collect();
            for i in (1..shuffled.len()).rev() {
                shuffled.swap(i, rng.below(i as u64 + 1) as usize);
            }
            orders.push(shuffled);
            let mut answers = Vec::new();
            for order in orders {
                let w = world(true).await;
                w.store
                    .create_account(&crate::domain::Account {
                        id: ACCOUNT.into(),
                        name: "Acme".into(),
                        waba_id: Some("102290129340398".into()),
                        phone_number_ids: vec!["PN1".into()],
                        sinch_app_id: None,
                        page_ids: Vec::new(),
                        instagram_account_ids: Vec::new(),
                        created_at_ms: 0,
                    })
                    .await
                    .unwrap();
                let capture = CaptureDeps::new(w.store.clone(), w.store.clone());
                for i in order {
                    let (wamid, ts, clid) = &clicks[i];
                    let parsed = parse_cloud_webhook(&click_webhook(wamid, *ts, clid), now, 0)
                        .expect("a valid webhook");
                    for item in &parsed.items {
                        process_item(&capture, item, now).await.unwrap();
                    }
                }
                let mut got = Vec::new();
                for t in &times {
                    let chosen = credited(&w, *t).await;
                    let want = oracle(*t);
                    match (&chosen, &want) {
                        (Ok((clid, _)), Some(w)) => assert_eq!(clid, w, "case {case} at {t}"),
                        (Err(reason), None) => assert_eq!(reason, NO_CLICK_BEFORE),
                        _ => panic!("case {case} at {t}: chose {chosen:?}, want {want:?}"),
                    }
                    got.push(chosen.map(|c| c.0));
                }
                answers.push(got);
            }
            assert_eq!(
                answers[0], answers[1],
                "case {case}: the delivery order changed it"
            );
        }
    }

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

    /// Issue 14: a click whose time could not be vouched for (a Sinch `event_time` far
    /// from its signed timestamp) is never the last click, however it is dated.
    #[test]
    fn a_click_with_an_unverified_time_is_never_the_last_click() {
        let c = |clid: &str, at: i64, unverified: bool| Click {
            conversation_id: "c".into(),
            message_id: format!("m-{clid}"),
            channel: Channel::Sinch,
            clicked_at_ms: at,
            time_unverified: unverified,
            referral: Referral {
                ctwa_clid: Some(clid.into()),
                ..Default::default()
            },
        };
        let newest_first = vec![c("forged", 2_000, true), c("real", 1_000, false)];
        match crate::capi::last_click_before(newest_first, 3_000) {
            crate::capi::LastClick::Found(a) => {
                assert_eq!(a.click.referral.ctwa_clid.as_deref(), Some("real"))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            crate::capi::last_click_before(vec![c("forged", 1, true)], 3_000),
            crate::capi::LastClick::None
        ));
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

#[test]
fn the_waba_of_a_send_is_the_accounts_own_and_never_another_business() {
    let conn = |ids: &[&str], first: Option<&str>| MetaConnection {
        account_id: ACCOUNT.into(),
        status: crate::store::ConnectionStatus::Connected,
        token_type: None,
        scopes: Vec::new(),
        waba_id: first.map(str::to_string),
        waba_ids: ids.iter().map(|s| s.to_string()).collect(),
        expires_at: None,
        connected_at_ms: 0,
        refreshed_at_ms: None,
        last_error: None,
        secret_id: "s".into(),
        token_version: 1,
    };
    // The token reaches several WABAs, the account's among them (not first): the account's.
    let two = conn(&["W2", "W1"], Some("W2"));
    assert_eq!(waba_of_send(Some("W1"), Some(&two)).unwrap(), "W1");
    // The token does not reach it: refused, naming both.
    let other = conn(&["W9"], Some("W9"));
    match waba_of_send(Some("W1"), Some(&other)) {
        Err(CapiError::WabaNotGranted { waba_id, granted }) => {
            assert_eq!((waba_id.as_str(), granted), ("W1", vec!["W9".to_string()]));
        }
        r => panic!("{r:?}"),
    }
    // Not known what the token reaches (an older connection record): the account's.
    let unknown = conn(&[], Some("W9"));
    assert_eq!(waba_of_send(Some("W1"), Some(&unknown)).unwrap(), "W1");
    // An account with no WABA: the token's only one; with several, none is guessed.
    assert_eq!(waba_of_send(None, Some(&other)).unwrap(), "W9");
    assert!(matches!(
        waba_of_send(None, Some(&two)),
        Err(CapiError::NoWaba)
    ));
    assert_eq!(waba_of_send(None, Some(&unknown)).unwrap(), "W9");
    assert!(matches!(waba_of_send(None, None), Err(CapiError::NoWaba)));
}

/// Issue 14 item 6: a refresh that dies between the secret and the record write keeps a
/// working token, and one that loses the race to a reconnect keeps the reconnect's.
mod token_refresh {
    use super::*;
    use crate::meta::connection::{RefreshOutcome, refresh, refresh_due};
    use crate::store::{MetaConnection, StoreError};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// The memory store's connections, with two faults a test can arm: the conditional
    /// record update fails (the process dies between the two writes), and the next read
    /// answers a stale record (the refresh read it before a reconnect).
    #[derive(Default)]
    struct Scripted {
        inner: MemoryStore,
        fail_updates: AtomicBool,
        stale_next_read: Mutex<Option<MetaConnection>>,
    }

    #[async_trait::async_trait]
    impl Connections for Scripted {
        async fn put_connection(&self, c: &MetaConnection) -> Result<(), StoreError> {
            self.inner.put_connection(c).await
        }
        async fn update_connection(
            &self,
            c: &MetaConnection,
            expected: i64,
        ) -> Result<bool, StoreError> {
            if self.fail_updates.load(Ordering::SeqCst) {
                return Err(StoreError::Backend("killed between the two writes".into()));
            }
            self.inner.update_connection(c, expected).await
        }
        async fn get_connection(
            &self,
            account_id: &str,
        ) -> Result<Option<MetaConnection>, StoreError> {
            let stale = self
                .stale_next_read
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            match stale {
                Some(c) => Ok(Some(c)),
                None => self.inner.get_connection(account_id).await,
            }
        }
        async fn connections_expiring_before(
            &self,
            before: i64,
        ) -> Result<Vec<MetaConnection>, StoreError> {
            self.inner.connections_expiring_before(before).await
        }
    }

    fn setup() -> (MetaDeps, Arc<Scripted>) {
        let connections = Arc::new(Scripted::default());
        let secrets = Arc::new(MemorySecrets::with(
            APP_SECRET_ID,
            r#"{"app_secret":"app-secret","verify_token":"v"}"#,
        ));
        let meta = MetaDeps {
            graph: Arc::new(FakeGraph::new()),
            connections: connections.clone(),
            secrets: Arc::new(CachedSecrets::new(
                secrets.clone(),
                Duration::from_secs(300),
            )),
            secret_writer: secrets,
            app_secret_id: APP_SECRET_ID.into(),
            app_id: "1234".into(),
            token_secret_prefix: "stack/meta-token/".into(),
        };
        (meta, connections)
    }

    #[tokio::test]
    async fn a_refresh_killed_between_the_secret_and_the_record_keeps_a_working_token() {
        let (meta, scripted) = setup();
        let t0 = crate::time::now_millis();
        exchange_code(&meta, ACCOUNT, "code-1", None, t0)
            .await
            .unwrap();
        assert_eq!(
            meta.token(ACCOUNT).await.unwrap().expose(),
            "long-short-code-1"
        );
        scripted.fail_updates.store(true, Ordering::SeqCst);
        let killed = refresh(&meta, ACCOUNT, t0 + 1_000).await;
        assert!(killed.is_err(), "{killed:?}");
        // The new token is in the secret under a newer version: it is the one used.
        meta.forget_token(ACCOUNT);
        assert_eq!(
            meta.token(ACCOUNT).await.unwrap().expose(),
            "long-long-short-code-1"
        );
        // The record still has the old expiry, so the next run refreshes it again.
        scripted.fail_updates.store(false, Ordering::SeqCst);
        let far = std::time::Instant::now() + Duration::from_secs(60);
        let report = refresh_due(&meta, 61 * 86_400, t0 + 2_000, far)
            .await
            .unwrap();
        assert_eq!((report.refreshed, report.failed), (1, 0), "{report:?}");
        assert_eq!(
            meta.token(ACCOUNT).await.unwrap().expose(),
            "long-long-long-short-code-1"
        );
        // A run with no time left starts nothing.
        let report = refresh_due(&meta, 61 * 86_400, t0 + 3_000, std::time::Instant::now())
            .await
            .unwrap();
        assert_eq!((report.deferred, report.refreshed), (1, 0), "{report:?}");
    }

    #[tokio::test]
    async fn a_refresh_that_loses_to_a_reconnect_keeps_the_reconnected_token() {
        let (meta, scripted) = setup();
        let t0 = crate::time::now_millis();
        exchange_code(&meta, ACCOUNT, "code-1", None, t0)
            .await
            .unwrap();
        let before = meta
            .connections
            .get_connection(ACCOUNT)
            .await
            .unwrap()
            .unwrap();
        // The business reconnects (new secret, new record) ...
        exchange_code(&meta, ACCOUNT, "code-2", None, t0 + 500)
            .await
            .unwrap();
        // ... while a refresh that read the old record writes its token after it: its
        // record update fails, and the reconnect's token is put back.
        *scripted
            .stale_next_read
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(before);
        let outcome = refresh(&meta, ACCOUNT, t0 + 1_000).await.unwrap();
        assert!(matches!(outcome, RefreshOutcome::Refreshed { .. }));
        meta.forget_token(ACCOUNT);
        assert_eq!(
            meta.token(ACCOUNT).await.unwrap().expose(),
            "long-short-code-2"
        );
    }
}

/// One business with a large backlog (Meta refusing it) does not hold back another's
/// conversion: each account gets its share of a run, in turn, so the other account's
/// event goes out in the same run; the refused account's records it deferred move
/// behind its others, which get their turn in the next run.
#[tokio::test]
async fn a_backlog_of_one_account_does_not_delay_another_accounts_resend() {
    let w = world(true).await;
    exchange_code(
        &w.deps.meta,
        "other",
        "code-2",
        None,
        crate::time::now_millis(),
    )
    .await
    .expect("the fake connects");
    let now = crate::time::now_millis();
    let seed = |account: &str, id: String, next: i64| {
        let mut r = record(&w, &id);
        r.account_id = account.into();
        r.status = EventStatus::Pending;
        r.next_attempt_at_ms = Some(next);
        r
    };
    for n in 0..60 {
        let r = seed(ACCOUNT, format!("busy-{n:02}"), now - 3_600_000 + n);
        w.store.claim_event(&r).await.unwrap();
    }
    let r = seed("other", "other-1".into(), now - 1_000);
    w.store.claim_event(&r).await.unwrap();
    // Meta refuses the busy account's first three sends (3 attempts each): its breaker
    // trips; the other account's send (the second of the run) is accepted.
    let refuse = |n: usize| {
        for _ in 0..n {
            w.graph.answer_events(Err(FakeGraph::error(500, 2, None)));
        }
    };
    refuse(3);
    w.graph.answer_events(Ok(crate::graph::EventsResponse {
        events_received: 1,
        messages: Vec::new(),
        fbtrace_id: None,
    }));
    refuse(6);
    let far = std::time::Instant::now() + Duration::from_secs(30);
    let run = resend_due(&w.deps, now, 20, far).await.unwrap();
    assert_eq!((run.due, run.delivered, run.pending), (20, 1, 3), "{run:?}");
    assert_eq!((run.deferred, run.rescheduled), (16, 16), "{run:?}");
    let other = w
        .store
        .get_event("other", "other-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(other.status, EventStatus::Delivered);
    // The next run at the same time takes the busy account's records it never read.
    let next = resend_due(&w.deps, now, 5, far).await.unwrap();
    assert_eq!(next.delivered, 5, "{next:?}");
    let sent: Vec<String> = w
        .graph
        .sent()
        .iter()
        .map(|s| s.events[0]["event_id"].as_str().unwrap().to_string())
        .collect();
    let tail: Vec<&str> = sent[sent.len() - 5..].iter().map(String::as_str).collect();
    assert_eq!(
        tail,
        ["busy-19", "busy-20", "busy-21", "busy-22", "busy-23"]
    );
}

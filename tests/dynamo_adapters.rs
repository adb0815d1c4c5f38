//! The DynamoDB adapters against DynamoDB Local, each test on freshly named tables.

use aws_sdk_dynamodb::Client;
use ctwa_shared::domain::{
    Account, AutomaticEvent, Channel, Click, Customer, Referral, Route, conversation_id,
};
use ctwa_shared::store::dynamo::{DynamoData, DynamoInbox};
use ctwa_shared::store::{
    Accounts, ApiKeyRecord, ClickRecord, ConversationUpsert, Conversations, FirstTouchOutcome,
    Inbox, InboxItem, InboxKind, StoreError, UnroutedBacklog, first_touch_of,
};
use ctwa_shared::tables;
use ctwa_tests::{clients, unique};

async fn data() -> (Client, DynamoData) {
    let c = clients().await.dynamodb;
    let t = unique("data");
    tables::create_data_table(&c, &t).await.unwrap();
    (c.clone(), DynamoData::new(c, t))
}

fn d_table(d: &DynamoData) -> &str {
    d.table()
}

fn click(conv: &str, msg: &str, ms: i64, clid: Option<&str>) -> Click {
    Click {
        conversation_id: conv.into(),
        message_id: msg.into(),
        channel: Channel::Cloud,
        clicked_at_ms: ms,
        time_unverified: false,
        referral: Referral {
            ctwa_clid: clid.map(str::to_string),
            source_id: Some("AD1".into()),
            source_url: Some("https://fb.me/x".into()),
            headline: Some("Chat".into()),
            ..Default::default()
        },
    }
}

fn upsert(id: &str, key: &str, now: i64) -> ConversationUpsert {
    ConversationUpsert {
        id: id.into(),
        account_id: "a1".into(),
        channel: Channel::Cloud,
        business_id: "pn1".into(),
        customer_key: key.into(),
        customer: Customer {
            wa_id: Some("16505551234".into()),
            user_id: None,
            name: Some("Name".into()),
            ..Customer::default()
        },
        now_ms: now,
    }
}

#[tokio::test]
async fn inbox_put_is_once_per_id() {
    let c = clients().await.dynamodb;
    let t = unique("inbox");
    tables::create_inbox_table(&c, &t).await.unwrap();
    tables::create_inbox_table(&c, &t).await.unwrap(); // an existing table is fine
    let inbox = DynamoInbox::new(c, t);
    let item = InboxItem {
        id: "wa:wamid.1".into(),
        kind: InboxKind::Message,
        channel: Channel::Cloud,
        route: Route::PhoneNumberId("1".into()),
        waba_id: Some("w".into()),
        payload: "{\"id\":\"wamid.1\"}".into(),
        contact: None,
        received_at_ms: 1,
        expires_at: 2,
    };
    assert!(inbox.put_once(&item).await.unwrap());
    let again = InboxItem {
        payload: "{\"changed\":true}".into(),
        ..item.clone()
    };
    assert!(!inbox.put_once(&again).await.unwrap());
}

#[tokio::test]
async fn accounts_claim_routes_exclusively() {
    let (_, d) = data().await;
    let a = Account {
        id: "a1".into(),
        name: "A".into(),
        waba_id: Some("W".into()),
        phone_number_ids: vec!["p1".into(), "p2".into()],
        sinch_app_id: Some("S1".into()),
        page_ids: Vec::new(),
        instagram_account_ids: Vec::new(),
        created_at_ms: 5,
    };
    d.create_account(&a).await.unwrap();
    assert_eq!(d.get_account("a1").await.unwrap(), Some(a.clone()));
    assert!(matches!(
        d.create_account(&a).await,
        Err(StoreError::Conflict(_))
    ));
    let b = Account {
        id: "b1".into(),
        phone_number_ids: vec!["p2".into()],
        sinch_app_id: None,
        page_ids: Vec::new(),
        instagram_account_ids: Vec::new(),
        ..a.clone()
    };
    assert!(matches!(
        d.create_account(&b).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        d.get_account("b1").await.unwrap(),
        None,
        "nothing half-written"
    );
    assert_eq!(
        d.account_for_route(&Route::PhoneNumberId("p2".into()))
            .await
            .unwrap()
            .as_deref(),
        Some("a1")
    );
    assert_eq!(
        d.account_for_route(&Route::SinchApp("S1".into()))
            .await
            .unwrap()
            .as_deref(),
        Some("a1")
    );
    assert_eq!(
        d.account_for_route(&Route::PhoneNumberId("p9".into()))
            .await
            .unwrap(),
        None
    );

    let k = ApiKeyRecord {
        hash: "h".repeat(64),
        prefix: "ctwa_abcdefg".into(),
        account_id: "a1".into(),
        created_at_ms: 1,
        key_id: "key_hhhhhhhhhhhhhhhh".into(),
        ..Default::default()
    };
    d.put_api_key(&k).await.unwrap();
    assert_eq!(d.api_key(&k.hash).await.unwrap(), Some(k.clone()));
    assert!(matches!(
        d.put_api_key(&k).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(d.api_key("nope").await.unwrap(), None);
}

#[tokio::test]
async fn first_touch_is_one_shot_and_the_earliest_click_wins_under_concurrency() {
    let (_, d) = data().await;
    let conv = conversation_id("a1", "pn1", "wa:16505551234");
    // 50 concurrent captures, timestamps all different, in scrambled order.
    let tasks = (0..50i64).map(|i| {
        let d = d.clone();
        let conv = conv.clone();
        async move {
            let ts = 1_000 + (i * 37) % 50;
            let k = click(&conv, &format!("m{i:02}"), ts, Some(&format!("clid-{ts}")));
            let ft = first_touch_of(&k, 99).unwrap();
            d.record_click(&ClickRecord {
                account_id: "a1".into(),
                customer_key: "wa:16505551234".into(),
                click: k,
            })
            .await
            .unwrap();
            d.upsert_conversation(&upsert(&conv, "wa:16505551234", 99), Some(&ft))
                .await
                .unwrap()
        }
    });
    let outcomes = futures_util::future::join_all(tasks).await;
    assert!(outcomes.contains(&FirstTouchOutcome::Captured));
    let c = d.get_conversation(&conv).await.unwrap().unwrap();
    assert_eq!(
        c.first_touch.as_ref().unwrap().ctwa_clid.as_deref(),
        Some("clid-1000")
    );
    assert_eq!(c.customer.name.as_deref(), Some("Name"));
    // Later clicks never replace it; a repeat of the winner is Kept.
    let later = click(&conv, "m99", 5_000, Some("later"));
    let o = d
        .upsert_conversation(
            &upsert(&conv, "wa:16505551234", 100),
            first_touch_of(&later, 100).as_ref(),
        )
        .await
        .unwrap();
    assert_eq!(o, FirstTouchOutcome::Kept);
    let plain = d
        .upsert_conversation(&upsert(&conv, "wa:16505551234", 101), None)
        .await
        .unwrap();
    assert_eq!(plain, FirstTouchOutcome::NoClick);
    let c2 = d.get_conversation(&conv).await.unwrap().unwrap();
    assert_eq!(c2.first_touch, c.first_touch);
    assert_eq!(c2.created_at_ms, 99);
    assert_eq!(c2.updated_at_ms, 101);

    let clicks = d.clicks_for_conversation(&conv, 100).await.unwrap();
    assert_eq!(clicks.len(), 50);
    assert!(
        clicks
            .windows(2)
            .all(|w| w[0].clicked_at_ms >= w[1].clicked_at_ms),
        "newest first"
    );
    let two = d
        .clicks_for_customer("a1", "wa:16505551234", 2)
        .await
        .unwrap();
    assert_eq!(two.len(), 2);
    assert_eq!(two[0].clicked_at_ms, 1_049);
}

#[tokio::test]
async fn on_an_exact_tie_the_stored_first_touch_stays_and_its_capture_time_never_moves() {
    let (_, d) = data().await;
    let conv = "c_tie";
    let get = || async {
        d.get_conversation(conv)
            .await
            .unwrap()
            .unwrap()
            .first_touch
            .unwrap()
    };
    // A click at 7 ms captured at t=1; two more clicks at the same 7 ms (one with a
    // smaller message id) captured later: the stored one stays.
    for (m, at) in [("m5", 1), ("m1", 2), ("m9", 3)] {
        let k = click(conv, m, 7, Some(m));
        d.upsert_conversation(&upsert(conv, "wa:1", at), first_touch_of(&k, at).as_ref())
            .await
            .unwrap();
    }
    let ft = get().await;
    assert_eq!(
        (
            ft.ctwa_clid.as_deref().unwrap_or_default(),
            ft.captured_at_ms
        ),
        ("m5", 1)
    );
    // A strictly earlier click processed later replaces the click, never the time the
    // first touch was first captured.
    let k = click(conv, "m0", 6, Some("m0"));
    let o = d
        .upsert_conversation(&upsert(conv, "wa:1", 4), first_touch_of(&k, 4).as_ref())
        .await
        .unwrap();
    assert_eq!(o, FirstTouchOutcome::Captured);
    let ft = get().await;
    assert_eq!(
        (
            ft.ctwa_clid.as_deref().unwrap_or_default(),
            ft.clicked_at_ms,
            ft.captured_at_ms
        ),
        ("m0", 6, 1)
    );
}

#[tokio::test]
async fn clicks_are_idempotent_and_found_by_customer_across_business_lines() {
    let (_, d) = data().await;
    let rec = |conv: &str, msg: &str, ms: i64, clid: Option<&str>| ClickRecord {
        account_id: "a1".into(),
        customer_key: "wa:1650".into(),
        click: click(conv, msg, ms, clid),
    };
    assert!(
        d.record_click(&rec("c_line1", "m1", 10, Some("x")))
            .await
            .unwrap()
    );
    assert!(
        !d.record_click(&rec("c_line1", "m1", 10, Some("x")))
            .await
            .unwrap()
    );
    assert!(
        d.record_click(&rec("c_line2", "m2", 20, None))
            .await
            .unwrap()
    );
    let all = d.clicks_for_customer("a1", "wa:1650", 10).await.unwrap();
    assert_eq!(
        all.iter()
            .map(|c| c.message_id.as_str())
            .collect::<Vec<_>>(),
        ["m2", "m1"]
    );
    assert_eq!(
        all[0].referral.ctwa_clid, None,
        "a Status click keeps no id"
    );
    assert_eq!(all[0].referral.source_id.as_deref(), Some("AD1"));
    assert!(
        d.clicks_for_customer("a2", "wa:1650", 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn conversations_by_customer_and_user_id_fallback() {
    let (_, d) = data().await;
    let mut u = upsert("c_u", "u:US.1", 1);
    u.customer = Customer {
        wa_id: None,
        user_id: Some("US.1".into()),
        name: None,
        ..Customer::default()
    };
    d.upsert_conversation(&u, None).await.unwrap();
    d.upsert_conversation(&upsert("c_w", "wa:1650", 1), None)
        .await
        .unwrap();
    let found = d.conversations_for_customer("a1", "u:US.1").await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].customer.user_id.as_deref(), Some("US.1"));
    assert_eq!(found[0].customer.wa_id, None);
    assert_eq!(found[0].first_touch, None);
    assert!(
        d.conversations_for_customer("a2", "u:US.1")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn automatic_events_and_unrouted_items_are_kept_once() {
    let (c, d) = data().await;
    let ev = AutomaticEvent {
        id: "wamid.E".into(),
        event_name: "Purchase".into(),
        occurred_at_ms: 5,
        ctwa_clid: Some("C".into()),
        custom_data: Some(serde_json::json!({"currency":"USD","value":12345000})),
    };
    assert!(d.record_automatic_event("a1", &ev).await.unwrap());
    assert!(!d.record_automatic_event("a1", &ev).await.unwrap());
    let item = InboxItem {
        id: "wa:wamid.U".into(),
        kind: InboxKind::Message,
        channel: Channel::Cloud,
        route: Route::PhoneNumberId("nobody".into()),
        waba_id: None,
        payload: "{}".into(),
        contact: None,
        received_at_ms: 3,
        expires_at: 4,
    };
    assert!(d.record_unrouted(&item).await.unwrap());
    assert!(
        d.record_unrouted(&item).await.unwrap(),
        "a repeat is the same item"
    );
    let items = c
        .scan()
        .table_name(d_table(&d))
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default();
    let count = |prefix: &str| {
        items
            .iter()
            .filter(|i| i["pk"].as_s().is_ok_and(|pk| pk.starts_with(prefix)))
            .count()
    };
    assert_eq!(count("UNROUTED#pnid:nobody"), 1);
    assert_eq!(count("ACCT#a1#AUTOEVENT"), 1);
}

/// An unrouted item is kept with the inbox's TTL only while its route is unclaimed; the
/// claim records the route's drain; the backlog reads oldest first and forgets what it
/// is told.
#[tokio::test]
async fn the_unrouted_backlog_of_a_route_until_it_is_claimed_and_drained() {
    let (c, d) = data().await;
    let route = Route::PhoneNumberId("777000333".into());
    let item = |i: i64| InboxItem {
        id: format!("wa:wamid.{i}"),
        kind: InboxKind::Message,
        channel: Channel::Cloud,
        route: route.clone(),
        waba_id: Some("102290129340398".into()),
        payload: format!(r#"{{"id":"wamid.{i}"}}"#),
        contact: (i == 2).then(|| r#"{"wa_id":"16505551234"}"#.to_string()),
        // Received in the order 3, 1, 2.
        received_at_ms: [0, 2_000, 3_000, 1_000, 4_000][i as usize],
        expires_at: 1_900_000_000,
    };
    for i in 1..=3 {
        assert!(d.record_unrouted(&item(i)).await.unwrap());
    }
    assert!(d.pending_drains(10).await.unwrap().is_empty());
    d.create_account(&Account {
        id: "a1".into(),
        name: "A".into(),
        waba_id: None,
        phone_number_ids: vec!["777000333".into()],
        sinch_app_id: Some("APP1".into()),
        page_ids: Vec::new(),
        instagram_account_ids: Vec::new(),
        created_at_ms: 7,
    })
    .await
    .unwrap();
    // Claimed: nothing more is kept for it.
    assert!(!d.record_unrouted(&item(4)).await.unwrap());
    let mut drains = d.pending_drains(10).await.unwrap();
    drains.sort_by_key(|d| d.route.key());
    let routes: Vec<String> = drains.iter().map(|d| d.route.key()).collect();
    assert_eq!(routes, ["pnid:777000333", "sinch:APP1"]);
    assert!(drains.iter().all(|d| d.account_id == "a1"));
    let page = d.unrouted_items(&route, 10).await.unwrap();
    let ids: Vec<&str> = page.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["wa:wamid.3", "wa:wamid.1", "wa:wamid.2"]);
    assert_eq!(page[2], item(2), "read back whole");
    assert_eq!(d.unrouted_items(&route, 2).await.unwrap().len(), 2);
    // Every unrouted item carries the inbox's TTL.
    let items = c
        .scan()
        .table_name(d_table(&d))
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default();
    let unrouted: Vec<_> = items
        .iter()
        .filter(|i| i["pk"].as_s().is_ok_and(|pk| pk.starts_with("UNROUTED#")))
        .collect();
    assert_eq!(unrouted.len(), 3);
    assert!(
        unrouted
            .iter()
            .all(|i| i["expires_at"].as_n().map(String::as_str) == Ok("1900000000"))
    );
    for it in &page {
        d.remove_unrouted(it).await.unwrap();
    }
    d.remove_unrouted(&page[0]).await.unwrap();
    assert!(d.unrouted_items(&route, 10).await.unwrap().is_empty());
    d.finish_drain(&route).await.unwrap();
    let left: Vec<String> = d
        .pending_drains(10)
        .await
        .unwrap()
        .iter()
        .map(|d| d.route.key())
        .collect();
    assert_eq!(left, ["sinch:APP1"]);
}

/// Keys with scopes, the live-key count, rotation and revocation conditional on what
/// was read, and the audit trail: the DynamoDB adapter and the in-memory store alike.
#[tokio::test]
async fn key_lifecycle_counts_live_keys_and_audits_in_both_stores() {
    use ctwa_shared::auth::{Scope, generate_key};
    use ctwa_shared::store::memory::MemoryStore;
    use ctwa_shared::store::{AuditLog, AuditRecord, KeyEnd, KeyWrite};

    async fn run<S: Accounts + AuditLog>(d: &S, who: &str) {
        let audit = |action: &str, target: &str| {
            AuditRecord::new(
                Some("a1"),
                "operator",
                Some("key_op"),
                action,
                target,
                serde_json::json!({"n": 1}),
            )
            .unwrap()
        };
        let mut keys = Vec::new();
        for _ in 0..3 {
            let (_, k) = generate_key("a1", &[Scope::Keys, Scope::Read], 1).unwrap();
            let w = d
                .create_api_key(&k, 3, &audit("api_key.create", &k.key_id))
                .await
                .unwrap();
            assert_eq!(w, KeyWrite::Done, "{who}");
            keys.push(d.api_key(&k.hash).await.unwrap().unwrap());
        }
        assert!(keys.iter().all(|k| k.counted), "{who}");
        assert_eq!(keys[0].scopes, Some(vec![Scope::Read, Scope::Keys]));
        let (_, extra) = generate_key("a1", &[Scope::Read], 1).unwrap();
        let a = audit("api_key.create", &extra.key_id);
        assert_eq!(
            d.create_api_key(&extra, 3, &a).await.unwrap(),
            KeyWrite::LimitReached,
            "{who}"
        );
        assert_eq!(d.api_key(&extra.hash).await.unwrap(), None, "{who}");
        // A rotation with grace: the new key takes the old one's place.
        let (_, new) = generate_key("a1", &[Scope::Read], 2).unwrap();
        let w = d
            .rotate_api_key(
                &keys[0],
                &new,
                KeyEnd::ExpiresAt(10_000),
                3,
                &audit("api_key.rotate", &keys[0].key_id),
            )
            .await
            .unwrap();
        assert_eq!(w, KeyWrite::Done, "{who}");
        let old = d.api_key(&keys[0].hash).await.unwrap().unwrap();
        assert_eq!((old.counted, old.expires_at_ms), (false, Some(10_000)));
        // Rotating the key as it was read before is refused: it changed.
        let (_, again) = generate_key("a1", &[Scope::Read], 3).unwrap();
        let w = d
            .rotate_api_key(
                &keys[0],
                &again,
                KeyEnd::RevokedAt(5),
                3,
                &audit("api_key.rotate", &keys[0].key_id),
            )
            .await
            .unwrap();
        assert_eq!(w, KeyWrite::Changed, "{who}");
        assert_eq!(d.api_key(&again.hash).await.unwrap(), None);
        // A revocation gives its place back (once).
        let a = audit("api_key.revoke", &keys[1].key_id);
        assert_eq!(
            d.revoke_api_key(&keys[1], 7, &a).await.unwrap(),
            KeyWrite::Done
        );
        let a = audit("api_key.revoke", &keys[1].key_id);
        assert_eq!(
            d.revoke_api_key(&keys[1], 8, &a).await.unwrap(),
            KeyWrite::Changed
        );
        let a = audit("api_key.create", &extra.key_id);
        assert_eq!(
            d.create_api_key(&extra, 3, &a).await.unwrap(),
            KeyWrite::Done
        );
        // The trail: newest first, in pages; deployment-wide records apart.
        let (page, next) = d.audit_records(Some("a1"), 4, None).await.unwrap();
        assert_eq!(page.len(), 4, "{who}");
        let (rest, end) = d
            .audit_records(Some("a1"), 4, next.as_deref())
            .await
            .unwrap();
        assert_eq!((rest.len(), end), (2, None), "{who}");
        let all: Vec<_> = page.iter().chain(&rest).collect();
        assert!(all.windows(2).all(|w| w[0].cursor() > w[1].cursor()));
        assert_eq!(all[0].detail, serde_json::json!({"n": 1}));
        assert_eq!(all[0].actor_key_id.as_deref(), Some("key_op"));
        assert!(d.audit_records(None, 10, None).await.unwrap().0.is_empty());
    }
    let (_, d) = data().await;
    run(&d, "dynamodb").await;
    run(&MemoryStore::new(), "memory").await;
}

/// Routes move and are removed only from the state the caller read, with the accounts'
/// lists and the audit record in the same transaction; a stale write changes nothing.
#[tokio::test]
async fn routes_move_conditionally_with_their_audit_records() {
    use ctwa_shared::store::{Actor, AuditLog, AuditRecord, RouteStatus, RouteStore};
    let (_, d) = data().await;
    let account = |id: &str, pnids: &[&str]| Account {
        id: id.into(),
        name: id.into(),
        waba_id: Some(format!("W{id}")),
        phone_number_ids: pnids.iter().map(|p| p.to_string()).collect(),
        sinch_app_id: None,
        page_ids: Vec::new(),
        instagram_account_ids: Vec::new(),
        created_at_ms: 5,
    };
    let (a, b) = (account("a", &["p0", "p1", "p2"]), account("b", &[]));
    d.create_account(&a).await.unwrap();
    d.create_account(&b).await.unwrap();
    let p1 = Route::PhoneNumberId("p1".into());
    let cur = d.route_record(&p1).await.unwrap().unwrap();
    assert_eq!(
        (cur.status, cur.waba_id.as_deref(), cur.linked_at_ms),
        (RouteStatus::Pending, Some("Wa"), 5)
    );
    let operator = Actor {
        kind: "operator".into(),
        key_id: Some("key_1".into()),
    };
    let on = |account: &str, action: &str, at: i64| {
        AuditRecord::by(
            &operator,
            Some(account),
            action,
            &p1.key(),
            serde_json::json!({}),
            at,
        )
        .unwrap()
    };
    let audit = |action: &str, at: i64| on("a", action, at);
    // A move is one record in both accounts' trails.
    let moved = |at: i64| {
        let to_b = on("b", "route.move", at);
        let mut from_a = to_b.clone();
        from_a.account_id = Some("a".into());
        [to_b, from_a]
    };
    let to = ctwa_shared::store::RouteRecord::pending(p1.clone(), &b, 9);
    assert!(d.move_route(&cur, &to, &moved(9)).await.unwrap());
    assert_eq!(d.route_record(&p1).await.unwrap().unwrap(), to);
    assert_eq!(
        d.get_account("a").await.unwrap().unwrap().phone_number_ids,
        ["p0", "p2"]
    );
    assert_eq!(
        d.get_account("b").await.unwrap().unwrap().phone_number_ids,
        ["p1"]
    );
    // The same (now stale) move again: nothing written, no audit record.
    assert!(!d.move_route(&cur, &to, &moved(10)).await.unwrap());
    assert!(
        !d.remove_route(&cur, &audit("route.remove", 11))
            .await
            .unwrap()
    );
    assert!(
        d.remove_route(&to, &on("b", "route.remove", 12))
            .await
            .unwrap()
    );
    assert_eq!(d.route_record(&p1).await.unwrap(), None);
    assert!(
        d.get_account("b")
            .await
            .unwrap()
            .unwrap()
            .phone_number_ids
            .is_empty()
    );
    let trail: Vec<(String, Option<String>)> = d
        .target_audit_records(&p1.key(), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.action, r.account_id))
        .collect();
    let mut moves = trail[1..].to_vec();
    moves.sort();
    assert_eq!(trail[0], ("route.remove".into(), Some("b".into())));
    assert_eq!(
        moves,
        [
            ("route.move".into(), Some("a".into())),
            ("route.move".into(), Some("b".into()))
        ]
    );
    // Each account's own trail holds what happened to it.
    let actions = |v: Vec<AuditRecord>| v.into_iter().map(|r| r.action).collect::<Vec<_>>();
    assert_eq!(
        actions(d.audit_records(Some("b"), 10, None).await.unwrap().0),
        ["route.remove", "route.move"]
    );
    assert_eq!(
        actions(d.audit_records(Some("a"), 10, None).await.unwrap().0),
        ["route.move"]
    );
    // Linked again, to a, as a new route; a taken route is a conflict.
    let again = ctwa_shared::store::RouteRecord::pending(p1.clone(), &a, 20);
    d.link_route(&again, &audit("route.link", 20))
        .await
        .unwrap();
    assert!(matches!(
        d.link_route(&again, &audit("route.link", 21)).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        d.get_account("a").await.unwrap().unwrap().phone_number_ids,
        ["p0", "p2", "p1"]
    );
    let verified = ctwa_shared::store::RouteRecord {
        status: RouteStatus::Verified,
        checked_at_ms: Some(21),
        ..again.clone()
    };
    assert!(
        d.set_route_status(&verified, &audit("route.verify", 21))
            .await
            .unwrap()
    );
    assert_eq!(d.route_record(&p1).await.unwrap().unwrap(), verified);
    // A status for a link that is no longer current is not written.
    assert!(
        !d.set_route_status(&to, &audit("route.verify", 22))
            .await
            .unwrap()
    );
    assert_eq!(
        d.target_audit_records(&p1.key(), 10).await.unwrap().len(),
        5
    );
}

/// The due index is per account: 5,000 due records of one business (its oldest first)
/// take their share of a resend run and no more, and the other businesses' due records
/// are in the same run; records written to the single partition of earlier versions
/// are still read.
#[tokio::test]
async fn five_thousand_due_records_of_one_account_leave_room_for_the_others() {
    use ctwa_shared::store::{ConversionEvents, EventRecord, EventStatus};
    let (c, d) = data().await;
    let event = |account: &str, id: String, next: i64| EventRecord {
        account_id: account.into(),
        event_id: id,
        event_name: "Purchase".into(),
        conversation_id: None,
        ctwa_clid: "clid".into(),
        dataset_id: "ds1".into(),
        status: EventStatus::Pending,
        attempts: 3,
        created_at_ms: 1,
        updated_at_ms: 1,
        event_time: 1,
        events_received: None,
        fbtrace_id: None,
        duration_ms: None,
        error: None,
        payload: "{}".into(),
        test_event_code: None,
        next_attempt_at_ms: Some(next),
        lease_id: "lease1".into(),
        warnings: Vec::new(),
        expires_at: None,
        ad_id: None,
        waiting_for: None,
    };
    let busy = (0..5_000).map(|n| {
        let d = &d;
        let e = event("busy", format!("busy-{n:04}"), 1_000 + n);
        async move { d.claim_event(&e).await }
    });
    for r in ctwa_shared::run_bounded(busy, 32).await {
        assert!(r.unwrap());
    }
    assert!(
        d.claim_event(&event("quiet", "quiet-1".into(), 900_000))
            .await
            .unwrap()
    );
    // A record of an earlier version, in the one partition it used.
    let legacy = event("old", "old-1".into(), 950_000);
    assert!(d.claim_event(&legacy).await.unwrap());
    let pk = "EVT#old#old-1".to_string();
    let item = c
        .get_item()
        .table_name(d_table(&d))
        .key("pk", aws_sdk_dynamodb::types::AttributeValue::S(pk))
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S("EVT".into()),
        )
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    let mut item = item;
    item.insert(
        "gsi2pk".into(),
        aws_sdk_dynamodb::types::AttributeValue::S("DUE_EVENTS".into()),
    );
    c.put_item()
        .table_name(d_table(&d))
        .set_item(Some(item))
        .send()
        .await
        .unwrap();

    let due = d.due_events(1_000_000, 500, 50).await.unwrap();
    let count = |a: &str| due.iter().filter(|r| r.account_id == a).count();
    assert_eq!((count("busy"), count("quiet"), count("old")), (50, 1, 1));
    // Taken in turn: the most overdue account first, then each of the others.
    let first: Vec<&str> = due[..3].iter().map(|r| r.event_id.as_str()).collect();
    assert_eq!(first, ["busy-0000", "quiet-1", "old-1"]);
    let busy: Vec<&str> = due
        .iter()
        .filter(|r| r.account_id == "busy")
        .map(|r| r.event_id.as_str())
        .collect();
    assert_eq!(busy[..2], ["busy-0000", "busy-0001"], "oldest first");
    // Not yet due: nothing.
    assert!(d.due_events(500, 500, 50).await.unwrap().is_empty());
}

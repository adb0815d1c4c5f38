//! CPU per webhook: signature check + envelope parse + extraction of the inbox items,
//! for a ~1 KB body (one CTWA message) and a ~100 KB body (a batch of them), beside the
//! bare cost of HMAC-SHA256 plus `serde_json::from_slice::<Value>` over the same bytes.
//! Run: `cargo bench -p ctwa-shared --bench webhook`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ctwa_shared::meta::webhook::{cloud_inbound, parse_cloud_webhook};
use ctwa_shared::signature::{sign_meta, verify_meta};
use std::hint::black_box;

const SECRET: &str = "bench-app-secret";

fn message(i: usize) -> String {
    format!(
        r#"{{"referral":{{"source_url":"https://fb.me/3cr4Wqqkv","source_id":"120226305854810726","source_type":"ad","body":"Summer Succulents are here!","headline":"Chat with us","media_type":"image","image_url":"https://scontent.xx.fbcdn.net/v/t45.1600-4/518949","ctwa_clid":"Aff-n8ZTODiE79d22KtAwQKj9e_mIEOOj27vDFl0{i:08}","welcome_message":{{"text":"Hi there! Let us know how we can help!"}}}},"from":"1650555{i:04}","id":"wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQzQTRBNjU5OUFFRTAz{i:08}","timestamp":"1750275992","text":{{"body":"Can I get more info about this?"}},"type":"text"}}"#
    )
}

fn body(messages: usize) -> Vec<u8> {
    let msgs: Vec<String> = (0..messages).map(message).collect();
    let contacts: Vec<String> = (0..messages)
        .map(|i| format!(r#"{{"profile":{{"name":"Customer {i}"}},"wa_id":"1650555{i:04}","user_id":"US.1349120865530{i:05}"}}"#))
        .collect();
    format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"102290129340398","changes":[{{"value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"15550783881","phone_number_id":"1204727649384372"}},"contacts":[{}],"messages":[{}]}},"field":"messages"}}]}}]}}"#,
        contacts.join(","),
        msgs.join(",")
    )
    .into_bytes()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("webhook");
    for (label, n) in [("1KB", 1usize), ("100KB", 110)] {
        let b = body(n);
        let sig = sign_meta(SECRET, &b);
        group.throughput(Throughput::Bytes(b.len() as u64));
        group.bench_with_input(
            BenchmarkId::new("verify_parse_extract", label),
            &b,
            |bench, b| {
                bench.iter(|| {
                    verify_meta(SECRET, Some(&sig), b).unwrap();
                    let parsed = parse_cloud_webhook(b, 0, 0).unwrap();
                    let mut clicks = 0;
                    for item in &parsed.items {
                        clicks += usize::from(cloud_inbound(item).unwrap().referral.is_some());
                    }
                    black_box(clicks)
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("baseline_hmac_plus_serde_value", label),
            &b,
            |bench, b| {
                bench.iter(|| {
                    verify_meta(SECRET, Some(&sig), b).unwrap();
                    black_box(serde_json::from_slice::<serde_json::Value>(b).unwrap())
                })
            },
        );
        eprintln!("{label}: body is {} bytes, {n} messages", b.len());
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

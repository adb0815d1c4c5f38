//! Shared crate of the CTWA attribution backend: Meta and Sinch webhook types, the domain
//! (conversations, clicks, accounts), storage and secrets ports with their DynamoDB /
//! Secrets Manager adapters and in-memory fakes, configuration, and the one mapping from
//! errors to HTTP answers. The Lambda binaries under `functions/` only wire these together.

pub mod accounts;
pub mod ads;
pub mod auth;
pub mod capi;
pub mod capture;
pub mod config;
pub mod domain;
pub mod error;
pub mod graph;
pub mod handlers;
pub mod http;
pub mod ids;
pub mod meta;
pub mod metrics;
pub mod replay;
pub mod report_page;
pub mod reports;
pub mod routes;
pub mod secrets;
pub mod signature;
pub mod sinch;
pub mod store;
pub mod stream;
pub mod tables;
pub mod telemetry;
pub mod time;
pub mod unrouted;
pub mod wiring;

/// Runs futures with at most `limit` in flight; results in completion order.
pub async fn run_bounded<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
    limit: usize,
) -> Vec<F::Output> {
    use futures_util::StreamExt;
    let mut pending = futures.into_iter();
    let mut running = futures_util::stream::FuturesUnordered::new();
    running.extend(pending.by_ref().take(limit.max(1)));
    let mut out = Vec::new();
    while let Some(r) = running.next().await {
        out.push(r);
        if let Some(f) = pending.next() {
            running.push(f);
        }
    }
    out
}

/// [`run_bounded`], the results in the order of `futures`.
pub async fn run_bounded_in_order<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
    limit: usize,
) -> Vec<F::Output> {
    let indexed: Vec<_> = futures
        .into_iter()
        .enumerate()
        .map(|(i, f)| futures_util::FutureExt::map(f, move |r| (i, r)))
        .collect();
    let mut out = run_bounded(indexed, limit).await;
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

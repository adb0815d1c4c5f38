//! Click-to-WhatsApp ads through Meta's Marketing API (meta-api.md section 6, seed 000):
//! the partner-style proxy's ownership rules, the one-call creation with its clean-up,
//! and the ads inventory. Every call goes through [`Session::call`]: the account's
//! token, the usage governor ([`usage`]) and retries for the retryable codes only.

pub mod multipart;
pub mod spec;
pub mod usage;

use crate::graph::{GraphError, Token};
use crate::meta::connection::{ConnectError, MetaDeps};
use crate::store::{Accounts, AdAccountLink, AdInventory, AdObject, StoreError};
use reqwest::Method;
use serde::Serialize;
use serde_json::{Value, json};
use spec::Plan;
use std::sync::Arc;
use std::time::{Duration, Instant};
use usage::{Admit, Governor};

/// The message seed 000 answers for an ad account or object of another account.
pub const NOT_YOURS: &str = "id does not belong to your account";

/// Edges of `act_{id}` the proxy serves, and the kind of object each makes.
pub const EDGES: [(&str, &str); 5] = [
    ("campaigns", "campaign"),
    ("adsets", "adset"),
    ("adcreatives", "adcreative"),
    ("ads", "ad"),
    ("adimages", "adimage"),
];

/// Query parameters passed on to Meta (the access token is ours to add, never theirs).
pub const FORWARDED_QUERY: [&str; 7] = [
    "fields",
    "limit",
    "after",
    "before",
    "effective_status",
    "filtering",
    "date_preset",
];

#[derive(Debug, Clone)]
pub struct AdsPolicy {
    pub attempts: u32,
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// Retries stop when the next wait would end past this.
    pub budget: Duration,
    /// No call starts later than this after the request began (the HTTP API answers
    /// within 29 s; the clean-up must still fit).
    pub deadline: Duration,
    /// Each clean-up call: one attempt, this long at most.
    pub cleanup_timeout: Duration,
    /// No call runs past this after the request began, nor past the invocation's own
    /// deadline (the function's `Timeout`) less [`INVOCATION_MARGIN`], whichever comes
    /// first: the function answers in time, with what it could not clean up named, and
    /// its `Idempotency-Key` keeps that answer.
    pub hard_deadline: Duration,
}

pub use crate::http::INVOCATION_MARGIN;

impl Default for AdsPolicy {
    fn default() -> Self {
        Self {
            attempts: 3,
            base_backoff: Duration::from_millis(300),
            max_backoff: Duration::from_secs(2),
            budget: Duration::from_secs(6),
            deadline: Duration::from_secs(15),
            cleanup_timeout: Duration::from_secs(3),
            hard_deadline: Duration::from_secs(25),
        }
    }
}

pub struct AdsDeps {
    pub accounts: Arc<dyn Accounts>,
    pub ads: Arc<dyn AdInventory>,
    pub meta: Arc<MetaDeps>,
    pub governor: Governor,
    pub policy: AdsPolicy,
}

#[derive(Debug, thiserror::Error)]
pub enum AdsError {
    #[error("{NOT_YOURS}")]
    NotYours,
    #[error("{0}")]
    Invalid(String),
    /// The governor holds calls to this ad account (Meta announced a wait).
    #[error("Meta's rate limit for this ad account is spent: retry in {retry_after_secs} s")]
    Throttled { retry_after_secs: u64 },
    /// Meta refused with a rate-limit code; calls are held for `retry_after_secs`.
    #[error("{error}")]
    MetaRateLimited {
        error: GraphError,
        retry_after_secs: u64,
    },
    /// The request's time budget was spent before this call: it was not sent.
    #[error(
        "Meta answered too slowly: the request's time budget was spent before this call, which was not sent"
    )]
    Deadline,
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("{0}")]
    Meta(GraphError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a call does: creates are retried only when Meta clearly refused (a lost answer
/// may mean the object exists); clean-up calls are never held by the governor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    Read,
    Create,
    Update,
    Cleanup,
}

/// One account's work with the Marketing API.
pub struct Session<'a> {
    deps: &'a AdsDeps,
    pub account_id: String,
    token: Token,
    /// No creation call starts after this.
    deadline: Instant,
    /// No call runs past this (see [`AdsPolicy::hard_deadline`]).
    hard_deadline: Instant,
}

/// Makes a Graph answer safe to hand to the caller: paging links (`next`, `previous`)
/// are dropped at every depth (Meta puts `access_token=...` into them, nested ones too,
/// e.g. `fields=adsets.limit(1){id}`), and so is any other string that holds
/// `access_token=` or one of `secrets` (the token, its proof): as an object's field the
/// field goes, in an array it becomes `null`. Cursors stay.
pub fn scrub_secrets(v: &mut Value, secrets: &[&str]) {
    let leaks = |s: &str| {
        s.contains("access_token=") || secrets.iter().any(|t| !t.is_empty() && s.contains(t))
    };
    match v {
        Value::Object(map) => {
            if let Some(Value::Object(paging)) = map.get_mut("paging") {
                paging.remove("next");
                paging.remove("previous");
            }
            map.retain(|_, x| !x.as_str().is_some_and(leaks));
            for x in map.values_mut() {
                scrub_secrets(x, secrets);
            }
        }
        Value::Array(items) => {
            for x in items.iter_mut() {
                if x.as_str().is_some_and(leaks) {
                    *x = Value::Null;
                } else {
                    scrub_secrets(x, secrets);
                }
            }
        }
        _ => {}
    }
}

impl Session<'_> {
    /// [`scrub_secrets`] with this session's token and proof.
    pub fn scrub(&self, mut v: Value) -> Value {
        let proof = self.token.appsecret_proof().unwrap_or_default();
        scrub_secrets(&mut v, &[self.token.expose(), proof]);
        v
    }
}

impl AdsDeps {
    /// A session for one request; `invocation_deadline` is the Lambda invocation's
    /// (`ApiRequest::deadline`).
    pub async fn session(
        &self,
        account_id: &str,
        invocation_deadline: Option<Instant>,
    ) -> Result<Session<'_>, AdsError> {
        let now = Instant::now();
        let hard =
            crate::http::within_invocation(now + self.policy.hard_deadline, invocation_deadline);
        let token = self.meta.token(account_id).await?;
        Ok(Session {
            deps: self,
            account_id: account_id.to_string(),
            token,
            deadline: (now + self.policy.deadline).min(hard),
            hard_deadline: hard,
        })
    }

    /// The caller's ad account (from `act_123` or `123`), checked in the table before
    /// any Meta call: another account's (or an unlinked) ad account is [`AdsError::NotYours`].
    pub async fn own_ad_account(
        &self,
        account_id: &str,
        raw: &str,
    ) -> Result<AdAccountLink, AdsError> {
        let id = spec::ad_account_id(raw).ok_or_else(|| {
            AdsError::Invalid(format!("{raw:?} is not an ad account id (act_<digits>)"))
        })?;
        match self.ads.ad_account(&id).await? {
            Some(link) if link.account_id == account_id => Ok(link),
            _ => Err(AdsError::NotYours),
        }
    }

    /// Records an object made through us; a failure only costs a Meta lookup later.
    async fn remember(&self, account_id: &str, ad_account_id: &str, id: &str, kind: &str) {
        let o = AdObject {
            id: id.to_string(),
            kind: kind.to_string(),
            account_id: account_id.to_string(),
            ad_account_id: ad_account_id.to_string(),
            created_at_ms: crate::time::now_millis(),
        };
        if let Err(e) = self.ads.put_ad_object(&o).await {
            tracing::warn!(object_id = id, error = %e, "could not record the ad object's owner");
        }
    }
}

fn backoff(policy: &AdsPolicy, attempt: u32) -> Duration {
    let exp = policy.base_backoff * 2u32.saturating_pow(attempt.saturating_sub(1));
    crate::capi::jitter(exp.min(policy.max_backoff))
}

impl Session<'_> {
    /// One Marketing API call for `ad_account` (the governor's key), with the usage
    /// headers read, the governor asked first, and retries for the retryable codes.
    pub async fn call(
        &self,
        ad_account: &str,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
        kind: CallKind,
    ) -> Result<(Value, Vec<(&'static str, String)>), AdsError> {
        let deps = self.deps;
        let started = Instant::now();
        let user_key = format!("_user#{}", self.account_id);
        let mut attempt = 0;
        loop {
            attempt += 1;
            if kind != CallKind::Cleanup {
                if Instant::now() >= self.deadline {
                    return Err(AdsError::Deadline);
                }
                // The ad account's budget, the app's, and the user's (the token's).
                for key in [ad_account, usage::APP_KEY, user_key.as_str()] {
                    match deps.governor.admit(key) {
                        Admit::Go => {}
                        Admit::SlowDown(d) => tokio::time::sleep(d).await,
                        Admit::Blocked(d) => {
                            return Err(AdsError::Throttled {
                                retry_after_secs: d.as_secs().max(1),
                            });
                        }
                    }
                }
            }
            // Every call ends by the hard deadline; a clean-up call sooner.
            let left = self.hard_deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(AdsError::Deadline);
            }
            let timeout = Some(if kind == CallKind::Cleanup {
                deps.policy.cleanup_timeout.min(left)
            } else {
                crate::wiring::GRAPH_TIMEOUT.min(left)
            });
            let reply = deps
                .meta
                .graph
                .marketing(method.clone(), path, query, body, &self.token, timeout)
                .await;
            let seen = usage::parse(&reply.usage);
            if let Some(u) = seen {
                deps.governor.record(ad_account, u);
            }
            if let Some(u) = usage::parse_app(&reply.usage) {
                deps.governor.record(usage::APP_KEY, u);
            }
            let e = match reply.result {
                Ok(v) => return Ok((v, reply.usage)),
                Err(e) => e,
            };
            if e.is_token_error() {
                deps.meta
                    .mark_broken(&self.account_id, &self.token, &e)
                    .await;
                return Err(AdsError::Connect(ConnectError::TokenInvalid(Some(e))));
            }
            if e.is_rate_limit() {
                // Meta throttled: retrying now only extends the block. Code 4 is the
                // app's budget, 17 the user's, the others the ad account's.
                let key = match e.code() {
                    Some(4) => usage::APP_KEY,
                    Some(17) => user_key.as_str(),
                    _ => ad_account,
                };
                if key != ad_account || seen.is_none_or(|u| u.regain_secs == 0) {
                    deps.governor.block(key, 60);
                }
                let retry_after_secs = match deps.governor.admit(key) {
                    Admit::Blocked(d) => d.as_secs().max(1),
                    _ => 60,
                };
                return Err(AdsError::MetaRateLimited {
                    error: e,
                    retry_after_secs,
                });
            }
            if kind == CallKind::Cleanup {
                // One attempt: the clean-up must fit in what is left of the request.
                return Err(AdsError::Meta(e));
            }
            let clear_refusal = matches!(&e, GraphError::Api { status, error } if *status < 500 && error.is_transient == Some(true));
            let may_retry = match kind {
                CallKind::Create => clear_refusal,
                _ => e.is_retryable(),
            };
            let wait = backoff(&deps.policy, attempt);
            if !may_retry
                || attempt >= deps.policy.attempts
                || started.elapsed() + wait > deps.policy.budget
            {
                return Err(AdsError::Meta(e));
            }
            tracing::info!(attempt, code = ?e.code(), "Marketing API call failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }

    /// The ad account of an object the caller may touch: known from the table, or else
    /// asked of Meta (`account_id`, with the caller's own token) and checked against
    /// the caller's ad accounts.
    pub async fn own_object(&self, id: &str) -> Result<String, AdsError> {
        if !spec::is_object_id(id) {
            return Err(AdsError::Invalid(format!(
                "{id:?} is not a Graph object id"
            )));
        }
        let deps = self.deps;
        if let Some(o) = deps.ads.ad_object(id).await? {
            return if o.account_id == self.account_id {
                Ok(o.ad_account_id)
            } else {
                Err(AdsError::NotYours)
            };
        }
        let (v, _) = self
            .call(
                &format!("_lookup#{}", self.account_id),
                Method::GET,
                id,
                &[("fields", "id,account_id")],
                None,
                CallKind::Read,
            )
            .await?;
        let act = v["account_id"]
            .as_str()
            .and_then(spec::ad_account_id)
            .ok_or(AdsError::NotYours)?;
        let link = deps.own_ad_account(&self.account_id, &act).await?;
        deps.remember(&self.account_id, &link.ad_account_id, id, "object")
            .await;
        Ok(link.ad_account_id)
    }

    /// Creates an object on `act_{id}/{edge}` and remembers its owner.
    pub async fn create(
        &self,
        ad_account: &str,
        edge: &str,
        body: &Value,
    ) -> Result<(Value, Vec<(&'static str, String)>), AdsError> {
        let path = format!("{ad_account}/{edge}");
        let (v, usage) = self
            .call(
                ad_account,
                Method::POST,
                &path,
                &[],
                Some(body),
                CallKind::Create,
            )
            .await?;
        if let (Some(id), Some((_, kind))) =
            (v["id"].as_str(), EDGES.iter().find(|(e, _)| *e == edge))
        {
            self.deps
                .remember(&self.account_id, ad_account, id, kind)
                .await;
        }
        Ok((v, usage))
    }
}

// ------------------------------------------------------------------ one-call creation

#[derive(Debug, Clone, Serialize)]
pub struct StepDone {
    pub step: u8,
    pub name: &'static str,
    pub id: String,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CleanupDone {
    pub kind: &'static str,
    pub id: String,
    /// deleted, paused, kept (images cost nothing), failed.
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CreatedIds {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaign_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adset_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creative_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ad_id: Option<String>,
}

#[derive(Debug)]
pub struct Created {
    pub ad_account_id: String,
    pub ids: CreatedIds,
    pub steps: Vec<StepDone>,
    pub status: &'static str,
    pub effective_status: Option<String>,
}

#[derive(Debug)]
pub struct CreationFailed {
    pub ad_account_id: String,
    pub step: u8,
    pub failed_step: &'static str,
    pub error: AdsError,
    pub ids: CreatedIds,
    pub steps: Vec<StepDone>,
    pub cleanup: Vec<CleanupDone>,
    /// The failed call's outcome is unknown (no answer, or a 5xx): Meta may hold an
    /// object we have no id for. Objects are created PAUSED, so it cannot spend.
    pub unknown_outcome: bool,
}

/// An EMF line (CloudWatch embedded metric) for a failed creation whose clean-up left
/// objects behind: the `AdCleanupIncomplete` alarm watches it.
pub fn cleanup_metrics_line(f: &CreationFailed, now_ms: i64) -> Option<String> {
    let left: Vec<&CleanupDone> = f
        .cleanup
        .iter()
        .filter(|c| c.action == "paused" || c.action == "failed")
        .collect();
    if left.is_empty() && !f.unknown_outcome {
        return None;
    }
    Some(
        crate::metrics::MetricLine::new()
            .count(crate::metrics::Metric::AdCleanupIncomplete, 1)
            .field("ad_account_id", &f.ad_account_id)
            .field("failed_step", f.failed_step)
            .field("left", &left)
            .field("unknown_outcome", f.unknown_outcome)
            .to_line(now_ms),
    )
}

fn id_of(v: &Value) -> Result<String, AdsError> {
    v["id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| AdsError::Meta(GraphError::Decode("no id in Meta's answer".into())))
}

impl Session<'_> {
    /// The five steps of seed 000 in one call (the image upload first when an image is
    /// given), everything PAUSED; then, when asked, publishing: the ad, its ad set and
    /// its campaign set ACTIVE, the campaign last, so nothing serves before all three
    /// are. If a step fails, every object made is deleted (or paused when deletion
    /// fails) and the failure says what was cleaned up.
    pub async fn create_ctwa(&self, mut plan: Plan) -> Result<Created, Box<CreationFailed>> {
        let act = plan.ad_account_id.clone();
        let mut ids = CreatedIds::default();
        let mut steps: Vec<StepDone> = Vec::new();
        // (kind, id) in creation order, for the clean-up.
        let mut made: Vec<(&'static str, String)> = Vec::new();

        macro_rules! step {
            ($n:expr, $name:expr, $fut:expr) => {{
                let t = Instant::now();
                match $fut.await {
                    Ok(v) => (v, t.elapsed().as_millis() as u64),
                    Err(error) => {
                        let unknown_outcome = matches!(
                            &error,
                            AdsError::Meta(GraphError::Transport(_) | GraphError::NoAnswer(_))
                        ) || matches!(&error, AdsError::Meta(GraphError::Api { status, .. }) if *status >= 500);
                        let cleanup = self.clean_up(&act, &made).await;
                        return Err(Box::new(CreationFailed {
                            ad_account_id: act.clone(),
                            step: $n,
                            failed_step: $name,
                            error,
                            ids,
                            steps,
                            cleanup,
                            unknown_outcome,
                        }));
                    }
                }
            }};
        }

        if let Some(image) = plan.image.take() {
            let (v, ms) = step!(
                0,
                "image",
                self.create(&act, "adimages", &Value::Object(image))
            );
            let hash = v.0["images"]
                .as_object()
                .and_then(|m| m.values().next())
                .and_then(|i| i["hash"].as_str())
                .map(str::to_string);
            let Some(hash) = hash else {
                let cleanup = self.clean_up(&act, &made).await;
                return Err(Box::new(CreationFailed {
                    ad_account_id: act.clone(),
                    step: 0,
                    failed_step: "image",
                    error: AdsError::Meta(GraphError::Decode(
                        "no image hash in Meta's answer".into(),
                    )),
                    ids,
                    steps,
                    cleanup,
                    unknown_outcome: false,
                }));
            };
            if let Some(ld) = plan.creative["object_story_spec"]["link_data"].as_object_mut() {
                ld.insert("image_hash".into(), json!(hash));
            }
            made.push(("adimage", hash.clone()));
            steps.push(StepDone {
                step: 0,
                name: "image",
                id: hash.clone(),
                duration_ms: ms,
            });
            ids.image_hash = Some(hash);
        }

        let (campaign_id, ms) = step!(1, "campaign", async {
            let (v, _) = self
                .create(&act, "campaigns", &Value::Object(plan.campaign.clone()))
                .await?;
            id_of(&v)
        });
        made.push(("campaign", campaign_id.clone()));
        steps.push(StepDone {
            step: 1,
            name: "campaign",
            id: campaign_id.clone(),
            duration_ms: ms,
        });
        ids.campaign_id = Some(campaign_id.clone());

        plan.adset.insert("campaign_id".into(), json!(campaign_id));
        let (adset_id, ms) = step!(2, "adset", async {
            let (v, _) = self
                .create(&act, "adsets", &Value::Object(plan.adset.clone()))
                .await?;
            id_of(&v)
        });
        made.push(("adset", adset_id.clone()));
        steps.push(StepDone {
            step: 2,
            name: "adset",
            id: adset_id.clone(),
            duration_ms: ms,
        });
        ids.adset_id = Some(adset_id.clone());

        let (creative_id, ms) = step!(3, "creative", async {
            let (v, _) = self
                .create(&act, "adcreatives", &Value::Object(plan.creative.clone()))
                .await?;
            id_of(&v)
        });
        made.push(("adcreative", creative_id.clone()));
        steps.push(StepDone {
            step: 3,
            name: "creative",
            id: creative_id.clone(),
            duration_ms: ms,
        });
        ids.creative_id = Some(creative_id.clone());

        plan.ad.insert("adset_id".into(), json!(adset_id));
        plan.ad
            .insert("creative".into(), json!({"creative_id": creative_id}));
        let (ad_id, ms) = step!(4, "ad", async {
            let (v, _) = self
                .create(&act, "ads", &Value::Object(plan.ad.clone()))
                .await?;
            id_of(&v)
        });
        made.push(("ad", ad_id.clone()));
        steps.push(StepDone {
            step: 4,
            name: "ad",
            id: ad_id.clone(),
            duration_ms: ms,
        });
        ids.ad_id = Some(ad_id.clone());

        if !plan.publish {
            return Ok(Created {
                ad_account_id: act,
                ids,
                steps,
                status: "PAUSED",
                effective_status: Some("PAUSED".into()),
            });
        }
        let active = json!({"status": "ACTIVE"});
        let (_, ms) = step!(5, "publish", async {
            for id in [&ad_id, &adset_id, &campaign_id] {
                self.call(&act, Method::POST, id, &[], Some(&active), CallKind::Update)
                    .await?;
            }
            Ok::<(), AdsError>(())
        });
        steps.push(StepDone {
            step: 5,
            name: "publish",
            id: ad_id.clone(),
            duration_ms: ms,
        });
        // The ad is now in review; its effective status says where it stands.
        let effective_status = self
            .call(
                &act,
                Method::GET,
                &ad_id,
                &[("fields", "effective_status")],
                None,
                CallKind::Read,
            )
            .await
            .ok()
            .and_then(|(v, _)| v["effective_status"].as_str().map(str::to_string));
        Ok(Created {
            ad_account_id: act,
            ids,
            steps,
            status: "ACTIVE",
            effective_status,
        })
    }

    /// Deletes what a failed creation made, newest first; pauses what cannot be deleted.
    async fn clean_up(&self, act: &str, made: &[(&'static str, String)]) -> Vec<CleanupDone> {
        let mut out = Vec::new();
        for (kind, id) in made.iter().rev() {
            if *kind == "adimage" {
                out.push(CleanupDone {
                    kind,
                    id: id.clone(),
                    action: "kept",
                    error: None,
                });
                continue;
            }
            let deleted = self
                .call(act, Method::DELETE, id, &[], None, CallKind::Cleanup)
                .await;
            let done = match deleted {
                Ok(_) => CleanupDone {
                    kind,
                    id: id.clone(),
                    action: "deleted",
                    error: None,
                },
                Err(e) if *kind != "adcreative" => {
                    let paused = self
                        .call(
                            act,
                            Method::POST,
                            id,
                            &[],
                            Some(&json!({"status": "PAUSED"})),
                            CallKind::Cleanup,
                        )
                        .await;
                    match paused {
                        Ok(_) => CleanupDone {
                            kind,
                            id: id.clone(),
                            action: "paused",
                            error: Some(e.to_string()),
                        },
                        Err(e2) => CleanupDone {
                            kind,
                            id: id.clone(),
                            action: "failed",
                            error: Some(format!("delete: {e}; pause: {e2}")),
                        },
                    }
                }
                // A creative has no status and never spends.
                Err(e) => CleanupDone {
                    kind,
                    id: id.clone(),
                    action: "failed",
                    error: Some(e.to_string()),
                },
            };
            if done.action != "deleted" {
                tracing::error!(object_id = %done.id, kind = done.kind, action = done.action, "clean-up of a failed ad creation was incomplete");
            }
            out.push(done);
        }
        out
    }
}

// ------------------------------------------------------------------ inventory

/// Fields of an ad in the inventory.
pub const AD_LIST_FIELDS: &str =
    "id,name,status,effective_status,created_time,adset_id,campaign_id";
pub const AD_FIELDS: &str =
    "id,name,status,effective_status,created_time,adset_id,campaign_id,creative,account_id";
pub const ADSET_FIELDS: &str = "id,name,status,effective_status,daily_budget,lifetime_budget,optimization_goal,billing_event,destination_type,promoted_object,targeting,campaign_id,start_time";
pub const CREATIVE_FIELDS: &str = "id,name,object_story_spec,image_hash";

/// One page of the account's ads across its ad accounts (in ad account order). The
/// cursor is `<ad account>:<Meta's after cursor>`.
pub async fn list_ads(
    s: &Session<'_>,
    links: &[AdAccountLink],
    limit: usize,
    cursor: Option<&str>,
) -> Result<(Vec<Value>, Option<String>), AdsError> {
    let (mut idx, mut after) = match cursor {
        None => (0, None),
        Some(c) => {
            let (act, after) = c
                .split_once(':')
                .ok_or_else(|| AdsError::Invalid("after is not a cursor from this API".into()))?;
            let idx = links
                .iter()
                .position(|l| l.ad_account_id == act)
                .ok_or_else(|| AdsError::Invalid("after is not a cursor from this API".into()))?;
            (idx, (!after.is_empty()).then(|| after.to_string()))
        }
    };
    let mut out: Vec<Value> = Vec::new();
    let mut next = None;
    while idx < links.len() && out.len() < limit {
        let act = &links[idx].ad_account_id;
        let want = (limit - out.len()).to_string();
        let mut q: Vec<(&str, &str)> = vec![("fields", AD_LIST_FIELDS), ("limit", &want)];
        if let Some(a) = &after {
            q.push(("after", a));
        }
        let (page, _) = s
            .call(
                act,
                Method::GET,
                &format!("{act}/ads"),
                &q,
                None,
                CallKind::Read,
            )
            .await?;
        let data = page["data"].as_array().cloned().unwrap_or_default();
        let more_here = page["paging"]["next"].is_string();
        let last_cursor = page["paging"]["cursors"]["after"]
            .as_str()
            .map(str::to_string);
        // Budgets live on the ad sets: one `ids=` read for the page.
        let mut adsets: Vec<&str> = data.iter().filter_map(|a| a["adset_id"].as_str()).collect();
        adsets.sort_unstable();
        adsets.dedup();
        let budgets = if adsets.is_empty() {
            Value::Null
        } else {
            let ids = adsets.join(",");
            s.call(
                act,
                Method::GET,
                "",
                &[("ids", &ids), ("fields", "id,daily_budget,lifetime_budget")],
                None,
                CallKind::Read,
            )
            .await?
            .0
        };
        for a in data {
            let adset = a["adset_id"].as_str().unwrap_or_default();
            out.push(json!({
                "ad_id": a["id"],
                "name": a["name"],
                "status": a["status"],
                "effective_status": a["effective_status"],
                "daily_budget": budget_number(&budgets[adset]["daily_budget"]),
                "created_time": a["created_time"],
                "ad_account_id": act,
                "adset_id": a["adset_id"],
                "campaign_id": a["campaign_id"],
            }));
        }
        if more_here && let Some(c) = last_cursor {
            if out.len() >= limit {
                next = Some(format!("{act}:{c}"));
                break;
            }
            after = Some(c);
            continue;
        }
        idx += 1;
        after = None;
        if out.len() >= limit && idx < links.len() {
            next = Some(format!("{}:", links[idx].ad_account_id));
        }
    }
    Ok((out, next))
}

/// Meta sends budgets as strings of minor units: a number here.
fn budget_number(v: &Value) -> Value {
    match v {
        Value::String(s) => s.parse::<i64>().map(Value::from).unwrap_or(Value::Null),
        Value::Number(_) => v.clone(),
        _ => Value::Null,
    }
}

/// One ad with its ad set and creative, and what this deployment saw of it.
pub async fn ad_detail(s: &Session<'_>, ad_id: &str) -> Result<Value, AdsError> {
    let act = s.own_object(ad_id).await?;
    let (ad, _) = s
        .call(
            &act,
            Method::GET,
            ad_id,
            &[("fields", AD_FIELDS)],
            None,
            CallKind::Read,
        )
        .await?;
    let adset_id = ad["adset_id"].as_str().unwrap_or_default().to_string();
    let creative_id = ad["creative"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let read = |id: String, fields: &'static str| {
        let act = act.clone();
        async move {
            if !spec::is_object_id(&id) {
                return Ok::<Value, AdsError>(Value::Null);
            }
            Ok(s.call(
                &act,
                Method::GET,
                &id,
                &[("fields", fields)],
                None,
                CallKind::Read,
            )
            .await?
            .0)
        }
    };
    let (mut adset, creative, stats) = tokio::try_join!(
        read(adset_id, ADSET_FIELDS),
        read(creative_id, CREATIVE_FIELDS),
        async {
            s.deps
                .ads
                .ad_stats(&s.account_id, ad_id)
                .await
                .map_err(AdsError::from)
        },
    )?;
    if let Some(b) = adset.get("daily_budget").map(budget_number) {
        adset["daily_budget"] = b;
    }
    Ok(json!({
        "ad_id": ad_id,
        "ad": ad,
        "adset": adset,
        "creative": creative,
        "ad_account_id": act,
        "clicks": stats.clicks,
        "conversions": {"total": stats.conversions, "delivered": stats.conversions_delivered},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(actions: &[&'static str], unknown_outcome: bool) -> CreationFailed {
        CreationFailed {
            ad_account_id: "act_1".into(),
            step: 4,
            failed_step: "ad",
            error: AdsError::Invalid("x".into()),
            ids: CreatedIds::default(),
            steps: Vec::new(),
            cleanup: actions
                .iter()
                .map(|a| CleanupDone {
                    kind: "adset",
                    id: "1".into(),
                    action: a,
                    error: None,
                })
                .collect(),
            unknown_outcome,
        }
    }

    #[test]
    fn incomplete_cleanup_is_a_metric() {
        assert_eq!(
            cleanup_metrics_line(&failed(&["deleted", "kept"], false), 0),
            None
        );
        let line = cleanup_metrics_line(&failed(&["deleted", "paused"], false), 5).unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["AdCleanupIncomplete"], 1);
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"],
            "AdCleanupIncomplete"
        );
        assert_eq!(v["left"][0]["action"], "paused");
        assert!(cleanup_metrics_line(&failed(&[], true), 0).is_some());
    }

    #[test]
    fn rate_limit_codes() {
        let e = |code| GraphError::Api {
            status: 400,
            error: Box::new(crate::graph::GraphErrorBody {
                code,
                ..Default::default()
            }),
        };
        for c in [4, 17, 32, 613, 80_000, 80_004, 80_014] {
            assert!(e(c).is_rate_limit(), "{c}");
        }
        for c in [1, 2, 100, 190, 200] {
            assert!(!e(c).is_rate_limit(), "{c}");
        }
    }
}

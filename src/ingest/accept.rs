//! One delivery, from bytes to a durable decision: verify → parse → filter → journal (with the
//! task and its outbox row in the same commit) → an [`Answer`]. The listener calls this for each
//! request and `deliveries replay` for a stored delivery. It emits an event at every stage.

pub use super::answer::Answer;
use super::filter::{self, Decision};
use super::headers;
use super::verify::{self, StandardHeaders, VerifyError};
use super::{ParseError, Parsed, Route, github, gitlab};
use crate::config::{Config, Filter, Secret};
use crate::event::{Bus, Event, Verdict};
use crate::forge::Found;
use crate::store::{DeliveryRoute, Journal, NewDelivery, NewTask, Recorded, RejectedCaps, StoredBody};
use crate::task::{Source, Task, new_task_id, now_rfc3339};
use bytes::Bytes;
use hyper::HeaderMap;

use serde_json::json;
use std::sync::{Arc, OnceLock};

/// A request as the ingest pipeline sees it.
pub struct Incoming {
    pub route: Route,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Set for `deliveries replay`: the journal id of the original.
    pub replay_of: Option<i64>,
    /// For replays of GitLab deliveries: the stored fingerprint of the token presented then.
    pub stored_token_fp: Option<String>,
}

struct Secrets {
    github: Secret,
    gitlab: Secret,
    gitlab_system: Secret,
    signing: Secret,
}

/// The forge users whose tokens agentctl uses, once looked up (`GET /user`): their events are
/// ignored as `self-event`. Set from outside (the app looks them up in the background).
#[derive(Debug, Default)]
pub struct SelfUsers {
    pub github: OnceLock<String>,
    pub gitlab: OnceLock<String>,
}

impl SelfUsers {
    pub fn get(&self, source: Source) -> Option<&str> {
        match source {
            Source::Github => self.github.get(),
            Source::Gitlab => self.gitlab.get(),
        }
        .map(String::as_str)
    }

    pub fn set(&self, source: Source, user: String) {
        let _ = match source {
            Source::Github => self.github.set(user),
            Source::Gitlab => self.gitlab.set(user),
        };
    }
}

/// The route name of deliveries the poller makes up for the items it finds.
pub const POLL_ROUTE: &str = DeliveryRoute::Poll.as_str();

/// A poller's finding's delivery id: the same for one labelling of one item
/// (`github:octo/hello#7@<updated_at>`).
pub fn poll_delivery_id(found: &Found) -> String {
    let item = &found.item;
    let item_ref = crate::task::item_ref(&item.repo_full_name, item.kind, item.number);
    format!("{}:{item_ref}@{}", item.source.as_str(), found.updated_at)
}

/// Whether a finding is already handled (its delivery id seen, or its item with a live task),
/// read without the writer. [`Ingest::accept_found`] checks again inside its write, so this is
/// only the fast path that keeps unchanged items off the writer.
pub async fn already_known(journal: &Journal, found: &Found) -> Result<bool, crate::store::StoreError> {
    let key = DeliveryRoute::Poll.dedupe_key(&poll_delivery_id(found));
    journal.poll_known(key, found.item.key()).await
}

/// The ingest pipeline with its configuration.
#[derive(Clone)]
pub struct Ingest {
    self_users: Arc<SelfUsers>,
    /// Sources whose label life-cycle is on (a token is set): github, gitlab.
    lifecycle: [bool; 2],
    secrets: Arc<Secrets>,
    filter: Arc<Filter>,
    queue: Arc<str>,
    journal: Journal,
    bus: Bus,
    caps: RejectedCaps,
    salt: Arc<[u8]>,
    /// The instance that receives (recorded with each delivery); none for an operator's replay.
    instance: Option<Arc<str>>,
    /// `labels.processing`: its removal, like a trigger label's, cancels the item's run.
    processing: Arc<str>,
}

impl Ingest {
    /// `config` must already carry the route secrets (see `config::ensure_route_secrets`).
    pub async fn new(config: &Config, journal: Journal, bus: Bus) -> Result<Ingest, crate::store::StoreError> {
        let salt = journal.token_salt().await?;
        Ok(Ingest {
            self_users: Arc::default(),
            lifecycle: [!config.github.token.is_empty(), !config.gitlab.token.is_empty()],
            secrets: Arc::new(Secrets {
                github: config.github.webhook_secret.clone(),
                gitlab: config.gitlab.webhook_token.clone(),
                gitlab_system: config.gitlab.system_hook_token.clone(),
                signing: config.gitlab.signing_token.clone(),
            }),
            filter: Arc::new(config.filter.clone()),
            queue: config.broker.queue.as_str().into(),
            journal,
            bus,
            caps: RejectedCaps::default(),
            salt: salt.into(),
            instance: None,
            processing: config.labels.processing.as_str().into(),
        })
    }

    pub fn with_caps(mut self, caps: RejectedCaps) -> Self {
        self.caps = caps;
        self
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Records `instance` as the receiver of every delivery.
    pub fn with_instance(mut self, instance: &str) -> Self {
        self.instance = Some(instance.into());
        self
    }

    pub fn self_users(&self) -> &Arc<SelfUsers> {
        &self.self_users
    }

    fn lifecycle(&self, source: Source) -> bool {
        self.lifecycle[usize::from(source == Source::Gitlab)]
    }

    /// An item the poller found: the same filter → journal → outbox path as a webhook, under a
    /// made-up delivery (route `poll`) whose id is stable for one labelling of one item, so
    /// later cycles do not queue it again; nothing is recorded when the item already has a
    /// live task ([`Answer::Duplicate`] then names it).
    pub async fn accept_found(&self, found: &Found) -> Answer {
        let item = &found.item;
        let body = json!({
            "source": item.source.as_str(), "kind": item.kind.as_str(), "repo": item.repo_full_name,
            "number": item.number, "project_id": item.project_id, "url": item.url, "title": item.title,
            "author": item.author, "labels": item.labels, "updated_at": found.updated_at,
        });
        let body = serde_json::to_vec(&body).expect("JSON serializes");
        let parsed = Parsed {
            source: item.source,
            event: POLL_ROUTE.into(),
            action: None,
            item: Some(item.clone()),
            change: super::Change::Opened,
            sender: None,
        };
        let decision = filter::decide(&parsed, &self.filter);
        let record = NewDelivery {
            route: DeliveryRoute::Poll,
            delivery_id: Some(poll_delivery_id(found)),
            dedupe: true,
            event: None,
            action: None,
            item: None,
            received_at: now_rfc3339(),
            headers_json: "[]".into(),
            body: StoredBody::pack(&body, None),
            body_size: body.len(),
            token_fp: None,
            verification: "poll".into(),
            verdict: Verdict::Rejected,
            reason: String::new(),
            http_status: 200,
            replay_of: None,
            task: None,
            only_new: true,
            instance: self.instance.as_deref().map(str::to_string),
        };
        self.commit(record, parsed, decision, None).await
    }

    /// Runs one delivery through the pipeline.
    pub async fn handle(&self, incoming: Incoming) -> Answer {
        let token_fp = self.token_fingerprint(&incoming);
        if let Err(e) = self.verify(&incoming, token_fp.as_deref()) {
            let reason = e.to_string();
            return self.reject(incoming, token_fp, e.code(), Answer::Unauthorized { reason }).await;
        }
        let parsed = match parse(&incoming) {
            Ok(p) => p,
            Err(ParseError(reason)) => {
                return self.reject(incoming, token_fp, "ok", Answer::BadRequest { reason }).await;
            }
        };
        self.bus.emit(Event::DeliveryReceived {
            source: parsed.source,
            event: parsed.event.clone(),
            action: parsed.action.clone(),
        });
        let me = self.self_users.get(parsed.source);
        // With the life-cycle on, agentctl removes labels itself: until its own user is known, a
        // removal cannot be told from a person's, and none cancels.
        let processing = (me.is_some() || !self.lifecycle(parsed.source)).then_some(&*self.processing);
        let decision = filter::decide_as(&parsed, &self.filter, me, processing);
        let record = self.delivery(&incoming, token_fp, "ok", 200, String::new());
        self.commit(record, parsed, decision, incoming.replay_of).await
    }

    /// What can be checked from the headers alone, before a byte of the body is read, so that
    /// an unauthenticated request costs no body read: a secret is configured for the route; on
    /// GitHub the signature and event headers are there and well-formed (the HMAC itself needs
    /// the body); on GitLab the token matches and, with a signing token, the Standard Webhooks
    /// headers are there with a fresh timestamp. The error is the `verification` code to
    /// journal the refusal with, and the answer.
    pub fn check_head(&self, route: Route, h: &HeaderMap) -> Result<(), (&'static str, Answer)> {
        let refuse = |e: VerifyError| (e.code(), Answer::Unauthorized { reason: e.to_string() });
        match route {
            Route::Github => {
                verify::github_signature_bytes(self.secrets.github.expose(), headers::get(h, "x-hub-signature-256"))
                    .map_err(refuse)?;
                if headers::get_str(h, "x-github-event").is_none() {
                    let reason = "missing X-GitHub-Event header".to_string();
                    return Err(("not_checked", Answer::BadRequest { reason }));
                }
            }
            Route::Gitlab | Route::GitlabSystem => {
                let token = if route == Route::Gitlab { &self.secrets.gitlab } else { &self.secrets.gitlab_system };
                verify::verify_token(token.expose(), headers::get(h, "x-gitlab-token"), "X-Gitlab-Token")
                    .map_err(refuse)?;
                if self.signs(route) {
                    let std_headers = StandardHeaders {
                        id: headers::get(h, "webhook-id"),
                        timestamp: headers::get(h, "webhook-timestamp"),
                        signature: headers::get(h, "webhook-signature"),
                    };
                    let now = Some(crate::store::unix_now());
                    verify::check_standard_head(self.secrets.signing.expose(), &std_headers, now).map_err(refuse)?;
                }
            }
        }
        Ok(())
    }

    /// Journals a request refused by [`Ingest::check_head`], whose body was never read.
    pub async fn reject_head(&self, route: Route, headers: HeaderMap, code: &str, answer: Answer) -> Answer {
        let incoming = Incoming { route, headers, body: Bytes::new(), replay_of: None, stored_token_fp: None };
        let token_fp = self.token_fingerprint(&incoming);
        self.reject(incoming, token_fp, code, answer).await
    }

    /// Whether deliveries on `route` must carry a Standard Webhooks signature.
    fn signs(&self, route: Route) -> bool {
        route == Route::Gitlab && !self.secrets.signing.is_empty()
    }

    fn token_fingerprint(&self, incoming: &Incoming) -> Option<String> {
        match incoming.route {
            Route::Github => None,
            _ if incoming.replay_of.is_some() => incoming.stored_token_fp.clone(),
            _ => headers::get(&incoming.headers, "x-gitlab-token").map(|t| verify::token_fingerprint(&self.salt, t)),
        }
    }

    fn verify(&self, incoming: &Incoming, token_fp: Option<&str>) -> Result<(), VerifyError> {
        let h = &incoming.headers;
        let token = match incoming.route {
            Route::Github => {
                return verify::verify_github(
                    self.secrets.github.expose(),
                    headers::get(h, "x-hub-signature-256"),
                    &incoming.body,
                );
            }
            Route::Gitlab => &self.secrets.gitlab,
            Route::GitlabSystem => &self.secrets.gitlab_system,
        };
        if incoming.replay_of.is_some() {
            // The token itself was never stored: compare fingerprints with today's token.
            if token.is_empty() {
                return Err(VerifyError::NoSecret);
            }
            let fp = token_fp.ok_or(VerifyError::Missing("X-Gitlab-Token"))?;
            let expected = verify::token_fingerprint(&self.salt, token.expose().as_bytes());
            verify::verify_token(&expected, Some(fp.as_bytes()), "X-Gitlab-Token")?;
        } else {
            verify::verify_token(token.expose(), headers::get(h, "x-gitlab-token"), "X-Gitlab-Token")?;
        }
        if self.signs(incoming.route) {
            let std_headers = StandardHeaders {
                id: headers::get(h, "webhook-id"),
                timestamp: headers::get(h, "webhook-timestamp"),
                signature: headers::get(h, "webhook-signature"),
            };
            let now = incoming.replay_of.is_none().then(crate::store::unix_now);
            verify::verify_standard(self.secrets.signing.expose(), &std_headers, &incoming.body, now)?;
        }
        Ok(())
    }

    fn delivery(
        &self,
        incoming: &Incoming,
        token_fp: Option<String>,
        verification: &str,
        status: u16,
        reason: String,
    ) -> NewDelivery {
        // A rejected delivery keeps at most `per_row` bytes of headers and body together;
        // an accepted one is kept whole (hyper bounds its head).
        let (headers_json, body) = if status >= 400 {
            let headers_json = headers::to_json(&incoming.headers, Some(self.caps.headers()));
            let room = self.caps.per_row.saturating_sub(headers_json.len());
            (headers_json, StoredBody::pack(&incoming.body, Some(room)))
        } else {
            (headers::to_json(&incoming.headers, None), StoredBody::pack(&incoming.body, None))
        };
        NewDelivery {
            route: incoming.route.into(),
            delivery_id: headers::delivery_id(incoming.route, &incoming.headers, self.signs(incoming.route)),
            dedupe: false,
            // As the (unverified) header names it; a verified delivery's parsed event replaces it.
            event: headers::event(incoming.route, &incoming.headers),
            action: None,
            item: None,
            received_at: now_rfc3339(),
            headers_json,
            body,
            body_size: incoming.body.len(),
            token_fp,
            verification: verification.to_string(),
            verdict: Verdict::Rejected,
            reason,
            http_status: status,
            replay_of: incoming.replay_of,
            task: None,
            only_new: false,
            instance: self.instance.as_deref().map(str::to_string),
        }
    }

    /// Journals a refused delivery (size-capped) and answers with `answer`.
    pub async fn reject(
        &self,
        incoming: Incoming,
        token_fp: Option<String>,
        verification: &str,
        answer: Answer,
    ) -> Answer {
        let record = self.delivery(&incoming, token_fp, verification, answer.status(), answer.reason());
        let reason = record.reason.clone();
        let caps = self.caps;
        let journal_id = match self.journal.record(record, caps).await {
            Ok(Recorded::Stored { journal_id, .. } | Recorded::Duplicate { journal_id, .. }) => Some(journal_id),
            // A rejected delivery is never a poll's finding.
            Ok(Recorded::Known { .. }) => None,
            Err(e) => {
                tracing::warn!("could not journal a rejected delivery: {e}");
                None
            }
        };
        self.bus.emit(Event::DeliveryRejected { route: incoming.route, status: answer.status(), reason, journal_id });
        answer
    }

    /// Completes `record` with the decision and journals it (with its task and outbox row).
    async fn commit(
        &self,
        mut record: NewDelivery,
        parsed: Parsed,
        decision: Decision,
        replay_of: Option<i64>,
    ) -> Answer {
        let cancelled = match (&decision, &parsed.item) {
            (Decision::Cancel { label, by }, Some(item)) => {
                let by = by.as_deref().map(|u| format!(" by @{u}")).unwrap_or_default();
                let why = format!("cancelled: label '{label}' removed{by}");
                match self.journal.cancel_item(item.key(), why.clone()).await {
                    Ok(tasks) => Some((tasks, why)),
                    Err(e) => {
                        self.bus.emit(Event::JournalFailed { error: e.to_string() });
                        return Answer::Unavailable { reason: format!("the cancel could not be stored: {e}") };
                    }
                }
            }
            _ => None,
        };
        let (verdict, reason, label) = match &decision {
            Decision::Cancel { .. } => match &cancelled {
                Some((tasks, why)) if !tasks.is_empty() => {
                    let what: Vec<String> = tasks.iter().map(|(id, was)| format!("{id} ({was})")).collect();
                    (Verdict::Cancelled, format!("{why}: {}", what.join(", ")), None)
                }
                _ => (
                    Verdict::Ignored,
                    "a trigger or processing label was removed; the item has no live task".into(),
                    None,
                ),
            },
            Decision::Task { label } => (Verdict::Queued, format!("label '{label}' matched"), Some(label.clone())),
            Decision::Ignore { reason } => (Verdict::Ignored, reason.clone(), None),
            Decision::Pong => (Verdict::Pong, "ping".to_string(), None),
        };
        let provisional = match (&decision, &cancelled) {
            (Decision::Cancel { .. }, Some((tasks, _))) if !tasks.is_empty() => {
                Answer::Cancelled { task_ids: tasks.iter().map(|(id, _)| id.clone()).collect(), reason: reason.clone() }
            }
            (Decision::Cancel { .. }, _) => Answer::Ignored { reason: reason.clone() },
            (Decision::Task { .. }, _) => Answer::Queued { task_id: String::new() },
            (Decision::Ignore { reason }, _) => Answer::Ignored { reason: reason.clone() },
            (Decision::Pong, _) => Answer::Pong,
        };
        record.http_status = provisional.status();
        record.reason = reason.clone();
        record.dedupe = replay_of.is_none();
        record.event = Some(parsed.event.clone());
        record.action = parsed.action.clone();
        record.item = parsed.item.as_ref().map(|i| crate::task::item_ref(&i.repo_full_name, i.kind, i.number));
        record.verdict = verdict;
        if let (Some(label), Some(item)) = (&label, &parsed.item) {
            let task = Task::new(item, new_task_id(), label, record.delivery_id.clone(), record.received_at.clone());
            record.task = Some(NewTask {
                id: task.id.clone(),
                source: item.source.as_str(),
                kind: item.kind.as_str(),
                repo: item.repo_full_name.clone(),
                number: item.number,
                item_key: item.key(),
                queue: self.queue.to_string(),
                payload: task.to_json(),
                label_op: self.lifecycle(item.source),
            });
        }
        let caps = self.caps;
        let has_task = record.task.is_some();
        let item = record.item.clone();
        let recorded = match self.journal.record(record, caps).await {
            Ok(r) => r,
            Err(e) => {
                self.bus.emit(Event::JournalFailed { error: e.to_string() });
                return Answer::Unavailable { reason: format!("the delivery could not be stored: {e}") };
            }
        };
        let (journal_id, verdict, task_id, answer) = match recorded {
            Recorded::Stored { journal_id, task_id } => {
                if has_task {
                    self.journal.notify_outbox();
                }
                let answer = match (&provisional, &task_id) {
                    (Answer::Queued { .. }, Some(id)) => Answer::Queued { task_id: id.clone() },
                    _ => provisional,
                };
                (journal_id, verdict, task_id, answer)
            }
            Recorded::Duplicate { journal_id, task_id, .. } => {
                (journal_id, Verdict::Duplicate, task_id.clone(), Answer::Duplicate { task_id })
            }
            // A poll's finding that is already handled: nothing was recorded, nothing to tell.
            Recorded::Known { task_id } => return Answer::Duplicate { task_id },
        };
        self.bus.emit(Event::DeliveryDecided {
            journal_id,
            source: parsed.source,
            event: parsed.event,
            action: parsed.action,
            item,
            verdict,
            reason: reason.into(),
            label,
            task_id,
            replay_of,
        });
        answer
    }
}

fn parse(incoming: &Incoming) -> Result<Parsed, ParseError> {
    match incoming.route {
        Route::Github => {
            let event = headers::get_str(&incoming.headers, "x-github-event")
                .ok_or_else(|| ParseError("missing X-GitHub-Event header".into()))?;
            github::parse(event, headers::get_str(&incoming.headers, "content-type"), &incoming.body)
        }
        Route::Gitlab => gitlab::parse(&incoming.body, false),
        Route::GitlabSystem => gitlab::parse(&incoming.body, true),
    }
}

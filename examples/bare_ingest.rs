//! The bare baseline of issue 12: the least a webhook-to-RabbitMQ server does, with no journal,
//! so agentctl's CPU per delivery can be measured against it in the same run (`bench_ingest
//! --target both`). hyper 1 and lapin 4, as agentctl uses them: POST /webhook/github, body read
//! up to 1 MiB, `X-Hub-Signature-256` verified (agentctl's own `verify_github`, so both do the
//! same HMAC), the JSON parsed into the few fields the decision and the task need, the decision
//! (`labeled` with the trigger label), a persistent task message of agentctl's shape published
//! with a publisher confirm on one of four channels in turn (agentctl publishes on four), and
//! 202 once the broker has confirmed it. Nothing is stored, deduplicated or logged: that is
//! what agentctl adds, and what the comparison prices.
//!
//!     cargo run --release --example bare_ingest -- [--listen 127.0.0.1:8013] [--queue bench.bare]
//!         [--amqp amqp://…] [--secret …] [--label "coding agent"]

use agentctl::broker::amqp::task_properties;
use agentctl::ingest::verify::verify_github;
use agentctl::task::{Item, Kind, Source, Task};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};
use serde::Deserialize;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Publishing channels, as many as agentctl's AMQP broker opens (`PUBLISH_CHANNELS`).
const CHANNELS: usize = 4;
/// The body limit (agentctl's default `listen.max_body_bytes` is larger; deliveries are KBs).
const MAX_BODY: usize = 1024 * 1024;

#[derive(Parser)]
struct Args {
    #[arg(long, env = "BARE_LISTEN", default_value = "127.0.0.1:8013")]
    listen: String,
    /// The durable queue published to (declared at start).
    #[arg(long, env = "BARE_QUEUE", default_value = "bench.bare")]
    queue: String,
    #[arg(long, env = "BARE_AMQP_URL", default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp: String,
    #[arg(long, env = "BARE_SECRET", default_value = "bench-secret")]
    secret: String,
    #[arg(long, env = "BARE_LABEL", default_value = "coding agent")]
    label: String,
}

/// The fields of an `issues` delivery the decision and the task need; serde skips the rest.
#[derive(Deserialize)]
struct Delivery {
    action: String,
    label: Option<Named>,
    issue: Issue,
    repository: Repository,
}

#[derive(Deserialize)]
struct Named {
    name: String,
}

#[derive(Deserialize)]
struct Issue {
    number: u64,
    title: String,
    html_url: String,
    user: Login,
    #[serde(default)]
    labels: Vec<Named>,
}

#[derive(Deserialize)]
struct Login {
    login: String,
}

#[derive(Deserialize)]
struct Repository {
    full_name: String,
}

struct Server {
    args: Args,
    channels: Vec<Channel>,
    next: AtomicUsize,
}

fn answer(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut().insert("content-type", "application/json".parse().expect("a valid header value"));
    res
}

fn refuse(status: StatusCode, reason: &str) -> Response<Full<Bytes>> {
    answer(status, serde_json::json!({"status": "refused", "reason": reason}).to_string())
}

impl Server {
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::POST || req.uri().path() != "/webhook/github" {
            return refuse(StatusCode::NOT_FOUND, "POST /webhook/github only");
        }
        let (head, body) = req.into_parts();
        let body = match Limited::new(body, MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return refuse(StatusCode::PAYLOAD_TOO_LARGE, "body over 1 MiB or cut short"),
        };
        let signature = head.headers.get("x-hub-signature-256").map(|v| v.as_bytes());
        if verify_github(&self.args.secret, signature, &body).is_err() {
            return refuse(StatusCode::UNAUTHORIZED, "bad signature");
        }
        let Ok(d) = serde_json::from_slice::<Delivery>(&body) else {
            return refuse(StatusCode::BAD_REQUEST, "not an issues delivery");
        };
        if d.action != "labeled" || d.label.is_none_or(|l| l.name != self.args.label) {
            return answer(StatusCode::OK, r#"{"status":"ignored"}"#.into());
        }
        let item = Item {
            source: Source::Github,
            kind: Kind::Issue,
            repo_full_name: d.repository.full_name,
            number: d.issue.number,
            project_id: None,
            url: d.issue.html_url,
            title: d.issue.title,
            author: d.issue.user.login,
            labels: d.issue.labels.into_iter().map(|l| l.name).collect(),
        };
        let delivery = head.headers.get("x-github-delivery").and_then(|v| v.to_str().ok()).map(str::to_string);
        let id = agentctl::task::new_task_id();
        let task = Task::new(&item, id.clone(), &self.args.label, delivery, agentctl::task::now_rfc3339());
        let channel = &self.channels[self.next.fetch_add(1, Ordering::Relaxed) % CHANNELS];
        let queue = self.args.queue.as_str().into();
        let body = task.to_json();
        let published = async {
            let confirm =
                channel.basic_publish("".into(), queue, BasicPublishOptions::default(), &body, task_properties(&id));
            confirm.await?.await
        };
        match published.await {
            Ok(c) if c.is_ack() => answer(StatusCode::ACCEPTED, format!(r#"{{"status":"queued","task_id":"{id}"}}"#)),
            _ => refuse(StatusCode::SERVICE_UNAVAILABLE, "the broker did not confirm the task"),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let conn = Connection::connect(&args.amqp, ConnectionProperties::default()).await?;
    let mut channels = Vec::with_capacity(CHANNELS);
    for _ in 0..CHANNELS {
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        channels.push(ch);
    }
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    channels[0].queue_declare(args.queue.as_str().into(), durable, FieldTable::default()).await?;
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    eprintln!(
        "bare_ingest: listening on http://{}/webhook/github, publishing to {}",
        listener.local_addr()?,
        args.queue
    );
    let server = Arc::new(Server { args, channels, next: AtomicUsize::new(0) });
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let server = server.clone();
        let service = service_fn(move |req| {
            let server = server.clone();
            async move { Ok::<_, Infallible>(server.handle(req).await) }
        });
        tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
    }
}

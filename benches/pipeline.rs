//! Per-delivery CPU of the ingest stages on a real 14 KB GitHub payload, each beside a baseline
//! measured in the same run: HMAC verification against plain SHA-256 of the body, the typed
//! parse against serde_json's generic `Value` parse, and body packing (LZ4) against a plain copy
//! and the zstd level 1 it replaced.
//!
//!     cargo bench --bench pipeline

use agentctl::config::Filter;
use agentctl::ingest::{filter, github, verify};
use agentctl::store::StoredBody;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sha2::Digest;
use std::hint::black_box;

fn pipeline(c: &mut Criterion) {
    let sample = agentctl::send::samples::sample("github:issues.labeled", "coding agent").unwrap();
    let body = sample.body;
    let sig = verify::github_signature("secret", &body);
    let mut g = c.benchmark_group("delivery");
    g.throughput(Throughput::Bytes(body.len() as u64));

    g.bench_function("baseline: sha256 of the body", |b| b.iter(|| sha2::Sha256::digest(black_box(&body))));
    g.bench_function("verify X-Hub-Signature-256", |b| {
        b.iter(|| verify::verify_github("secret", Some(sig.as_bytes()), black_box(&body)).unwrap())
    });

    g.bench_function("baseline: serde_json Value parse", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&body)).unwrap())
    });
    g.bench_function("parse into Parsed + filter", |b| {
        let f = Filter::default();
        b.iter(|| {
            let p = github::parse("issues", None, black_box(&body)).unwrap();
            filter::decide(&p, &f)
        })
    });

    g.bench_function("baseline: copy the body", |b| b.iter(|| black_box(&body).to_vec()));
    g.bench_function("pack the body (lz4)", |b| b.iter(|| StoredBody::pack(black_box(&body), None)));
    g.bench_function("before: zstd level 1", |b| b.iter(|| zstd::bulk::compress(black_box(&body), 1)));
    g.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);

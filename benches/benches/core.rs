//! Micro-benchmarks of the pure core.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use tokenvisor_core::machine::{Input, Machine, MachineConfig, Resume};
use tokenvisor_core::policy::BackoffPolicy;
use tokenvisor_core::status::StatusRecord;
use tokenvisor_core::{
    ClassifyPolicy, HttpAnswer, RawOutcome, Secret, Timestamp, Verdict, classify,
};

fn answer(status: u16, ct: &str, body: &str, retry_after: Option<&str>) -> RawOutcome {
    RawOutcome::Response(HttpAnswer {
        status,
        retry_after: retry_after.map(str::to_owned),
        content_type: Some(ct.to_owned()),
        rate_limit: Default::default(),
        body: body.as_bytes().to_vec(),
        truncated: false,
    })
}

fn bench_classify(c: &mut Criterion) {
    let policy = ClassifyPolicy::default();
    let now = Timestamp::from_millis(1_800_000_000_000);
    let secret = Secret::from("refresh-token-value-0123456789");
    let secrets = [&secret];
    let cases = [
        (
            "success_json",
            answer(
                200,
                "application/json",
                r#"{"access_token":"eyJhbGciOiJSUzI1NiJ9.payload.sig","token_type":"Bearer","expires_in":3600,"refresh_token":"rt-next"}"#,
                None,
            ),
        ),
        (
            "invalid_grant",
            answer(
                400,
                "application/json",
                r#"{"error":"invalid_grant","error_description":"refresh token expired"}"#,
                None,
            ),
        ),
        (
            "waf_html_403",
            answer(
                403,
                "text/html",
                &format!(
                    "<html><head><title>Attention Required! | Cloudflare</title></head><body>{}</body></html>",
                    "x".repeat(4000)
                ),
                None,
            ),
        ),
        (
            "429_retry_after",
            answer(429, "text/plain", "slow down", Some("30")),
        ),
    ];
    let mut g = c.benchmark_group("classify");
    for (name, outcome) in &cases {
        g.bench_function(*name, |b| {
            b.iter(|| classify(black_box(outcome), now, &policy, &secrets));
        });
    }
    g.finish();
}

fn bench_machine(c: &mut Criterion) {
    let now = Timestamp::from_millis(1_800_000_000_000);
    let mut rng = fastrand::Rng::with_seed(1);
    let outcome = answer(
        200,
        "application/json",
        r#"{"access_token":"at","token_type":"Bearer","expires_in":3600}"#,
        None,
    );
    let Verdict::Success(grant) = classify(&outcome, now, &ClassifyPolicy::default(), &[]) else {
        unreachable!("a token answer classifies as success")
    };
    c.bench_function("machine/refresh_cycle", |b| {
        let (mut m, fx) = Machine::start(MachineConfig::default(), Resume::Fresh, None, now);
        let mut attempt = fx.start_attempt.unwrap_or(tokenvisor_core::AttemptId(1));
        let mut t = now;
        b.iter(|| {
            // success → healthy; timer at refresh time → refreshing (a full cycle: 2 steps)
            let fx = m.handle(
                Input::RefreshResult {
                    attempt,
                    verdict: Verdict::Success(grant.clone()),
                },
                t,
                &mut rng,
            );
            t = fx.wake_at.unwrap_or(t);
            let fx = m.handle(Input::TimerFired, t, &mut rng);
            attempt = fx.start_attempt.unwrap_or(attempt);
            black_box(&fx);
        });
    });
}

fn bench_backoff(c: &mut Criterion) {
    let p = BackoffPolicy::default();
    let mut rng = fastrand::Rng::with_seed(2);
    c.bench_function("policy/backoff_delay", |b| {
        let mut n = 0u32;
        b.iter(|| {
            n = n % 20 + 1;
            black_box(p.delay(n, Some(Duration::from_secs(3)), &mut rng))
        });
    });
}

fn bench_status(c: &mut Criterion) {
    let now = Timestamp::from_millis(1_800_000_000_000);
    let (m, _) = Machine::start(MachineConfig::default(), Resume::Fresh, None, now);
    let (status, status_context) = m.workload_status();
    let record = StatusRecord {
        status,
        status_context,
        created_at: now,
        updated_at: now,
        process_id: 4242,
        token: Some(m.token_section()),
    };
    let json = record.to_json();
    let mut g = c.benchmark_group("status");
    g.bench_function("serialise", |b| b.iter(|| black_box(record.to_json())));
    g.bench_function("parse", |b| {
        b.iter(|| StatusRecord::from_json(black_box(&json)).map(|r| r.status));
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_classify,
    bench_machine,
    bench_backoff,
    bench_status
);
criterion_main!(benches);

//! `--relay`: what the enclave's relay costs per retrieve, and what attestation costs per
//! session opened, in one run.
//!
//! Three servers of the same configuration, one after another on the machine's two cores
//! would be fairer but slower; they run side by side and idle when not measured:
//!
//! - `plain`: UDP and TCP, the development CA, no attestation (today's path);
//! - `direct`: UDP and TCP, `--attestation simulated` (its own TLS key, attested);
//! - `enclave`: `--vsock unix:…` with `--attestation simulated`, behind `keyserver host`.
//!
//! Figures: retrieves of 64 bytes at 16 in flight over one connection, relayed against
//! direct, on QUIC and on TCP (the relay's cost); and the time to open a session (connect,
//! attest when asked, log in), p50, attested against plain, and relayed and attested.

use std::{
    path::Path,
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use keyserver_protocol::{SecretBytes, SecretName, suite::KsfParams};
use local_client::{ClientConfig, Connection, Transport, attestation::Policy};

use crate::{
    Figure, Load, bench_user, client_config, cpu_time_us, init_dir, login_users, measure, password,
    percentile, pick, register_users, spawn_and_read_line, start_server,
};

/// Users registered on each server.
const USERS: usize = 64;

/// An attested client's configuration for the simulated module of `dir`.
fn attested(dir: &Path, addr: &str, transport: Transport) -> anyhow::Result<ClientConfig> {
    let m = dir.join("simulated-attestation");
    let policy = Policy {
        pcrs: local_client::attestation::read_expected_pcrs(&m.join("pcrs.json"))?,
        root: Some(local_client::attestation::read_root(&m.join("root.pem"))?),
        allow_debug: false,
    };
    let mut config = ClientConfig::attested(addr, policy);
    config
        .transport(transport)
        .ksf(KsfParams::INSECURE_TEST_ONLY);
    Ok(config)
}

/// A data dir with a simulated security module and the benchmark's config.
fn init_attested(bin: &Path, dir: &Path) -> anyhow::Result<()> {
    let out = Command::new(bin)
        .args(["init", "--simulated-attestation", "--data-dir"])
        .arg(dir)
        .output()?;
    anyhow::ensure!(out.status.success(), "keyserver init failed: {out:?}");
    init_dir(bin, dir)
}

/// Retrieves of 64 bytes at 16 in flight over one connection made by `config`; the load,
/// and the CPU per retrieve of each process of `pids` (the server, and the relay).
async fn retrieves(
    config: &ClientConfig,
    pids: &[u32],
    secs: f64,
) -> anyhow::Result<(Load, Vec<f64>)> {
    let c = Connection::connect(config).await?;
    let sessions = Arc::new(login_users(&c, USERS, USERS).await?);
    let k = SecretName::new("k")?;
    let secret = SecretBytes::new(vec![0x5a; 64]);
    for s in sessions.iter() {
        s.store(&k, &secret, true).await?;
    }
    let cpu0 = pids
        .iter()
        .map(|p| cpu_time_us(*p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let load = measure(16, secs, move |id| {
        let s = pick(&sessions, id).clone();
        let k = k.clone();
        async move {
            s.retrieve(&k).await?;
            Ok(())
        }
    })
    .await?;
    let mut cpu = Vec::with_capacity(pids.len());
    for (p, c0) in pids.iter().zip(cpu0) {
        cpu.push((cpu_time_us(*p)? - c0) / load.requests.max(1) as f64);
    }
    c.shutdown().await;
    Ok((load, cpu))
}

/// Opens a session (connect, attest if the config asks, log in) and closes it.
async fn open(config: &ClientConfig, i: usize) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let c = Connection::connect(config).await?;
    c.login(&bench_user(i % USERS)?, &password()).await?;
    let took = t.elapsed();
    c.shutdown().await;
    Ok(took)
}

/// The `--relay` figures.
pub(crate) async fn figures(bin: &Path, secs: f64, opens: usize) -> anyhow::Result<Vec<Figure>> {
    let tmp = tempfile::tempdir()?;
    let plain_dir = tmp.path().join("plain");
    let direct_dir = tmp.path().join("direct");
    let enclave_dir = tmp.path().join("enclave");
    init_dir(bin, &plain_dir)?;
    init_attested(bin, &direct_dir)?;
    init_attested(bin, &enclave_dir)?;

    let (plain, plain_addr) = start_server(bin, &plain_dir, &[])?;
    let (direct, direct_addr) = start_server(
        bin,
        &direct_dir,
        &["--attestation".into(), "simulated".into()],
    )?;
    let direct_tcp = direct.tcp_addr.clone();
    let socket = format!("unix:{}", tmp.path().join("enclave.sock").display());
    let mut cmd = Command::new(bin);
    cmd.arg("--data-dir")
        .arg(&enclave_dir)
        .args(["--vsock", &socket, "--attestation", "simulated"])
        .env("KEYSERVER_LOG", "warn");
    let (enclave, line) = spawn_and_read_line(&mut cmd)?;
    anyhow::ensure!(line.starts_with("keyserver listening vsock="), "{line}");
    let mut cmd = Command::new(bin);
    cmd.args(["host", "--listen", "127.0.0.1:0", "--enclave", &socket])
        .env("KEYSERVER_LOG", "warn");
    let (host, line) = spawn_and_read_line(&mut cmd)?;
    let relay_quic = keyserver_tests::listening(&line, "quic").context("no quic= in the line")?;
    let relay_tcp = keyserver_tests::listening(&line, "tcp").context("no tcp= in the line")?;

    for config in [
        client_config(&plain_addr, &plain_dir.join("ca.pem"), Transport::Quic)?,
        attested(&direct_dir, &direct_addr, Transport::Quic)?,
        attested(&enclave_dir, &relay_quic, Transport::Quic)?,
    ] {
        let c = Connection::connect(&config).await?;
        register_users(&c, USERS).await?;
        c.shutdown().await;
    }

    let mut figures = Vec::new();
    for (transport, name, direct_at, relay_at) in [
        (Transport::Quic, "QUIC", &direct_addr, &relay_quic),
        (Transport::Tcp, "TCP", &direct_tcp, &relay_tcp),
    ] {
        eprintln!("retrieves over {name}, direct and through the relay ...");
        let (d, d_cpu) = retrieves(
            &attested(&direct_dir, direct_at, transport)?,
            &[direct.pid()],
            secs,
        )
        .await?;
        let (r, r_cpu) = retrieves(
            &attested(&enclave_dir, relay_at, transport)?,
            &[enclave.pid(), host.pid()],
            secs,
        )
        .await?;
        let server_cpu = |c: &[f64]| c.first().copied().unwrap_or(0.0);
        figures.push(
            Figure::load(format!("retrieve 64 B, {name}, 16 in flight, direct"), d)
                .cpu(server_cpu(&d_cpu)),
        );
        figures.push(
            Figure::load(
                format!("retrieve 64 B, {name}, 16 in flight, through the relay"),
                r,
            )
            .cpu(server_cpu(&r_cpu))
            .floor("the same, direct, req/s", d.per_second),
        );
        figures.push(
            Figure::new(
                format!("relay (keyserver host) CPU per retrieve, {name}"),
                r_cpu.get(1).copied().unwrap_or(0.0),
                "µs",
            )
            .floor("server CPU per retrieve, direct, µs", server_cpu(&d_cpu)),
        );
        figures.push(
            Figure::new(
                format!("relay's cost per retrieve, {name}, p50"),
                r.p50_us - d.p50_us,
                "µs",
            )
            .floor("direct retrieve p50 µs", d.p50_us),
        );
    }

    eprintln!("opening sessions ({opens} each, interleaved) ...");
    let configs = [
        client_config(&plain_addr, &plain_dir.join("ca.pem"), Transport::Quic)?,
        attested(&direct_dir, &direct_addr, Transport::Quic)?,
        attested(&enclave_dir, &relay_quic, Transport::Quic)?,
    ];
    let mut times: [Vec<Duration>; 3] = Default::default();
    for i in 0..opens {
        for (config, t) in configs.iter().zip(times.iter_mut()) {
            t.push(open(config, i).await?);
        }
    }
    for t in &mut times {
        t.sort();
    }
    let [plain_t, attested_t, relayed_t] = &times;
    let p50 = |t: &[Duration]| percentile(t, 0.5);
    let p99 = |t: &[Duration]| percentile(t, 0.99);
    let mut f = Figure::new(
        "open a session (QUIC + login), no attestation, p50",
        p50(plain_t),
        "µs",
    );
    f.p50_us = Some(p50(plain_t));
    f.p99_us = Some(p99(plain_t));
    figures.push(f);
    let mut f = Figure::new(
        "open a session (QUIC + attestation + login), p50",
        p50(attested_t),
        "µs",
    )
    .floor("the same without attestation, µs", p50(plain_t));
    f.p50_us = Some(p50(attested_t));
    f.p99_us = Some(p99(attested_t));
    figures.push(f);
    let mut f = Figure::new(
        "open a session through the relay (QUIC + attestation + login), p50",
        p50(relayed_t),
        "µs",
    )
    .floor("the same without attestation, µs", p50(plain_t));
    f.p50_us = Some(p50(relayed_t));
    f.p99_us = Some(p99(relayed_t));
    figures.push(f);
    drop(host);
    drop(enclave);
    drop(plain);
    drop(direct);
    Ok(figures)
}

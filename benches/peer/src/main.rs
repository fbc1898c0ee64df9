//! `macula-peer`: the peers `macula-loadtest` is compared with, measured the same way.
//!
//! - `nats`: a nats-server child (plain TCP or TLS) and the async-nats client;
//! - `quic`: the QUIC byte-copy ceiling (a relay that only copies stream chunks);
//! - `table`: medians of a directory of reports, as Markdown.
//!
//! `compare.sh` beside this crate runs them and `macula-loadtest` interleaved. This crate is
//! its own workspace so that the product never builds it.

mod measure;
mod nats;
mod pki;
mod quic;
mod table;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "macula-peer",
    about = "Peers measured like macula-loadtest pubsub"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// nats-server (started here) measured with the official client.
    Nats(nats::Args),
    /// The QUIC byte-copy ceiling (a relay child that only copies stream chunks).
    Quic(quic::Args),
    /// The relay `quic` starts (internal).
    #[command(hide = true)]
    QuicRelay(quic::RelayArgs),
    /// Medians of a directory of reports, as Markdown tables.
    Table(table::Args),
}

fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    if let Cmd::Table(a) = cli.cmd {
        return table::run(a);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        match cli.cmd {
            Cmd::Nats(a) => nats::run(a).await,
            Cmd::Quic(a) => quic::run(a).await,
            Cmd::QuicRelay(a) => quic::relay(a).await,
            Cmd::Table(_) => unreachable!("handled above"),
        }
    })
}

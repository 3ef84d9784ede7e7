//! Command-line arguments, kept in the library so that other binaries and
//! tests can reuse (and flatten) them.

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Top-level `sluice-bench` command line.
#[derive(Debug, Parser)]
#[command(
    name = "sluice-bench",
    version,
    about = "Load generators and measurements for Sluice"
)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// `sluice-bench` subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Relay N concurrent G.711 RTP streams and measure loss and latency.
    Streams(StreamsArgs),
    /// Run the whole suite (each part as a subprocess, bounded) and write the markdown report,
    /// its plots, the headline figures as JSON and the README's headline block.
    Report(ReportArgs),
    /// Calls per second through `sluice run` (SIPp, media on the relay, CDRs), optionally
    /// against Kamailio with rtpengine.
    Calls(crate::calls::CallsArgs),
    /// REGISTERs with digest per second through `sluice run`'s registrar, optionally against
    /// Kamailio's.
    Register(crate::calls::RegisterArgs),
}

/// Relay implementation under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// The XDP program forwards in the kernel.
    Xdp,
    /// The XDP program hands the packets to AF_XDP sockets; userspace workers forward them.
    Afxdp,
    /// Plain UDP sockets with recvmmsg/sendmmsg in one worker thread.
    Sockets,
    /// The three, one after the other with the same arguments, side by side.
    All,
    /// No relay: the relay namespace routes the caller's packets to the callee with the
    /// kernel's IP forwarding. The baseline the relays' added latency is measured against.
    None,
}

impl Backend {
    /// Name used in reports (the `backend` key).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Xdp => "xdp",
            Self::Afxdp => "afxdp",
            Self::Sockets => "sockets",
            Self::All => "all",
            Self::None => "none",
        }
    }

    /// The single backends this selection runs, in order.
    pub fn expand(self) -> &'static [Backend] {
        match self {
            Self::Xdp => &[Self::Xdp],
            Self::Afxdp => &[Self::Afxdp],
            Self::Sockets => &[Self::Sockets],
            Self::All => &[Self::Xdp, Self::Afxdp, Self::Sockets],
            Self::None => &[Self::None],
        }
    }
}

/// Where the AF_XDP workers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Pinning {
    /// Pin each worker to the core the host's core plan gives its queue (the `default` profile);
    /// unpinned when the plan has none.
    #[default]
    Plan,
    /// Leave the workers to the scheduler.
    None,
}

/// How the caller's packets are produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Generator {
    /// An XDP program run in live-frames mode: far cheaper per packet than a socket, so the
    /// relay stays the limit.
    #[default]
    Xdp,
    /// A UDP socket with `sendmmsg`: what a real endpoint does, and the limit near 100 kpps.
    Sockets,
}

impl Generator {
    /// Name used in reports (the `generator` key).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Xdp => "xdp",
            Self::Sockets => "sockets",
        }
    }
}

/// Network layout of the test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Topology {
    /// Caller and callee sides on separate relay interfaces.
    #[default]
    TwoArm,
    /// Both sides reach the relay through the same interface (hairpin).
    OneArm,
}

impl Topology {
    /// Name used in reports (the `topology` key).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TwoArm => "two-arm",
            Self::OneArm => "one-arm",
        }
    }
}

/// How the streams get to the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Setup {
    /// The relay runs inside `sluice-bench`, which installs one rule per stream through the
    /// forwarder API: the dataplane alone.
    #[default]
    Direct,
    /// `sluice relay` runs as its own process in the relay namespace and every stream is set up
    /// with an ng offer and answer, as a SIP proxy would (and as `--against rtpengine` does).
    Ng,
}

impl Setup {
    /// Name used in reports (the `setup` key).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Ng => "ng",
        }
    }
}

/// A reference relay to compare Sluice with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Against {
    /// rtpengine (Debian's `rtpengine-daemon`), userspace forwarding (`--table=-1`).
    Rtpengine,
}

/// Arguments of `sluice-bench streams`.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct StreamsArgs {
    /// Relay backend to measure; `all` runs the three in sequence and prints them side by side.
    #[arg(long, value_enum)]
    pub backend: Backend,
    /// Number of concurrent streams (each 50 packets/s of 172-byte RTP).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub streams: u32,
    /// Send duration in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub duration: u64,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Network layout.
    #[arg(long, value_enum, default_value_t = Topology::TwoArm)]
    pub topology: Topology,
    /// Packet generator.
    #[arg(long, value_enum, default_value_t = Generator::Xdp)]
    pub generator: Generator,
    /// AF_XDP worker placement (the `afxdp` backend only).
    #[arg(long, value_enum, default_value_t = Pinning::Plan)]
    pub pin: Pinning,
    /// How the streams are set up: in-process rules, or a `sluice relay` process over ng.
    #[arg(long, value_enum, default_value_t = Setup::Direct)]
    pub setup: Setup,
    /// Also measure this relay with the same arguments (Sluice then runs as `sluice relay` over
    /// ng, like it) and print both side by side with their ratio.
    #[arg(long, value_enum)]
    pub against: Option<Against>,
    /// Sweep the stream count upward (from `--start`, times `--step-factor`, up to `--max`) until
    /// the loss crosses `--loss-threshold` or the generator saturates; `--streams` is ignored.
    #[arg(long)]
    pub sweep: bool,
    /// First stream count of a sweep.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    pub start: u32,
    /// Each step of a sweep multiplies the stream count by this.
    #[arg(long, default_value_t = 2.0)]
    pub step_factor: f64,
    /// Largest stream count of a sweep.
    #[arg(long, default_value_t = 16_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max: u32,
    /// Loss ratio above which a step is not clean (0.001 is 0.1%).
    #[arg(long, default_value_t = 0.001)]
    pub loss_threshold: f64,
    /// A sweep starts no step that would end after this many seconds in total.
    #[arg(long, default_value_t = 900)]
    pub max_time: u64,
    /// The `sluice` binary for `--setup ng` (default: `$SLUICE_BIN`, else next to this binary).
    #[arg(long)]
    pub sluice_bin: Option<std::path::PathBuf>,
    /// The `rtpengine` binary for `--against rtpengine`.
    #[arg(long, default_value = "rtpengine")]
    pub rtpengine_bin: std::path::PathBuf,
}

/// A part of `sluice-bench report`, for `--skip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum SuitePart {
    /// The stream-count sweeps of the three Sluice backends (in-process rules).
    Streams,
    /// The sweep of Sluice (XDP, `sluice relay` over ng) against rtpengine.
    Rtpengine,
    /// One-way latency per backend at 2,000 streams, and the no-relay baseline.
    Latency,
    /// Calls per second through `sluice run` and through Kamailio with rtpengine (SIPp).
    Calls,
    /// REGISTER per second through `sluice run` and through Kamailio (SIPp).
    Register,
}

/// Arguments of `sluice-bench report`.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct ReportArgs {
    /// The markdown report; its plots go to the directory of the same stem beside it
    /// (`docs/benchmarks/`), its headline figures to `<stem>.json`.
    #[arg(long, default_value = "docs/benchmarks.md")]
    pub out: std::path::PathBuf,
    /// A smoke run of a minute or two: tiny step lists and short durations (figures not
    /// meaningful).
    #[arg(long)]
    pub quick: bool,
    /// Wall-clock budget of the whole run in minutes; each part is stopped at its share.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub budget_minutes: u64,
    /// Parts not to run, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub skip: Vec<SuitePart>,
    /// The README whose block between `<!-- bench:headline:start -->` and
    /// `<!-- bench:headline:end -->` is rewritten with the headline figures.
    #[arg(long, default_value = "README.md")]
    pub readme: std::path::PathBuf,
    /// Leave the README alone (the headline lines are still printed).
    #[arg(long)]
    pub no_readme: bool,
    /// Measure nothing: render the report again from the `results.json` of an earlier run.
    #[arg(long)]
    pub from_results: Option<std::path::PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_streams_command() {
        let cli = Cli::try_parse_from([
            "sluice-bench",
            "streams",
            "--backend",
            "xdp",
            "--streams",
            "500",
            "--duration",
            "3",
            "--json",
            "--topology",
            "one-arm",
        ])
        .expect("parse");
        let Command::Streams(a) = cli.command else {
            panic!("not streams")
        };
        assert_eq!(
            a,
            StreamsArgs {
                backend: Backend::Xdp,
                streams: 500,
                duration: 3,
                json: true,
                topology: Topology::OneArm,
                generator: Generator::Xdp,
                pin: Pinning::Plan,
                setup: Setup::Direct,
                against: None,
                sweep: false,
                start: 500,
                step_factor: 2.0,
                max: 16_000,
                loss_threshold: 0.001,
                max_time: 900,
                sluice_bin: None,
                rtpengine_bin: "rtpengine".into(),
            }
        );
    }

    #[test]
    fn defaults_and_rejections() {
        let cli =
            Cli::try_parse_from(["sluice-bench", "streams", "--backend", "xdp"]).expect("parse");
        let Command::Streams(a) = cli.command else {
            panic!("not streams")
        };
        assert_eq!(a.topology, Topology::TwoArm);
        assert!(!a.json);
        assert!(Cli::try_parse_from(["sluice-bench", "streams"]).is_err());
        assert!(Cli::try_parse_from([
            "sluice-bench",
            "streams",
            "--backend",
            "xdp",
            "--streams",
            "0"
        ])
        .is_err());
    }

    #[test]
    fn every_backend_parses() {
        for (name, backend) in [
            ("xdp", Backend::Xdp),
            ("afxdp", Backend::Afxdp),
            ("sockets", Backend::Sockets),
            ("all", Backend::All),
            ("none", Backend::None),
        ] {
            let cli =
                Cli::try_parse_from(["sluice-bench", "streams", "--backend", name]).expect("parse");
            let Command::Streams(a) = cli.command else {
                panic!("not streams")
            };
            assert_eq!(a.backend, backend);
            assert_eq!(backend.as_str(), name);
        }
        assert_eq!(Backend::All.expand().len(), 3);
        assert_eq!(Backend::Sockets.expand(), &[Backend::Sockets]);
    }

    #[test]
    fn parses_sweep_and_against() {
        let cli = Cli::try_parse_from([
            "sluice-bench",
            "streams",
            "--backend",
            "xdp",
            "--sweep",
            "--start",
            "20",
            "--step-factor",
            "2",
            "--max",
            "40",
            "--loss-threshold",
            "0.01",
            "--against",
            "rtpengine",
        ])
        .expect("parse");
        let Command::Streams(a) = cli.command else {
            panic!("not streams")
        };
        assert!(a.sweep);
        assert_eq!((a.start, a.max), (20, 40));
        assert_eq!(a.against, Some(Against::Rtpengine));
        assert_eq!(a.loss_threshold, 0.01);
        let cli = Cli::try_parse_from([
            "sluice-bench",
            "streams",
            "--backend",
            "xdp",
            "--setup",
            "ng",
        ])
        .expect("parse");
        let Command::Streams(a) = cli.command else {
            panic!("not streams")
        };
        assert_eq!(a.setup, Setup::Ng);
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}

//! The transports on loopback (127.0.0.1, ephemeral ports) with a fake core that records what
//! it sees and echoes or sends what the test injects. Every wait is bounded.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{
    SocketAddr, TcpListener as StdListener, TcpStream as StdStream, UdpSocket as StdUdp,
};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::*;

/// Longest any single wait in a test.
const PATIENCE: Duration = Duration::from_secs(5);
/// How long "nothing happens" is watched.
const QUIET: Duration = Duration::from_millis(150);

/// What the fake core saw.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Message {
        local: SocketAddr,
        source: SocketAddr,
        transport: Transport,
        bytes: Vec<u8>,
    },
    Timeout(Duration),
    Failure {
        destination: SocketAddr,
        transport: Transport,
    },
}

/// Records everything; echoes messages back to their source as `echo:<bytes>` if asked; sends
/// what the test injects; has one timeout at `deadline` if given.
struct FakeCore {
    echo: bool,
    deadline: Option<Duration>,
    seen: Sender<Seen>,
    inject: Receiver<OutgoingMessage>,
    out: VecDeque<OutgoingMessage>,
}

impl SipCore for FakeCore {
    fn handle_message(
        &mut self,
        _now: Duration,
        local: SocketAddr,
        source: SocketAddr,
        transport: Transport,
        bytes: &[u8],
    ) {
        if self.echo {
            let mut contents = b"echo:".to_vec();
            contents.extend_from_slice(bytes);
            self.out.push_back(OutgoingMessage {
                destination: source,
                transport,
                local: Some(local),
                contents: contents.into(),
            });
        }
        let _ = self.seen.send(Seen::Message {
            local,
            source,
            transport,
            bytes: bytes.to_vec(),
        });
    }

    fn handle_timeout(&mut self, now: Duration) {
        self.deadline = None;
        let _ = self.seen.send(Seen::Timeout(now));
    }

    fn poll_transmit(&mut self) -> Option<OutgoingMessage> {
        self.out.pop_front().or_else(|| self.inject.try_recv().ok())
    }

    fn poll_timeout(&self) -> Option<Duration> {
        self.deadline
    }

    fn handle_transport_failure(
        &mut self,
        _now: Duration,
        destination: SocketAddr,
        transport: Transport,
    ) {
        let _ = self.seen.send(Seen::Failure {
            destination,
            transport,
        });
    }
}

/// The transports running on a thread with a [`FakeCore`].
struct Harness {
    addr: SocketAddr,
    stats: Arc<TransportStats>,
    stop: Arc<AtomicBool>,
    waker: TransportWaker,
    seen: Receiver<Seen>,
    inject: Sender<OutgoingMessage>,
    thread: Option<JoinHandle<Result<(), TransportError>>>,
}

#[derive(Default)]
struct Options {
    echo: bool,
    deadline: Option<Duration>,
}

fn start(config: TransportConfig, options: Options) -> Harness {
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut transports = SipTransports::bind(&[loopback], config).unwrap();
    let addr = transports.local_addrs()[0];
    let stats = transports.stats();
    let waker = transports.waker();
    let stop = Arc::new(AtomicBool::new(false));
    let (seen_tx, seen) = mpsc::channel();
    let (inject, inject_rx) = mpsc::channel();
    let mut core = FakeCore {
        echo: options.echo,
        deadline: options.deadline,
        seen: seen_tx,
        inject: inject_rx,
        out: VecDeque::new(),
    };
    let run_stop = Arc::clone(&stop);
    let thread = thread::spawn(move || {
        let epoch = Instant::now();
        transports.run(&mut core, &run_stop, move || epoch.elapsed())
    });
    Harness {
        addr,
        stats,
        stop,
        waker,
        seen,
        inject,
        thread: Some(thread),
    }
}

fn echo() -> Harness {
    start(
        TransportConfig::default(),
        Options {
            echo: true,
            ..Options::default()
        },
    )
}

impl Harness {
    fn next(&self) -> Seen {
        self.seen
            .recv_timeout(PATIENCE)
            .expect("the core saw nothing")
    }

    fn message(&self) -> (SocketAddr, SocketAddr, Transport, Vec<u8>) {
        match self.next() {
            Seen::Message {
                local,
                source,
                transport,
                bytes,
            } => (local, source, transport, bytes),
            other => panic!("expected a message, got {other:?}"),
        }
    }

    fn quiet(&self) {
        match self.seen.recv_timeout(QUIET) {
            Err(RecvTimeoutError::Timeout) => {}
            other => panic!("expected nothing, got {other:?}"),
        }
    }

    fn send(&self, message: OutgoingMessage) {
        self.inject.send(message).unwrap();
        self.waker.wake().unwrap();
    }

    fn stats(&self) -> TransportStatsSnapshot {
        self.stats.snapshot()
    }

    /// Waits until `check` holds on the counters.
    fn until(&self, what: &str, check: impl Fn(&TransportStatsSnapshot) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !check(&self.stats()) {
            assert!(Instant::now() < deadline, "{what}: {:?}", self.stats());
            thread::sleep(Duration::from_millis(5));
        }
    }

    fn connect(&self) -> StdStream {
        let stream = StdStream::connect(self.addr).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream
    }

    fn udp(&self) -> StdUdp {
        let socket = StdUdp::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(PATIENCE)).unwrap();
        socket
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.waker.wake();
        if let Some(thread) = self.thread.take() {
            let result = thread.join();
            if !thread::panicking() {
                assert!(matches!(result, Ok(Ok(()))), "run ended badly: {result:?}");
            }
        }
    }
}

/// An OPTIONS request with `body`.
fn sip(body: &str) -> Vec<u8> {
    format!(
        "OPTIONS sip:alice@example.com SIP/2.0\r\n\
         Via: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bK776asdhds\r\n\
         Call-ID: a84b4c76e66710\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn echoed(bytes: &[u8]) -> Vec<u8> {
    [b"echo:".as_slice(), bytes].concat()
}

/// Reads exactly `len` bytes.
fn read_exact(stream: &mut StdStream, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    stream.read_exact(&mut buf).unwrap();
    buf
}

/// Whether the peer closed `stream` (EOF or reset) within [`PATIENCE`].
fn closed(stream: &mut StdStream) -> bool {
    let mut buf = [0u8; 256];
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => {
                return true
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(e) => panic!("read: {e}"),
        }
    }
    false
}

fn accept_within(listener: &StdListener) -> StdStream {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).unwrap();
                stream.set_read_timeout(Some(PATIENCE)).unwrap();
                return stream;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "no connection came");
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

// ---- binding --------------------------------------------------------------------------------

#[test]
fn bind_needs_an_address() {
    assert!(matches!(
        SipTransports::bind(&[], TransportConfig::default()),
        Err(TransportError::NoListenAddress)
    ));
}

#[test]
fn port_zero_gives_udp_and_tcp_the_same_port() {
    let h = echo();
    assert_ne!(h.addr.port(), 0);
    // TCP listens on the port UDP is bound to.
    let mut stream = h.connect();
    stream.write_all(&sip("")).unwrap();
    let (local, _, transport, _) = h.message();
    assert_eq!((local, transport), (h.addr, Transport::Tcp));
    let udp = h.udp();
    udp.send_to(&sip(""), h.addr).unwrap();
    let (local, _, transport, _) = h.message();
    assert_eq!((local, transport), (h.addr, Transport::Udp));
}

#[test]
fn outgoing_message_from_a_transaction_transmit() {
    let transmit = Transmit {
        destination: "192.0.2.1:5060".parse().unwrap(),
        transport: Transport::Tcp,
        contents: Arc::from(&b"x"[..]),
    };
    let message = OutgoingMessage::from(transmit);
    assert_eq!(message.destination, "192.0.2.1:5060".parse().unwrap());
    assert_eq!(message.transport, Transport::Tcp);
    assert_eq!(message.local, None);
    assert_eq!(&*message.contents, b"x");
}

// ---- UDP ------------------------------------------------------------------------------------

#[test]
fn udp_datagram_reaches_the_core_and_its_transmit_goes_out() {
    let h = echo();
    let client = h.udp();
    let request = sip("");
    client.send_to(&request, h.addr).unwrap();
    let (local, source, transport, bytes) = h.message();
    assert_eq!(local, h.addr);
    assert_eq!(source, client.local_addr().unwrap());
    assert_eq!(transport, Transport::Udp);
    assert_eq!(bytes, request);
    let mut buf = [0u8; 2048];
    let (len, from) = client.recv_from(&mut buf).unwrap();
    assert_eq!(from, h.addr, "sent from the socket the request came in on");
    assert_eq!(&buf[..len], echoed(&request));
    h.until("one in, one out", |s| {
        (s.udp_received, s.udp_sent) == (1, 1)
    });
}

#[test]
fn udp_many_datagrams_all_arrive() {
    let h = start(TransportConfig::default(), Options::default());
    let client = h.udp();
    for i in 0..300 {
        client.send_to(&sip(&format!("{i}")), h.addr).unwrap();
    }
    for i in 0..300 {
        let (_, _, _, bytes) = h.message();
        assert_eq!(bytes, sip(&format!("{i}")));
    }
}

#[test]
fn udp_oversize_datagram_is_dropped_and_counted() {
    let config = TransportConfig {
        max_datagram_len: 1000,
        ..TransportConfig::default()
    };
    let h = start(config, Options::default());
    let client = h.udp();
    client.send_to(&[b'A'; 2000], h.addr).unwrap();
    client.send_to(&[b'B'; 1001], h.addr).unwrap();
    client.send_to(&[b'C'; 1000], h.addr).unwrap();
    let (_, _, _, bytes) = h.message();
    assert_eq!(
        bytes,
        vec![b'C'; 1000],
        "the largest allowed datagram passes"
    );
    h.quiet();
    assert_eq!(h.stats().udp_oversize, 2);
    assert_eq!(h.stats().udp_received, 1);
}

#[test]
fn udp_largest_datagram_passes_by_default() {
    let h = start(TransportConfig::default(), Options::default());
    let client = h.udp();
    let big = vec![b'x'; 65_507];
    client.send_to(&big, h.addr).unwrap();
    let (_, _, _, bytes) = h.message();
    assert_eq!(bytes.len(), 65_507);
}

#[test]
fn udp_crlf_keepalives_are_not_messages() {
    let h = echo();
    let client = h.udp();
    client.send_to(b"\r\n\r\n", h.addr).unwrap();
    client.send_to(b"\r\n", h.addr).unwrap();
    client.send_to(b"", h.addr).unwrap();
    h.until("keep-alives counted", |s| s.udp_keepalives == 3);
    h.quiet();
}

#[test]
fn udp_send_without_a_socket_of_the_family_is_reported() {
    let h = start(TransportConfig::default(), Options::default());
    let destination: SocketAddr = "[::1]:5060".parse().unwrap();
    h.send(OutgoingMessage {
        destination,
        transport: Transport::Udp,
        local: None,
        contents: sip("").into(),
    });
    assert_eq!(
        h.next(),
        Seen::Failure {
            destination,
            transport: Transport::Udp
        }
    );
    assert_eq!(h.stats().udp_send_errors, 1);
}

// ---- TCP framing ----------------------------------------------------------------------------

#[test]
fn tcp_two_messages_in_one_write_are_framed() {
    let h = start(TransportConfig::default(), Options::default());
    let mut stream = h.connect();
    let (first, second) = (sip("v=0\r\n"), sip(""));
    stream
        .write_all(&[first.clone(), second.clone()].concat())
        .unwrap();
    let (local, source, transport, bytes) = h.message();
    assert_eq!(
        (local, source, transport),
        (h.addr, stream.local_addr().unwrap(), Transport::Tcp)
    );
    assert_eq!(bytes, first);
    assert_eq!(h.message().3, second);
    h.quiet();
    assert_eq!(h.stats().tcp_received, 2);
}

#[test]
fn tcp_message_split_over_two_writes_is_framed() {
    let h = start(TransportConfig::default(), Options::default());
    let mut stream = h.connect();
    let message = sip("hello body");
    let (head, tail) = message.split_at(message.len() - 7);
    stream.write_all(head).unwrap();
    h.quiet();
    stream.write_all(tail).unwrap();
    assert_eq!(h.message().3, message);
}

#[test]
fn tcp_message_byte_by_byte_is_framed() {
    let h = start(TransportConfig::default(), Options::default());
    let mut stream = h.connect();
    stream.set_nodelay(true).unwrap();
    let message = sip("abc");
    for byte in &message {
        stream.write_all(&[*byte]).unwrap();
    }
    assert_eq!(h.message().3, message);
}

#[test]
fn tcp_double_crlf_ping_gets_a_crlf_pong() {
    let h = start(TransportConfig::default(), Options::default());
    let mut stream = h.connect();
    stream.write_all(b"\r\n\r\n").unwrap();
    assert_eq!(read_exact(&mut stream, 2), b"\r\n");
    // A message after the ping still frames.
    stream.write_all(&sip("")).unwrap();
    assert_eq!(h.message().3, sip(""));
    assert_eq!(h.stats().tcp_keepalives, 1);
}

#[test]
fn tcp_response_goes_back_over_the_same_connection() {
    let h = echo();
    let mut stream = h.connect();
    let request = sip("");
    stream.write_all(&request).unwrap();
    let (_, source, _, _) = h.message();
    assert_eq!(source, stream.local_addr().unwrap());
    assert_eq!(read_exact(&mut stream, request.len() + 5), echoed(&request));
    let stats = h.stats();
    assert_eq!(
        (stats.tcp_accepted, stats.tcp_connects, stats.tcp_sent),
        (1, 0, 1)
    );
}

#[test]
fn tcp_garbage_closes_that_connection_only() {
    let h = echo();
    let mut good = h.connect();
    let mut bad = h.connect();
    good.write_all(&sip("1")).unwrap();
    assert_eq!(h.message().3, sip("1"));
    bad.write_all(b"\x16\x03\x01\x02\x00garbage\r\n\r\n")
        .unwrap();
    assert!(closed(&mut bad), "the garbage connection is closed");
    h.until("framing error counted", |s| s.tcp_framing_errors == 1);
    good.write_all(&sip("2")).unwrap();
    assert_eq!(h.message().3, sip("2"));
    // Both echoes arrive on the good connection.
    let first = echoed(&sip("1"));
    let second = echoed(&sip("2"));
    assert_eq!(
        read_exact(&mut good, first.len() + second.len()),
        [first, second].concat()
    );
}

#[test]
fn tcp_missing_content_length_closes_the_connection() {
    let h = start(TransportConfig::default(), Options::default());
    let mut stream = h.connect();
    stream
        .write_all(b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP x\r\n\r\n")
        .unwrap();
    assert!(closed(&mut stream));
    h.until("framing error counted", |s| s.tcp_framing_errors == 1);
    h.quiet();
}

#[test]
fn tcp_input_buffer_is_capped_at_the_stream_limit() {
    let config = TransportConfig {
        stream_limits: Limits {
            max_message_len: 4096,
            ..Limits::STREAM
        },
        ..TransportConfig::default()
    };
    let h = start(config, Options::default());
    let mut stream = h.connect();
    // A header block that never ends.
    let mut endless = b"OPTIONS sip:a@b SIP/2.0\r\n".to_vec();
    while endless.len() < 10_000 {
        endless.extend_from_slice(b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    // The server may close mid-write.
    let _ = stream.write_all(&endless);
    assert!(closed(&mut stream));
    h.until("framing error counted", |s| s.tcp_framing_errors == 1);
    h.quiet();
}

#[test]
fn tcp_message_at_the_default_stream_limit_passes() {
    let h = start(TransportConfig::default(), Options::default());
    let mut stream = h.connect();
    let head_len = sip("").len() + 5; // the Content-Length grows from 1 to 6 digits
    let body = "b".repeat(Limits::STREAM.max_message_len - head_len);
    let message = sip(&body);
    assert_eq!(message.len(), Limits::STREAM.max_message_len);
    stream.write_all(&message).unwrap();
    assert_eq!(h.message().3, message);
}

// ---- TCP connections ------------------------------------------------------------------------

#[test]
fn tcp_outbound_connect_delivers_and_the_connection_is_reused_both_ways() {
    let h = start(TransportConfig::default(), Options::default());
    let listener = StdListener::bind("127.0.0.1:0").unwrap();
    let destination = listener.local_addr().unwrap();
    let outgoing = |body: &str| OutgoingMessage {
        destination,
        transport: Transport::Tcp,
        local: None,
        contents: sip(body).into(),
    };
    h.send(outgoing("first"));
    let mut peer = accept_within(&listener);
    assert_eq!(read_exact(&mut peer, sip("first").len()), sip("first"));
    // The connection comes from the listening IP.
    assert_eq!(peer.peer_addr().unwrap().ip(), h.addr.ip());
    h.send(outgoing("second"));
    assert_eq!(read_exact(&mut peer, sip("second").len()), sip("second"));
    // What the peer sends back arrives from the destination address.
    peer.write_all(&sip("reply")).unwrap();
    let (local, source, transport, bytes) = h.message();
    assert_eq!(local, peer.peer_addr().unwrap());
    assert_eq!(
        (source, transport, bytes),
        (destination, Transport::Tcp, sip("reply"))
    );
    let stats = h.stats();
    assert_eq!(
        (stats.tcp_connects, stats.tcp_sent, stats.tcp_open),
        (1, 2, 1)
    );
}

#[test]
fn tcp_connect_failure_is_reported_to_the_core() {
    let h = start(TransportConfig::default(), Options::default());
    let destination = {
        let listener = StdListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    h.send(OutgoingMessage {
        destination,
        transport: Transport::Tcp,
        local: None,
        contents: sip("").into(),
    });
    assert_eq!(
        h.next(),
        Seen::Failure {
            destination,
            transport: Transport::Tcp
        }
    );
    let stats = h.stats();
    assert_eq!(stats.tcp_connect_failures, 1);
    assert_eq!(stats.tcp_send_dropped, 1);
    assert_eq!(stats.tcp_open, 0);
}

#[test]
fn tcp_connection_limit_refuses_and_counts() {
    let config = TransportConfig {
        max_connections: 1,
        ..TransportConfig::default()
    };
    let h = start(
        config,
        Options {
            echo: true,
            ..Options::default()
        },
    );
    let mut first = h.connect();
    first.write_all(&sip("1")).unwrap();
    assert_eq!(h.message().3, sip("1"));
    let mut second = h.connect();
    assert!(
        closed(&mut second),
        "the connection over the limit is closed"
    );
    h.until("refusal counted", |s| s.tcp_refused == 1);
    // The first still works.
    let echo = echoed(&sip("1"));
    assert_eq!(read_exact(&mut first, echo.len()), echo);
    // An outbound connection is over the limit too.
    let listener = StdListener::bind("127.0.0.1:0").unwrap();
    let destination = listener.local_addr().unwrap();
    h.send(OutgoingMessage {
        destination,
        transport: Transport::Tcp,
        local: None,
        contents: sip("").into(),
    });
    assert_eq!(
        h.next(),
        Seen::Failure {
            destination,
            transport: Transport::Tcp
        }
    );
}

#[test]
fn tcp_idle_connection_is_closed() {
    let config = TransportConfig {
        idle_timeout: Duration::from_millis(200),
        ..TransportConfig::default()
    };
    let h = start(config, Options::default());
    let mut stream = h.connect();
    let opened = Instant::now();
    stream.write_all(&sip("")).unwrap();
    h.message();
    assert!(closed(&mut stream));
    assert!(opened.elapsed() >= Duration::from_millis(200));
    h.until("idle close counted", |s| {
        s.tcp_idle_closed == 1 && s.tcp_open == 0
    });
}

#[test]
fn tcp_peer_close_after_a_request_still_gets_the_answer() {
    let h = echo();
    let mut stream = h.connect();
    let request = sip("");
    stream.write_all(&request).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let echo = echoed(&request);
    assert_eq!(read_exact(&mut stream, echo.len()), echo);
    assert!(closed(&mut stream));
    h.until("closed", |s| s.tcp_open == 0 && s.tcp_closed == 1);
}

#[test]
fn unsupported_transport_is_counted_and_reported() {
    let h = start(TransportConfig::default(), Options::default());
    let destination: SocketAddr = "127.0.0.1:5061".parse().unwrap();
    h.send(OutgoingMessage {
        destination,
        transport: Transport::Tls,
        local: None,
        contents: sip("").into(),
    });
    assert_eq!(
        h.next(),
        Seen::Failure {
            destination,
            transport: Transport::Tls
        }
    );
    assert_eq!(h.stats().unsupported_transport, 1);
}

// ---- the loop -------------------------------------------------------------------------------

#[test]
fn stop_ends_run_within_max_wait() {
    let mut h = start(TransportConfig::default(), Options::default());
    let thread = h.thread.take().unwrap();
    let asked = Instant::now();
    h.stop.store(true, Ordering::Release);
    let result = thread.join().unwrap();
    assert!(result.is_ok());
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
}

#[test]
fn stop_and_wake_end_run_at_once() {
    let config = TransportConfig {
        max_wait: Duration::from_secs(60),
        ..TransportConfig::default()
    };
    let mut h = start(config, Options::default());
    thread::sleep(Duration::from_millis(50));
    let thread = h.thread.take().unwrap();
    let asked = Instant::now();
    h.stop.store(true, Ordering::Release);
    h.waker.wake().unwrap();
    assert!(thread.join().unwrap().is_ok());
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
}

#[test]
fn the_cores_timeout_is_honoured() {
    let config = TransportConfig {
        max_wait: Duration::from_secs(60),
        ..TransportConfig::default()
    };
    let deadline = Duration::from_millis(150);
    let h = start(
        config,
        Options {
            deadline: Some(deadline),
            ..Options::default()
        },
    );
    let started = Instant::now();
    match h.next() {
        Seen::Timeout(now) => assert!(now >= deadline, "{now:?}"),
        other => panic!("expected the timeout, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    h.quiet();
}

#[test]
fn garbage_never_hurts_the_loop() {
    let config = TransportConfig {
        stream_limits: Limits {
            max_message_len: 2048,
            ..Limits::STREAM
        },
        ..TransportConfig::default()
    };
    let h = start(config, Options::default());
    let client = h.udp();
    // xorshift: deterministic junk of many shapes.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let pieces: [&[u8]; 6] = [
        b"\r\n",
        b"Content-Length: 99999999999999999999\r\n",
        b"INVITE sip:x SIP/2.0\r\n",
        b"l: -1\r\n",
        b"\r\n\r\n",
        b"\x00\xff",
    ];
    for _ in 0..40 {
        let mut junk = Vec::new();
        for _ in 0..(next() % 12) {
            match next() % 3 {
                0 => junk.extend_from_slice(pieces[(next() % 6) as usize]),
                1 => junk.extend((0..next() % 64).map(|_| next() as u8)),
                _ => junk.extend(std::iter::repeat_n(b'a', (next() % 3000) as usize)),
            }
        }
        let _ = client.send_to(&junk, h.addr);
        let mut stream = h.connect();
        let _ = stream.write_all(&junk);
        let _ = stream.shutdown(std::net::Shutdown::Write);
    }
    // Still serving.
    thread::sleep(QUIET);
    while h.seen.try_recv().is_ok() {}
    client.send_to(&sip("alive"), h.addr).unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, _, transport, bytes) = h.message();
        if transport == Transport::Udp && bytes == sip("alive") {
            break;
        }
        assert!(Instant::now() < deadline);
    }
    assert!(!h.thread.as_ref().unwrap().is_finished());
}

//! The NOC page (`GET /` on the management API) in a real browser: Debian's Chromium, headless,
//! driven over the DevTools protocol, against the real `sluice relay` with a call whose media
//! flows through it.
//!
//! `sluice relay --backend sockets` runs in the relay namespace of a two-arm testbed, its API on
//! that namespace's loopback with an access token. Two calls are set up over the ng socket: one
//! whose caller is "behind NAT" (`symmetric`: the relay latches on its real address) with RTP
//! both ways for the length of the test, and one whose call-id and from-tag are markup
//! (`<img src=x onerror=...>`). Chromium runs in the same namespace and opens
//! `http://127.0.0.1:8089/#token=...`. The test then reads the page as a person would see it (the
//! DOM the page's script built) and clicks like one (mouse events at a row's position):
//!
//! - the page loads and polls with the token from its URL fragment, without a console error;
//! - the call shows with its call-id, and its packet counters grow from one read to the next;
//! - a click on the call shows its streams with the address the relay latched;
//! - the hostile call-id and tag are shown as text (no element made of them, nothing ran), and
//!   a click on that call reads its streams through the percent-encoded `/calls/<id>`;
//! - once the call is deleted over ng, it leaves the active table and shows under the recently
//!   ended calls with its cause and final counters.
//!
//! A screenshot is saved as `noc-page.png` in the work directory (kept with
//! `SLUICE_KEEP_LOGS=1`, or when the test fails).
//!
//! # Driving Chromium
//!
//! The DevTools protocol goes over `--remote-debugging-pipe`: JSON messages ended by a NUL byte,
//! on file descriptors 3 (to the browser) and 4 (from it). That needs neither a port nor a
//! WebSocket, so the client below is serde_json and two pipes. The maintained Rust clients were
//! weighed: `headless_chrome` adds some 50 crates (rustls and ring among them) and generates the
//! whole protocol at build time; `fantoccini` and `thirtyfour` need chromedriver, which Debian
//! ships separately, and tokio. Chromium runs in its own process group, which is killed by its
//! id at the end whatever happens.

#[path = "common/harness.rs"]
mod harness;
#[path = "common/ng.rs"]
mod ng;

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine as _;
use harness::{http_get, in_path, sluice_binary, Proc, WorkDir};
use ng::{dict, NgClient, NgExt, ValueExt};
use serde_json::{json, Value as Json};
use sluice_dataplane::netns::{privileged_test, NetNs};
use sluice_dataplane::testbed::{Testbed, TopologyKind};

const API: &str = "127.0.0.1:8089";
const NG: &str = "127.0.0.1:2223";
const TOKEN: &str = "noc-page-test-token";
const CALL_ID: &str = "noc-call-1@caller.example";
/// A call-id (and a from-tag) that would run script if the page inserted it as markup.
const HOSTILE_ID: &str = "<img src=x onerror=\"window.pwned=1\">&amp;'/%";
const HOSTILE_TAG: &str = "<i>tag</i>";
/// Where the caller's SDP says it is, and where it really sends from (a NAT in between).
const SDP_CALLER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 168, 0, 10), 4000);
const CALLER_PORT: u16 = 4002;
const CALLEE_PORT: u16 = 5000;
/// Longest any one wait of this test lasts.
const WAIT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// A DevTools protocol client over Chromium's debugging pipe

/// Headless Chromium in `ns`, in its own process group, driven over the debugging pipe.
struct Browser {
    child: Child,
    to_browser: Option<ChildStdin>,
    from_browser: mpsc::Receiver<Json>,
    reader: Option<JoinHandle<()>>,
    next_id: u64,
    /// The page's target session, once attached.
    session: Option<String>,
    /// Events received so far, oldest first.
    events: Vec<Json>,
    log: PathBuf,
}

impl Browser {
    fn start(ns: &NetNs, chromium: &Path, dir: &Path) -> Browser {
        let profile = dir.join("chromium-profile");
        std::fs::create_dir_all(&profile).expect("profile dir");
        let log_path = dir.join("chromium.log");
        let log = std::fs::File::create(&log_path).expect("chromium log");
        // The shell moves the pipes to the descriptors Chromium reads and writes the protocol
        // on (3 and 4), and sends Chromium's own stdout to its log, then execs it: `ip netns
        // exec`, sh, Debian's wrapper script and Chromium are one process, the group leader.
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", ns.name(), "sh", "-c"])
            .arg("exec \"$@\" 3<&0 4>&1 0</dev/null 1>&2")
            .arg("sh")
            .arg(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--remote-debugging-pipe",
                "--window-size=1440,900",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .env("HOME", dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .process_group(0);
        let mut child = command.spawn().expect("start chromium");
        let to_browser = child.stdin.take();
        let mut stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut input = BufReader::new(&mut stdout);
            loop {
                let mut message = Vec::new();
                match input.read_until(0, &mut message) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if message.last() == Some(&0) {
                    message.pop();
                }
                match serde_json::from_slice::<Json>(&message) {
                    Ok(value) => {
                        if tx.send(value).is_err() {
                            return;
                        }
                    }
                    Err(e) => eprintln!(
                        "chromium sent something that is not JSON ({e}): {:?}",
                        String::from_utf8_lossy(&message)
                    ),
                }
            }
        });
        Browser {
            child,
            to_browser,
            from_browser: rx,
            reader: Some(reader),
            next_id: 1,
            session: None,
            events: Vec::new(),
            log: log_path,
        }
    }

    /// The end of Chromium's own log (stderr).
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Sends a command (to the page's session once attached) and waits for its result.
    fn call(&mut self, method: &str, params: Json) -> Result<Json, String> {
        let id = self.next_id;
        self.next_id += 1;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = &self.session {
            message["sessionId"] = json!(session);
        }
        let mut bytes = serde_json::to_vec(&message).map_err(|e| e.to_string())?;
        bytes.push(0);
        let pipe = self.to_browser.as_mut().ok_or("the pipe is closed")?;
        pipe.write_all(&bytes)
            .and_then(|()| pipe.flush())
            .map_err(|e| format!("{method}: writing to chromium: {e}"))?;
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let reply = self
                .from_browser
                .recv_timeout(left)
                .map_err(|e| format!("{method}: no answer from chromium: {e}"))?;
            if reply.get("id").and_then(Json::as_u64) == Some(id) {
                if let Some(error) = reply.get("error") {
                    return Err(format!("{method}: {error}"));
                }
                return Ok(reply.get("result").cloned().unwrap_or(Json::Null));
            }
            if reply.get("method").is_some() {
                self.events.push(reply);
            }
        }
    }

    /// Opens a tab, attaches to it, and turns on the events the test watches.
    fn open_tab(&mut self) {
        let target = match self.call("Target.createTarget", json!({ "url": "about:blank" })) {
            Ok(target) => target,
            Err(e) => panic!(
                "chromium does not answer ({e}); its log:\n{}",
                self.log_tail()
            ),
        };
        let target_id = target["targetId"].as_str().expect("a target id").to_owned();
        let attached = self
            .call(
                "Target.attachToTarget",
                json!({ "targetId": target_id, "flatten": true }),
            )
            .expect("attach to the tab");
        self.session = Some(attached["sessionId"].as_str().expect("a session").into());
        for domain in ["Runtime.enable", "Log.enable", "Page.enable"] {
            self.call(domain, json!({})).expect(domain);
        }
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": 1440, "height": 900, "deviceScaleFactor": 1, "mobile": false }),
        )
        .expect("set the viewport");
    }

    /// The value of a JavaScript expression in the page.
    fn eval(&mut self, expression: &str) -> Json {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true }),
            )
            .expect("Runtime.evaluate");
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("evaluating {expression}: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// A left click at a viewport position, as a mouse would.
    fn click(&mut self, x: f64, y: f64) {
        for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 }),
            )
            .expect(kind);
        }
    }

    /// Loads `url` in the tab.
    fn navigate(&mut self, url: &str) {
        let navigated = self
            .call("Page.navigate", json!({ "url": url }))
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert!(navigated.get("errorText").is_none(), "{url}: {navigated}");
    }

    /// Takes the events that arrived without a command.
    fn drain_events(&mut self) {
        while let Ok(message) = self.from_browser.try_recv() {
            if message.get("method").is_some() {
                self.events.push(message);
            }
        }
    }

    /// Forgets the events received so far.
    fn forget_events(&mut self) {
        self.drain_events();
        self.events.clear();
    }

    /// Errors the page reported so far: uncaught exceptions, `console.error`, and the browser's
    /// error log entries (failed loads, CSP violations). `tolerate` may excuse a log entry.
    fn page_errors(&mut self, tolerate: impl Fn(&Json) -> bool) -> Vec<String> {
        self.drain_events();
        let mut errors = Vec::new();
        for event in &self.events {
            let params = &event["params"];
            match event["method"].as_str() {
                Some("Runtime.exceptionThrown") => errors.push(params.to_string()),
                Some("Runtime.consoleAPICalled")
                    if matches!(params["type"].as_str(), Some("error" | "assert")) =>
                {
                    errors.push(params.to_string())
                }
                Some("Log.entryAdded")
                    if params["entry"]["level"] == "error" && !tolerate(&params["entry"]) =>
                {
                    errors.push(params["entry"].to_string())
                }
                _ => {}
            }
        }
        errors
    }

    /// Asks Chromium to close, then kills its process group, whatever is left of it.
    fn stop(&mut self) {
        if self.to_browser.is_some() {
            self.session = None;
            let _ = self.call("Browser.close", json!({}));
        }
        self.to_browser = None;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // The group is the leader's pid (process_group(0)); its helpers (zygote, renderers) are
        // in it, and nothing else is.
        let group = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) with a negative pid signals the process group we created.
        unsafe { libc::kill(-group, libc::SIGKILL) };
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// The relay, its calls and their media

fn sdp(addr: SocketAddrV4) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n",
        ip = addr.ip(),
        port = addr.port()
    )
}

/// The address and port of an SDP's audio stream.
fn advertised(sdp: &str) -> SocketAddrV4 {
    let ip = sdp
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 "))
        .and_then(|ip| ip.trim().parse().ok())
        .unwrap_or_else(|| panic!("no c= line in {sdp}"));
    let port = sdp
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|m| m.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no m=audio line in {sdp}"));
    SocketAddrV4::new(ip, port)
}

/// Offer and answer for a call; returns where the caller and the callee send to.
fn set_up_call(
    ng: &NgClient,
    call_id: &str,
    from_tag: &str,
    caller: SocketAddrV4,
    callee: SocketAddrV4,
) -> (SocketAddrV4, SocketAddrV4) {
    let offer = ng.expect_ok(&dict(vec![
        ("command", "offer".into()),
        ("call-id", call_id.into()),
        ("from-tag", from_tag.into()),
        ("sdp", sdp(caller).into()),
        ("flags", vec!["symmetric"].into()),
        ("direction", vec!["caller", "callee"].into()),
    ]));
    let answer = ng.expect_ok(&dict(vec![
        ("command", "answer".into()),
        ("call-id", call_id.into()),
        ("from-tag", from_tag.into()),
        ("to-tag", "tag-b".into()),
        ("sdp", sdp(callee).into()),
        ("flags", vec!["trust-address"].into()),
    ]));
    (
        advertised(answer.str_at("sdp")),
        advertised(offer.str_at("sdp")),
    )
}

fn bind(ns: &NetNs, addr: SocketAddrV4) -> UdpSocket {
    let socket = ns
        .run(move || UdpSocket::bind(addr))
        .expect("enter the namespace")
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    socket.set_nonblocking(true).expect("non-blocking");
    socket
}

/// RTP both ways, 50 packets a second each, until `stop` or a minute has passed.
fn media(
    caller: UdpSocket,
    to_caller_side: SocketAddrV4,
    callee: UdpSocket,
    to_callee_side: SocketAddrV4,
    stop: Arc<AtomicBool>,
) -> JoinHandle<u64> {
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut sent = 0u64;
        let mut sink = [0u8; 2048];
        let mut packet = vec![0u8; 172];
        packet[0] = 0x80;
        for seq in 0u16.. {
            if stop.load(Ordering::SeqCst) || started.elapsed() > Duration::from_secs(60) {
                break;
            }
            packet[2..4].copy_from_slice(&seq.to_be_bytes());
            packet[8..12].copy_from_slice(&0xa1u32.to_be_bytes());
            let _ = caller.send_to(&packet, to_caller_side);
            packet[8..12].copy_from_slice(&0xb2u32.to_be_bytes());
            let _ = callee.send_to(&packet, to_callee_side);
            sent += 2;
            // What the relay forwards is read and dropped, so no buffer fills up.
            while caller.recv_from(&mut sink).is_ok() {}
            while callee.recv_from(&mut sink).is_ok() {}
            std::thread::sleep(Duration::from_millis(20));
        }
        sent
    })
}

// ---------------------------------------------------------------------------------------------
// Reading the page

/// What the page shows, read from its DOM: texts as displayed.
const SNAPSHOT: &str = r#"(() => {
  const text = (root, sel) => { const n = root.querySelector(sel); return n ? n.textContent : null; };
  const status = document.getElementById('status');
  if (!status) return { loading: location.href };
  return {
    status: status.textContent,
    statusClass: status.className,
    tokenForm: !document.getElementById('token-form').hidden,
    calls: [...document.querySelectorAll('#calls tbody tr.call')].map((tr) => ({
      callId: tr.dataset.callId,
      idText: text(tr, '.id-text'),
      idHtml: tr.querySelector('.c-id').children.length,
      tags: text(tr, '.c-tags'),
      state: text(tr, '.c-state'),
      abPackets: text(tr, '.c-ab-packets'),
      baPackets: text(tr, '.c-ba-packets'),
      abRate: text(tr, '.c-ab-rate'),
      last: text(tr, '.c-last'),
      lastClass: tr.querySelector('.c-last').className,
      peerA: text(tr, '.c-peer-a'),
      expanded: tr.classList.contains('expanded'),
    })),
    streams: [...document.querySelectorAll('#calls tbody tr.streams')].map((tr) => ({
      callId: tr.dataset.callId,
      rows: [...tr.querySelectorAll('tr.stream')].map((r) => ({
        from: text(r, '.s-from'), type: text(r, '.s-type'), relay: text(r, '.s-relay'),
        sdp: text(r, '.s-sdp'), latched: text(r, '.s-latched'), packets: text(r, '.s-packets'),
      })),
    })),
    ended: [...document.querySelectorAll('#ended tbody tr.ended')].map((tr) => ({
      callId: text(tr, '.e-id'), cause: text(tr, '.e-cause'),
      abPackets: text(tr, '.e-ab-packets'), baPackets: text(tr, '.e-ba-packets'),
    })),
    relay: [...document.querySelectorAll('#relay .counter')].map((c) => c.dataset.counter || 'backend'),
    images: document.querySelectorAll('img').length,
    pwned: typeof window.pwned !== 'undefined',
    href: location.href,
  };
})()"#;

/// A count as the page prints it (digits grouped with thin spaces).
fn count(text: &Json) -> u64 {
    let digits: String = text
        .as_str()
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    digits.parse().unwrap_or(0)
}

fn call_row<'a>(snapshot: &'a Json, call_id: &str) -> Option<&'a Json> {
    snapshot["calls"]
        .as_array()?
        .iter()
        .find(|c| c["callId"] == call_id)
}

/// Reads the page until `ready` says yes, at most `WAIT`; panics with the last read.
fn wait_for(browser: &mut Browser, what: &str, ready: impl Fn(&Json) -> bool) -> Json {
    let started = Instant::now();
    loop {
        let snapshot = browser.eval(SNAPSHOT);
        if ready(&snapshot) {
            return snapshot;
        }
        assert!(
            started.elapsed() < WAIT,
            "the page never showed {what}; it shows:\n{snapshot:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Clicks the call-id cell of a call's row.
fn click_call(browser: &mut Browser, call_id: &str) {
    let id = serde_json::to_string(call_id).expect("a JS string");
    let at = browser.eval(&format!(
        "(() => {{ const tr = [...document.querySelectorAll('#calls tr.call')]
             .find((t) => t.dataset.callId === {id});
           tr.scrollIntoView({{ block: 'center' }});
           const r = tr.querySelector('.c-id').getBoundingClientRect();
           return {{ x: r.left + Math.min(r.width / 2, 40), y: r.top + r.height / 2 }}; }})()"
    ));
    let (x, y) = (at["x"].as_f64(), at["y"].as_f64());
    browser.click(x.expect("x"), y.expect("y"));
}

// ---------------------------------------------------------------------------------------------
// The test

#[test]
fn noc_page_in_chromium() {
    if !privileged_test(module_path!()) {
        return;
    }
    let Some(chromium) = in_path("chromium") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is not installed (.ci/setup installs it)"
        );
        eprintln!("skipping: chromium is not installed");
        return;
    };
    let started = Instant::now();
    let work = WorkDir::new("noc-page");
    let binary = sluice_binary().unwrap_or_else(|e| panic!("{e}"));
    let bed = Testbed::build(TopologyKind::TwoArm, "noc").expect("testbed");
    let ns = bed.relay();

    let config = work.0.join("relay.toml");
    std::fs::write(
        &config,
        format!("[api]\nlisten = \"{API}\"\ntoken = \"{TOKEN}\"\n"),
    )
    .expect("relay.toml");
    let s = |v: &str| v.to_owned();
    let mut relay = Proc::spawn(
        ns,
        "relay",
        &binary,
        &[
            s("relay"),
            s("--config"),
            config.display().to_string(),
            s("--interface"),
            format!("caller/{}", bed.relay_caller_addr()),
            s("--interface"),
            format!("callee/{}", bed.relay_callee_addr()),
            s("--listen-ng"),
            s(NG),
            s("--port-min"),
            s("30000"),
            s("--port-max"),
            s("30099"),
            s("--timeout"),
            s("60"),
            s("--backend"),
            s("sockets"),
        ],
        &work.0,
    );
    let socket = ns
        .run(|| UdpSocket::bind("127.0.0.1:0"))
        .expect("enter the relay namespace")
        .expect("bind the ng client");
    let mut ng = NgClient::new(socket, NG.parse::<SocketAddr>().expect("address"));
    ng.wait = Duration::from_millis(200);
    let ping = dict(vec![("command", "ping".into())]);
    let up = Instant::now();
    while ng.request(&ping).is_err() {
        relay.check_running();
        assert!(up.elapsed() < WAIT, "the relay never answered ping");
    }
    ng.wait = Duration::from_secs(2);
    // The page is served without the token; the data behind it is not.
    let (status, page) = http_get(ns, API, "/", Duration::from_secs(5)).expect("GET /");
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("<title>Sluice NOC"), "{page}");
    assert_eq!(
        http_get(ns, API, "/calls", Duration::from_secs(5))
            .expect("GET /calls")
            .0,
        401
    );

    let caller_really = SocketAddrV4::new(bed.caller_addr(), CALLER_PORT);
    let callee = SocketAddrV4::new(bed.callee_addr(), CALLEE_PORT);
    let (to_caller_side, to_callee_side) = set_up_call(&ng, CALL_ID, "tag-a", SDP_CALLER, callee);
    let stop_media = Arc::new(AtomicBool::new(false));
    let sender = media(
        bind(bed.caller(), caller_really),
        to_caller_side,
        bind(bed.callee(), callee),
        to_callee_side,
        stop_media.clone(),
    );
    set_up_call(
        &ng,
        HOSTILE_ID,
        HOSTILE_TAG,
        SocketAddrV4::new(bed.caller_addr(), 4100),
        SocketAddrV4::new(bed.callee_addr(), 5100),
    );

    let mut browser = Browser::start(ns, &chromium, &work.0);
    browser.open_tab();
    // Without the token, the page loads but the API refuses it, and the page says so.
    browser.navigate(&format!("http://{API}/index.html"));
    wait_for(&mut browser, "the API refusing the page", |s| {
        s["statusClass"] == "error"
            && s["status"]
                .as_str()
                .is_some_and(|t| t.contains("access token"))
            && s["tokenForm"] == true
    });
    // Those refusals are in the browser's log; from now on the page must log no error (the
    // old page's last refusal may still arrive, as a 401).
    let refused = |entry: &Json| {
        entry["source"] == "network"
            && entry["text"]
                .as_str()
                .is_some_and(|t| t.contains("status of 401"))
    };
    browser.forget_events();
    browser.navigate(&format!("http://{API}/#token={TOKEN}"));

    // The call, with media counted, and the page polling with the token.
    let first = wait_for(&mut browser, "the call with packets", |s| {
        s["statusClass"] == "ok"
            && call_row(s, CALL_ID).is_some_and(|c| count(&c["abPackets"]) > 0)
            && call_row(s, HOSTILE_ID).is_some()
    });
    assert!(
        !first["href"].as_str().unwrap_or_default().contains(TOKEN),
        "the token is taken off the address bar: {first:#}"
    );
    let row = call_row(&first, CALL_ID).expect("the call");
    assert_eq!(row["idText"], CALL_ID);
    assert!(
        row["lastClass"]
            .as_str()
            .is_some_and(|class| class.contains("age-ok")),
        "media is flowing: {row:#}"
    );
    assert_eq!(row["state"], "established");
    assert_eq!(row["tags"], "tag-a → tag-b");
    let before = (count(&row["abPackets"]), count(&row["baPackets"]));
    let second = wait_for(&mut browser, "the packet counters growing", |s| {
        call_row(s, CALL_ID)
            .is_some_and(|c| count(&c["abPackets"]) > before.0 && count(&c["baPackets"]) > before.1)
    });
    let row = call_row(&second, CALL_ID).expect("the call");
    assert!(
        row["abRate"].as_str().is_some_and(|r| r.ends_with("/s")),
        "a packet rate once two reads were made: {row:#}"
    );
    assert_eq!(row["peerA"], caller_really.to_string(), "{row:#}");
    assert!(
        second["relay"]
            .as_array()
            .is_some_and(|r| r.iter().any(|c| c == "tx")),
        "the relay's counters: {second:#}"
    );

    // The hostile call-id and tag are text.
    let hostile = call_row(&second, HOSTILE_ID).expect("the hostile call");
    assert_eq!(hostile["idText"], HOSTILE_ID, "{hostile:#}");
    assert_eq!(
        hostile["idHtml"], 2,
        "only the page's own spans: {hostile:#}"
    );
    assert_eq!(hostile["tags"], format!("{HOSTILE_TAG} → tag-b"));
    assert_eq!(second["images"], 0, "no <img> was made: {second:#}");
    assert_eq!(second["pwned"], false);

    // A click shows the call's streams, with the address the relay latched on.
    click_call(&mut browser, CALL_ID);
    let expanded = wait_for(&mut browser, "the call's streams", |s| {
        s["streams"].as_array().is_some_and(|all| {
            all.iter().any(|d| {
                d["callId"] == CALL_ID
                    && d["rows"].as_array().is_some_and(|rows| {
                        rows.iter().any(|r| {
                            r["from"] == "A"
                                && r["type"] == "RTP"
                                && r["latched"] == caller_really.to_string()
                        })
                    })
            })
        })
    });
    let streams = expanded["streams"]
        .as_array()
        .and_then(|all| all.iter().find(|d| d["callId"] == CALL_ID))
        .expect("the streams");
    let from_a = streams["rows"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["from"] == "A" && r["type"] == "RTP"))
        .expect("A's RTP stream");
    assert_eq!(from_a["sdp"], SDP_CALLER.to_string(), "{streams:#}");
    assert!(count(&from_a["packets"]) > 0, "{streams:#}");
    assert_eq!(
        streams["rows"].as_array().map(Vec::len),
        Some(4),
        "RTP and RTCP each way: {streams:#}"
    );

    // The hostile call's streams come from /calls/<percent-encoded id>.
    click_call(&mut browser, HOSTILE_ID);
    wait_for(&mut browser, "the hostile call's streams", |s| {
        s["streams"].as_array().is_some_and(|all| {
            all.iter().any(|d| {
                d["callId"] == HOSTILE_ID && d["rows"].as_array().is_some_and(|r| r.len() == 4)
            })
        })
    });
    let errors = browser.page_errors(refused);
    assert!(errors.is_empty(), "the page reported errors: {errors:#?}");

    let screenshot = browser
        .call("Page.captureScreenshot", json!({ "format": "png" }))
        .expect("screenshot");
    let png = base64::engine::general_purpose::STANDARD
        .decode(screenshot["data"].as_str().unwrap_or_default())
        .expect("base64 PNG");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let shot = work.0.join("noc-page.png");
    std::fs::write(&shot, &png).expect("write the screenshot");
    eprintln!("screenshot: {}", shot.display());

    // When the media stops, the call's last-packet age turns amber (2 s), then...
    stop_media.store(true, Ordering::SeqCst);
    let sent = sender.join().expect("the media thread");
    assert!(sent > 0);
    let silent = wait_for(&mut browser, "the call going silent", |s| {
        call_row(s, CALL_ID).is_some_and(|c| {
            c["lastClass"]
                .as_str()
                .is_some_and(|class| class.contains("age-warn"))
        })
    });
    let row = call_row(&silent, CALL_ID).expect("the call");
    assert!(
        row["last"].as_str().is_some_and(|t| t.ends_with(" s")),
        "{row:#}"
    );

    // ... deleted, it moves to the recently ended calls with its cause and final counters.
    ng.expect_ok(&dict(vec![
        ("command", "delete".into()),
        ("call-id", CALL_ID.into()),
        ("from-tag", "tag-a".into()),
    ]));
    let ended = wait_for(&mut browser, "the call among the ended ones", |s| {
        call_row(s, CALL_ID).is_none()
            && s["ended"].as_array().is_some_and(|e| {
                e.iter()
                    .any(|c| c["callId"] == CALL_ID && c["cause"] == "deleted")
            })
    });
    let last = ended["ended"]
        .as_array()
        .and_then(|e| e.iter().find(|c| c["callId"] == CALL_ID))
        .expect("the ended call");
    assert!(count(&last["abPackets"]) > before.0, "{last:#}");
    assert!(count(&last["baPackets"]) > before.1, "{last:#}");
    assert!(
        call_row(&ended, HOSTILE_ID).is_some(),
        "the other call stays"
    );

    // The page may have asked for the deleted call's streams just after it went (a 404, which
    // the browser logs); anything else is an error.
    let errors = browser.page_errors(|entry| {
        refused(entry)
            || entry["source"] == "network"
                && entry["url"]
                    .as_str()
                    .is_some_and(|u| u.contains("/calls/noc-call-1"))
    });
    assert!(errors.is_empty(), "the page reported errors: {errors:#?}");

    // With the relay gone, the page keeps its last data and says the API is unreachable.
    relay.check_running();
    relay.stop();
    wait_for(&mut browser, "the API unreachable", |s| {
        s["statusClass"] == "error"
            && s["status"]
                .as_str()
                .is_some_and(|t| t.contains("unreachable"))
            && call_row(s, HOSTILE_ID).is_some()
    });
    browser.stop();
    eprintln!(
        "noc_page_in_chromium: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

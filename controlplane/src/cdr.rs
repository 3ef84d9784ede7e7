//! Call detail records: one per call, written durably when the call ends, whatever ended it
//! (BYE-independent accounting).
//!
//! A [`Cdr`] is what the signalling knew about a call ([`CallInfo`]), when it was answered and
//! ended, why it ended ([`TerminationCause`]), and what the relay carried ([`MediaCounters`]).
//! [`CdrStore`] keeps them; [`SqliteCdrStore`] is the embedded default, a SQLite file whose
//! columns follow the RADIUS accounting attributes of the MSP / OpenSIPS platforms
//! (`AcctSessionId`, `AcctStartTime`, `AcctStopTime`, `AcctSessionTime`, `AcctInputOctets`, ...;
//! see [`SCHEMA_V1`] and [`SCHEMA_V2`]).
//!
//! # Directions
//!
//! As in RADIUS, where the NAS counts from the user's point of view, *input* is what the relay
//! received **from the caller** and *output* is what it received **from the callee** (and so
//! sent to the caller): `AcctInputOctets` = bytes from the caller, `AcctOutputOctets` = bytes
//! from the callee. RTP and RTCP together, all media streams of the call.
//!
//! # Durability and exactly-once
//!
//! * [`CdrStore::finish`] returns once the CDR is committed to the database, which is in WAL
//!   mode. How far "committed" goes is [`Durability`] (`[cdr] durability`): by default
//!   (`process`) the commit is a write into the WAL (`synchronous=NORMAL`), so it survives a
//!   crash or kill of the process (the data is in the kernel's page cache), and a [`WalSyncer`]
//!   thread syncs the WAL to disk every `[cdr] sync_interval_ms`, which bounds what a power cut
//!   or kernel crash can lose to the CDRs of that last interval. With `power` every commit
//!   fsyncs the WAL (`synchronous=FULL`): one fsync per answered and per ended call, on the SIP
//!   thread, but nothing confirmed is lost even to a power cut. The periodic counter updates
//!   are one transaction for all active calls at once.
//! * A CDR is identified by the call's Call-ID and From tag (`AcctSessionId`, `SipFromTag`), which
//!   are `UNIQUE`: a retried `finish` is an `INSERT OR IGNORE` that writes nothing the second
//!   time, and the first record stays as it was. (The From tag is part of the key so that a UA
//!   reusing a Call-ID for a new call, with a new From tag, does not lose the second call's CDR.)
//! * Restart recovery: [`CdrStore::begin`] journals a call in `active_calls` when it is answered,
//!   [`CdrStore::update_counters`] stores its last known counters, and `finish` writes the CDR and
//!   removes the journal row in one transaction. [`CdrStore::recover`], on startup, closes every
//!   call still in the journal with cause [`TerminationCause::Restart`], its last update as the
//!   stop time and its last known counters.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};
use serde::Deserialize;

/// Where `sluice` keeps its CDRs unless told otherwise.
pub const DEFAULT_CDR_DB: &str = "/var/lib/sluice/cdr.sqlite";

/// How often, by default, the WAL is synced to disk under [`Durability::Process`].
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// What a CDR that [`CdrStore::finish`] confirmed survives (`[cdr] durability`).
///
/// Measured on a disk whose fsync takes ~2.3 ms: `power` holds `sluice run` to about 600 calls
/// per second (two fsyncs per call on the SIP thread), `process` does not wait on the disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// A crash or kill of the process (`synchronous=NORMAL`: a commit is written to the WAL,
    /// not fsynced). A power cut or kernel crash may lose what was committed since the last
    /// periodic sync of the [`WalSyncer`].
    #[default]
    Process,
    /// A power cut too (`synchronous=FULL`: every commit fsyncs the WAL).
    Power,
}

impl Durability {
    /// The `PRAGMA synchronous` value for the CDR connection.
    fn synchronous(self) -> &'static str {
        match self {
            Self::Process => "NORMAL",
            Self::Power => "FULL",
        }
    }
}

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: i64 = 2;

/// The first schema: the CDRs, the journal of active calls, and the version.
///
/// Times are UNIX seconds with millisecond precision (`REAL`), so SQLite's own
/// `datetime(AcctStopTime, 'unixepoch')` reads them; `AcctSessionTime` is seconds, also to the
/// millisecond (rounding to billing increments is the rating engine's business).
pub const SCHEMA_V1: &str = "\
CREATE TABLE schema_version (
    version INTEGER NOT NULL
);
CREATE TABLE cdrs (
    id                INTEGER PRIMARY KEY,
    AcctSessionId     TEXT    NOT NULL,  -- SIP Call-ID
    SipFromTag        TEXT    NOT NULL,
    SipToTag          TEXT,              -- NULL if no tagged response came
    SipFromURI        TEXT    NOT NULL,  -- Calling-Station-Id
    SipToURI          TEXT    NOT NULL,  -- Called-Station-Id
    CanonicalURI      TEXT    NOT NULL,  -- Request-URI after routing
    SourceIP          TEXT    NOT NULL,  -- the caller's signalling source address
    BillingParty      TEXT,
    SipMethod         TEXT    NOT NULL,  -- INVITE
    SipResponseCode   INTEGER NOT NULL,  -- the final response to the INVITE
    AcctStartTime     REAL,              -- 200 OK; NULL if never answered
    AcctStopTime      REAL    NOT NULL,
    AcctSessionTime   REAL    NOT NULL,  -- stop - start, 0 if never answered
    AcctTerminateCause TEXT   NOT NULL,  -- bye:caller, media-timeout, failed:486, restart, ...
    AcctInputOctets   INTEGER NOT NULL,  -- received from the caller
    AcctOutputOctets  INTEGER NOT NULL,  -- received from the callee
    AcctInputPackets  INTEGER NOT NULL,
    AcctOutputPackets INTEGER NOT NULL,
    Gateway           TEXT,
    Carrier           TEXT,
    NodeName          TEXT    NOT NULL,  -- the Sluice node that handled the call
    UNIQUE (AcctSessionId, SipFromTag)
);
CREATE INDEX cdrs_stop ON cdrs (AcctStopTime);
CREATE TABLE active_calls (
    AcctSessionId     TEXT    NOT NULL,
    SipFromTag        TEXT    NOT NULL,
    SipToTag          TEXT,
    SipFromURI        TEXT    NOT NULL,
    SipToURI          TEXT    NOT NULL,
    CanonicalURI      TEXT    NOT NULL,
    SourceIP          TEXT    NOT NULL,
    BillingParty      TEXT,
    SipMethod         TEXT    NOT NULL,
    SipResponseCode   INTEGER NOT NULL,
    AcctStartTime     REAL    NOT NULL,
    LastUpdateTime    REAL    NOT NULL,  -- when the counters below were last known
    AcctInputOctets   INTEGER NOT NULL DEFAULT 0,
    AcctOutputOctets  INTEGER NOT NULL DEFAULT 0,
    AcctInputPackets  INTEGER NOT NULL DEFAULT 0,
    AcctOutputPackets INTEGER NOT NULL DEFAULT 0,
    Gateway           TEXT,
    Carrier           TEXT,
    NodeName          TEXT    NOT NULL,
    PRIMARY KEY (AcctSessionId, SipFromTag)
);
";

/// The second schema, over the first: the phones' `User-Agent`s (`SipUserAgents`, as the MSP
/// platforms name it: the caller's and the callee's, `caller + callee`). Added columns only, so
/// this build still reads a version 1 database (without them) read-only.
pub const SCHEMA_V2: &str = "\
ALTER TABLE cdrs ADD COLUMN SipUserAgents TEXT;
ALTER TABLE active_calls ADD COLUMN SipUserAgents TEXT;
";

/// What went wrong with the CDR store.
#[derive(Debug, thiserror::Error)]
pub enum CdrError {
    #[error("no CDR database at {0}")]
    NoDatabase(String),
    #[error("the CDR database {path} has schema version {found}, newer than this build's {SCHEMA_VERSION}")]
    NewerSchema { path: String, found: i64 },
    #[error("creating {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("the CDR database has a bad record: {0}")]
    BadRecord(String),
    #[error("CDR database: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// Which side of the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Party {
    Caller,
    Callee,
}

/// Why a call ended, as `AcctTerminateCause` spells it ([`fmt::Display`] / [`FromStr`]):
/// `bye:caller`, `bye:callee`, `media-timeout`, `max-duration`, `cancel`, `failed:<code>`,
/// `signalling-lost`, `restart`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TerminationCause {
    /// A BYE, from that side.
    Bye { by: Party },
    /// The relay saw no media for too long.
    MediaTimeout,
    /// The call reached its maximum duration.
    MaxDuration,
    /// The caller cancelled before an answer.
    Cancel,
    /// The INVITE got this final error response.
    Failed(u16),
    /// The dialog's signalling path was lost (no answer to in-dialog requests, session timer).
    SignallingLost,
    /// The call was active when Sluice stopped; closed on the next start with its last known
    /// counters.
    Restart,
}

impl fmt::Display for TerminationCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bye { by: Party::Caller } => f.write_str("bye:caller"),
            Self::Bye { by: Party::Callee } => f.write_str("bye:callee"),
            Self::MediaTimeout => f.write_str("media-timeout"),
            Self::MaxDuration => f.write_str("max-duration"),
            Self::Cancel => f.write_str("cancel"),
            Self::Failed(code) => write!(f, "failed:{code}"),
            Self::SignallingLost => f.write_str("signalling-lost"),
            Self::Restart => f.write_str("restart"),
        }
    }
}

/// A termination cause that is not one of [`TerminationCause`]'s spellings.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown termination cause {0:?}")]
pub struct BadCause(pub String);

impl FromStr for TerminationCause {
    type Err = BadCause;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "bye:caller" => Self::Bye { by: Party::Caller },
            "bye:callee" => Self::Bye { by: Party::Callee },
            "media-timeout" => Self::MediaTimeout,
            "max-duration" => Self::MaxDuration,
            "cancel" => Self::Cancel,
            "signalling-lost" => Self::SignallingLost,
            "restart" => Self::Restart,
            _ => match s.strip_prefix("failed:").map(str::parse::<u16>) {
                Some(Ok(code)) if (100..=699).contains(&code) => Self::Failed(code),
                _ => return Err(BadCause(s.to_owned())),
            },
        })
    }
}

/// Packets and bytes of one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirectionCounters {
    pub packets: u64,
    pub bytes: u64,
}

/// What the relay carried for a call, per direction (RTP and RTCP of all streams together).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MediaCounters {
    /// Received from the caller: RADIUS input (`AcctInputOctets`, `AcctInputPackets`).
    pub from_caller: DirectionCounters,
    /// Received from the callee: RADIUS output (`AcctOutputOctets`, `AcctOutputPackets`).
    pub from_callee: DirectionCounters,
}

/// What the signalling knows about a call, from the INVITE and the routing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallInfo {
    /// The SIP Call-ID (`AcctSessionId`).
    pub call_id: String,
    /// The From URI (`SipFromURI`, Calling-Station-Id).
    pub from_uri: String,
    /// The To URI (`SipToURI`, Called-Station-Id).
    pub to_uri: String,
    pub from_tag: String,
    /// The To tag of the answering (or final) response, if it had one.
    pub to_tag: Option<String>,
    /// Where the caller's INVITE came from (`SourceIP`).
    pub source_ip: IpAddr,
    /// Who pays: the SIP account or trusted peer (`BillingParty`).
    pub billing_party: Option<String>,
    /// The caller's and the callee's `User-Agent`, as `caller + callee` (`SipUserAgents`).
    pub user_agents: Option<String>,
    /// The Request-URI after routing (`CanonicalURI`).
    pub canonical_uri: String,
    /// `INVITE`.
    pub sip_method: String,
    /// The gateway the call was sent to, if it went to one.
    pub gateway: Option<String>,
    /// The carrier of that gateway.
    pub carrier: Option<String>,
    /// The Sluice node that handled the call.
    pub node: String,
}

impl CallInfo {
    /// The key the store knows the call by.
    pub fn key(&self) -> CallKey<'_> {
        CallKey {
            call_id: &self.call_id,
            from_tag: &self.from_tag,
        }
    }
}

/// What identifies a call in the store: its Call-ID and From tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CallKey<'a> {
    pub call_id: &'a str,
    pub from_tag: &'a str,
}

/// One call detail record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cdr {
    pub call: CallInfo,
    /// The final response to the INVITE: 200 for an answered call.
    pub sip_response_code: u16,
    /// When the 200 OK came; `None` for a call never answered.
    pub start: Option<SystemTime>,
    /// When the call ended.
    pub stop: SystemTime,
    pub cause: TerminationCause,
    pub counters: MediaCounters,
}

impl Cdr {
    /// How long the call was up: stop - start, zero if it was never answered (or the clock went
    /// backwards). Stored as `AcctSessionTime`, to the millisecond.
    pub fn duration(&self) -> Duration {
        match self.start {
            Some(start) => self.stop.duration_since(start).unwrap_or_default(),
            None => Duration::ZERO,
        }
    }
}

/// A store of CDRs with a journal of the active calls for restart recovery.
///
/// Writes take `&mut self`: give the store to one thread (the accounting writer) or put it
/// behind a mutex.
pub trait CdrStore {
    /// Journals a call as active from `answered` (its 200 OK), with zero counters. A second
    /// `begin` for the same call changes nothing.
    fn begin(&mut self, call: &CallInfo, answered: SystemTime) -> Result<(), CdrError>;

    /// Stores the last known counters of active calls, as of `at`, in one transaction. Calls not
    /// in the journal (ended meanwhile, never begun) are skipped. Returns how many were updated.
    fn update_counters(
        &mut self,
        at: SystemTime,
        updates: &[(CallKey<'_>, MediaCounters)],
    ) -> Result<usize, CdrError>;

    /// Writes the CDR of an ended call and drops it from the journal, in one transaction,
    /// durably before returning. Returns `false` if the call's CDR was already there (a retried
    /// write), which is left as it was.
    fn finish(&mut self, cdr: &Cdr) -> Result<bool, CdrError>;

    /// On startup: closes every call left in the journal with cause
    /// [`TerminationCause::Restart`], its last update time as the stop time (but not after
    /// `now`) and its last known counters, writes their CDRs and returns them.
    fn recover(&mut self, now: SystemTime) -> Result<Vec<Cdr>, CdrError>;

    /// The most recent `limit` CDRs (all if `None`) whose stop time is at or after `since`,
    /// oldest first.
    fn list(&self, since: Option<SystemTime>, limit: Option<usize>) -> Result<Vec<Cdr>, CdrError>;

    /// The calls in the journal, with the answer time, the last update time and the last known
    /// counters.
    fn active(&self) -> Result<Vec<ActiveCall>, CdrError>;
}

/// A call in the journal of active calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveCall {
    pub call: CallInfo,
    pub sip_response_code: u16,
    pub start: SystemTime,
    pub last_update: SystemTime,
    pub counters: MediaCounters,
}

/// The embedded CDR store: a SQLite database file.
pub struct SqliteCdrStore {
    conn: Connection,
    /// The database has `SipUserAgents` (schema 2; a version 1 file opened read-only has not).
    has_user_agents: bool,
}

impl fmt::Debug for SqliteCdrStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteCdrStore")
            .field("path", &self.conn.path())
            .finish()
    }
}

/// How long a writer or reader waits for another's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

impl SqliteCdrStore {
    /// Opens the database at `path` for writing, creating it (and its directory) and its schema
    /// if needed, and migrating an older schema; with the default [`Durability`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, CdrError> {
        Self::open_with(path, Durability::default())
    }

    /// As [`SqliteCdrStore::open`], with commits as durable as `durability` says.
    pub fn open_with(path: impl AsRef<Path>, durability: Durability) -> Result<Self, CdrError> {
        let path = path.as_ref();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| CdrError::Io {
                path: dir.display().to_string(),
                source: e,
            })?;
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // WAL: readers (`sluice cdrs`) do not block the writer. See `Durability` for the rest.
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path.display(), mode, "the CDR database is not in WAL mode");
        }
        conn.pragma_update(None, "synchronous", durability.synchronous())?;
        let mut store = Self {
            conn,
            has_user_agents: true,
        };
        store.migrate(path)?;
        Ok(store)
    }

    /// Opens an existing database read-only, for reports. Errors with
    /// [`CdrError::NoDatabase`] if there is no file at `path`.
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Self, CdrError> {
        let path = path.as_ref();
        if !path.is_file() {
            return Err(CdrError::NoDatabase(path.display().to_string()));
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let found = schema_version(&conn)?;
        if found == 0 {
            // A file, but not one of ours (or an empty one).
            return Err(CdrError::NoDatabase(path.display().to_string()));
        }
        if found > SCHEMA_VERSION {
            return Err(CdrError::NewerSchema {
                path: path.display().to_string(),
                found,
            });
        }
        Ok(Self {
            conn,
            has_user_agents: found >= 2,
        })
    }

    /// What the SELECTs name for `SipUserAgents`.
    fn user_agents_column(&self) -> &'static str {
        if self.has_user_agents {
            "SipUserAgents"
        } else {
            "NULL"
        }
    }

    /// Brings the schema to [`SCHEMA_VERSION`].
    fn migrate(&mut self, path: &Path) -> Result<(), CdrError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let found = schema_version(&tx)?;
        if found > SCHEMA_VERSION {
            return Err(CdrError::NewerSchema {
                path: path.display().to_string(),
                found,
            });
        }
        if found < 1 {
            tx.execute_batch(SCHEMA_V1)?;
            tx.execute("INSERT INTO schema_version (version) VALUES (1)", [])?;
        }
        if found < 2 {
            tx.execute_batch(SCHEMA_V2)?;
            tx.execute("UPDATE schema_version SET version = 2", [])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<i64, CdrError> {
        schema_version(&self.conn)
    }
}

/// Syncs a WAL-mode database to disk every interval, on a thread and a connection of its own,
/// so that the SIP thread's commits (`synchronous=NORMAL`) never wait on the disk and yet a
/// power cut loses at most one interval of them. Stops, after a last sync, when dropped.
///
/// Each round first fdatasyncs the `-wal` file: that is what makes the commits in it durable,
/// exactly the sync a `synchronous=FULL` commit does, once for all of them. (A WAL
/// checkpoint alone does not do that: it syncs the WAL only when it has frames to copy back,
/// and a reader holding an old snapshot can leave it none.) Extra syncs cannot harm SQLite's
/// consistency, since the kernel may write dirty pages back at any time anyway. Then a
/// `PASSIVE` checkpoint (which never waits for, nor blocks, the writer) copies the WAL back
/// into the database, so the WAL stays short and SQLite's automatic checkpoints, with their
/// two fsyncs, rarely fall on the SIP thread's commits.
pub struct WalSyncer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for WalSyncer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WalSyncer").finish_non_exhaustive()
    }
}

impl WalSyncer {
    /// Starts syncing the database at `path` (already opened, in WAL mode) every `interval`.
    pub fn start(path: &Path, interval: Duration) -> Result<Self, CdrError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // The checkpoint syncs what it copied into the database before the WAL can be reused.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let wal = PathBuf::from(wal);
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("cdr-wal-sync".into())
            .spawn(move || loop {
                let last = !matches!(
                    stopped.recv_timeout(interval),
                    Err(mpsc::RecvTimeoutError::Timeout)
                );
                if let Err(e) = sync_wal(&conn, &wal) {
                    tracing::warn!(error = %e, wal = %wal.display(), "syncing the CDR database");
                }
                if last {
                    break;
                }
            })
            .map_err(|e| CdrError::Io {
                path: path.display().to_string(),
                source: e,
            })?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for WalSyncer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One round of [`WalSyncer`]: fdatasync the WAL file, then a passive checkpoint.
fn sync_wal(conn: &Connection, wal: &Path) -> Result<(), CdrError> {
    // Opened afresh each round: SQLite deletes the WAL when its last connection closes, and
    // a descriptor kept open would then sync a file nobody writes.
    match std::fs::File::open(wal) {
        Ok(file) => file.sync_data().map_err(|e| CdrError::Io {
            path: wal.display().to_string(),
            source: e,
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(CdrError::Io {
                path: wal.display().to_string(),
                source: e,
            })
        }
    }
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
    Ok(())
}

/// The version in `schema_version`, 0 if the table is not there.
fn schema_version(conn: &Connection) -> Result<i64, CdrError> {
    let exists: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version')",
        [],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(0);
    }
    let version: Option<i64> = conn
        .query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))
        .optional()?
        .flatten();
    Ok(version.unwrap_or(0))
}

/// UNIX seconds, to the millisecond (before 1970: negative).
pub fn to_unix(t: SystemTime) -> f64 {
    let ms: i64 = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    };
    ms as f64 / 1000.0
}

/// The inverse of [`to_unix`], to the millisecond.
pub fn from_unix(s: f64) -> SystemTime {
    let ms = (s * 1000.0).round();
    if ms >= 0.0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis((-ms) as u64)
    }
}

/// A counter as SQLite's signed 64-bit integer (no byte count gets near the limit).
fn sql_count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn count_from_sql(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

const CDR_COLUMNS: &str = "AcctSessionId, SipFromTag, SipToTag, SipFromURI, SipToURI, \
    CanonicalURI, SourceIP, BillingParty, SipMethod, SipResponseCode, AcctStartTime, \
    AcctStopTime, AcctSessionTime, AcctTerminateCause, AcctInputOctets, AcctOutputOctets, \
    AcctInputPackets, AcctOutputPackets, Gateway, Carrier, NodeName, SipUserAgents";

const ACTIVE_COLUMNS: &str = "AcctSessionId, SipFromTag, SipToTag, SipFromURI, SipToURI, \
    CanonicalURI, SourceIP, BillingParty, SipMethod, SipResponseCode, AcctStartTime, \
    LastUpdateTime, AcctInputOctets, AcctOutputOctets, AcctInputPackets, AcctOutputPackets, \
    Gateway, Carrier, NodeName, SipUserAgents";

/// The columns to SELECT: `columns` with `SipUserAgents` (the last) named as `user_agents`
/// says (`NULL` in a version 1 database).
fn select_columns(columns: &str, user_agents: &str) -> String {
    columns.replace("SipUserAgents", user_agents)
}

/// Reads the [`CallInfo`] columns a row of either table starts with (the first ten but the
/// response code), plus the four last (`Gateway`, `Carrier`, `NodeName`, `SipUserAgents`) at
/// `tail`.
fn call_from_row(row: &Row<'_>, tail: usize) -> rusqlite::Result<Result<CallInfo, CdrError>> {
    let source: String = row.get(6)?;
    let source_ip = match source.parse() {
        Ok(ip) => ip,
        Err(_) => {
            return Ok(Err(CdrError::BadRecord(format!(
                "SourceIP {source:?} is not an IP address"
            ))))
        }
    };
    Ok(Ok(CallInfo {
        call_id: row.get(0)?,
        from_tag: row.get(1)?,
        to_tag: row.get(2)?,
        from_uri: row.get(3)?,
        to_uri: row.get(4)?,
        canonical_uri: row.get(5)?,
        source_ip,
        billing_party: row.get(7)?,
        user_agents: row.get(tail + 3)?,
        sip_method: row.get(8)?,
        gateway: row.get(tail)?,
        carrier: row.get(tail + 1)?,
        node: row.get(tail + 2)?,
    }))
}

fn counters_from_row(row: &Row<'_>, first: usize) -> rusqlite::Result<MediaCounters> {
    Ok(MediaCounters {
        from_caller: DirectionCounters {
            bytes: count_from_sql(row.get(first)?),
            packets: count_from_sql(row.get(first + 2)?),
        },
        from_callee: DirectionCounters {
            bytes: count_from_sql(row.get(first + 1)?),
            packets: count_from_sql(row.get(first + 3)?),
        },
    })
}

fn response_code(n: i64) -> Result<u16, CdrError> {
    u16::try_from(n).map_err(|_| CdrError::BadRecord(format!("SipResponseCode {n}")))
}

/// A row of `cdrs` selected with [`CDR_COLUMNS`].
fn cdr_from_row(row: &Row<'_>) -> rusqlite::Result<Result<Cdr, CdrError>> {
    let call = match call_from_row(row, 18)? {
        Ok(call) => call,
        Err(e) => return Ok(Err(e)),
    };
    let code: i64 = row.get(9)?;
    let start: Option<f64> = row.get(10)?;
    let stop: f64 = row.get(11)?;
    let cause: String = row.get(13)?;
    let counters = counters_from_row(row, 14)?;
    Ok((|| {
        Ok(Cdr {
            call,
            sip_response_code: response_code(code)?,
            start: start.map(from_unix),
            stop: from_unix(stop),
            cause: cause
                .parse()
                .map_err(|e: BadCause| CdrError::BadRecord(e.to_string()))?,
            counters,
        })
    })())
}

/// A row of `active_calls` selected with [`ACTIVE_COLUMNS`].
fn active_from_row(row: &Row<'_>) -> rusqlite::Result<Result<ActiveCall, CdrError>> {
    let call = match call_from_row(row, 16)? {
        Ok(call) => call,
        Err(e) => return Ok(Err(e)),
    };
    let code: i64 = row.get(9)?;
    let start: f64 = row.get(10)?;
    let last_update: f64 = row.get(11)?;
    let counters = counters_from_row(row, 12)?;
    Ok(response_code(code).map(|sip_response_code| ActiveCall {
        call,
        sip_response_code,
        start: from_unix(start),
        last_update: from_unix(last_update),
        counters,
    }))
}

/// Inserts a CDR unless its call's is there already; `true` if it was written.
fn insert_cdr(conn: &Connection, cdr: &Cdr) -> Result<bool, CdrError> {
    let c = &cdr.call;
    let n = conn
        .prepare_cached(&format!(
            "INSERT OR IGNORE INTO cdrs ({CDR_COLUMNS}) VALUES \
             (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, \
              ?19, ?20, ?21, ?22)"
        ))?
        .execute(params![
            c.call_id,
            c.from_tag,
            c.to_tag,
            c.from_uri,
            c.to_uri,
            c.canonical_uri,
            c.source_ip.to_string(),
            c.billing_party,
            c.sip_method,
            cdr.sip_response_code,
            cdr.start.map(to_unix),
            to_unix(cdr.stop),
            cdr.duration().as_millis() as f64 / 1000.0,
            cdr.cause.to_string(),
            sql_count(cdr.counters.from_caller.bytes),
            sql_count(cdr.counters.from_callee.bytes),
            sql_count(cdr.counters.from_caller.packets),
            sql_count(cdr.counters.from_callee.packets),
            c.gateway,
            c.carrier,
            c.node,
            c.user_agents,
        ])?;
    Ok(n == 1)
}

impl CdrStore for SqliteCdrStore {
    fn begin(&mut self, call: &CallInfo, answered: SystemTime) -> Result<(), CdrError> {
        let at = to_unix(answered);
        self.conn
            .prepare_cached(&format!(
                "INSERT OR IGNORE INTO active_calls ({ACTIVE_COLUMNS}) VALUES \
                 (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 200, ?10, ?10, 0, 0, 0, 0, ?11, ?12, ?13, \
                  ?14)"
            ))?
            .execute(params![
                call.call_id,
                call.from_tag,
                call.to_tag,
                call.from_uri,
                call.to_uri,
                call.canonical_uri,
                call.source_ip.to_string(),
                call.billing_party,
                call.sip_method,
                at,
                call.gateway,
                call.carrier,
                call.node,
                call.user_agents,
            ])?;
        Ok(())
    }

    fn update_counters(
        &mut self,
        at: SystemTime,
        updates: &[(CallKey<'_>, MediaCounters)],
    ) -> Result<usize, CdrError> {
        if updates.is_empty() {
            return Ok(0);
        }
        let at = to_unix(at);
        let tx = self.conn.transaction()?;
        let mut updated = 0;
        {
            let mut stmt = tx.prepare_cached(
                "UPDATE active_calls SET LastUpdateTime = ?3, AcctInputOctets = ?4, \
                 AcctOutputOctets = ?5, AcctInputPackets = ?6, AcctOutputPackets = ?7 \
                 WHERE AcctSessionId = ?1 AND SipFromTag = ?2",
            )?;
            for (key, c) in updates {
                updated += stmt.execute(params![
                    key.call_id,
                    key.from_tag,
                    at,
                    sql_count(c.from_caller.bytes),
                    sql_count(c.from_callee.bytes),
                    sql_count(c.from_caller.packets),
                    sql_count(c.from_callee.packets),
                ])?;
            }
        }
        tx.commit()?;
        Ok(updated)
    }

    fn finish(&mut self, cdr: &Cdr) -> Result<bool, CdrError> {
        let tx = self.conn.transaction()?;
        let written = insert_cdr(&tx, cdr)?;
        tx.prepare_cached("DELETE FROM active_calls WHERE AcctSessionId = ?1 AND SipFromTag = ?2")?
            .execute(params![cdr.call.call_id, cdr.call.from_tag])?;
        tx.commit()?;
        Ok(written)
    }

    fn recover(&mut self, now: SystemTime) -> Result<Vec<Cdr>, CdrError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let active = {
            let mut stmt = tx.prepare(&format!(
                "SELECT {ACTIVE_COLUMNS} FROM active_calls ORDER BY AcctStartTime"
            ))?;
            let rows = stmt.query_map([], active_from_row)?;
            rows.map(|r| r?).collect::<Result<Vec<_>, _>>()?
        };
        let mut closed = Vec::with_capacity(active.len());
        for a in active {
            let cdr = Cdr {
                stop: a.last_update.max(a.start).min(now.max(a.start)),
                start: Some(a.start),
                call: a.call,
                sip_response_code: a.sip_response_code,
                cause: TerminationCause::Restart,
                counters: a.counters,
            };
            // Already written only if a CDR with the same key was finished before (a Call-ID and
            // From tag reused): then that one stands.
            if insert_cdr(&tx, &cdr)? {
                closed.push(cdr);
            }
        }
        tx.execute("DELETE FROM active_calls", [])?;
        tx.commit()?;
        Ok(closed)
    }

    fn list(&self, since: Option<SystemTime>, limit: Option<usize>) -> Result<Vec<Cdr>, CdrError> {
        let since = since.map(to_unix).unwrap_or(f64::NEG_INFINITY);
        let limit = limit.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        let columns = select_columns(CDR_COLUMNS, self.user_agents_column());
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {columns} FROM cdrs WHERE AcctStopTime >= ?1 \
             ORDER BY AcctStopTime DESC, id DESC LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![since, limit], cdr_from_row)?;
        let mut cdrs = rows.map(|r| r?).collect::<Result<Vec<_>, _>>()?;
        cdrs.reverse();
        Ok(cdrs)
    }

    fn active(&self) -> Result<Vec<ActiveCall>, CdrError> {
        let columns = select_columns(ACTIVE_COLUMNS, self.user_agents_column());
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {columns} FROM active_calls ORDER BY AcctStartTime"
        ))?;
        let rows = stmt.query_map([], active_from_row)?;
        let active = rows.map(|r| r?).collect::<Result<Vec<_>, _>>()?;
        Ok(active)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    pub(crate) fn call(n: u32) -> CallInfo {
        CallInfo {
            call_id: format!("call-{n}@10.0.0.1"),
            from_uri: format!("sip:+3120800{n}@example.net"),
            to_uri: "sip:+4930123456@example.com".into(),
            from_tag: format!("ft{n}"),
            to_tag: Some(format!("tt{n}")),
            source_ip: "192.0.2.10".parse().unwrap(),
            billing_party: Some("trusted-peer-a".into()),
            user_agents: Some("Linphone/5.2 + Asterisk PBX 20".into()),
            canonical_uri: "sip:+4930123456@198.51.100.7:5060".into(),
            sip_method: "INVITE".into(),
            gateway: Some("198.51.100.7".into()),
            carrier: Some("carrier-b".into()),
            node: "sluice-1".into(),
        }
    }

    fn counters(k: u64) -> MediaCounters {
        MediaCounters {
            from_caller: DirectionCounters {
                packets: 50 * k,
                bytes: 8600 * k,
            },
            from_callee: DirectionCounters {
                packets: 49 * k + 1,
                bytes: 8428 * k + 3,
            },
        }
    }

    pub(crate) fn answered(n: u32) -> Cdr {
        Cdr {
            call: call(n),
            sip_response_code: 200,
            start: Some(t(1_717_000_000_123)),
            stop: t(1_717_000_062_456),
            cause: TerminationCause::Bye { by: Party::Callee },
            counters: counters(n as u64 + 1),
        }
    }

    fn open_temp() -> (tempfile::TempDir, std::path::PathBuf, SqliteCdrStore) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lib/sluice/cdr.sqlite");
        let store = SqliteCdrStore::open(&path).unwrap();
        (dir, path, store)
    }

    #[test]
    fn schema_is_created_and_reopened() {
        let (_dir, path, store) = open_temp();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        let tables: Vec<String> = store
            .conn
            .prepare(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'index') ORDER BY name",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for want in ["active_calls", "cdrs", "cdrs_stop", "schema_version"] {
            assert!(
                tables.iter().any(|t| t == want),
                "{want} missing: {tables:?}"
            );
        }
        let mode: String = store
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = store
            .conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 1, "synchronous=NORMAL by default");
        drop(store);
        let store = SqliteCdrStore::open_with(&path, Durability::Power).unwrap();
        let sync: i64 = store
            .conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "synchronous=FULL for power");
        drop(store);
        // Opening again neither fails nor adds a version row.
        let store = SqliteCdrStore::open(&path).unwrap();
        let rows: i64 = store
            .conn
            .query_row("SELECT COUNT(*) FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1);
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let (_dir, path, store) = open_temp();
        store
            .conn
            .execute("UPDATE schema_version SET version = 99", [])
            .unwrap();
        drop(store);
        let err = SqliteCdrStore::open(&path).unwrap_err();
        assert!(
            matches!(err, CdrError::NewerSchema { found: 99, .. }),
            "{err}"
        );
        let err = SqliteCdrStore::open_read_only(&path).unwrap_err();
        assert!(
            matches!(err, CdrError::NewerSchema { found: 99, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_version_1_database_is_read_as_it_is_and_migrated_on_a_write_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.sqlite");
        let old = answered(1);
        {
            // What a version 1 build wrote: its schema and one CDR.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(SCHEMA_V1).unwrap();
            conn.execute("INSERT INTO schema_version (version) VALUES (1)", [])
                .unwrap();
            let c = &old.call;
            conn.execute(
                "INSERT INTO cdrs (AcctSessionId, SipFromTag, SipToTag, SipFromURI, SipToURI, \
                 CanonicalURI, SourceIP, BillingParty, SipMethod, SipResponseCode, \
                 AcctStartTime, AcctStopTime, AcctSessionTime, AcctTerminateCause, \
                 AcctInputOctets, AcctOutputOctets, AcctInputPackets, AcctOutputPackets, \
                 Gateway, Carrier, NodeName) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, \
                 ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)",
                params![
                    c.call_id,
                    c.from_tag,
                    c.to_tag,
                    c.from_uri,
                    c.to_uri,
                    c.canonical_uri,
                    c.source_ip.to_string(),
                    c.billing_party,
                    c.sip_method,
                    old.sip_response_code,
                    old.start.map(to_unix),
                    to_unix(old.stop),
                    old.duration().as_millis() as f64 / 1000.0,
                    old.cause.to_string(),
                    sql_count(old.counters.from_caller.bytes),
                    sql_count(old.counters.from_callee.bytes),
                    sql_count(old.counters.from_caller.packets),
                    sql_count(old.counters.from_callee.packets),
                    c.gateway,
                    c.carrier,
                    c.node,
                ],
            )
            .unwrap();
        }
        let old = Cdr {
            call: CallInfo {
                user_agents: None,
                ..old.call
            },
            ..old
        };
        // A report reads it without changing the file.
        let store = SqliteCdrStore::open_read_only(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), 1);
        assert_eq!(store.list(None, None).unwrap(), vec![old.clone()]);
        assert!(store.active().unwrap().is_empty());
        drop(store);
        // `sluice run` migrates it; the old CDR stays, the new ones have their user agents.
        let mut store = SqliteCdrStore::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), 2);
        let new = answered(2);
        assert!(new.call.user_agents.is_some());
        assert!(store.finish(&new).unwrap());
        store.begin(&call(3), t(1_717_000_100_000)).unwrap();
        assert_eq!(store.list(None, None).unwrap(), vec![old, new]);
        assert_eq!(store.active().unwrap()[0].call, call(3));
    }

    #[test]
    fn read_only_open_wants_an_existing_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.sqlite");
        let err = SqliteCdrStore::open_read_only(&path).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("no CDR database at {}", path.display())
        );
        assert!(!path.exists(), "a read-only open must not create the file");
    }

    #[test]
    fn every_field_is_written_and_read_back() {
        let (_dir, path, mut store) = open_temp();
        let full = answered(1);
        let failed = Cdr {
            call: CallInfo {
                to_tag: None,
                billing_party: None,
                gateway: None,
                carrier: None,
                source_ip: "2001:db8::5".parse().unwrap(),
                ..call(2)
            },
            sip_response_code: 486,
            start: None,
            stop: t(1_717_000_070_000),
            cause: TerminationCause::Failed(486),
            counters: MediaCounters::default(),
        };
        assert!(store.finish(&full).unwrap());
        assert!(store.finish(&failed).unwrap());
        drop(store);
        let store = SqliteCdrStore::open_read_only(&path).unwrap();
        assert_eq!(store.list(None, None).unwrap(), vec![full.clone(), failed]);
        // The derived and direction columns, as the README documents them.
        let (session_time, input, output): (f64, i64, i64) = store
            .conn
            .query_row(
                "SELECT AcctSessionTime, AcctInputOctets, AcctOutputOctets FROM cdrs \
                 WHERE AcctSessionId = ?1",
                [&full.call.call_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(session_time, 62.333);
        assert_eq!(input as u64, full.counters.from_caller.bytes);
        assert_eq!(output as u64, full.counters.from_callee.bytes);
    }

    #[test]
    fn a_duplicate_write_is_ignored() {
        let (_dir, _path, mut store) = open_temp();
        let first = answered(1);
        assert!(store.finish(&first).unwrap());
        let retry = Cdr {
            cause: TerminationCause::MediaTimeout,
            ..first.clone()
        };
        assert!(!store.finish(&retry).unwrap());
        assert_eq!(store.list(None, None).unwrap(), vec![first.clone()]);
        // The same Call-ID with another From tag is another call.
        let reused = Cdr {
            call: CallInfo {
                from_tag: "other".into(),
                ..first.call.clone()
            },
            ..first.clone()
        };
        assert!(store.finish(&reused).unwrap());
        assert_eq!(store.list(None, None).unwrap().len(), 2);
    }

    #[test]
    fn a_crash_loses_no_ended_call_and_recovery_closes_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cdr.sqlite");
        let calls = [call(1), call(2), call(3)];
        {
            let mut store = SqliteCdrStore::open(&path).unwrap();
            for c in &calls {
                store.begin(c, t(1_717_000_000_000)).unwrap();
            }
            // A second begin (a re-sent 200 OK) changes nothing.
            store.begin(&calls[0], t(1_717_000_005_000)).unwrap();
            let updates: Vec<_> = calls
                .iter()
                .zip(1..)
                .map(|(c, k)| (c.key(), counters(k)))
                .collect();
            assert_eq!(
                store
                    .update_counters(t(1_717_000_010_000), &updates)
                    .unwrap(),
                3
            );
            let later: Vec<_> = calls
                .iter()
                .zip(11..)
                .map(|(c, k)| (c.key(), counters(k)))
                .collect();
            assert_eq!(
                store.update_counters(t(1_717_000_020_000), &later).unwrap(),
                3
            );
            let ended = Cdr {
                call: calls[1].clone(),
                sip_response_code: 200,
                start: Some(t(1_717_000_000_000)),
                stop: t(1_717_000_021_000),
                cause: TerminationCause::Bye { by: Party::Caller },
                counters: counters(13),
            };
            assert!(store.finish(&ended).unwrap());
            // An update after the end of a call does not bring it back.
            assert_eq!(
                store
                    .update_counters(t(1_717_000_022_000), &[(calls[1].key(), counters(14))])
                    .unwrap(),
                0
            );
            assert_eq!(store.active().unwrap().len(), 2);
            // The process dies: no close, no checkpoint, no destructor.
            std::mem::forget(store);
        }
        let mut store = SqliteCdrStore::open(&path).unwrap();
        let now = t(1_717_000_100_000);
        let recovered = store.recover(now).unwrap();
        assert_eq!(recovered.len(), 2);
        for (cdr, (c, k)) in recovered.iter().zip([(&calls[0], 11), (&calls[2], 13)]) {
            assert_eq!(&cdr.call, c);
            assert_eq!(cdr.cause, TerminationCause::Restart);
            assert_eq!(cdr.start, Some(t(1_717_000_000_000)));
            assert_eq!(cdr.stop, t(1_717_000_020_000), "the last update");
            assert_eq!(cdr.counters, counters(k));
            assert_eq!(cdr.sip_response_code, 200);
            assert_eq!(cdr.duration(), Duration::from_secs(20));
        }
        assert!(store.active().unwrap().is_empty());
        let all = store.list(None, None).unwrap();
        assert_eq!(all.len(), 3);
        let ended: Vec<_> = all
            .iter()
            .filter(|c| c.call.call_id == calls[1].call_id)
            .collect();
        assert_eq!(ended.len(), 1, "the finished call exactly once");
        assert_eq!(ended[0].cause, TerminationCause::Bye { by: Party::Caller });
        assert_eq!(ended[0].counters, counters(13));
        // A second recovery finds nothing more to do.
        assert!(store.recover(now).unwrap().is_empty());
        assert_eq!(store.list(None, None).unwrap().len(), 3);
    }

    /// The child side of the next test: finishes one call and dies by SIGKILL, with no chance
    /// to close, checkpoint or sync anything.
    const KILLED_CHILD_DB: &str = "SLUICE_TEST_CDR_KILLED_CHILD_DB";

    #[test]
    fn a_cdr_survives_the_process_being_killed_right_after_finish() {
        if let Some(path) = std::env::var_os(KILLED_CHILD_DB) {
            let mut store = SqliteCdrStore::open(&path).unwrap();
            let cdr = answered(7);
            store.begin(&cdr.call, t(1_717_000_000_123)).unwrap();
            store.begin(&call(8), t(1_717_000_000_500)).unwrap();
            assert!(store.finish(&cdr).unwrap());
            // SAFETY: kill(2) on our own pid; nothing after it runs.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
            unreachable!("SIGKILL");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cdr.sqlite");
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "cdr::tests::a_cdr_survives_the_process_being_killed_right_after_finish",
                "--test-threads=1",
            ])
            .env(KILLED_CHILD_DB, &path)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
        let mut store = SqliteCdrStore::open(&path).unwrap();
        let all = store.list(None, None).unwrap();
        assert_eq!(all.len(), 1, "{all:?}");
        assert_eq!(all[0], answered(7));
        let recovered = store.recover(t(1_717_000_100_000)).unwrap();
        assert_eq!(recovered.len(), 1);
        assert_eq!(recovered[0].call, call(8));
        assert_eq!(recovered[0].cause, TerminationCause::Restart);
    }

    #[test]
    fn the_wal_syncer_syncs_and_checkpoints_while_the_store_writes() {
        let (_dir, path, mut store) = open_temp();
        let syncer = WalSyncer::start(&path, Duration::from_millis(10)).unwrap();
        for n in 0..20 {
            let cdr = answered(n);
            store.begin(&cdr.call, t(1_717_000_000_123)).unwrap();
            assert!(store.finish(&cdr).unwrap());
        }
        drop(syncer);
        // The last round ran on drop: everything is in the database file proper.
        let (log, checkpointed): (i64, i64) = store
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert_eq!(log, checkpointed);
        assert_eq!(store.list(None, None).unwrap().len(), 20);
    }

    #[test]
    fn recovery_never_stops_a_call_after_now_nor_before_its_start() {
        let (_dir, _path, mut store) = open_temp();
        store.begin(&call(1), t(5_000_000)).unwrap();
        store
            .update_counters(t(9_000_000), &[(call(1).key(), counters(1))])
            .unwrap();
        store.begin(&call(2), t(5_000_000)).unwrap();
        let recovered = store.recover(t(7_000_000)).unwrap();
        assert_eq!(recovered[0].stop, t(7_000_000), "clamped to now");
        assert_eq!(recovered[1].stop, t(5_000_000), "never updated: its start");
        assert_eq!(recovered[1].counters, MediaCounters::default());
    }

    #[test]
    fn since_and_limit_filter_on_the_stop_time() {
        let (_dir, _path, mut store) = open_temp();
        for n in 0..5u32 {
            let cdr = Cdr {
                stop: t(1_000_000 + u64::from(n) * 1000),
                start: Some(t(900_000)),
                ..answered(n)
            };
            store.finish(&cdr).unwrap();
        }
        let ids = |v: Vec<Cdr>| v.into_iter().map(|c| c.call.from_tag).collect::<Vec<_>>();
        assert_eq!(
            ids(store.list(None, None).unwrap()),
            ["ft0", "ft1", "ft2", "ft3", "ft4"]
        );
        assert_eq!(
            ids(store.list(Some(t(1_002_000)), None).unwrap()),
            ["ft2", "ft3", "ft4"]
        );
        assert_eq!(
            ids(store.list(Some(t(1_002_001)), None).unwrap()),
            ["ft3", "ft4"]
        );
        assert_eq!(ids(store.list(None, Some(2)).unwrap()), ["ft3", "ft4"]);
        assert_eq!(
            ids(store.list(Some(t(1_000_500)), Some(10)).unwrap()).len(),
            4
        );
        assert!(store.list(Some(t(2_000_000)), None).unwrap().is_empty());
    }

    #[test]
    fn causes_round_trip() {
        let all = [
            (TerminationCause::Bye { by: Party::Caller }, "bye:caller"),
            (TerminationCause::Bye { by: Party::Callee }, "bye:callee"),
            (TerminationCause::MediaTimeout, "media-timeout"),
            (TerminationCause::MaxDuration, "max-duration"),
            (TerminationCause::Cancel, "cancel"),
            (TerminationCause::Failed(486), "failed:486"),
            (TerminationCause::Failed(503), "failed:503"),
            (TerminationCause::SignallingLost, "signalling-lost"),
            (TerminationCause::Restart, "restart"),
        ];
        for (cause, text) in all {
            assert_eq!(cause.to_string(), text);
            assert_eq!(text.parse::<TerminationCause>().unwrap(), cause);
        }
        for bad in [
            "",
            "bye",
            "bye:both",
            "failed:",
            "failed:abc",
            "failed:99",
            "failed:700",
            "BYE:caller",
        ] {
            assert!(bad.parse::<TerminationCause>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn unix_times_keep_milliseconds() {
        for ms in [0, 1, 999, 1_717_000_000_123, 4_102_444_800_999] {
            assert_eq!(from_unix(to_unix(t(ms))), t(ms));
        }
        let before = UNIX_EPOCH - Duration::from_millis(1500);
        assert_eq!(to_unix(before), -1.5);
        assert_eq!(from_unix(-1.5), before);
    }
}

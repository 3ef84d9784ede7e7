//! Registrations that survive a restart: the registrar's [`LocationStore`] in SQLite.
//!
//! `sluice run` keeps its bindings in a `location` table of the CDR database (one file to
//! place, back up and watch; the table is independent of the CDR schema and made if missing).
//!
//! The store is write-back, as Kamailio's usrloc is with `db_mode=2`: the bindings live in
//! memory (read from the table when it opens), and the AoRs a REGISTER changed are written to
//! the table in one transaction at most once every [`FLUSH_INTERVAL`], at each purge (every
//! 10 s in `sluice run`) and when the store is dropped. A REGISTER is answered from memory:
//! a SELECT and a commit per REGISTER took over a quarter of the SIP thread at 3,200
//! REGISTERs/s. So a crash may lose the last second of refreshes, which the phones send again
//! within their expiry. Writes are `synchronous=NORMAL` whatever `[cdr] durability` says, for
//! the same reason; the database's [`crate::cdr::WalSyncer`] syncs them with the CDRs every
//! `[cdr] sync_interval_ms`.
//!
//! # Time
//!
//! The proxy's `now` is a monotonic [`Duration`] (the transports' clock), which means nothing
//! once the process, or the host, restarts. The store converts at its boundary: it notes one
//! monotonic and one wall-clock reading when it opens, stores every time as wall-clock UNIX
//! milliseconds, and reads them back onto the current monotonic clock. So after a restart the
//! bindings whose wall-clock expiry has passed are expired (and purged on open), and the others
//! come back with the time they had left.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, Row};
use sluice_sip::registrar::{Binding, LocationStore, Source, Transport};

const SCHEMA: &str = "\
CREATE TABLE IF NOT EXISTS location (
    aor               TEXT    NOT NULL,  -- canonical address-of-record, sip:user@domain
    position          INTEGER NOT NULL,  -- the binding's place in the AoR's list
    contact           TEXT    NOT NULL,  -- the Contact URI (the Request-URI toward it)
    received          TEXT    NOT NULL,  -- where the REGISTER came from (after NAT), ip:port
    transport         TEXT    NOT NULL,  -- udp, tcp, tls, sctp, ws, wss
    local             TEXT,              -- the socket it arrived on
    expires           INTEGER NOT NULL,  -- UNIX milliseconds
    call_id           TEXT    NOT NULL,
    cseq              INTEGER NOT NULL,
    q                 INTEGER,           -- thousandths
    created           INTEGER NOT NULL,  -- UNIX milliseconds
    updated           INTEGER NOT NULL,  -- UNIX milliseconds
    user_agent        TEXT,
    PRIMARY KEY (aor, position)
);
CREATE INDEX IF NOT EXISTS location_expires ON location (expires);
";

/// The clocks as read once: monotonic time on the proxy's clock, and UNIX time.
#[derive(Debug, Clone, Copy)]
struct Clocks {
    monotonic: Duration,
    unix_ms: i128,
}

impl Clocks {
    fn new(monotonic: Duration, wall: SystemTime) -> Self {
        let unix_ms = match wall.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_millis() as i128,
            Err(e) => -(e.duration().as_millis() as i128),
        };
        Self { monotonic, unix_ms }
    }

    /// A time on the proxy's clock as UNIX milliseconds.
    fn unix_ms_of(self, t: Duration) -> i64 {
        let delta = t.as_millis() as i128 - self.monotonic.as_millis() as i128;
        i64::try_from(self.unix_ms + delta).unwrap_or(i64::MAX)
    }

    /// UNIX milliseconds on the proxy's clock (zero, long expired, for a time before its start).
    fn monotonic_from_unix_ms(self, ms: i64) -> Duration {
        let t = self.monotonic.as_millis() as i128 + (i128::from(ms) - self.unix_ms);
        u64::try_from(t).map_or(Duration::ZERO, Duration::from_millis)
    }
}

/// How long the table may lag behind the bindings in memory while REGISTERs keep coming.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// The bindings of the registrar, in memory and written back to a SQLite file.
pub struct SqliteLocationStore {
    conn: Connection,
    clocks: Clocks,
    bindings: HashMap<String, Vec<Binding>>,
    /// AoRs changed in memory and not yet in the table.
    dirty: HashSet<String>,
    last_flush: Instant,
}

impl std::fmt::Debug for SqliteLocationStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteLocationStore")
            .field("path", &self.conn.path())
            .finish()
    }
}

fn transport_name(t: Transport) -> &'static str {
    t.as_str()
}

fn transport_from(name: &str) -> Option<Transport> {
    Some(match name {
        "udp" => Transport::Udp,
        "tcp" => Transport::Tcp,
        "tls" => Transport::Tls,
        "sctp" => Transport::Sctp,
        "ws" => Transport::Ws,
        "wss" => Transport::Wss,
        _ => return None,
    })
}

impl SqliteLocationStore {
    /// Opens (creating if needed) the location table of the database at `path`, with
    /// `monotonic` and `wall` read at the same moment: `monotonic` on the clock the proxy's
    /// `now` comes from. Bindings expired by `wall` are deleted.
    pub fn open(
        path: &Path,
        monotonic: Duration,
        wall: SystemTime,
    ) -> Result<Self, rusqlite::Error> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        let mut store = Self {
            conn,
            clocks: Clocks::new(monotonic, wall),
            bindings: HashMap::new(),
            dirty: HashSet::new(),
            last_flush: Instant::now(),
        };
        store.purge_expired(monotonic)?;
        store.bindings = store.read_all()?;
        Ok(store)
    }

    /// How many bindings are held (live ones, once [`LocationStore::purge_expired`] ran).
    pub fn count(&self) -> Result<u64, rusqlite::Error> {
        Ok(self.bindings.values().map(|b| b.len() as u64).sum())
    }

    /// Every stored binding, by AoR.
    fn read_all(&self) -> Result<HashMap<String, Vec<Binding>>, rusqlite::Error> {
        let mut stmt = self.conn.prepare(
            "SELECT aor, contact, received, transport, local, expires, call_id, cseq, q, \
             created, updated, user_agent FROM location ORDER BY aor, position",
        )?;
        let rows = stmt.query_map([], |row| {
            Ok((row.get::<_, String>(0)?, self.binding_from_row(row)?))
        })?;
        let mut all: HashMap<String, Vec<Binding>> = HashMap::new();
        for row in rows {
            match row? {
                (aor, Ok(b)) => all.entry(aor).or_default().push(b),
                // Edited by hand, say: the phone registers again.
                (aor, Err(why)) => {
                    tracing::warn!(aor, why, "skipping a malformed stored registration")
                }
            }
        }
        Ok(all)
    }

    /// Writes every AoR changed since the last flush, in one transaction. On failure they stay
    /// to be written at the next one.
    pub fn flush(&mut self) -> Result<(), rusqlite::Error> {
        self.last_flush = Instant::now();
        if self.dirty.is_empty() {
            return Ok(());
        }
        let clocks = self.clocks;
        let tx = self.conn.transaction()?;
        {
            let mut delete = tx.prepare_cached("DELETE FROM location WHERE aor = ?1")?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO location (aor, position, contact, received, transport, local, \
                 expires, call_id, cseq, q, created, updated, user_agent) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )?;
            for aor in &self.dirty {
                delete.execute([aor])?;
                for (position, b) in self.bindings.get(aor).into_iter().flatten().enumerate() {
                    insert.execute(params![
                        aor,
                        i64::try_from(position).unwrap_or(i64::MAX),
                        b.contact,
                        b.received.addr.to_string(),
                        transport_name(b.received.transport),
                        b.received.local.map(|l| l.to_string()),
                        clocks.unix_ms_of(b.expires_at),
                        b.call_id,
                        i64::from(b.cseq),
                        b.q.map(i64::from),
                        clocks.unix_ms_of(b.created_at),
                        clocks.unix_ms_of(b.updated_at),
                        b.user_agent,
                    ])?;
                }
            }
        }
        tx.commit()?;
        self.dirty.clear();
        Ok(())
    }

    /// A row of `location` (`aor` first, then `contact` on), or why it is not a binding.
    fn binding_from_row(&self, row: &Row<'_>) -> rusqlite::Result<Result<Binding, String>> {
        let received: String = row.get(2)?;
        let transport: String = row.get(3)?;
        let local: Option<String> = row.get(4)?;
        let Ok(addr) = received.parse::<SocketAddr>() else {
            return Ok(Err(format!("received {received:?}")));
        };
        let Some(transport) = transport_from(&transport) else {
            return Ok(Err(format!("transport {transport:?}")));
        };
        let local = match local.map(|l| l.parse::<SocketAddr>()) {
            None => None,
            Some(Ok(l)) => Some(l),
            Some(Err(_)) => return Ok(Err("local address".into())),
        };
        let q: Option<i64> = row.get(8)?;
        Ok(Ok(Binding {
            contact: row.get(1)?,
            received: Source {
                addr,
                transport,
                local,
            },
            expires_at: self.clocks.monotonic_from_unix_ms(row.get(5)?),
            call_id: row.get(6)?,
            cseq: u32::try_from(row.get::<_, i64>(7)?).unwrap_or(0),
            q: q.and_then(|q| u16::try_from(q).ok()),
            created_at: self.clocks.monotonic_from_unix_ms(row.get(9)?),
            updated_at: self.clocks.monotonic_from_unix_ms(row.get(10)?),
            user_agent: row.get(11)?,
        }))
    }
}

impl LocationStore for SqliteLocationStore {
    type Error = rusqlite::Error;

    fn load(&self, aor: &str) -> Result<Vec<Binding>, Self::Error> {
        Ok(self.bindings.get(aor).cloned().unwrap_or_default())
    }

    fn replace(&mut self, aor: &str, bindings: Vec<Binding>) -> Result<(), Self::Error> {
        if bindings.is_empty() {
            self.bindings.remove(aor);
        } else {
            self.bindings.insert(aor.to_owned(), bindings);
        }
        self.dirty.insert(aor.to_owned());
        if self.last_flush.elapsed() >= FLUSH_INTERVAL {
            // The REGISTER is answered from memory either way; the table catches up later.
            if let Err(e) = self.flush() {
                tracing::warn!(error = %e, "writing registrations to the database");
            }
        }
        Ok(())
    }

    fn purge_expired(&mut self, now: Duration) -> Result<usize, Self::Error> {
        let mut purged = 0;
        self.bindings.retain(|_, list| {
            let before = list.len();
            list.retain(|b| b.expires_at > now);
            purged += before - list.len();
            !list.is_empty()
        });
        self.flush()?;
        let now = self.clocks.unix_ms_of(now);
        self.conn
            .prepare_cached("DELETE FROM location WHERE expires <= ?1")?
            .execute([now])?;
        Ok(purged)
    }
}

impl Drop for SqliteLocationStore {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::warn!(error = %e, "writing registrations to the database at exit");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sip::registrar::{
        ContactSpec, Contacts, RegisterRequest, Registrar, RegistrarConfig,
    };

    fn unix(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    fn binding(contact: &str, expires_at: Duration, now: Duration) -> Binding {
        Binding {
            contact: contact.into(),
            received: Source {
                addr: "198.51.100.10:40000".parse().unwrap(),
                transport: Transport::Udp,
                local: Some("192.0.2.1:5060".parse().unwrap()),
            },
            expires_at,
            call_id: "reg-1@10.0.0.10".into(),
            cseq: 7,
            q: Some(500),
            created_at: now,
            updated_at: now,
            user_agent: Some("baresip".into()),
        }
    }

    #[test]
    fn bindings_round_trip_in_order_and_replace_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cdr.sqlite");
        let now = Duration::from_secs(5000);
        let mut store = SqliteLocationStore::open(&path, now, unix(1_700_000_000)).unwrap();
        let a = binding(
            "sip:alice@10.0.0.10:5060",
            now + Duration::from_secs(3600),
            now,
        );
        let mut b = binding("sip:alice@[2001:db8::1]:5070;transport=tcp", now, now);
        b.received.transport = Transport::Tcp;
        b.received.local = None;
        b.q = None;
        b.user_agent = None;
        store
            .replace("sip:alice@example.com", vec![a.clone(), b.clone()])
            .unwrap();
        store
            .replace("sip:bob@example.com", vec![a.clone()])
            .unwrap();
        assert_eq!(
            store.load("sip:alice@example.com").unwrap(),
            vec![a.clone(), b]
        );
        store
            .replace("sip:alice@example.com", vec![a.clone()])
            .unwrap();
        assert_eq!(store.load("sip:alice@example.com").unwrap(), vec![a]);
        store.replace("sip:alice@example.com", Vec::new()).unwrap();
        assert!(store.load("sip:alice@example.com").unwrap().is_empty());
        assert_eq!(store.count().unwrap(), 1, "bob's stays");
        assert!(store.load("sip:nobody@example.com").unwrap().is_empty());
    }

    #[test]
    fn after_a_restart_only_unexpired_bindings_come_back_with_the_time_they_had_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cdr.sqlite");
        let config = RegistrarConfig::default();
        // First run: the monotonic clock reads 5000 s at UNIX time 1_700_000_000.
        let now = Duration::from_secs(5000);
        let store = SqliteLocationStore::open(&path, now, unix(1_700_000_000)).unwrap();
        let mut registrar = Registrar::new(config, store).unwrap();
        let register = |contact: &str, expires: u32| RegisterRequest {
            call_id: format!("reg-{contact}"),
            cseq: 1,
            contacts: Contacts::List(vec![ContactSpec::new(contact).with_expires(expires)]),
            expires: None,
            source: Source {
                addr: "198.51.100.10:40000".parse().unwrap(),
                transport: Transport::Udp,
                local: None,
            },
            user_agent: None,
        };
        registrar
            .register(
                now,
                "sip:alice@example.com",
                &register("sip:a@10.0.0.1", 3600),
            )
            .unwrap();
        registrar
            .register(now, "sip:bob@example.com", &register("sip:b@10.0.0.2", 120))
            .unwrap();
        drop(registrar);

        // The host rebooted: 10 minutes later by the wall clock, and the monotonic clock
        // starts again near zero.
        let later = Duration::from_secs(30);
        let store = SqliteLocationStore::open(&path, later, unix(1_700_000_600)).unwrap();
        assert_eq!(store.count().unwrap(), 1, "bob's expired binding is purged");
        let mut registrar = Registrar::new(config, store).unwrap();
        let alice = registrar.bindings(later, "sip:alice@example.com").unwrap();
        assert_eq!(alice.len(), 1);
        assert_eq!(alice[0].binding.contact, "sip:a@10.0.0.1");
        assert_eq!(alice[0].expires_in, 3000, "an hour less the 10 minutes");
        assert_eq!(
            alice[0].binding.received.addr,
            "198.51.100.10:40000".parse::<SocketAddr>().unwrap()
        );
        assert!(registrar
            .bindings(later, "sip:bob@example.com")
            .unwrap()
            .is_empty());
        // And it expires on the new clock when the hour is up.
        assert!(registrar
            .bindings(later + Duration::from_secs(3000), "sip:alice@example.com")
            .unwrap()
            .is_empty());
        registrar
            .purge_expired(later + Duration::from_secs(3000))
            .unwrap();
        assert_eq!(registrar.store().count().unwrap(), 0);
    }

    #[test]
    fn malformed_rows_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cdr.sqlite");
        let now = Duration::from_secs(10);
        let mut store = SqliteLocationStore::open(&path, now, unix(1_700_000_000)).unwrap();
        let good = binding("sip:a@10.0.0.1", now + Duration::from_secs(60), now);
        store
            .replace("sip:alice@example.com", vec![good.clone(), good.clone()])
            .unwrap();
        store.flush().unwrap();
        store
            .conn
            .execute(
                "UPDATE location SET received = 'nowhere' WHERE position = 1",
                [],
            )
            .unwrap();
        drop(store);
        let store = SqliteLocationStore::open(&path, now, unix(1_700_000_000)).unwrap();
        assert_eq!(store.load("sip:alice@example.com").unwrap(), vec![good]);
    }

    #[test]
    fn the_table_catches_up_at_the_next_flush_and_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cdr.sqlite");
        let now = Duration::from_secs(10);
        let in_table = |path: &Path| -> i64 {
            Connection::open(path)
                .unwrap()
                .query_row("SELECT COUNT(*) FROM location", [], |r| r.get(0))
                .unwrap()
        };
        let mut store = SqliteLocationStore::open(&path, now, unix(1_700_000_000)).unwrap();
        let a = binding("sip:a@10.0.0.1", now + Duration::from_secs(60), now);
        store
            .replace("sip:alice@example.com", vec![a.clone()])
            .unwrap();
        assert_eq!(
            store.load("sip:alice@example.com").unwrap(),
            vec![a.clone()]
        );
        assert_eq!(in_table(&path), 0, "written back, not through");
        store.flush().unwrap();
        assert_eq!(in_table(&path), 1);
        store
            .replace("sip:bob@example.com", vec![a.clone()])
            .unwrap();
        store.replace("sip:alice@example.com", Vec::new()).unwrap();
        drop(store);
        assert_eq!(in_table(&path), 1, "bob's in, alice's out, at drop");
        let store = SqliteLocationStore::open(&path, now, unix(1_700_000_000)).unwrap();
        assert_eq!(store.load("sip:bob@example.com").unwrap(), vec![a]);
        assert!(store.load("sip:alice@example.com").unwrap().is_empty());
    }
}

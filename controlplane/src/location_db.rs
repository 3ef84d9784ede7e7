//! Registrations that survive a restart: the registrar's [`LocationStore`] in SQLite.
//!
//! `sluice run` keeps its bindings in a `location` table of the CDR database (one file to
//! place, back up and watch; the table is independent of the CDR schema and made if missing).
//! A REGISTER is one transaction replacing the AoR's bindings, with cached statements. Writes
//! are `synchronous=NORMAL` whatever `[cdr] durability` says: a power cut may lose the last
//! refreshes, which the phones send again within their expiry, and an fsync per REGISTER would
//! cost more than that is worth. The database's [`crate::cdr::WalSyncer`] syncs them with the
//! CDRs every `[cdr] sync_interval_ms`, which bounds that loss too.
//!
//! # Time
//!
//! The proxy's `now` is a monotonic [`Duration`] (the transports' clock), which means nothing
//! once the process, or the host, restarts. The store converts at its boundary: it notes one
//! monotonic and one wall-clock reading when it opens, stores every time as wall-clock UNIX
//! milliseconds, and reads them back onto the current monotonic clock. So after a restart the
//! bindings whose wall-clock expiry has passed are expired (and purged on open), and the others
//! come back with the time they had left.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// The bindings of the registrar, in a SQLite file.
pub struct SqliteLocationStore {
    conn: Connection,
    clocks: Clocks,
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
        };
        store.purge_expired(monotonic)?;
        Ok(store)
    }

    /// How many bindings are stored (live ones, once [`LocationStore::purge_expired`] ran).
    pub fn count(&self) -> Result<u64, rusqlite::Error> {
        self.conn
            .query_row("SELECT COUNT(*) FROM location", [], |r| r.get::<_, i64>(0))
            .map(|n| u64::try_from(n).unwrap_or(0))
    }

    /// A row of `location` (from `contact` on), or why it is not a binding.
    fn binding_from_row(&self, row: &Row<'_>) -> rusqlite::Result<Result<Binding, String>> {
        let received: String = row.get(1)?;
        let transport: String = row.get(2)?;
        let local: Option<String> = row.get(3)?;
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
        let q: Option<i64> = row.get(7)?;
        Ok(Ok(Binding {
            contact: row.get(0)?,
            received: Source {
                addr,
                transport,
                local,
            },
            expires_at: self.clocks.monotonic_from_unix_ms(row.get(4)?),
            call_id: row.get(5)?,
            cseq: u32::try_from(row.get::<_, i64>(6)?).unwrap_or(0),
            q: q.and_then(|q| u16::try_from(q).ok()),
            created_at: self.clocks.monotonic_from_unix_ms(row.get(8)?),
            updated_at: self.clocks.monotonic_from_unix_ms(row.get(9)?),
            user_agent: row.get(10)?,
        }))
    }
}

impl LocationStore for SqliteLocationStore {
    type Error = rusqlite::Error;

    fn load(&self, aor: &str) -> Result<Vec<Binding>, Self::Error> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT contact, received, transport, local, expires, call_id, cseq, q, created, \
             updated, user_agent FROM location WHERE aor = ?1 ORDER BY position",
        )?;
        let rows = stmt.query_map([aor], |row| self.binding_from_row(row))?;
        let mut bindings = Vec::new();
        for row in rows {
            match row? {
                Ok(b) => bindings.push(b),
                // Edited by hand, say: the phone registers again.
                Err(why) => tracing::warn!(aor, why, "skipping a malformed stored registration"),
            }
        }
        Ok(bindings)
    }

    fn replace(&mut self, aor: &str, bindings: Vec<Binding>) -> Result<(), Self::Error> {
        let clocks = self.clocks;
        let tx = self.conn.transaction()?;
        tx.prepare_cached("DELETE FROM location WHERE aor = ?1")?
            .execute([aor])?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO location (aor, position, contact, received, transport, local, \
                 expires, call_id, cseq, q, created, updated, user_agent) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )?;
            for (position, b) in bindings.iter().enumerate() {
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
        tx.commit()
    }

    fn purge_expired(&mut self, now: Duration) -> Result<usize, Self::Error> {
        let now = self.clocks.unix_ms_of(now);
        self.conn
            .prepare_cached("DELETE FROM location WHERE expires <= ?1")?
            .execute([now])
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
        store
            .conn
            .execute(
                "UPDATE location SET received = 'nowhere' WHERE position = 1",
                [],
            )
            .unwrap();
        assert_eq!(store.load("sip:alice@example.com").unwrap(), vec![good]);
    }
}

//! The RADIUS outbox: a table in the CDR database holding every accounting record not yet
//! acknowledged by a RADIUS server, filled by SQLite triggers on the CDR tables.
//!
//! Why triggers: a row goes into the outbox in the very transaction that journals the answered
//! call (`active_calls`, a Start), stores its counters (an Interim-Update, when enabled) or
//! writes its CDR (`cdrs`, a Stop, or Failed for a call never answered). A crash can then lose
//! neither the CDR's RADIUS record nor leave a record without its CDR, and the CDR store itself
//! ([`crate::cdr`]) needs no change. Each row is a copy of what the record needs, so it can be
//! sent long after its call has left `active_calls`.
//!
//! The outbox is bounded: past `limit` rows the oldest are dropped by the same trigger (their
//! CDRs stay in `cdrs`, the durable record; the sender logs how many it never sent). The
//! triggers are made anew on every start with RADIUS (the limit and the interim interval may
//! have changed) and dropped on a start without RADIUS, so nothing fills an outbox no one reads.

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, Row};

use super::attributes::{AcctRecord, RecordKind};
use crate::cdr::{from_unix, CallInfo, DirectionCounters, MediaCounters, TerminationCause};

/// The columns `cdrs`, `active_calls` and the outbox share, copied by the triggers.
const SHARED_COLUMNS: [&str; 19] = [
    "AcctSessionId",
    "SipFromTag",
    "SipToTag",
    "SipFromURI",
    "SipToURI",
    "CanonicalURI",
    "SourceIP",
    "BillingParty",
    "SipMethod",
    "SipResponseCode",
    "AcctStartTime",
    "AcctInputOctets",
    "AcctOutputOctets",
    "AcctInputPackets",
    "AcctOutputPackets",
    "Gateway",
    "Carrier",
    "NodeName",
    "SipUserAgents",
];

/// The outbox. `seq` is AUTOINCREMENT so that it never goes back, even when the table empties:
/// a gap between the last record sent and the next one is then records the bound dropped.
const OUTBOX_SCHEMA: &str = "\
CREATE TABLE IF NOT EXISTS radius_outbox (
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,
    Kind              TEXT    NOT NULL,  -- start, interim, stop, failed
    EventTime         REAL    NOT NULL,  -- answer, counters' reading, or end
    AcctTerminateCause TEXT,
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
    AcctStartTime     REAL,
    AcctInputOctets   INTEGER NOT NULL,
    AcctOutputOctets  INTEGER NOT NULL,
    AcctInputPackets  INTEGER NOT NULL,
    AcctOutputPackets INTEGER NOT NULL,
    Gateway           TEXT,
    Carrier           TEXT,
    NodeName          TEXT    NOT NULL,
    SipUserAgents     TEXT
);";

/// Whether `table` has `column` (an outbox made before the CDR schema's version 2 has no
/// `SipUserAgents`).
fn has_column(conn: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2)",
        params![table, column],
        |r| r.get(0),
    )
}

const TRIGGERS: [&str; 3] = ["radius_start", "radius_interim", "radius_stop"];

/// What went wrong with the outbox.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("the RADIUS outbox in {path}: {source}")]
    Sqlite {
        path: String,
        source: rusqlite::Error,
    },
}

/// The outbox of one CDR database, on a connection of its own (the sender's thread).
pub struct Outbox {
    conn: Connection,
    path: String,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").field("path", &self.path).finish()
    }
}

fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // Deleting sent rows: losing the last deletions to a power cut only sends those records
    // again, which RADIUS servers take (accounting is at least once); no fsync per answer.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

fn trigger_sql(limit: u64, interim: Option<Duration>) -> String {
    let columns = SHARED_COLUMNS.join(", ");
    let new = SHARED_COLUMNS
        .iter()
        .map(|c| format!("NEW.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let bound = format!(
        "DELETE FROM radius_outbox WHERE seq <= (SELECT MAX(seq) FROM radius_outbox) - {limit};"
    );
    let mut sql = format!(
        "CREATE TRIGGER radius_start AFTER INSERT ON active_calls BEGIN
            INSERT INTO radius_outbox (Kind, EventTime, AcctTerminateCause, {columns})
            VALUES ('start', NEW.AcctStartTime, NULL, {new});
            {bound}
        END;
        CREATE TRIGGER radius_stop AFTER INSERT ON cdrs BEGIN
            INSERT INTO radius_outbox (Kind, EventTime, AcctTerminateCause, {columns})
            VALUES (CASE WHEN NEW.AcctStartTime IS NULL THEN 'failed' ELSE 'stop' END,
                    NEW.AcctStopTime, NEW.AcctTerminateCause, {new});
            {bound}
        END;"
    );
    if let Some(every) = interim {
        // One Interim-Update each time a call's counters are stored past another multiple of
        // the interval since its answer.
        let every = every.as_secs_f64();
        sql.push_str(&format!(
            "CREATE TRIGGER radius_interim AFTER UPDATE OF LastUpdateTime ON active_calls
             WHEN CAST((NEW.LastUpdateTime - NEW.AcctStartTime) / {every} AS INTEGER)
                > CAST((OLD.LastUpdateTime - OLD.AcctStartTime) / {every} AS INTEGER)
             BEGIN
                INSERT INTO radius_outbox (Kind, EventTime, AcctTerminateCause, {columns})
                VALUES ('interim', NEW.LastUpdateTime, NULL, {new});
                {bound}
             END;"
        ));
    }
    sql
}

fn drop_triggers(conn: &Connection) -> rusqlite::Result<()> {
    for t in TRIGGERS {
        conn.execute_batch(&format!("DROP TRIGGER IF EXISTS {t};"))?;
    }
    Ok(())
}

impl Outbox {
    /// Opens the outbox of the CDR database at `path` (which must exist, with its schema),
    /// creating the table if needed and the triggers anew with the bound `limit` and, if
    /// given, Interim-Updates every `interim`.
    pub fn open(path: &Path, limit: u64, interim: Option<Duration>) -> Result<Self, OutboxError> {
        let name = path.display().to_string();
        let err = |source| OutboxError::Sqlite {
            path: name.clone(),
            source,
        };
        let mut conn = connect(path).map_err(err)?;
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        tx.execute_batch(OUTBOX_SCHEMA).map_err(err)?;
        if !has_column(&tx, "radius_outbox", "SipUserAgents").map_err(err)? {
            tx.execute_batch("ALTER TABLE radius_outbox ADD COLUMN SipUserAgents TEXT;")
                .map_err(err)?;
        }
        drop_triggers(&tx).map_err(err)?;
        tx.execute_batch(&trigger_sql(limit, interim))
            .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(Self { conn, path: name })
    }

    /// Stops filling the outbox of the database at `path` (RADIUS is not configured): drops the
    /// triggers. Returns how many records are left in it, unsent.
    pub fn disable(path: &Path) -> Result<u64, OutboxError> {
        let err = |source| OutboxError::Sqlite {
            path: path.display().to_string(),
            source,
        };
        let conn = connect(path).map_err(err)?;
        drop_triggers(&conn).map_err(err)?;
        let exists: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'radius_outbox')",
                [],
                |r| r.get(0),
            )
            .map_err(err)?;
        if !exists {
            return Ok(0);
        }
        conn.query_row("SELECT COUNT(*) FROM radius_outbox", [], |r| {
            r.get::<_, i64>(0)
        })
        .map(|n| n.max(0) as u64)
        .map_err(err)
    }

    fn err(&self, source: rusqlite::Error) -> OutboxError {
        OutboxError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// How many records wait.
    pub fn len(&self) -> Result<u64, OutboxError> {
        self.conn
            .query_row("SELECT COUNT(*) FROM radius_outbox", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n.max(0) as u64)
            .map_err(|e| self.err(e))
    }

    /// The oldest `max` records, oldest first. A row that does not make a record (edited by
    /// hand, say) is logged and dropped.
    pub fn head(&mut self, max: usize) -> Result<Vec<AcctRecord>, OutboxError> {
        let rows: Vec<Result<AcctRecord, (i64, String)>> = {
            let mut stmt = self
                .conn
                .prepare_cached(&format!(
                    "SELECT seq, Kind, EventTime, AcctTerminateCause, {} FROM radius_outbox \
                     ORDER BY seq LIMIT ?1",
                    SHARED_COLUMNS.join(", ")
                ))
                .map_err(|e| self.err(e))?;
            let rows = stmt
                .query_map([i64::try_from(max).unwrap_or(i64::MAX)], record_from_row)
                .map_err(|e| self.err(e))?;
            rows.collect::<Result<_, _>>().map_err(|e| self.err(e))?
        };
        let mut records = Vec::with_capacity(rows.len());
        let mut bad = Vec::new();
        for row in rows {
            match row {
                Ok(r) => records.push(r),
                Err((seq, why)) => {
                    tracing::error!(seq, why, "dropping a malformed RADIUS outbox row");
                    bad.push(seq);
                }
            }
        }
        if !bad.is_empty() {
            self.remove(&bad)?;
        }
        Ok(records)
    }

    /// Removes the records a server acknowledged, in one transaction.
    pub fn remove(&mut self, seqs: &[i64]) -> Result<(), OutboxError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let err = |source| OutboxError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut stmt = tx
                .prepare_cached("DELETE FROM radius_outbox WHERE seq = ?1")
                .map_err(err)?;
            for seq in seqs {
                stmt.execute(params![seq]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }
}

fn count(row: &Row<'_>, i: usize) -> rusqlite::Result<u64> {
    Ok(u64::try_from(row.get::<_, i64>(i)?).unwrap_or(0))
}

/// A row selected by [`Outbox::head`]: `seq, Kind, EventTime, AcctTerminateCause`, then
/// [`SHARED_COLUMNS`].
fn record_from_row(row: &Row<'_>) -> rusqlite::Result<Result<AcctRecord, (i64, String)>> {
    let seq: i64 = row.get(0)?;
    let kind: String = row.get(1)?;
    let event: f64 = row.get(2)?;
    let cause: Option<String> = row.get(3)?;
    let c = 4;
    let source: String = row.get(c + 6)?;
    let code: i64 = row.get(c + 9)?;
    let start: Option<f64> = row.get(c + 10)?;
    let call = CallInfo {
        call_id: row.get(c)?,
        from_tag: row.get(c + 1)?,
        to_tag: row.get(c + 2)?,
        from_uri: row.get(c + 3)?,
        to_uri: row.get(c + 4)?,
        canonical_uri: row.get(c + 5)?,
        source_ip: match source.parse() {
            Ok(ip) => ip,
            Err(_) => return Ok(Err((seq, format!("SourceIP {source:?}")))),
        },
        billing_party: row.get(c + 7)?,
        user_agents: row.get(c + 18)?,
        sip_method: row.get(c + 8)?,
        gateway: row.get(c + 15)?,
        carrier: row.get(c + 16)?,
        node: row.get(c + 17)?,
    };
    let counters = MediaCounters {
        from_caller: DirectionCounters {
            bytes: count(row, c + 11)?,
            packets: count(row, c + 13)?,
        },
        from_callee: DirectionCounters {
            bytes: count(row, c + 12)?,
            packets: count(row, c + 14)?,
        },
    };
    let Some(kind) = RecordKind::from_name(&kind) else {
        return Ok(Err((seq, format!("Kind {kind:?}"))));
    };
    let cause = match cause.map(|c| c.parse::<TerminationCause>()) {
        None => None,
        Some(Ok(cause)) => Some(cause),
        Some(Err(e)) => return Ok(Err((seq, e.to_string()))),
    };
    let Ok(sip_response_code) = u16::try_from(code) else {
        return Ok(Err((seq, format!("SipResponseCode {code}"))));
    };
    Ok(Ok(AcctRecord {
        seq,
        kind,
        call,
        sip_response_code,
        start: start.map(from_unix),
        event: from_unix(event),
        cause,
        counters,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdr::{Cdr, CdrStore, Party, SqliteCdrStore};
    use std::time::{SystemTime, UNIX_EPOCH};

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
            billing_party: None,
            user_agents: Some("baresip v3.10.1 (x86_64/linux) + Asterisk PBX 20".into()),
            canonical_uri: "sip:+4930123456@198.51.100.7:5060".into(),
            sip_method: "INVITE".into(),
            gateway: None,
            carrier: None,
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
                packets: 49 * k,
                bytes: 8428 * k,
            },
        }
    }

    fn setup(limit: u64, interim: Option<Duration>) -> (tempfile::TempDir, SqliteCdrStore, Outbox) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cdr.sqlite");
        let store = SqliteCdrStore::open(&path).unwrap();
        let outbox = Outbox::open(&path, limit, interim).unwrap();
        (dir, store, outbox)
    }

    #[test]
    fn answered_calls_queue_a_start_and_a_stop_failed_ones_a_failed() {
        let (_dir, mut store, mut outbox) = setup(100, None);
        store.begin(&call(1), t(1_000_000)).unwrap();
        // A second begin (a re-sent 200 OK) is ignored by the store, so queues nothing.
        store.begin(&call(1), t(1_000_500)).unwrap();
        store
            .update_counters(t(1_030_000), &[(call(1).key(), counters(1))])
            .unwrap();
        let stop = Cdr {
            call: call(1),
            sip_response_code: 200,
            start: Some(t(1_000_000)),
            stop: t(1_061_234),
            cause: TerminationCause::Bye { by: Party::Caller },
            counters: counters(2),
        };
        store.finish(&stop).unwrap();
        // A retried finish writes no CDR, so queues nothing.
        store.finish(&stop).unwrap();
        let failed = Cdr {
            call: call(2),
            sip_response_code: 486,
            start: None,
            stop: t(1_070_000),
            cause: TerminationCause::Failed(486),
            counters: MediaCounters::default(),
        };
        store.finish(&failed).unwrap();
        let records = outbox.head(10).unwrap();
        let kinds: Vec<_> = records.iter().map(|r| r.kind).collect();
        assert_eq!(
            kinds,
            [RecordKind::Start, RecordKind::Stop, RecordKind::Failed],
            "no interim without an interval"
        );
        let (start, stop_r, failed_r) = (&records[0], &records[1], &records[2]);
        assert_eq!(start.call, call(1));
        assert_eq!(start.event, t(1_000_000));
        assert_eq!(start.start, Some(t(1_000_000)));
        assert_eq!(start.counters, MediaCounters::default());
        assert_eq!(start.cause, None);
        assert_eq!(stop_r.event, t(1_061_234));
        assert_eq!(stop_r.counters, counters(2));
        assert_eq!(
            stop_r.cause,
            Some(TerminationCause::Bye { by: Party::Caller })
        );
        assert_eq!(stop_r.sip_response_code, 200);
        assert_eq!(failed_r.start, None);
        assert_eq!(failed_r.sip_response_code, 486);
        assert!(start.seq < stop_r.seq && stop_r.seq < failed_r.seq);
        outbox.remove(&[start.seq, stop_r.seq]).unwrap();
        assert_eq!(outbox.len().unwrap(), 1);
        assert_eq!(outbox.head(10).unwrap()[0].kind, RecordKind::Failed);
    }

    #[test]
    fn an_outbox_from_before_the_user_agents_gets_the_column_and_keeps_its_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cdr.sqlite");
        let mut store = SqliteCdrStore::open(&path).unwrap();
        {
            // The outbox as the first RADIUS build made it, with one record waiting.
            let old_schema = OUTBOX_SCHEMA.replace(",\n    SipUserAgents     TEXT\n", "\n");
            assert!(!old_schema.contains("SipUserAgents"));
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(&old_schema).unwrap();
            conn.execute(
                "INSERT INTO radius_outbox (Kind, EventTime, AcctSessionId, SipFromTag, \
                 SipFromURI, SipToURI, CanonicalURI, SourceIP, SipMethod, SipResponseCode, \
                 AcctInputOctets, AcctOutputOctets, AcctInputPackets, AcctOutputPackets, \
                 NodeName) VALUES ('start', 1000.0, 'old', 'ft', 'sip:a@x', 'sip:b@y', \
                 'sip:b@y', '192.0.2.1', 'INVITE', 200, 0, 0, 0, 0, 'sluice-1')",
                [],
            )
            .unwrap();
        }
        let mut outbox = Outbox::open(&path, 100, None).unwrap();
        store.begin(&call(1), t(2_000_000)).unwrap();
        let records = outbox.head(10).unwrap();
        assert_eq!(records.len(), 2, "{records:?}");
        assert_eq!(records[0].call.call_id, "old");
        assert_eq!(records[0].call.user_agents, None);
        assert_eq!(records[1].call, call(1), "with its user agents");
        // Opening again finds the column there.
        drop(outbox);
        Outbox::open(&path, 100, None).unwrap();
    }

    #[test]
    fn interim_updates_follow_the_interval() {
        let (_dir, mut store, mut outbox) = setup(100, Some(Duration::from_secs(30)));
        store.begin(&call(1), t(1_000_000)).unwrap();
        // The journal stores counters every 10 s; an interim at 30 s and at 60 s.
        for (s, k) in [(10, 1), (20, 2), (30, 3), (40, 4), (50, 5), (61, 6)] {
            store
                .update_counters(t(1_000_000 + s * 1000), &[(call(1).key(), counters(k))])
                .unwrap();
        }
        let records = outbox.head(10).unwrap();
        let interim: Vec<_> = records
            .iter()
            .filter(|r| r.kind == RecordKind::Interim)
            .map(|r| (r.event, r.counters))
            .collect();
        assert_eq!(
            interim,
            [(t(1_030_000), counters(3)), (t(1_061_000), counters(6))]
        );
    }

    #[test]
    fn the_bound_drops_the_oldest_and_the_cdrs_stay() {
        let (_dir, mut store, mut outbox) = setup(3, None);
        for n in 0..5 {
            store.begin(&call(n), t(1_000_000)).unwrap();
        }
        let records = outbox.head(10).unwrap();
        assert_eq!(records.len(), 3);
        let ids: Vec<_> = records.iter().map(|r| r.call.call_id.clone()).collect();
        assert_eq!(ids, [call(2).call_id, call(3).call_id, call(4).call_id]);
        assert_eq!(store.active().unwrap().len(), 5, "the journal is untouched");
    }

    #[test]
    fn without_radius_nothing_is_queued_and_the_backlog_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cdr.sqlite");
        let mut store = SqliteCdrStore::open(&path).unwrap();
        assert_eq!(Outbox::disable(&path).unwrap(), 0, "no outbox yet");
        let outbox = Outbox::open(&path, 100, None).unwrap();
        store.begin(&call(1), t(1_000_000)).unwrap();
        drop(outbox);
        assert_eq!(Outbox::disable(&path).unwrap(), 1);
        store.begin(&call(2), t(1_000_000)).unwrap();
        assert_eq!(Outbox::disable(&path).unwrap(), 1, "no trigger any more");
        // Opening again with RADIUS brings the triggers back, idempotently.
        let outbox = Outbox::open(&path, 100, None).unwrap();
        let outbox2 = Outbox::open(&path, 100, None).unwrap();
        store.begin(&call(3), t(1_000_000)).unwrap();
        assert_eq!(outbox.len().unwrap(), 2);
        drop(outbox2);
    }

    #[test]
    fn a_malformed_row_is_dropped_not_sent() {
        let (_dir, mut store, mut outbox) = setup(100, None);
        store.begin(&call(1), t(1_000_000)).unwrap();
        store.begin(&call(2), t(1_000_000)).unwrap();
        outbox
            .conn
            .execute(
                "UPDATE radius_outbox SET SourceIP = 'nowhere' WHERE AcctSessionId = ?1",
                [&call(1).call_id],
            )
            .unwrap();
        let records = outbox.head(10).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].call, call(2));
        assert_eq!(outbox.len().unwrap(), 1);
    }
}

//! Snapshots of shards: what bounds a take-over's replay. The node serving a shard writes,
//! every [`ClusterConfig::snapshot_after`] entries, the shard's records as its store holds
//! them at one applied sequence `N` into the object `sNNN.<N>` of the object store
//! `gears_<name>_snapshots`, then removes the shard's log entries before `N`
//! ([`super::log::ShardLog::purge_below`]).
//!
//! Why a take-over finds the right snapshot without any pointer: a purge below `N` keeps the
//! entry `N`, so a shard's first remaining entry names the snapshot that holds everything
//! before it; and every entry carries the sequence its append expected to be the subject's
//! last, so a replay that meets an entry whose predecessor is missing knows entries were
//! purged, and loads the snapshot named by that entry (or, mid-replay, starts again). Any
//! node's snapshot is right: its store at applied sequence `N` is exactly the log up to `N`
//! (it applies only what JetStream acknowledged, in order), so a snapshot written late by a
//! node that no longer serves the shard is still true, and purges only ever move forward.
//!
//! Format 1 of an object, all integers big-endian: the format (1), the shard (u16), the
//! sequence (u64); then one record per write: its space's stored code (u8, as in the log),
//! the key's length (u32) and bytes, the value's length (u32) and bytes; then 0 and the
//! number of records (u64). The object store checks the whole object's SHA-256.

use std::time::Duration;

use async_nats::jetstream::{self, object_store};
use bytes::Bytes;
use futures::TryStreamExt;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::Error;
use crate::store::{Content, Space, Store};

use super::log::{LogWrite, space_code};
use super::{ClusterConfig, nats_error};

/// The stored format of a snapshot, its first byte.
const SNAPSHOT_V1: u8 = 1;

/// The space code that ends the records (no space has it).
const END: u8 = 0;

/// The records are handed to the upload in pieces of about this size.
const PIECE: usize = 256 * 1024;

/// Longest value a snapshot record may claim: a damaged length must not allocate at will.
const MAX_VALUE: u32 = 256 * 1024 * 1024;

/// The object of `shard`'s snapshot at sequence `seq`.
fn object_name(shard: u16, seq: u64) -> String {
    format!("s{shard:03}.{seq}")
}

/// The shard and sequence of a snapshot's object name (`None`: not a snapshot's name).
fn parse_object_name(name: &str) -> Option<(u16, u64)> {
    let (shard, seq) = name.strip_prefix('s')?.split_once('.')?;
    Some((shard.parse().ok()?, seq.parse().ok()?))
}

/// The snapshots of a cluster's shards: an object store bucket.
pub(crate) struct Snapshots {
    objects: object_store::ObjectStore,
}

/// A snapshot written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Written {
    /// The applied sequence it holds the shard at.
    pub(crate) seq: u64,
    pub(crate) records: u64,
}

impl Snapshots {
    /// Opens (creating it when missing) the bucket `gears_<name>_snapshots`.
    pub(crate) async fn open(
        js: &jetstream::Context,
        config: &ClusterConfig,
    ) -> Result<Snapshots, Error> {
        let bucket = object_store::Config {
            bucket: config.bucket("snapshots"),
            num_replicas: config.replicas,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        };
        let name = bucket.bucket.clone();
        let objects = super::until_ready(&format!("create the bucket {name}"), || async {
            match js.create_object_store(bucket.clone()).await {
                Ok(store) => Ok(store),
                Err(created) => js.get_object_store(&name).await.map_err(|_| created),
            }
        })
        .await?;
        Ok(Snapshots { objects })
    }

    /// Writes a snapshot of `shard` as `store` holds it now, unless its applied sequence is
    /// not above `above` (then `None`: nothing new to hold).
    pub(crate) async fn write(
        &self,
        store: Store,
        shard: u16,
        above: u64,
    ) -> Result<Option<Written>, Error> {
        let (seq_tx, seq_rx) = tokio::sync::oneshot::channel();
        let (pieces, received) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
        // The store is read on a blocking thread, one piece at a time ahead of the upload.
        let reading = tokio::task::spawn_blocking(move || {
            let mut encoder = Encoder::default();
            let mut seq_tx = Some(seq_tx);
            let mut wanted = false;
            let mut delivered = true;
            let read = store.shard_contents(shard, &mut |content| match content {
                Content::Applied(seq) => {
                    wanted = seq > above;
                    if let Some(tx) = seq_tx.take() {
                        let _ = tx.send(seq);
                    }
                    encoder.header(shard, seq);
                    wanted
                }
                Content::Record(space, key, value) => {
                    encoder.record(space_code(space), key, value);
                    if encoder.bytes.len() >= PIECE {
                        delivered = pieces.blocking_send(Ok(encoder.take())).is_ok();
                    }
                    delivered
                }
            });
            match read {
                Ok(()) if wanted && delivered => {
                    encoder.end();
                    let records = encoder.records;
                    delivered = pieces.blocking_send(Ok(encoder.take())).is_ok();
                    Ok(delivered.then_some(records))
                }
                Ok(()) => Ok(None),
                Err(e) => {
                    let _ = pieces.blocking_send(Err(std::io::Error::other(e.to_string())));
                    Err(e)
                }
            }
        });
        let read_error = |e: tokio::task::JoinError| {
            Error::Cluster(format!(
                "reading shard {shard} for its snapshot failed: {e}"
            ))
        };
        let Ok(seq) = seq_rx.await else {
            // The store failed before it named the sequence.
            reading.await.map_err(read_error)?.map_err(Error::Storage)?;
            return Ok(None);
        };
        if seq <= above {
            drop(received);
            reading.await.map_err(read_error)?.map_err(Error::Storage)?;
            return Ok(None);
        }
        let name = object_name(shard, seq);
        let stream = futures::stream::unfold(received, |mut received| async move {
            received.recv().await.map(|piece| (piece, received))
        });
        let mut reader = tokio_util::io::StreamReader::new(Box::pin(stream));
        let put = self.objects.put(name.as_str(), &mut reader).await;
        drop(reader);
        let records = reading.await.map_err(read_error)?.map_err(Error::Storage)?;
        put.map_err(|e| nats_error(&format!("write the snapshot {name}"), e))?;
        match records {
            Some(records) => Ok(Some(Written { seq, records })),
            None => Err(Error::Cluster(format!(
                "the snapshot {name} was not written whole"
            ))),
        }
    }

    /// The snapshot of `shard` at `seq`, to read its records.
    pub(crate) async fn read(
        &self,
        shard: u16,
        seq: u64,
    ) -> Result<SnapshotReader<impl AsyncRead + Unpin + use<>>, Error> {
        let name = object_name(shard, seq);
        let object = self
            .objects
            .get(name.as_str())
            .await
            .map_err(|e| nats_error(&format!("read the snapshot {name}"), e))?;
        SnapshotReader::start(
            tokio::io::BufReader::with_capacity(PIECE, object),
            shard,
            seq,
        )
        .await
    }

    /// Deletes, for each `(shard, seq)` of `newest`, the snapshots of `shard` before `seq`
    /// (the log was purged below `seq`, so none of them is read again), with one listing of
    /// the bucket. Returns how many it deleted.
    pub(crate) async fn delete_older(&self, newest: &[(u16, u64)]) -> Result<usize, Error> {
        let newest: std::collections::HashMap<u16, u64> = newest.iter().copied().collect();
        let mut objects =
            (self.objects.list().await).map_err(|e| nats_error("list the snapshots", e))?;
        let mut older = Vec::new();
        while let Some(info) =
            (objects.try_next().await).map_err(|e| nats_error("list the snapshots", e))?
        {
            if info.deleted {
                continue;
            }
            if let Some((shard, seq)) = parse_object_name(&info.name)
                && newest.get(&shard).is_some_and(|&newest| seq < newest)
            {
                older.push((shard, seq));
            }
        }
        for &(shard, seq) in &older {
            self.delete(shard, seq).await?;
        }
        Ok(older.len())
    }

    /// Deletes `shard`'s snapshot at `seq` (a later one holds what it held).
    pub(crate) async fn delete(&self, shard: u16, seq: u64) -> Result<(), Error> {
        let name = object_name(shard, seq);
        match self.objects.delete(name.as_str()).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == object_store::DeleteErrorKind::NotFound => Ok(()),
            Err(e) => Err(nats_error(&format!("delete the snapshot {name}"), e)),
        }
    }
}

/// Writes records in format 1.
#[derive(Default)]
struct Encoder {
    bytes: Vec<u8>,
    records: u64,
}

impl Encoder {
    fn header(&mut self, shard: u16, seq: u64) {
        self.bytes.push(SNAPSHOT_V1);
        self.bytes.extend(shard.to_be_bytes());
        self.bytes.extend(seq.to_be_bytes());
    }

    fn record(&mut self, space: u8, key: &[u8], value: &[u8]) {
        self.bytes.push(space);
        // Keys are at most 64 KiB and values far below 4 GiB (the store's own limits).
        self.bytes.extend((key.len() as u32).to_be_bytes());
        self.bytes.extend(key);
        self.bytes.extend((value.len() as u32).to_be_bytes());
        self.bytes.extend(value);
        self.records += 1;
    }

    fn end(&mut self) {
        self.bytes.push(END);
        self.bytes.extend(self.records.to_be_bytes());
    }

    fn take(&mut self) -> Bytes {
        Bytes::from(std::mem::take(&mut self.bytes))
    }
}

/// Reads a snapshot's records, a chunk at a time; refuses another format, another shard or
/// sequence than asked for, damaged lengths, unknown spaces and a wrong record count.
pub(crate) struct SnapshotReader<R> {
    from: R,
    what: String,
    records: u64,
    ended: bool,
}

impl<R: AsyncRead + Unpin> SnapshotReader<R> {
    /// Reads the header of `from`, which must be `shard`'s snapshot at `seq`.
    pub(crate) async fn start(mut from: R, shard: u16, seq: u64) -> Result<Self, Error> {
        let what = format!("the snapshot of shard {shard} at {seq}");
        let damaged = |why: String| Error::Cluster(format!("{what} is unreadable: {why}"));
        let io = |e: std::io::Error| damaged(e.to_string());
        let format = from.read_u8().await.map_err(io)?;
        if format != SNAPSHOT_V1 {
            return Err(damaged(format!(
                "its format is {format}, this build reads {SNAPSHOT_V1}"
            )));
        }
        let (found_shard, found_seq) = (
            from.read_u16().await.map_err(io)?,
            from.read_u64().await.map_err(io)?,
        );
        if (found_shard, found_seq) != (shard, seq) {
            return Err(damaged(format!(
                "it holds shard {found_shard} at {found_seq}"
            )));
        }
        Ok(SnapshotReader {
            from,
            what,
            records: 0,
            ended: false,
        })
    }

    /// Up to `max` next records; `None` once every record was read (and counted right).
    pub(crate) async fn next_chunk(&mut self, max: usize) -> Result<Option<Vec<LogWrite>>, Error> {
        let mut chunk = Vec::new();
        while !self.ended && chunk.len() < max {
            match self.next().await? {
                Some(write) => chunk.push(write),
                None => self.ended = true,
            }
        }
        Ok((!chunk.is_empty()).then_some(chunk))
    }

    async fn next(&mut self) -> Result<Option<LogWrite>, Error> {
        let what = &self.what;
        let damaged = |why: String| Error::Cluster(format!("{what} is unreadable: {why}"));
        let io = |e: std::io::Error| damaged(e.to_string());
        let space = self.from.read_u8().await.map_err(io)?;
        if space == END {
            let count = self.from.read_u64().await.map_err(io)?;
            if count != self.records {
                return Err(damaged(format!(
                    "it says {count} records, and holds {}",
                    self.records
                )));
            }
            let mut rest = [0u8; 1];
            if self.from.read(&mut rest).await.map_err(io)? != 0 {
                return Err(damaged("bytes follow its end".into()));
            }
            return Ok(None);
        }
        let key_len = self.from.read_u32().await.map_err(io)?;
        if key_len == 0 || key_len > 65_535 {
            return Err(damaged(format!("a key of {key_len} bytes")));
        }
        let mut key = vec![0; key_len as usize];
        self.from.read_exact(&mut key).await.map_err(io)?;
        let value_len = self.from.read_u32().await.map_err(io)?;
        if value_len > MAX_VALUE {
            return Err(damaged(format!("a value of {value_len} bytes")));
        }
        let mut value = vec![0; value_len as usize];
        self.from.read_exact(&mut value).await.map_err(io)?;
        let write = LogWrite::new(space, key, Some(value)).map_err(damaged)?;
        if write.space == Space::Applied {
            return Err(damaged("it holds an applied sequence as a record".into()));
        }
        self.records += 1;
        Ok(Some(write))
    }
}

/// How often a node looks for shards due a snapshot.
pub(crate) fn check_every(config: &ClusterConfig) -> Duration {
    config.renew_every()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(records: &[(u8, &[u8], &[u8])], shard: u16, seq: u64) -> Vec<u8> {
        let mut encoder = Encoder::default();
        encoder.header(shard, seq);
        for (space, key, value) in records {
            encoder.record(*space, key, value);
        }
        encoder.end();
        encoder.bytes
    }

    async fn read_all(bytes: &[u8], shard: u16, seq: u64) -> Result<Vec<LogWrite>, Error> {
        let mut reader = SnapshotReader::start(bytes, shard, seq).await?;
        let mut all = Vec::new();
        while let Some(chunk) = reader.next_chunk(2).await? {
            assert!(chunk.len() <= 2);
            all.extend(chunk);
        }
        Ok(all)
    }

    #[test]
    fn object_names_parse_back() {
        for (shard, seq) in [(0, 0), (7, 42), (255, u64::MAX)] {
            assert_eq!(
                parse_object_name(&object_name(shard, seq)),
                Some((shard, seq))
            );
        }
        for name in [
            "", "s", "s007", "s007.", "x007.1", "s007.-1", "s70000.1", "s007.1.2",
        ] {
            assert_eq!(parse_object_name(name), None, "{name:?}");
        }
    }

    #[tokio::test]
    async fn records_round_trip_in_chunks() {
        let records: [(u8, &[u8], &[u8]); 5] = [
            (1, b"\x00\x07state", b"record"),
            (2, b"\x00\x07outbox", b""),
            (3, &[0, 7, 0xFF], &[1; 1000]),
            (4, b"\x00\x07kept", b"k"),
            (5, b"\x00\x07expiry", b""),
        ];
        let bytes = encoded(&records, 7, 42);
        let read = read_all(&bytes, 7, 42).await.unwrap();
        let expected: Vec<LogWrite> = records
            .iter()
            .map(|(space, key, value)| {
                LogWrite::new(*space, key.to_vec(), Some(value.to_vec())).unwrap()
            })
            .collect();
        assert_eq!(read, expected);
        assert_eq!(read_all(&encoded(&[], 7, 42), 7, 42).await.unwrap(), []);
    }

    /// Format 1, written down by hand: a change of it fails here, not in a cluster holding
    /// old snapshots.
    #[tokio::test]
    async fn format_1_golden_bytes() {
        #[rustfmt::skip]
        let golden: &[u8] = &[
            0x01, // format 1
            0x00, 0x07, // shard 7
            0, 0, 0, 0, 0, 0, 0x01, 0x2C, // sequence 300
            0x01, // state
            0, 0, 0, 0x02, 0x00, 0x07, // key of 2 bytes
            0, 0, 0, 0x01, b'v', // value of 1 byte
            0x00, // end
            0, 0, 0, 0, 0, 0, 0, 0x01, // 1 record
        ];
        assert_eq!(encoded(&[(1, &[0, 7], b"v")], 7, 300), golden);
        let read = read_all(golden, 7, 300).await.unwrap();
        assert_eq!(
            read,
            [LogWrite::new(1, vec![0, 7], Some(b"v".to_vec())).unwrap()]
        );
    }

    #[tokio::test]
    async fn damaged_or_foreign_snapshots_are_refused() {
        let good = encoded(&[(1, b"\x00\x07k", b"v"), (3, b"\x00\x07t", b"")], 7, 9);
        for len in 0..good.len() {
            assert!(read_all(&good[..len], 7, 9).await.is_err(), "{len} bytes");
        }
        let mut padded = good.clone();
        padded.push(0);
        assert!(read_all(&padded, 7, 9).await.is_err());
        let why = read_all(&good, 8, 9).await.unwrap_err().to_string();
        assert!(why.contains("holds shard 7 at 9"), "{why}");
        assert!(read_all(&good, 7, 10).await.is_err());
        let mut newer = good.clone();
        newer[0] = 2;
        assert!(read_all(&newer, 7, 9).await.is_err());
        let mut miscounted = good.clone();
        *miscounted.last_mut().unwrap() = 3;
        let why = read_all(&miscounted, 7, 9).await.unwrap_err().to_string();
        assert!(why.contains("says 3 records"), "{why}");
        for space in [6, 9] {
            let unknown_space = encoded(&[(space, b"\x00\x07k", b"v")], 7, 9);
            assert!(
                read_all(&unknown_space, 7, 9).await.is_err(),
                "space {space}"
            );
        }
        let empty_key = encoded(&[(1, b"", b"v")], 7, 9);
        assert!(read_all(&empty_key, 7, 9).await.is_err());
    }
}

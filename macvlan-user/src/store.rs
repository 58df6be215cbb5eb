//! Persistent state, guarded by an exclusive `flock` so that concurrent
//! writers serialise instead of corrupting it. Writers hold the lock only
//! while they change state (not while a foreground container runs);
//! readers take no lock and read a state that was saved, never a torn one.
//! The lock file holds the current holder's pid, so a waiting writer can
//! say whom it waits for. Every file access goes through [`StateDir`].
//!
//! The state is two files: `state.json`, the whole state as one JSON
//! document, written atomically (temp file, fsync, rename, fsync of the
//! directory), and `state.journal` ([`journal`]), the changes saved since,
//! one line each, appended and synced. A save appends what changed, so
//! that its cost does not grow with the containers there are; once the
//! journal is larger than a 32nd of the state file (and than
//! [`COMPACT_MIN`]), the save writes the state file whole instead and
//! starts a new journal.
//!
//! Reading does not grow with the containers either, as far as JSON
//! allows: the state file's containers are kept as their JSON text (slices
//! of the file as read, not copies) and parsed when a command reads them
//! ([`crate::model::Containers`]), and
//! what a command needs of the others (names, endpoint ids, MACs) is in the
//! file's `index`. A state file as mvnet writes it (the CRCs of its
//! containers and of its index) is read with its containers left unread
//! until a command asks for more than whether a name, an id or a MAC is
//! taken ([`crate::model::Unread`]): a `run` reads none of them. A save
//! finds what changed by comparing each container's
//! JSON pointer with the one it was read from, and writes an unchanged
//! container back as the text it was read from. A state directory of an
//! older mvnet (a state file without an index, with or without a journal)
//! loads as it is (every container parsed), and the next save writes the
//! state file whole, with its index.
mod index;
mod journal;

use std::{
    borrow::Cow,
    collections::BTreeMap,
    fs::File,
    io,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde::Deserialize;
use serde_json::value::RawValue;
use thiserror::Error;

use crate::{
    model::{self, Containers, HeadIn, Id, Intent, Kept, Network, Saved, State, Text, Unread},
    state_dir::{self, Durability, StateDir, StateDirError},
    sys::fs::{self as sys, Lock},
    sys::text::FileText,
};

/// Default state directory, like Docker's /var/lib/docker.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/mvnet";
/// Environment override of the state directory (also `--state-dir`).
pub const STATE_DIR_ENV: &str = "MVNET_STATE_DIR";

/// The state file's name in the state directory.
pub const STATE_FILE: &str = "state.json";
/// The journal's name in the state directory.
pub const JOURNAL_FILE: &str = "state.journal";
/// The journal may grow to [`COMPACT_SHARE`] of the state file's size, and
/// at least to this, before a save writes the state file whole again.
///
/// Every command (and every CNI call) parses the whole journal, so a small
/// state's journal is kept small: 16 KiB is about 35 records of one
/// container each, and folding it in every 35 saves writes one small file.
/// With 256 KiB here, a node with a few pods parsed a journal of 128 KiB
/// on average on every call: mvnet-cni's standalone ADD took 11.0 ms and
/// DEL 25.4 ms, against 8.0 and 22.0 ms with 16 KiB (`cargo xtask bench
/// control-plane`, medians of 500, issue 16).
pub const COMPACT_MIN: u64 = 16 << 10;
/// The journal's records are parsed whole on every read (the state file's
/// containers only when read): it is kept to this share of the state file.
///
/// A record is parsed and applied by every command until it is folded in:
/// at 4000 containers a journal of 223 KiB took 4.4 ms of a `container rm`
/// (in-process timing), and with an eighth of the 3.8 MB state file the
/// journal grows to 473 KiB. With a 32nd it stays under 118 KiB, and the
/// state file is written whole about once in 95 commands (a command there
/// appends 1.2 KiB).
pub const COMPACT_SHARE: u64 = 32;
/// The lock file's name in the state directory.
pub const LOCK_FILE: &str = "lock";

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("state directory {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("state file {path} is corrupt ({source}); move it away to start afresh")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("state file {path} is corrupt ({reason}); move it away to start afresh")]
    CorruptRecord { path: PathBuf, reason: String },
    #[error("state journal {path} is corrupt: {reason}; move it away to go back to the state in {STATE_FILE} as it was last written whole")]
    CorruptJournal { path: PathBuf, reason: String },
    #[error(transparent)]
    Dir(#[from] StateDirError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_owned();
    move |source| StoreError::Io { path, source }
}

/// The state directory. Writers hold its exclusive lock only while they
/// change state ([`Store::open`], [`Store::unlock`], [`Store::relock`]);
/// readers use [`peek`] or [`Store::unlocked`] and take no lock.
pub struct Store {
    path: PathBuf,
    /// Opened (and created if needed) by a writer; a reader's is `None`
    /// when the directory does not exist yet.
    dir: Option<StateDir>,
    lock: Option<Lock>,
    /// Whether saves fsync (see [`Store::skip_fsync`]).
    durability: Durability,
    /// A writer's journal as it last loaded or saved it; `None` until then,
    /// or when the journal does not go with the state file (the next save
    /// writes both afresh).
    journal: Mutex<Option<Journal>>,
}

/// The journal a writer appends to.
struct Journal {
    file: File,
    /// Its length up to the last whole record (what follows is cut off
    /// before the next append).
    len: u64,
    /// The size of the state file it goes with.
    base_size: u64,
    /// The state as saved (state file and journal): what the next save
    /// records the changes from.
    saved: journal::Baseline,
}

/// How long a writer waits silently for the lock before it says whom it
/// waits for.
const LOCK_PATIENCE: Duration = Duration::from_secs(1);

impl Store {
    /// Opens (creating if needed) and locks the state directory. Waits
    /// while another `mvnet` holds the lock, saying so (with its pid) after
    /// a second.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let mut store = Store {
            path: dir.to_owned(),
            dir: Some(StateDir::open(dir)?),
            lock: None,
            durability: Durability::Synced,
            journal: Mutex::new(None),
        };
        store.relock()?;
        Ok(store)
    }

    /// The state directory without the lock, for a reader: checked, never
    /// created or changed.
    pub fn unlocked(dir: &Path) -> Result<Store, StoreError> {
        Ok(Store {
            path: dir.to_owned(),
            dir: StateDir::open_existing(dir)?,
            lock: None,
            durability: Durability::Synced,
            journal: Mutex::new(None),
        })
    }

    /// Whether this value holds the exclusive lock.
    pub fn is_locked(&self) -> bool {
        self.lock.is_some()
    }

    /// Lets go of the lock (for a foreground container's lifetime); the
    /// state must be re-read after [`Store::relock`].
    pub fn unlock(&mut self) {
        self.lock = None;
        // Other writers may change both files meanwhile.
        *self.journal.get_mut().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Takes the lock again (no-op if held).
    pub fn relock(&mut self) -> Result<(), StoreError> {
        if self.lock.is_some() {
            return Ok(());
        }
        if self.dir.is_none() {
            self.dir = Some(StateDir::open(&self.path)?);
        }
        let dir = self.files()?;
        let lock = lock(dir)?;
        // A temporary file a killed writer left, or one planted there (a
        // symbolic link is removed, never followed), before a save that
        // may not write whole files at all.
        for tmp in [STATE_FILE, JOURNAL_FILE].map(|f| format!("{f}.tmp")) {
            dir.remove(&tmp)?;
        }
        self.lock = Some(lock);
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.path
    }

    /// The state directory's files (logs, the lock); a writer's.
    pub fn files(&self) -> Result<&StateDir, StoreError> {
        self.dir.as_ref().ok_or_else(|| StoreError::Io {
            path: self.path.clone(),
            source: io::Error::new(
                io::ErrorKind::NotFound,
                "the state directory does not exist yet; a command that writes creates it",
            ),
        })
    }

    /// Reads the state (empty if none was written yet). A writer (holding
    /// the lock) keeps the journal open for its saves.
    pub fn load(&self) -> Result<State, StoreError> {
        let Some(dir) = &self.dir else {
            return Ok(State::default());
        };
        let loaded = read(dir)?;
        if self.lock.is_some() {
            *self.journal.lock().unwrap_or_else(|e| e.into_inner()) = match loaded.journal {
                Some((len, base_size)) => Some(Journal {
                    file: dir.open_in_place(JOURNAL_FILE)?,
                    len,
                    base_size,
                    saved: journal::Baseline::of(&loaded.state),
                }),
                None => None,
            };
        }
        Ok(loaded.state)
    }

    /// Saves the state durably: a crash leaves the state before or after
    /// this save, never a torn one. Appends the changes since the last
    /// load or save to the journal, or writes the state file whole (and a
    /// new journal) when there is no journal to append to or it has grown
    /// larger than the state file.
    pub fn save(&self, state: &State) -> Result<(), StoreError> {
        let dir = self.files()?;
        let mut slot = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(j) = slot.as_mut() {
            let record = journal::diff(&mut j.saved, state);
            let line = record.line();
            if j.len + line.len() as u64 <= (j.base_size / COMPACT_SHARE).max(COMPACT_MIN) {
                dir.write_at(&j.file, JOURNAL_FILE, j.len, &line, self.durability)?;
                j.len += line.len() as u64;
                journal::apply_to_baseline(&mut j.saved, record);
                return Ok(());
            }
        }
        // Until both files are written, what is on disk is unknown here.
        *slot = None;
        *slot = Some(compact(dir, state, self.durability)?);
        Ok(())
    }

    /// See [`crate::controller::Controller::leave_state_to_exit`]; the
    /// next save writes the state file whole.
    pub fn leave_baseline_to_exit(&mut self) {
        let journal = self.journal.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(Journal { saved, .. }) = journal.take() {
            std::mem::forget(saved);
        }
    }

    /// Saves from now on without fsync: a killed process still leaves the
    /// state before or after each save (temporary file and rename; a torn
    /// journal line is ignored), but a power loss may bring back the state
    /// before the last saves. Only for callers whose records are of kernel
    /// state that a power loss takes too (CNI ADD and DEL: the sandbox
    /// namespace and its link), which `mvnet restore` and the runtime's GC
    /// converge again.
    pub fn skip_fsync(&mut self) {
        self.durability = Durability::Unsynced;
    }
}

/// Writes `state` whole to the state file, then a journal (with no records)
/// that goes with it. A crash in between leaves a journal naming the old
/// state file, which is ignored: the new one holds everything.
fn compact(dir: &StateDir, state: &State, durability: Durability) -> Result<Journal, StoreError> {
    let bytes = state_file_bytes(state);
    let base = dir.replace(STATE_FILE, &bytes, durability)?;
    let header = journal::Header {
        journal: journal::Header::VERSION,
        base_inode: base.ino,
        base_size: base.size,
    }
    .line();
    dir.replace(JOURNAL_FILE, &header, durability)?;
    Ok(Journal {
        file: dir.open_in_place(JOURNAL_FILE)?,
        len: header.len() as u64,
        base_size: base.size,
        saved: journal::Baseline::of(state),
    })
}

/// The key after the containers in the state file: the CRC-32 of their
/// object's bytes as written.
const CONTAINERS_CRC: &str = "containers_crc32";

/// The key before the index in the state file: the CRC-32 of its object's
/// bytes as written, which lets a reader leave the containers unread
/// ([`Sections::Unread`]).
const INDEX_CRC: &str = "index_crc32";

/// The state file's text: one JSON object, `networks`, `containers` (one
/// container per line, [`Containers::write_lines`]), [`CONTAINERS_CRC`],
/// [`INDEX_CRC`], the `index` of the containers' heads, and `pending` when
/// there are intents. The line layout and the CRC let a reader take each
/// container's record by its line without scanning it as JSON
/// ([`fast_sections`]): at 4000 containers that scan was a tenth of a
/// `run`'s CPU time. The index's CRC lets it leave them all unread
/// ([`Sections::Unread`]). Any JSON reader (and an older mvnet, which
/// ignores the CRCs) reads it as before.
fn state_file_bytes(state: &State) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"{\"networks\":");
    serde_json::to_writer(&mut out, &state.networks).expect("networks serialise");
    out.extend_from_slice(b",\"containers\":");
    let start = out.len();
    state.containers.write_lines(&mut out);
    let crc = crc32fast::hash(&out[start..]);
    let index = serde_json::to_vec(&state.containers.index()).expect("the index serialises");
    let index_crc = crc32fast::hash(&index);
    out.extend_from_slice(
        format!(",\"{CONTAINERS_CRC}\":{crc},\"{INDEX_CRC}\":{index_crc},\"index\":").as_bytes(),
    );
    out.extend_from_slice(&index);
    if !state.pending.is_empty() {
        out.extend_from_slice(b",\"pending\":");
        serde_json::to_writer(&mut out, &state.pending).expect("intents serialise");
    }
    out.push(b'}');
    out
}

/// A state file laid out as [`state_file_bytes`] writes it.
enum Sections<'a> {
    /// With the CRC of its index, which holds no escape: its containers
    /// left unread ([`Unread`]), their records and index found by a search
    /// of their ends and checked against their CRCs.
    Unread {
        networks: BTreeMap<String, Network>,
        unread: Unread,
        pending: Vec<Intent>,
    },
    /// Its containers' records taken by their lines, its index read.
    Read(StateFileIn<'a>),
}

/// The sections of a state file laid out as [`state_file_bytes`] writes
/// it: `None` for any other layout (an older mvnet's file, one edited by
/// hand), and when the containers' bytes are not the ones their CRC was
/// taken of. Such a file is read by [`StateFileIn`], which checks every
/// record as JSON; this one's records are the bytes mvnet wrote, each
/// checked JSON before.
fn fast_sections(file: &Arc<FileText>) -> Option<Sections<'_>> {
    let text: &str = file;
    let mut at = Cursor { text, pos: 0 };
    let (networks, records) = networks_and_records(&mut at)?;
    // A state file of an older mvnet has no CRC of its index.
    let index_crc = match at.expect(&format!(",\"{INDEX_CRC}\":")) {
        Some(()) => Some(at.value::<u32>()?),
        None => None,
    };
    at.expect(",\"index\":")?;
    if let Some(crc) = index_crc {
        if let Some((unread, end)) = unread_index(file, records.clone(), at.pos, crc) {
            at.pos = end;
            let pending = pending_and_end(&mut at)?;
            return Some(Sections::Unread {
                networks,
                unread,
                pending,
            });
        }
    }
    let containers = model::record_lines(text, records)?
        .into_iter()
        .map(|(id, record)| Entry(Text(id.into()), record))
        .collect::<Vec<_>>();
    let (index, kept) = match index::read(&mut at, file, containers.len()) {
        Some(kept) => (None, Some(kept)),
        None => (Some(at.value::<IndexIn>()?.0), None),
    };
    let pending = pending_and_end(&mut at)?;
    Some(Sections::Read(StateFileIn {
        networks,
        containers,
        index,
        kept,
        pending,
    }))
}

/// The networks, then where the containers' object is (its bytes checked
/// against their CRC, which `at` steps over): the start of every layout
/// [`state_file_bytes`] wrote.
fn networks_and_records(
    at: &mut Cursor<'_>,
) -> Option<(BTreeMap<String, Network>, std::ops::Range<usize>)> {
    at.expect("{\"networks\":")?;
    let networks = at.value::<BTreeMap<String, Network>>()?;
    at.expect(",\"containers\":")?;
    let start = at.pos;
    // Its end: the first newline and `}` that the CRC follows (a record
    // is one line, and no JSON string holds a raw newline).
    let after = format!("\n}},\"{CONTAINERS_CRC}\":");
    let end =
        start + memchr::memmem::find(&at.text.as_bytes()[start..], after.as_bytes())? + "\n}".len();
    let crc = crc32fast::hash(&at.text.as_bytes()[start..end]);
    at.pos = end;
    at.expect(&format!(",\"{CONTAINERS_CRC}\":{crc}"))?;
    Some((networks, start..end))
}

/// The pending intents after the index, and the end of the file.
fn pending_and_end(at: &mut Cursor<'_>) -> Option<Vec<Intent>> {
    let pending = match at.expect(",\"pending\":") {
        Some(()) => at.value::<Vec<Intent>>()?,
        None => Vec::new(),
    };
    at.expect("}")?;
    at.text[at.pos..].trim().is_empty().then_some(pending)
}

/// The containers whose records are at `records` and whose index starts
/// at `start`, unread, and the index's end: `None` unless the index's
/// bytes are those `crc` was taken of and hold no escape.
fn unread_index(
    file: &Arc<FileText>,
    records: std::ops::Range<usize>,
    start: usize,
    crc: u32,
) -> Option<(Unread, usize)> {
    let text: &str = file;
    // Its end: the pending intents (a key no head has) or the file's.
    let end = match memchr::memmem::find(&text.as_bytes()[start..], b",\"pending\":") {
        Some(len) => start + len,
        None => start + text[start..].trim_end().strip_suffix('}')?.len(),
    };
    if crc32fast::hash(&text.as_bytes()[start..end]) != crc {
        return None;
    }
    Some((
        Unread::new(file.clone(), records, start..end, read_unread)?,
        end,
    ))
}

/// The containers left unread ([`Sections::Unread`]), read.
fn read_unread(unread: &Unread) -> Result<Containers, String> {
    let file = unread.text();
    let records = model::record_lines(file, unread.records())
        .ok_or("its containers are not a record per line")?;
    let mut at = Cursor {
        text: file,
        pos: unread.index().start,
    };
    let index: Box<dyn Iterator<Item = (Cow<str>, Kept)>> =
        match index::read(&mut at, file, records.len()) {
            Some(kept) => Box::new(kept.into_iter().map(|(id, h)| (Cow::Borrowed(id), h))),
            None => {
                let i = at.value::<IndexIn>().ok_or("its index is not one")?.0;
                let mut last = None;
                Box::new(
                    i.into_iter()
                        .map(move |Entry(id, head)| (id.0, head.kept(file, &mut last))),
                )
            }
        };
    let records = records
        .into_iter()
        .map(|(id, raw)| (Id::within(file, id), Saved::within(file, raw)));
    Containers::from_saved(records, Some(index))
}

/// A position in a state file's text, for [`fast_sections`].
struct Cursor<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// Steps over `s` if the text goes on with it.
    fn expect(&mut self, s: &str) -> Option<()> {
        self.text[self.pos..]
            .starts_with(s)
            .then(|| self.pos += s.len())
    }

    /// Parses the JSON value that starts here, and steps over it.
    fn value<T: Deserialize<'a>>(&mut self) -> Option<T> {
        let mut values = serde_json::Deserializer::from_str(&self.text[self.pos..]).into_iter();
        let value = values.next()?.ok()?;
        self.pos += values.byte_offset();
        Some(value)
    }
}

/// The index as [`StateFileIn`] reads it, as a value of its own.
struct IndexIn<'a>(Vec<Entry<'a, HeadIn<'a>>>);

impl<'de> Deserialize<'de> for IndexIn<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        entries(d).map(IndexIn)
    }
}

/// The state file as read: each container's JSON, unparsed, and the index,
/// both borrowed from the file's text; no index in an older mvnet's.
#[derive(Deserialize)]
struct StateFileIn<'a> {
    networks: BTreeMap<String, Network>,
    #[serde(borrow, deserialize_with = "raw_entries")]
    containers: Vec<Entry<'a, &'a str>>,
    #[serde(default, borrow, deserialize_with = "some_entries")]
    index: Option<Vec<Entry<'a, HeadIn<'a>>>>,
    /// The index read by hand ([`index::read`]), in place of `index`.
    #[serde(skip)]
    kept: Option<Vec<(&'a str, Kept)>>,
    #[serde(default)]
    pending: Vec<Intent>,
}

/// One entry of a JSON object read as a list (in the order written, which
/// is by id: the containers and their heads are matched in one walk).
struct Entry<'a, V>(Text<'a>, V);

/// Reads an object as the list of its entries.
fn entries<'de, V: Deserialize<'de>, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<Entry<'de, V>>, D::Error> {
    struct Visitor<V>(std::marker::PhantomData<V>);
    impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for Visitor<V> {
        type Value = Vec<Entry<'de, V>>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0));
            while let Some((k, v)) = map.next_entry::<Text<'de>, V>()? {
                out.push(Entry(k, v));
            }
            Ok(out)
        }
    }
    d.deserialize_map(Visitor(std::marker::PhantomData))
}

/// Reads an object as the list of its entries, each value as its JSON
/// text (checked to be JSON).
fn raw_entries<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<Entry<'de, &'de str>>, D::Error> {
    let raw = entries::<&'de RawValue, D>(d)?;
    Ok(raw
        .into_iter()
        .map(|Entry(k, v)| Entry(k, v.get()))
        .collect())
}

fn some_entries<'de, V: Deserialize<'de>, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<Entry<'de, V>>>, D::Error> {
    entries(d).map(Some)
}

/// The state as read.
struct Loaded {
    state: State,
    /// The journal's whole length and its state file's size, when there is
    /// a journal that goes with the state file.
    journal: Option<(u64, u64)>,
}

/// How often a reader reads again when a writer replaced the state file
/// between its reads of the two files.
const READ_ATTEMPTS: usize = 20;

/// Reads the state file and applies the journal that goes with it.
fn read(dir: &StateDir) -> Result<Loaded, StoreError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let read = dir.read_text(STATE_FILE, crate::state_dir::MAX_FILE_SIZE)?;
        // `base`: the state file's inode and size, which a journal names.
        let (mut state, indexed, base) = match read {
            Some((text, st)) => {
                let (state, indexed) = parse_state_file(dir, text)?;
                (state, indexed, Some(st))
            }
            None => (State::default(), true, None),
        };
        let Some(bytes) = dir.read(JOURNAL_FILE)? else {
            return Ok(Loaded {
                state,
                journal: None,
            });
        };
        let corrupt = |reason: String| StoreError::CorruptJournal {
            path: dir.path().join(JOURNAL_FILE),
            reason,
        };
        let parsed = journal::parse(&bytes).map_err(corrupt)?;
        let goes_with = base.as_ref().is_some_and(|st| {
            st.ino == parsed.header.base_inode && st.size == parsed.header.base_size
        });
        if !goes_with {
            // Either a writer replaced both files between the two reads
            // (the state file is not the one read any more: read again), or
            // one was killed between writing the state file and the journal
            // (the state file holds everything the journal had).
            let now = dir.stat(STATE_FILE)?;
            let replaced = match (&base, now) {
                (Some(then), Some(now)) => then.ino != now.ino,
                (None, Some(_)) => true,
                (_, None) => false,
            };
            if replaced && attempt < READ_ATTEMPTS {
                continue;
            }
            return Ok(Loaded {
                state,
                journal: None,
            });
        }
        let base_size = parsed.header.base_size;
        for record in parsed.records {
            journal::apply(&mut state, record).map_err(corrupt)?;
        }
        return Ok(Loaded {
            state,
            // A state file without an index is written whole (with one) at
            // the next save.
            journal: indexed.then_some((parsed.valid_len, base_size)),
        });
    }
}

/// Parses the state file; says whether it has an index.
fn parse_state_file(
    dir: &StateDir,
    text: Result<FileText, std::str::Utf8Error>,
) -> Result<(State, bool), StoreError> {
    let path = || dir.path().join(STATE_FILE);
    let text = text.map_err(|e| StoreError::CorruptRecord {
        path: path(),
        reason: format!("it is not UTF-8 text: {e}"),
    })?;
    // Shared by the containers' records, which are slices of it.
    let text = Arc::new(text);
    let file = match fast_sections(&text) {
        Some(Sections::Unread {
            networks,
            unread,
            pending,
        }) => {
            let state = State {
                networks,
                containers: Containers::unread(unread),
                pending,
            };
            return Ok((state, true));
        }
        Some(Sections::Read(file)) => file,
        None => serde_json::from_str(&text).map_err(|source| StoreError::Corrupt {
            path: path(),
            source,
        })?,
    };
    let indexed = file.index.is_some() || file.kept.is_some();
    let records = file.containers.into_iter().map(|Entry(id, raw)| {
        let id = match id.0 {
            Cow::Borrowed(id) => Id::within(&text, id),
            Cow::Owned(id) => Id::from(id),
        };
        (id, Saved::within(&text, raw))
    });
    let index: Option<Box<dyn Iterator<Item = (Cow<str>, Kept)>>> = match (file.kept, file.index) {
        (Some(kept), _) => Some(Box::new(
            kept.into_iter().map(|(id, head)| (Cow::Borrowed(id), head)),
        )),
        (None, Some(i)) => {
            let (text, mut last) = (&text, None);
            Some(Box::new(i.into_iter().map(move |Entry(id, head)| {
                (id.0, head.kept(text, &mut last))
            })))
        }
        (None, None) => None,
    };
    let containers =
        Containers::from_saved(records, index).map_err(|reason| StoreError::CorruptRecord {
            path: path(),
            reason,
        })?;
    let state = State {
        networks: file.networks,
        containers,
        pending: file.pending,
    };
    Ok((state, indexed))
}

/// Takes the exclusive lock of `dir`, recording our pid in the lock file
/// for a writer that waits.
fn lock(dir: &StateDir) -> Result<Lock, StoreError> {
    let path = dir.path().join(LOCK_FILE);
    let start = Instant::now();
    let mut announced = false;
    let lock = loop {
        match sys::lock_exclusive(dir.open_lock(LOCK_FILE)?, false) {
            Ok(lock) => break lock,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(&path)(e)),
        }
        if !announced && start.elapsed() >= LOCK_PATIENCE {
            let holder = dir.read(LOCK_FILE).ok().flatten().unwrap_or_default();
            let holder = String::from_utf8_lossy(&holder);
            let holder = match holder.trim() {
                "" => "unknown",
                pid => pid,
            };
            eprintln!(
                "mvnet: waiting for the state lock held by pid {holder} ({})",
                path.display()
            );
            announced = true;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // The holder's pid, for the message above in the next writer.
    let pid = format!("{}\n", std::process::id());
    state_dir::write_over(&lock, pid.as_bytes()).map_err(io_err(&path))?;
    Ok(lock)
}

/// Reads the state in `dir` without taking the lock, for readers that must
/// not wait behind a running command (`stats`, `serve`): [`Store::save`]
/// replaces the state file by a rename and appends whole lines to the
/// journal, so this sees the state before or after a save, never a torn
/// one. Empty if there is no state yet.
pub fn peek(dir: &Path) -> Result<State, StoreError> {
    match StateDir::open_existing(dir)? {
        Some(dir) => Ok(read(&dir)?.state),
        None => Ok(State::default()),
    }
}

/// What identifies the saved state in `dir` without reading it: the state
/// file's and the journal's inode, size and modification time (a cache of
/// a parsed state is good while this is the same).
pub fn fingerprint(dir: &Path) -> Option<[(u64, u64, i64, i64); 2]> {
    use std::os::unix::fs::MetadataExt as _;
    let key = |name: &str| {
        std::fs::metadata(dir.join(name))
            .ok()
            .map(|m| (m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
    };
    Some([key(STATE_FILE)?, key(JOURNAL_FILE).unwrap_or_default()])
}

/// The state directory to use: `--state-dir`, else `$MVNET_STATE_DIR`, else
/// [`DEFAULT_STATE_DIR`].
pub fn state_dir(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os(STATE_DIR_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
}

#[cfg(test)]
mod tests {
    use std::{
        fs,
        sync::atomic::{AtomicU32, Ordering},
    };

    use super::*;
    use crate::{
        ipam::{Pool, PoolConfig},
        model::{Container, Endpoint, Intent, Network, Owner},
    };

    struct Scratch(PathBuf);

    impl Scratch {
        fn new() -> Scratch {
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "mvnet-store-unit-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&p);
            Scratch(p)
        }

        fn journal(&self) -> Vec<u8> {
            fs::read(self.0.join(JOURNAL_FILE)).unwrap()
        }

        /// Writes the state file as `edit` makes it from the one there,
        /// and the journal's records again after a header naming it.
        fn edit_state_file(&self, edit: impl FnOnce(&mut serde_json::Value)) {
            let mut file: serde_json::Value =
                serde_json::from_slice(&fs::read(self.0.join(STATE_FILE)).unwrap()).unwrap();
            edit(&mut file);
            self.write_state_file(&serde_json::to_vec(&file).unwrap());
        }

        fn state_file(&self) -> String {
            fs::read_to_string(self.0.join(STATE_FILE)).unwrap()
        }

        /// Writes `bytes` as the state file, and the journal's records
        /// again after a header naming it.
        fn write_state_file(&self, bytes: &[u8]) {
            fs::write(self.0.join(STATE_FILE), bytes).unwrap();
            let st = fs::metadata(self.0.join(STATE_FILE)).unwrap();
            let journal = String::from_utf8(self.journal()).unwrap();
            let mut out = journal::Header {
                journal: journal::Header::VERSION,
                base_inode: std::os::unix::fs::MetadataExt::ino(&st),
                base_size: st.len(),
            }
            .line();
            for line in journal.lines().skip(1) {
                out.extend_from_slice(line.as_bytes());
                out.push(b'\n');
            }
            fs::write(self.0.join(JOURNAL_FILE), &out).unwrap();
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn network(id: &str) -> Network {
        let pool = Pool::new(PoolConfig::new("10.9.0.0/16".parse().unwrap())).unwrap();
        serde_json::from_value(serde_json::json!({
            "id": id, "name": format!("net-{id}"), "created": "2026-12-01T00:00:00Z",
            "parent": "eth0", "parent_origin": "existing", "vlan": null, "mode": "bridge",
            "internal": false, "enable_ipv6": false, "pools": [pool], "options": {},
        }))
        .unwrap()
    }

    /// Adds container `id` on `net` with the next free address.
    fn run(state: &mut State, net: &str, id: &str) {
        let name = format!("c-{id}");
        add(
            state,
            id,
            &name,
            net,
            Some("02:42:0a:09:00:02"),
            Owner::Mvnet,
        );
    }

    /// Network n1 with containers c0, c1 and c2 on it.
    fn three_on_n1(state: &mut State) {
        state.networks.insert("n1".into(), network("n1"));
        for id in ["c0", "c1", "c2"] {
            run(state, "n1", id);
        }
    }

    /// Removes container `id`, giving its addresses back.
    fn rm(state: &mut State, id: &str) {
        let c = state.containers.remove(id).unwrap();
        for (net, ep) in c.endpoints {
            state
                .networks
                .get_mut(net.as_str())
                .unwrap()
                .release(ep.addresses());
        }
    }

    fn json(state: &State) -> serde_json::Value {
        serde_json::to_value(state).unwrap()
    }

    /// A writer's store with the state loaded.
    fn writer(dir: &Path) -> (Store, State) {
        let store = Store::open(dir).unwrap();
        let state = store.load().unwrap();
        (store, state)
    }

    /// Container `id` called `name` on network `net` with MAC `mac` (none:
    /// no endpoint), owned by `owner`.
    fn add(state: &mut State, id: &str, name: &str, net: &str, mac: Option<&str>, owner: Owner) {
        let endpoints = match mac {
            Some(mac) => {
                let (ip, _) = state
                    .networks
                    .get_mut(net)
                    .unwrap()
                    .allocate_addresses(None, None)
                    .unwrap();
                let endpoint = Endpoint {
                    id: format!("ep-{id}"),
                    network_id: net.into(),
                    ifname: "eth0".into(),
                    mac: mac.parse().unwrap(),
                    ipv4: ip,
                    ipv6: None,
                    rx_base: 0,
                };
                [(net.to_owned(), endpoint)].into()
            }
            None => Default::default(),
        };
        let c = Container {
            id: id.into(),
            name: name.into(),
            owner,
            endpoints,
            ..Container::default()
        };
        state.containers.insert(id.into(), c);
    }

    /// What the state answers about names, MACs and ids.
    fn answers(state: &State) -> Vec<Option<String>> {
        let names = [
            "c-c1",
            "c-c10",
            "c-c1x",
            "c-",
            "web",
            "docker-web",
            "pod",
            "idle",
            "nope",
        ];
        let macs = [
            ("n1", "02:42:0a:09:00:01"),
            ("n2", "02:42:0a:09:00:01"),
            ("n1", "02:42:0a:09:00:0a"),
            ("n2", "02:42:0a:09:00:0b"),
            ("n1", "02:42:0a:09:00:0b"),
            ("n2", "02:42:0a:09:00:63"),
            ("n1", "02:42:0a:09:00:ff"),
        ];
        let ids = ["c1", "c10", "c1x", "c", "d1", "k1", "s1", "x"];
        let mut out: Vec<Option<String>> = names
            .iter()
            .map(|n| state.containers.id_by_name(n).map(str::to_owned))
            .collect();
        out.extend(macs.iter().map(|(net, mac)| {
            let mac = mac.parse().unwrap();
            state.containers.mac_holder(net, mac).map(str::to_owned)
        }));
        out.extend(
            ids.iter()
                .map(|id| Some(state.containers.contains_key(id).to_string())),
        );
        let endpoints = ["ep-c1", "ep-c10", "ep-c", "ep-d1", "ep-k1", "ep-s1", "c1"];
        out.extend(
            endpoints
                .iter()
                .map(|e| state.containers.holder_of_endpoint(e).map(str::to_owned)),
        );
        out
    }

    #[test]
    fn a_run_reads_none_of_the_containers_in_the_state_file() {
        let s = Scratch::new();
        let (store, mut state) = writer(&s.0);
        state.networks.insert("n1".into(), network("n1"));
        state.networks.insert("n2".into(), network("n2"));
        for i in 1..=12 {
            let (net, mac) = match i % 2 {
                0 => ("n2", format!("02:42:0a:09:00:{i:02x}")),
                _ => ("n1", format!("02:42:0a:09:00:{i:02x}")),
            };
            add(
                &mut state,
                &format!("c{i}"),
                &format!("c-c{i}"),
                net,
                Some(&mac),
                Owner::Mvnet,
            );
        }
        add(
            &mut state,
            "d1",
            "docker-web",
            "n2",
            Some("02:42:0a:09:00:63"),
            Owner::Docker,
        );
        let cni = Owner::Cni {
            network: "macnet".into(),
        };
        add(
            &mut state,
            "k1",
            "pod",
            "n1",
            Some("02:42:0a:09:00:64"),
            cni,
        );
        add(&mut state, "s1", "idle", "n1", None, Owner::Mvnet);
        // Written whole (the first save), with the index's CRC.
        store.save(&state).unwrap();
        drop(store);
        assert!(s.state_file().contains(",\"index_crc32\":"));
        let expected = answers(&state);
        assert_eq!(expected[0].as_deref(), Some("c1"));
        assert_eq!(expected[9].as_deref(), Some("c-c1"));
        assert_eq!(expected[14].as_deref(), Some("docker-web"));
        assert_eq!(expected[24].as_deref(), Some("c1"));
        assert_eq!(expected[27].as_deref(), Some("d1"));
        assert_eq!(expected[29], None);

        let (store, mut lazy) = writer(&s.0);
        assert!(lazy.containers.is_unread());
        assert_eq!(answers(&lazy), expected);
        // A `run`: the name and the MAC are free, the container is added
        // and saved, and none of the file's containers is read.
        assert_eq!(lazy.containers.id_by_name("web"), None);
        add(
            &mut lazy,
            "w1",
            "web",
            "n1",
            Some("02:42:0a:09:00:ff"),
            Owner::Mvnet,
        );
        store.save(&lazy).unwrap();
        assert!(lazy.containers.is_unread());
        let record = String::from_utf8(s.journal()).unwrap();
        let record: serde_json::Value =
            serde_json::from_str(record.lines().last().unwrap()).unwrap();
        let saved: Vec<&String> = record["containers"].as_object().unwrap().keys().collect();
        assert_eq!(saved, ["w1"]);
        assert_eq!(json(&peek(&s.0).unwrap()), json(&lazy));
        drop(store);

        // Read again, with the journal's container among the unread ones.
        let eager = peek(&s.0).unwrap();
        eager.containers.len();
        assert!(!eager.containers.is_unread());
        let (store, mut lazy) = writer(&s.0);
        assert!(lazy.containers.is_unread());
        assert_eq!(answers(&lazy), answers(&eager));
        assert_eq!(lazy.containers.id_by_name("web"), Some("w1"));
        let mac = "02:42:0a:09:00:ff".parse().unwrap();
        assert_eq!(lazy.containers.mac_holder("n1", mac), Some("web"));
        assert_eq!(lazy.containers.mac_holder("n2", mac), None);
        assert_eq!(lazy.containers.holder_of_endpoint("ep-w1"), Some("w1"));
        // Removing it (the journal's) reads none either.
        rm(&mut lazy, "w1");
        assert!(lazy.containers.is_unread());
        assert_eq!(lazy.containers.id_by_name("web"), None);
        assert!(!lazy.containers.contains_key("w1"));
        store.save(&lazy).unwrap();
        assert!(lazy.containers.is_unread());
        let record = String::from_utf8(s.journal()).unwrap();
        let record: serde_json::Value =
            serde_json::from_str(record.lines().last().unwrap()).unwrap();
        assert_eq!(record["containers"], serde_json::json!({ "w1": null }));
        // Removing one of the file's reads them, and saves that removal.
        rm(&mut lazy, "c3");
        assert!(!lazy.containers.is_unread());
        store.save(&lazy).unwrap();
        let record = String::from_utf8(s.journal()).unwrap();
        let record: serde_json::Value =
            serde_json::from_str(record.lines().last().unwrap()).unwrap();
        assert_eq!(record["containers"], serde_json::json!({ "c3": null }));
        assert_eq!(json(&peek(&s.0).unwrap()), json(&lazy));
        assert_eq!(lazy.containers.id_by_name("c-c3"), None);
    }

    #[test]
    fn unread_containers_answer_as_read_ones_through_saves_and_loads() {
        // Names and MACs drawn from small sets (clashes on purpose: the
        // first by id answers), containers added and removed over several
        // loads, journal records and rewrites of the whole file.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut draw = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let nets = ["n1", "n2", "n3"];
        let s = Scratch::new();
        let (store, mut state) = writer(&s.0);
        for net in nets {
            state.networks.insert(net.into(), network(net));
        }
        let made = std::cell::Cell::new(0);
        let add_one = |state: &mut State, draw: &mut dyn FnMut(u64) -> u64| {
            made.set(made.get() + 1);
            let id = format!("c{:03}", made.get());
            let name = format!("name-{}", draw(40));
            let net = nets[draw(3) as usize];
            let mac = (draw(5) > 0).then(|| format!("02:42:0a:09:01:{:02x}", draw(30)));
            let owner = match draw(4) {
                0 => Owner::Docker,
                _ => Owner::Mvnet,
            };
            add(state, &id, &name, net, mac.as_deref(), owner);
            id
        };
        for _ in 0..60 {
            add_one(&mut state, &mut draw);
        }
        store.save(&state).unwrap();
        drop(store);
        let answers = |state: &State| {
            let mut out = Vec::new();
            for i in 0..42 {
                let name = format!("name-{i}");
                out.push(state.containers.id_by_name(&name).map(str::to_owned));
            }
            for net in nets {
                for m in 0..32 {
                    let mac = format!("02:42:0a:09:01:{m:02x}").parse().unwrap();
                    out.push(state.containers.mac_holder(net, mac).map(str::to_owned));
                }
            }
            for i in 0..=made.get() + 2 {
                let id = format!("c{i:03}");
                out.push(Some(state.containers.contains_key(&id).to_string()));
                let ep = format!("ep-{id}");
                out.push(state.containers.holder_of_endpoint(&ep).map(str::to_owned));
            }
            out
        };
        let mut added: Vec<String> = Vec::new();
        let mut unread_rounds = 0;
        for round in 0..12 {
            let (store, mut state) = writer(&s.0);
            for step in 0..6 {
                let unread = state.containers.is_unread();
                let read = state.clone();
                read.containers.len();
                assert_eq!(answers(&state), answers(&read), "round {round} step {step}");
                assert_eq!(
                    state.containers.is_unread(),
                    unread,
                    "the questions read nothing"
                );
                unread_rounds += usize::from(unread);
                match draw(3) {
                    // Remove one this test added since the file was written
                    // (unread: in the journal) or, now and then, one of
                    // the first (which reads them all).
                    0 if !added.is_empty() => {
                        let id = added.swap_remove(draw(added.len() as u64) as usize);
                        rm(&mut state, &id);
                    }
                    0 if round % 4 == 3 => rm(&mut state, &format!("c{:03}", 1 + draw(60))),
                    _ => added.push(add_one(&mut state, &mut draw)),
                }
                store.save(&state).unwrap();
            }
            let expected = json(&state);
            drop(state);
            drop(store);
            assert_eq!(json(&peek(&s.0).unwrap()), expected, "round {round}");
        }
        assert!(unread_rounds >= 30, "only {unread_rounds} steps unread");
    }

    #[test]
    fn a_state_file_whose_index_is_not_as_written_is_read_whole() {
        let s = Scratch::new();
        let (store, mut state) = writer(&s.0);
        three_on_n1(&mut state);
        store.save(&state).unwrap();
        drop(store);
        assert!(peek(&s.0).unwrap().containers.is_unread());
        // The index's CRC wrong: read by line, index and all.
        let text = s.state_file();
        let at = text.find(",\"index_crc32\":").unwrap() + ",\"index_crc32\":".len();
        let len = text[at..].find(',').unwrap();
        let wrong = format!("{}{}{}", &text[..at], "12345", &text[at + len..]);
        let expected = json(&state);
        drop(state);
        s.write_state_file(wrong.as_bytes());
        let read = peek(&s.0).unwrap();
        assert!(!read.containers.is_unread());
        assert_eq!(json(&read), expected);
        // A name with an escape in the index: the same.
        let (store, mut state) = writer(&s.0);
        state.containers.get_mut("c1").unwrap().name = "c-\"one\"".into();
        store.save(&state).unwrap();
        drop(store);
        // (Written over in place: the state read from it is not read from
        // again.)
        let (bytes, expected) = (state_file_bytes(&state), json(&state));
        drop(state);
        s.write_state_file(&bytes);
        let read = peek(&s.0).unwrap();
        assert!(!read.containers.is_unread());
        assert_eq!(read.containers.id_by_name("c-\"one\""), Some("c1"));
        assert_eq!(json(&read), expected);
    }

    #[test]
    fn the_lock_file_holds_exactly_the_writers_pid() {
        let s = Scratch::new();
        drop(writer(&s.0));
        // A longer holder's pid before (a pid is at most 7 digits).
        fs::write(s.0.join(LOCK_FILE), "123456789012\n").unwrap();
        let (store, _) = writer(&s.0);
        let want = format!("{}\n", std::process::id());
        assert_eq!(fs::read_to_string(s.0.join(LOCK_FILE)).unwrap(), want);
        drop(store);
        // A shorter one.
        fs::write(s.0.join(LOCK_FILE), "1\n").unwrap();
        let (_store, _) = writer(&s.0);
        assert_eq!(fs::read_to_string(s.0.join(LOCK_FILE)).unwrap(), want);
    }

    #[test]
    fn a_read_copies_no_container_and_reads_escaped_strings() {
        let s = Scratch::new();
        let (store, mut state) = writer(&s.0);
        state.networks.insert("n1".into(), network("n1"));
        run(&mut state, "n1", "c0");
        run(&mut state, "n1", "c1");
        // Strings the index cannot borrow from the file (escapes).
        let odd = state.containers.get_mut("c1").unwrap();
        odd.name = "c-\"one\"\t".into();
        odd.netns = "/run/netns/é\\x".into();
        // The first save writes the state file whole, with its index.
        store.save(&state).unwrap();
        drop(store);
        let read = peek(&s.0).unwrap();
        let (a, b) = (
            read.containers.saved("c0").unwrap(),
            read.containers.saved("c1").unwrap(),
        );
        assert!(a.shares_text(b), "both slices of the state file as read");
        assert!(read.containers.key_in_text("c0") && read.containers.key_in_text("c1"));
        assert_eq!(read.containers.id_by_name("c-\"one\"\t"), Some("c1"));
        assert_eq!(
            read.containers.id_by_netns(Path::new("/run/netns/é\\x")),
            Some("c1")
        );
        assert_eq!(read.containers.parsed(), 0, "found by the index alone");
        assert_eq!(json(&read), json(&state));
    }

    #[test]
    fn a_network_changed_besides_its_addresses_is_saved_whole() {
        let s = Scratch::new();
        let (store, mut state) = writer(&s.0);
        state.networks.insert("n1".into(), network("n1"));
        store.save(&state).unwrap();
        run(&mut state, "n1", "c0");
        store.save(&state).unwrap();
        run(&mut state, "n1", "c1");
        let n1 = state.networks.get_mut("n1").unwrap();
        n1.labels.insert("tier".into(), "db".into());
        store.save(&state).unwrap();
        let journal = String::from_utf8(s.journal()).unwrap();
        let lines: Vec<&str> = journal.lines().collect();
        assert_eq!(lines.len(), 3, "{journal}");
        // Addresses alone: recorded as the address handed out.
        assert!(!lines[1].contains("\"networks\""), "{}", lines[1]);
        assert!(
            lines[1].contains("\"allocated\":[\"10.9.0.2\"]"),
            "{}",
            lines[1]
        );
        // A label too: the network whole, with its pools.
        assert!(lines[2].contains("\"networks\""), "{}", lines[2]);
        assert!(lines[2].contains("\"tier\":\"db\""), "{}", lines[2]);
        drop(store);
        assert_eq!(json(&peek(&s.0).unwrap()), json(&state));
    }

    #[test]
    fn saves_append_to_the_journal_and_loads_replay_it() {
        let s = Scratch::new();
        let (store, mut state) = writer(&s.0);
        state.networks.insert("n1".into(), network("n1"));
        store.save(&state).unwrap();
        let base = fs::read(s.0.join(STATE_FILE)).unwrap();
        for i in 0..5 {
            run(&mut state, "n1", &format!("c{i}"));
            store.save(&state).unwrap();
        }
        rm(&mut state, "c1");
        state.pending.push(Intent::Remove {
            container_id: "c2".into(),
        });
        store.save(&state).unwrap();
        // The state file as the first save wrote it; a line per save after.
        assert_eq!(fs::read(s.0.join(STATE_FILE)).unwrap(), base);
        let journal = String::from_utf8(s.journal()).unwrap();
        assert_eq!(journal.lines().count(), 1 + 6, "{journal}");
        // A save records the container and the address, not the network.
        let last_run = journal.lines().nth(5).unwrap();
        assert!(
            last_run.contains("\"allocated\":[\"10.9.0.6\"]"),
            "{last_run}"
        );
        assert!(!last_run.contains("\"networks\""), "{last_run}");
        assert_eq!(json(&peek(&s.0).unwrap()), json(&state));
        drop(store);
        // A new writer appends after what is there.
        let (store, mut again) = writer(&s.0);
        assert_eq!(json(&again), json(&state));
        run(&mut again, "n1", "c9");
        store.save(&again).unwrap();
        let n1 = &peek(&s.0).unwrap().networks["n1"];
        let ip = "10.9.0.3".parse().unwrap();
        assert!(
            n1.pool_v4().unwrap().is_allocated(ip),
            "c1's address, reused"
        );
        assert_eq!(json(&peek(&s.0).unwrap()), json(&again));
    }

    #[test]
    fn a_torn_last_record_is_ignored_and_cut_off_by_the_next_save() {
        let s = Scratch::new();
        let (store, mut state) = writer(&s.0);
        state.networks.insert("n1".into(), network("n1"));
        store.save(&state).unwrap();
        run(&mut state, "n1", "c0");
        store.save(&state).unwrap();
        drop(store);
        let whole = s.journal();
        // A writer killed in the middle of its record.
        let mut torn = whole.clone();
        torn.extend_from_slice(b"{\"containers\":{\"c1\":{\"id\":");
        fs::write(s.0.join(JOURNAL_FILE), &torn).unwrap();
        assert_eq!(json(&peek(&s.0).unwrap()), json(&state));
        let (store, mut again) = writer(&s.0);
        assert_eq!(json(&again), json(&state));
        run(&mut again, "n1", "c2");
        store.save(&again).unwrap();
        let journal = s.journal();
        assert_eq!(&journal[..whole.len()], &whole[..]);
        assert_eq!(journal.iter().filter(|b| **b == b'\n').count(), 3);
        assert_eq!(json(&peek(&s.0).unwrap()), json(&again));
    }

    #[test]
    fn a_journal_older_than_the_state_file_is_ignored() {
        let s = Scratch::new();
        let (store, mut state) = writer(&s.0);
        state.networks.insert("n1".into(), network("n1"));
        store.save(&state).unwrap();
        run(&mut state, "n1", "c0");
        store.save(&state).unwrap();
        // Killed between writing the state file whole and the new journal:
        // the state file holds everything.
        run(&mut state, "n1", "c1");
        let bytes = serde_json::to_vec(&state).unwrap();
        store
            .files()
            .unwrap()
            .write_atomic(STATE_FILE, &bytes)
            .unwrap();
        assert_eq!(json(&peek(&s.0).unwrap()), json(&state));
        drop(store);
        // The next save starts a journal that goes with the state file.
        let (store, mut again) = writer(&s.0);
        assert_eq!(json(&again), json(&state));
        run(&mut again, "n1", "c2");
        store.save(&again).unwrap();
        assert_eq!(json(&peek(&s.0).unwrap()), json(&again));
        assert_eq!(String::from_utf8(s.journal()).unwrap().lines().count(), 1);
    }

    #[test]
    fn an_older_mvnets_state_file_loads_and_gets_a_journal() {
        let s = Scratch::new();
        let mut state = State::default();
        state.networks.insert("n1".into(), network("n1"));
        run(&mut state, "n1", "c0");
        fs::create_dir(&s.0).unwrap();
        let pretty = serde_json::to_vec_pretty(&state).unwrap();
        fs::write(s.0.join(STATE_FILE), &pretty).unwrap();
        assert_eq!(json(&peek(&s.0).unwrap()), json(&state));
        let (store, mut again) = writer(&s.0);
        assert_eq!(json(&again), json(&state));
        run(&mut again, "n1", "c1");
        store.save(&again).unwrap();
        assert!(s.0.join(JOURNAL_FILE).exists());
        assert_eq!(json(&peek(&s.0).unwrap()), json(&again));
    }

    #[test]
    fn the_state_file_is_written_whole_once_the_journal_outgrows_it() {
        let s = Scratch::new();
        let (store, mut state) = writer(&s.0);
        state.networks.insert("n1".into(), network("n1"));
        store.save(&state).unwrap();
        let first = fs::metadata(s.0.join(STATE_FILE)).unwrap();
        let mut compactions = 0;
        let mut ino = std::os::unix::fs::MetadataExt::ino(&first);
        for i in 0..1000 {
            run(&mut state, "n1", &format!("c{i:04}"));
            store.save(&state).unwrap();
            let now =
                std::os::unix::fs::MetadataExt::ino(&fs::metadata(s.0.join(STATE_FILE)).unwrap());
            if now != ino {
                compactions += 1;
                ino = now;
                assert_eq!(String::from_utf8(s.journal()).unwrap().lines().count(), 1);
            }
            let journal = s.journal().len() as u64;
            let base = fs::metadata(s.0.join(STATE_FILE)).unwrap().len();
            assert!(journal <= base.max(COMPACT_MIN) + 4096, "{journal} {base}");
        }
        assert!(compactions >= 1, "the journal was never folded in");
        assert_eq!(json(&peek(&s.0).unwrap()), json(&state));
    }

    #[test]
    fn a_command_parses_and_saves_only_the_containers_it_touches() {
        let s = Scratch::new();
        let (store, mut state) = writer(&s.0);
        state.networks.insert("n1".into(), network("n1"));
        for i in 0..50 {
            run(&mut state, "n1", &format!("c{i:02}"));
        }
        // Written whole, with the index.
        store.save(&state).unwrap();
        drop(store);
        let file: serde_json::Value =
            serde_json::from_slice(&fs::read(s.0.join(STATE_FILE)).unwrap()).unwrap();
        assert_eq!(file["index"]["c07"]["name"], "c-c07");
        assert_eq!(file["index"].as_object().unwrap().len(), 50);
        let (store, mut again) = writer(&s.0);
        assert_eq!(again.containers.parsed(), 0, "nothing parsed at load");
        assert_eq!(again.containers.id_by_name("c-c31"), Some("c31"));
        rm(&mut again, "c31");
        run(&mut again, "n1", "c50");
        store.save(&again).unwrap();
        assert_eq!(again.containers.parsed(), 1, "the new container only");
        let journal = String::from_utf8(s.journal()).unwrap();
        let record: serde_json::Value =
            serde_json::from_str(journal.lines().last().unwrap()).unwrap();
        assert_eq!(
            record["containers"],
            serde_json::json!({ "c31": null, "c50": json(&again)["containers"]["c50"] })
        );
        // A container read and changed is saved; one only read is not.
        let _ = again.containers["c10"].name.len();
        again
            .containers
            .get_mut("c11")
            .unwrap()
            .labels
            .insert("k".into(), "v".into());
        store.save(&again).unwrap();
        let journal = String::from_utf8(s.journal()).unwrap();
        let record: serde_json::Value =
            serde_json::from_str(journal.lines().last().unwrap()).unwrap();
        let changed: Vec<&String> = record["containers"].as_object().unwrap().keys().collect();
        assert_eq!(changed, ["c11"]);
        assert_eq!(json(&peek(&s.0).unwrap()), json(&again));
    }

    #[test]
    fn an_older_mvnets_state_file_and_journal_load_and_get_an_index() {
        let s = Scratch::new();
        let (store, mut state) = writer(&s.0);
        state.networks.insert("n1".into(), network("n1"));
        run(&mut state, "n1", "c0");
        store.save(&state).unwrap();
        run(&mut state, "n1", "c1");
        store.save(&state).unwrap();
        drop(store);
        // As the mvnet before the index wrote them: no index in the state
        // file, the journal's header naming it.
        s.edit_state_file(|file| {
            file.as_object_mut().unwrap().remove("index");
        });
        assert_eq!(json(&peek(&s.0).unwrap()), json(&state));
        let (store, mut again) = writer(&s.0);
        assert_eq!(json(&again), json(&state));
        assert_eq!(again.containers.id_by_name("c-c1"), Some("c1"));
        run(&mut again, "n1", "c2");
        store.save(&again).unwrap();
        // Written whole, with its index, and a journal with no records.
        let file: serde_json::Value =
            serde_json::from_slice(&fs::read(s.0.join(STATE_FILE)).unwrap()).unwrap();
        let mut indexed: Vec<&String> = file["index"].as_object().unwrap().keys().collect();
        indexed.sort();
        assert_eq!(indexed, ["c0", "c1", "c2"]);
        assert_eq!(String::from_utf8(s.journal()).unwrap().lines().count(), 1);
        assert_eq!(json(&peek(&s.0).unwrap()), json(&again));
    }

    /// Each container as listed: id, name, owner, and per endpoint its
    /// network, ifname, MAC and addresses.
    fn listing(state: &State) -> Vec<String> {
        state
            .containers
            .listed()
            .map(|c| {
                let eps: Vec<String> = c
                    .endpoints
                    .map(|e| {
                        format!(
                            "{} {} {} {:?} {:?}",
                            e.network, e.ifname, e.mac, e.ipv4, e.ipv6
                        )
                    })
                    .collect();
                format!("{} {} {:?} {eps:?}", c.id, c.name, c.owner)
            })
            .collect()
    }

    #[test]
    fn endpoints_are_listed_from_the_index_without_a_parse() {
        let s = Scratch::new();
        let (store, mut state) = writer(&s.0);
        state.networks.insert("n1".into(), network("n1"));
        state.networks.insert("n2".into(), network("n2"));
        run(&mut state, "n1", "c0");
        run(&mut state, "n2", "c1");
        let c1 = state.containers.get_mut("c1").unwrap();
        c1.owner = crate::model::Owner::cni_runtime();
        let ep = c1.endpoints.get_mut("n2").unwrap();
        ep.ifname = "net1".into();
        ep.ipv6 = Some("fd00::5".parse().unwrap());
        store.save(&state).unwrap();
        drop(store);
        let want = [
            "c0 c-c0 Mvnet [\"n1 eth0 02:42:0a:09:00:02 Some(10.9.0.2) None\"]",
            "c1 c-c1 Cni { network: \"\" } [\"n2 net1 02:42:0a:09:00:02 Some(10.9.0.2) Some(fd00::5)\"]",
        ];
        assert_eq!(listing(&state), want, "from the containers");
        let mut read = peek(&s.0).unwrap();
        assert_eq!(listing(&read), want, "from the index");
        assert_eq!(read.containers.parsed(), 0);
        // A container changed since the read is listed as it is now.
        let ep = read
            .containers
            .get_mut("c0")
            .unwrap()
            .endpoints
            .get_mut("n1");
        ep.unwrap().ifname = "eth9".into();
        assert_eq!(listing(&read)[0], want[0].replace("eth0", "eth9"));
    }

    #[test]
    fn an_index_without_what_a_listing_shows_is_listed_by_parsing_and_completed() {
        let s = Scratch::new();
        let (store, mut state) = writer(&s.0);
        state.networks.insert("n1".into(), network("n1"));
        run(&mut state, "n1", "c0");
        run(&mut state, "n1", "c1");
        state.containers.get_mut("c1").unwrap().owner = crate::model::Owner::Docker;
        store.save(&state).unwrap();
        drop(store);
        let want = listing(&state);
        // As the mvnet before listings wrote its index: names, namespaces,
        // endpoint ids and MACs only.
        s.edit_state_file(|file| {
            for head in file["index"].as_object_mut().unwrap().values_mut() {
                let head = head.as_object_mut().unwrap();
                head.remove("owner");
                for e in head["endpoints"].as_array_mut().unwrap() {
                    let e = e.as_object_mut().unwrap();
                    e.retain(|k, _| ["network", "id", "mac"].contains(&k.as_str()));
                }
            }
        });
        let read = peek(&s.0).unwrap();
        assert_eq!(listing(&read), want);
        assert_eq!(read.containers.parsed(), 2, "listed by parsing");
        // The next index written holds the listings.
        let index = read.containers.index();
        assert_eq!(index["c1"].owner, crate::model::Owner::Docker);
        assert_eq!(index["c0"].endpoints[0].ifname.as_deref(), Some("eth0"));
        let fresh = peek(&s.0).unwrap();
        let index = fresh.containers.index();
        assert_eq!(
            index["c1"].endpoints[0].ipv4,
            Some("10.9.0.3".parse().unwrap())
        );
        assert_eq!(fresh.containers.parsed(), 2, "completed from the records");
    }

    #[test]
    fn a_complete_record_that_is_not_one_is_corruption() {
        let s = Scratch::new();
        let (store, mut state) = writer(&s.0);
        state.networks.insert("n1".into(), network("n1"));
        store.save(&state).unwrap();
        drop(store);
        let mut journal = s.journal();
        journal.extend_from_slice(b"{\"containers\":7}\n");
        fs::write(s.0.join(JOURNAL_FILE), &journal).unwrap();
        let e = peek(&s.0).unwrap_err().to_string();
        let path = s.0.join(JOURNAL_FILE);
        assert!(
            e.starts_with(&format!(
                "state journal {} is corrupt: record 1 (line 2) is not one: ",
                path.display()
            )),
            "{e}"
        );
        assert!(
            e.ends_with(
                "; move it away to go back to the state in state.json as it was last written whole"
            ),
            "{e}"
        );
    }

    /// `text` as a state file read (kept for the test's lifetime).
    fn leaked(text: &str) -> &'static Arc<FileText> {
        Box::leak(Box::new(Arc::new(FileText::from(text.to_owned()))))
    }

    /// Container `id`'s record in the state file as the JSON reader finds it.
    fn record_by_json(text: &str, id: &str) -> String {
        let file: StateFileIn = serde_json::from_str(text).unwrap();
        let found = file.containers.iter().find(|Entry(k, _)| k.0 == id);
        found.unwrap().1.to_owned()
    }

    #[test]
    fn the_state_file_has_a_container_per_line_and_is_read_by_line() {
        let s = Scratch::new();
        let (store, mut state) = writer(&s.0);
        three_on_n1(&mut state);
        let odd = state.containers.get_mut("c1").unwrap();
        odd.name = "c-\"one\"\n\t".into();
        store.save(&state).unwrap();
        drop(store);
        let text = s.state_file();
        // `"containers":{`, a line per container, `}` on its own line.
        let start = text.find("\"containers\":{\n").unwrap();
        let lines: Vec<&str> = text[start..].lines().take(5).collect();
        assert!(
            lines[1].starts_with("\"c0\":{") && lines[1].ends_with("},"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("\"c1\":{") && lines[2].ends_with("},"),
            "{text}"
        );
        assert!(
            lines[3].starts_with("\"c2\":{") && lines[3].ends_with('}'),
            "{text}"
        );
        assert!(lines[4].starts_with("},\"containers_crc32\":"), "{text}");
        // Read by line: the same records the JSON reader finds.
        let Some(Sections::Read(file)) = fast_sections(leaked(&text)) else {
            panic!("the layout mvnet writes, its index read (an escape in it)");
        };
        let ids: Vec<&str> = file.containers.iter().map(|Entry(k, _)| &*k.0).collect();
        assert_eq!(ids, ["c0", "c1", "c2"]);
        for Entry(id, record) in &file.containers {
            assert_eq!(*record, record_by_json(&text, &id.0));
        }
        assert_eq!(file.index.map(|i| i.len()), Some(3));
        let read = peek(&s.0).unwrap();
        assert_eq!(read.containers.parsed(), 0);
        assert_eq!(read.containers.id_by_name("c-\"one\"\n\t"), Some("c1"));
        assert_eq!(json(&read), json(&state));
    }

    #[test]
    fn a_state_file_changed_by_hand_is_read_as_json() {
        let s = Scratch::new();
        let (store, mut state) = writer(&s.0);
        state.networks.insert("n1".into(), network("n1"));
        run(&mut state, "n1", "c0");
        run(&mut state, "n1", "c1");
        store.save(&state).unwrap();
        drop(store);
        let text = s.state_file();
        // A record changed in place, its line and layout kept: the CRC
        // tells, and the JSON reader reads the change.
        let edited = text.replacen("\"command\":[]", "\"command\":[\"sh\"]", 1);
        assert_ne!(edited, text);
        assert!(fast_sections(leaked(&edited)).is_none());
        s.write_state_file(edited.as_bytes());
        let read = peek(&s.0).unwrap();
        assert_eq!(read.containers["c0"].command, ["sh"]);
        // A record that is no longer JSON is corruption, said at the read
        // (not a panic when the container is first used).
        let broken = text.replacen("\"command\":[]", "\"command\":[", 1);
        s.write_state_file(broken.as_bytes());
        let e = peek(&s.0).unwrap_err().to_string();
        assert!(e.contains("is corrupt"), "{e}");
    }

    #[test]
    fn a_state_file_written_by_hand_over_lines_is_written_back_a_container_per_line() {
        let s = Scratch::new();
        let (store, mut state) = writer(&s.0);
        state.networks.insert("n1".into(), network("n1"));
        run(&mut state, "n1", "c0");
        run(&mut state, "n1", "c1");
        store.save(&state).unwrap();
        drop(store);
        // Pretty-printed, without the index (so the next save writes it
        // whole): its records span lines.
        let mut file: serde_json::Value = serde_json::from_str(&s.state_file()).unwrap();
        file.as_object_mut().unwrap().remove("index");
        s.write_state_file(&serde_json::to_vec_pretty(&file).unwrap());
        let (store, mut again) = writer(&s.0);
        assert_eq!(json(&again), json(&state));
        run(&mut again, "n1", "c2");
        store.save(&again).unwrap();
        drop(store);
        let text = s.state_file();
        let Some(Sections::Unread { unread, .. }) = fast_sections(leaked(&text)) else {
            panic!("written back in mvnet's layout");
        };
        assert_eq!(unread.saved().len(), 3);
        assert_eq!(json(&peek(&s.0).unwrap()), json(&again));
    }
}

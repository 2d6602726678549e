// Shard: the key-value state machine of one slot range. Apply(entry) performs
// one write atomically together with the shard's applied index and key
// counters. It is the seam where Raft plugs in: a replica applies committed
// entries here, in log order. Owned by one worker thread; only the counters
// may be read from other threads.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "kv/entry.h"
#include "kv/staged_values.h"
#include "kv/value.h"
#include "resp/writer.h"
#include "storage/engine.h"

namespace shoal::kv {

inline constexpr int kDatabasesMax = 1024;

struct Limits {
  int64_t proto_max_bulk_len = 512LL * 1024 * 1024;  // longest string value
  int databases = 16;
};

// The staged changes of one apply: reads see earlier writes of the same apply.
class Shard;

// Told which lists and sorted sets writes changed, once they are stored (the
// server wakes the blocked pops that wait on them). Called on the thread
// that applies.
struct ChangedKey {
  uint16_t db;
  std::string key;
  ValueType type;  // kList or kZSet
};
class KeyWatcher {
 public:
  virtual ~KeyWatcher() = default;
  // Whether anything waits at all (checked before keys are collected).
  virtual bool Watching() const = 0;
  virtual void KeysChanged(std::span<const ChangedKey> keys) = 0;
};

// The bytes that the key metadata caches of one node's shards may hold
// together, each entry charged its key's length and kEntryBytes for its slot.
// Shared by caches on any worker (relaxed counters: the bound may be passed
// by a few entries while two workers insert at once).
class KeyMetaBudget {
 public:
  // A slot (24 bytes; the table is 3/8 to 3/4 full, so 32-64 bytes an
  // entry) and some of the keys' string slack (that string grows by
  // doubling: with long keys, memory can reach twice the charge).
  static constexpr size_t kEntryBytes = 56;
  explicit KeyMetaBudget(size_t max_bytes) : max_bytes_(max_bytes) {}
  size_t max_bytes() const { return max_bytes_; }
  size_t used_bytes() const { return Load(used_bytes_); }
  size_t entries() const { return Load(entries_); }

 private:
  friend class KeyMetaCache;
  static size_t Load(const std::atomic<int64_t>& v) {
    return static_cast<size_t>(std::max<int64_t>(0, v.load(std::memory_order_relaxed)));
  }
  const size_t max_bytes_;
  std::atomic<int64_t> used_bytes_{0};
  std::atomic<int64_t> entries_{0};
  std::atomic<int64_t> caches_{0};  // the caches drawing on it, detached ones not counted
};

// What apply knows of keys' committed state without reading storage: whether
// a key exists and its expiry. Filled by apply's reads and commits, emptied by
// FLUSHDB/FLUSHALL and on storage errors. It lets a blind write (SET, MSET)
// skip the read it needs for the counters and the expiry index when the key
// was seen recently. Owner thread only.
//
// Bounded by a budget that the node's shards share, so that the shards that
// are written get the room (with hash tags, a client's keys all lie in one
// slot): while the budget is spent, a cache that holds at least its even share
// starts over, and one that holds less may still grow to it.
class KeyMetaCache {
 public:
  struct Meta {
    bool exists;
    int64_t expire_at_ms;
    bool collection;  // a hash (its elements must go with it)
  };
  // A cache with a budget of its own of max_bytes (0: disabled).
  explicit KeyMetaCache(size_t max_bytes);
  // A cache that draws on `budget` with the node's other shards.
  explicit KeyMetaCache(std::shared_ptr<KeyMetaBudget> budget);
  ~KeyMetaCache();
  KeyMetaCache(const KeyMetaCache&) = delete;
  KeyMetaCache& operator=(const KeyMetaCache&) = delete;
  // A data key's hash as the calls below take it: StagedValues::Hash, so
  // that an apply's lookups and ApplyTxn::PublishTo use the hashes its
  // staged values keep instead of hashing the key again.
  static uint64_t Hash(std::string_view dkey) { return StagedValues::Hash(dkey); }
  // The hash of the data key of (db, key), made without an allocation.
  static uint64_t DataKeyHash(uint16_t db, std::string_view key);
  std::optional<Meta> Find(std::string_view dkey) const { return Find(dkey, Hash(dkey)); }
  std::optional<Meta> Find(std::string_view dkey, uint64_t hash) const;
  void Set(std::string_view dkey, Meta meta) { Set(dkey, Hash(dkey), meta); }
  void Set(std::string_view dkey, uint64_t hash, Meta meta);
  // Start loading into the CPU's cache what a Find or Set of the key with
  // this hash reads, a few keys ahead of it: the table slot where its
  // search begins, then (once that slot is there) the key bytes it
  // compares. Change nothing.
  void PrefetchSlot(uint64_t hash) const;
  void PrefetchKey(uint64_t hash) const;
  void PrefetchSlot(std::string_view dkey) const { PrefetchSlot(Hash(dkey)); }
  // Forgets every key and gives back the table's memory.
  void Clear();
  // Clears, and stops drawing on the budget for good (a retired shard's
  // cache, which no apply will use again): Set does nothing after it.
  void Detach();
  // An inactive cache is empty and draws nothing (Set does nothing) until
  // made active again: a follower's, while its leader's hints spare its
  // blind writes the read (the budget goes to the shards this node leads).
  void SetActive(bool active);
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  size_t bytes() const { return bytes_; }

 private:
  // An open-addressing table (linear probing, at most 3/4 full) over one
  // string holding every cached key once: about 60 bytes a key where a node
  // map took about 120, and one cache miss a lookup instead of a chain.
  struct Slot {
    uint64_t hash = 0;  // 0: empty (a key's hash is never 0)
    int64_t expire_at_ms = 0;
    uint32_t key_at = 0;  // in keys_
    uint16_t key_len = 0;
    uint8_t flags = 0;  // 1: exists, 2: collection
  };
  // What a slot holds of a key's Hash (never 0, which marks an empty slot).
  static uint64_t Stored(uint64_t hash) { return hash == 0 ? 1 : hash; }
  // The slot holding dkey (`stored`: Stored(its hash)), or the empty one
  // where it would go.
  size_t Probe(std::string_view dkey, uint64_t stored) const;
  void Grow();
  // Whether a new key may be added (after a start over where this cache
  // holds its share of a spent budget).
  bool MakeRoom(size_t charge);
  // Clears and stops drawing on the budget (Detach, SetActive(false)).
  void Leave();
  std::shared_ptr<KeyMetaBudget> budget_;
  bool attached_ = true;
  bool retired_ = false;  // Detach: never attached again
  size_t size_ = 0;
  size_t bytes_ = 0;  // charged to the budget
  std::vector<Slot> slots_;  // a power of two in size, or empty
  std::string keys_;
};

class ApplyTxn {
 public:
  ApplyTxn(Shard* shard, storage::Engine* engine, storage::WriteBatch* batch, int64_t now_ms)
      : shard_(shard), engine_(engine), batch_(batch), now_ms_(now_ms) {}

  int64_t now_ms() const { return now_ms_; }
  // Entries applied together each bring their own time.
  void set_now_ms(int64_t now_ms) { now_ms_ = now_ms; }
  // The entry being applied, whose hints (what the leader knew of its keys)
  // spare a blind Put its read; null: none.
  void set_entry(const Entry* entry) { entry_ = entry; }
  // The live (unexpired) value of key, or nullopt. An expired key found here
  // is deleted as part of this apply, as Redis deletes keys on access.
  Result<std::optional<std::string>> GetLive(uint16_t db, std::string_view key);
  // Stores an encoded value (see value.h) for key.
  Status Put(uint16_t db, std::string_view key, std::string encoded);
  // Deletes key; *existed says whether a live value was there.
  Status Delete(uint16_t db, std::string_view key, bool* existed);
  // Deletes every key of the shard in `db`, or in all databases if nullopt.
  // Must be the only entry of its apply (see ApplyBatch). Fails if a read
  // of the keys to delete fails.
  Status Flush(std::optional<uint16_t> db);
  // Removes the expiry index entry of key at `expire_at_ms` (a stale hint).
  void DropExpiryIndex(uint16_t db, std::string_view key, int64_t expire_at_ms);

  // Elements of collections (a hash's fields: storage::ElementKey). The
  // collection's value keeps their count; a command changes both. Deleting
  // a collection, or replacing it by a value of another type (Put), deletes
  // its elements in the same apply: one by one when there are few, else as
  // one range tombstone (O(1); compaction reclaims the space).
  Result<std::optional<std::string>> GetElement(uint16_t db, std::string_view key, std::string_view element);
  void PutElement(uint16_t db, std::string_view key, std::string_view element, std::string_view value);
  void DeleteElement(uint16_t db, std::string_view key, std::string_view element);
  // Calls fn(element, value) for each element of key in element order (this
  // apply's writes included), from the first at or after `from`, until fn
  // returns false.
  Status ForEachElement(uint16_t db, std::string_view key,
                        const std::function<bool(std::string_view, std::string_view)>& fn,
                        std::string_view from = {});
  // As ForEachElement, from the last element before `before` (empty: the
  // last of all) down to the first.
  Status ForEachElementReverse(uint16_t db, std::string_view key,
                               const std::function<bool(std::string_view, std::string_view)>& fn,
                               std::string_view before = {});
  // Deletes the elements of key from the first at or after `from` to
  // before `to` (empty: to the last), `n` of them (one by one when few, else
  // one range tombstone).
  Status DeleteElementRange(uint16_t db, std::string_view key, std::string_view from, std::string_view to,
                            uint64_t n);
  // At most this many elements are deleted one by one (see above): fewer
  // range tombstones, which every later read of the memtable must consult.
  static constexpr uint64_t kPointDeleteMax = 1024;

  // Sets the version of every collection the entry just applied wrote (its
  // elements, or its value: a TTL, a new collection) to the entry's own
  // (ApplyBatch calls it after each entry).
  Status SealElementWrites();
  // Collects the lists and sorted sets that SealElementWrites finds still
  // there (for a KeyWatcher).
  void set_collect_changed(bool on) { collect_changed_ = on; }
  const std::vector<ChangedKey>& changed() const { return changed_; }
  // The entry's version: [shard u64 BE][log index << 20 | place in its log
  // entry u64 BE], which no other entry of any shard has, so a key's
  // versions never repeat (across deletes, renames, splits) and every
  // replica computes the same.
  void set_version(uint64_t log_index, uint64_t place);

  // A read-only view of the store as this apply has changed it so far (for
  // reads inside a transaction, MULTI ... EXEC). Valid while the apply
  // runs and until its next write; snapshots of it are the view itself.
  // With `failure`, the view keeps there the first of its reads that
  // failed in storage (a Get's error, an iterator's): an apply that writes
  // what it read (SORT ... STORE) must then fail, not write what one
  // replica alone read.
  std::unique_ptr<storage::Engine> NewReadView(Status* failure = nullptr);
  Shard* shard() const { return shard_; }

  struct Counts {
    int64_t keys = 0;
    int64_t expires = 0;
  };
  const std::map<uint16_t, Counts>& count_deltas() const { return deltas_; }
  // Records the final state of every key this apply touched.
  void PublishTo(KeyMetaCache* cache) const;

 private:
  Result<std::optional<std::string>> GetRaw(std::string_view dkey);
  // The current entry's hint for key in db, if it carries one.
  const KeyHint* HintFor(uint16_t db, std::string_view key) const;
  // Deletes the elements of key, whose value was `old` (if a collection).
  Status DropElementsOf(uint16_t db, std::string_view key, const std::string& old);
  Shard* shard_;
  storage::Engine* engine_;
  storage::WriteBatch* batch_;
  int64_t now_ms_;
  const Entry* entry_ = nullptr;
  StagedValues staged_;  // by data key: values read or written in this apply
  std::map<std::string, std::optional<std::string>> elements_;  // by element key: written in this apply
  // Element key ranges [first, second) deleted by a range tombstone in this apply.
  std::vector<std::pair<std::string, std::string>> cleared_;
  const std::pair<std::string, std::string>* ClearedRangeOf(std::string_view ekey) const;
  std::map<uint16_t, Counts> deltas_;
  std::set<std::pair<uint16_t, std::string>> touched_;  // collections whose elements changed
  bool collect_changed_ = false;
  std::vector<ChangedKey> changed_;
  std::string version_;
  friend class TxnView;
};

// How a command writes: `apply` changes state through txn and writes the
// reply. It must be deterministic in (state, entry).
using ApplyFn = Status (*)(ApplyTxn& txn, const Entry& entry, const Limits& limits,
                           resp::Writer* reply);

// The shard's state as files, for snapshots that travel beside Raft
// (replica::SnapshotCourier): taken by Shard::BeginExport on the owner
// thread from a consistent storage view, then written by Write on any
// thread while the shard goes on applying. The files: data.sst (the slot
// range's data keys and a sentinel naming the shard and index), expiry.sst
// (its expiry index entries, when it has any) and counters.
class ShardExport {
 public:
  ShardExport(storage::Engine* engine, std::unique_ptr<storage::Snapshot> view, uint32_t id,
              uint16_t slot_begin, uint16_t slot_end, uint64_t index,
              std::vector<std::pair<int64_t, int64_t>> counts)
      : engine_(engine), view_(std::move(view)), id_(id), slot_begin_(slot_begin), slot_end_(slot_end),
        index_(index), counts_(std::move(counts)) {}
  uint64_t index() const { return index_; }
  // The counters are estimates (a recount was pending): the image says so.
  void set_recount(bool recount) { recount_ = recount; }
  // Writes the files into `dir` (created; must not hold other files).
  Status Write(const std::string& dir) const;
  // The data keys as one SST file at `path` (also used by inline images).
  Status WriteDataSst(const std::string& path) const;
  // The counter records (kind 'k'/'e', db, value), as the image's records.
  std::string CounterRecords() const;
  // Calls fn with every expiry index key of the range, in key order.
  Status ForEachExpiry(const std::function<Status(std::string_view)>& fn) const;

 private:
  storage::Engine* engine_;
  std::unique_ptr<storage::Snapshot> view_;
  uint32_t id_;
  uint16_t slot_begin_, slot_end_;
  uint64_t index_;
  std::vector<std::pair<int64_t, int64_t>> counts_;  // per db: keys, expires
  bool recount_ = false;
};

class Shard {
 public:
  // meta_cache_bytes bounds the KeyMetaCache (0 disables it).
  Shard(storage::Engine* engine, uint32_t id, uint16_t slot_begin, uint16_t slot_end,
        size_t meta_cache_bytes = 4 << 20);
  // The KeyMetaCache draws on `meta_budget`, shared with other shards.
  Shard(storage::Engine* engine, uint32_t id, uint16_t slot_begin, uint16_t slot_end,
        std::shared_ptr<KeyMetaBudget> meta_budget);

  // Loads the applied index and counters from storage.
  Status Load();
  // Told of the lists and sorted sets each apply changes (null: nobody).
  void set_key_watcher(KeyWatcher* watcher) { watcher_ = watcher; }
  // Applies one entry (index = applied_index() + 1) and writes its reply.
  // Returns the storage write sequence (for durability waits).
  Result<uint64_t> Apply(const Entry& entry, ApplyFn fn, const Limits& limits, resp::Writer* reply);
  // Applies entries in order as one atomic storage write (group commit):
  // the same state and replies as applying them one by one. fns[i] applies
  // entries[i]. On a storage failure every reply of the batch is that error.
  // applied_to, when not 0, is the applied index after the batch (the Raft
  // index of the log entry that carried it); otherwise each entry counts one.
  // raft_indices (when several log entries are applied together): the
  // index of the log entry that carried each entry (collection versions
  // come from it, so replicas that group entries differently agree).
  Result<uint64_t> ApplyBatch(std::span<const Entry> entries, std::span<const ApplyFn> fns,
                              const Limits& limits, resp::Writer* reply, uint64_t applied_to = 0,
                              std::span<const uint64_t> raft_indices = {});
  // As ApplyBatch, but the writes are staged into `batch`, which the caller
  // writes (with other shards' applies: one storage write for many); once
  // it is written, *written must run (it publishes the new key counts and
  // key metadata) before this shard stages or applies anything else. On a
  // failure every reply is the error, and what the batch holds of these
  // entries must not be written (the caller stops the node).
  bool staged_unwritten() const { return staged_unwritten_; }
  Status StageBatch(std::span<const Entry> entries, std::span<const ApplyFn> fns, const Limits& limits,
                    resp::Writer* reply, uint64_t applied_to, std::span<const uint64_t> raft_indices,
                    storage::WriteBatch& batch, std::function<void()>* written);
  // Stages "applied up to index" for a log entry that changes no data.
  void StageApplied(uint64_t index, storage::WriteBatch& batch);
  // The applied index the stored record holds once what is staged is
  // written (an apply that changes nothing does not rewrite it).
  uint64_t recorded_applied() const { return recorded_applied_; }

  // The shard's whole state (its slot range's keys, expiry index entries and
  // counters) as one image, for Raft snapshots. Read from a consistent view.
  Result<std::string> ExportImage() const;
  // The same state as files written later, off this thread (ShardExport).
  std::unique_ptr<ShardExport> BeginExport() const;
  // A record (raft column family) that says an import is under way; see
  // StageImage.
  struct ImportMarker {
    std::string key, value;
  };
  // Replaces the shard's state by `image`, taken at applied index `index`;
  // call FinishImage() once `batch` is written. A version-2 image carries
  // the data as an SST file: the clearing of the range, the small records
  // and `marker` are written durably first, then the file is ingested, and
  // `batch` gets the rest (the applied index); whoever wrote the marker
  // removes it in `batch`, and after a crash in between, ResumeImage
  // finishes the import. Corrupt images change nothing.
  Status StageImage(std::string_view image, uint64_t index, storage::WriteBatch& batch,
                    const ImportMarker* marker = nullptr);
  // Like StageImage, from the files a ShardExport wrote into `dir` (which
  // the import empties: its files move into the store).
  Status StageImportFiles(const std::string& dir, uint64_t index, storage::WriteBatch& batch,
                          const ImportMarker& marker);
  // Stages deleting everything the shard holds here (data, expiry index,
  // counters, applied index): its replica leaves this node.
  Status StageDestroy(storage::WriteBatch& batch);
  // Finishes an import that a crash interrupted (the marker was found).
  // Its files are read through as they are ingested (they were checked
  // before the crash, but this is rare and not on a hot path).
  Status ResumeImage(uint64_t index, storage::WriteBatch& batch) { return ResumeImage(index, batch, true); }
  void FinishImage();
  // Stages deleting the data, expiry index entries and counters of the range.
  Status StageClear(storage::WriteBatch& batch);
  // The key an image's data SST ends with (its value is the index): in the
  // range's last slot, under a database number no key uses, so the file's
  // key range is the shard's own and ingests below other shards' files
  // instead of overlapping them all.
  static std::string SentinelKey(uint32_t id, uint16_t slot_end);
  // Where images of versions before that one put it (past every slot).
  static std::string LegacySentinelKey(uint32_t id);
  // A slot range as stored ([begin u16 BE][end u16 BE]).
  static std::string EncodeRange(uint16_t begin, uint16_t end);
  // The range an image names (inline, or the files a ShardExport wrote
  // into `dir`); false if it names none or cannot be read.
  static bool ImageRange(std::string_view image, uint16_t* begin, uint16_t* end);
  // Whether the files of an image in `dir` (ShardExport::Write) match the
  // checksums they carry: Corruption if not.
  static Status CheckImageFiles(const std::string& dir);
  static bool ImageFilesRange(const std::string& dir, uint16_t* begin, uint16_t* end);
  // Whether the shard holds `slot` now. Any thread. The range is part of the
  // replicated state: it shrinks only when the shard splits (StageSplit) or
  // takes an image of a later state, and a write of a slot the shard no
  // longer holds is refused at apply, the same way on every replica.
  bool OwnsSlot(uint16_t slot) const {
    return slot >= slot_begin_.load(std::memory_order_acquire) && slot < slot_end_.load(std::memory_order_acquire);
  }

  // Hands the slots [slot, slot_end()) to a new shard `child`, as the log
  // entry at `index` says (docs/design/splits.md). The data stays where it
  // is (keys are slot-prefixed); staged into `batch`: this shard's smaller
  // range and applied index, and the child's range and applied index 1 (a
  // child's Raft log starts at 1); write_child false: this shard's records
  // only. FinishSplit() once the batch is written. Fails, staging nothing,
  // unless slot_begin() < slot < slot_end(). Reads nothing: the key
  // counters of both are recounted later, off the owner thread (Recount).
  Status StageSplit(uint32_t child, uint16_t slot, uint64_t index, storage::WriteBatch& batch,
                    bool write_child = true);
  void FinishSplit();

  // Key counters that need a recount (after a split: this shard still
  // counts the keys it gave away, the child starts at zero, so a node that
  // holds both still sums them right). Kept on disk until the recount ends.
  // Owner thread.
  bool NeedsRecount() const { return recount_pending_; }
  // Per db: keys, expiring keys.
  using Counts = std::vector<std::pair<int64_t, int64_t>>;
  struct RecountJob {
    uint64_t generation = 0;
    // Any thread: counts the range in a view taken at Begin; gives up (an
    // error) once `stop` is set.
    std::function<Result<Counts>(const std::atomic<bool>& stop)> count;
  };
  // Owner thread: starts a recount as of now (null if none is needed).
  std::optional<RecountJob> BeginRecount();
  // Owner thread: the counters become the job's counts plus what applied
  // since it began; false (nothing changed) if the job is stale (a flush,
  // an image or a split came between: start another).
  Result<bool> FinishRecount(uint64_t generation, const Counts& counted);

  struct ExpiredKey {
    uint16_t db;
    std::string key;
    int64_t expire_at_ms;
  };
  // Up to `max` expiry index entries due at `now_ms`, oldest first, for
  // active expiry to propose as kOpExpireKey entries.
  std::vector<ExpiredKey> DueExpiries(int64_t now_ms, size_t max) const;

  uint64_t applied_index() const { return applied_index_.load(std::memory_order_relaxed); }
  size_t meta_cache_size() const { return meta_cache_.size(); }
  // The shard's replica is retired (on its worker): its key metadata cache
  // gives its share of the node's budget back for good.
  void DetachMetaCache() { meta_cache_.Detach(); }
  // See KeyMetaCache::SetActive. Owner thread.
  void SetMetaCacheActive(bool active) { meta_cache_.SetActive(active); }
  // What key's state is as of applied_index(), for the hint of a blind write
  // that the leader proposes (the cache, else a read, which fills it);
  // nullopt on a storage error. Owner thread, not while staged_unwritten().
  std::optional<KeyMetaCache::Meta> CommittedMeta(uint16_t db, std::string_view key);
  struct KeyRef {
    uint16_t db;
    std::string_view key;
  };
  // CommittedMeta of each of `keys` (out[i] for keys[i]), with the keys the
  // cache does not know read from storage together: one MultiGet, which
  // checks each file's filter once for all of them (a read of a missing key
  // costs about half a Get's in batches of 16: docs/PERFORMANCE.md).
  void CommittedMetas(std::span<const KeyRef> keys, std::span<std::optional<KeyMetaCache::Meta>> out);
  // Blind writes applied with a hint instead of the cache or a read.
  uint64_t hinted_puts() const { return hinted_puts_.load(std::memory_order_relaxed); }
  uint32_t id() const { return id_; }
  uint16_t slot_begin() const { return slot_begin_.load(std::memory_order_acquire); }
  uint16_t slot_end() const { return slot_end_.load(std::memory_order_acquire); }
  // Keys stored (live or expired but not yet removed) in db. Any thread.
  int64_t KeyCount(uint16_t db) const { return counts_[db].keys.load(std::memory_order_relaxed); }
  int64_t ExpiresCount(uint16_t db) const {
    return counts_[db].expires.load(std::memory_order_relaxed);
  }

 private:
  friend class ApplyTxn;
  std::string MetaKey(std::string_view name) const { return MetaKeyOf(id_, name); }
  static std::string MetaKeyOf(uint32_t id, std::string_view name);
  static std::string CountKeyOf(uint32_t id, char kind, uint16_t db);
  void StageRange(uint16_t begin, uint16_t end, storage::WriteBatch& batch) const;
  std::string SnapshotDir() const;
  std::string IncomingSstPath(uint64_t index) const;
  std::string IncomingExpiryPath(uint64_t index) const;
  // Writes `pre` (the clearing, small records, the marker) durably, then
  // ingests the staged files (the common tail of both imports).
  // `verify`: RocksDB reads the files through at ingest (an image whose
  // files no checksum of ours covered: from a node that predates them).
  Status IngestStaged(storage::WriteBatch& pre, uint64_t index, storage::WriteBatch& batch, bool verify);
  Status ResumeImage(uint64_t index, storage::WriteBatch& batch, bool verify);
  // The sentinel of the image being imported (its range) or, when none is,
  // of the shard's range: after a restart the stored range is the image's.
  std::string ImportSentinelKey() const { return SentinelKey(id_, pending_end_ != 0 ? pending_end_ : slot_end()); }
  std::string CountKey(char kind, uint16_t db) const;
  // Stages the applied index and the key counts an apply changed (nothing
  // when it wrote nothing); PublishCounts makes them visible once written.
  void StageCommit(storage::WriteBatch& batch, const std::map<uint16_t, ApplyTxn::Counts>& d, size_t entries,
                   uint64_t applied_to, bool wrote);
  void PublishCounts(const std::map<uint16_t, ApplyTxn::Counts>& d);
  // A failed apply of `entries` entries: its replies (from `mark` in the
  // reply buffer) become the error, and the key metadata cache is emptied.
  void FailApply(resp::Writer* reply, size_t mark, size_t entries, const Status& s);
  bool staged_unwritten_ = false;  // a StageBatch whose `written` has not run
  uint64_t recorded_applied_ = 0;  // recorded_applied()
  struct PendingCount {
    char kind;
    uint16_t db;
    int64_t value;
  };
  std::vector<PendingCount> pending_counts_;
  // An image's range, set by FinishImage (0, 0: the image named none).
  uint16_t pending_begin_ = 0, pending_end_ = 0;
  // A staged split: the first slot given away.
  std::optional<uint16_t> pending_split_;
  // Recount (see NeedsRecount): pending, the generation a finished job must
  // match, the generation of the job running (0: none) and what applied
  // since it began. An image's flag is set by FinishImage.
  bool recount_pending_ = false;
  bool pending_image_recount_ = false;
  uint64_t recount_generation_ = 1;
  uint64_t recount_running_ = 0;
  Counts recount_deltas_;

  struct AtomicCounts {
    std::atomic<int64_t> keys{0};
    std::atomic<int64_t> expires{0};
  };
  storage::Engine* engine_;
  uint32_t id_;
  std::atomic<uint16_t> slot_begin_, slot_end_;  // written on the owner thread only
  // Written on the owner thread; INFO reads it from any (a sum, no order).
  std::atomic<uint64_t> applied_index_{0};
  std::unique_ptr<storage::WriteBatch> batch_;
  std::unique_ptr<AtomicCounts[]> counts_;
  KeyMetaCache meta_cache_;
  std::atomic<uint64_t> hinted_puts_{0};  // written on the owner thread; INFO reads it
  KeyWatcher* watcher_ = nullptr;
};

}  // namespace shoal::kv

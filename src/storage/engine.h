// Engine: shoal's only door to RocksDB. Holds the data, expiry-index and meta
// column families of one node, counts writes, and syncs the WAL on request so
// that a runtime thread can group-commit many writes with one fsync.
// Thread-safe: reads and Sync may run on any thread; writes to one shard must
// come from that shard's owner (the caller orders them).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace shoal::storage {

// kRaft holds every Raft group's log, hard state and log start (raft_store.h).
enum class Cf : uint8_t { kData = 0, kExpiry = 1, kMeta = 2, kRaft = 3 };

struct EngineOptions {
  std::string dir;
  // Memory the node may hold: block cache and memtables are charged to one
  // cache of 1/2 of this (memtables at most 1/4); the rest is left for the
  // process, compaction buffers and client buffers.
  int64_t memory_budget_bytes = 1LL << 30;
  // WAL files written ahead with zeros, so that a sync overwrites blocks
  // already on disk (wal_file.h); off, RocksDB appends them as it does alone.
  bool zero_ahead_wal = true;
  // Told a line for each WAL that opening cut after a crash (wal_file.h).
  std::function<void(const std::string&)> note = nullptr;
};

// A set of changes applied atomically by Engine::Write. Made by
// Engine::NewBatch and bound to that engine; reusable after Clear().
class WriteBatch {
 public:
  ~WriteBatch();
  WriteBatch(const WriteBatch&) = delete;
  WriteBatch& operator=(const WriteBatch&) = delete;

  void Put(Cf cf, std::string_view key, std::string_view value);
  void Delete(Cf cf, std::string_view key);
  // Deletes every key in [begin, end) of `cf`.
  void DeleteRange(Cf cf, std::string_view begin, std::string_view end);
  void Clear();
  size_t Count() const;

  // One change of a batch, as Visit reports it.
  struct Op {
    enum class Kind : uint8_t { kPut, kDelete, kDeleteRange } kind;
    Cf cf;
    std::string_view key;    // the range's begin for kDeleteRange
    std::string_view value;  // the range's end for kDeleteRange; empty for kDelete
  };
  class Visitor {
   public:
    virtual ~Visitor() = default;
    virtual void Visit(const Op& op) = 0;
  };
  // Reports every change in the order it was added (for tests that record
  // or undo writes).
  void Visit(Visitor& visitor) const;

 private:
  friend class RocksEngineAccess;
  struct Impl;
  explicit WriteBatch(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// A forward iterator over one column family. Not thread-safe; owned by its user.
// On Cf::kData it is a prefix iterator: after Seek(k) it is only defined while
// keys share k's 4-byte [slot][db] prefix, so callers must stop at its end.
class Iterator {
 public:
  virtual ~Iterator() = default;
  virtual void Seek(std::string_view target) = 0;
  virtual void SeekToFirst() = 0;
  virtual bool Valid() const = 0;
  virtual void Next() = 0;
  // The last key at or before target (data iterators: within target's [slot][db]).
  virtual void SeekForPrev(std::string_view target) = 0;
  virtual void Prev() = 0;
  virtual std::string_view key() const = 0;
  virtual std::string_view value() const = 0;
  virtual Status status() const = 0;
};

// A consistent point-in-time view for multi-key reads.
class Snapshot {
 public:
  virtual ~Snapshot() = default;
};

// Builds one SST file of sorted keys for one column family (Engine::NewSstWriter).
class SstWriter {
 public:
  virtual ~SstWriter() = default;
  // Keys must come in strictly increasing order. Puts only: what an
  // ingested file changes is its first to last key (the value cache forgets
  // that range; a file with deletions would make it forget everything).
  virtual Status Put(std::string_view key, std::string_view value) = 0;
  // Finishes and syncs the file; fails if no key was added.
  virtual Status Finish() = 0;
};

struct MemoryUsage {
  int64_t block_cache_bytes = 0;  // includes memtables charged to the cache
  int64_t memtable_bytes = 0;
  int64_t table_readers_bytes = 0;
  int64_t cache_capacity_bytes = 0;
  int64_t value_cache_bytes = 0;  // ReadVia::kCache's values, apart from the block cache
  int64_t value_cache_capacity_bytes = 0;
  uint64_t value_cache_hits = 0;
  uint64_t value_cache_misses = 0;
};

// Where a point read of the data CF at the latest state (no snapshot) looks.
// kStore: the store alone (apply's reads, which a write of the key follows).
// kCache: a cache of values first, which a miss fills (clients' reads:
// GET). Either answers what the store holds at the time of the read.
enum class ReadVia : uint8_t { kStore, kCache };

// The first, last and next-to-last keys of an SST file (before_last is
// empty for a file of one key), read through its index; an error if the file
// cannot be read or holds no key.
struct SstBounds {
  std::string first, last, before_last;
  uint64_t deletions = 0;  // point and range deletions (the keys above are the live ones only)
};
Result<SstBounds> ReadSstBounds(const std::string& path);

class Engine {
 public:
  // Opens (creating if needed) the database under options.dir.
  static Result<std::unique_ptr<Engine>> Open(const EngineOptions& options);
  virtual ~Engine() = default;

  // Reads `key`; NotFound if absent. `snapshot` may be null (latest state).
  // `via` matters only for the data CF at the latest state.
  virtual Status Get(Cf cf, std::string_view key, std::string* value, const Snapshot* snapshot = nullptr,
                     ReadVia via = ReadVia::kStore) = 0;
  // Reads keys[i] into values[i], with statuses[i] as Get's (values and
  // statuses are as long as keys). The same answers as a Get of each, for
  // less: RocksDB's MultiGet takes the read view, and searches an index or
  // filter block, once for all the keys that need it. This default is a
  // Get of each.
  virtual void MultiGet(Cf cf, std::span<const std::string_view> keys, std::span<std::string> values,
                        std::span<Status> statuses, const Snapshot* snapshot = nullptr,
                        ReadVia via = ReadVia::kStore);
  // Applies `batch` atomically, without waiting for the disk. The write is
  // visible at once; it is durable once durable_seq() >= the returned seq.
  virtual Result<uint64_t> Write(WriteBatch& batch) = 0;
  // A new, empty batch for this engine.
  virtual std::unique_ptr<WriteBatch> NewBatch() = 0;
  // Makes every write issued before the call durable (fsync of the WAL), and
  // returns the write sequence it covers. Safe to call while others write.
  virtual Result<uint64_t> Sync() = 0;

  // On the data CF, an iterator within one [slot][db] prefix: it turns
  // invalid where the prefix of its last seek target ends (both directions).
  virtual std::unique_ptr<Iterator> NewIterator(Cf cf, const Snapshot* snapshot = nullptr) = 0;
  // An iterator that may cross [slot][db] prefixes of the data CF (slower
  // seeks: for scans of whole slot ranges).
  virtual std::unique_ptr<Iterator> NewScanIterator(Cf cf, const Snapshot* snapshot = nullptr) = 0;
  // A writer of an SST file at `path` in cf's format (for snapshots).
  virtual std::unique_ptr<SstWriter> NewSstWriter(Cf cf, const std::string& path) = 0;
  // Adds the SST file at `path` to cf atomically and durably; its keys
  // supersede every earlier write. The file is moved into the store.
  // `verify`: RocksDB reads it through first, checking every block's
  // checksum (for a file nothing checked whole before; a shard's worth of
  // reading, while the store's writes wait).
  virtual Status IngestSst(Cf cf, const std::string& path, bool verify) = 0;
  // The store's folder (snapshot files are staged under it).
  virtual const std::string& dir() const = 0;
  virtual std::unique_ptr<Snapshot> NewSnapshot() = 0;
  virtual MemoryUsage Memory() = 0;
  // Bytes of live SST and WAL data on disk (approximate).
  virtual int64_t DiskBytes() = 0;
  // Approximate bytes of cf's keys in [begin, end), memtables included.
  virtual uint64_t ApproximateSize(Cf cf, std::string_view begin, std::string_view end) = 0;
  // Grows with every write or ingestion, as it becomes visible to reads (a
  // read that sees a write saw this number reach it first).
  virtual uint64_t VisibleSeq() = 0;

  uint64_t write_seq() const { return write_seq_.load(std::memory_order_acquire); }
  uint64_t durable_seq() const { return durable_seq_.load(std::memory_order_acquire); }

 protected:
  std::atomic<uint64_t> write_seq_{0};
  std::atomic<uint64_t> durable_seq_{0};
};

}  // namespace shoal::storage

// ValueCache: values of the data column family that clients read, kept in
// memory so that a repeated point read skips RocksDB's read path (its
// memtable, filter, index and data block searches: 2.4 us of a pipelined
// GET's hit where redis-server spends 1.0). docs/design/storage.md, "The
// value cache", gives the protocol and why it is linearizable.
//
// The invariant: an entry the cache holds for a key is the key's value in
// the store at every moment a lookup can find it. Writers keep it:
// - a write of a key erases the key's entry before the store changes, and
//   no read may add an entry for it while the write is in flight (its
//   stripe's count of writes in flight) or if a write of its stripe began
//   after the read did (the stripe's generation: a ticket);
// - a write over a range (a range deletion, an ingested file) moves the
//   cache to a new epoch before the store changes: entries of the old one
//   are never answered again, and lookups check that the epoch did not move
//   while they looked.
// Thread-safe: reads, fills and writes may run on any thread. Owned by the
// engine; internal to src/storage.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace rocksdb {
class Cache;
class Slice;
}

namespace shoal::storage {

class ValueCache {
 public:
  // Keys or values larger than these are neither cached nor looked up.
  static constexpr size_t kKeyBytesMax = 256;
  static constexpr size_t kValueBytesMax = 16 << 10;

  explicit ValueCache(size_t capacity_bytes);
  ~ValueCache();
  ValueCache(const ValueCache&) = delete;
  ValueCache& operator=(const ValueCache&) = delete;

  static bool Cacheable(std::string_view key) { return key.size() <= kKeyBytesMax; }

  // The value cached for `key` into *value; false if none (or the key is
  // not Cacheable).
  bool Find(std::string_view key, std::string* value);

  // Taken before a read of `key` (a lookup, or the store): the state of
  // its stripe and the epoch. Lock-free.
  struct Ticket {
    uint64_t state = 0;  // the stripe's (writes in flight, generation)
    uint64_t epoch = 0;
    uint32_t stripe = 0;
    bool cacheable = false;
  };
  Ticket BeginRead(std::string_view key) const;
  // Whether no write of the ticket's stripe was in flight when it was taken
  // or has begun since, and no range write either: a value read after the
  // ticket is still the store's.
  bool Unchanged(const Ticket& ticket) const;
  // Adds what a read of the store found after `ticket`, if Unchanged (under
  // the stripe's lock).
  void Fill(const Ticket& ticket, std::string_view key, std::string_view value);

  // Writers, around their write to the store: BeginWrite before it (erases
  // the keys' entries), EndWrite after it, success or not, with the same
  // keys. `all`: the write covers a range of keys, or more than
  // kWriteKeysMax (every stripe, a new epoch); `keys` is then ignored.
  static constexpr size_t kWriteKeysMax = 4096;
  // What BeginWrite marked, for EndWrite (reusable).
  struct Writing {
    std::vector<uint32_t> stripes;  // each once
    bool all = false;
  };
  void BeginWrite(std::span<const std::string_view> keys, bool all, Writing* writing);
  void EndWrite(Writing* writing);

  size_t usage() const;
  size_t capacity() const;
  uint64_t hits() const;
  uint64_t misses() const;
  // Counted by a reader per batch of lookups, on a counter of its own
  // thread's (of a few, each on its own cache line).
  void Count(uint64_t hits, uint64_t misses);

 private:
  // 4096 stripes: a write keeps a concurrent read of another key of its
  // stripe from filling (the read still answers), so a stripe is a small
  // share of the keys.
  static constexpr uint32_t kStripes = 4096;
  // state: writes in flight in the top 16 bits (a write counts once per
  // stripe, so at most one per writing thread), a generation below that
  // grows as each write begins and ends. Changed under the lock; read
  // without it by tickets.
  static constexpr int kWritingShift = 48;
  static constexpr uint64_t kBegin = (uint64_t{1} << kWritingShift) + 1;
  static constexpr uint64_t kEnd = 1 - (uint64_t{1} << kWritingShift);  // modulo 2^64
  struct Stripe {
    std::atomic<uint64_t> state{1};
    std::atomic<uint32_t> lock{0};    // a spin lock over writers and fills
    std::atomic<int64_t> entries{0};  // its keys' entries in the cache (none: no erase)
  };
  struct alignas(64) Counter {
    std::atomic<uint64_t> hits{0};
    std::atomic<uint64_t> misses{0};
  };
  static constexpr size_t kCounters = 16;
  struct Entry;
  class Locked;
  static uint32_t StripeOf(std::string_view key);
  // [epoch u64][key]: the cache's key for `key` in `epoch`.
  static size_t CacheKey(uint64_t epoch, std::string_view key, char* out);
  // The cache's deleter of an entry.
  static void DeleteEntry(const rocksdb::Slice& key, void* value);

  std::unique_ptr<Stripe[]> stripes_;
  std::atomic<uint64_t> epoch_{1};
  std::unique_ptr<Counter[]> counters_;
  std::shared_ptr<rocksdb::Cache> cache_;  // last: its entries' deleters use stripes_
};

}  // namespace shoal::storage

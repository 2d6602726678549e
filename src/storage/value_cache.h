// ValueCache: values of the data column family that clients read, kept in
// memory so that a repeated point read skips RocksDB's read path (its
// memtable, filter, index and data block searches: 2.4 us of a pipelined
// GET's hit where redis-server spends 1.0). docs/design/storage.md, "The
// value cache", gives the protocol and why it is linearizable.
//
// An entry is a key's value, or that the key has none (an absence: a GET of
// a key that does not exist is answered without the store's searches too;
// absences take only free room, never evicting a value).
//
// The invariant: an entry the cache holds for a key is the key's value (or
// absence) in the store at every moment a lookup can find it. Writers keep it:
// - a write of a key erases the key's entry before the store changes, and
//   no read may add an entry for it while the write is in flight (its
//   stripe's count of writes in flight) or if a write of its stripe began
//   after the read did (the stripe's generation: a ticket);
// - a write over a range (a range deletion, an ingested file) counts as a
//   write of every stripe, and erases the entries inside the range before
//   the store changes (all of them, if the range is not known). A range of
//   collection elements only is no write to the cache: elements are never
//   cached (Cacheable).
// Each stripe holds its keys' entries in a hash table of its own (linear
// probing) under its spin lock, and evicts by CLOCK within its share of the
// capacity: a hit is one lock, one probe and a copy, with no list to relink
// (RocksDB's LRU cache, used first, took a shard mutex twice and relinked
// its list on every hit: a fifth of a pipelined GET's time).
// Thread-safe: reads, fills and writes may run on any thread. Owned by the
// engine; internal to src/storage.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "storage/keys.h"

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

  // Data keys of values up to kKeyBytesMax bytes; not a collection's
  // elements (storage/keys.h), whose ranges are deleted whole.
  static bool Cacheable(std::string_view key) { return key.size() <= kKeyBytesMax && !IsElementKey(key); }
  static bool IsElementKey(std::string_view key) {
    return key.size() >= kDataKeyPrefixBytes && (static_cast<uint8_t>(key[2]) & (kElementDbFlag >> 8)) != 0;
  }

  // The value cached for `key` into *value; false if none (or the key is
  // not Cacheable). The cache also keeps that a key is absent (FillAbsent):
  // with `absent`, such an entry is found (true, *absent set, *value left
  // as it was); without, it reads as none.
  bool Find(std::string_view key, std::string* value, bool* absent = nullptr);

  // Taken before a read of `key` (a lookup, or the store): the state of
  // its stripe. Lock-free.
  struct Ticket {
    uint64_t state = 0;  // the stripe's (writes in flight, generation)
    uint64_t hash = 0;  // the key's
    uint32_t stripe = 0;
    bool cacheable = false;
  };
  Ticket BeginRead(std::string_view key) const;
  // Starts loading into the CPU's cache what Finds of these tickets' keys
  // read (their home slots, then the entries there), so that a batch's
  // lookups wait for memory together instead of one after another.
  // Changes nothing.
  void Prefetch(std::span<const Ticket> tickets);
  // Find, for a key whose ticket was just taken (its hash reused).
  bool Find(const Ticket& ticket, std::string_view key, std::string* value, bool* absent = nullptr);
  // Whether no write of the ticket's stripe (range writes included) was in
  // flight when it was taken or has begun since: a value read after the
  // ticket is still the store's.
  bool Unchanged(const Ticket& ticket) const;
  // Adds what a read of the store found after `ticket`, if Unchanged (under
  // the stripe's lock).
  void Fill(const Ticket& ticket, std::string_view key, std::string_view value);
  // As Fill, for a read of the store that found no value for `key`: its
  // absence is kept as an entry (GETs of keys that do not exist skip the
  // store's memtable, filter and index searches as hits do). Writers erase
  // it as they erase a value.
  void FillAbsent(const Ticket& ticket, std::string_view key);

  // Writers, around their write to the store: BeginWrite before it (erases
  // the entries of `keys`, and of every key in `ranges`), EndWrite after
  // it, success or not. `all`: the write may change any key (an ingested
  // file of unknown bounds), and so does one of more than kWriteKeysMax
  // keys: every entry is erased. A range write, or an `all` one, marks
  // every stripe.
  static constexpr size_t kWriteKeysMax = 4096;
  struct Range {
    std::string_view begin, end;  // [begin, end)
  };
  // What BeginWrite marked, for EndWrite (reusable).
  struct Writing {
    std::vector<uint32_t> stripes;  // each once
    bool all = false;
  };
  void BeginWrite(std::span<const std::string_view> keys, std::span<const Range> ranges, bool all,
                  Writing* writing);
  void EndWrite(Writing* writing);

  size_t usage() const { return static_cast<size_t>(std::max<int64_t>(0, usage_.load(std::memory_order_relaxed))); }
  size_t capacity() const { return capacity_; }
  uint64_t hits() const;
  uint64_t misses() const;
  // Whether every stripe's table finds each of its entries from its home
  // slot and counts them right (tests; takes every stripe's lock).
  bool ConsistentForTest();
  // Counted by a reader per batch of lookups, on a counter of its own
  // thread's (of a few, each on its own cache line).
  void Count(uint64_t hits, uint64_t misses);

 private:
  // Up to 4096 stripes, one for each 64 KiB of capacity (at least 64): a
  // write keeps a concurrent read of another key of its stripe from
  // filling (the read still answers), so a stripe is a small share of the
  // keys; and each stripe's table holds its share of the capacity, room
  // for values of kValueBytesMax (at capacities of 4 MiB and more).
  static constexpr uint32_t kStripesMax = 4096;
  static constexpr uint32_t kStripesMin = 64;
  static constexpr size_t kStripeBytes = 4 * kValueBytesMax;
  // state: writes in flight in the top 16 bits (a write counts once per
  // stripe, so at most one per writing thread), a generation below that
  // grows as each write begins and ends. Changed under the lock; read
  // without it by tickets.
  static constexpr int kWritingShift = 48;
  static constexpr uint64_t kBegin = (uint64_t{1} << kWritingShift) + 1;
  static constexpr uint64_t kEnd = 1 - (uint64_t{1} << kWritingShift);  // modulo 2^64
  struct Entry;
  // A slot of a stripe's table: the key's hash and its entry (null: empty).
  struct Slot {
    uint64_t hash = 0;
    Entry* entry = nullptr;
  };
  struct alignas(64) Stripe {
    std::atomic<uint64_t> state{1};
    std::atomic<uint32_t> lock{0};  // a spin lock over the table, writers and fills
    // The table, under the lock: a power of two in size (or none while the
    // stripe holds no entry), at most 3/4 full. `bytes`: its entries and
    // its slots, charged against the stripe's share of the capacity.
    std::unique_ptr<Slot[]> slots;
    uint32_t mask = 0;
    uint32_t count = 0;
    uint32_t hand = 0;  // CLOCK's
    size_t bytes = 0;
  };
  struct alignas(64) Counter {
    std::atomic<uint64_t> hits{0};
    std::atomic<uint64_t> misses{0};
  };
  static constexpr size_t kCounters = 16;
  class Locked;
  static uint64_t HashOf(std::string_view key);
  uint32_t StripeOf(uint64_t hash) const { return static_cast<uint32_t>(hash) & (stripe_count_ - 1); }
  // Under the lock, s.slots not null: the key's slot, or the empty slot
  // where it would go.
  static size_t Probe(const Stripe& s, uint64_t hash, std::string_view key);
  // Under the lock: removes the entry at slot i.
  void RemoveAt(Stripe& s, size_t i);
  // Under the lock: removes every entry whose key lies in one of `ranges`.
  void EraseIn(Stripe& s, std::span<const Range> ranges);
  // Under the lock: evicts (CLOCK) until an entry of `charge` bytes, and the table's growth
  // if it needs one, fit in the stripe's share; then grows the table if it
  // must. False (nothing more evicted) if the entry cannot fit.
  bool MakeRoom(Stripe& s, size_t charge);
  // The bytes a table must add to take one more entry.
  static size_t GrowthFor(const Stripe& s);
  void Grow(Stripe& s);
  void Clear(Stripe& s);
  static size_t ChargeOf(const Entry* e);
  void Insert(const Ticket& ticket, std::string_view key, std::string_view value, bool absent);

  const size_t capacity_;
  const uint32_t stripe_count_;    // a power of two
  const size_t stripe_bytes_max_;  // capacity_ / stripe_count_
  std::unique_ptr<Stripe[]> stripes_;
  std::atomic<int64_t> usage_{0};
  std::unique_ptr<Counter[]> counters_;
};

}  // namespace shoal::storage

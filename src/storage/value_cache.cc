#include "storage/value_cache.h"

#include <rocksdb/cache.h>

#include <bitset>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <thread>

#include "common/status.h"

namespace shoal::storage {

// A cached value: one allocation, its bytes after the header.
struct ValueCache::Entry {
  Stripe* stripe;
  uint32_t size;
  char* bytes() { return reinterpret_cast<char*>(this + 1); }
};

// Holds a stripe's spin lock: over a writer's change of its state and erase
// of a key, or a fill's check and insert.
class ValueCache::Locked {
 public:
  explicit Locked(Stripe& s) : s_(s) {
    for (int spins = 0; s_.lock.exchange(1, std::memory_order_acquire) != 0;) {
      if (++spins % 64 == 0) std::this_thread::yield();
    }
  }
  ~Locked() { s_.lock.store(0, std::memory_order_release); }
  Locked(const Locked&) = delete;
  Locked& operator=(const Locked&) = delete;

 private:
  Stripe& s_;
};

namespace {

constexpr size_t kEpochBytes = 8;
constexpr size_t kCacheKeyBytesMax = kEpochBytes + ValueCache::kKeyBytesMax;

rocksdb::Slice ToSlice(const char* data, size_t n) { return rocksdb::Slice(data, n); }

// This thread's counter (threads take them in turn).
size_t CounterIndex(size_t counters) {
  static std::atomic<size_t> next{0};
  thread_local const size_t mine = next.fetch_add(1, std::memory_order_relaxed);
  return mine % counters;
}

}  // namespace

ValueCache::ValueCache(size_t capacity_bytes)
    : stripes_(std::make_unique<Stripe[]>(kStripes)),
      counters_(std::make_unique<Counter[]>(kCounters)),
      // 16 shards of RocksDB's LRU cache: lookups from several workers
      // seldom meet on one shard's mutex.
      cache_(rocksdb::NewLRUCache(capacity_bytes, /*num_shard_bits=*/4, /*strict_capacity_limit=*/false,
                                  /*high_pri_pool_ratio=*/0.0)) {}

ValueCache::~ValueCache() {
  cache_.reset();  // its entries' deleters count on stripes_
}

void ValueCache::DeleteEntry(const rocksdb::Slice& /*key*/, void* value) {
  auto* e = static_cast<Entry*>(value);
  e->stripe->entries.fetch_sub(1, std::memory_order_relaxed);
  std::free(e);
}

uint32_t ValueCache::StripeOf(std::string_view key) {
  return static_cast<uint32_t>(std::hash<std::string_view>{}(key) % kStripes);
}

size_t ValueCache::CacheKey(uint64_t epoch, std::string_view key, char* out) {
  std::memcpy(out, &epoch, kEpochBytes);
  std::memcpy(out + kEpochBytes, key.data(), key.size());
  return kEpochBytes + key.size();
}

bool ValueCache::Find(std::string_view key, std::string* value) {
  if (!Cacheable(key)) return false;
  char ck[kCacheKeyBytesMax];
  const uint64_t epoch = epoch_.load(std::memory_order_seq_cst);
  rocksdb::Cache::Handle* h = cache_->Lookup(ToSlice(ck, CacheKey(epoch, key, ck)));
  if (h == nullptr) return false;
  auto* e = static_cast<Entry*>(cache_->Value(h));
  value->assign(e->bytes(), e->size);
  cache_->Release(h);
  // A write over a range moves the epoch before it changes the store: if it
  // moved while we looked, the entry may already be out of date.
  return epoch_.load(std::memory_order_seq_cst) == epoch;
}

ValueCache::Ticket ValueCache::BeginRead(std::string_view key) const {
  Ticket t;
  if (!Cacheable(key)) return t;
  t.cacheable = true;
  t.stripe = StripeOf(key);
  // Either may move after the other is read: any move of the state after
  // it was read fails Unchanged and Fill, and a range write moves every
  // stripe's state before it moves the epoch.
  t.state = stripes_[t.stripe].state.load(std::memory_order_seq_cst);
  t.epoch = epoch_.load(std::memory_order_seq_cst);
  return t;
}

bool ValueCache::Unchanged(const Ticket& ticket) const {
  return ticket.cacheable && (ticket.state >> kWritingShift) == 0 &&
         stripes_[ticket.stripe].state.load(std::memory_order_seq_cst) == ticket.state &&
         epoch_.load(std::memory_order_seq_cst) == ticket.epoch;
}

void ValueCache::Fill(const Ticket& ticket, std::string_view key, std::string_view value) {
  if (!ticket.cacheable || (ticket.state >> kWritingShift) != 0 || value.size() > kValueBytesMax) return;
  SHOAL_CHECK(Cacheable(key) && StripeOf(key) == ticket.stripe);
  char ck[kCacheKeyBytesMax];
  const size_t ck_size = CacheKey(ticket.epoch, key, ck);
  Stripe& s = stripes_[ticket.stripe];
  // Allocated before the lock is taken; freed unused if the fill is late.
  auto* e = static_cast<Entry*>(std::malloc(sizeof(Entry) + value.size()));
  SHOAL_CHECK(e != nullptr);
  e->stripe = &s;
  e->size = static_cast<uint32_t>(value.size());
  std::memcpy(e->bytes(), value.data(), value.size());
  {
    Locked locked(s);
    // A write of the stripe began since the ticket (it may have changed
    // the store after the read): not kept. Writers change the state under
    // this lock, so none can begin between this check and the insert.
    if (s.state.load(std::memory_order_relaxed) == ticket.state) {
      s.entries.fetch_add(1, std::memory_order_relaxed);
      auto st = cache_->Insert(ToSlice(ck, ck_size), e, sizeof(Entry) + value.size() + ck_size, DeleteEntry);
      SHOAL_CHECK(st.ok());  // no strict capacity limit: an insert always succeeds
      return;
    }
  }
  std::free(e);
}

void ValueCache::BeginWrite(std::span<const std::string_view> keys, bool all, Writing* writing) {
  writing->stripes.clear();
  writing->all = all || keys.size() > kWriteKeysMax;
  if (writing->all) {
    for (uint32_t i = 0; i < kStripes; ++i) {
      Locked locked(stripes_[i]);
      stripes_[i].state.fetch_add(kBegin, std::memory_order_seq_cst);
    }
    // After every stripe: a fill whose ticket predates this cannot add (its
    // stripe's state moved), and one whose ticket has the new epoch has a
    // state with this write in flight (BeginRead reads the epoch last).
    epoch_.fetch_add(1, std::memory_order_seq_cst);
    return;
  }
  // Each stripe counts this write once (its writes in flight stay few).
  thread_local std::bitset<kStripes> marked;
  char ck[kCacheKeyBytesMax];
  for (std::string_view key : keys) {
    if (!Cacheable(key)) continue;
    const uint32_t i = StripeOf(key);
    Stripe& s = stripes_[i];
    Locked locked(s);
    if (!marked[i]) {
      marked[i] = true;
      writing->stripes.push_back(i);
      s.state.fetch_add(kBegin, std::memory_order_seq_cst);
    }
    if (s.entries.load(std::memory_order_relaxed) > 0) {
      cache_->Erase(ToSlice(ck, CacheKey(epoch_.load(std::memory_order_seq_cst), key, ck)));
    }
  }
  for (uint32_t i : writing->stripes) marked[i] = false;
}

void ValueCache::EndWrite(Writing* writing) {
  auto end = [](Stripe& s) {
    Locked locked(s);
    const uint64_t before = s.state.fetch_add(kEnd, std::memory_order_seq_cst);
    SHOAL_CHECK((before >> kWritingShift) > 0);
  };
  if (writing->all) {
    for (uint32_t i = 0; i < kStripes; ++i) end(stripes_[i]);
  } else {
    for (uint32_t i : writing->stripes) end(stripes_[i]);
  }
  writing->stripes.clear();
  writing->all = false;
}

size_t ValueCache::usage() const { return cache_->GetUsage(); }
size_t ValueCache::capacity() const { return cache_->GetCapacity(); }

void ValueCache::Count(uint64_t hits, uint64_t misses) {
  Counter& c = counters_[CounterIndex(kCounters)];
  if (hits != 0) c.hits.fetch_add(hits, std::memory_order_relaxed);
  if (misses != 0) c.misses.fetch_add(misses, std::memory_order_relaxed);
}

uint64_t ValueCache::hits() const {
  uint64_t n = 0;
  for (size_t i = 0; i < kCounters; ++i) n += counters_[i].hits.load(std::memory_order_relaxed);
  return n;
}

uint64_t ValueCache::misses() const {
  uint64_t n = 0;
  for (size_t i = 0; i < kCounters; ++i) n += counters_[i].misses.load(std::memory_order_relaxed);
  return n;
}

}  // namespace shoal::storage

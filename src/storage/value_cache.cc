#include "storage/value_cache.h"

#include <algorithm>
#include <bitset>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <thread>

#include "common/status.h"

namespace shoal::storage {

// A cached value: one allocation, the key's bytes and then the value's
// after the header.
struct ValueCache::Entry {
  uint32_t key_size;
  uint32_t value_size;
  bool referenced;  // CLOCK's bit: found since the hand last passed
  bool absent;      // the key has no value in the store (value_size 0)
  char* bytes() { return reinterpret_cast<char*>(this + 1); }
  std::string_view key() { return {bytes(), key_size}; }
  std::string_view value() { return {bytes() + key_size, value_size}; }
};

// Holds a stripe's spin lock: over its table, a writer's change of its
// state and erase of a key, a fill's check and insert, a lookup's probe and
// copy (of at most kValueBytesMax).
class ValueCache::Locked {
 public:
  explicit Locked(Stripe& s) : s_(s) {
    for (int spins = 0; s_.lock.exchange(1, std::memory_order_acquire) != 0;) {
      while (s_.lock.load(std::memory_order_relaxed) != 0) {
        if (++spins % 64 == 0) std::this_thread::yield();
      }
    }
  }
  ~Locked() { s_.lock.store(0, std::memory_order_release); }
  Locked(const Locked&) = delete;
  Locked& operator=(const Locked&) = delete;

 private:
  Stripe& s_;
};

namespace {

constexpr uint32_t kFirstSlots = 8;
// A hash's low bits pick its stripe; those from here, its home slot.
constexpr int kHomeShift = 32;

uint32_t StripeCount(size_t capacity, uint32_t min, uint32_t max, size_t bytes_each) {
  uint32_t n = min;
  while (n < max && capacity / (2 * n) >= bytes_each) n *= 2;
  return n;
}

// This thread's counter (threads take them in turn).
size_t CounterIndex(size_t counters) {
  static std::atomic<size_t> next{0};
  thread_local const size_t mine = next.fetch_add(1, std::memory_order_relaxed);
  return mine % counters;
}

}  // namespace

ValueCache::ValueCache(size_t capacity_bytes)
    : capacity_(capacity_bytes),
      stripe_count_(StripeCount(capacity_bytes, kStripesMin, kStripesMax, kStripeBytes)),
      stripe_bytes_max_(capacity_bytes / stripe_count_),
      stripes_(std::make_unique<Stripe[]>(stripe_count_)),
      counters_(std::make_unique<Counter[]>(kCounters)) {
  static_assert(kStripesMax <= (uint64_t{1} << kHomeShift));
}

ValueCache::~ValueCache() {
  for (uint32_t i = 0; i < stripe_count_; ++i) Clear(stripes_[i]);
}

uint64_t ValueCache::HashOf(std::string_view key) { return std::hash<std::string_view>{}(key); }

size_t ValueCache::ChargeOf(const Entry* e) { return sizeof(Entry) + e->key_size + e->value_size; }

size_t ValueCache::GrowthFor(const Stripe& s) {
  if (!s.slots) return kFirstSlots * sizeof(Slot);
  const size_t size = size_t{s.mask} + 1;
  return (s.count + 1) * 4 > size * 3 ? size * sizeof(Slot) : 0;  // doubling adds as many slots
}

size_t ValueCache::Probe(const Stripe& s, uint64_t hash, std::string_view key) {
  size_t i = (hash >> kHomeShift) & s.mask;
  while (s.slots[i].entry != nullptr) {
    if (s.slots[i].hash == hash && s.slots[i].entry->key() == key) return i;
    i = (i + 1) & s.mask;
  }
  return i;
}

void ValueCache::RemoveAt(Stripe& s, size_t i) {
  Entry* e = s.slots[i].entry;
  const size_t charge = ChargeOf(e);
  s.bytes -= charge;
  usage_.fetch_sub(static_cast<int64_t>(charge), std::memory_order_relaxed);
  std::free(e);
  if (--s.count == 0) {  // an empty stripe gives its table back
    s.slots[i] = Slot{};
    Clear(s);
    return;
  }
  // Backward shift: each later entry of the run moves into the hole unless
  // its home lies cyclically in (hole, its slot].
  size_t hole = i;
  for (size_t j = (i + 1) & s.mask; s.slots[j].entry != nullptr; j = (j + 1) & s.mask) {
    const size_t home = (s.slots[j].hash >> kHomeShift) & s.mask;
    const bool stays = hole < j ? (home > hole && home <= j) : (home > hole || home <= j);
    if (!stays) {
      s.slots[hole] = s.slots[j];
      hole = j;
    }
  }
  s.slots[hole] = Slot{};
}

void ValueCache::Grow(Stripe& s) {
  const uint32_t old_size = s.slots ? s.mask + 1 : 0;
  const uint32_t size = old_size != 0 ? old_size * 2 : kFirstSlots;
  auto slots = std::make_unique<Slot[]>(size);  // before anything changes: it may throw
  const uint32_t mask = size - 1;
  for (uint32_t i = 0; i < old_size; ++i) {
    if (s.slots[i].entry == nullptr) continue;
    size_t j = (s.slots[i].hash >> kHomeShift) & mask;
    while (slots[j].entry != nullptr) j = (j + 1) & mask;
    slots[j] = s.slots[i];
  }
  const size_t added = (size - old_size) * sizeof(Slot);
  s.slots = std::move(slots);
  s.mask = mask;
  s.bytes += added;
  usage_.fetch_add(static_cast<int64_t>(added), std::memory_order_relaxed);
}

bool ValueCache::MakeRoom(Stripe& s, size_t charge) {
  // The table an empty stripe would need, and the entry, must fit at all.
  if (charge + kFirstSlots * sizeof(Slot) > stripe_bytes_max_) return false;
  // Each step of the hand clears the bit it passes, so within two passes of
  // steps every entry left has been removed or the room is there. (A
  // removal does not step: a later entry may have moved into the slot.)
  for (size_t steps = 0; s.count > 0 && s.bytes + charge + GrowthFor(s) > stripe_bytes_max_;) {
    SHOAL_CHECK(steps <= 2 * (size_t{s.mask} + 1));
    const size_t i = s.hand & s.mask;
    Entry* e = s.slots[i].entry;
    if (e != nullptr && !e->referenced) {
      RemoveAt(s, i);
      continue;
    }
    if (e != nullptr) e->referenced = false;
    ++s.hand;
    ++steps;
  }
  if (s.bytes + charge + GrowthFor(s) > stripe_bytes_max_) return false;
  if (GrowthFor(s) != 0) Grow(s);
  return true;
}

void ValueCache::Clear(Stripe& s) {
  if (!s.slots) return;
  for (uint32_t i = 0; i <= s.mask; ++i) std::free(s.slots[i].entry);
  s.slots.reset();
  usage_.fetch_sub(static_cast<int64_t>(s.bytes), std::memory_order_relaxed);
  s.mask = s.count = s.hand = 0;
  s.bytes = 0;
}

bool ValueCache::Find(std::string_view key, std::string* value, bool* absent) {
  if (!Cacheable(key)) return false;
  Ticket t;
  t.cacheable = true;
  t.hash = HashOf(key);
  t.stripe = StripeOf(t.hash);
  return Find(t, key, value, absent);
}

bool ValueCache::Find(const Ticket& ticket, std::string_view key, std::string* value, bool* absent) {
  if (!ticket.cacheable) return false;
  const uint64_t hash = ticket.hash;
  Stripe& s = stripes_[ticket.stripe];
  Locked locked(s);
  if (s.count == 0) return false;
  Entry* e = s.slots[Probe(s, hash, key)].entry;
  // Writes of the key (range writes included) erase it under this lock
  // before they change the store: an entry found here is the store's value
  // at least until this load.
  if (e == nullptr || (e->absent && absent == nullptr)) return false;
  e->referenced = true;
  if (e->absent) {
    *absent = true;
  } else {
    if (absent != nullptr) *absent = false;
    value->assign(e->value());
  }
  return true;
}

void ValueCache::Prefetch(std::span<const Ticket> tickets) {
  // Two passes: the entries' addresses are in the slots the first fetches.
  // Each look holds the stripe's lock (the table may be replaced).
  for (const Ticket& t : tickets) {
    if (!t.cacheable) continue;
    Stripe& s = stripes_[t.stripe];
    Locked locked(s);
    if (s.slots) __builtin_prefetch(&s.slots[(t.hash >> kHomeShift) & s.mask]);
  }
  for (const Ticket& t : tickets) {
    if (!t.cacheable) continue;
    Stripe& s = stripes_[t.stripe];
    Locked locked(s);
    if (!s.slots) continue;
    const Slot& slot = s.slots[(t.hash >> kHomeShift) & s.mask];
    if (slot.entry != nullptr && slot.hash == t.hash) {
      // The header and key, and a small value's bytes after them (the
      // lines may lie past a short entry's end: a prefetch never faults,
      // and the addresses are made as integers, not as pointers past it).
      const auto at = reinterpret_cast<uintptr_t>(slot.entry);
      for (uintptr_t line = 0; line < 3; ++line) __builtin_prefetch(reinterpret_cast<const void*>(at + 64 * line));
    }
  }
}

ValueCache::Ticket ValueCache::BeginRead(std::string_view key) const {
  Ticket t;
  if (!Cacheable(key)) return t;
  t.cacheable = true;
  t.hash = HashOf(key);
  t.stripe = StripeOf(t.hash);
  // Any move of the state after it was read fails Unchanged and Fill.
  t.state = stripes_[t.stripe].state.load(std::memory_order_seq_cst);
  return t;
}

bool ValueCache::Unchanged(const Ticket& ticket) const {
  return ticket.cacheable && (ticket.state >> kWritingShift) == 0 &&
         stripes_[ticket.stripe].state.load(std::memory_order_seq_cst) == ticket.state;
}

void ValueCache::Fill(const Ticket& ticket, std::string_view key, std::string_view value) {
  Insert(ticket, key, value, /*absent=*/false);
}

void ValueCache::FillAbsent(const Ticket& ticket, std::string_view key) { Insert(ticket, key, {}, /*absent=*/true); }

void ValueCache::Insert(const Ticket& ticket, std::string_view key, std::string_view value, bool absent) {
  if (!ticket.cacheable || (ticket.state >> kWritingShift) != 0 || value.size() > kValueBytesMax) return;
  SHOAL_CHECK(Cacheable(key));
  // Made before the lock is taken; freed unused if the fill is late.
  auto* e = static_cast<Entry*>(std::malloc(sizeof(Entry) + key.size() + value.size()));
  SHOAL_CHECK(e != nullptr);
  e->key_size = static_cast<uint32_t>(key.size());
  e->value_size = static_cast<uint32_t>(value.size());
  e->referenced = false;
  e->absent = absent;
  std::memcpy(e->bytes(), key.data(), key.size());
  if (!value.empty()) std::memcpy(e->bytes() + key.size(), value.data(), value.size());
  const size_t charge = ChargeOf(e);
  Stripe& s = stripes_[ticket.stripe];
  {
    Locked locked(s);
    // A write of the stripe began since the ticket (it may have changed
    // the store after the read): not kept. Writers change the state under
    // this lock, so none can begin between this check and the insert.
    if (s.state.load(std::memory_order_relaxed) == ticket.state) {
      if (s.count > 0) {
        const size_t i = Probe(s, ticket.hash, key);
        if (s.slots[i].entry != nullptr) RemoveAt(s, i);  // filled meanwhile
      }
      // An absence takes only room that is free: values are never evicted
      // for one (GETs of many keys that do not exist would push out the
      // values clients read); the hand evicts absences as it does values.
      const bool fits = !absent || s.bytes + charge + GrowthFor(s) <= stripe_bytes_max_;
      if (fits && MakeRoom(s, charge)) {
        s.slots[Probe(s, ticket.hash, key)] = Slot{ticket.hash, e};
        ++s.count;
        s.bytes += charge;
        usage_.fetch_add(static_cast<int64_t>(charge), std::memory_order_relaxed);
        return;
      }
    }
  }
  std::free(e);
}

void ValueCache::EraseIn(Stripe& s, std::span<const Range> ranges) {
  // A removal shifts later entries back into the slot: it is looked at
  // again. Entries before it stay where they were looked at.
  for (uint32_t i = 0; s.count > 0 && i <= s.mask;) {
    Entry* e = s.slots[i].entry;
    const bool inside = e != nullptr && std::any_of(ranges.begin(), ranges.end(), [&](const Range& r) {
                          return e->key() >= r.begin && e->key() < r.end;
                        });
    if (inside) {
      RemoveAt(s, i);
    } else {
      ++i;
    }
  }
}

void ValueCache::BeginWrite(std::span<const std::string_view> keys, std::span<const Range> ranges, bool all,
                            Writing* writing) {
  writing->stripes.clear();
  // A range whose two ends share their [slot][db] prefix, and that prefix is
  // of elements, holds nothing but elements: nothing cached.
  thread_local std::vector<Range> erase;
  erase.clear();
  for (const Range& r : ranges) {
    const bool elements = r.begin.size() >= kDataKeyPrefixBytes && r.end.size() >= kDataKeyPrefixBytes &&
                          r.begin.substr(0, kDataKeyPrefixBytes) == r.end.substr(0, kDataKeyPrefixBytes) &&
                          IsElementKey(r.begin);
    if (!elements && r.begin < r.end) erase.push_back(r);
  }
  const bool every = all || keys.size() > kWriteKeysMax;
  writing->all = every || !erase.empty();
  if (writing->all) {
    // Each stripe, under its lock: marked (a fill whose ticket predates
    // this cannot add, nor can one whose ticket is taken while this is in
    // flight), then its entries inside the write erased. A stripe not yet
    // reached still answers the store's value: the store changes only
    // after every stripe is.
    for (uint32_t i = 0; i < stripe_count_; ++i) {
      Stripe& s = stripes_[i];
      Locked locked(s);
      s.state.fetch_add(kBegin, std::memory_order_seq_cst);
      if (every) {
        Clear(s);
      } else if (s.count > 0) {
        EraseIn(s, erase);
      }
    }
    if (every) return;
  }
  // Each stripe counts this write once (its writes in flight stay few).
  thread_local std::bitset<kStripesMax> marked;
  for (std::string_view key : keys) {
    if (!Cacheable(key)) continue;
    const uint64_t hash = HashOf(key);
    const uint32_t i = StripeOf(hash);
    Stripe& s = stripes_[i];
    Locked locked(s);
    if (!writing->all && !marked[i]) {
      marked[i] = true;
      writing->stripes.push_back(i);
      s.state.fetch_add(kBegin, std::memory_order_seq_cst);
    }
    if (s.count > 0) {
      const size_t at = Probe(s, hash, key);
      if (s.slots[at].entry != nullptr) RemoveAt(s, at);
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
    for (uint32_t i = 0; i < stripe_count_; ++i) end(stripes_[i]);
  } else {
    for (uint32_t i : writing->stripes) end(stripes_[i]);
  }
  writing->stripes.clear();
  writing->all = false;
}

bool ValueCache::ConsistentForTest() {
  for (uint32_t i = 0; i < stripe_count_; ++i) {
    Stripe& s = stripes_[i];
    Locked locked(s);
    uint32_t n = 0;
    size_t bytes = s.slots ? (size_t{s.mask} + 1) * sizeof(Slot) : 0;
    for (uint32_t j = 0; s.slots && j <= s.mask; ++j) {
      Entry* e = s.slots[j].entry;
      if (e == nullptr) continue;
      ++n;
      bytes += ChargeOf(e);
      if (StripeOf(s.slots[j].hash) != i || HashOf(e->key()) != s.slots[j].hash ||
          Probe(s, s.slots[j].hash, e->key()) != j) {
        return false;
      }
    }
    if (n != s.count || bytes != s.bytes || bytes > stripe_bytes_max_ || (n == 0) != !s.slots) return false;
  }
  return true;
}

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

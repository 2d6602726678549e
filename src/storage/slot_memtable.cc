#include "storage/slot_memtable.h"

#include "common/status.h"

#include <rocksdb/memtablerep.h>
#include <rocksdb/slice.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <new>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace shoal::storage {
namespace {

using rocksdb::KeyHandle;
using rocksdb::MemTableRep;
using rocksdb::Slice;

// A bucket's skiplist: a node climbs one more level with probability 1/4, up
// to 8 levels. A prefix holds few keys (a 16 MiB memtable of 100-byte values
// spread over 16384 slots has about 7 a slot), and a hash-tagged one with
// 100k keys still finds a key in about 40 steps.
constexpr int kMaxHeight = 8;
constexpr size_t kMaxPrefix = 32;
// Prefixes longer than this are whole record keys (the meta and Raft column
// families), thousands of them sharing their first two bytes: their buckets
// are found by a hash of the prefix, and kept in order by a skiplist of
// buckets instead of the directory's lists.
constexpr size_t kHashedPrefix = 4;
constexpr size_t kWord = sizeof(void*);

// A skiplist node, placed in the memtable's arena. Its links lie below it,
// level 0 nearest (level n is n words below `this`), and the memtable entry
// (the length-prefixed internal key and the value) right above it.
struct Node {
  std::atomic<Node*> link0;

  std::atomic<Node*>* Link(int level) {
    return reinterpret_cast<std::atomic<Node*>*>(reinterpret_cast<char*>(this) - level * kWord);
  }
  Node* Next(int level) { return Link(level)->load(std::memory_order_acquire); }
  const char* Entry() const { return reinterpret_cast<const char*>(this) + kWord; }
};
static_assert(sizeof(Node) == kWord && sizeof(std::atomic<Node*>) == kWord);

// The leading bytes of a user key (at most prefix_bytes), and the word made
// of its first two, zero padded, that indexes the directory. Zero padding
// keeps the order: a short key sorts before every longer key it starts.
struct Prefix {
  int index = 0;
  uint8_t len = 0;
  char bytes[kMaxPrefix] = {};
};

// Every key of one prefix, as a skiplist. Writers of a bucket take turns on
// `busy`; readers never wait. The prefix's bytes follow the bucket. With
// long prefixes, `next` is also level 0 of the skiplist of buckets, whose
// higher links lie below the bucket (level n is n words below `this`).
struct Bucket {
  explicit Bucket(const Prefix& p) : index(p.index), len(p.len) {
    std::memcpy(reinterpret_cast<char*>(this + 1), p.bytes, p.len);
  }

  // links[kMaxHeight - 1 - n] is the head's link at level n, so that head()
  // is laid out as a Node.
  std::array<std::atomic<Node*>, kMaxHeight> links{};
  // The next bucket in order: of the same index word, or with long
  // prefixes the next of all.
  std::atomic<Bucket*> next{nullptr};
  std::atomic<int> height{1};
  std::atomic<uint64_t> count{0};  // entries, for size estimates
  std::atomic_flag busy;
  int index;
  uint8_t len;

  Node* head() { return reinterpret_cast<Node*>(&links[kMaxHeight - 1]); }
  const char* key() const { return reinterpret_cast<const char*>(this + 1); }
  std::atomic<Bucket*>* Up(int level) {
    return level == 0 ? &next
                      : reinterpret_cast<std::atomic<Bucket*>*>(reinterpret_cast<char*>(this) - level * kWord);
  }
};
static_assert(sizeof(Bucket) % kWord == 0);

// The buckets of 256 index words that share their first byte.
struct Leaf {
  std::array<std::atomic<Bucket*>, 256> first{};  // each word's first bucket
  std::array<std::atomic<uint64_t>, 4> used{};    // which words have one
};

using Bits = std::array<std::atomic<uint64_t>, 4>;

// The lowest set bit at or after `from` (0..256), or -1.
int FirstSetFrom(const Bits& bits, int from) {
  for (int w = from >> 6; w < 4; ++w) {
    uint64_t word = bits[w].load(std::memory_order_acquire);
    if (w == from >> 6) word &= ~uint64_t{0} << (from & 63);
    if (word != 0) return w * 64 + std::countr_zero(word);
  }
  return -1;
}

// The highest set bit at or before `from` (-1..255), or -1.
int LastSetUpTo(const Bits& bits, int from) {
  for (int w = from >> 6; w >= 0 && from >= 0; --w) {
    uint64_t word = bits[w].load(std::memory_order_acquire);
    if (w == from >> 6 && (from & 63) != 63) word &= (uint64_t{2} << (from & 63)) - 1;
    if (word != 0) return w * 64 + 63 - std::countl_zero(word);
  }
  return -1;
}

// RocksDB hands a point lookup its key as a LookupKey, whose accessors are
// inline in a header it does not install, and MemTableRep's own Get leaks
// the iterator it makes (librocksdb 7.8). A LookupKey begins with three
// pointers: the memtable key (a varint32 length, then the internal key), the
// internal key, and their end. Every lookup checks that they agree, so a
// librocksdb laid out otherwise stops the node instead of misreading keys.
struct LookupKeyView {
  const char* start;
  const char* kstart;
  const char* end;
};

void ReadLookupKey(const rocksdb::LookupKey& k, Slice* internal_key, const char** memtable_key) {
  const auto& v = *reinterpret_cast<const LookupKeyView*>(&k);
  uint32_t len = 0;
  const char* p = v.start;
  for (int shift = 0; shift <= 28 && p < v.kstart; shift += 7) {
    auto byte = static_cast<uint8_t>(*p++);
    len |= static_cast<uint32_t>(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) break;
  }
  SHOAL_CHECK(p == v.kstart && v.end >= v.kstart && len == static_cast<size_t>(v.end - v.kstart) && len >= 8);
  *internal_key = Slice(v.kstart, len);
  *memtable_key = v.start;
}

void SetBit(Bits& bits, int i) { bits[i >> 6].fetch_or(uint64_t{1} << (i & 63), std::memory_order_release); }

// Each thread's generator is seeded from the order threads first insert,
// not from addresses: a run's skiplists (and so its size estimates) repeat.
uint64_t NextSeed() {
  static std::atomic<uint64_t> threads{0};
  uint64_t z = (threads.fetch_add(1, std::memory_order_relaxed) + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return (z ^ (z >> 31)) | 1;
}

int RandomHeight() {
  thread_local uint64_t state = NextSeed();
  state ^= state << 13;
  state ^= state >> 7;
  state ^= state << 17;
  uint64_t r = state;
  int height = 1;
  while (height < kMaxHeight && (r & 3) == 0) {
    ++height;
    r >>= 2;
  }
  return height;
}

// A memtable entry's internal key: a varint32 length, then the key (its
// value follows).
inline Slice EntryKey(const char* entry) {
  uint32_t len = 0;
  const char* p = entry;
  for (int shift = 0; shift <= 28; shift += 7) {
    auto byte = static_cast<uint8_t>(*p++);
    len |= static_cast<uint32_t>(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) break;
  }
  return Slice(p, len);
}

// memcmp's sign for n bytes, inline: a hot bucket's keys share their first
// dozen bytes or more (the prefix, a hash tag), and a search compares a key
// some 35 times, where a call to the library's memcmp cost more than the
// bytes. Words are compared as big-endian numbers.
static_assert(std::endian::native == std::endian::little);
inline int CompareBytes(const char* a, const char* b, size_t n) {
  for (; n >= 8; n -= 8, a += 8, b += 8) {
    uint64_t x, y;
    std::memcpy(&x, a, 8);
    std::memcpy(&y, b, 8);
    if (x != y) return __builtin_bswap64(x) < __builtin_bswap64(y) ? -1 : 1;
  }
  for (; n > 0; --n, ++a, ++b) {
    if (*a != *b) return static_cast<uint8_t>(*a) < static_cast<uint8_t>(*b) ? -1 : 1;
  }
  return 0;
}

// The order of internal keys under a bytewise comparator, as a memtable's
// comparator has it (InternalKeyComparator::CompareKeySeq): user keys
// bytewise, then sequence numbers descending (the 8-byte trailer less its
// type byte). Inline, where RocksDB's goes through two virtual calls a
// compare; checked against it at each memtable's start.
inline int CompareInternal(const Slice& a, const Slice& b) {
  const size_t ua = a.size() - 8, ub = b.size() - 8;
  if (int c = CompareBytes(a.data(), b.data(), std::min(ua, ub)); c != 0) return c;
  if (ua != ub) return ua < ub ? -1 : 1;
  uint64_t ta, tb;  // little-endian on disk and here (docs/design/storage.md)
  std::memcpy(&ta, a.data() + ua, 8);
  std::memcpy(&tb, b.data() + ub, 8);
  ta >>= 8;
  tb >>= 8;
  return ta > tb ? -1 : (ta < tb ? 1 : 0);
}

// What a thread's walks (SlotMemTableRep::PrefetchPaths) found, for the
// inserts that follow them on that thread: for each walked key, the node at
// each level where its search went down. Every such node lies before the
// key (and stays in its memtable, which frees no node), so an insert of the
// key may carry its search on from them instead of walking the bucket again,
// after checking that the hint is of its memtable (by id: one may be freed
// and another made at its address), its bucket and its key. The nodes a
// walk passed are in the cache then, and the insert steps only past what
// was linked in since (another key of the batch, another writer's). Hints
// come in the batch's order; an insert whose key is not the next hint's (a
// key of a small bucket, a collection's element, another writer's batch)
// searches from the head and leaves the hint.
constexpr size_t kHintKeyMax = 48;
constexpr int kHintSteps = 8;  // a level's steps from a hint before a search instead
// The keys of a write that are walked. Under `redis-benchmark --cluster -c 50
// -P 16` a node's write carries 200 keys on average, up to about 1,100, all
// in its hash-tagged slots; with 256 walked, a quarter searched from the
// head, cold (docs/PERFORMANCE.md, twenty-ninth session).
constexpr size_t kWalkKeys = 1024;

struct PathHint {
  uint64_t rep;
  const Bucket* bucket;
  int top;  // the bucket's height when walked
  uint8_t key_len;
  char key[kHintKeyMax];
  Node* prev[kMaxHeight];  // below `top`: where the search went down
};

// A thread's hints, made at its first walk (136 KiB: only the threads that
// write hot slots have them).
struct PathHints {
  std::array<PathHint, kWalkKeys> hints;
  size_t size = 0;
  size_t next = 0;
  uint64_t taken = 0;  // ever, on this thread
  uint64_t steps = 0;  // the steps forward of the inserts that took one
  // At each level, the node this write's hinted inserts linked there last
  // (null: none yet): a batch's keys that fall in one gap were all walked
  // to the same nodes, and each carries on past the one linked before it.
  uint64_t last_rep = 0;
  const Bucket* last_bucket = nullptr;
  Node* last[kMaxHeight] = {};
  void Reset() {
    size = next = 0;
    last_rep = 0;
  }
};
// Constant-initialized, as a plain pointer: no guard on each access.
thread_local PathHints* path_hints = nullptr;

// Set once a thread's hints are freed (its thread_local objects are being
// destroyed): a write after that, from another such destructor, walks
// without leaving hints rather than making some that nothing would free.
thread_local bool path_hints_gone = false;

// Frees a thread's hints when it ends.
struct PathHintsOwner {
  ~PathHintsOwner() {
    delete path_hints;
    path_hints = nullptr;
    path_hints_gone = true;
  }
};

// The thread's hints, made at its first walk; null once they are gone.
PathHints* HintsForWalks() {
  if (path_hints == nullptr && !path_hints_gone) {
    thread_local PathHintsOwner owner;
    path_hints = new PathHints();
  }
  return path_hints;
}

class SlotMemTableRep;

// The newest memtable a factory made (its column family's active one), for
// PrefetchForWrites; a memtable leaves it when it is destroyed.
struct Newest {
  std::mutex mu;
  SlotMemTableRep* rep = nullptr;
};

class SlotMemTableRep final : public MemTableRep {
 public:
  SlotMemTableRep(const KeyComparator& cmp, rocksdb::Allocator* allocator, size_t prefix_bytes,
                  std::shared_ptr<Newest> newest = nullptr)
      : MemTableRep(allocator),
        cmp_(cmp),
        prefix_bytes_(prefix_bytes),
        hashed_(prefix_bytes > kHashedPrefix),
        newest_(std::move(newest)) {
    CheckComparator();
    if (newest_ != nullptr) {
      std::lock_guard lock(newest_->mu);
      newest_->rep = this;
    }
  }
  ~SlotMemTableRep() override {
    if (newest_ == nullptr) return;
    std::lock_guard lock(newest_->mu);
    if (newest_->rep == this) newest_->rep = nullptr;
  }

  // Starts loading into the CPU's cache what inserts of keys with these
  // 4-byte prefixes (big-endian in a word) read first: the directory's word,
  // the bucket, and the node where the bucket's search starts. Reads only.
  void PrefetchBuckets(std::span<const uint32_t> prefixes) const {
    if (hashed_ || prefix_bytes_ != 4) return;
    constexpr size_t kStep = 32;  // in flight at once, a pass each
    const Bucket* found[kStep];
    for (size_t at = 0; at < prefixes.size(); at += kStep) {
      const size_t n = std::min(kStep, prefixes.size() - at);
      const uint32_t* p = prefixes.data() + at;
      auto leaf_of = [&](size_t i) { return leaves_[p[i] >> 24].load(std::memory_order_acquire); };
      for (size_t i = 0; i < n; ++i) {
        if (const Leaf* leaf = leaf_of(i)) __builtin_prefetch(&leaf->first[(p[i] >> 16) & 255]);
      }
      for (size_t i = 0; i < n; ++i) {
        const Leaf* leaf = leaf_of(i);
        found[i] = leaf != nullptr ? leaf->first[(p[i] >> 16) & 255].load(std::memory_order_acquire) : nullptr;
        if (found[i] == nullptr) continue;
        __builtin_prefetch(found[i]);
        __builtin_prefetch(reinterpret_cast<const char*>(found[i]) + 64);
        __builtin_prefetch(found[i]->key() + 3);
      }
      for (size_t i = 0; i < n; ++i) {
        // A word's buckets are its databases': the first is nearly always it.
        const Bucket* b = found[i];
        if (b == nullptr || b->len != 4 || (static_cast<uint32_t>(static_cast<uint8_t>(b->key()[2])) << 8 |
                                            static_cast<uint8_t>(b->key()[3])) != (p[i] & 0xffff)) {
          continue;
        }
        const int top = b->height.load(std::memory_order_relaxed) - 1;
        if (const Node* x = const_cast<Bucket*>(b)->head()->Next(top)) __builtin_prefetch(x->Entry());
      }
    }
  }

  static constexpr size_t kWalks = 16;  // PrefetchPaths's walks side by side

  // Walks ahead of a write the searches its inserts of these data user keys
  // will make, many side by side, each step starting the load of the node
  // the walk reads next: a search through a big bucket (a hash-tagged slot
  // holds a memtable's worth of keys) is some 35 loads, each of which
  // waits for the one before it; walked together, different keys' loads
  // overlap, and the inserts then find their nodes in the cache. Keys of
  // small buckets are left to PrefetchBuckets. Takes the first kWalks keys
  // (the factory hands them a group at a time, under its lock). Reads only.
  void PrefetchPaths(std::span<const std::string_view> keys) const {
    if (hashed_ || prefix_bytes_ != 4) return;
    constexpr uint64_t kWalkFrom = 64;  // keys in a bucket, below which one search is cheap
    constexpr int kMaxSteps = 256;      // a bound per walk (about 40 in a full bucket)
    struct Walk {
      Node* at;
      int level;
      int steps;
      int top;
      const Bucket* bucket;
      std::string_view key;
      Node* prev[kMaxHeight];
    };
    Walk walks[kWalks];
    size_t n = 0;
    for (const std::string_view key : keys.first(std::min(keys.size(), kWalks))) {
      if (key.size() < prefix_bytes_) continue;
      Bucket* b = Listed(PrefixOf(Slice(key.data(), key.size())));
      if (b == nullptr || b->count.load(std::memory_order_relaxed) < kWalkFrom) continue;
      const int top = b->height.load(std::memory_order_relaxed);
      walks[n].at = b->head();
      walks[n].level = top - 1;
      walks[n].steps = 0;
      walks[n].top = top;
      walks[n].bucket = b;
      walks[n].key = key;
      Touch(walks[n].at->Next(walks[n].level));
      ++n;
    }
    for (size_t live = n; live > 0;) {
      live = 0;
      for (size_t i = 0; i < n; ++i) {
        Walk& w = walks[i];
        if (w.level < 0) continue;
        Node* next = w.at->Next(w.level);
        // Past kMaxSteps a walk goes straight down: its nodes still lie
        // before its key (and an insert from them soon searches instead).
        if (next != nullptr && ++w.steps < kMaxSteps && UserKeyBefore(next->Entry(), w.key)) {
          w.at = next;
        } else {
          w.prev[w.level] = w.at;
          if (--w.level < 0) continue;
        }
        Touch(w.at->Next(w.level));
        ++live;
      }
    }
    if (n == 0) return;  // no hot bucket: a thread that writes none has no hints
    PathHints* made = HintsForWalks();
    if (made == nullptr) return;
    PathHints& hints = *made;
    for (size_t i = 0; i < n && hints.size < kWalkKeys; ++i) {
      const Walk& w = walks[i];
      if (w.key.size() > kHintKeyMax) continue;
      PathHint& h = hints.hints[hints.size++];
      h.rep = id_;
      h.bucket = w.bucket;
      h.top = w.top;
      h.key_len = static_cast<uint8_t>(w.key.size());
      std::memcpy(h.key, w.key.data(), w.key.size());
      std::copy(w.prev, w.prev + w.top, h.prev);
    }
  }

  // Starts loading node x (its links below it, its entry's key above).
  static void Touch(const Node* x) {
    if (x == nullptr) return;
    const char* p = reinterpret_cast<const char*>(x);
    __builtin_prefetch(p - (kMaxHeight - 1) * kWord);
    __builtin_prefetch(p + kWord);
    __builtin_prefetch(p + kWord + 48);
  }

  // Whether an entry's user key sorts before `key` (a new version of the
  // same key is inserted before the entry's).
  static bool UserKeyBefore(const char* entry, std::string_view key) {
    const Slice k = EntryKey(entry);
    const size_t n = k.size() - 8;
    const int c = CompareBytes(k.data(), key.data(), std::min(n, key.size()));
    return c < 0 || (c == 0 && n < key.size());
  }

  // Entries (and an entry against an internal key) in the comparator's order.
  static int Cmp(const char* a, const char* b) { return CompareInternal(EntryKey(a), EntryKey(b)); }
  static int Cmp(const char* a, const Slice& internal_key) { return CompareInternal(EntryKey(a), internal_key); }

  Slice UserKey(const char* entry) const override {
    Slice k = EntryKey(entry);
    return Slice(k.data(), k.size() - 8);
  }

  // A node with its links and room for `len` entry bytes; its height waits
  // in its level-0 link until Insert.
  KeyHandle Allocate(const size_t len, char** buf) override {
    int height = RandomHeight();
    char* raw = AllocateAligned(height * kWord + len);
    for (int i = 0; i < height; ++i) new (raw + i * kWord) std::atomic<Node*>(nullptr);
    auto* node = reinterpret_cast<Node*>(raw + (height - 1) * kWord);
    node->link0.store(reinterpret_cast<Node*>(static_cast<uintptr_t>(height)), std::memory_order_relaxed);
    *buf = raw + height * kWord;
    return node;
  }

  void Insert(KeyHandle handle) override { Add(static_cast<Node*>(handle)); }
  void InsertConcurrently(KeyHandle handle) override { Add(static_cast<Node*>(handle)); }

  bool Contains(const char* entry) const override {
    Bucket* b = Exact(PrefixOf(UserKey(entry)));
    if (b == nullptr) return false;
    Node* n = nullptr;
    FindLess(b, [&](const char* e) { return Cmp(e, entry) < 0; }, &n);
    return n != nullptr && Cmp(n->Entry(), entry) == 0;
  }

  // Every version of a user key lies in one bucket, so a lookup ends with
  // its bucket.
  void Get(const rocksdb::LookupKey& k, void* arg, bool (*callback)(void* arg, const char* entry)) override {
    Slice internal_key;
    const char* memtable_key = nullptr;
    ReadLookupKey(k, &internal_key, &memtable_key);
    Bucket* b = Exact(PrefixOfInternal(internal_key));
    if (b == nullptr) return;
    Node* n = nullptr;
    FindLess(b, [&](const char* e) { return Cmp(e, memtable_key) < 0; }, &n);
    for (; n != nullptr && callback(arg, n->Entry()); n = n->Next(0)) {
    }
  }

  // Entries between two internal keys: whole buckets by their counts, the
  // end buckets counted (or estimated, past 4096 entries). The engine
  // counts what a range delete covers with it (to flush covered keys away),
  // and splits size shards with it.
  uint64_t ApproximateNumEntries(const Slice& start_ikey, const Slice& end_ikey) override {
    Prefix first = PrefixOfInternal(start_ikey);
    Prefix last = PrefixOfInternal(end_ikey);
    Bucket* b = Exact(first);
    if (b == nullptr) b = FirstAfter(first);
    uint64_t n = 0;
    for (; b != nullptr && Compare(last, *b) >= 0; b = After(b)) {
      const uint64_t count = b->count.load(std::memory_order_relaxed);
      const bool starts_here = Compare(first, *b) == 0;
      const bool ends_here = Compare(last, *b) == 0;
      if (!starts_here && !ends_here) {
        n += count;
      } else {
        n += std::min(count, CountBetween(b, starts_here ? &start_ikey : nullptr, ends_here ? &end_ikey : nullptr));
      }
    }
    return n;
  }

  size_t ApproximateMemoryUsage() override { return sizeof(*this); }

  Iterator* GetIterator(rocksdb::Arena* arena) override;

  Prefix PrefixOf(Slice user_key) const {
    Prefix p;
    p.len = static_cast<uint8_t>(std::min(prefix_bytes_, user_key.size()));
    std::memcpy(p.bytes, user_key.data(), p.len);
    p.index = static_cast<uint8_t>(p.bytes[0]) << 8 | static_cast<uint8_t>(p.bytes[1]);
    return p;
  }
  // The prefix of an internal key (a user key and its 8-byte sequence and type).
  Prefix PrefixOfInternal(const Slice& internal_key) const {
    return PrefixOf(Slice(internal_key.data(), internal_key.size() - 8));
  }

  // Negative, zero or positive as p sorts before, with or after b's prefix.
  static int Compare(const Prefix& p, const Bucket& b) {
    int c = std::memcmp(p.bytes, b.key(), std::min(p.len, b.len));
    if (c != 0) return c;
    return static_cast<int>(p.len) - static_cast<int>(b.len);
  }

  Bucket* Exact(const Prefix& p) const {
    if (hashed_) return Hashed(p);
    return Listed(p);
  }

  // A bucket through its index word's sorted list.
  Bucket* Listed(const Prefix& p) const {
    Leaf* leaf = leaves_[p.index >> 8].load(std::memory_order_acquire);
    if (leaf == nullptr) return nullptr;
    for (Bucket* b = leaf->first[p.index & 255].load(std::memory_order_acquire); b != nullptr;
         b = b->next.load(std::memory_order_acquire)) {
      int c = Compare(p, *b);
      if (c == 0) return b;
      if (c < 0) return nullptr;
    }
    return nullptr;
  }

  // A bucket through the hash table (long prefixes). A table holds every
  // bucket made before it was published, and tables are never freed (they
  // are in the arena), so a reader holding an old one misses only buckets
  // made while it reads, as if it had read before them.
  Bucket* Hashed(const Prefix& p) const {
    const Table* t = table_.load(std::memory_order_acquire);
    if (t == nullptr) return nullptr;
    for (size_t i = Hash(p) & t->mask;; i = (i + 1) & t->mask) {
      Bucket* b = t->slots()[i].load(std::memory_order_acquire);
      if (b == nullptr || Compare(p, *b) == 0) return b;
    }
  }

  static size_t Hash(const Prefix& p) {
    uint64_t h = 0xcbf29ce484222325ull ^ p.len;
    for (size_t i = 0; i < p.len; ++i) h = (h ^ static_cast<uint8_t>(p.bytes[i])) * 0x100000001b3ull;
    return static_cast<size_t>(h ^ (h >> 29));
  }

  // The first bucket at an index word >= index.
  Bucket* FirstFromIndex(int index) const {
    while (index <= 0xffff) {
      int l = index >> 8;
      if (Leaf* leaf = leaves_[l].load(std::memory_order_acquire)) {
        // A word's bit is set before its first bucket is linked (BucketFor).
        for (int i = FirstSetFrom(leaf->used, index & 255); i >= 0; i = FirstSetFrom(leaf->used, i + 1)) {
          if (Bucket* b = leaf->first[i].load(std::memory_order_acquire)) return b;
        }
      }
      l = FirstSetFrom(used_, l + 1);
      if (l < 0) return nullptr;
      index = l << 8;
    }
    return nullptr;
  }

  // The last bucket at an index word <= index.
  Bucket* LastUpToIndex(int index) const {
    while (index >= 0) {
      int l = index >> 8;
      if (Leaf* leaf = leaves_[l].load(std::memory_order_acquire)) {
        for (int i = LastSetUpTo(leaf->used, index & 255); i >= 0; i = LastSetUpTo(leaf->used, i - 1)) {
          Bucket* b = leaf->first[i].load(std::memory_order_acquire);
          if (b == nullptr) continue;  // its bucket not linked yet
          while (Bucket* n = b->next.load(std::memory_order_acquire)) b = n;
          return b;
        }
      }
      l = LastSetUpTo(used_, l - 1);
      if (l < 0) return nullptr;
      index = (l << 8) | 255;
    }
    return nullptr;
  }

  Bucket* FirstBucket() const {
    return hashed_ ? order_head_[0].load(std::memory_order_acquire) : FirstFromIndex(0);
  }

  Bucket* LastBucket() const {
    if (!hashed_) return LastUpToIndex(0xffff);
    Bucket* x = nullptr;
    for (int level = kMaxHeight - 1; level >= 0; --level) {
      while (Bucket* n = OrderLink(x, level)->load(std::memory_order_acquire)) x = n;
    }
    return x;
  }

  // The first bucket whose prefix sorts after p.
  Bucket* FirstAfter(const Prefix& p) const {
    if (hashed_) {
      Bucket* after = nullptr;  // the one compared, not the link read again (see FindLess)
      OrderedBefore(p, true, nullptr, &after);
      return after;
    }
    if (Leaf* leaf = leaves_[p.index >> 8].load(std::memory_order_acquire)) {
      for (Bucket* b = leaf->first[p.index & 255].load(std::memory_order_acquire); b != nullptr;
           b = b->next.load(std::memory_order_acquire)) {
        if (Compare(p, *b) < 0) return b;
      }
    }
    return FirstFromIndex(p.index + 1);
  }

  // The last bucket whose prefix sorts before p.
  Bucket* LastBefore(const Prefix& p) const {
    if (hashed_) return OrderedBefore(p, false);
    Bucket* last = nullptr;
    if (Leaf* leaf = leaves_[p.index >> 8].load(std::memory_order_acquire)) {
      for (Bucket* b = leaf->first[p.index & 255].load(std::memory_order_acquire);
           b != nullptr && Compare(p, *b) > 0; b = b->next.load(std::memory_order_acquire)) {
        last = b;
      }
    }
    return last != nullptr ? last : LastUpToIndex(p.index - 1);
  }

  Bucket* After(Bucket* b) const {
    Bucket* n = b->next.load(std::memory_order_acquire);
    return n != nullptr || hashed_ ? n : FirstFromIndex(b->index + 1);
  }

  Bucket* Before(Bucket* b) const {
    if (hashed_) return OrderedBefore(PrefixOfBucket(*b), false);
    Leaf* leaf = leaves_[b->index >> 8].load(std::memory_order_acquire);
    Bucket* prev = nullptr;
    for (Bucket* x = leaf->first[b->index & 255].load(std::memory_order_acquire); x != b;
         x = x->next.load(std::memory_order_acquire)) {
      prev = x;
    }
    return prev != nullptr ? prev : LastUpToIndex(b->index - 1);
  }

  // The skiplist of buckets (long prefixes). A null bucket is its head.
  std::atomic<Bucket*>* OrderLink(Bucket* x, int level) const {
    return x == nullptr ? &order_head_[level] : x->Up(level);
  }

  // The last bucket whose prefix sorts before p (with `or_equal`, not after
  // it), or null; *after (if asked): the bucket after it that was compared,
  // or null.
  Bucket* OrderedBefore(const Prefix& p, bool or_equal, Bucket** prev = nullptr, Bucket** after = nullptr) const {
    Bucket* x = nullptr;
    for (int level = kMaxHeight - 1; level >= 0; --level) {
      Bucket* n = OrderLink(x, level)->load(std::memory_order_acquire);
      for (; n != nullptr; n = OrderLink(x, level)->load(std::memory_order_acquire)) {
        int c = Compare(p, *n);
        if (c < 0 || (c == 0 && !or_equal)) break;
        x = n;
      }
      if (prev != nullptr) prev[level] = x;
      if (level == 0 && after != nullptr) *after = n;
    }
    return x;
  }

  static Prefix PrefixOfBucket(const Bucket& b) {
    Prefix q;
    q.index = b.index;
    q.len = b.len;
    std::memcpy(q.bytes, b.key(), b.len);
    return q;
  }

  // The last node of b that `less` (x < target) holds for, or b's head;
  // *after (if asked): the node after it that `less` was found false for,
  // or null. A lookup must take *after, not the returned node's Next(0)
  // read again: a writer may have linked a node in between since, one that
  // `less` holds for (a newer version of the key, above a reader's
  // sequence number), which RocksDB's point lookup would take as its
  // answer (it trusts the position and does not check the sequence).
  template <class Less>
  static Node* FindLess(Bucket* b, const Less& less, Node** after = nullptr) {
    Node* x = b->head();
    int level = b->height.load(std::memory_order_relaxed) - 1;
    while (true) {
      Node* next = x->Next(level);
      if (next != nullptr && less(next->Entry())) {
        x = next;
      } else if (level == 0) {
        if (after != nullptr) *after = next;
        return x;
      } else {
        --level;
      }
    }
  }

  static Node* Last(Bucket* b) {
    Node* x = b->head();
    int level = b->height.load(std::memory_order_relaxed) - 1;
    while (true) {
      Node* next = x->Next(level);
      if (next != nullptr) {
        x = next;
      } else if (level == 0) {
        return x == b->head() ? nullptr : x;
      } else {
        --level;
      }
    }
  }

  // How many of b's entries lie in [start, end) (null: open): counted, up
  // to kCountedEntries; past them, estimated from the skiplist's levels, as
  // RocksDB's skiplist does (an estimate that may be off by 4x either way,
  // and is not monotonic: a range's two estimates may even come out
  // reversed), and never less than what was counted.
  static constexpr uint64_t kCountedEntries = 4096;
  uint64_t CountBetween(Bucket* b, const Slice* start, const Slice* end) const {
    Node* x = b->head()->Next(0);
    if (start != nullptr) FindLess(b, [&](const char* e) { return Cmp(e, *start) < 0; }, &x);
    uint64_t n = 0;
    for (; x != nullptr && n < kCountedEntries; x = x->Next(0), ++n) {
      if (end != nullptr && Cmp(x->Entry(), *end) >= 0) return n;
    }
    if (x == nullptr) return n;
    const uint64_t below_start = start != nullptr ? EstimateBelow(b, *start) : 0;
    const uint64_t below_end = end != nullptr ? EstimateBelow(b, *end) : b->count.load(std::memory_order_relaxed);
    return std::max(n, below_end > below_start ? below_end - below_start : 0);
  }

  // About how many of b's entries sort before ikey: the steps taken at
  // each level of the search, a step at level n standing for 4^n entries.
  uint64_t EstimateBelow(Bucket* b, const Slice& ikey) const {
    Node* x = b->head();
    int level = b->height.load(std::memory_order_relaxed) - 1;
    uint64_t n = 0;
    while (true) {
      Node* next = x->Next(level);
      if (next != nullptr && Cmp(next->Entry(), ikey) < 0) {
        x = next;
        ++n;
      } else if (level == 0) {
        return n;
      } else {
        n *= 4;
        --level;
      }
    }
  }


 private:
  // Stops the node unless the column family's comparator orders entries as
  // Cmp does (a bytewise user comparator): keys of different lengths, bytes
  // past 0x7f, and versions of one key.
  void CheckComparator() const {
    std::vector<std::string> entries;
    for (const char* user : {"", "a", "ab", "b", "\x01", "\xff", "a\xff"}) {
      for (uint64_t trailer : {uint64_t{1} << 8 | 1, uint64_t{7} << 8 | 1, uint64_t{7} << 8 | 0}) {
        std::string e(1, static_cast<char>(std::strlen(user) + 8));
        e += user;
        e.append(reinterpret_cast<const char*>(&trailer), 8);
        entries.push_back(std::move(e));
      }
    }
    auto sign = [](int c) { return (c > 0) - (c < 0); };
    for (const auto& a : entries) {
      for (const auto& b : entries) {
        SHOAL_CHECK(sign(cmp_(a.data(), b.data())) == sign(Cmp(a.data(), b.data())));
        SHOAL_CHECK(sign(cmp_(a.data(), EntryKey(b.data()))) == sign(Cmp(a.data(), EntryKey(b.data()))));
      }
    }
  }

  char* AllocateAligned(size_t bytes) {
    char* raw = nullptr;
    MemTableRep::Allocate(bytes + kWord - 1, &raw);
    auto at = (reinterpret_cast<uintptr_t>(raw) + kWord - 1) & ~(uintptr_t{kWord} - 1);
    return reinterpret_cast<char*>(at);
  }

  Bucket* BucketFor(const Prefix& p) {
    if (Bucket* b = Exact(p)) return b;
    std::lock_guard<std::mutex> lock(grow_mu_);
    if (Bucket* b = Exact(p)) return b;
    if (hashed_) return NewOrderedBucket(p);
    int l = p.index >> 8;
    Leaf* leaf = leaves_[l].load(std::memory_order_relaxed);
    if (leaf == nullptr) {
      leaf = new (AllocateAligned(sizeof(Leaf))) Leaf();
      leaves_[l].store(leaf, std::memory_order_release);
    }
    auto* b = new (AllocateAligned(sizeof(Bucket) + p.len)) Bucket(p);
    std::atomic<Bucket*>* at = &leaf->first[p.index & 255];
    for (Bucket* x = at->load(std::memory_order_relaxed); x != nullptr && Compare(p, *x) > 0;
         x = at->load(std::memory_order_relaxed)) {
      at = &x->next;
    }
    b->next.store(at->load(std::memory_order_relaxed), std::memory_order_relaxed);
    // The bits before the link: a writer that finds the bucket (Exact, no
    // lock) may insert at once, and a scan must not step over it then.
    // Scans skip a word whose bit is set and whose first bucket is not yet.
    SetBit(leaf->used, p.index & 255);
    SetBit(used_, l);
    at->store(b, std::memory_order_release);
    return b;
  }

  // Under grow_mu_: a bucket linked into the skiplist of buckets (bottom
  // level first), then into the hash table. A bucket found in the table is
  // in the order, so an iterator can step from it both ways; one in the
  // order but not yet in the table is empty, as no writer can find it.
  Bucket* NewOrderedBucket(const Prefix& p) {
    Table* t = TableWithRoom();  // allocates first: nothing is half linked if it throws
    Bucket* prev[kMaxHeight];
    OrderedBefore(p, false, prev);
    const int height = RandomHeight();
    char* raw = AllocateAligned((height - 1) * kWord + sizeof(Bucket) + p.len);
    auto* b = new (raw + (height - 1) * kWord) Bucket(p);
    for (int level = 0; level < height; ++level) {
      auto* link = b->Up(level);
      if (level > 0) new (link) std::atomic<Bucket*>(nullptr);
      link->store(OrderLink(prev[level], level)->load(std::memory_order_relaxed), std::memory_order_relaxed);
    }
    for (int level = 0; level < height; ++level) OrderLink(prev[level], level)->store(b, std::memory_order_release);
    Place(t, b, Hash(p));
    return b;
  }

  // Under grow_mu_. A table at most half full; a full one is copied into
  // one twice its size, which is published once it holds every bucket.
  // Its slots follow it.
  struct Table {
    size_t mask;
    size_t used;
    std::atomic<Bucket*>* slots() const {
      return reinterpret_cast<std::atomic<Bucket*>*>(const_cast<Table*>(this) + 1);
    }
  };
  static_assert(sizeof(Table) % kWord == 0);
  Table* NewTable(size_t slots) {
    auto* t = new (AllocateAligned(sizeof(Table) + slots * sizeof(std::atomic<Bucket*>))) Table{slots - 1, 0};
    for (size_t i = 0; i < slots; ++i) new (&t->slots()[i]) std::atomic<Bucket*>(nullptr);
    return t;
  }
  static void Place(Table* t, Bucket* b, size_t hash) {
    size_t i = hash & t->mask;
    while (t->slots()[i].load(std::memory_order_relaxed) != nullptr) i = (i + 1) & t->mask;
    t->slots()[i].store(b, std::memory_order_release);
    ++t->used;
  }
  // The table, with room for one more bucket.
  Table* TableWithRoom() {
    Table* t = table_.load(std::memory_order_relaxed);
    if (t != nullptr && (t->used + 1) * 2 <= t->mask + 1) return t;
    Table* bigger = NewTable(t == nullptr ? 64 : (t->mask + 1) * 2);
    for (size_t i = 0; t != nullptr && i <= t->mask; ++i) {
      Bucket* old = t->slots()[i].load(std::memory_order_relaxed);
      if (old != nullptr) Place(bigger, old, Hash(PrefixOfBucket(*old)));
    }
    table_.store(bigger, std::memory_order_release);
    return bigger;
  }

  // The thread's next hint, if it is for this insert (its memtable, bucket
  // and user key); taken then.
  const PathHint* TakeHint(const Bucket* b, const char* entry) const {
    if (path_hints == nullptr) return nullptr;  // this thread never walked
    PathHints& hints = *path_hints;
    if (hints.next == hints.size) return nullptr;
    const PathHint& h = hints.hints[hints.next];
    const Slice user = UserKey(entry);
    if (h.rep != id_ || h.bucket != b || user.size() != h.key_len || std::memcmp(user.data(), h.key, h.key_len) != 0) {
      return nullptr;
    }
    ++hints.next;
    ++hints.taken;
    return &h;
  }

  void Add(Node* x) {
    int height = static_cast<int>(reinterpret_cast<uintptr_t>(x->link0.load(std::memory_order_relaxed)));
    const char* entry = x->Entry();
    Bucket* b = BucketFor(PrefixOf(UserKey(entry)));
    // Two writers rarely meet on one prefix: the second spins, yielding.
    while (b->busy.test_and_set(std::memory_order_acquire)) {
      while (b->busy.test(std::memory_order_relaxed)) std::this_thread::yield();
    }
    Node* prev[kMaxHeight];
    int top = b->height.load(std::memory_order_relaxed);
    const PathHint* hint = TakeHint(b, entry);
    // A walked key first tries the levels it is linked at only (one, for
    // three nodes in four), each from where its walk went down, stepping
    // past what was linked in since (another key of the batch, another
    // writer's): a fresh walk's nodes are those read last, in the cache.
    bool found = hint != nullptr;
    PathHints* hints = path_hints;  // not null when a hint was taken
    const bool follows = found && hints->last_rep == id_ && hints->last_bucket == b;
    for (int level = 0; found && level < std::min(height, top); ++level) {
      Node* at = level < hint->top ? hint->prev[level] : b->head();
      // The node linked last at this level, if it lies between: further on.
      if (Node* l = follows ? hints->last[level] : nullptr;
          l != nullptr && Cmp(l->Entry(), entry) < 0 && (at == b->head() || Cmp(l->Entry(), at->Entry()) > 0)) {
        at = l;
      }
      int steps = 0;
      for (Node* next = at->Next(level); next != nullptr && Cmp(next->Entry(), entry) < 0; next = at->Next(level)) {
        if (++steps > kHintSteps) {
          found = false;  // much came in since (a batch's keys in one gap)
          break;
        }
        at = next;
      }
      hints->steps += static_cast<uint64_t>(std::min(steps, kHintSteps));
      prev[level] = at;
    }
    if (!found) {  // no hint, or much came in since its walk: from the head
      Node* at = b->head();
      for (int level = top - 1; level >= 0; --level) {
        for (Node* next = at->Next(level); next != nullptr && Cmp(next->Entry(), entry) < 0;
             next = at->Next(level)) {
          at = next;
          if (hint != nullptr) ++hints->steps;
        }
        prev[level] = at;
      }
    }
    for (int level = top; level < height; ++level) prev[level] = b->head();
    if (height > top) b->height.store(height, std::memory_order_relaxed);
    for (int level = 0; level < height; ++level) {
      x->Link(level)->store(prev[level]->Link(level)->load(std::memory_order_relaxed), std::memory_order_relaxed);
      prev[level]->Link(level)->store(x, std::memory_order_release);
    }
    if (hint != nullptr) {
      if (!follows) {
        hints->last_rep = id_;
        hints->last_bucket = b;
        std::fill(std::begin(hints->last), std::end(hints->last), nullptr);
      }
      for (int level = 0; level < height; ++level) hints->last[level] = x;
    }
    b->count.fetch_add(1, std::memory_order_relaxed);
    b->busy.clear(std::memory_order_release);
  }

  static uint64_t NextId() {
    static std::atomic<uint64_t> made{0};
    return made.fetch_add(1, std::memory_order_relaxed) + 1;
  }

  const uint64_t id_ = NextId();  // never 0, never reused
  const KeyComparator& cmp_;
  const size_t prefix_bytes_;
  const bool hashed_;
  std::shared_ptr<Newest> newest_;  // null: not its factory's (tests)
  // Short prefixes: the directory.
  std::array<std::atomic<Leaf*>, 256> leaves_{};
  Bits used_{};  // which leaves hold a bucket
  std::mutex grow_mu_;
  // Long prefixes: the hash table, and the head of the skiplist of buckets.
  std::atomic<Table*> table_{nullptr};
  mutable std::array<std::atomic<Bucket*>, kMaxHeight> order_head_{};
};

// Storage for iterators that RocksDB places "in an arena": their owner runs
// the destructor and frees nothing. The storage cannot be handed on from
// within the destructor (the base class's destructor runs after it), so each
// thread holds the block whose destructor it ran last and recycles it at
// its next call, when that destructor has surely returned.
// Set once a thread's blocks are gone (thread exit): an iterator made or
// destroyed after that, by another thread_local's destructor, takes plain
// storage, or leaves its block to the process.
thread_local bool iterator_blocks_gone = false;

class IteratorBlocks {
 public:
  ~IteratorBlocks() {
    Settle();
    for (void* p : spare_) ::operator delete(p);
    spare_.clear();
    iterator_blocks_gone = true;
  }
  void* Take(size_t size) {
    if (iterator_blocks_gone) return ::operator new(size);
    Settle();
    if (spare_.empty()) return ::operator new(size);
    void* p = spare_.back();
    spare_.pop_back();
    return p;
  }
  void Retire(void* p) {
    if (iterator_blocks_gone) return;
    Settle();
    retiring_ = p;
  }

 private:
  static constexpr size_t kKeep = 8;
  void Settle() {
    if (retiring_ == nullptr) return;
    if (spare_.size() < kKeep) {
      spare_.push_back(retiring_);
    } else {
      ::operator delete(retiring_);
    }
    retiring_ = nullptr;
  }
  void* retiring_ = nullptr;
  std::vector<void*> spare_;
};

thread_local IteratorBlocks iterator_blocks;

// Walks the whole memtable in order: through a bucket's skiplist, then on to
// the next non-empty bucket. Prefix iterators are this same iterator; a
// caller that wants one prefix stops where the prefix changes.
class SlotIterator final : public MemTableRep::Iterator {
 public:
  SlotIterator(SlotMemTableRep* rep, bool in_arena) : rep_(rep), in_arena_(in_arena) {}
  ~SlotIterator() override {
    if (in_arena_) iterator_blocks.Retire(this);
  }

  bool Valid() const override { return node_ != nullptr; }
  const char* key() const override { return node_->Entry(); }

  // A flush walks every entry in order, and each node is a cache miss of
  // its own: the next one is fetched while the caller works on this one.
  void Next() override {
    if (Node* n = node_->Next(0)) {
      node_ = n;
      if (Node* after = n->Next(0)) {
        __builtin_prefetch(after);
        __builtin_prefetch(reinterpret_cast<const char*>(after) + 64);
      }
      return;
    }
    ToFirstFrom(rep_->After(bucket_));
  }

  void Prev() override {
    Node* p = FindLess(bucket_, node_->Entry());
    if (p != bucket_->head()) {
      node_ = p;
      return;
    }
    ToLastFrom(rep_->Before(bucket_));
  }

  void Seek(const Slice& internal_key, const char* memtable_key) override {
    Prefix p = rep_->PrefixOfInternal(internal_key);
    Bucket* b = rep_->Exact(p);
    if (b == nullptr) return ToFirstFrom(rep_->FirstAfter(p));
    Node* n = nullptr;
    if (memtable_key != nullptr) {
      FindLess(b, memtable_key, &n);
    } else {
      FindLess(b, internal_key, &n);
    }
    if (n != nullptr) {
      bucket_ = b;
      node_ = n;
      return;
    }
    ToFirstFrom(rep_->After(b));
  }

  void SeekForPrev(const Slice& internal_key, const char* memtable_key) override {
    Prefix p = rep_->PrefixOfInternal(internal_key);
    Bucket* b = rep_->Exact(p);
    if (b == nullptr) return ToLastFrom(rep_->LastBefore(p));
    Node* n = nullptr;
    Node* x = memtable_key != nullptr ? FindLess(b, memtable_key, &n) : FindLess(b, internal_key, &n);
    bool equal = n != nullptr && (memtable_key != nullptr ? SlotMemTableRep::Cmp(n->Entry(), memtable_key) == 0
                                                          : SlotMemTableRep::Cmp(n->Entry(), internal_key) == 0);
    if (equal) {
      bucket_ = b;
      node_ = n;
    } else if (x != b->head()) {
      bucket_ = b;
      node_ = x;
    } else {
      ToLastFrom(rep_->Before(b));
    }
  }

  void SeekToFirst() override { ToFirstFrom(rep_->FirstBucket()); }
  void SeekToLast() override { ToLastFrom(rep_->LastBucket()); }

 private:
  template <class Target>
  Node* FindLess(Bucket* b, const Target& target, Node** after = nullptr) const {
    return SlotMemTableRep::FindLess(b, [&](const char* e) { return SlotMemTableRep::Cmp(e, target) < 0; }, after);
  }

  void ToFirstFrom(Bucket* b) {
    for (; b != nullptr; b = rep_->After(b)) {
      if (Node* n = b->head()->Next(0)) {
        bucket_ = b;
        node_ = n;
        return;
      }
    }
    node_ = nullptr;
  }

  void ToLastFrom(Bucket* b) {
    for (; b != nullptr; b = rep_->Before(b)) {
      if (Node* n = SlotMemTableRep::Last(b)) {
        bucket_ = b;
        node_ = n;
        return;
      }
    }
    node_ = nullptr;
  }

  SlotMemTableRep* rep_;
  bool in_arena_;
  Bucket* bucket_ = nullptr;
  Node* node_ = nullptr;
};

MemTableRep::Iterator* SlotMemTableRep::GetIterator(rocksdb::Arena* arena) {
  if (arena == nullptr) return new SlotIterator(this, false);
  return new (iterator_blocks.Take(sizeof(SlotIterator))) SlotIterator(this, true);
}

class SlotMemTableFactory final : public rocksdb::MemTableRepFactory {
 public:
  explicit SlotMemTableFactory(size_t prefix_bytes) : prefix_bytes_(prefix_bytes) {}

  using MemTableRepFactory::CreateMemTableRep;
  MemTableRep* CreateMemTableRep(const MemTableRep::KeyComparator& cmp, rocksdb::Allocator* allocator,
                                 const rocksdb::SliceTransform*, rocksdb::Logger*) override {
    return new SlotMemTableRep(cmp, allocator, prefix_bytes_, newest_);
  }
  const char* Name() const override { return kName; }
  bool IsInsertConcurrentlySupported() const override { return true; }

  void PrefetchForWrites(std::span<const uint32_t> prefixes, std::span<const std::string_view> keys) {
    // Held while it reads: the memtable is not destroyed meanwhile (its
    // destructor takes the lock before its arena goes).
    {
      std::lock_guard lock(newest_->mu);
      if (newest_->rep == nullptr) return;
      newest_->rep->PrefetchBuckets(prefixes);
    }
    // The walks take the lock a group at a time (another writer's prefetch,
    // a memtable's switch or its end wait for one group at most), and stop
    // after the first kWalkKeys keys: a bigger batch's first paths would
    // leave the nearer caches before its last keys' inserts (at 1,024, the
    // last keys' inserts still find theirs).
    keys = keys.first(std::min(keys.size(), kWalkKeys));
    for (size_t from = 0; from < keys.size(); from += SlotMemTableRep::kWalks) {
      std::lock_guard lock(newest_->mu);
      if (newest_->rep == nullptr) return;
      newest_->rep->PrefetchPaths(keys.subspan(from, std::min(SlotMemTableRep::kWalks, keys.size() - from)));
    }
  }

  static constexpr const char* kName = "ShoalSlotMemTable";

 private:
  size_t prefix_bytes_;
  std::shared_ptr<Newest> newest_ = std::make_shared<Newest>();
};

}  // namespace

void PrefetchForWrites(rocksdb::MemTableRepFactory* factory, std::span<const uint32_t> prefixes,
                       std::span<const std::string_view> keys) {
  if (path_hints != nullptr) path_hints->Reset();  // the last write's are spent, or were for another
  if (factory == nullptr || (prefixes.empty() && keys.empty()) ||
      std::strcmp(factory->Name(), SlotMemTableFactory::kName) != 0) {
    return;
  }
  static_cast<SlotMemTableFactory*>(factory)->PrefetchForWrites(prefixes, keys);
}

WalkedInserts WalkedInsertsOnThisThread() {
  if (path_hints == nullptr) return {};
  return WalkedInserts{path_hints->taken, path_hints->steps};
}

std::shared_ptr<rocksdb::MemTableRepFactory> NewSlotMemTableFactory(size_t prefix_bytes) {
  return std::make_shared<SlotMemTableFactory>(std::clamp<size_t>(prefix_bytes, 1, kMaxPrefix));
}

}  // namespace shoal::storage

// StagedValues: the values one apply (ApplyTxn) has read or written, by data
// key. An apply looks each key it writes up here (a pipeline's batch holds
// hundreds), so keys are found by hash and kept in an arena; they are put in
// key order only when a transaction's read view walks them (rarely, and
// little). Addresses stay put while it grows: a reader may hold an item
// across later inserts. One thread.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace shoal::kv {

class StagedValues {
 public:
  struct Item {
    std::string_view key;            // in the arena
    std::optional<std::string> raw;  // nullopt: deleted (or read as absent)
    uint64_t hash = 0;               // Hash(key)
  };

  StagedValues() = default;
  StagedValues(const StagedValues&) = delete;
  StagedValues& operator=(const StagedValues&) = delete;

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }

  // A key's hash, for the calls below that take one (a caller that looks a
  // key up and then stages it hashes it once).
  static uint64_t Hash(std::string_view key) { return std::hash<std::string_view>{}(key); }
  // The item of key, or null.
  Item* Find(std::string_view key, uint64_t hash);
  Item* Find(std::string_view key) { return Find(key, Hash(key)); }
  const Item* Find(std::string_view key) const { return const_cast<StagedValues*>(this)->Find(key); }
  // The item of key, made (raw nullopt) if there was none; `*made` says so.
  Item* Emplace(std::string_view key, uint64_t hash, bool* made = nullptr);
  Item* Emplace(std::string_view key, bool* made = nullptr) { return Emplace(key, Hash(key), made); }
  // Forgets every item and frees their memory (an apply that flushes a
  // database: its staged values before the flush no longer count).
  void Clear();

  // The i-th item made (i < size()).
  const Item& Nth(size_t i) const { return At(i); }
  // Calls fn(const Item&) for every item, in the order they were made.
  template <typename Fn>
  void ForEach(Fn&& fn) const {
    for (size_t i = 0; i < size_; ++i) fn(At(i));
  }

  // In key order (bytewise): the first item at (strict: after) target, or
  // null; the last item at (strict: before) target, or null. The order is
  // sorted anew at the first such call after an insert (O(n log n)): a
  // transaction that interleaves many writes with ordered reads pays it at
  // each read.
  const Item* After(std::string_view target, bool strict) const;
  const Item* Before(std::string_view target, bool strict) const;

 private:
  // Block b holds kFirstBlock << b items, from item kFirstBlock * (2^b - 1);
  // block 0 is inline, and its items are found without a table, so an apply
  // of a few writes allocates one arena chunk, one of thousands few blocks.
  static constexpr size_t kFirstBlock = 8;
  static constexpr size_t kFirstChunk = 512;
  static constexpr size_t kArenaChunk = 4096;
  static size_t BlockOf(size_t i) { return std::bit_width(i / kFirstBlock + 1) - 1; }
  static size_t BlockStart(size_t b) { return kFirstBlock * ((size_t{1} << b) - 1); }
  Item& At(size_t i) {
    if (i < kFirstBlock) return first_[i];
    const size_t b = BlockOf(i);
    return blocks_[b - 1][i - BlockStart(b)];
  }
  const Item& At(size_t i) const { return const_cast<StagedValues*>(this)->At(i); }
  std::string_view Store(std::string_view key);
  // Makes the table anew with the first `items` items, room for one more.
  void Grow(size_t items);
  const std::vector<uint32_t>& Order() const;

  Item first_[kFirstBlock];
  std::vector<std::unique_ptr<Item[]>> blocks_;  // blocks 1, 2, ...
  size_t size_ = 0;
  // Open addressing: (the hash's low half << 32) | (item index + 1), 0
  // empty; none (empty) while the items fit in block 0.
  std::vector<uint64_t> table_;
  std::vector<std::unique_ptr<char[]>> chunks_;  // the keys' bytes
  size_t chunk_used_ = kArenaChunk;              // in chunks_.back()
  size_t chunk_size_ = kArenaChunk;              // of chunks_.back()
  mutable std::vector<uint32_t> order_;          // item indices by key (built lazily)
};

}  // namespace shoal::kv

#include "kv/staged_values.h"

#include <algorithm>
#include <cstring>
#include <functional>

namespace shoal::kv {
namespace {

// A table slot: the hash's low half (which places it: tables stay under
// 2^32 slots) above the item's index + 1, so that a probe compares keys only
// when their hashes agree, and a table grows without hashing keys again.
uint64_t SlotOf(uint64_t hash, size_t index) { return (hash << 32) | (index + 1); }
size_t IndexOf(uint64_t slot) { return static_cast<size_t>(slot & 0xffffffff) - 1; }
bool SameHash(uint64_t slot, uint64_t hash) { return (slot >> 32) == (hash & 0xffffffff); }

}  // namespace

StagedValues::Item* StagedValues::Find(std::string_view key, uint64_t hash) {
  if (table_.empty()) {
    for (size_t i = 0; i < size_; ++i) {
      if (first_[i].hash == hash && first_[i].key == key) return &first_[i];
    }
    return nullptr;
  }
  const size_t mask = table_.size() - 1;
  for (size_t p = hash & mask;; p = (p + 1) & mask) {
    const uint64_t slot = table_[p];
    if (slot == 0) return nullptr;
    if (SameHash(slot, hash)) {
      Item& item = At(IndexOf(slot));
      if (item.key == key) return &item;
    }
  }
}

StagedValues::Item* StagedValues::Emplace(std::string_view key, uint64_t hash, bool* made) {
  if (Item* found = Find(key, hash)) {
    if (made != nullptr) *made = false;
    return found;
  }
  if (size_ >= kFirstBlock && size_ == BlockStart(blocks_.size() + 1)) {
    blocks_.push_back(std::make_unique<Item[]>(kFirstBlock << (blocks_.size() + 1)));
  }
  Item& item = At(size_);
  item.key = Store(key);
  item.raw.reset();
  item.hash = hash;
  if (!table_.empty() || size_ >= kFirstBlock) {
    if ((size_ + 1) * 2 > table_.size()) Grow(size_);
    const size_t mask = table_.size() - 1;
    size_t p = hash & mask;
    while (table_[p] != 0) p = (p + 1) & mask;
    table_[p] = SlotOf(hash, size_);
  }
  ++size_;
  if (made != nullptr) *made = true;
  return &item;
}

std::string_view StagedValues::Store(std::string_view key) {
  if (chunks_.empty() || key.size() > chunk_size_ - chunk_used_) {
    chunk_size_ = std::max(chunks_.empty() ? kFirstChunk : kArenaChunk, key.size());
    chunks_.push_back(std::make_unique<char[]>(chunk_size_));
    chunk_used_ = 0;
  }
  char* at = chunks_.back().get() + chunk_used_;
  if (!key.empty()) std::memcpy(at, key.data(), key.size());
  chunk_used_ += key.size();
  return {at, key.size()};
}

void StagedValues::Grow(size_t items) {
  // Made anew from the items' own hashes: no key is hashed again.
  size_t slots = 16;
  while (slots < (items + 1) * 2) slots *= 2;
  table_.assign(slots, 0);
  const size_t mask = slots - 1;
  for (size_t i = 0; i < items; ++i) {
    size_t p = At(i).hash & mask;
    while (table_[p] != 0) p = (p + 1) & mask;
    table_[p] = SlotOf(At(i).hash, i);
  }
}

void StagedValues::Clear() {
  for (Item& item : first_) item.raw.reset();
  blocks_.clear();
  std::vector<uint64_t>().swap(table_);
  chunks_.clear();
  chunk_used_ = chunk_size_ = kArenaChunk;
  size_ = 0;
  order_.clear();
}

const std::vector<uint32_t>& StagedValues::Order() const {
  if (order_.size() != size_) {
    order_.resize(size_);
    for (size_t i = 0; i < size_; ++i) order_[i] = static_cast<uint32_t>(i);
    std::sort(order_.begin(), order_.end(), [this](uint32_t a, uint32_t b) { return At(a).key < At(b).key; });
  }
  return order_;
}

const StagedValues::Item* StagedValues::After(std::string_view target, bool strict) const {
  const auto& order = Order();
  auto it = strict ? std::upper_bound(order.begin(), order.end(), target,
                                      [this](std::string_view t, uint32_t i) { return t < At(i).key; })
                   : std::lower_bound(order.begin(), order.end(), target,
                                      [this](uint32_t i, std::string_view t) { return At(i).key < t; });
  return it == order.end() ? nullptr : &At(*it);
}

const StagedValues::Item* StagedValues::Before(std::string_view target, bool strict) const {
  const auto& order = Order();
  // The first item at (strict) or after (not strict) target; the one before it.
  auto it = strict ? std::lower_bound(order.begin(), order.end(), target,
                                      [this](uint32_t i, std::string_view t) { return At(i).key < t; })
                   : std::upper_bound(order.begin(), order.end(), target,
                                      [this](std::string_view t, uint32_t i) { return t < At(i).key; });
  return it == order.begin() ? nullptr : &At(*(it - 1));
}

}  // namespace shoal::kv

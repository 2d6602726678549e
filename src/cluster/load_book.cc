#include "cluster/load_book.h"

#include <algorithm>
#include <cmath>

namespace shoal::cluster {

bool LoadBook::ParentHalf(uint64_t shard, uint32_t begin, uint32_t end, uint64_t* bytes, double* ops) const {
  auto contains = [&](uint32_t b, uint32_t e) { return b <= begin && end <= e && e - b > end - begin; };
  for (const auto& [id, e] : book_) {
    if (id == shard) continue;
    if (e.bytes_known && contains(e.begin, e.end)) {
      *bytes = e.bytes / 2;
      *ops = e.ops / 2;
      return true;
    }
    if (e.prev_known && contains(e.prev_begin, e.prev_end)) {
      *bytes = e.prev_bytes / 2;
      *ops = e.prev_ops / 2;
      return true;
    }
  }
  return false;
}

LoadBook::Estimate LoadBook::Observe(uint64_t shard, const Report* r, int64_t now) {
  auto it = book_.find(shard);
  if (it != book_.end() && now - it->second.seen_us > kForgetUs) {
    book_.erase(it);
    it = book_.end();
  }
  if (r == nullptr) {
    if (it == book_.end() || !it->second.bytes_known) return {};
    return {true, it->second.bytes, static_cast<uint64_t>(it->second.ops)};
  }
  const bool is_new = it == book_.end();
  Entry& e = book_[shard];
  if (is_new || e.begin != r->slot_begin || e.end != r->slot_end) {
    // New here, or a split: the range's figures start from the parent's half
    // (or, for the parent itself, from half its own).
    Entry next;
    next.begin = r->slot_begin;
    next.end = r->slot_end;
    if (!is_new) {
      next.prev_begin = e.begin;
      next.prev_end = e.end;
      next.prev_known = e.bytes_known;
      next.prev_bytes = e.bytes;
      next.prev_ops = e.ops;
    }
    uint64_t bytes = 0;
    double ops = 0;
    bool from_parent = false;
    if (!is_new && e.bytes_known && e.begin <= next.begin && next.end <= e.end) {
      bytes = e.bytes / 2;
      ops = e.ops / 2;
      from_parent = true;
    } else {
      from_parent = ParentHalf(shard, next.begin, next.end, &bytes, &ops);
    }
    next.bytes_known = from_parent;
    next.bytes = bytes;
    next.carried = ops;
    next.since_us = now;
    next.leader = r->leader;
    next.term = r->term;
    e = next;
  } else if (e.leader != r->leader || e.term != r->term) {
    e.carried = e.ops;
    e.since_us = now;
    e.leader = r->leader;
    e.term = r->term;
  }
  const double measured_ops = r->measured ? static_cast<double>(r->ops_per_sec) : 0.0;
  double ops = measured_ops;
  if (e.carried > 0) {
    const double fade = std::exp(-static_cast<double>(now - e.since_us) / (kLoadMemorySecs * 1e6));
    ops = std::min(measured_ops + e.carried * fade, std::max(e.carried, measured_ops));
    if (e.carried * fade < 1.0) e.carried = 0;  // faded out
  }
  if (r->measured) {
    e.bytes = r->bytes;
    e.bytes_known = true;
  }
  e.ops = ops;
  e.seen_us = now;
  if (!e.bytes_known) return {};
  return {true, e.bytes, static_cast<uint64_t>(std::min(ops, 1e18))};
}

void LoadBook::Forget(int64_t now) {
  std::erase_if(book_, [&](const auto& kv) { return now - kv.second.seen_us > kForgetUs; });
}

}  // namespace shoal::cluster

#include "cluster/load_book.h"

#include <algorithm>
#include <cmath>

namespace shoal::cluster {
namespace {

bool Valid(uint32_t begin, uint32_t end) { return begin < end; }

// [b, e) strictly contains [begin, end).
bool StrictlyContains(uint32_t b, uint32_t e, uint32_t begin, uint32_t end) {
  return b <= begin && end <= e && e - b > end - begin;
}

uint64_t ToCount(double v) { return static_cast<uint64_t>(std::clamp(v, 0.0, 1e18)); }

// Figures within kDeadBand of the one in use leave it in use.
double Banded(double in_use, double fresh) {
  return std::abs(fresh - in_use) > LoadBook::kDeadBand * std::max(in_use, 1.0) ? fresh : in_use;
}

}  // namespace

bool LoadBook::ParentHalf(uint64_t shard, uint32_t begin, uint32_t end, int64_t now, uint64_t* bytes,
                          double* ops) const {
  uint32_t best_width = UINT32_MAX;
  for (const auto& [id, e] : book_) {
    if (id == shard) continue;
    if (e.bytes_known && StrictlyContains(e.begin, e.end, begin, end) && e.end - e.begin < best_width) {
      best_width = e.end - e.begin;
      *bytes = e.bytes / 2;
      *ops = e.ops / 2;
    }
    if (e.prev_known && now - e.prev_at_us <= kForgetUs && StrictlyContains(e.prev_begin, e.prev_end, begin, end) &&
        e.prev_end - e.prev_begin < best_width) {
      best_width = e.prev_end - e.prev_begin;
      *bytes = e.prev_bytes / 2;
      *ops = e.prev_ops / 2;
    }
  }
  return best_width != UINT32_MAX;
}

LoadBook::Estimate LoadBook::Out(const Entry& e, int64_t now) const {
  // A leader that has reported nothing measured for a while (one of an
  // older version, or stuck): what is known is too old to weigh by.
  if (!e.bytes_known || now - e.measured_at_us > kForgetUs + kForgetUs) return {};
  return {true, ToCount(e.bytes_in_use), ToCount(e.ops_in_use)};
}

LoadBook::Estimate LoadBook::Observe(uint64_t shard, const Report* r, int64_t now) {
  auto it = book_.find(shard);
  if (it != book_.end() && now - it->second.seen_us > kForgetUs) {
    book_.erase(it);
    it = book_.end();
  }
  if (r == nullptr || !Valid(r->slot_begin, r->slot_end)) {
    // No leader, or one that does not say its range: what was known stands.
    return it == book_.end() ? Estimate{} : Out(it->second, now);
  }
  const bool is_new = it == book_.end();
  Entry& e = book_[shard];
  bool measured = r->measured;
  if (!is_new && StrictlyContains(r->slot_begin, r->slot_end, e.begin, e.end)) {
    // A leader that has not applied a split yet reports the range before
    // it: its figures are not for the range known.
    measured = false;
  } else if (is_new || e.begin != r->slot_begin || e.end != r->slot_end) {
    // New here, or a split: start from half the parent's figures (for the
    // parent itself, half its own).
    Entry next;
    next.begin = r->slot_begin;
    next.end = r->slot_end;
    if (!is_new) {
      next.prev_begin = e.begin;
      next.prev_end = e.end;
      next.prev_known = e.bytes_known;
      next.prev_bytes = e.bytes;
      next.prev_ops = e.ops;
      next.prev_at_us = now;
    }
    uint64_t bytes = 0;
    double ops = 0;
    bool known = false;
    if (!is_new && e.bytes_known && StrictlyContains(e.begin, e.end, next.begin, next.end)) {
      bytes = e.bytes / 2;
      ops = e.ops / 2;
      known = true;
    } else {
      known = ParentHalf(shard, next.begin, next.end, now, &bytes, &ops);
    }
    next.bytes_known = known;
    next.bytes = bytes;
    next.ops = ops;
    next.bytes_in_use = static_cast<double>(bytes);
    next.ops_in_use = ops;
    next.carried = ops;
    next.since_us = now;
    next.measured_at_us = now;
    next.leader = r->leader;
    next.term = r->term;
    e = next;
  }
  if (e.leader != r->leader || e.term != r->term) {
    e.carried = e.ops;
    e.since_us = now;
    e.leader = r->leader;
    e.term = r->term;
  }
  const double measured_ops = measured ? static_cast<double>(r->ops_per_sec) : 0.0;
  double ops = measured_ops;
  if (e.carried > 0) {
    const double fade = std::exp(-static_cast<double>(now - e.since_us) / (kLoadMemorySecs * 1e6));
    ops = std::min(measured_ops + e.carried * fade, std::max(e.carried, measured_ops));
    if (e.carried * fade < 1.0) e.carried = 0;  // faded out
  }
  if (measured) {
    e.bytes = r->bytes;
    e.bytes_known = true;
    e.measured_at_us = now;
  }
  e.ops = ops;
  e.bytes_in_use = Banded(e.bytes_in_use, static_cast<double>(e.bytes));
  e.ops_in_use = Banded(e.ops_in_use, e.ops);
  e.seen_us = now;
  return Out(e, now);
}

void LoadBook::Forget(int64_t now) {
  std::erase_if(book_, [&](const auto& kv) { return now - kv.second.seen_us > kForgetUs; });
}

}  // namespace shoal::cluster

// cluster::Cluster, the splits: creating a split's child replica on this node,
// the routing of slots to local replicas, the leader's load and size
// measurements, and the key recounts that follow a split
// (docs/design/splits.md).
#include "cluster/cluster.h"

#include <algorithm>
#include <cmath>

#include <spdlog/spdlog.h>

#include "cluster/cluster_internal.h"
#include "storage/keys.h"
#include "storage/raft_store.h"

namespace shoal::cluster {

bool Cluster::StageSplit(replica::Replica& parent, const replica::SplitCommand& split, const raft::ConfState& conf,
                         uint64_t index, storage::WriteBatch& batch) {
  auto* kv_sm = dynamic_cast<replica::KvStateMachine*>(&parent.state_machine());
  if (kv_sm == nullptr || split.child >= node::Groups::kMaxGroups) return false;
  {
    // Claimed here until FinishSplit has opened it: nothing else opens it.
    std::lock_guard lock(shards_mu_);
    if (!ClaimLocked(split.child, {split.slot, kv_sm->shard()->slot_end()})) {
      spdlog::error("shard {}: split child {} already exists here; only the parent's range shrinks", parent.group(),
                    split.child);
      return false;
    }
  }
  // The child of a parent an unsafe recovery forced here (its membership
  // this node alone) takes the child's recovery from the metadata, which
  // recovers both halves of a split under way together (AdminRecover).
  const bool sole = conf.voters == std::vector<raft::NodeId>{parent.node_id()} && conf.voters_outgoing.empty();
  uint64_t recovery = 0;
  bool parent_current = false;  // the parent's replica is of its latest recovery
  if (MetaPtr m = meta()) {
    const proto::ShardInfo* info = FindShardById(*m, split.child);
    if (info != nullptr && info->recovery() > 0 && info->recovered_on() == node_id_ && sole) recovery = info->recovery();
    const proto::ShardInfo* p = FindShardById(*m, parent.group());
    parent_current = p != nullptr && parent.recovery() >= p->recovery();
  }
  // The metadata may have lost the child's recovery (a recovery of the meta
  // shard since): a child born of a parent forced here, alone, belongs to
  // the parent's recovery all the same. Born at its number, it takes no
  // message from the lost voters' copies of the child, and the placement
  // records the number, which removes those copies.
  if (recovery == 0 && sole && conf.learners.empty() && parent_current) recovery = parent.recovery();
  // The child's replica here is the parent's member (same id, same incarnation).
  Status s = replica::StageSplitChild(engine_, *kv_sm->shard(), split, conf, index, batch, recovery,
                                      replica::StoredIncarnation{parent.node_id(), parent.incarnation()});
  if (!s.ok()) {
    spdlog::error("shard {}: cannot create split child {} here: {}", parent.group(), split.child, s.ToString());
    std::lock_guard lock(shards_mu_);
    opening_.erase(split.child);
    return false;
  }
  return true;
}

void Cluster::FinishSplit(replica::Replica& parent, const replica::SplitCommand& split) {
  std::pair<uint16_t, uint16_t> range;
  {
    std::lock_guard lock(shards_mu_);
    auto it = opening_.find(split.child);
    if (it == opening_.end()) return;
    range = it->second;
  }
  auto r = OpenShardReplica(split.child, range.first, range.second, false, 0, 0);  // ends the claim
  if (!r.ok() && r.status().code() != Code::kAborted) {
    // Its state is written and the parent has shrunk: a node that went on
    // without the child would leave it a member short (with one more down,
    // no leader, and its slots no owner) until a restart, which opens it.
    // (Aborted: refused on purpose, an overlap or another member's state;
    // a restart would leave it closed too.)
    spdlog::critical("shard {}: split child {} could not be opened: {}; stopping this node (a restart opens it)",
                     parent.group(), split.child, r.status().ToString());
    spdlog::default_logger()->flush();
    FailStop("opening a split's child failed");
  }
  if (!r.ok() || *r == nullptr) {
    spdlog::critical("shard {}: split child {} could not be opened: {}", parent.group(), split.child,
                     r.ok() ? "gone" : r.status().ToString());
    return;
  }
  spdlog::info("shard {}: split: shard {} takes slots {}-{} here", parent.group(), split.child, range.first,
               range.second - 1);
  // The node meant to lead the child (else the parent's leader's) elects
  // it at once: no election timeout without a leader for the moved slots.
  MetaPtr m = meta();
  const proto::ShardInfo* info = m ? FindShardById(*m, split.child) : nullptr;
  bool preferred_here = info != nullptr && info->preferred_leader() == node_id_;
  bool preferred_known = info != nullptr && info->preferred_leader() != 0;
  // Not a child from before an unsafe recovery of it (the split applied in
  // the lineage the recovery replaced): it waits to be forced or deleted.
  bool stale = info != nullptr && (*r)->recovery() < info->recovery();
  if (!stale && (preferred_here || (!preferred_known && parent.is_leader()))) {
    replica::Replica* child = *r;
    asio::post(groups_->WorkerFor(split.child).io(), [this, child] {
      if (child->retired()) return;
      child->Campaign();
      groups_->Notify(child);
    });
  }
}

uint64_t Cluster::SlotHolderLocked(uint64_t self, uint16_t begin, uint16_t end) const {
  auto overlaps = [&](uint16_t b, uint16_t e) { return b < end && begin < e; };
  for (const auto& [id, shard] : shards_) {
    if (id != self && overlaps(shard->slot_begin(), shard->slot_end())) return id;
  }
  for (const auto& [id, range] : opening_) {
    if (id != self && range.second != 0 && overlaps(range.first, range.second)) return id;
  }
  for (const auto& [id, range] : image_claims_) {
    if (id != self && overlaps(range.first, range.second)) return id;
  }
  return 0;
}

bool Cluster::ClaimImage(replica::Replica& r, uint16_t begin, uint16_t end) {
  std::lock_guard lock(shards_mu_);
  if (SlotHolderLocked(r.group(), begin, end) != 0) return false;
  auto [it, fresh] = image_claims_.try_emplace(r.group(), begin, end);
  if (!fresh) it->second = {std::min(it->second.first, begin), std::max(it->second.second, end)};  // two pending
  return true;
}

void Cluster::ReleaseImage(replica::Replica& r) {
  std::lock_guard lock(shards_mu_);
  image_claims_.erase(r.group());
}

uint64_t Cluster::LocalRangesSig() {
  std::lock_guard lock(shards_mu_);
  uint64_t sig = 0;
  for (const auto& [id, shard] : shards_) {
    sig = sig * 0x9E3779B97F4A7C15ULL + (id << 32 | uint64_t{shard->slot_begin()} << 16 | shard->slot_end());
  }
  return sig;
}

void Cluster::MeasureLoad(int64_t now) {
  if (now - last_load_us_ < 1'000'000) return;
  const double secs = last_load_us_ == 0 ? 0.0 : static_cast<double>(now - last_load_us_) / 1e6;
  last_load_us_ = now;
  std::vector<uint32_t> cur(storage::kSlotCount);
  // Summed over the workers' counters (wrapping as each does).
  for (const auto& w : slot_ops_) {
    for (uint32_t slot = 0; slot < storage::kSlotCount; ++slot) cur[slot] += w->ops[slot].load(std::memory_order_relaxed);
  }
  const bool first = last_slot_ops_.size() != cur.size();
  const bool size_due = now - last_size_us_ >= 5'000'000;
  if (size_due) last_size_us_ = now;
  std::map<uint64_t, ShardLoad> next;
  for (kv::Shard* sh : LocalShards()) {
    replica::Replica* r = groups_->Find(sh->id());
    if (r == nullptr || !r->published_is_leader()) continue;
    ShardLoad l = load_.contains(sh->id()) ? load_[sh->id()] : ShardLoad{};
    const uint16_t b = sh->slot_begin(), e = sh->slot_end();
    if (l.begin != b || l.end != e) l = ShardLoad{.begin = b, .end = e, .since_us = now};  // new, or split: measured anew
    // This second's operations per slot (counters wrap: unsigned difference).
    uint64_t ops = 0;
    for (uint32_t slot = b; slot < e && !first; ++slot) ops += cur[slot] - last_slot_ops_[slot];
    if (secs > 0) {
      double alpha = 1.0 - std::exp(-secs / LoadBook::kLoadMemorySecs);
      l.ewma_ops += alpha * (static_cast<double>(ops) / secs - l.ewma_ops);
      // The average starts at 0: once it has gathered half its weight
      // (about 7 s), divided by that weight it is the rate, not an
      // underestimate (before, the meta leader's LoadBook carries the
      // previous leader's figure).
      const double gathered = 1.0 - std::exp(-static_cast<double>(now - l.since_us) / 1e6 / LoadBook::kLoadMemorySecs);
      l.ops_per_sec = gathered >= 0.5 ? l.ewma_ops / gathered : l.ewma_ops;
    }
    uint32_t load_slot = 0;
    if (ops >= 20 && e - b >= 2) {
      // Where the load halves: the child takes the upper half.
      uint64_t acc = 0;
      for (uint32_t slot = b; slot < e; ++slot) {
        acc += cur[slot] - last_slot_ops_[slot];
        if (acc * 2 >= ops) {
          load_slot = std::clamp<uint32_t>(slot, b + 1u, e - 1u);
          break;
        }
      }
    }
    if (size_due || !l.measured) {
      l.measured = true;
      auto size_of = [&](uint32_t lo, uint32_t hi) {
        return engine_->ApproximateSize(storage::Cf::kData, storage::DataSlotDbPrefix(static_cast<uint16_t>(lo), 0),
                                        storage::DataSlotDbPrefix(static_cast<uint16_t>(hi), 0));
      };
      l.bytes = size_of(b, e);
      // Where the size halves (a binary search over slots). Small ranges
      // are mostly in memtables, whose sizes RocksDB estimates from entry
      // counts and an average entry size, too coarse to find a median:
      // those split in the middle.
      uint32_t lo = b + 1u, hi = e - 1u;
      while (e - b >= 2 && lo < hi && l.bytes >= (64ULL << 20)) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (size_of(b, mid) * 2 >= l.bytes) {
          hi = mid;
        } else {
          lo = mid + 1;
        }
      }
      if (e - b >= 2) l.split_slot = l.bytes >= (64ULL << 20) ? lo : b + (e - b) / 2;
    }
    // A busy shard splits where its load halves (a split for load is what
    // the planner would make of it); else where its size does.
    bool busy = opts_.split_ops_per_sec > 0 && l.ops_per_sec * 2 >= static_cast<double>(opts_.split_ops_per_sec);
    if (load_slot != 0 && busy) l.split_slot = load_slot;
    if (l.split_slot <= b || l.split_slot >= e) l.split_slot = e - b >= 2 ? b + (e - b) / 2 : 0;
    next[sh->id()] = l;
  }
  load_ = std::move(next);
  last_slot_ops_ = std::move(cur);
}

void Cluster::FillLoad(node::LeaderReport* rep) const {
  if (rep->group == 0) return;
  if (kv::Shard* sh = LocalShard(rep->group)) {
    rep->slot_begin = sh->slot_begin();
    rep->slot_end = sh->slot_end();
  }
  auto it = load_.find(rep->group);
  // Figures for another range (a split since) are not this range's.
  if (it == load_.end() || !it->second.measured || it->second.begin != rep->slot_begin ||
      it->second.end != rep->slot_end) {
    return;
  }
  rep->bytes = it->second.bytes;
  rep->ops_per_sec = static_cast<uint64_t>(it->second.ops_per_sec);
  rep->split_slot = it->second.split_slot;
  rep->load_measured = true;
}

const proto::ShardInfo* Cluster::MissedSplitTail(const proto::MetaState& meta, const proto::ShardInfo& s,
                                                 const kv::Shard& local) const {
  const proto::ShardInfo* tail = RecoveredTail(meta, s, local.slot_begin(), local.slot_end(), node_id_);
  if (tail == nullptr) return nullptr;
  for (const auto& t : meta.shards()) {
    // (Nor state left on disk: the split would fail to create the child,
    // and only shrink the parent, which holds the only copy of its data.)
    if (t.slot_begin() >= s.slot_end() && t.slot_end() <= local.slot_end() &&
        (groups_->Find(t.id()) != nullptr || storage::RaftStore::HasState(engine_, t.id()))) {
      return nullptr;
    }
  }
  return tail;
}

void Cluster::ProposeSplitIfDue(replica::Replica* r, const proto::MetaState& meta, int64_t now) {
  const proto::ShardInfo* info = FindShardById(meta, r->group());
  if (info == nullptr) return;
  kv::Shard* sh = LocalShard(r->group());
  if (sh == nullptr || sh->slot_end() <= info->slot_end()) return;  // split here already
  // A split under way, or one the metadata records as done that this
  // replica missed: an unsafe recovery forced it here as the only voter
  // after the voters that applied the split were lost, and recovered the
  // shards over its extra slots on this node too (their data is here
  // only). It splits them off itself, one at a time (the child, born wider
  // than its own range, splits the rest off the same way).
  const bool missed = info->split_child() == 0;
  const proto::ShardInfo* child = nullptr;
  if (!missed) {
    child = FindShardById(meta, info->split_child());
  } else if (info->recovery() > 0 && r->recovery() == info->recovery() && info->recovered_on() == node_id_) {
    child = MissedSplitTail(meta, *info, *sh);
    if (child == nullptr) return;
  } else {
    return;
  }
  {
    std::lock_guard lock(transfer_mu_);
    int64_t& last = last_split_us_[r->group()];
    if (now - last < 1'000'000) return;
    last = now;
  }
  if (child == nullptr || child->slot_begin() != info->slot_end() ||
      (missed ? child->slot_end() > sh->slot_end() : child->slot_end() != sh->slot_end()) ||
      sh->slot_begin() != info->slot_begin()) {
    spdlog::warn("shard {}: split into {} waits: this replica holds slots {}-{}, the metadata {}-{}", r->group(),
                 child != nullptr ? child->id() : info->split_child(), sh->slot_begin(), sh->slot_end() - 1, info->slot_begin(), info->slot_end() - 1);
    return;
  }
  if (!r->raft().tracker().conf_state().voters_outgoing.empty()) return;  // joint: it would be ignored
  replica::SplitCommand split{child->id(), static_cast<uint16_t>(info->slot_end())};
  auto p = r->ProposeSplit(split, now);
  if (p.ok()) {
    spdlog::info("shard {}: proposed its split at slot {} into shard {}{}", r->group(), split.slot, split.child,
                 missed ? " (a split this recovered replica missed)" : "");
    groups_->Notify(r);
  }
}

void Cluster::RebuildLocalSlots() {
  std::lock_guard rebuild(local_slots_mu_);
  std::vector<uint32_t> owner(storage::kSlotCount, 0);
  {
    std::lock_guard lock(shards_mu_);
    uint64_t sig = 0;
    for (const auto& [id, shard] : shards_) {
      uint16_t b = shard->slot_begin(), e = shard->slot_end();
      sig = sig * 0x9E3779B97F4A7C15ULL + (id << 32 | uint64_t{b} << 16 | e);
      for (uint32_t slot = b; slot < e && slot < storage::kSlotCount; ++slot) owner[slot] = static_cast<uint32_t>(id);
    }
    local_ranges_sig_ = sig;
  }
  for (uint32_t slot = 0; slot < storage::kSlotCount; ++slot) {
    local_slot_group_[slot].store(owner[slot], std::memory_order_release);
  }
}

void Cluster::StartRecounts(int worker) {
  for (kv::Shard* sh : LocalShards()) {
    if (groups_->WorkerOf(sh->id()) != worker || !sh->NeedsRecount()) continue;
    {
      std::lock_guard lock(recount_mu_);
      if (recount_stop_ || recounting_.contains(sh->id())) continue;
      recounting_.insert(sh->id());
    }
    std::optional<kv::Shard::RecountJob> job = sh->BeginRecount();
    std::lock_guard lock(recount_mu_);
    if (!job || recount_stop_) {
      recounting_.erase(sh->id());
      continue;
    }
    recount_queue_.push_back(Recount{sh->id(), std::move(*job)});
    if (!recount_thread_.joinable()) recount_thread_ = std::thread([this] { RecountLoop(); });
  }
  recount_cv_.notify_one();
}

void Cluster::RecountLoop() {
  std::unique_lock lock(recount_mu_);
  while (true) {
    recount_cv_.wait(lock, [this] { return recount_stop_ || !recount_queue_.empty(); });
    if (recount_stop_) return;
    Recount r = std::move(recount_queue_.front());
    recount_queue_.pop_front();
    lock.unlock();
    auto counted = r.job.count(recount_abort_);  // the scan, off every worker
    lock.lock();
    if (recount_stop_) return;
    asio::post(groups_->WorkerFor(r.shard).io(), [this, shard = r.shard, gen = r.job.generation,
                                                  counted = std::move(counted)] {
      kv::Shard* sh = LocalShard(shard);
      if (sh != nullptr && counted.ok()) {
        auto done = sh->FinishRecount(gen, *counted);
        if (!done.ok()) spdlog::error("shard {}: key recount not saved: {}", shard, done.status().ToString());
        if (done.ok() && *done) spdlog::info("shard {}: key counters recounted", shard);
      } else if (!counted.ok()) {
        spdlog::error("shard {}: key recount failed: {}", shard, counted.status().ToString());
      }
      std::lock_guard l(recount_mu_);
      recounting_.erase(shard);  // still pending (stale, failed): the next round starts another
    });
  }
}

}  // namespace shoal::cluster

#include "cluster/planner.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <deque>
#include <map>
#include <set>

namespace shoal::cluster {
namespace {

using Ids = std::vector<uint64_t>;

// A balancing move (or chain of transfers) must lower the sum of squared
// node loads by at least 2 * kMargin * its weight: with shards alike
// (weight 1) loads that differ by two move, by one do not.
constexpr double kMargin = 0.5;

bool Has(const Ids& ids, uint64_t id) { return std::find(ids.begin(), ids.end(), id) != ids.end(); }

Ids Sorted(Ids ids) {
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  return ids;
}

Ids Without(Ids ids, uint64_t id) {
  ids.erase(std::remove(ids.begin(), ids.end(), id), ids.end());
  return ids;
}

Ids With(Ids ids, uint64_t id) {
  ids.push_back(id);
  return Sorted(std::move(ids));
}

Ids Members(const Membership& m) {
  Ids all = m.voters;
  all.insert(all.end(), m.learners.begin(), m.learners.end());
  return Sorted(std::move(all));
}

Membership Normalized(Membership m) {
  m.voters = Sorted(std::move(m.voters));
  m.learners = Sorted(std::move(m.learners));
  return m;
}

class Planner {
 public:
  Planner(const ClusterView& view, const PlannerPolicy& policy) : view_(view), policy_(policy) {
    for (const NodeView& n : view.nodes) {
      state_[n.id] = n.state;
      if (n.state == NodeState::kUp) up_.push_back(n.id);
    }
    up_ = Sorted(up_);
    rf_ = std::max(1, view.replication_factor);
    for (uint64_t n : up_) load_[n] = 0;
    Weigh();
  }

  std::vector<Move> Run() {
    // What each shard will want after this round (starts as what it wants).
    for (const ShardView& s : view_.shards) {
      Target t{Normalized(s.want), s.preferred_leader, false};
      for (uint64_t n : Members(t.m)) load_[n] += rw_[s.id];
      targets_[s.id] = t;
    }
    for (const ShardView& s : view_.shards) CountInFlight(s);
    for (const ShardView& s : view_.shards) Repair(s);
    if (policy_.balance) BalanceReplicas();
    PlanMetaVoters();
    PlanLeaders();
    PlanNodeRemovals();
    PlanSplit();
    return std::move(out_);
  }

 private:
  struct Target {
    Membership m;
    uint64_t leader = 0;
    bool moved = false;     // a membership move was planned this round
    bool complete = false;  // settled and needing no repair: may be balanced
  };

  // Replica and leader weights (planner.h); a shard whose load is not known
  // weighs the mean.
  void Weigh() {
    double bytes = 0, ops = 0;
    size_t known = 0;
    for (const ShardView& s : view_.shards) {
      if (!s.load_known) continue;
      bytes += static_cast<double>(s.bytes);
      ops += static_cast<double>(s.ops_per_sec);
      ++known;
    }
    const double mean_bytes = known == 0 ? 0 : bytes / static_cast<double>(known);
    const double mean_ops = known == 0 ? 0 : ops / static_cast<double>(known);
    const double fb = static_cast<double>(policy_.weight_floor_bytes);
    const double fo = static_cast<double>(policy_.weight_floor_ops);
    min_rw_ = min_lw_ = 1.0;
    for (const ShardView& s : view_.shards) {
      double b = s.load_known ? static_cast<double>(s.bytes) : mean_bytes;
      double o = s.load_known ? static_cast<double>(s.ops_per_sec) : mean_ops;
      rw_[s.id] = mean_bytes + fb > 0 ? (b + fb) / (mean_bytes + fb) : 1.0;
      lw_[s.id] = mean_ops + fo > 0 ? (o + fo) / (mean_ops + fo) : 1.0;
      min_rw_ = std::min(min_rw_, rw_[s.id]);
      min_lw_ = std::min(min_lw_, lw_[s.id]);
    }
  }

  bool IsUp(uint64_t n) const { return StateOf(n) == NodeState::kUp; }
  // Alive: its replicas still vote and acknowledge (a draining node is alive).
  bool IsAlive(uint64_t n) const {
    NodeState st = StateOf(n);
    return st == NodeState::kUp || st == NodeState::kDraining;
  }
  NodeState StateOf(uint64_t n) const {
    auto it = state_.find(n);
    return it == state_.end() ? NodeState::kRemoved : it->second;
  }
  bool MajorityAlive(const Ids& voters) const {
    size_t alive = 0;
    for (uint64_t v : voters) alive += IsAlive(v) ? 1 : 0;
    return !voters.empty() && alive * 2 > voters.size();
  }

  static bool Settled(const ShardView& s) {
    return s.reported && !s.joint && Normalized(s.want) == Normalized(s.actual);
  }
  // A shard whose move waits for a node that is not up (a wanted voter or
  // learner it does not have yet): the move can never finish, so it is
  // planned again from what the group actually has.
  bool Stuck(const ShardView& s) const {
    if (!s.reported || s.joint || Settled(s)) return false;
    for (uint64_t n : s.want.voters) {
      if (!Has(s.actual.voters, n) && !IsUp(n)) return true;
    }
    for (uint64_t n : s.want.learners) {
      if (!Has(Members(s.actual), n) && !IsUp(n)) return true;
    }
    return false;
  }

  void CountInFlight(const ShardView& s) {
    if (!s.reported || Settled(s) || Stuck(s)) return;
    busy_total_++;
    for (uint64_t n : Involved(Normalized(s.actual), Normalized(s.want))) busy_[n]++;
  }

  // The up nodes whose replica a change from `a` to `b` adds, removes or promotes.
  Ids Involved(const Membership& a, const Membership& b) const {
    Ids out;
    for (uint64_t n : Sorted([&] {
           Ids all = Members(a);
           Ids more = Members(b);
           all.insert(all.end(), more.begin(), more.end());
           return all;
         }())) {
      if (Has(a.voters, n) != Has(b.voters, n) || Has(a.learners, n) != Has(b.learners, n)) {
        if (IsUp(n)) out.push_back(n);
      }
    }
    return out;
  }

  bool BudgetAllows(const Ids& nodes) const {
    if (busy_total_ >= policy_.max_moves_total) return false;
    for (uint64_t n : nodes) {
      auto it = busy_.find(n);
      if (it != busy_.end() && it->second >= policy_.max_moves_per_node) return false;
    }
    return true;
  }

  // Least-loaded up node outside `exclude` (0 if none).
  uint64_t LeastLoaded(const Ids& exclude) const {
    uint64_t best = 0;
    for (uint64_t n : up_) {
      if (Has(exclude, n)) continue;
      if (best == 0 || load_.at(n) < load_.at(best)) best = n;
    }
    return best;
  }
  uint64_t MostLoaded(const Ids& among) const {
    uint64_t best = 0;
    for (uint64_t n : among) {
      double l = load_.count(n) ? load_.at(n) : 0;
      if (best == 0 || l > (load_.count(best) ? load_.at(best) : 0)) best = n;
    }
    return best;
  }

  // Records a membership move of shard `id` from `from` to `to`.
  bool Emit(uint64_t id, MoveKind kind, Ids nodes, const Membership& from, Membership to,
            std::string reason) {
    to = Normalized(std::move(to));
    if (to == from) return false;
    if (!MajorityAlive(from.voters) || !MajorityAlive(to.voters)) return false;
    Ids involved = Involved(from, to);
    if (!BudgetAllows(involved)) return false;
    busy_total_++;
    for (uint64_t n : involved) busy_[n]++;
    Target& t = targets_[id];
    for (uint64_t n : Members(t.m)) load_[n] -= rw_[id];
    for (uint64_t n : Members(to)) load_[n] += rw_[id];
    t.m = to;
    t.moved = true;
    Move mv;
    mv.kind = kind;
    mv.shard = id;
    mv.nodes = std::move(nodes);
    mv.target = std::move(to);
    mv.reason = std::move(reason);
    out_.push_back(std::move(mv));
    return true;
  }

  // One split at a time, of the shard most over a threshold, once no split
  // is under way.
  void PlanSplit() {
    if (policy_.split_bytes == 0 && policy_.split_ops_per_sec == 0) return;
    const ShardView* best = nullptr;
    double best_over = 1.0;
    for (const ShardView& s : view_.shards) {
      if (s.splitting) return;
      if (!s.reported || s.split_slot <= s.slot_begin || s.split_slot >= s.slot_end) continue;
      // Only a shard whose membership is settled (and not moved this round):
      // the child copies the membership.
      if (!Settled(s) || targets_[s.id].moved) continue;
      double over = 0;
      if (policy_.split_bytes > 0) over = std::max(over, double(s.bytes) / double(policy_.split_bytes));
      if (policy_.split_ops_per_sec > 0) {
        over = std::max(over, double(s.ops_per_sec) / double(policy_.split_ops_per_sec));
      }
      if (over > best_over) {
        best_over = over;
        best = &s;
      }
    }
    if (best == nullptr) return;
    Move mv;
    mv.kind = MoveKind::kSplit;
    mv.shard = best->id;
    mv.slot = best->split_slot;
    bool by_bytes = policy_.split_bytes > 0 && best->bytes > policy_.split_bytes;
    mv.reason = by_bytes ? std::to_string(best->bytes >> 20) + " MB" : std::to_string(best->ops_per_sec) + " ops/s";
    out_.push_back(std::move(mv));
  }

  void Repair(const ShardView& s) {
    if (!s.reported) return;  // no leader known: nothing would carry a move out
    if (s.splitting) return;  // its membership is copied into the child: hold it
    bool stuck = Stuck(s);
    if (!Settled(s) && !stuck) return;  // a move is under way
    if (!stuck) {
      // Only a shard that needs no repair may be balanced; one whose repair
      // waits for budget must not have its replicas moved meanwhile.
      Membership want = Normalized(s.want);
      if (!RepairFrom(s.id, want) && !NeedsRepair(want)) targets_[s.id].complete = true;
      return;
    }
    // Plan again from what the group has; if that needs nothing, the wanted
    // membership simply becomes what the group has.
    Membership want = Normalized(s.want), base = Normalized(s.actual);
    Target& t = targets_[s.id];
    const double w = rw_[s.id];
    for (uint64_t n : Members(t.m)) load_[n] -= w;
    for (uint64_t n : Members(base)) load_[n] += w;
    t.m = base;
    if (RepairFrom(s.id, base)) return;
    t.m = want;
    for (uint64_t n : Members(base)) load_[n] -= w;
    for (uint64_t n : Members(want)) load_[n] += w;
    Ids unreachable;
    for (uint64_t n : Members(want)) {
      if (!IsUp(n)) unreachable.push_back(n);
    }
    Emit(s.id, MoveKind::kRemoveReplica, unreachable, want, base, "give up a move that waits for a node that is not up");
  }

  // What RepairFrom would change, without a budget: the voter target, the
  // learner target, and no replica on a node that is not up.
  bool NeedsRepair(const Membership& base) const {
    auto [voters_target, learners_target] = Targets(base);
    for (uint64_t n : Members(base)) {
      if (!IsUp(n)) return true;
    }
    return static_cast<int>(base.voters.size()) != voters_target ||
           static_cast<int>(base.learners.size()) != learners_target;
  }

  // Plans at most one membership move for a settled shard; true if it did.
  // Voters: the largest odd count the up nodes allow, never fewer than the
  // shard has (up to the replication factor); learners make up the rest.
  std::pair<int, int> Targets(const Membership& base) const {
    const int usable = std::min<int>(rf_, static_cast<int>(up_.size()));
    const int voters =
        std::max({1, OddAtMost(usable), std::min(static_cast<int>(base.voters.size()), OddAtMost(rf_))});
    return {voters, std::max(0, usable - voters)};
  }

  bool RepairFrom(uint64_t id, const Membership& base) {
    auto [voters_target, learners_target] = Targets(base);
    Ids members = Members(base);

    // 1. A voter on a node that is not up: replace it (an up learner first:
    //    it already has the data), or drop it if its node was removed.
    for (uint64_t v : base.voters) {
      if (IsUp(v)) continue;
      uint64_t c = 0;
      for (uint64_t l : base.learners) {
        if (IsUp(l) && c == 0) c = l;
      }
      if (c == 0) c = LeastLoaded(members);
      Membership to = base;
      if (c != 0) {
        to.voters = With(Without(to.voters, v), c);
        to.learners = Without(to.learners, c);
        return Emit(id, MoveKind::kReplaceReplica, {v, c}, base, to,
                    std::string("replace replica on ") + NodeStateName(StateOf(v)) + " node");
      }
      if (StateOf(v) == NodeState::kRemoved && base.voters.size() > 1) {
        to.voters = Without(to.voters, v);
        return Emit(id, MoveKind::kRemoveReplica, {v}, base, to, "drop replica of removed node");
      }
    }
    // 1b. Voters on down nodes that no up node can replace (too few up
    //     nodes left): when the up voters are an odd number of at least 3,
    //     they become the voters alone, in one move. Five voters with two
    //     down survive no further failure; their three up ones alone, one.
    //     (With an even number up, dropping the down ones gains nothing.)
    {
      Ids up, down;
      for (uint64_t v : base.voters) (IsUp(v) ? up : down).push_back(v);
      if (!down.empty() && up.size() >= 3 && up.size() % 2 == 1) {
        Membership to = base;
        to.voters = up;
        if (Emit(id, MoveKind::kRemoveReplica, down, base, to, "drop voters on down nodes nothing can replace")) {
          return true;
        }
      }
    }
    // 2. Too few voters: add every missing one in one move, so the voter
    //    count goes 1 -> 3 -> 5 and never rests at an even number.
    if (static_cast<int>(base.voters.size()) < voters_target) {
      Membership to = base;
      Ids added;
      for (uint64_t l : base.learners) {
        if (IsUp(l) && static_cast<int>(to.voters.size()) < voters_target) {
          to.voters = With(to.voters, l);
          to.learners = Without(to.learners, l);
          added.push_back(l);
        }
      }
      while (static_cast<int>(to.voters.size()) < voters_target) {
        uint64_t c = LeastLoaded(Members(to));
        if (c == 0) break;
        to.voters = With(to.voters, c);
        added.push_back(c);
      }
      return Emit(id, MoveKind::kAddReplicas, added, base, to, "bring voters to the replication factor");
    }
    if (static_cast<int>(base.voters.size()) > voters_target) {
      Ids extra;
      for (uint64_t v : base.voters) {
        if (!IsAlive(v)) extra.push_back(v);
      }
      uint64_t drop = extra.empty() ? MostLoaded(base.voters) : extra.front();
      Membership to = base;
      to.voters = Without(to.voters, drop);
      return Emit(id, MoveKind::kRemoveReplica, {drop}, base, to, "more voters than the replication factor");
    }
    // 3. Learners: drop those on nodes that are not up, then fit the count.
    for (uint64_t l : base.learners) {
      if (IsUp(l)) continue;
      Membership to = base;
      to.learners = Without(to.learners, l);
      return Emit(id, MoveKind::kRemoveReplica, {l}, base, to,
                  std::string("drop learner on ") + NodeStateName(StateOf(l)) + " node");
    }
    if (static_cast<int>(base.learners.size()) > learners_target) {
      Membership to = base;
      uint64_t drop = MostLoaded(base.learners);
      to.learners = Without(to.learners, drop);
      return Emit(id, MoveKind::kRemoveReplica, {drop}, base, to, "more replicas than the replication factor");
    }
    if (static_cast<int>(base.learners.size()) < learners_target) {
      uint64_t c = LeastLoaded(members);
      if (c == 0) return false;
      Membership to = base;
      to.learners = With(to.learners, c);
      return Emit(id, MoveKind::kAddReplicas, {c}, base, to, "add a learner (too few nodes for another voter)");
    }
    return false;
  }

  // Moves one replica at a time from a more to a less loaded up node while
  // a move lowers the spread by the margin.
  void BalanceReplicas() {
    const size_t max_rounds = view_.shards.size() * (up_.size() + 1) + 1;
    for (size_t round = 0; round < max_rounds; ++round) {
      if (up_.size() < 2 || busy_total_ >= policy_.max_moves_total) return;
      Ids by_load = up_;
      std::stable_sort(by_load.begin(), by_load.end(),
                       [&](uint64_t a, uint64_t b) { return load_[a] > load_[b]; });
      bool moved = false;
      for (size_t i = 0; i < by_load.size() && !moved; ++i) {
        for (size_t j = by_load.size(); j-- > i + 1 && !moved;) {
          uint64_t from = by_load[i], to = by_load[j];
          if (load_[from] - load_[to] - min_rw_ <= kMargin) break;
          moved = MoveOneReplica(from, to);
        }
      }
      if (!moved) return;
    }
  }

  // The shard whose weight is nearest half the gap goes first (the most
  // even result); one that would not lower the spread by the margin never.
  bool MoveOneReplica(uint64_t from, uint64_t to) {
    const double gap = load_[from] - load_[to];
    std::vector<std::pair<double, const ShardView*>> candidates;
    for (const ShardView& s : view_.shards) {
      const Target& t = targets_[s.id];
      if (t.moved || !t.complete) continue;
      Ids members = Members(t.m);
      if (!Has(members, from) || Has(members, to)) continue;
      if (rw_[s.id] <= 0 || gap - rw_[s.id] <= kMargin) continue;
      candidates.emplace_back(std::abs(gap / 2 - rw_[s.id]), &s);
    }
    std::stable_sort(candidates.begin(), candidates.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    for (const auto& [score, sp] : candidates) {
      const ShardView& s = *sp;
      Target& t = targets_[s.id];
      Membership next = t.m;
      if (Has(next.voters, from)) {
        next.voters = With(Without(next.voters, from), to);
      } else {
        next.learners = With(Without(next.learners, from), to);
      }
      if (Emit(s.id, MoveKind::kReplaceReplica, {from, to}, t.m, next, "balance replicas")) return true;
    }
    return false;
  }

  // When no single transfer helps yet leaders are still uneven: a lightest
  // node takes a shard from a voter peer, which takes one from its peer,
  // ..., back to a heavy node. Loads in between change only by the
  // difference of two weights. Applies the first chain (from the heaviest
  // end) that lowers the spread by the margin; false if none does.
  bool ShiftLeadersAlongAChain(const std::map<uint64_t, Ids>& eligible, std::map<uint64_t, double>* leads_out) {
    std::map<uint64_t, double>& leads = *leads_out;
    double lo = 0, hi = 0;
    bool first = true;
    for (const auto& [n, l] : leads) {
      lo = first ? l : std::min(lo, l);
      hi = first ? l : std::max(hi, l);
      first = false;
    }
    if (first || hi - lo - min_lw_ <= kMargin) return false;
    std::map<uint64_t, std::pair<uint64_t, uint64_t>> gives;  // node -> (shard, to whom)
    std::deque<uint64_t> queue;
    std::set<uint64_t> seen;
    for (const auto& [n, l] : leads) {
      if (l <= lo + 1e-9) {
        queue.push_back(n);
        seen.insert(n);
      }
    }
    // Lighter shards first: a chain of them changes the loads in between least.
    std::vector<const ShardView*> by_weight;
    for (const ShardView& s : view_.shards) by_weight.push_back(&s);
    std::stable_sort(by_weight.begin(), by_weight.end(),
                     [&](const ShardView* a, const ShardView* b) { return lw_[a->id] < lw_[b->id]; });
    std::vector<uint64_t> reached;
    while (!queue.empty()) {
      uint64_t v = queue.front();
      queue.pop_front();
      for (const ShardView* sp : by_weight) {
        const ShardView& s = *sp;
        uint64_t u = targets_[s.id].leader;
        if (u == 0 || seen.contains(u) || !Has(eligible.at(s.id), v)) continue;
        gives[u] = {s.id, v};
        seen.insert(u);
        reached.push_back(u);
        queue.push_back(u);
      }
    }
    std::stable_sort(reached.begin(), reached.end(), [&](uint64_t a, uint64_t b) { return leads[a] > leads[b]; });
    for (uint64_t from : reached) {
      std::map<uint64_t, double> delta;
      double lightest = 0;
      for (uint64_t u = from; gives.contains(u);) {
        auto [shard, to] = gives[u];
        delta[u] -= lw_[shard];
        delta[to] += lw_[shard];
        lightest = lightest == 0 ? lw_[shard] : std::min(lightest, lw_[shard]);
        u = to;
      }
      double change = 0;  // in the sum of squared loads
      for (const auto& [n, d] : delta) change += (leads[n] + d) * (leads[n] + d) - leads[n] * leads[n];
      if (change >= -2 * kMargin * lightest) continue;
      for (const auto& [n, d] : delta) leads[n] += d;
      for (uint64_t u = from; gives.contains(u);) {
        auto [shard, to] = gives[u];
        targets_[shard].leader = to;
        u = to;
      }
      return true;
    }
    return false;
  }

  // Preferred leaders: keep each where it may lead, then move leaderships
  // (weighted, see planner.h) from heavier to lighter voters of the same
  // shard while that lowers the spread by the margin.
  void PlanLeaders() {
    std::map<uint64_t, double> leads;
    for (uint64_t n : up_) leads[n] = 0;
    std::map<uint64_t, Ids> eligible;
    for (const ShardView& s : view_.shards) {
      Target& t = targets_[s.id];
      Ids e;
      for (uint64_t v : t.m.voters) {
        if (IsUp(v) && (!s.reported || Has(s.actual.voters, v))) e.push_back(v);
      }
      eligible[s.id] = e;
      if (!Has(e, t.leader)) t.leader = 0;
      if (t.leader != 0) leads[t.leader] += lw_[s.id];
    }
    for (const ShardView& s : view_.shards) {
      Target& t = targets_[s.id];
      if (t.leader != 0) continue;
      for (uint64_t v : eligible[s.id]) {
        if (t.leader == 0 || leads[v] < leads[t.leader]) t.leader = v;
      }
      if (t.leader != 0) leads[t.leader] += lw_[s.id];
    }
    if (policy_.balance) {
      const size_t max_rounds = view_.shards.size() * (up_.size() + 1) + 1;
      for (size_t round = 0; round < max_rounds; ++round) {
        bool changed = false;
        for (const ShardView& s : view_.shards) {
          Target& t = targets_[s.id];
          if (t.leader == 0) continue;
          const double w = lw_[s.id];
          uint64_t best = t.leader;
          for (uint64_t v : eligible[s.id]) {
            if (leads[v] < leads[best]) best = v;
          }
          if (w > 0 && leads[t.leader] - leads[best] - w > kMargin) {
            leads[t.leader] -= w;
            leads[best] += w;
            t.leader = best;
            changed = true;
          }
        }
        if (!changed) break;
      }
      for (size_t round = 0; round < max_rounds; ++round) {
        if (!ShiftLeadersAlongAChain(eligible, &leads)) break;
      }
    }
    for (Move& m : out_) {
      if (m.shard != 0 && m.kind != MoveKind::kSetMetaVoters) m.leader = targets_[m.shard].leader;
    }
    for (const ShardView& s : view_.shards) {
      const Target& t = targets_[s.id];
      if (t.moved || t.leader == 0 || t.leader == s.preferred_leader) continue;
      Move mv;
      mv.kind = MoveKind::kTransferLeader;
      mv.shard = s.id;
      mv.nodes = {t.leader};
      mv.target = t.m;
      mv.leader = t.leader;
      mv.reason = s.preferred_leader == 0 || !Has(eligible[s.id], s.preferred_leader) ? "choose a leader"
                                                                                      : "balance leaders";
      out_.push_back(std::move(mv));
    }
  }

  // The meta shard: 3 voters (5 from 5 up nodes), on up nodes, grown in one move.
  void PlanMetaVoters() {
    Ids want = Sorted(view_.meta_voters), actual = Sorted(view_.meta_actual_voters);
    if (actual.empty()) return;
    bool stuck = false;
    if (want != actual) {
      for (uint64_t n : want) stuck |= !Has(actual, n) && !IsUp(n);
      if (!stuck) return;  // under way
    }
    const int wanted = static_cast<int>(up_.size()) >= 5 ? 5 : 3;
    const int target = std::max({1, OddAtMost(std::min<int>(wanted, static_cast<int>(up_.size()))),
                                 std::min(static_cast<int>(actual.size()), OddAtMost(wanted))});
    Ids next;
    for (uint64_t v : actual) {
      if (IsUp(v) && static_cast<int>(next.size()) < target) next.push_back(v);
    }
    for (uint64_t n : up_) {
      if (static_cast<int>(next.size()) >= target) break;
      if (!Has(next, n)) next.push_back(n);
    }
    for (uint64_t v : actual) {  // keep dead voters that nothing replaces
      if (static_cast<int>(next.size()) >= target) break;
      if (!Has(next, v) && StateOf(v) != NodeState::kRemoved) next.push_back(v);
    }
    next = Sorted(next);
    if (next == want) return;
    if (!MajorityAlive(actual) || !MajorityAlive(next)) return;
    Move mv;
    mv.kind = MoveKind::kSetMetaVoters;
    mv.nodes = next;
    mv.target.voters = next;
    mv.reason = "meta voters on up nodes";
    out_.push_back(std::move(mv));
  }

  // A draining node that holds nothing any more is removed.
  void PlanNodeRemovals() {
    for (const NodeView& n : view_.nodes) {
      if (n.state != NodeState::kDraining) continue;
      bool holds = Has(view_.meta_voters, n.id) || Has(view_.meta_actual_voters, n.id);
      for (const ShardView& s : view_.shards) {
        // A shard with no leader known has no known members either: the node
        // may still hold one of its voters (the want may already have moved
        // on), and a removed node is never started again, which can leave the
        // group without a majority for good. It waits until every shard's
        // leader has reported.
        holds |= !s.reported || Has(Members(targets_[s.id].m), n.id) || Has(Members(s.actual), n.id);
      }
      for (const Move& m : out_) holds |= m.kind == MoveKind::kSetMetaVoters && Has(m.target.voters, n.id);
      if (holds) continue;
      Move mv;
      mv.kind = MoveKind::kRemoveNode;
      mv.nodes = {n.id};
      mv.reason = "drained";
      out_.push_back(std::move(mv));
    }
  }

  const ClusterView& view_;
  const PlannerPolicy& policy_;
  std::map<uint64_t, NodeState> state_;
  Ids up_;
  int rf_ = 3;
  std::map<uint64_t, double> load_;      // replica weight per node
  std::map<uint64_t, double> rw_, lw_;   // shard -> replica, leader weight
  double min_rw_ = 1.0, min_lw_ = 1.0;
  std::map<uint64_t, int> busy_;
  int busy_total_ = 0;
  std::map<uint64_t, Target> targets_;
  std::vector<Move> out_;
};

}  // namespace

int OddAtMost(int n) { return n <= 0 ? 0 : (n % 2 == 1 ? n : n - 1); }

const char* NodeStateName(NodeState s) {
  switch (s) {
    case NodeState::kUp: return "up";
    case NodeState::kDown: return "down";
    case NodeState::kDraining: return "draining";
    case NodeState::kRemoved: return "removed";
  }
  return "?";
}

const char* MoveKindName(MoveKind k) {
  switch (k) {
    case MoveKind::kAddReplicas: return "add";
    case MoveKind::kRemoveReplica: return "remove";
    case MoveKind::kReplaceReplica: return "replace";
    case MoveKind::kTransferLeader: return "transfer";
    case MoveKind::kSetMetaVoters: return "meta-voters";
    case MoveKind::kRemoveNode: return "remove-node";
    case MoveKind::kSplit: return "split";
  }
  return "?";
}

std::vector<Move> Plan(const ClusterView& view, const PlannerPolicy& policy) {
  return Planner(view, policy).Run();
}

std::string Describe(const Move& m) {
  auto ids = [](const std::vector<uint64_t>& v) {
    std::string s;
    for (uint64_t id : v) {
      char buf[20];
      std::snprintf(buf, sizeof(buf), "%s%016llx", s.empty() ? "" : ",", static_cast<unsigned long long>(id));
      s += buf;
    }
    return s.empty() ? std::string("-") : s;
  };
  std::string out = MoveKindName(m.kind);
  if (m.shard != 0) out += " shard " + std::to_string(m.shard);
  out += " nodes " + ids(m.nodes);
  if (m.kind == MoveKind::kSplit) {
    return out + " at slot " + std::to_string(m.slot) + " (" + m.reason + ")";
  }
  if (m.kind != MoveKind::kRemoveNode && m.kind != MoveKind::kTransferLeader) {
    out += " -> voters " + ids(m.target.voters);
    if (!m.target.learners.empty()) out += " learners " + ids(m.target.learners);
  }
  out += " (" + m.reason + ")";
  return out;
}

}  // namespace shoal::cluster

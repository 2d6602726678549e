// cluster::Cluster, the admin verbs (SHOAL.ADMIN): status, plan, drain,
// remove, move, transfer, split, recover, balance. Only the meta leader
// answers; see docs/OPERATIONS.md.
#include "cluster/cluster.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <set>
#include <tuple>

#include <spdlog/spdlog.h>

#include "cluster/cluster_internal.h"
#include "common/member_id.h"
#include "common/strings.h"
namespace shoal::cluster {

namespace {

// REMOVE takes a node that still counts as up (down-after-ms has not passed)
// once it has been silent this long: gossip comes every 100 ms.
constexpr int64_t kRemoveSilentUs = 3'000'000;

AdminReply AdminError(std::string e) {
  AdminReply r;
  r.kind = AdminReply::Kind::kError;
  r.error = std::move(e);
  return r;
}

std::string IdList(const std::vector<uint64_t>& ids) {
  std::string out;
  for (uint64_t id : ids) out += (out.empty() ? "" : ",") + Hex(id);
  return out.empty() ? "-" : out;
}

// The low half of a meta recovery number: the recovering node's mark.
uint64_t MetaRecoveryMark(uint64_t node) {
  return (node & 0xFFFFFFFFULL) != 0 ? node & 0xFFFFFFFFULL : 1;
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

const proto::ShardInfo* FindShard(const proto::MetaState& meta, const std::string& id) {
  auto v = ParseInt64(id);
  if (!v || *v <= 0) return nullptr;
  return FindShardById(meta, static_cast<uint64_t>(*v));
}

}  // namespace

const proto::NodeInfo* Cluster::FindNode(const proto::MetaState& meta, const std::string& who) const {
  uint64_t id = 0;
  if (who.size() >= 16 && who.find(':') == std::string::npos) {
    bool hex = std::all_of(who.begin(), who.end(), [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); });
    if (hex) id = std::strtoull(who.substr(0, 16).c_str(), nullptr, 16);
  }
  // An address a removed node had may be a new node's now: the node that is
  // not removed wins (an id names either).
  const proto::NodeInfo* found = nullptr;
  for (const auto& n : meta.nodes()) {
    if (id != 0 && n.id() == id) return &n;
    if (who == n.host() + ":" + std::to_string(n.port()) &&
        (found == nullptr || found->state() == proto::NODE_REMOVED)) {
      found = &n;
    }
  }
  return found;
}

AdminReply Cluster::AdminStatus(int64_t now) const {
  AdminReply out;
  out.kind = AdminReply::Kind::kLines;
  MetaPtr m = meta();
  ClusterView view = View(now);
  std::map<uint64_t, int> replicas, leaders;
  std::map<uint64_t, uint64_t> bytes, ops;  // held by its replicas; served by its leaderships
  int moving = 0;
  for (const ShardView& s : view.shards) {
    for (uint64_t n : SortedIds([&] {
           std::vector<uint64_t> all = s.want.voters;
           all.insert(all.end(), s.want.learners.begin(), s.want.learners.end());
           return all;
         }())) {
      replicas[n]++;
      bytes[n] += s.bytes;
    }
    if (uint64_t leader = s.leader; leader != 0) {
      leaders[leader]++;
      ops[leader] += s.ops_per_sec;
    }
    // A split under way counts as a move (at its parent; its child, until
    // its first election, as one without a leader).
    bool split = FindShardById(*m, s.id)->split_child() != 0;
    if (!s.reported || s.joint || s.want.voters != s.actual.voters || s.want.learners != s.actual.learners || split) {
      ++moving;
    }
  }
  out.lines.push_back("cluster " + Hex(m->cluster_id()) + " epoch " + std::to_string(m->epoch()) +
                      " replication-factor " + std::to_string(m->replication_factor()) + " balance " +
                      (m->balance_off() ? "off" : "on") + " down-after-ms " + std::to_string(opts_.down_after_ms));
  for (const NodeView& n : view.nodes) {
    const proto::NodeInfo* info = nullptr;
    for (const auto& i : m->nodes()) {
      if (i.id() == n.id) info = &i;
    }
    out.lines.push_back("node " + Hex(n.id) + " " + info->host() + ":" + std::to_string(info->port()) + " " +
                        NodeStateName(n.state) + " replicas " + std::to_string(replicas[n.id]) + " leaders " +
                        std::to_string(leaders[n.id]) + " bytes " + std::to_string(bytes[n.id]) +
                        " ops-per-sec " + std::to_string(ops[n.id]) +
                        (HasId(view.meta_voters, n.id) ? " meta-voter" : ""));
  }
  std::vector<const ShardView*> by_slot;
  for (const ShardView& s : view.shards) by_slot.push_back(&s);
  std::sort(by_slot.begin(), by_slot.end(), [&](const ShardView* a, const ShardView* b) {
    return FindShardById(*m, a->id)->slot_begin() < FindShardById(*m, b->id)->slot_begin();
  });
  for (const ShardView* sp : by_slot) {
    const ShardView& s = *sp;
    const proto::ShardInfo* info = FindShardById(*m, s.id);
    // No leader known (none heard lately, or only one of a lineage an unsafe
    // recovery replaced): no leader, and the voters the metadata lists, the
    // replicas an operator picks a survivor among.
    const Membership& shown = s.reported ? s.actual : s.want;
    std::string line = "shard " + std::to_string(s.id) + " slots " + std::to_string(info->slot_begin()) + "-" +
                       std::to_string(info->slot_end() - 1) + " leader " + Hex(s.leader) +
                       " voters " + IdList(shown.voters) + " learners " + IdList(shown.learners) + " bytes " +
                       std::to_string(s.bytes) + " ops-per-sec " + std::to_string(s.ops_per_sec);
    if (info->split_child() != 0) line += " splitting-into " + std::to_string(info->split_child());
    if (!info->incarnations().empty()) {
      // Replicas placed on a node after the shard began (node:incarnation).
      std::map<uint64_t, uint64_t> sorted(info->incarnations().begin(), info->incarnations().end());
      std::string list;
      for (const auto& [node, incarnation] : sorted) {
        list += (list.empty() ? "" : ",") + Hex(node) + ":" + std::to_string(incarnation);
      }
      line += " incarnations " + list;
    }
    if (!s.reported) {
      line += " (no leader known)";
      // The replicas that report no leader, furthest ahead first (what an
      // unsafe recovery would take: RefuseSurvivor).
      std::vector<std::pair<uint64_t, node::LeaderlessReplica>> quiet;
      for (auto& [n, r] : LeaderlessReplicas(s.id, now)) quiet.emplace_back(n, r);
      std::stable_sort(quiet.begin(), quiet.end(),
                       [](const auto& a, const auto& b) { return SurvivorRank(a.second) > SurvivorRank(b.second); });
      std::string list;
      for (const auto& [n, r] : quiet) {
        list += (list.empty() ? "" : ",") + Hex(n) + ":" + std::to_string(r.last_term) + "/" +
                std::to_string(r.last_index) + (r.recovery > 0 ? "/r" + std::to_string(r.recovery) : "");
      }
      if (!list.empty()) line += " survivors " + list;
    } else if (s.joint || s.want.voters != s.actual.voters || s.want.learners != s.actual.learners) {
      line += " moving-to voters " + IdList(s.want.voters) + " learners " + IdList(s.want.learners);
    }
    out.lines.push_back(line);
  }
  // The meta shard as its leader (this node) has it.
  if (replica::Replica* mr = groups_->Find(0); mr != nullptr) {
    node::LeaderReport rep = ReportOf(*mr);
    out.lines.push_back("meta leader " + Hex(node_id_) + " voters " + IdList(rep.voters) + " learners " +
                        IdList(SortedIds(rep.learners)) + " recovery " + std::to_string(m->meta_recovery() >> 32));
  }
  // Snapshot transfers over the nodes that are up (counters since each started).
  node::NodeStats total;
  {
    std::lock_guard lock(gossip_mu_);
    for (const NodeView& n : view.nodes) {
      if (n.state == NodeState::kDown || n.state == NodeState::kRemoved) continue;
      node::NodeStats t = n.id == node_id_ && opts_.local_transfers ? opts_.local_transfers() : node::NodeStats{};
      if (auto it = transfers_.find(n.id); n.id != node_id_ && it != transfers_.end()) t = it->second;
      total.sending += t.sending;
      total.bytes_sent += t.bytes_sent;
      total.bytes_received += t.bytes_received;
    }
  }
  out.lines.push_back("transfers sending " + std::to_string(total.sending) + " bytes-sent " +
                      std::to_string(total.bytes_sent) + " bytes-received " + std::to_string(total.bytes_received));
  out.lines.push_back("moves-in-flight " + std::to_string(moving));
  return out;
}

void Cluster::HandleAdmin(std::vector<std::string> args, std::function<void(AdminReply)> done) {
  asio::post(runtime_->worker(0).io(), [this, args = std::move(args), done = std::move(done)]() mutable {
    replica::Replica* mr = groups_->Find(0);
    if (mr == nullptr || cluster_id() == 0) return done(AdminError("TRYAGAIN this node has not joined a cluster yet"));
    MetaPtr m = meta();
    if (args.size() >= 2 && Lower(args[0]) == "recover" && Lower(args[1]) == "meta") {
      // Answered by this node itself: the meta shard has no leader to ask.
      if (args.size() > 3) {
        return done(AdminError("ERR wrong number of arguments: SHOAL.ADMIN RECOVER META UNSAFE"));
      }
      if (args.size() != 3 || Lower(args[2]) != "unsafe") {
        return done(AdminError("ERR RECOVER META is unsafe and must say so: SHOAL.ADMIN RECOVER META UNSAFE, sent to "
                               "the surviving meta voter that is to be the meta shard's only voter"));
      }
      return done(AdminRecoverMeta(mr, node::MonoUs()));
    }
    if (!mr->is_leader()) {
      uint64_t leader = mr->published_leader();
      for (const auto& n : m->nodes()) {
        if (n.id() == leader && leader != 0) {
          AdminReply r;
          r.kind = AdminReply::Kind::kRedirect;
          r.host = n.host();
          r.port = static_cast<uint16_t>(n.port());
          return done(std::move(r));
        }
      }
      return done(AdminError("TRYAGAIN the meta shard has no leader yet"));
    }
    int64_t now = node::MonoUs();
    std::string sub = args.empty() ? "" : Lower(args[0]);
    auto propose = [&](const proto::MetaCommand& cmd, std::string what) {
      auto p = mr->Propose(
          cmd.SerializeAsString(),
          [done, what](bool applied, const std::string& reply) {
            if (applied && reply.rfind('+', 0) == 0) {
              AdminReply ok;
              ok.lines = {what};
              ok.kind = AdminReply::Kind::kLines;
              return done(std::move(ok));
            }
            done(AdminError("ERR the cluster did not accept the change: " + reply.substr(1, reply.size() - 3)));
          },
          now);
      if (!p.ok()) return done(AdminError("TRYAGAIN meta shard busy"));
      groups_->Notify(mr);
    };
    auto run = [&](AdminStep step) {
      if (step.reply) return done(std::move(*step.reply));
      propose(step.cmd, std::move(step.what));
    };
    // A verb checks the applied metadata before it changes it: one change
    // at a time.
    using Verb = AdminStep (Cluster::*)(const std::string&, const std::vector<std::string>&, const MetaPtr&, int64_t);
    auto checked = [&](Verb verb) {
      if (mr->raft().log().applied() < mr->raft().log().last_index()) {
        return done(AdminError("TRYAGAIN another cluster change is being applied; retry"));
      }
      run((this->*verb)(sub, args, m, now));
    };
    if (sub == "status" && args.size() == 1) return done(AdminStatus(now));
    if (sub == "plan" && args.size() == 1) {
      AdminReply r;
      r.kind = AdminReply::Kind::kLines;
      for (const Move& mv : Plan(View(now), Policy(*m))) r.lines.push_back(Describe(mv));
      return done(std::move(r));
    }
    if (sub == "split" && (args.size() == 2 || args.size() == 3)) return run(AdminSplit(sub, args, m, now));  // the metadata refuses a second split itself
    if (sub == "balance" && args.size() == 2 && (Lower(args[1]) == "on" || Lower(args[1]) == "off")) {
      proto::MetaCommand cmd;
      cmd.set_version(1);
      cmd.set_set_balance_off(Lower(args[1]) == "off");
      return propose(cmd, "balance " + Lower(args[1]));
    }
    // ACL users (server/acl.h; ACL SETUSER and DELUSER check the rules and
    // hash passwords before they come here, never SHOAL.ADMIN).
    if (sub == "acl-setuser" && args.size() >= 2) {
      proto::MetaCommand cmd;
      cmd.set_version(1);
      cmd.mutable_acl_set_user()->set_name(args[1]);
      for (size_t i = 2; i < args.size(); ++i) cmd.mutable_acl_set_user()->add_rules(args[i]);
      return propose(cmd, "OK");
    }
    if (sub == "acl-deluser" && args.size() == 2) {
      bool known = false;
      for (const auto& u : m->acl_users()) known |= u.name() == args[1];
      if (!known) {
        AdminReply none;
        none.kind = AdminReply::Kind::kLines;
        none.lines = {"0"};
        return done(std::move(none));
      }
      proto::MetaCommand cmd;
      cmd.set_version(1);
      cmd.set_acl_del_user(args[1]);
      return propose(cmd, "1");
    }
    if ((sub == "drain" || sub == "remove") && args.size() == 2) return checked(&Cluster::AdminNodeState);
    if ((sub == "move" && args.size() == 4) || (sub == "transfer" && args.size() == 3)) return checked(&Cluster::AdminPlace);
    if (sub == "recover" && args.size() == 4 && Lower(args[3]) == "unsafe") return checked(&Cluster::AdminRecover);
    if (sub == "recover" && (args.size() < 3 || args.size() > 4)) {
      return done(AdminError("ERR wrong number of arguments: SHOAL.ADMIN RECOVER shard node UNSAFE"));
    }
    if (sub == "recover") {
      return done(AdminError("ERR RECOVER is unsafe and must say so: SHOAL.ADMIN RECOVER shard node UNSAFE"));
    }
    done(AdminError("ERR unknown SHOAL.ADMIN subcommand or wrong arguments: STATUS, PLAN, DRAIN node, REMOVE node, "
                    "MOVE shard from-node to-node, TRANSFER shard node, SPLIT shard [slot], RECOVER shard node UNSAFE, "
                    "RECOVER META UNSAFE, BALANCE on|off"));
  });
}

AdminReply Cluster::AdminRecoverMeta(replica::Replica* mr, int64_t now) {
  // A leader that lost its majority (it was elected just before the other
  // voters died) steps down within an election timeout (check quorum).
  if (mr->is_leader()) {
    return AdminError("ERR this node leads the meta shard: nothing to recover while it does (a leader without "
                      "its majority steps down within an election timeout; ask again then)");
  }
  const raft::ConfState cs = mr->raft().tracker().conf_state();
  std::vector<uint64_t> voters = cs.voters;
  voters.insert(voters.end(), cs.voters_outgoing.begin(), cs.voters_outgoing.end());
  voters = SortedIds(voters);
  // A replica started over for a recovery keeps the metadata it had: if that
  // recovery's node is lost before passing its own on, it may carry on. So
  // may a learner that holds the metadata when every voter is lost.
  const bool started_over = voters.empty() && cs.learners.empty() && mr->recovery() > 0;
  const bool learner = HasId(cs.learners, node_id_);
  if (!HasId(voters, node_id_) && !started_over && !learner) {
    return AdminError("ERR this node's meta replica is not a member of the meta shard (the voters are " +
                      IdList(voters) + "): send RECOVER META to a surviving voter");
  }
  {
    bool active = false;
    for (const auto& n : meta()->nodes()) active |= n.id() == node_id_ && n.state() != proto::NODE_REMOVED;
    if (!active) return AdminError("ERR this node is not an active member in the metadata it holds");
  }
  // A majority of voters that are up is not lost: its election is late (a
  // partition, a stall), and a recovery now would split the cluster in two.
  // While joint, a live majority of both halves is one that can elect.
  std::vector<uint64_t> live;
  uint64_t other = 0, other_node = 0;
  {
    std::lock_guard lock(gossip_mu_);
    for (uint64_t v : voters) {
      auto it = last_heard_us_.find(v);
      if (v == node_id_ || (it != last_heard_us_.end() && now - it->second < 3'000'000)) live.push_back(v);
    }
    for (const auto& [id, stats] : transfers_) {
      auto heard = last_heard_us_.find(id);
      bool recent = heard != last_heard_us_.end() && now - heard->second < 3'000'000;
      if (recent && stats.meta_recovery > mr->recovery() && stats.meta_recovery > other) {
        std::tie(other, other_node) = std::pair{stats.meta_recovery, id};
      }
    }
  }
  auto live_majority = [&](const std::vector<uint64_t>& half) {
    size_t n = 0;
    for (uint64_t v : half) n += HasId(live, v) ? 1 : 0;
    return n * 2 > half.size();
  };
  if (live_majority(cs.voters) && (cs.voters_outgoing.empty() || live_majority(cs.voters_outgoing))) {
    return AdminError("ERR the meta shard still has a majority of live voters (" + IdList(live) + " of " +
                      IdList(voters) + "): it is not lost; wait for its election, or mend the network between them");
  }
  if (learner && !HasId(voters, node_id_) && !live.empty()) {
    return AdminError("ERR meta voters " + IdList(live) + " are up: send RECOVER META to one of them");
  }
  if (started_over) {
    // It waits for its recovery's leader: only once the node that made that
    // recovery is gone may it carry on from what it kept.
    std::lock_guard lock(gossip_mu_);
    for (const auto& [id, heard] : last_heard_us_) {
      if (MetaRecoveryMark(id) == (mr->recovery() & 0xFFFFFFFFULL) && now - heard < 3'000'000) {
        return AdminError("ERR node " + Hex(id) + " made recovery " + std::to_string(mr->recovery() >> 32) +
                          " of the meta shard and is up: this node's meta replica waits for its state");
      }
    }
  }
  if (LeaderGossip g; GossipOf(0, now, &g) && g.node != node_id_) {
    return AdminError("ERR node " + Hex(g.node) + " leads the meta shard (heard within 1 s): nothing to recover");
  }
  if (other != 0) {
    // Once is enough: two recoveries make two meta shards.
    return AdminError("ERR the meta shard was recovered already (recovery " + std::to_string(other >> 32) +
                      ", gossiped by node " + Hex(other_node) + "): this node's meta replica is started over from it");
  }
  // Recovery numbers: the count in the high half, the recovering node in the
  // low half, so that two recoveries made at once (two operators, two sides
  // of a partition) never share a number: the higher one wins everywhere.
  const uint64_t recovery = ((mr->recovery() >> 32) + 1) << 32 | MetaRecoveryMark(node_id_);
  meta_lineage_.store(recovery, std::memory_order_release);  // messages of the old group are refused from here on
  std::string refused;
  auto forced = mr->ForceSoleVoter(recovery, &refused, /*learner_ok=*/true);
  if (!forced.ok() || !*forced) meta_lineage_.store(mr->recovery(), std::memory_order_release);
  if (!forced.ok()) return AdminError("ERR the meta replica could not be changed: " + forced.status().ToString());
  if (!*forced) {
    return AdminError(refused.empty() ? "TRYAGAIN the meta replica is writing; ask again"
                                      : "ERR refused: this node's meta replica: " + refused);
  }
  groups_->Notify(mr);
  spdlog::critical("UNSAFE RECOVERY {} of the meta shard: this node ({}) is its only voter; voters {} given up ({} "
                   "heard from)", recovery >> 32, Hex(node_id_), IdList(voters), IdList(live));
  AdminReply out;
  out.kind = AdminReply::Kind::kLines;
  out.lines = {"meta shard: UNSAFE recovery " + std::to_string(recovery >> 32) + ": node " + Hex(node_id_) +
                   " is its only voter (voters " + IdList(voters) + " given up)",
               "next: SHOAL.ADMIN RECOVER shard node UNSAFE for each data shard that lost its majority, and "
               "SHOAL.ADMIN REMOVE for each node gone for good"};
  return out;
}

Cluster::AdminStep Cluster::AdminSplit(const std::string& /*sub*/, const std::vector<std::string>& args, const MetaPtr& m,
                                       int64_t now) {
  const proto::ShardInfo* info = FindShard(*m, args[1]);
  if (info == nullptr) return AdminStep::Reply(AdminError("ERR no such shard '" + args[1] + "' (SHOAL.ADMIN STATUS lists them)"));
  if (info->slot_end() - info->slot_begin() < 2) {
    return AdminStep::Reply(AdminError("ERR shard " + args[1] + " holds one slot: it cannot split"));
  }
  if (args.size() == 3) {  // bad input first: an error that says so, not a TRYAGAIN
    auto v = ParseInt64(args[2]);
    if (!v) return AdminStep::Reply(AdminError("ERR the split slot '" + args[2] + "' is not a number"));
    if (*v <= static_cast<int64_t>(info->slot_begin()) || *v >= static_cast<int64_t>(info->slot_end())) {
      return AdminStep::Reply(AdminError("ERR the split slot must be inside shard " + args[1] + "'s slots, above its first (" +
                             std::to_string(info->slot_begin() + 1) + "-" + std::to_string(info->slot_end() - 1) +
                             ")"));
    }
  }
  if (uint64_t unlisted = UnlistedGroup(*m); unlisted != 0) {
    return AdminStep::Reply(AdminError("TRYAGAIN group " + std::to_string(unlisted) +
                                       " is led but not in the metadata (an unsafe recovery of the meta shard lost "
                                       "it); no split until it is known"));
  }
  for (const auto& s : m->shards()) {
    if (s.split_child() != 0 && (s.id() == info->id() || s.split_child() == info->id())) {
      return AdminStep::Reply(AdminError("TRYAGAIN shard " + args[1] + " is in a split under way; retry when it is done"));
    }
  }
  for (const ShardView& sv : View(now).shards) {
    if (sv.id == info->id() && (!sv.reported || sv.joint || !(sv.actual == sv.want))) {
      return AdminStep::Reply(AdminError("TRYAGAIN shard " + args[1] +
                             " has a move in flight (or no leader); retry when it is done"));
    }
    if (sv.id == info->id() && sv.splitting) {  // a recovered replica with a missed split to make
      return AdminStep::Reply(AdminError("TRYAGAIN shard " + args[1] + " is in a split under way; retry when it is done"));
    }
  }
  uint64_t slot = 0;
  if (args.size() == 3) {
    slot = static_cast<uint64_t>(*ParseInt64(args[2]));  // checked above
  } else {
    // Where its leader says the size (or the load) halves, else the middle.
    LeaderGossip g;
    node::LeaderReport rep;
    if (replica::Replica* r = groups_->Find(info->id()); r != nullptr && r->published_is_leader()) {
      rep = ReportOf(*r);
      FillLoad(&rep);
    } else if (GossipOf(info->id(), now, &g)) {
      rep = g.report;
    }
    slot = rep.split_slot > info->slot_begin() && rep.split_slot < info->slot_end()
               ? rep.split_slot
               : info->slot_begin() + (info->slot_end() - info->slot_begin()) / 2;
  }
  uint64_t next_id = 0;
  for (const auto& s : m->shards()) next_id = std::max(next_id, s.id() + 1);
  if (next_id >= kMaxShardId) return AdminStep::Reply(AdminError("ERR the cluster has as many shards as it can hold"));
  proto::MetaCommand cmd;
  cmd.set_version(1);
  cmd.mutable_split_shard()->set_parent(info->id());
  cmd.mutable_split_shard()->set_slot(static_cast<uint32_t>(slot));
  cmd.mutable_split_shard()->set_min_child(MinChildId());
  return AdminStep::Propose(cmd, "shard " + args[1] + ": splitting at slot " + std::to_string(slot) + "; shard " +
                          std::to_string(next_id) + " takes slots " + std::to_string(slot) + "-" +
                          std::to_string(info->slot_end() - 1));
}

Cluster::AdminStep Cluster::AdminNodeState(const std::string& sub, const std::vector<std::string>& args, const MetaPtr& m,
                                           int64_t now) {
  const proto::NodeInfo* node = FindNode(*m, args[1]);
  if (node == nullptr) return AdminStep::Reply(AdminError("ERR no such node '" + args[1] + "' (give its id or host:port)"));
  if (node->state() == proto::NODE_REMOVED) return AdminStep::Reply(AdminError("ERR node " + Hex(node->id()) + " is already removed"));
  ClusterView view = View(now);
  std::map<uint64_t, NodeState> state;
  for (const NodeView& n : view.nodes) state[n.id] = n.state;
  auto alive = [&](uint64_t id) { return state[id] == NodeState::kUp || state[id] == NodeState::kDraining; };
  // Whether `voters` keeps a majority of live voters once the node is gone.
  auto majority_without = [&](const std::vector<uint64_t>& voters) {
    if (!HasId(voters, node->id())) return true;
    size_t left = 0, up = 0;
    for (uint64_t v : voters) {
      if (v == node->id()) continue;
      ++left;
      up += alive(v) ? 1 : 0;
    }
    return left > 0 && up * 2 > left;
  };
  if (sub == "drain") {
    int remaining = 0;
    for (const NodeView& n : view.nodes) remaining += n.state == NodeState::kUp && n.id != node->id() ? 1 : 0;
    if (remaining < static_cast<int>(m->replication_factor())) {
      return AdminStep::Reply(AdminError("ERR cannot drain: " + std::to_string(remaining) +
                             " up nodes would remain for a replication factor of " +
                             std::to_string(m->replication_factor())));
    }
  } else {
    bool holds = false;
    for (const ShardView& s : view.shards) {
      holds |= HasId(s.want.voters, node->id()) || HasId(s.actual.voters, node->id()) ||
               HasId(s.want.learners, node->id()) || HasId(s.actual.learners, node->id());
      if (!majority_without(s.want.voters) || !majority_without(s.actual.voters)) {
        return AdminStep::Reply(AdminError("ERR removing node " + Hex(node->id()) + " would leave shard " +
                               std::to_string(s.id) + " without a majority of live voters"));
      }
    }
    if (!majority_without(view.meta_voters) || !majority_without(view.meta_actual_voters)) {
      return AdminStep::Reply(AdminError("ERR removing node " + Hex(node->id()) +
                             " would leave the meta shard without a majority of live voters"));
    }
    if (state[node->id()] == NodeState::kDraining) {
      // A shard with no leader known has no known members: the draining
      // node may still hold one of its voters (the drain's moves planned,
      // not carried out), and a removed node is never started again. (An
      // up node is checked below: silent, and its shards led elsewhere.)
      for (const ShardView& s : view.shards) {
        if (s.reported) continue;
        return AdminStep::Reply(AdminError("ERR shard " + std::to_string(s.id) + " has no leader known, so its "
                               "replicas are not known either: node " + Hex(node->id()) + " may hold one it needs; "
                               "retry once it has a leader, or after down-after-ms if the node is gone"));
      }
    }
    if (holds && state[node->id()] == NodeState::kUp) {
      // Up until down-after-ms, but a node silent for a few seconds (its
      // process ended, or it is cut off) is as good as dead for an operator
      // who asks to remove it at once.
      int64_t silent_us = 0;
      if (node->id() != node_id_) {
        std::lock_guard lock(gossip_mu_);
        auto it = last_heard_us_.find(node->id());
        silent_us = now - std::max(it == last_heard_us_.end() ? 0 : it->second, meta_leader_since_us_);
      }
      // Silent to this node, but maybe only cut off from it and still
      // leading shards its followers hear: every shard it holds must have
      // a leader elsewhere, heard lately.
      for (const ShardView& s : view.shards) {
        if (silent_us < kRemoveSilentUs) break;
        if (!HasId(s.want.voters, node->id()) && !HasId(s.actual.voters, node->id())) continue;
        if (replica::Replica* r = groups_->Find(s.id); r != nullptr && r->published_is_leader()) continue;  // led here
        LeaderGossip g;
        if (!GossipOf(s.id, now, &g) || g.node == node->id()) {
          return AdminStep::Reply(AdminError("ERR node " + Hex(node->id()) + " is silent, but shard " +
                                 std::to_string(s.id) + " has no leader heard from elsewhere (the node may be cut "
                                 "off from this one and still lead it): retry once its shards have other leaders, "
                                 "or after down-after-ms"));
        }
      }
      if (silent_us < kRemoveSilentUs) {
        return AdminStep::Reply(AdminError("ERR node " + Hex(node->id()) + " is up and holds replicas: drain it "
                               "first (SHOAL.ADMIN DRAIN), or remove it once it has been silent for " +
                               std::to_string(kRemoveSilentUs / 1'000'000) + " s (heard " +
                               std::to_string(silent_us / 1000) + " ms ago)"));
      }
    }
  }
  proto::MetaCommand cmd;
  cmd.set_version(1);
  cmd.mutable_set_node_state()->set_node(node->id());
  cmd.mutable_set_node_state()->set_state(sub == "drain" ? proto::NODE_DRAINING : proto::NODE_REMOVED);
  return AdminStep::Propose(cmd, (sub == "drain" ? "draining node " : "removed node ") + Hex(node->id()));
}

Cluster::AdminStep Cluster::AdminPlace(const std::string& sub, const std::vector<std::string>& args, const MetaPtr& m,
                                       int64_t now) {
  const proto::ShardInfo* info = FindShard(*m, args[1]);
  if (info == nullptr) return AdminStep::Reply(AdminError("ERR no such shard '" + args[1] + "' (SHOAL.ADMIN STATUS lists them)"));
  uint64_t shard_id = info->id();
  ClusterView view = View(now);
  const ShardView* sv = nullptr;
  for (const ShardView& s : view.shards) {
    if (s.id == shard_id) sv = &s;
  }
  std::map<uint64_t, NodeState> state;
  for (const NodeView& n : view.nodes) state[n.id] = n.state;
  if (sv == nullptr || !sv->reported || sv->joint || !(sv->actual == sv->want)) {
    return AdminStep::Reply(AdminError("TRYAGAIN shard " + args[1] + " has a move in flight (or no leader); retry when it is done"));
  }
  if (sub == "move" && sv->splitting) {
    return AdminStep::Reply(AdminError("TRYAGAIN shard " + args[1] + " is in a split under way; retry when it is done"));
  }
  size_t up = 0;
  for (uint64_t v : sv->want.voters) up += state[v] == NodeState::kUp || state[v] == NodeState::kDraining;
  if (up * 2 <= sv->want.voters.size()) {
    return AdminStep::Reply(AdminError("ERR shard " + args[1] + " has no majority of live voters"));
  }
  proto::ShardInfo next = *info;
  next.clear_incarnations();  // the metadata keeps those of the nodes that stay
  const proto::NodeInfo* target = FindNode(*m, args.back());
  if (target == nullptr) return AdminStep::Reply(AdminError("ERR no such node '" + args.back() + "' (give its id or host:port)"));
  if (sub == "transfer") {
    if (!HasId(sv->want.voters, target->id())) {
      return AdminStep::Reply(AdminError("ERR node " + Hex(target->id()) + " is not a voter of shard " + args[1]));
    }
    if (state[target->id()] != NodeState::kUp) {
      return AdminStep::Reply(AdminError("ERR node " + Hex(target->id()) + " is not up"));
    }
    next.set_preferred_leader(target->id());
    proto::MetaCommand cmd;
    cmd.set_version(1);
    *cmd.mutable_set_shard() = next;
    return AdminStep::Propose(cmd, "shard " + args[1] + ": leadership moving to " + Hex(target->id()));
  }
  const proto::NodeInfo* from = FindNode(*m, args[2]);
  if (from == nullptr) return AdminStep::Reply(AdminError("ERR no such node '" + args[2] + "' (give its id or host:port)"));
  bool voter = HasId(sv->want.voters, from->id());
  if (!voter && !HasId(sv->want.learners, from->id())) {
    return AdminStep::Reply(AdminError("ERR node " + Hex(from->id()) + " holds no replica of shard " + args[1]));
  }
  if (HasId(sv->want.voters, target->id()) || HasId(sv->want.learners, target->id())) {
    return AdminStep::Reply(AdminError("ERR node " + Hex(target->id()) + " already holds a replica of shard " + args[1]));
  }
  if (state[target->id()] != NodeState::kUp) {
    return AdminStep::Reply(AdminError("ERR node " + Hex(target->id()) + " is not up (draining, down or removed)"));
  }
  // The same role on the new node; the group's leader carries it out
  // (learner, snapshot, catch-up, then one joint change).
  next.clear_replicas();
  next.clear_learners();
  for (uint64_t v : sv->want.voters) next.add_replicas(v == from->id() ? target->id() : v);
  for (uint64_t l : sv->want.learners) next.add_learners(l == from->id() ? target->id() : l);
  if (next.preferred_leader() == from->id()) next.set_preferred_leader(target->id());
  proto::MetaCommand cmd;
  cmd.set_version(1);
  *cmd.mutable_set_shard() = next;
  return AdminStep::Propose(cmd, "shard " + args[1] + ": moving its replica from " + Hex(from->id()) + " to " + Hex(target->id()));
}

std::string RefuseSurvivor(const std::string& shard, uint64_t node,
                           const std::map<uint64_t, node::LeaderlessReplica>& reports,
                           const std::function<bool(uint64_t member)>& live) {
  auto where = [](const node::LeaderlessReplica& r) {
    return "log term " + std::to_string(r.last_term) + " index " + std::to_string(r.last_index) + ", applied " +
           std::to_string(r.applied) + (r.recovery > 0 ? ", recovery " + std::to_string(r.recovery) : "");
  };
  auto chosen = reports.find(node);
  auto best = chosen;
  for (auto it = reports.begin(); it != reports.end(); ++it) {
    if (best == reports.end() || SurvivorRank(best->second) < SurvivorRank(it->second)) best = it;
  }
  if (chosen == reports.end()) {
    return "ERR node " + Hex(node) + " reports no replica of shard " + shard + " waiting for a leader (it holds " +
           "none, or heard a leader within the last 3 seconds); node " + Hex(best->first) +
           "'s is the furthest ahead (" + where(best->second) + "): recover on it";
  }
  if (SurvivorRank(chosen->second) < SurvivorRank(best->second)) {
    return "ERR node " + Hex(node) + "'s replica of shard " + shard + " (" + where(chosen->second) +
           ") is behind node " + Hex(best->first) + "'s (" + where(best->second) + "): forcing it would lose " +
           "the writes only that one holds; recover on node " + Hex(best->first);
  }
  const node::LeaderlessReplica& latest = best->second;
  // A learner as far ahead as any survivor (a move under way when the
  // majority died) holds every entry they do: it may be chosen.
  const uint64_t m = chosen->second.member;
  if (!HasId(latest.voters, m) && !HasId(latest.voters_outgoing, m) && !HasId(latest.learners, m)) {
    return "ERR node " + Hex(node) + "'s replica of shard " + shard + " is not a member of the group as its " +
           "furthest replica has it (node " + Hex(best->first) + "'s); recover on a member of it";
  }
  auto live_count = [&](const std::vector<uint64_t>& voters) {
    size_t up = 0;
    for (uint64_t v : voters) up += live(v);
    return up;
  };
  const size_t up = live_count(latest.voters);
  if (up * 2 > latest.voters.size() &&
      (latest.voters_outgoing.empty() || live_count(latest.voters_outgoing) * 2 > latest.voters_outgoing.size())) {
    return "ERR shard " + shard + " still has a majority of live voters (" + std::to_string(up) + " of " +
           std::to_string(latest.voters.size()) + " in the membership its furthest replica has); recovery is " +
           "only for a majority lost for good";
  }
  return "";
}

Cluster::AdminStep Cluster::AdminRecover(const std::string& /*sub*/, const std::vector<std::string>& args, const MetaPtr& m,
                                         int64_t now) {
  // UNSAFE: a shard whose majority of voters is lost for good takes the
  // replica on one surviving node as its only voter; the driver then
  // rebuilds the others from it. Writes only the lost voters held are gone.
  const proto::ShardInfo* info = FindShard(*m, args[1]);
  if (info == nullptr) return AdminStep::Reply(AdminError("ERR no such shard '" + args[1] + "' (SHOAL.ADMIN STATUS lists them)"));
  const proto::NodeInfo* node = FindNode(*m, args[2]);
  if (node == nullptr) return AdminStep::Reply(AdminError("ERR no such node '" + args[2] + "' (give its id or host:port)"));
  // A split under way: the child has the parent's voters, so it lost its
  // majority too, and a survivor may or may not have applied the split.
  // Both halves are recovered on the same node, in one change: a survivor
  // that applied the split forces both its replicas; one that did not
  // forces the parent, which then applies the split as the only voter.
  const proto::ShardInfo* child = nullptr;
  for (const auto& s : m->shards()) {
    if (s.split_child() != 0 && s.split_child() == info->id()) {
      return AdminStep::Reply(AdminError("ERR shard " + args[1] + " is the new half of shard " + std::to_string(s.id()) +
                             "'s split under way: recover shard " + std::to_string(s.id()) + ", which recovers both"));
    }
  }
  if (info->split_child() != 0) {
    child = FindShardById(*m, info->split_child());
    if (child == nullptr) return AdminStep::Reply(AdminError("ERR shard " + args[1] + "'s split child is not in the metadata"));
  }
  ClusterView view = View(now);
  std::map<uint64_t, NodeState> state;
  for (const NodeView& n : view.nodes) state[n.id] = n.state;
  const ShardView* sv = nullptr;
  for (const ShardView& x : view.shards) {
    if (x.id == info->id()) sv = &x;
  }
  if (state[node->id()] != NodeState::kUp && state[node->id()] != NodeState::kDraining) {
    return AdminStep::Reply(AdminError("ERR node " + Hex(node->id()) + " is not up"));
  }
  if (sv != nullptr && sv->reported) {
    return AdminStep::Reply(AdminError("ERR shard " + args[1] + " still has a majority of live voters: its leader, on node " +
                                       Hex(sv->leader) + ", reported within the last second; recovery is only for a " +
                                       "majority lost for good"));
  }
  auto is_live = [&](uint64_t n) {
    auto it = state.find(n);  // a node the metadata does not know is not live
    return it != state.end() && (it->second == NodeState::kUp || it->second == NodeState::kDraining);
  };
  size_t live = 0;
  for (uint64_t v : info->replicas()) live += is_live(v);
  // What the survivors report decides: the metadata (after a recovery of
  // the meta shard, or one this shard's chosen replica refused) may list a
  // replica the group has left behind, and forcing it would lose every
  // write since. Only with no survivor reporting (a half split off a
  // replica that missed the split) does the metadata's view decide.
  // Survivors report once they heard no leader for 3 s (and a node whose
  // replica did is refused by it): too soon after the last leader was
  // heard of, the reports are not all in.
  // A leader this node has not heard of (it leads the meta shard only
  // since lately) may have been there until then.
  int64_t led_us = meta_leader_since_us_ != 0 ? meta_leader_since_us_ : now;
  {
    std::lock_guard lock(gossip_mu_);
    if (auto it = led_heard_us_.find(info->id()); it != led_heard_us_.end()) led_us = std::max(led_us, it->second);
  }
  const int64_t wait_us = static_cast<int64_t>(replica::Replica::kForceQuietTicks) * groups_->options().tick_ms * 1000 +
                          kSurvivorsReportMarginUs;
  if (now - led_us < wait_us) {
    return AdminStep::Reply(AdminError("TRYAGAIN shard " + args[1] + ": the surviving replicas have not all reported " +
                                       "yet (a leader of it was heard of " + std::to_string((now - led_us) / 1000) +
                                       " ms ago; replicas report once they heard none for " +
                                       std::to_string(replica::Replica::kForceQuietTicks) + " ticks): retry in a " +
                                       "few seconds"));
  }
  const std::map<uint64_t, node::LeaderlessReplica> survivors = LeaderlessReplicas(info->id(), now);
  // A node that may hold a replica (the metadata places one there, or a
  // survivor's membership has a member there), counted as up but not heard
  // from lately: its report, perhaps the furthest, may be missing.
  {
    std::set<uint64_t> holders(info->replicas().begin(), info->replicas().end());
    holders.insert(info->learners().begin(), info->learners().end());
    for (const auto& [n, rep] : survivors) {
      for (const auto* ids : {&rep.voters, &rep.voters_outgoing, &rep.learners}) {
        for (uint64_t member : *ids) holders.insert(NodeOfMember(*m, member));
      }
    }
    std::lock_guard lock(gossip_mu_);
    for (uint64_t n : holders) {
      if (n == node_id_ || survivors.contains(n) || !is_live(n)) continue;
      auto heard = last_heard_us_.find(n);
      if (heard == last_heard_us_.end() || now - heard->second > kLeaderHeardUs) {
        return AdminStep::Reply(AdminError("TRYAGAIN shard " + args[1] + ": node " + Hex(n) + " may hold a replica of " +
                                           "it and has not been heard from lately; retry once it is heard from again " +
                                           "or is down"));
      }
    }
  }
  uint64_t member = 0;
  if (!survivors.empty()) {
    std::string refused = RefuseSurvivor(args[1], node->id(), survivors,
                                         [&](uint64_t m_id) { return is_live(NodeOfMember(*m, m_id)); });
    if (!refused.empty()) return AdminStep::Reply(AdminError(refused));
    member = survivors.at(node->id()).member;
  } else {
    if (!Contains(info->replicas(), node->id())) {
      return AdminStep::Reply(AdminError("ERR node " + Hex(node->id()) + " holds no voter of shard " + args[1]));
    }
    // The group may still be on its old voters (a move under way when the
    // majority died): with no leader now, its last reported voters count.
    bool lost_actual = false;
    {
      std::lock_guard lock(gossip_mu_);
      if (auto it = gossip_.find(info->id()); it != gossip_.end() && !it->second.voters.empty()) {
        size_t up = 0;
        for (uint64_t v : NodesOfMembers(*m, info, it->second.voters)) up += is_live(v);
        lost_actual = up * 2 <= it->second.voters.size();
      }
    }
    if (live * 2 > static_cast<size_t>(info->replicas_size()) && !lost_actual) {
      return AdminStep::Reply(AdminError("ERR shard " + args[1] + " still has a majority of live voters (" +
                                         std::to_string(live) + " of " + std::to_string(info->replicas_size()) +
                                         "); recovery is only for a majority lost for good"));
    }
  }
  auto recovered = [&](const proto::ShardInfo& s) {
    proto::ShardInfo next = s;
    next.clear_incarnations();
    next.clear_replicas();
    next.clear_learners();
    next.add_replicas(node->id());
    next.set_preferred_leader(node->id());
    // The member the survivor's replica is (the metadata may lack it).
    if (member != 0 && &s == info) (*next.mutable_incarnations())[node->id()] = IncarnationOf(member, node->id());
    // A recovery the metadata may have lost (with a recovery of the meta shard).
    next.set_recovery(std::max(s.recovery(), RecoverySeen(s.id())) + 1);
    next.set_recovered_on(node->id());
    return next;
  };
  proto::ShardInfo next = recovered(*info);
  proto::MetaCommand cmd;
  cmd.set_version(1);
  std::string also;
  if (child == nullptr) {
    *cmd.mutable_set_shard() = next;
  } else {
    proto::ShardInfo next_child = recovered(*child);
    *cmd.mutable_set_shards()->add_shards() = next;
    *cmd.mutable_set_shards()->add_shards() = next_child;
    also = ", and of shard " + std::to_string(child->id()) + " (the new half of its split under way), recovery " +
           std::to_string(next_child.recovery());
  }
  spdlog::critical("UNSAFE RECOVERY of shard {}{} requested: node {} becomes its only voter ({} of {} voters live)",
                   info->id(), child == nullptr ? "" : " and of its split child " + std::to_string(child->id()),
                   Hex(node->id()), live, info->replicas_size());
  return AdminStep::Propose(cmd, "shard " + args[1] + ": UNSAFE recovery " + std::to_string(next.recovery()) + " on " +
                          Hex(node->id()) + also + " (writes only the lost voters held are gone)");
}

}  // namespace shoal::cluster

// CLUSTER, READONLY, READWRITE, ASKING and the internal SHOAL.* commands.
// Formats follow Redis Cluster 7.0, so cluster-aware clients parse them.
#include <asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

#include <atomic>
#include <cstdio>
#include <utility>
#include <set>

#include "common/clock.h"
#include "common/secret.h"
#include "common/strings.h"
#include "server/connection.h"
#include "server/forwarder.h"
#include "storage/keys.h"
#include "storage/slot.h"

namespace shoal::server {
namespace {

using kv::Args;

// The node that answers for a shard: its leader, or its first replica while
// it has none (so that every slot is always listed).
uint64_t MasterOf(cluster::Cluster& c, const cluster::ShardRoute& s) {
  uint64_t leader = c.LeaderOf(s.id);
  if (leader != 0) return leader;
  return s.replicas.empty() ? 0 : s.replicas.front();
}

void NodeTriple(const cluster::NodeAddr& n, resp::Writer* r) {
  r->ArrayHeader(3);
  r->Bulk(n.host);
  r->Integer(n.port);
  r->Bulk(n.name);
}

void Slots(Connection& c, resp::Writer* r) {
  auto& cl = c.server().cluster();
  auto rt = cl.routing();
  r->ArrayHeader(rt->shards.size());
  for (const auto& s : rt->shards) {
    uint64_t master = MasterOf(cl, s);
    std::vector<const cluster::NodeAddr*> nodes;
    if (const auto* m = rt->Node(master)) nodes.push_back(m);
    for (uint64_t id : s.replicas) {
      if (id == master) continue;
      if (const auto* n = rt->Node(id)) nodes.push_back(n);
    }
    r->ArrayHeader(2 + nodes.size());
    r->Integer(s.begin);
    r->Integer(s.end - 1);
    for (const auto* n : nodes) NodeTriple(*n, r);
  }
}

void Shards(Connection& c, resp::Writer* r) {
  auto& cl = c.server().cluster();
  auto rt = cl.routing();
  r->ArrayHeader(rt->shards.size());
  for (const auto& s : rt->shards) {
    uint64_t master = MasterOf(cl, s);
    r->MapHeader(2);
    r->Bulk("slots");
    r->ArrayHeader(2);
    r->Integer(s.begin);
    r->Integer(s.end - 1);
    r->Bulk("nodes");
    std::vector<uint64_t> ids = {master};
    for (uint64_t id : s.replicas) {
      if (id != master) ids.push_back(id);
    }
    size_t known = 0;
    for (uint64_t id : ids) known += rt->Node(id) != nullptr;
    r->ArrayHeader(known);
    for (uint64_t id : ids) {
      const auto* n = rt->Node(id);
      if (n == nullptr) continue;
      replica::Replica* local = id == cl.node_id() ? cl.Local(s.id) : nullptr;
      r->MapHeader(7);
      r->Bulk("id");
      r->Bulk(n->name);
      r->Bulk("port");
      r->Integer(n->port);
      r->Bulk("ip");
      r->Bulk(n->host);
      r->Bulk("endpoint");
      r->Bulk(n->host);
      r->Bulk("role");
      r->Bulk(id == master ? "master" : "replica");
      r->Bulk("replication-offset");
      r->Integer(local != nullptr ? static_cast<int64_t>(local->published_applied()) : 0);
      r->Bulk("health");
      r->Bulk("online");
    }
  }
}

std::string NodesText(Connection& c) {
  auto& cl = c.server().cluster();
  auto rt = cl.routing();
  std::map<uint64_t, std::vector<std::pair<int, int>>> led;
  for (const auto& s : rt->shards) led[MasterOf(cl, s)].emplace_back(s.begin, s.end - 1);
  std::string out;
  for (const auto& [id, n] : rt->nodes) {
    out += n.name + " " + n.host + ":" + std::to_string(n.port) + "@" +
           std::to_string(n.port + 10000) + " ";
    out += id == cl.node_id() ? "myself,master" : "master";
    out += " - 0 0 " + std::to_string(rt->meta_epoch) + " connected";
    // Adjacent ranges of one node are merged, as Redis prints them.
    auto ranges = led[id];
    std::sort(ranges.begin(), ranges.end());
    for (size_t i = 0; i < ranges.size(); ++i) {
      int b = ranges[i].first, e = ranges[i].second;
      while (i + 1 < ranges.size() && ranges[i + 1].first == e + 1) e = ranges[++i].second;
      out += " " + std::to_string(b);
      if (e != b) out += "-" + std::to_string(e);
    }
    out += "\n";
  }
  return out;
}

std::string InfoText(Connection& c) {
  auto& cl = c.server().cluster();
  auto rt = cl.routing();
  size_t with_leader = 0, leaders_here = 0, slots_ok = 0;
  std::set<uint64_t> masters;
  for (const auto& s : rt->shards) {
    uint64_t leader = cl.LeaderOf(s.id, cluster::Cluster::kLeaderHeardUs);
    if (leader != 0) {
      ++with_leader;
      masters.insert(leader);
      slots_ok += s.end - s.begin;
    }
    if (leader == cl.node_id()) ++leaders_here;
  }
  const size_t replicated = cl.ShardsReplicated(node::MonoUs());
  bool healthy = cl.Healthy();  // a split's child without a leader yet: its parent serves
  std::string out;
  auto line = [&out](std::string_view k, const std::string& v) {
    out += std::string(k) + ":" + v + "\r\n";
  };
  line("cluster_enabled", "1");
  line("cluster_state", healthy ? "ok" : "fail");
  line("cluster_slots_assigned", std::to_string(rt->shards.empty() ? 0 : storage::kSlotCount));
  line("cluster_slots_ok", std::to_string(slots_ok));
  line("cluster_slots_pfail", "0");
  line("cluster_slots_fail", std::to_string((rt->shards.empty() ? 0 : storage::kSlotCount) - slots_ok));
  line("cluster_known_nodes", std::to_string(rt->nodes.size()));
  line("cluster_size", std::to_string(masters.size()));
  line("cluster_current_epoch", std::to_string(rt->meta_epoch));
  line("cluster_my_epoch", std::to_string(rt->meta_epoch));
  line("shoal_shards", std::to_string(rt->shards.size()));
  line("shoal_shards_replicated", std::to_string(replicated));
  line("shoal_shards_with_leader", std::to_string(with_leader));
  line("shoal_leaders_here", std::to_string(leaders_here));
  line("shoal_meta_voters", std::to_string(rt->meta_voters.size()));
  line("shoal_node_id", cluster::NodeName(cl.node_id()));
  return out;
}

bool ParseSlot(std::string_view text, uint16_t* slot) {
  auto v = ParseInt64(text);
  if (!v || *v < 0 || *v >= storage::kSlotCount) return false;
  *slot = static_cast<uint16_t>(*v);
  return true;
}

void Cluster(Connection& c, Args args, resp::Writer* r) {
  std::string sub = ToLower(args[1]);
  if (sub == "slots" || sub == "shards" || sub == "nodes") c.set_cluster_aware(true);
  if (sub == "slots") return Slots(c, r);
  if (sub == "shards") return Shards(c, r);
  if (sub == "nodes") return r->Bulk(NodesText(c));
  if (sub == "info") return r->Verbatim(InfoText(c));
  if (sub == "myid") return r->Bulk(cluster::NodeName(c.server().cluster().node_id()));
  if (sub == "keyslot") return r->Integer(storage::KeySlot(args[2]));
  if (sub == "countkeysinslot" || sub == "getkeysinslot") {
    uint16_t slot = 0;
    if (!ParseSlot(args[2], &slot)) return r->Error("ERR Invalid slot");
    int64_t max = INT64_MAX;
    if (sub == "getkeysinslot") {
      auto n = ParseInt64(args[3]);
      if (!n || *n < 0) return r->Error("ERR Invalid number of keys");
      max = *n;
    }
    auto it = c.server().engine().NewIterator(storage::Cf::kData);
    std::string prefix = storage::DataSlotDbPrefix(slot, c.db());
    std::vector<std::string> keys;
    int64_t count = 0;
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix) && count < max; it->Next()) {
      ++count;
      if (sub == "getkeysinslot") keys.emplace_back(it->key().substr(prefix.size()));
    }
    // A read that failed is no count: a tool emptying a slot would take it
    // for done.
    if (!it->status().ok()) return r->Error("ERR storage error: " + it->status().ToString());
    if (sub == "countkeysinslot") return r->Integer(count);
    r->ArrayHeader(keys.size());
    for (const auto& k : keys) r->Bulk(k);
    return;
  }
  if (sub == "help") {
    const char* lines[] = {"CLUSTER <subcommand> [<arg> ...]. Subcommands are:",
                           "INFO", "MYID", "NODES", "SHARDS", "SLOTS", "KEYSLOT <key>",
                           "COUNTKEYSINSLOT <slot>", "GETKEYSINSLOT <slot> <count>"};
    r->ArrayHeader(std::size(lines));
    for (const char* l : lines) r->Simple(l);
    return;
  }
}

void Readonly(Connection& c, Args, resp::Writer* r) {
  c.set_readonly(true);
  c.set_cluster_aware(true);
  r->Simple("OK");
}

void Readwrite(Connection& c, Args, resp::Writer* r) {
  c.set_readonly(false);
  r->Simple("OK");
}

void Asking(Connection&, Args, resp::Writer* r) { r->Simple("OK"); }

void Routed(Connection& c, Args, resp::Writer* r) {
  c.set_routed();
  r->Simple("OK");
}

// SHOAL.CLUSTERID: the cluster this node belongs to (16 hex digits), for a
// node that starts with --join and a --dir of its own cluster.
void ClusterId(Connection& c, Args, resp::Writer* r) {
  uint64_t id = c.server().cluster().cluster_id();
  if (id == 0) return r->Error("TRYAGAIN this node has not joined a cluster yet");
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(id));
  r->Simple(hex);
}

// A refused join, logged at most once a second (anyone may send SHOAL.JOIN),
// its arguments cut short and made printable.
void LogRefusedJoin(Args args, std::string_view why) {
  static std::atomic<int64_t> last_ms{0};
  const int64_t now = RealClock().NowUnixMs();
  int64_t last = last_ms.load(std::memory_order_relaxed);
  if (now - last < 1000 || !last_ms.compare_exchange_strong(last, now)) return;
  auto printable = [](std::string_view s) {
    std::string out;
    for (char ch : s.substr(0, 64)) out.push_back(ch >= 0x20 && ch < 0x7f ? ch : '?');
    return out;
  };
  spdlog::warn("SHOAL.JOIN of node {} at {}:{} refused: {}", printable(args[1]), printable(args[2]),
               printable(args[3]), why);
}

// SHOAL.CHALLENGE: a nonce (hex) the next SHOAL.JOIN on this connection
// proves the cluster secret over (common/secret.h).
void Challenge(Connection& c, Args, resp::Writer* r) {
  c.join_challenge() = RandomNonce();
  r->Bulk(ToHex(c.join_challenge()));
}

// SHOAL.JOIN node-id host port peer-port [PROOF nonce proof]
asio::awaitable<void> Join(Connection& c, Args args) {
  const std::string& secret = c.server().config().cluster_secret;
  const std::string challenge = std::exchange(c.join_challenge(), std::string());  // good for one try
  std::string nonce, proof;
  const bool proved = args.size() == 8 && EqualsIgnoreCase(args[5], "PROOF") && FromHex(args[6], &nonce) &&
                      nonce.size() == kNonceBytes && FromHex(args[7], &proof);
  if (args.size() != 5 && !proved) {
    c.writer().Error("ERR SHOAL.JOIN wants node-id host port peer-port [PROOF nonce proof]");
    co_return;
  }
  if (c.server().config().tls_cluster && !c.peer_certified()) {
    LogRefusedJoin(args, "it came without TLS and a certificate the CA signed (tls-cluster)");
    c.writer().Error("ERR this cluster runs tls-cluster: join through a member's tls-port, with a certificate "
                     "its CA signed");
    co_return;
  }
  if (!secret.empty()) {
    const std::string join_args =
        std::string(args[1]) + " " + std::string(args[2]) + " " + std::string(args[3]) + " " + std::string(args[4]);
    if (!proved || challenge.empty() || !ProofsEqual(proof, JoinProof(secret, challenge, nonce, join_args))) {
      LogRefusedJoin(args, proved ? "its proof of the cluster secret is wrong (the secrets differ)"
                                  : "it did not prove the cluster secret (it runs without one?)");
      c.writer().Error(proved ? "ERR this cluster's secret differs from the joining node's: join refused"
                              : "ERR this cluster requires the cluster secret: start the node with the same "
                                "cluster-secret-file as its members");
      co_return;
    }
  } else if (!c.authenticated()) {  // no secret: the password is all there is
    c.writer().Error("NOAUTH Authentication required.");
    co_return;
  } else if (proved) {
    LogRefusedJoin(args, "it has a cluster secret and this cluster runs without one");
    c.writer().Error("ERR this cluster runs without a cluster secret and the joining node has one: join refused");
    co_return;
  }
  auto id = ParseInt64(args[1]);
  auto port = ParseInt64(args[3]);
  auto peer = ParseInt64(args[4]);
  uint64_t node_id = id ? static_cast<uint64_t>(*id) : std::strtoull(std::string(args[1]).c_str(), nullptr, 10);
  if (node_id == 0 || !port || *port <= 0 || *port > 65535 || !peer || *peer <= 0 || *peer > 65535) {
    c.writer().Error("ERR SHOAL.JOIN wants node-id host port peer-port");
    co_return;
  }
  proto::NodeInfo info;
  info.set_id(node_id);
  info.set_host(std::string(args[2]));
  info.set_port(static_cast<uint32_t>(*port));
  info.set_peer_port(static_cast<uint32_t>(*peer));
  auto& cl = c.server().cluster();
  auto join = [&cl, info](std::function<void(std::string)> done) { cl.HandleJoin(info, std::move(done)); };
  std::string reply = co_await node::RunOnAsync<std::string>(c.server().runtime().worker(0).io(),
                                                             c.worker().io(), std::move(join));
  if (!secret.empty() && reply.size() == 19 && reply.starts_with("+") && reply.ends_with("\r\n")) {
    // The member proves itself in turn, over the cluster id it gives.
    reply.insert(17, " " + ToHex(JoinReplyProof(secret, challenge, nonce, std::string_view(reply).substr(1, 16))));
  }
  c.writer().Raw(reply);
}

// SHOAL.ADMIN STATUS | PLAN | DRAIN node | REMOVE node | BALANCE on|off:
// answered by the meta leader; any other node relays it there.
asio::awaitable<void> Admin(Connection& c, Args args) {
  if (EqualsIgnoreCase(args[1], "acl-setuser") || EqualsIgnoreCase(args[1], "acl-deluser")) {
    c.writer().Error("ERR use ACL SETUSER and ACL DELUSER");  // (they check the rules first)
    co_return;
  }
  std::vector<std::string> sub;
  for (size_t i = 1; i < args.size(); ++i) sub.emplace_back(args[i]);
  auto& cl = c.server().cluster();
  auto admin = [&cl, sub](std::function<void(cluster::AdminReply)> done) { cl.HandleAdmin(sub, std::move(done)); };
  cluster::AdminReply reply = co_await node::RunOnAsync<cluster::AdminReply>(
      c.server().runtime().worker(0).io(), c.worker().io(), std::move(admin));
  switch (reply.kind) {
    case cluster::AdminReply::Kind::kOk:
      c.writer().Simple("OK");
      break;
    case cluster::AdminReply::Kind::kLines:
      c.writer().ArrayHeader(reply.lines.size());
      for (const auto& l : reply.lines) c.writer().Bulk(l);
      break;
    case cluster::AdminReply::Kind::kError:
      c.writer().Error(reply.error);
      break;
    case cluster::AdminReply::Kind::kRedirect: {
      if (c.routed()) {  // one hop only: the meta leader moved meanwhile
        c.writer().Error("TRYAGAIN the meta leader moved; try again");
        break;
      }
      bool sent = false;
      std::string raw =
          co_await c.server().forwarder().ToNode(c.worker().index(), reply.host, reply.port, c.session(), args, &sent);
      c.writer().Raw(raw);
      break;
    }
  }
}

asio::awaitable<void> WaitCmd(Connection& c, Args args) { co_await c.Wait(args); }

// SHOAL.WAIT slot numreplicas timeout: a plain client's WAIT, forwarded.
asio::awaitable<void> ShoalWait(Connection& c, Args args) {
  auto slot = ParseInt64(args[1]);
  auto n = ParseInt64(args[2]);
  auto t = ParseInt64(args[3]);
  if (!slot || *slot < 0 || *slot >= storage::kSlotCount || !n || !t || *t < 0) {
    c.writer().Error("ERR SHOAL.WAIT: malformed request");
    co_return;
  }
  co_await c.WaitForSlot(static_cast<uint16_t>(*slot), *n, *t);
}

}  // namespace

void AppendClusterCommands(std::vector<Command>* out) {
  using namespace kv;
  auto row = [](std::string_view name, int arity, uint32_t flags, std::string_view group) {
    return CommandSpec{name, arity, flags | kCmdConnection, 0, 0, 0, group, 0};
  };
  out->push_back(Command{row("cluster", -2, kCmdLoading | kCmdStale, "cluster"), Cluster, nullptr,
                         {{"info", 2}, {"myid", 2}, {"slots", 2}, {"shards", 2}, {"nodes", 2},
                          {"keyslot", 3}, {"countkeysinslot", 3}, {"getkeysinslot", 4}, {"help", 2}}});
  out->push_back(Command{row("readonly", 1, kCmdFast | kCmdLoading | kCmdStale, "cluster"), Readonly});
  out->push_back(Command{row("readwrite", 1, kCmdFast | kCmdLoading | kCmdStale, "cluster"), Readwrite});
  out->push_back(Command{row("asking", 1, kCmdFast, "cluster"), Asking});
  out->push_back(Command{row("shoal.routed", 1, kCmdFast | kCmdNoAuth, "cluster"), Routed});
  out->push_back(Command{row("wait", 3, kCmdNoScript, "generic"), nullptr, WaitCmd});
  out->push_back(Command{row("shoal.wait", 4, kCmdNoScript, "cluster"), nullptr, ShoalWait});
  // A proof of the cluster secret stands for AUTH (a joining node has no
  // password to give); without a secret, SHOAL.JOIN needs AUTH like the rest.
  out->push_back(Command{row("shoal.join", -5, kCmdAdmin | kCmdNoAuth, "cluster"), nullptr, Join});
  out->push_back(Command{row("shoal.challenge", 1, kCmdAdmin | kCmdNoAuth, "cluster"), Challenge});
  out->push_back(Command{row("shoal.clusterid", 1, kCmdFast | kCmdNoAuth, "cluster"), ClusterId});
  out->push_back(Command{row("shoal.admin", -2, kCmdAdmin, "cluster"), nullptr, Admin});
}

}  // namespace shoal::server

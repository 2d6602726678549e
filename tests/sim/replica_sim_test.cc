// Deterministic simulation of the node runtime's replica logic: real
// replica::Replica objects (RawNode + RocksDB log + kv state machine) on
// three simulated nodes, driven the way node::Groups drives them (Ready ->
// one write -> apply -> persist -> advance), over a simulated network that
// delays, reorders, drops and partitions, with node restarts (reopening the
// store: log, hard state, applied index), log compaction small enough that
// lagging and restarted replicas catch up from snapshots, and clients that
// route by leader hints and retry after leader changes. Every seed is
// reproducible; the history is checked for linearizability and the
// replicas must converge. Some runs split the group in two while all this
// goes on (docs/design/splits.md). Others serve reads the way connections
// do: from the leader's lease and from followers (READONLY), while nodes
// stall (a stopped process: its ticks held back while real time runs on;
// what queued up runs before its next tick) and workers apply late (a leader's commit reaches
// followers before it applies it itself). With storage faults, disks fail
// writes and fsyncs (the node stops itself: shoal::FailStop) and crashes lose
// what was not synced (storage::FaultEngine), and links are cut one way.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <map>
#include <random>
#include <set>

#include "cluster/membership.h"
#include "cluster/planner.h"
#include "common/member_id.h"
#include "kv/collection.h"
#include "kv/commands.h"
#include "kv/transaction.h"
#include "node/image_stream.h"
#include "replica/replica.h"
#include "sim/linearizability.h"
#include "storage/fault_engine.h"
#include "storage/keys.h"
#include "storage/slot.h"

namespace shoal::sim {
namespace {

constexpr uint64_t kGroup = 3;
// The group that takes kGroup's upper slots when it splits (the cluster
// gives a split child the next unused id).
constexpr uint64_t kChild = 4;
constexpr int kMaxNodes = 5;  // nodes 4 and 5 join later in the placement runs
constexpr int kFounders = 3;
// Steps without a node before the placement driver calls it down.
constexpr uint64_t kDownAfterSteps = 400;
constexpr uint64_t kRetireQuietTicks = 20;
constexpr uint64_t kStaleSteps = 400;

const kv::CommandSpec& Spec(std::string_view name) {
  for (const auto& s : kv::DataCommands()) {
    if (s.name == name) return s;
  }
  return kv::DataCommands()[0];
}

// A quarter of the keys, picked by a hash of their names (the slots of a
// test's keys, CRCs of names that differ in a digit, fall in patterns), are
// collections rewritten whole: their write is one transaction, MULTI DEL
// key HSET key f vN gvN vN hvN vN EXEC for hashes, MULTI DEL key ZADD key N
// f N gvN N hvN EXEC for sorted sets (an eighth each), whose DEL walks and
// deletes the elements the last write left (a walk that storage faults may
// fail). Their reads read field or member f.
// Of the other keys, half (by slot, so a seed's random draws stay as they
// were) are collections: a quarter hashes, whose write is HSET key f value and whose
// read reads field f, and a quarter sorted sets, whose write is ZADD key N f
// for value vN and whose read reads f's score (a change of score moves its
// entry in score order too). Their elements are keys of their own, so
// snapshots, splits and storage faults carry them. An eighth are bitmaps:
// the write of vN is BITFIELD key SET u32 0 N, the read its first 4 bytes.
enum class KeyKind { kString, kHash, kZset, kBitmap, kRewrittenHash, kRewrittenZset };
KeyKind KindOf(const std::string& key) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a, then mixed (splitmix64's finish)
  for (const char c : key) h = (h ^ static_cast<uint8_t>(c)) * 0x100000001b3ull;
  h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
  h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
  if ((h ^ (h >> 31)) % 8 == 0) return KeyKind::kRewrittenHash;
  if ((h ^ (h >> 31)) % 8 == 1) return KeyKind::kRewrittenZset;
  const uint16_t slot = storage::KeySlot(key);
  if (slot % 8 == 4) return KeyKind::kBitmap;
  return slot % 2 == 0 ? KeyKind::kString : (slot % 4 == 1 ? KeyKind::kHash : KeyKind::kZset);
}
bool IsHash(const std::string& key) {
  return KindOf(key) == KeyKind::kHash || KindOf(key) == KeyKind::kRewrittenHash;
}
bool IsZset(const std::string& key) {
  return KindOf(key) == KeyKind::kZset || KindOf(key) == KeyKind::kRewrittenZset;
}

// The stored key a read of `key` looks at (its field or member f for a collection).
std::string ReadKeyOf(const std::string& key) {
  switch (KindOf(key)) {
    case KeyKind::kHash:
    case KeyKind::kRewrittenHash:
      return storage::ElementKey(0, key, kv::NameOf(kv::ValueType::kHash, "f"));
    case KeyKind::kZset:
    case KeyKind::kRewrittenZset:
      return storage::ElementKey(0, key, kv::NameOf(kv::ValueType::kZSet, "f"));
    case KeyKind::kString:
    case KeyKind::kBitmap:
      break;
  }
  return storage::DataKey(0, key);
}

// The value a read finds in `raw`, read at ReadKeyOf(key).
std::string ReadValueOf(const std::string& key, const std::string& raw) {
  if (IsHash(key)) return raw;
  if (IsZset(key)) return "v" + std::to_string(static_cast<int64_t>(kv::DecodeScore(raw)));
  kv::Value v;
  if (!kv::DecodeValue(raw, &v)) return "";
  if (KindOf(key) == KeyKind::kBitmap) {
    if (v.payload.size() < 4) return "";
    uint32_t n = 0;
    for (int i = 0; i < 4; ++i) n = (n << 8) | static_cast<uint8_t>(v.payload[static_cast<size_t>(i)]);
    return "v" + std::to_string(n);
  }
  return std::string(v.payload);
}

// A SET of key to value (HSET, ZADD or BITFIELD SET for the other kinds);
// `expiring`: with an expiry far in the future (the key counts among the
// shard's expiring keys; strings only).
// A command prepared as a connection prepares it (it must be valid).
kv::Entry Prepared(std::vector<std::string_view> args, int64_t now_ms) {
  static kv::Limits limits;
  const kv::CommandSpec& spec = Spec(args[0]);
  SHOAL_CHECK(spec.name == args[0]);
  kv::Entry e;
  e.op = spec.op;
  e.now_ms = now_ms;
  if (!spec.prepare) {  // its arguments as they are (Connection::PrepareWrite)
    e.args.assign(args.begin() + 1, args.end());
    return e;
  }
  std::string err;
  resp::Writer w(&err, 2);
  kv::PrepareContext ctx{0, e.now_ms, &limits};
  SHOAL_CHECK(spec.prepare(ctx, args, &e, &w));
  return e;
}

std::string SetBatch(const std::string& key, const std::string& value, bool expiring = false) {
  const KeyKind kind = KindOf(key);
  if (kind == KeyKind::kRewrittenHash || kind == KeyKind::kRewrittenZset) {
    std::vector<kv::ExecItem> items(2);
    for (auto& item : items) item.kind = kv::ExecItem::Kind::kWrite;
    items[0].write = Prepared({"del", key}, 1000);
    // Elements named after the write too: one that a DEL's walk missed stays.
    const std::string g = "g" + value, h = "h" + value, n = value.substr(1);
    items[1].write = kind == KeyKind::kRewrittenHash
                         ? Prepared({"hset", key, "f", value, g, value, h, value}, 1000)
                         : Prepared({"zadd", key, n, "f", n, g, n, h}, 1000);
    return replica::EncodeKvBatch({kv::MakeExecEntry(key, 1000, 7, items)}, 2);
  }
  const std::string score = value.substr(1);  // values are vN
  std::vector<std::string_view> args = {"set", key, value};
  if (kind == KeyKind::kHash) args = {"hset", key, "f", value};
  if (kind == KeyKind::kZset) args = {"zadd", key, score, "f"};
  if (kind == KeyKind::kBitmap) args = {"bitfield", key, "set", "u32", "0", score};
  if (expiring && kind == KeyKind::kString) args.insert(args.end(), {"px", "1000000000"});
  return replica::EncodeKvBatch({Prepared(args, 1000)}, 2);
}

// Whether a write's reply says it took effect (OK for SET, a count for HSET
// and ZADD, the old field for BITFIELD SET, DEL's and HSET's or ZADD's
// counts for a collection's rewrite).
bool WriteApplied(const std::string& reply) {
  return reply == "+OK\r\n" || reply == ":0\r\n" || reply == ":1\r\n" || reply.starts_with("*1\r\n:") ||
         reply == "*2\r\n:0\r\n:3\r\n" || reply == "*2\r\n:1\r\n:3\r\n";
}

// A node's process stopped itself (shoal::FailStop): the simulation catches
// it as a crash of that node.
struct NodeStopped {
  std::string why;
};

[[noreturn]] void ThrowNodeStopped(const char* why) { throw NodeStopped{why}; }

struct SimNode {
  raft::NodeId id = 0;
  std::filesystem::path dir;
  kv::Limits limits;
  std::unique_ptr<storage::Engine> disk;    // the store on disk
  storage::FaultEngine* faults = nullptr;   // with storage faults: the layer over `disk`
  std::unique_ptr<storage::Engine> engine;  // what the node uses: `disk`, or the fault layer
  std::unique_ptr<kv::Shard> shard;
  std::unique_ptr<replica::Replica> replica;  // null: no replica of the group here
  // kChild's replica here, once a split made it beside the parent or the
  // node created it empty for a snapshot; null in runs without splits.
  std::unique_ptr<kv::Shard> child_shard;
  std::unique_ptr<replica::Replica> child_replica;
  bool up = false;        // the process runs (engine open)
  bool joined = false;    // a member of the cluster
  bool lost = false;      // gone for good, its disk with it
  bool draining = false;  // an operator asked to move everything off it
  bool removed = false;   // removed from the cluster
  uint64_t down_since = 0;
};

struct InFlight {
  uint64_t deliver_at;
  uint64_t group;
  raft::Message msg;
};

struct ChunkInFlight {
  uint64_t deliver_at;
  node::SnapshotChunk chunk;
};

class ReplicaSim;

// The simulation's snapshot courier: an image is exported at once into the
// sender's folder, then carried chunk by chunk over the simulated network
// (delays, losses, partitions) to the receiver's folder, as
// node::SnapshotStreams carries it between processes.
struct SimCourier final : replica::SnapshotCourier {
  ReplicaSim* sim = nullptr;
  raft::NodeId node = 0;
  void Ship(uint64_t group, raft::Message msg, replica::ImageWriter write) override;
  std::string Received(uint64_t group, const replica::SnapshotTicket& t) override;
  void Consumed(uint64_t group, const replica::SnapshotTicket& t) override;
  void Discard(uint64_t group) override;
  void Recall(uint64_t group, const std::vector<raft::NodeId>& keep) override;
  std::optional<raft::Index> Carrying(uint64_t group, raft::NodeId to) override;
  void Adopt(uint64_t group, raft::NodeId to, raft::Term term) override;
};

// The simulation's splitter, as cluster::Cluster's StageSplit/FinishSplit:
// the split of kGroup creates kChild's replica beside the parent, its data
// in place.
struct SimSplitter final : replica::Splitter {
  ReplicaSim* sim = nullptr;
  raft::NodeId node = 0;
  bool StageSplit(replica::Replica& parent, const replica::SplitCommand& split, const raft::ConfState& conf,
                  uint64_t index, storage::WriteBatch& batch) override;
  void FinishSplit(replica::Replica& parent, const replica::SplitCommand& split) override;
  bool ClaimImage(replica::Replica& r, uint16_t begin, uint16_t end) override;
  void ReleaseImage(replica::Replica& r) override { claims.erase(r.group()); }
  // Whether a replica other than `group` claimed some of [begin, end).
  bool Claimed(uint64_t group, uint16_t begin, uint16_t end) const {
    for (const auto& [g, range] : claims) {
      if (g != group && range.first < end && begin < range.second) return true;
    }
    return false;
  }
  std::map<uint64_t, std::pair<uint16_t, uint16_t>> claims;  // group -> slots claimed for an image
};

class ReplicaSim {
 public:
  explicit ReplicaSim(uint64_t seed)
      : queue_rng_(seed ^ 0x5eed),
        read_fault_rng_(seed ^ 0xfa17),
        store_read_rng_(seed ^ 0x9e75),
        walk_fault_rng_(seed ^ 0x3a1c),
        rng_(seed),
        seed_(seed) {}
  ~ReplicaSim() {
    for (auto& n : nodes_) {
      Down(n);
      std::filesystem::remove_all(n.dir);
    }
    if (storage_faults_) SetFailStopHandler(nullptr);
  }

  void Start() {
    nodes_.resize(kMaxNodes);
    for (int i = 0; i < kMaxNodes; ++i) {
      couriers_[i].sim = this;
      couriers_[i].node = static_cast<raft::NodeId>(i + 1);
      splitters_[i].sim = this;
      splitters_[i].node = static_cast<raft::NodeId>(i + 1);
    }
    for (int i = 0; i < kMaxNodes; ++i) {
      SimNode& n = nodes_[static_cast<size_t>(i)];
      n.id = static_cast<raft::NodeId>(i + 1);
      n.dir = std::filesystem::temp_directory_path() /
              ("shoal_replica_sim_" + std::to_string(::getpid()) + "_" + std::to_string(seed_) + "_" +
               std::to_string(i));
      std::filesystem::remove_all(n.dir);
      if (i < founders_) {
        n.joined = true;
        Up(n, /*bootstrap=*/true);
      }
    }
    want_.voters = Founders();
    // A write, fsync or import that fails stops its node: here a crash of it.
    if (storage_faults_) SetFailStopHandler(ThrowNodeStopped);
  }

  std::vector<raft::NodeId> Founders() const {
    std::vector<raft::NodeId> ids;
    for (int i = 1; i <= founders_; ++i) ids.push_back(static_cast<raft::NodeId>(i));
    return ids;
  }

  // Starts the node's process; it opens its replica if it was bootstrapped,
  // has one on disk, or the placement wants one there (as Cluster::Open).
  void Up(SimNode& n, bool bootstrap) {
    n.disk = std::move(storage::Engine::Open({.dir = n.dir.string(), .memory_budget_bytes = 32 << 20}).value());
    if (storage_faults_) {
      auto layer = std::make_unique<storage::FaultEngine>(n.disk.get());
      // Durability none (lone_appends_) promises only what a process crash
      // keeps: writes are never synced, and a crash here loses none of them.
      if (!lone_appends_) layer->TrackUnsynced();
      n.faults = layer.get();
      n.engine = std::move(layer);
    } else {
      n.engine = std::move(n.disk);
    }
    n.up = true;
    // Unfinished incoming images stay on disk: transfers resume.
    receivers_[n.id - 1] = std::make_unique<node::ImageReceiver>((n.dir / "streams").string());
    receivers_[n.id - 1]->Recover();
    // Transfers this node was sending when it went down go on, without their
    // Raft message (its term has passed): receivers take images on arrival.
    std::erase_if(images_, [&](Image& im) {
      if (!im.parked || im.from != n.id) return false;
      im.sender = std::make_unique<node::ImageSender>(im.group, im.msg.from, im.msg.to, im.sender->export_id(),
                                                      im.sender->dir(), SenderOptions());
      if (!im.sender->Open(NowUs()).ok()) return true;  // its disk was wiped
      im.parked = false;
      im.resumed = true;
      images_resumed_++;
      return false;
    });
    if (bootstrap || storage::RaftStore::HasState(n.engine.get(), kGroup) || Wanted(n.id)) OpenReplica(n, bootstrap);
    // A split's child found on disk reopens too; its shard reads its range.
    if (storage::RaftStore::HasState(n.engine.get(), kChild)) OpenChild(n);
  }

  // As Cluster::OpenShardReplica: the member whose state is on disk (a
  // split's child: its parent's), else the incarnation the placement names.
  replica::ReplicaOptions OptionsOf(const SimNode& n, uint64_t group) {
    replica::ReplicaOptions ro;
    ro.group = group;
    uint64_t incarnation = Incarnation(n.id);
    auto stored = replica::ReadIncarnation(n.engine.get(), group);
    if (!stored.ok()) FailStop("reading an incarnation failed");
    if (storage::RaftStore::HasState(n.engine.get(), group)) {
      if (stored->found && !stored->retired) incarnation = stored->incarnation;
      if (!stored->found) incarnation = 0;
    }
    ro.node_id = MemberIdOf(n.id, incarnation);
    ro.incarnation = incarnation;
    ro.compact_entries = compact_entries_;
    // Most seeds keep few applied entries in memory or none: laggers are
    // sent entries read back from the engine.
    ro.log_cache_bytes = seed_ % 3 == 0 ? (256 << 10) : seed_ % 3 == 1 ? 0 : 4096;
    ro.seed = seed_ * 7919 + restarts_ + 1;
    if (streamed_) ro.courier = &couriers_[n.id - 1];
    ro.splitter = &splitters_[n.id - 1];
    ro.commit_lone_appends = lone_appends_;
    return ro;
  }

  // Log entries the node's replicas read back from the engine (not held in
  // memory any more), counted as they close.
  void CountReadBack(SimNode& n) {
    for (const auto* r : {n.replica.get(), n.child_replica.get()}) {
      if (r == nullptr) continue;
      entries_read_back_ += r->store().entries_read();
      log_read_errors_ += r->store().read_errors();
    }
  }
  // `count` summed over the replicas of the nodes up.
  template <typename F>
  uint64_t OverLiveReplicas(F count) {
    uint64_t live = 0;
    for (auto& n : nodes_) {
      for (const auto* r : {n.replica.get(), n.child_replica.get()}) {
        if (r != nullptr) live += count(*r);
      }
    }
    return live;
  }
  uint64_t EntriesReadBack() {
    return entries_read_back_ + OverLiveReplicas([](const replica::Replica& r) { return r.store().entries_read(); });
  }
  // Reads of the log back from the engine that failed (the follower that
  // needed those entries is sent a snapshot instead).
  uint64_t LogReadErrors() {
    return log_read_errors_ + OverLiveReplicas([](const replica::Replica& r) { return r.store().read_errors(); });
  }

  void OpenReplica(SimNode& n, bool bootstrap) {
    n.shard = std::make_unique<kv::Shard>(n.engine.get(), kGroup, 0, storage::kSlotCount, 1024);
    if (!n.shard->Load().ok()) FailStop("opening a shard failed");  // a failed write; the restart opens it again
    replica::ReplicaOptions ro = OptionsOf(n, kGroup);
    if (bootstrap) ro.bootstrap_voters = Founders();
    auto r = replica::Replica::Open(n.engine.get(), ro,
                                    std::make_unique<replica::KvStateMachine>(n.shard.get(), &n.limits));
    if (!r.ok()) FailStop("opening a replica failed");  // a failed write; the restart opens it again
    n.replica = std::move(r).value();
  }

  // Opens kChild's replica: the state a split staged, or none (it waits for
  // a snapshot). Never founding voters: a child's membership is its parent's.
  void OpenChild(SimNode& n) {
    n.child_shard = std::make_unique<kv::Shard>(n.engine.get(), kChild, split_slot_, storage::kSlotCount, 1024);
    if (!n.child_shard->Load().ok()) FailStop("opening a shard failed");
    auto r = replica::Replica::Open(n.engine.get(), OptionsOf(n, kChild),
                                    std::make_unique<replica::KvStateMachine>(n.child_shard.get(), &n.limits));
    if (!r.ok()) FailStop("opening a replica failed");
    n.child_replica = std::move(r).value();
  }

  replica::Replica* ReplicaOf(SimNode& n, uint64_t group) {
    return group == kGroup ? n.replica.get() : group == kChild ? n.child_replica.get() : nullptr;
  }

  void Down(SimNode& n) {
    if (!n.up) return;
    n.up = false;
    n.down_since = step_;
    paused_until_.erase(n.id);
    tick_burst_.erase(n.id);
    DropDeferred(n.id, 0);
    std::erase_if(pending_reads_, [&](const PendingRead& p) { return p.node == n.id; });
    CountReadBack(n);
    n.replica.reset();  // pending callbacks are dropped: their outcome stays unknown
    n.child_replica.reset();
    splitters_[n.id - 1].claims.clear();
    std::erase_if(recounts_, [&](const Recount& r) { return r.node == n.id; });  // the scan dies with it
    n.child_shard.reset();
    receivers_[n.id - 1].reset();
    // Its sends stop; their exports stay on its disk, and a restart takes
    // them up again (node::SnapshotStreams::ResumeExports).
    for (auto& im : images_) im.parked |= im.from == n.id;
    n.shard.reset();
    if (n.faults != nullptr) {
      gets_failed_ += n.faults->gets_failed();
      iterators_failed_ += n.faults->iterators_failed();
    }
    n.engine.reset();
    n.faults = nullptr;
    n.disk.reset();
  }

  // The process dies; with storage faults its disk keeps only a prefix of
  // what it wrote since its last sync (a power loss).
  void Crash(SimNode& n) {
    if (n.up && n.faults != nullptr) {
      size_t unsynced = n.faults->unsynced_writes();
      size_t lose = rng_() % 2 == 0 ? unsynced : rng_() % (unsynced + 1);
      size_t raft_before = n.faults->raft_writes_lost();
      size_t lost = n.faults->LoseUnsynced(lose);
      writes_lost_ += lost;
      raft_writes_lost_ += n.faults->raft_writes_lost() - raft_before;
      crashes_losing_ += lost > 0;
      // A split's staging not synced yet is lost too: its entry applies
      // again at restart and stages the child once more.
      if (splits_staged_[n.id] > 0 && !storage::RaftStore::HasState(&Store(n), kChild)) {
        splits_staged_[n.id] = 0;
        events_.push_back("node " + std::to_string(n.id) + " lost its unsynced split at " + std::to_string(step_));
      }
    }
    const bool was_up = n.up;
    Down(n);
    if (!was_up) return;
    // Its kernel closes its connections: each peer it was connected to sees
    // an orderly close, probes its Raft port, finds it refused, and tells
    // its replicas (Transport's gone handler), unless it runs again by then.
    for (auto& m : nodes_) {
      if (m.id != n.id) gone_notes_.push_back(GoneNote{step_ + 1 + (n.id + m.id) % 3, n.id, m.id});
    }
  }

  // Delivers what Crash queued: Groups::PeerGone on the peer.
  void GoneNotices() {
    for (auto it = gone_notes_.begin(); it != gone_notes_.end();) {
      if (step_ < it->at) {
        ++it;
        continue;
      }
      SimNode& gone = *Node(it->gone);
      SimNode& to = *Node(it->to);
      if (!gone.up && to.up && !Paused(to) && Connected(it->gone, it->to)) {
        for (uint64_t group : {kGroup, kChild}) {
          replica::Replica* r = ReplicaOf(to, group);
          if (r != nullptr && r->PeerGone(it->gone, NowUs())) gone_campaigns_++;
        }
      }
      it = gone_notes_.erase(it);
    }
  }

  // Runs `f`, a step of node n's process; a fail-stop in it crashes the
  // node, which restarts a while later. False if it stopped.
  template <typename F>
  bool OnNode(SimNode& n, F&& f) {
    try {
      f();
      return true;
    } catch (const NodeStopped& e) {
      fail_stops_++;
      stop_reasons_[e.why]++;
      events_.push_back("node " + std::to_string(n.id) + " stopped at " + std::to_string(step_) + ": " + e.why);
      Crash(n);
      restarts_++;
      restart_at_[n.id] = step_ + RestartDelay();
      return false;
    }
  }

  // A tick also retries an image that arrived but could not be taken yet.
  void TickOne(replica::Replica* r) {
    if (r == nullptr) return;
    uint64_t before = r->images_taken_on_arrival();
    r->Tick(NowUs());
    images_taken_ += static_cast<int>(r->images_taken_on_arrival() - before);
  }

  // Steps until a crashed node runs again. With storage faults some come
  // back at once, within the lease of a leader they voted for.
  uint64_t RestartDelay() {
    if (storage_faults_ && rng_() % 4 == 0) return 1 + rng_() % 30;
    return 50 + rng_() % 300;
  }

  // As node::Groups waits for the WAL sync before a round's messages that
  // need its writes on disk (votes, acknowledgements) leave.
  void Durable(SimNode& n) {
    if (n.faults != nullptr && !n.engine->Sync().ok()) FailStop("WAL sync failed");
  }

  bool Wanted(raft::NodeId id) const {
    return std::count(want_.voters.begin(), want_.voters.end(), id) + std::count(want_.learners.begin(), want_.learners.end(), id) > 0;
  }
  // The incarnation the placement names for the group's replica on node
  // `id` (as ShardInfo.incarnations), and its Raft member id.
  uint64_t Incarnation(raft::NodeId id) const {
    auto it = incarnations_.find(id);
    return it == incarnations_.end() ? 0 : it->second;
  }
  raft::NodeId Member(raft::NodeId id) const { return MemberIdOf(id, Incarnation(id)); }
  // Whether node n's replica is the one the placement wants there.
  bool WantedHere(const SimNode& n) const { return Wanted(n.id) && n.replica && n.replica->node_id() == Member(n.id); }
  // As the metadata's SetShard with the placement driver's names
  // (NameReportedIncarnations): a node newly placed takes the next
  // incarnation unless the group still has the member it was when it left;
  // one that leaves keeps its incarnation in departed_.
  void SetWant(const cluster::Membership& target, const std::vector<raft::NodeId>& reported) {
    for (const auto* ids : {&target.voters, &target.learners}) {
      for (raft::NodeId id : *ids) {
        if (Wanted(id)) continue;
        auto d = departed_.find(id);
        if (d != departed_.end() && std::count(reported.begin(), reported.end(), MemberIdOf(id, d->second)) > 0) {
          incarnations_[id] = d->second;
          kept_members_++;
          events_.push_back("node " + std::to_string(id) + " placed again as the member the group still has");
          continue;
        }
        incarnations_[id] = ++last_incarnation_;
        placed_again_ += !placed_.insert(id).second;
        events_.push_back("node " + std::to_string(id) + " placed as incarnation " + std::to_string(last_incarnation_));
      }
    }
    for (const auto* ids : {&want_.voters, &want_.learners}) {
      for (raft::NodeId id : *ids) departed_[id] = Incarnation(id);
    }
    want_ = target;
    std::erase_if(incarnations_, [&](const auto& e) { return !Wanted(e.first); });
    std::erase_if(departed_, [&](const auto& e) { return Wanted(e.first); });
  }
  // The Raft membership the placement wants: member ids.
  cluster::Membership WantedMembers() const {
    cluster::Membership m;
    for (raft::NodeId v : want_.voters) m.voters.push_back(Member(v));
    for (raft::NodeId l : want_.learners) m.learners.push_back(Member(l));
    std::sort(m.voters.begin(), m.voters.end());
    std::sort(m.learners.begin(), m.learners.end());
    return m;
  }

  uint64_t Now() { return ++clock_; }

  void Run(int steps) {
    for (int step = 0; step < steps; ++step) {
      ++step_;
      Faults();
      GoneNotices();
      FinishDeferred();
      ReportSyncs();
      if (clients_) Clients();
      Deliver();
      RunPendingReads();
      Stream();
      if (step_ % 5 == 0) {
        for (auto& n : nodes_) {
          if (Paused(n)) continue;
          TickOne(n.replica.get());
          TickOne(n.child_replica.get());
        }
      }
      DriveAll();
      // A resumed process runs what queued up (messages, clients) before
      // its timer catches up on the ticks it missed, all at once.
      for (auto it = tick_burst_.begin(); it != tick_burst_.end(); it = tick_burst_.erase(it)) {
        SimNode& n = *Node(it->first);
        for (uint64_t k = 0; k < it->second; ++k) {
          TickOne(n.replica.get());
          TickOne(n.child_replica.get());
        }
        bursts_++;
      }
      if (splits_) Splits();
      if (placement_ && step_ % 10 == 0) Placement();
      for (auto& n : nodes_) {
        if (!n.replica || !n.replica->is_leader()) continue;
        uint64_t term = n.replica->raft().term();
        if (term > leader_term_) {
          if (leader_term_ != 0) leader_changes_++;
          leader_term_ = term;
        }
      }
    }
  }

  void Faults() {
    for (auto it = paused_until_.begin(); it != paused_until_.end();) {
      if (step_ < it->second.second) {
        ++it;
        continue;
      }
      // The tick loop never catches up (node::Groups::TickLoop): one tick.
      tick_burst_[it->first] = 1;
      it = paused_until_.erase(it);
    }
    if (!faults_) return;
    std::uniform_int_distribution<int> pct(0, 999);
    if (stalls_ && paused_until_.empty() && pct(rng_) < 4) {
      // Stop a process (SIGSTOP, a long GC-like stall): the leader mostly.
      SimNode& l = Leader();
      SimNode& n = rng_() % 3 != 0 && l.replica && l.replica->is_leader() ? l : nodes_[rng_() % kMaxNodes];
      if (n.up) {
        paused_until_[n.id] = {step_, step_ + 40 + rng_() % 360};
        pauses_++;
      }
    }
    if (placement_) PlacementEvents();
    if (partitioned_ == 0 && pct(rng_) < 3) {
      partitioned_ = 1 + rng_() % kMaxNodes;
      heal_at_ = step_ + 100 + rng_() % 400;
    } else if (partitioned_ != 0 && step_ >= heal_at_) {
      partitioned_ = 0;
    }
    if (storage_faults_) StorageFaults();
    if (pct(rng_) < 2) {
      SimNode& n = nodes_[rng_() % kMaxNodes];
      if (n.up && n.joined) {
        Crash(n);
        restarts_++;
        restart_at_[n.id] = step_ + RestartDelay();
      }
    }
    for (auto& n : nodes_) {
      auto it = restart_at_.find(n.id);
      if (!n.up && !n.lost && !n.removed && it != restart_at_.end() && step_ >= it->second) {
        restart_at_.erase(it);
        Up(n, false);
      }
    }
  }

  // Disks that fail a write or an fsync now and then (the node stops
  // itself), and links cut one way only (a sends, never hears b).
  void StorageFaults() {
    std::uniform_int_distribution<int> pct(0, 999);
    if (pct(rng_) < 3) {
      SimNode& n = nodes_[rng_() % kMaxNodes];
      if (n.up && n.faults != nullptr) {
        switch (rng_() % 4) {
          case 0: n.faults->FailNextSyncs(1); break;
          case 1: n.faults->FailNextWrites(1); break;  // mostly a Ready round's log write
          case 2: n.faults->FailNextWriteTo(storage::Cf::kData); break;  // an apply, import or split
          default: n.faults->FailNextIngest();  // a snapshot's file
        }
        disk_faults_++;
      }
    }
    // Batched reads that fail now and then: a leader's write-hint lookups
    // (its followers then read those keys themselves) or a node's pipelined
    // GETs (answered with an error). Drawn apart, so that the schedules of
    // the other faults stay as they were.
    if (read_fault_rng_() % 64 == 0) {
      SimNode& n = nodes_[read_fault_rng_() % kMaxNodes];
      if (n.up && n.faults != nullptr) {
        n.faults->FailNextMultiGets(1);
        read_faults_++;
      }
    }
    // A node's next Get fails now and then (an apply's read of a key: the
    // node stops itself; a client's GET: its error), and so does its next
    // iterator, at its first seek or a few moves on (the Raft log read back
    // for a follower: a snapshot instead; a recount; an image's export; a
    // replica's opening).
    if (store_read_rng_() % 128 == 0) {
      SimNode& n = nodes_[store_read_rng_() % kMaxNodes];
      if (n.up && n.faults != nullptr) n.faults->FailNextGets(1);
    }
    if (store_read_rng_() % 64 == 0) {
      SimNode& n = nodes_[store_read_rng_() % kMaxNodes];
      if (n.up && n.faults != nullptr) n.faults->FailNextIterators(1);
    }
    // ... or a few moves on (a walk cut short): a stream of its own again.
    if (walk_fault_rng_() % 128 == 0) {
      SimNode& n = nodes_[walk_fault_rng_() % kMaxNodes];
      const int at = 1 + static_cast<int>(walk_fault_rng_() % 8);
      if (n.up && n.faults != nullptr) n.faults->FailNextIterators(1, at);
    }
    if (!placement_ && pct(rng_) < 4) {
      // Leaderships move now and then, as the placement moves them (where it
      // runs, it does so itself): TimeoutNow lets the transferee win at
      // once, while the old leader's lease would still run.
      SimNode& l = Leader();
      raft::NodeId to = 1 + rng_() % kFounders;
      if (l.replica && l.replica->is_leader() && to != l.id && !Paused(l)) {
        l.replica->TransferLeader(to);
        transfers_++;
      }
    }
    if (oneway_from_ == 0 && pct(rng_) < 3) {
      oneway_from_ = 1 + rng_() % kMaxNodes;
      oneway_to_ = 1 + (oneway_from_ + rng_() % (kMaxNodes - 1)) % kMaxNodes;
      oneway_heal_at_ = step_ + 100 + rng_() % 400;
      oneway_cuts_++;
    } else if (oneway_from_ != 0 && step_ >= oneway_heal_at_) {
      oneway_from_ = oneway_to_ = 0;
    }
  }

  bool Connected(raft::NodeId a, raft::NodeId b) const {  // nodes, or members on them
    a = NodeKey(a);
    b = NodeKey(b);
    if (a == oneway_from_ && b == oneway_to_) return false;
    return partitioned_ == 0 || (a != partitioned_ && b != partitioned_);
  }

  SimNode* Node(raft::NodeId id) { return &nodes_[NodeKey(id) - 1]; }  // a node, or a member on it

  // Each client has at most one operation in flight, sent to the node it
  // believes leads the key's group; a refusal's leader hint reroutes it.
  void Clients() {
    for (int c = 0; c < 3; ++c) {
      if (busy_[c]) continue;
      if (rng_() % (reads_ ? 2 : 4) != 0) continue;
      // With splits the key comes first: its slot decides the group.
      std::string key = splits_ ? PickKey(c) : "";
      const uint64_t group = splits_ ? RouteOf(c, key) : kGroup;
      raft::NodeId& believed = believed_leader_[c][group == kChild];
      SimNode* n = Node(believed);
      const bool write_first = reads_ && rng_() % 2 == 0;
      if (reads_ && !write_first && rng_() % 2 == 0) {
        // READONLY: any replica of the key's group serves the read.
        n = Node(1 + rng_() % kMaxNodes);
      }
      if (Paused(*n)) continue;  // the client waits for it
      replica::Replica* r = ReplicaOf(*n, group);
      if (r == nullptr || !Connected(1000, n->id)) {
        believed = 1 + rng_() % kMaxNodes;
        continue;
      }
      if (!splits_) key = "k" + std::to_string(rng_() % 3);
      size_t op = history_.size();
      const bool write = reads_ ? write_first : rng_() % 2 == 0;
      // Some writes go to keys of their own, never written again: a replica
      // that skipped one differs from the others for good (ExpectConverged).
      if (storage_faults_ && !splits_ && write && rng_() % 4 == 0) key = "u" + std::to_string(op);
      busy_node_[c] = n->id;
      history_.push_back(Operation{op, write, key, write ? "v" + std::to_string(op) : "", Now(), kNeverReturned});
      if (write) {
        int client = c;
        bool expiring = splits_ && rng_() % 3 == 0 && KindOf(key) == KeyKind::kString;
        if (expiring) expiring_ops_.insert(op);
        // As a connection's: joined with the other clients' writes queued
        // for the group's next round (Replica::ProposeJoined). Busy first:
        // a refusal may come at once.
        busy_[c] = true;
        busy_group_[c] = group;
        r->ProposeJoined(SetBatch(key, history_[op].value, expiring),
                         [this, op, client, r, group](raft::Proposal refused, bool applied, std::string reply) {
                           busy_[client] = false;
                           if (!refused.ok()) {
                             refused_ops_.insert(op);  // never in the log
                             expiring_ops_.erase(op);
                             joined_refusals_++;
                             Reroute(client, group, refused.leader_hint);
                             return;
                           }
                           if (applied && WriteApplied(reply)) {
                             history_[op].response = Now();
                             // Answered by a group of one member (commit_lone_appends: in the
                             // round that logged it).
                             lone_acks_ += r->raft().tracker().progress().size() == 1;
                           } else if (applied && reply.starts_with("-TRYAGAIN")) {
                             Refused(client, op);  // its slot moved (a split): applied as nothing
                           }
                         },
                         static_cast<int64_t>(step_) * 10'000);
      } else {
        if (!r->is_leader() && n->id == believed) {  // reads go to the leader (routing)
          history_.pop_back();
          Reroute(c, group, r->raft().lead());
          continue;
        }
        if (reads_ && r->published_is_leader() && r->LeaseReadOk(NowUs())) {
          // As Connection::ReadBarrier: served at once from local state.
          if (!r->state_machine().OwnsSlot(storage::KeySlot(history_[op].key))) {
            Refused(c, op);
            continue;
          }
          if (queue_rng_() % 2 == 0) {
            // As Connection::QueueRead: queued with other GETs, and served
            // with them a little later if the lease still holds then. Now
            // and then much later: the thread was descheduled in between.
            const uint64_t wait =
                !storage_faults_ && queue_rng_() % 16 == 0 ? queue_rng_() % 200 : queue_rng_() % 3;
            pending_reads_.push_back(PendingRead{op, c, n->id, group, 0, step_ + wait, /*lease=*/true});
            busy_[c] = true;  // the connection answers it before anything that follows
            busy_group_[c] = group;
            continue;
          }
          if (ClientRead(*n, op)) lease_reads_++;
          continue;
        }
        int client = c;
        SimNode* node = n;
        raft::NodeId at = n->id;
        // Busy first: within the leader's lease the answer may come at once.
        busy_[c] = true;
        busy_group_[c] = group;
        if (reads_) {
          // The connection runs the read a little after its barrier (on its
          // own thread), checking that no snapshot import overlapped it.
          r->ReadIndex([this, op, client, at, group, r](bool ok) {
            busy_[client] = false;
            if (!ok) return;
            pending_reads_.push_back(PendingRead{op, client, at, group, r->import_generation(), step_ + rng_() % 8});
          }, NowUs());
          continue;
        }
        r->ReadIndex([this, op, client, node, at, group](bool ok) {
          busy_[client] = false;
          if (!ok || !node->up || node->id != at) return;
          // As Connection::RunKeyed: confirmed, but by a group that may have
          // split meanwhile.
          replica::Replica* served = ReplicaOf(*node, group);
          if (served == nullptr || !served->state_machine().OwnsSlot(storage::KeySlot(history_[op].key))) {
            Refused(client, op);
            return;
          }
          if (ClientRead(*node, op)) reads_ok_++;
        }, static_cast<int64_t>(step_) * 10'000);
      }
    }
    // A client whose node went down gives up on its operation (unknown outcome).
    for (int c = 0; c < 3; ++c) {
      uint64_t g = busy_group_[c];
      if (busy_[c] && !ReplicaOf(*Node(busy_node_[c]), g)) busy_[c] = false;
    }
  }

  // --- reads as connections serve them, stalls and late applies

  struct PendingRead {
    size_t op;
    int client;
    raft::NodeId node;
    uint64_t group;
    uint64_t import_gen;
    uint64_t due;
    bool lease = false;  // queued under the leader's lease (not after a ReadIndex)
  };
  struct Deferred {
    raft::NodeId node;
    uint64_t group;
    uint64_t due;
    bool needs_sync;
  };
  // A leader's round finished before its sync (Replica::FinishUnsynced):
  // the sync comes `due`, then the leader hears of it (as node::Groups::
  // ReportSynced); a crash before then loses the report and, maybe, the write.
  struct SyncDue {
    raft::NodeId node;
    uint64_t group;
    uint64_t due;
    replica::Replica::SyncReport report;
  };

  bool Paused(const SimNode& n) const { return paused_until_.contains(n.id); }

  // A node's due reads are read together, with one MultiGet, as a
  // connection serves a pipeline's GETs (Connection::ServeQueuedReads).
  void RunPendingReads() {
    std::map<raft::NodeId, std::vector<PendingRead>> due;
    std::erase_if(pending_reads_, [&](const PendingRead& p) {
      if (p.due > step_ || Paused(*Node(p.node))) return false;
      due[p.node].push_back(p);
      return true;
    });
    for (auto& [id, reads] : due) {
      SimNode& n = *Node(id);
      std::vector<PendingRead> served;
      std::vector<replica::Replica*> replicas;
      std::vector<std::string> keys;
      // As ServeQueuedReads: if one queued lease read's lease lapsed, all of
      // them go the slow way (ServeQueuedReadsSlowly: a barrier, here a
      // ReadIndex, for each).
      bool lapsed = false;
      for (const PendingRead& p : reads) {
        replica::Replica* r = n.up ? ReplicaOf(n, p.group) : nullptr;
        lapsed = lapsed || (p.lease && r != nullptr && !r->LeaseReadOk(NowUs()));
      }
      for (const PendingRead& p : reads) {
        replica::Replica* r = n.up ? ReplicaOf(n, p.group) : nullptr;
        if (p.lease) busy_[p.client] = false;  // answered now, or handed on below
        if (r == nullptr) continue;  // gone: its outcome stays unknown
        if (p.lease && lapsed) {
          lapsed_leases_++;
          const PendingRead q = p;
          busy_[q.client] = true;
          r->ReadIndex([this, q, r](bool ok) {
            busy_[q.client] = false;
            if (!ok) return;
            pending_reads_.push_back(
                PendingRead{q.op, q.client, q.node, q.group, r->import_generation(), step_ + queue_rng_() % 8});
          }, NowUs());
          continue;
        }
        if (!r->state_machine().OwnsSlot(storage::KeySlot(history_[p.op].key))) {
          Refused(p.client, p.op);
          continue;
        }
        served.push_back(p);
        replicas.push_back(r);
        keys.push_back(ReadKeyOf(history_[p.op].key));
      }
      std::vector<uint64_t> gens;
      for (replica::Replica* r : replicas) gens.push_back(r->import_generation());
      std::vector<std::string_view> views(keys.begin(), keys.end());
      std::vector<std::string> raws(keys.size());
      std::vector<Status> statuses(keys.size());
      // Through the engine's value cache, as a connection's GETs read.
      n.engine->MultiGet(storage::Cf::kData, views, raws, statuses, nullptr, storage::ReadVia::kCache);
      batched_reads_ += served.size() > 1 ? served.size() : 0;
      for (size_t i = 0; i < served.size(); ++i) {
        const PendingRead& p = served[i];
        const uint64_t gen = gens[i];
        if ((!p.lease && gen != p.import_gen) || gen % 2 == 1 || replicas[i]->import_generation() != gen) {
          import_refusals_++;  // TRYAGAIN: a snapshot import overlapped the read
          continue;
        }
        if (!statuses[i].ok() && statuses[i].code() != Code::kNotFound) {
          SHOAL_CHECK(storage_faults_);
          read_errors_++;  // the client is told of the error: no answer to check
          continue;
        }
        Operation& op = history_[p.op];
        op.value = statuses[i].ok() ? ReadValueOf(op.key, raws[i]) : "";
        op.response = Now();
        (p.lease ? queued_lease_reads_ : replicas[i]->published_is_leader() ? leader_reads_ : follower_reads_)++;
      }
    }
  }

  // Ready rounds whose apply a slow worker runs later (its messages left).
  void FinishDeferred() {
    std::vector<Deferred> due;
    std::erase_if(deferred_, [&](const Deferred& d) {
      if (d.due > step_ || Paused(*Node(d.node))) return false;
      due.push_back(d);
      return true;
    });
    for (const Deferred& d : due) {
      SimNode& n = *Node(d.node);
      replica::Replica* r = ReplicaOf(n, d.group);  // none if the node stopped meanwhile
      if (r == nullptr) continue;
      OnNode(n, [&] {
        r->ApplyReady(NowUs());  // a split may open the child here (as in DriveAll)
        if (d.needs_sync) Durable(n);
        std::vector<raft::Message> out;
        r->FinishReady(&out, NowUs());
        Send(out, d.group);
      });
    }
  }

  void ReportSyncs() {
    std::vector<SyncDue> due;
    std::erase_if(sync_due_, [&](const SyncDue& d) {
      if (d.due > step_ || Paused(*Node(d.node))) return false;
      due.push_back(d);
      return true;
    });
    for (const SyncDue& d : due) {
      SimNode& n = *Node(d.node);
      replica::Replica* r = ReplicaOf(n, d.group);
      if (r == nullptr) continue;
      OnNode(n, [&] {
        Durable(n);
        r->Synced(d.report);
        syncs_reported_++;
      });
    }
  }

  void DropDeferred(raft::NodeId node, uint64_t group) {
    std::erase_if(sync_due_, [&](const SyncDue& d) { return d.node == node && (group == 0 || d.group == group); });
    std::erase_if(deferred_, [&](const Deferred& d) { return d.node == node && (group == 0 || d.group == group); });
  }

  bool storage_faults_ = false;  // writes and fsyncs that fail, crashes that lose unsynced writes, one-way cuts
  raft::NodeId oneway_from_ = 0, oneway_to_ = 0;
  uint64_t oneway_heal_at_ = 0;
  int disk_faults_ = 0, fail_stops_ = 0, crashes_losing_ = 0, oneway_cuts_ = 0, transfers_ = 0;
  int read_faults_ = 0, read_errors_ = 0;  // batched reads failed on purpose; client reads failed
  std::map<std::string, int> stop_reasons_;  // fail-stops by their reason
  int retire_read_errors_ = 0;  // retirements put off by a read that failed
  // Gets and iterators failed on purpose, of nodes since stopped:
  // FailedReads() adds those of the nodes up.
  uint64_t gets_failed_ = 0, iterators_failed_ = 0;
  std::pair<uint64_t, uint64_t> FailedReads() const {
    uint64_t gets = gets_failed_, its = iterators_failed_;
    for (const auto& n : nodes_) {
      if (n.faults != nullptr) gets += n.faults->gets_failed(), its += n.faults->iterators_failed();
    }
    return {gets, its};
  }
  int joint_rounds_ = 0;  // DriveNode rounds that applied both groups in one write
  uint64_t images_deferred_ = 0;  // images Raft asked for while a round's applies were unwritten
  size_t writes_lost_ = 0, raft_writes_lost_ = 0;  // undone by crashes; of them, log or hard state writes
  bool reads_ = false;   // lease and follower reads, as connections serve them
  bool stalls_ = false;  // stopped processes and late applies
  std::map<raft::NodeId, std::pair<uint64_t, uint64_t>> paused_until_;  // since, until
  std::map<raft::NodeId, uint64_t> tick_burst_;
  std::vector<PendingRead> pending_reads_;
  std::vector<Deferred> deferred_;
  std::vector<SyncDue> sync_due_;
  int unsynced_finishes_ = 0, syncs_reported_ = 0;
  int pauses_ = 0, bursts_ = 0, deferred_rounds_ = 0, lease_reads_ = 0, leader_reads_ = 0, follower_reads_ = 0,
      import_refusals_ = 0, queued_lease_reads_ = 0, lapsed_leases_ = 0;
  size_t batched_reads_ = 0;  // reads served in a MultiGet of two or more
  std::mt19937_64 queue_rng_;  // queued lease reads: rng_'s draws stay as they were
  std::mt19937_64 read_fault_rng_;  // failed batched reads (StorageFaults), the same
  // Failed single reads and iterators (StorageFaults), drawn apart too.
  std::mt19937_64 store_read_rng_;
  std::mt19937_64 walk_fault_rng_;  // iterators failed a few moves on

  void Reroute(int c, uint64_t group, raft::NodeId hint) {
    raft::NodeId& believed = believed_leader_[c][group == kChild];
    raft::NodeId next = hint != raft::kNoNode ? hint : 1 + rng_() % kMaxNodes;
    if (next != believed) reroutes_++;
    believed = next;
  }

  // Takes out of `net` what is due by now.
  template <typename Net>
  auto TakeDue(Net& net) {
    using T = typename Net::value_type;
    std::vector<T> now;
    for (auto it = net.begin(); it != net.end();) {
      if (it->deliver_at <= step_) {
        now.push_back(std::move(*it));
        it = net.erase(it);
      } else {
        ++it;
      }
    }
    return now;
  }

  void Deliver() {
    for (auto& f : TakeDue(net_)) {
      if (Paused(*Node(f.msg.to))) {  // queued in its socket until it runs again, read in any order
        f.deliver_at = paused_until_[NodeKey(f.msg.to)].second + 1 + rng_() % 6;
        net_.push_back(std::move(f));
        continue;
      }
      replica::Replica* to = ReplicaOf(*Node(f.msg.to), f.group);
      if (to == nullptr || !Connected(f.msg.from, f.msg.to)) continue;
      to->Step(std::move(f.msg), NowUs());
    }
  }

  // --- streamed snapshots
  struct Image {
    raft::NodeId from;
    uint64_t group;
    raft::Message msg;
    std::unique_ptr<node::ImageSender> sender;
    bool parked = false;   // its sender is down
    bool resumed = false;  // taken up again after its sender restarted: no ticket
  };

  static node::ImageSenderOptions SenderOptions() {
    node::ImageSenderOptions o;
    o.chunk_bytes = 512;  // images span several chunks
    o.resend_us = 200'000;
    o.give_up_us = 5'000'000;
    return o;
  }
  struct Report {
    raft::NodeId node;
    uint64_t group;
    raft::NodeId to;
    bool failed;
  };

  int64_t NowUs() const { return static_cast<int64_t>(step_) * 10'000; }

  void ShipImage(raft::NodeId from, uint64_t group, raft::Message msg, replica::ImageWriter write) {
    SimNode* n = Node(from);
    replica::SnapshotTicket t;
    replica::SnapshotTicket::Decode(msg.snapshot.data, &t);
    std::string dir = (n->dir / ("out-" + std::to_string(group) + "-" + std::to_string(msg.to) + "-" +
                                 std::to_string(t.export_id))).string();
    std::filesystem::remove_all(dir);
    auto sender = std::make_unique<node::ImageSender>(group, msg.from, msg.to, t.export_id, dir, SenderOptions());
    // A newer transfer to the same replica replaces the one under way.
    std::erase_if(images_, [&](const Image& im) { return im.from == from && im.group == group && im.msg.to == msg.to; });
    if (!write(dir).ok() || !sender->Open(NowUs()).ok()) {
      reports_.push_back(Report{from, group, msg.to, true});
      return;
    }
    images_.push_back(Image{from, group, std::move(msg), std::move(sender), false, false});
  }

  node::ImageReceiver* ReceiverOf(raft::NodeId id) { return receivers_[NodeKey(id) - 1].get(); }

  // Transfers that `from` abandons (SnapshotCourier::Recall): no report.
  void RecallImages(raft::NodeId from, uint64_t group, const std::vector<raft::NodeId>& keep) {
    std::erase_if(images_, [&](const Image& im) {
      if (im.from != from || im.group != group || std::count(keep.begin(), keep.end(), im.msg.to) > 0) return false;
      std::filesystem::remove_all(im.sender->dir());
      images_recalled_++;
      return true;
    });
  }

  void SendChunk(raft::NodeId a, raft::NodeId b, node::SnapshotChunk c) {
    if (rng_() % 100 < drop_pct_ * 3) return;  // lost (chunks more often than messages)
    (void)a;
    (void)b;
    chunks_.push_back(ChunkInFlight{step_ + 1 + rng_() % 3, std::move(c)});
  }

  void Stream() {
    for (auto& r : reports_) {
      if (replica::Replica* rep = ReplicaOf(*Node(r.node), r.group)) rep->ReportSnapshot(r.to, r.failed);
    }
    reports_.clear();
    for (auto& f : TakeDue(chunks_)) {
      node::SnapshotChunk& c = f.chunk;
      if (!Connected(c.from, c.to)) continue;
      if (c.kind == node::SnapshotChunk::Kind::kAck) {
        for (auto& im : images_) {
          if (!im.parked) im.sender->OnAck(c, NowUs());
        }
        continue;
      }
      node::ImageReceiver* r = ReceiverOf(c.to);
      if (r == nullptr) continue;  // the receiver is down
      node::SnapshotChunk ack = r->Handle(c, NowUs());
      const bool whole = ack.done;
      SendChunk(c.to, c.from, std::move(ack));
      // As node::SnapshotStreams tells the group's worker (Replica::ImageArrived).
      replica::Replica* rep = whole && !Paused(*Node(c.to)) ? ReplicaOf(*Node(c.to), c.group) : nullptr;
      if (rep != nullptr) {
        uint64_t before = rep->images_taken_on_arrival();
        const bool former = rep->published_leader() != c.from;  // its sender no longer leads, as far as it knows
        rep->ImageArrived(replica::SnapshotTicket{c.from, c.export_id});
        images_taken_ += static_cast<int>(rep->images_taken_on_arrival() - before);
        if (former) images_taken_former_ += static_cast<int>(rep->images_taken_on_arrival() - before);
      }
    }
    for (auto it = images_.begin(); it != images_.end();) {
      if (it->parked) {
        ++it;
        continue;
      }
      auto& s = *it->sender;
      // Slow senders (some seeds) are often still sending when leadership
      // moves: their receivers take a former leader's image on arrival.
      const int pace = slow_images_ && step_ % 32 != 0 ? 0 : 2;
      for (int k = 0; k < pace && !s.done() && !s.failed(NowUs()); ++k) {
        auto c = s.Next(NowUs());
        SHOAL_CHECK(c.ok());
        if (!c->has_value()) break;
        SendChunk(it->from, it->msg.to, std::move(**c));
      }
      if (s.done() || s.failed(NowUs())) {
        if (s.done()) {
          images_streamed_++;
          std::vector<raft::Message> out{it->msg};
          if (!it->resumed) Send(out, it->group);
        }
        reports_.push_back(Report{it->from, it->group, it->msg.to, !s.done()});
        std::filesystem::remove_all(s.dir());
        it = images_.erase(it);
      } else {
        ++it;
      }
    }
  }

  void Send(std::vector<raft::Message>& msgs, uint64_t group) {
    for (auto& m : msgs) {
      if (NodeKey(m.to) < 1 || NodeKey(m.to) > kMaxNodes) continue;
      if (rng_() % 100 < drop_pct_) continue;  // lost
      uint64_t delay = 1 + rng_() % 3;
      if (stale_permille_ > 0 && rng_() % 1000 < stale_permille_) delay = 1 + rng_() % kStaleSteps;
      net_.push_back(InFlight{step_ + delay, group, std::move(m)});
    }
    msgs.clear();
  }

  void DriveAll() {
    for (int pass = 0; pass < 4; ++pass) {
      for (auto& n : nodes_) {
        if (!Paused(n)) OnNode(n, [&] { DriveNode(n); });
      }
    }
  }

  // One Ready round of a node's replicas, as node::Groups runs it: the log
  // appends of both groups, then their applies, staged into one batch and
  // written once (replica::ApplyRound). A round that logs something (any
  // of its Readys needs a sync) sends its messages before the write; any
  // other sends them with its responses, after the write (Groups::Drive).
  void DriveNode(SimNode& n) {
    if (n.engine == nullptr) return;  // down
    replica::ApplyRound round(n.engine.get());
    struct Begun {
      uint64_t group;
      replica::Replica* r;
      bool needs_sync;
      bool deferred;
      uint64_t unlogged_before;
      std::vector<raft::Message> held;  // sent with the responses
    };
    std::vector<Begun> begun;
    for (uint64_t group : {kGroup, kChild}) {
      replica::Replica* r = ReplicaOf(n, group);
      std::vector<raft::Message> out;
      bool needs_sync = false;
      if (r != nullptr && r->joined_queued() >= 2) joined_rounds_++;  // clients' writes joined in one entry
      if (r == nullptr || !r->BeginReady(round, &out, &needs_sync)) continue;
      begun.push_back(Begun{group, r, needs_sync, false, r->store().entries_unlogged(), std::move(out)});
    }
    const bool logs = std::any_of(begun.begin(), begun.end(), [](const Begun& b) { return b.needs_sync; });
    if (logs) {
      for (Begun& b : begun) {
        Send(b.held, b.group);
        b.held.clear();
      }
    }
    // A slow worker applies later (stalls); with storage faults the WAL sync
    // also comes a step or more after the write, so crashes fall in between.
    bool deferring = false;
    for (Begun& b : begun) {
      b.deferred = (stalls_ && rng_() % 5 == 0) || (storage_faults_ && !stalls_ && rng_() % 4 == 0);
      deferring = deferring || b.deferred;
    }
    if (deferring) round.Flush();  // the log now, those applies later
    for (Begun& b : begun) {
      if (b.deferred) {
        Send(b.held, b.group);
        b.held.clear();
        deferred_.push_back(Deferred{n.id, b.group, step_ + 1 + rng_() % 12, b.needs_sync});
        deferred_rounds_++;
      } else {
        const uint64_t deferred_before = b.r->images_deferred();
        b.r->ApplyReady(NowUs(), round);  // a split may open the child here
        images_deferred_ += b.r->images_deferred() - deferred_before;
      }
    }
    round.Flush();
    for (const Begun& b : begun) unlogged_ += b.r->store().entries_unlogged() - b.unlogged_before;
    joint_rounds_ += std::count_if(begun.begin(), begun.end(), [](const Begun& b) { return !b.deferred; }) >= 2;
    for (Begun& b : begun) {
      if (b.deferred) continue;
      std::vector<raft::Message> out = std::move(b.held);
      if (b.needs_sync && !lone_appends_ && b.r->MayFinishUnsynced() && rng_() % 3 != 0) {
        // As node::Groups: a leader goes on before its own entries are synced.
        sync_due_.push_back(SyncDue{n.id, b.group, step_ + 1 + rng_() % 8, b.r->FinishUnsynced(NowUs())});
        unsynced_finishes_++;
      } else {
        if (b.needs_sync) Durable(n);
        b.r->FinishReady(&out, NowUs());
      }
      Send(out, b.group);
    }
  }

  // Heals everything, lets the group settle, and reads every key on the leader.
  void Settle() {
    faults_ = false;
    drop_pct_ = 0;
    partitioned_ = 0;
    oneway_from_ = oneway_to_ = 0;
    for (auto& n : nodes_) {
      if (n.faults != nullptr) n.faults->ClearFaults();
    }
    for (auto& n : nodes_) {
      if (!n.up && n.joined && !n.lost && !n.removed) Up(n, false);
    }
    restart_at_.clear();
    Run(placement_ ? 3000 : 400);
    clients_ = false;
    Run(placement_ ? 1500 : 400);
  }

  // Converged: every member has applied the same index and holds the same values.
  void ExpectConverged(uint64_t seed) {
    uint64_t applied = nodes_[0].replica->state_machine().applied_index();
    const auto data = DataOf(nodes_[0]);
    for (auto& n : nodes_) {
      if (!n.joined) continue;
      EXPECT_EQ(n.replica->state_machine().applied_index(), applied) << "seed " << seed << " node " << n.id;
      EXPECT_TRUE(DataOf(n) == data) << "seed " << seed << " node " << n.id << " holds other data than node 1";
      // Counters and the expiry index too: a write hint that was not the state
      // its entry met would leave them apart while the data agrees.
      EXPECT_TRUE(DataOf(n, storage::Cf::kExpiry) == DataOf(nodes_[0], storage::Cf::kExpiry))
          << "seed " << seed << " node " << n.id << " holds another expiry index than node 1";
      if (!n.shard->NeedsRecount()) {
        // What the keys hold (a hint that all replicas took alike, but was
        // not the state, would leave them equal and wrong).
        int64_t keys = 0, expires = 0;
        std::set<std::string> written(keys_.begin(), keys_.end());
        for (const auto& op : history_) {
          if (op.is_write) written.insert(op.key);
        }
        for (const auto& key : written) {
          const uint16_t slot = storage::KeySlot(key);
          const std::string v = ValueOn(n, key);
          if (slot < n.shard->slot_begin() || slot >= n.shard->slot_end() || v.empty()) continue;
          keys++;
          expires += expiring_ops_.contains(std::stoull(v.substr(1)));
        }
        EXPECT_EQ(n.shard->KeyCount(0), keys) << "seed " << seed << " node " << n.id;
        EXPECT_EQ(n.shard->ExpiresCount(0), expires) << "seed " << seed << " node " << n.id;
      }
      hinted_puts_ += n.shard->hinted_puts();
      for (int k = 0; k < 3; ++k) {
        std::string key = "k" + std::to_string(k);
        EXPECT_EQ(ValueOn(n, key), ValueOn(nodes_[0], key)) << "seed " << seed << " " << key;
      }
    }
  }

  // Final reads of every key on `at`, after every acknowledged write, join
  // the history, which must be linearizable. Returns the acknowledged writes.
  int ExpectLinearizable(SimNode& at) {
    std::set<std::string> keys;
    for (const auto& op : history_) keys.insert(op.key);  // write-once keys too: none may be lost
    for (const auto& key : keys) {
      uint64_t t = Now();
      history_.push_back(Operation{history_.size(), false, key, ValueOn(at, key), t, Now()});
    }
    auto result = check_linearizable(History());
    EXPECT_TRUE(result.ok) << "seed " << seed_ << ": " << result.key << "\n" << result.explain;
    int acked = 0;
    for (const auto& op : history_) acked += op.is_write && op.response != kNeverReturned;
    return acked;
  }

  // The operations that happened: refused ones (in no log) left out.
  std::vector<Operation> History() const {
    std::vector<Operation> out;
    for (const auto& op : history_) {
      if (!refused_ops_.contains(op.id)) out.push_back(op);
    }
    return out;
  }

  // Prints the placement's want and every node's state and replica (a
  // failed run's state, for whoever replays its seed).
  void Dump() {
    auto ids = [](const std::vector<raft::NodeId>& v) {
      std::string o;
      for (raft::NodeId x : v) o += " " + std::to_string(x);
      return o;
    };
    auto u = [](uint64_t x) { return static_cast<unsigned long long>(x); };
    std::printf("step %llu: placement wants voters%s, learners%s\n", u(step_), ids(want_.voters).c_str(),
                ids(want_.learners).c_str());
    for (auto& n : nodes_) {
      std::printf("node %llu (member %llu): up %d joined %d lost %d draining %d removed %d\n", u(n.id), u(Member(n.id)),
                  n.up, n.joined, n.lost, n.draining, n.removed);
      if (!n.replica) continue;
      replica::Replica& r = *n.replica;
      const raft::ConfState cs = r.raft().tracker().conf_state();
      std::printf("  replica: role %d term %llu leader %llu commit %llu applied %llu log %llu-%llu voters%s outgoing%s "
                  "learners%s retired %d\n",
                  static_cast<int>(r.raft().role()), u(r.raft().term()), u(r.raft().lead()), u(r.raft().log().committed()),
                  u(r.state_machine().applied_index()), u(r.store().first_index()), u(r.store().last_index()),
                  ids(cs.voters).c_str(), ids(cs.voters_outgoing).c_str(), ids(cs.learners).c_str(), r.retired());
    }
  }

  SimNode& Leader(uint64_t group = kGroup) {
    SimNode* best = nullptr;
    for (auto& n : nodes_) {
      replica::Replica* r = ReplicaOf(n, group);
      if (r != nullptr && r->is_leader() &&
          (best == nullptr || r->raft().term() > ReplicaOf(*best, group)->raft().term())) {
        best = &n;
      }
    }
    return best != nullptr ? *best : nodes_[0];
  }

  // --- placement: the real planner and membership steps drive the group
  // while nodes join, drain, restart and die for good.

  void PlacementEvents() {
    if (step_ == join_at_[0] || step_ == join_at_[1]) {
      SimNode& n = *Node(join_nodes_[step_ == join_at_[0] ? 0 : 1]);
      n.joined = true;
      Up(n, false);
      events_.push_back("join " + std::to_string(n.id));
    }
    if (step_ == loss_at_) {
      // A voter dies for good (only one, so a majority always survives).
      raft::NodeId victim = want_.voters[rng_() % want_.voters.size()];
      SimNode& n = *Node(victim);
      Down(n);
      n.lost = true;
      std::filesystem::remove_all(n.dir);
      events_.push_back("lose " + std::to_string(n.id));
    }
    if (step_ == outage_at_) {
      // A voter is down longer than down-after, then comes back with its
      // stale replica, which must retire itself.
      raft::NodeId victim = want_.voters[rng_() % want_.voters.size()];
      SimNode& n = *Node(victim);
      if (n.up && !n.lost) {
        Down(n);
        restart_at_[n.id] = step_ + kDownAfterSteps + 300;
        events_.push_back("outage " + std::to_string(n.id));
      }
    }
    if (step_ == drain_at_) {
      std::vector<raft::NodeId> candidates;
      for (auto& n : nodes_) {
        if (n.joined && !n.lost && !n.removed) candidates.push_back(n.id);
      }
      if (candidates.size() >= 4) {
        SimNode& n = *Node(candidates[rng_() % candidates.size()]);
        n.draining = true;
        events_.push_back("drain " + std::to_string(n.id));
      }
    }
  }

  cluster::ClusterView View() {
    cluster::ClusterView view;
    for (auto& n : nodes_) {
      if (!n.joined) continue;
      cluster::NodeState st = cluster::NodeState::kUp;
      if (n.removed) {
        st = cluster::NodeState::kRemoved;
      } else if (n.draining) {
        st = cluster::NodeState::kDraining;
      } else if (!n.up && step_ - n.down_since > kDownAfterSteps) {
        st = cluster::NodeState::kDown;
      }
      view.nodes.push_back({n.id, st});
    }
    cluster::ShardView sv;
    sv.id = kGroup;
    sv.want = want_;
    sv.preferred_leader = preferred_;
    SimNode& l = Leader();
    if (l.replica && l.replica->is_leader()) {
      raft::ConfState cs = l.replica->raft().tracker().conf_state();
      sv.reported = true;
      sv.joint = !cs.voters_outgoing.empty();
      // Members to nodes, as Cluster::View: an older incarnation still in
      // the group counts as a change under way.
      auto nodes = [&](std::vector<raft::NodeId> members) {
        for (raft::NodeId& m : members) {
          sv.joint |= m != Member(NodeKey(m));
          m = NodeKey(m);
        }
        std::sort(members.begin(), members.end());
        members.erase(std::unique(members.begin(), members.end()), members.end());
        return members;
      };
      std::vector<raft::NodeId> voters = cs.voters;
      voters.insert(voters.end(), cs.voters_outgoing.begin(), cs.voters_outgoing.end());
      sv.actual.voters = nodes(voters);
      sv.actual.learners = nodes(cs.learners);
    }
    view.shards.push_back(sv);
    return view;
  }

  // The members the group's leader has (what it reports).
  std::vector<raft::NodeId> ReportedMembers() {
    std::vector<raft::NodeId> out;
    if (SimNode& l = Leader(); l.replica && l.replica->is_leader()) {
      const raft::ConfState& cs = l.replica->raft().tracker().conf_state();
      for (const auto* ids : {&cs.voters, &cs.voters_outgoing, &cs.learners}) out.insert(out.end(), ids->begin(), ids->end());
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  // An operator moves a voter's replica onto a node the group left before
  // (SHOAL.ADMIN MOVE, which wants the shard settled): a new incarnation
  // there, while that node may still hold its old one.
  void MoveBack() {
    if (move_back_at_ == 0 || step_ < move_back_at_ || moved_back_) return;
    SimNode& l = Leader();
    if (!l.replica || !l.replica->is_leader()) return;
    cluster::Membership members = WantedMembers();
    std::vector<raft::NodeId> all = members.voters;
    all.insert(all.end(), members.learners.begin(), members.learners.end());
    std::sort(all.begin(), all.end());
    if (ReportedMembers() != all || !members.learners.empty()) return;  // not settled
    std::vector<raft::NodeId> back, stale;  // stale: it still holds its old replica
    for (auto& n : nodes_) {
      if (n.up && n.joined && !n.lost && !n.removed && !n.draining && !Wanted(n.id) && placed_.contains(n.id)) {
        back.push_back(n.id);
        if (n.replica) stale.push_back(n.id);
      }
    }
    if (!stale.empty()) back = stale;
    if (back.empty()) return;
    const raft::NodeId to = back[rng_() % back.size()];
    raft::NodeId from = 0;
    for (raft::NodeId v : want_.voters) {
      if (v != l.id) from = v;
    }
    cluster::Membership target = want_;
    std::replace(target.voters.begin(), target.voters.end(), from, to);
    std::sort(target.voters.begin(), target.voters.end());
    events_.push_back("move back " + std::to_string(from) + " -> " + std::to_string(to) + " at " + std::to_string(step_));
    moves_++;
    SetWant(target, ReportedMembers());
    if (preferred_ == from) preferred_ = to;
    moved_back_ = true;
  }

  void Placement() {
    MoveBack();
    // The placement driver: plan, and record the plan as the metadata would.
    for (const cluster::Move& m : cluster::Plan(View(), {})) {
      if (m.kind == cluster::MoveKind::kRemoveNode) {
        SimNode& n = *Node(m.nodes[0]);
        n.removed = true;  // it runs on until its operator stops it; its replica retires itself
        events_.push_back("removed " + std::to_string(n.id));
        continue;
      }
      if (m.shard != kGroup) continue;
      if (m.target != want_) moves_++;
      SetWant(m.target, ReportedMembers());
      preferred_ = m.leader;
    }
    // The group's leader carries it out.
    SimNode& l = Leader();
    if (l.replica && l.replica->is_leader()) {
      const raft::Raft& raft = l.replica->raft();
      cluster::MembershipStep step = cluster::NextMembershipStep(WantedMembers(), preferred_ != 0 ? Member(preferred_) : 0,
                                                                 cluster::GroupStateOf(raft));
      if (step.kind == cluster::MembershipStep::Kind::kConfChange) {
        (void)l.replica->ProposeConfChange(step.change);
      } else if (step.kind == cluster::MembershipStep::Kind::kTransferLeader) {
        l.replica->TransferLeader(step.transfer_to);
      }
      // Replicas the metadata no longer wants, and the leader no longer
      // counts, delete themselves (Cluster::RetireRemoved).
      raft::ConfState cs = raft.tracker().conf_state();
      std::vector<raft::NodeId> voters = cs.voters;
      voters.insert(voters.end(), cs.voters_outgoing.begin(), cs.voters_outgoing.end());
      for (auto& n : nodes_) {
        if (!n.replica) continue;
        if (!cluster::MayRetire(n.replica->node_id(), WantedHere(n), l.replica->node_id(), cluster::Membership{voters, cs.learners},
                                !cs.voters_outgoing.empty(), n.replica->HeardFromLeaderWithin(kRetireQuietTicks))) {
          continue;
        }
        if (Wanted(n.id)) {
          old_incarnations_retired_++;  // placed here again: the old member goes first
          events_.push_back("node " + std::to_string(n.id) + " retires an older incarnation at " + std::to_string(step_));
        }
        OnNode(n, [&] {
          auto batch = n.engine->NewBatch();
          // As node::Groups::Retire: a read that fails while staging leaves
          // the replica running (tried again later); a failed write stops
          // the node.
          if (!n.replica->StageDestroy(*batch).ok()) {
            retire_read_errors_++;
            return;
          }
          if (!n.engine->Write(*batch).ok()) FailStop("retiring a replica failed");
          Durable(n);  // as node::Groups::Retire
          DropDeferred(n.id, kGroup);
          entries_read_back_ += n.replica->store().entries_read();
          log_read_errors_ += n.replica->store().read_errors();
          n.replica.reset();
          n.shard.reset();
          retired_++;
        });
      }
    }
    // Invariant: a voter the leader counts keeps its replica while its node
    // runs (it was never retired too early).
    if (l.replica && l.replica->is_leader()) {
      raft::ConfState cs = l.replica->raft().tracker().conf_state();
      for (auto& n : nodes_) {
        auto here = [&](raft::NodeId m) { return SameNode(m, n.id); };
        bool voter = std::count_if(cs.voters.begin(), cs.voters.end(), here) +
                         std::count_if(cs.voters_outgoing.begin(), cs.voters_outgoing.end(), here) > 0;
        if (voter && n.up && !n.replica) {
          early_retire_++;
          events_.push_back("voter " + std::to_string(n.id) + " without its replica at step " + std::to_string(step_));
        }
      }
    }
    // Nodes the metadata places the group on open an empty replica.
    for (auto& n : nodes_) {
      if (n.up && !n.replica && Wanted(n.id)) OnNode(n, [&] { OpenReplica(n, false); });
    }
  }

  bool placement_ = false;
  cluster::Membership want_;  // nodes
  std::map<raft::NodeId, uint64_t> incarnations_;  // node -> its replica's incarnation (absent: 0)
  uint64_t last_incarnation_ = 0;
  std::set<raft::NodeId> placed_ = {1, 2, 3};  // nodes the group was ever placed on
  int placed_again_ = 0;  // placements on a node the group had left
  std::map<raft::NodeId, uint64_t> departed_;  // node -> its incarnation when it left
  int kept_members_ = 0;  // nodes placed again as the member the group still had
  int old_incarnations_retired_ = 0;  // replicas deleted because their node was placed again
  raft::NodeId preferred_ = 0;
  uint64_t join_at_[2] = {0, 0}, loss_at_ = 0, drain_at_ = 0, outage_at_ = 0, move_back_at_ = 0;
  raft::NodeId join_nodes_[2] = {4, 5};  // the nodes that join at join_at_
  int founders_ = kFounders;             // the group's founding voters: nodes 1..founders_
  bool lone_appends_ = false;            // replicas run with commit_lone_appends (durability none)
  int lone_acks_ = 0;                    // writes answered by a group of one member
  int joined_rounds_ = 0;                // rounds that proposed two clients' writes or more together
  int joined_refusals_ = 0;              // queued writes refused when their round came
  uint64_t unlogged_ = 0;                // entries applied in the write that would have logged them
  bool moved_back_ = false;
  std::vector<std::string> events_;
  int moves_ = 0, retired_ = 0, early_retire_ = 0;

  // --- splits: kGroup's leader splits it at split_slot_ into kChild while
  // clients write on both sides, as Cluster::ProposeSplitIfDue (re-proposed
  // until the leader's range shrinks), Cluster::StageSplit/FinishSplit (the
  // splitter) and Cluster::EnsureShardReplica (a node creates the child
  // empty only once no replica of its own holds the child's slots).

  void Splits() {
    ProposeSplit();
    LagAcrossSplit();
    if (split_proposed_ && step_ % 10 == 0) EnsureChildren();
    if (step_ % 50 == 0) LeadChildElsewhere();
    Recounts();
    CheckOneOwnerPerSlot();
  }

  // Key recounts after a split, as Cluster::StartRecounts: begun on the
  // owner, counted a while later over the view taken then (the recount
  // thread) while applies go on, finished on the owner.
  struct Recount {
    raft::NodeId node;
    uint64_t group;
    uint64_t due;
    kv::Shard::RecountJob job;
  };

  kv::Shard* ShardOf(SimNode& n, uint64_t group) {
    return group == kGroup ? n.shard.get() : group == kChild ? n.child_shard.get() : nullptr;
  }

  void Recounts() {
    for (auto it = recounts_.begin(); it != recounts_.end();) {
      if (it->due > step_) {
        ++it;
        continue;
      }
      std::atomic<bool> stop{false};
      auto counted = it->job.count(stop);
      // A scan that failed (a read error) leaves the shard needing its
      // recount: a later round starts another, as Cluster::RecountLoop.
      SHOAL_CHECK(counted.ok() || (storage_faults_ && counted.status().code() == Code::kIOError));
      if (!counted.ok()) recounts_failed_++;
      kv::Shard* sh = ShardOf(*Node(it->node), it->group);
      if (sh != nullptr && counted.ok()) {
        auto done = sh->FinishRecount(it->job.generation, *counted);
        // Not saved (a failed write): the shard still needs its recount.
        (done.ok() && *done ? recounts_done_ : recounts_stale_)++;
      }
      it = recounts_.erase(it);
    }
    if (step_ % 10 != 0) return;
    for (auto& n : nodes_) {
      for (uint64_t group : {kGroup, kChild}) {
        kv::Shard* sh = ShardOf(n, group);
        if (sh == nullptr || !sh->NeedsRecount()) continue;
        if (std::any_of(recounts_.begin(), recounts_.end(),
                        [&](const Recount& r) { return r.node == n.id && r.group == group; })) {
          continue;
        }
        std::optional<kv::Shard::RecountJob> job = sh->BeginRecount();
        if (job) recounts_.push_back(Recount{n.id, group, step_ + 1 + rng_() % 40, std::move(*job)});
      }
    }
  }

  // As the metadata's preferred leader of a split's child (the parent's next
  // voter in id order): the halves are led from different nodes, so a
  // parent's leader may hold a lagging child replica.
  void LeadChildElsewhere() {
    SimNode& pl = Leader(kGroup);
    SimNode& cl = Leader(kChild);
    if (!pl.replica || !pl.replica->is_leader() || !cl.child_replica || !cl.child_replica->is_leader()) return;
    if (&pl != &cl) return;
    raft::NodeId to = pl.id % kFounders + 1;
    if (Node(to)->child_replica) cl.child_replica->TransferLeader(Node(to)->child_replica->node_id());
  }

  void ProposeSplit() {
    if (step_ < split_at_) return;
    SimNode& l = Leader();
    if (!l.replica || !l.replica->is_leader() || l.shard->slot_end() <= split_slot_) return;  // split here already
    if (split_proposals_ > 0 && step_ - last_split_proposal_ < kSplitRetrySteps) return;
    const replica::SplitCommand split{kChild, split_slot_};
    if (!l.replica->ProposeSplit(split, NowUs()).ok()) return;
    if (!split_proposed_) events_.push_back("split proposed at " + std::to_string(step_) + " on " + std::to_string(l.id));
    split_proposed_ = true;
    last_split_proposal_ = step_;
    split_proposals_++;
    if (double_split_ && split_proposals_ == 1 && l.replica->ProposeSplit(split, NowUs()).ok()) {
      split_proposals_++;  // the same split again, right behind: a no-op when it applies
    }
  }

  // A follower goes down just before the split and comes back a while after
  // its leader has applied it: it catches up through the log, or through a
  // snapshot when the log was compacted past the split.
  void LagAcrossSplit() {
    if (lag_steps_ == 0) return;
    if (lagger_ == 0 && step_ + 20 == split_at_) {
      SimNode& l = Leader();
      for (auto& n : nodes_) {
        if (!n.up || !n.joined || &n == &l) continue;
        lagger_ = n.id;
        Down(n);
        restart_at_.erase(n.id);  // back only once the split has applied (below)
        events_.push_back("node " + std::to_string(n.id) + " down across the split at " + std::to_string(step_));
        break;
      }
      return;
    }
    if (lagger_ == 0 || lagger_back_) return;
    SimNode& l = Leader();
    if (l.replica && l.replica->is_leader() && l.shard->slot_end() == split_slot_) {
      lagger_back_ = true;
      restart_at_[lagger_] = step_ + lag_steps_;
      events_.push_back("split applied on leader " + std::to_string(l.id) + " at " + std::to_string(step_));
    }
  }

  void EnsureChildren() {
    for (auto& n : nodes_) {
      if (!n.up || !n.joined || n.child_replica) continue;
      bool has_state = false;
      if (!OnNode(n, [&] { has_state = storage::RaftStore::HasState(n.engine.get(), kChild); })) continue;
      if (has_state) {
        OnNode(n, [&] { OpenChild(n); });
        continue;
      }
      if (n.replica && n.shard->slot_end() > split_slot_) continue;  // its parent still holds the slots
      if (splitters_[n.id - 1].Claimed(kChild, split_slot_, storage::kSlotCount)) {
        claim_waits_++;  // an image from before the split is being taken
        continue;
      }
      // Checked apart from the rule: the parent here is past the split entry
      // (through the log or a snapshot), so it gave up the child's slots.
      uint64_t parent_applied = n.replica ? n.replica->state_machine().applied_index() : 0;
      if (split_indexes_.empty() || parent_applied < *split_indexes_.begin()) {
        empty_over_parent_++;
        events_.push_back("node " + std::to_string(n.id) + " created the child empty at parent index " +
                          std::to_string(parent_applied));
      }
      if (!OnNode(n, [&] { OpenChild(n); })) continue;
      children_empty_++;
      child_origin_[n.id] = "empty";
      events_.push_back("node " + std::to_string(n.id) + " created the child empty at " + std::to_string(step_));
    }
  }

  // At most one replica on a node holds a slot.
  void CheckOneOwnerPerSlot() {
    for (auto& n : nodes_) {
      if (!n.replica || !n.child_replica) continue;
      if (n.shard->slot_end() > n.child_shard->slot_begin() && n.child_shard->slot_end() > n.shard->slot_begin()) {
        overlaps_++;
        events_.push_back("node " + std::to_string(n.id) + ": parent " + std::to_string(n.shard->slot_begin()) + "-" +
                          std::to_string(n.shard->slot_end()) + " overlaps child " +
                          std::to_string(n.child_shard->slot_begin()) + "-" +
                          std::to_string(n.child_shard->slot_end()) + " at " + std::to_string(step_));
      }
    }
  }

  bool StageSplit(raft::NodeId id, replica::Replica& parent, const replica::SplitCommand& split,
                  const raft::ConfState& conf, uint64_t index, storage::WriteBatch& batch) {
    SimNode& n = *Node(id);
    auto* kv_sm = dynamic_cast<replica::KvStateMachine*>(&parent.state_machine());
    SHOAL_CHECK(kv_sm != nullptr && kv_sm->shard() == n.shard.get());
    if (split.child != kChild || n.child_replica) return false;  // it exists here already: the parent only shrinks
    if (!replica::StageSplitChild(n.engine.get(), *kv_sm->shard(), split, conf, index, batch, 0,
                                  replica::StoredIncarnation{parent.node_id(), parent.incarnation()})
             .ok()) {
      return false;
    }
    splits_staged_[id]++;
    split_indexes_.insert(index);
    return true;
  }

  void FinishSplit(raft::NodeId id, replica::Replica& parent) {
    SimNode& n = *Node(id);
    OpenChild(n);
    children_split_++;
    child_origin_[n.id] = "split";
    events_.push_back("node " + std::to_string(n.id) + " split at " + std::to_string(step_));
    // The parent's leader elects the child at once.
    if (parent.is_leader()) n.child_replica->Campaign();
  }

  static constexpr uint64_t kSplitRetrySteps = 100;  // as ProposeSplitIfDue's second
  bool splits_ = false;
  uint16_t split_slot_ = storage::kSlotCount / 2;
  uint64_t split_at_ = 0;
  bool double_split_ = false;
  uint64_t lag_steps_ = 0;  // 0: no follower is down across the split
  uint64_t compact_entries_ = 16;  // snapshots happen often
  uint64_t entries_read_back_ = 0, log_read_errors_ = 0;
  std::vector<std::string> keys_;
  bool split_proposed_ = false, lagger_back_ = false;
  uint64_t last_split_proposal_ = 0;
  raft::NodeId lagger_ = 0;
  int split_proposals_ = 0, children_split_ = 0, children_empty_ = 0, empty_over_parent_ = 0, overlaps_ = 0;
  int claim_waits_ = 0;  // a child not created while an image claimed its slots
  int moved_refusals_ = 0;
  std::map<raft::NodeId, int> splits_staged_;
  std::set<uint64_t> split_indexes_;  // where the split applied: one index everywhere
  std::map<raft::NodeId, std::string> child_origin_;
  bool knows_split_[3] = {false, false, false};
  std::vector<Recount> recounts_;
  int recounts_done_ = 0, recounts_stale_ = 0, recounts_failed_ = 0;
  std::set<size_t> refused_ops_;   // refused with TRYAGAIN: they never happened
  std::set<size_t> expiring_ops_;  // writes with an expiry

  std::string PickKey(int c) {
    // A client learns of the split from the metadata now and then, or from a refusal.
    if (split_proposed_ && !knows_split_[c] && rng_() % 40 == 0) knows_split_[c] = true;
    return keys_[rng_() % keys_.size()];
  }

  // One operation in eight goes by a map from before the split (clients
  // that have not refreshed theirs).
  uint64_t RouteOf(int c, const std::string& key) {
    bool stale = rng_() % 8 == 0;
    return knows_split_[c] && !stale && storage::KeySlot(key) >= split_slot_ ? kChild : kGroup;
  }

  void Refused(int c, size_t op) {
    refused_ops_.insert(op);
    knows_split_[c] = true;
    moved_refusals_++;
  }

  // Every key and value of a node's data column family.
  // What a node's store holds, read past its fault layer (the checks' reads
  // must not take the faults meant for the node's own reads).
  static storage::Engine& Store(SimNode& n) { return n.faults != nullptr ? *n.disk : *n.engine; }

  std::map<std::string, std::string> DataOf(SimNode& n, storage::Cf cf = storage::Cf::kData) {
    std::map<std::string, std::string> out;
    auto it = Store(n).NewScanIterator(cf);
    for (it->SeekToFirst(); it->Valid(); it->Next()) out.emplace(it->key(), it->value());
    SHOAL_CHECK(it->status().ok());
    return out;
  }

  // The stored element keys of a collection (past the fault layer).
  std::vector<std::string> ElementsOn(SimNode& n, const std::string& key) {
    const std::string prefix = storage::ElementPrefix(0, key);
    std::vector<std::string> out;
    auto it = Store(n).NewScanIterator(storage::Cf::kData);
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) out.emplace_back(it->key());
    SHOAL_CHECK(it->status().ok());
    return out;
  }

  // A rewritten collection holds exactly the elements of the write it shows
  // (vN: f, gvN and hvN, with a sorted set's score-order entries at N), or
  // nothing: its rewrite's DEL left no element behind.
  void ExpectWholeRewrite(SimNode& n, const std::string& key) {
    const KeyKind kind = KindOf(key);
    if (kind != KeyKind::kRewrittenHash && kind != KeyKind::kRewrittenZset) return;
    const std::string v = ValueOn(n, key);
    std::vector<std::string> want;
    if (!v.empty()) {
      for (const std::string& name : {std::string("f"), "g" + v, "h" + v}) {
        if (kind == KeyKind::kRewrittenHash) {
          want.push_back(storage::ElementKey(0, key, kv::NameOf(kv::ValueType::kHash, name)));
        } else {
          want.push_back(storage::ElementKey(0, key, kv::NameOf(kv::ValueType::kZSet, name)));
          want.push_back(storage::ElementKey(0, key, kv::ScoreName(std::stod(v.substr(1)), name)));
        }
      }
      std::sort(want.begin(), want.end());
      rewrites_seen_++;
    }
    EXPECT_EQ(ElementsOn(n, key), want) << "node " << n.id << " " << key << "=" << v;
  }
  int rewrites_seen_ = 0;  // rewritten collections found whole by ExpectWholeRewrite

  std::string ValueOn(SimNode& n, const std::string& key) {
    std::string raw;
    Status s = Store(n).Get(storage::Cf::kData, ReadKeyOf(key), &raw);
    // The value cache answers what the store holds.
    std::string cached;
    Status c = Store(n).Get(storage::Cf::kData, ReadKeyOf(key), &cached, nullptr, storage::ReadVia::kCache);
    SHOAL_CHECK(c.code() == s.code() && (!s.ok() || cached == raw));
    SHOAL_CHECK(s.ok() || s.code() == Code::kNotFound);
    return s.ok() ? ReadValueOf(key, raw) : "";
  }

  // A client's GET as a connection serves it (through the value cache, and
  // the node's fault layer): false if the read failed (the client is told
  // of the error, and the history has no answer to check).
  bool ClientRead(SimNode& n, size_t op) {
    std::string raw;
    Status s = n.engine->Get(storage::Cf::kData, ReadKeyOf(history_[op].key), &raw, nullptr,
                             storage::ReadVia::kCache);
    if (!s.ok() && s.code() != Code::kNotFound) {
      SHOAL_CHECK(storage_faults_);
      read_errors_++;
      return false;
    }
    history_[op].value = s.ok() ? ReadValueOf(history_[op].key, raw) : "";
    history_[op].response = Now();
    // What the value cache answered is what the store holds.
    SHOAL_CHECK(history_[op].value == ValueOn(n, history_[op].key));
    return true;
  }

  std::mt19937_64 rng_;
  uint64_t seed_;
  uint64_t step_ = 0, clock_ = 0;
  std::vector<SimNode> nodes_;
  std::deque<InFlight> net_;
  bool faults_ = true;
  bool clients_ = true;
  uint64_t leader_term_ = 0;
  uint64_t drop_pct_ = 3;
  // Per mille of messages held back for up to kStaleSteps (a stalled
  // stream: stale responses, among them those of replicas deleted since
  // and added back under the same id).
  uint64_t stale_permille_ = 0;
  bool streamed_ = false;  // snapshots travel through couriers in chunks
  bool slow_images_ = false;  // ... two chunks every 32 steps
  int images_taken_ = 0;         // taken on arrival, before or without their ticket
  int images_taken_former_ = 0;  // ... from a sender that was not the receiver's leader then
  SimCourier couriers_[kMaxNodes];
  SimSplitter splitters_[kMaxNodes];
  std::unique_ptr<node::ImageReceiver> receivers_[kMaxNodes];
  std::vector<Image> images_;
  std::vector<ChunkInFlight> chunks_;
  std::vector<Report> reports_;
  int images_streamed_ = 0;
  int images_resumed_ = 0;  // taken up again after their sender restarted
  int images_recalled_ = 0;
  raft::NodeId partitioned_ = 0;
  uint64_t heal_at_ = 0;
  std::map<raft::NodeId, uint64_t> restart_at_;
  std::vector<Operation> history_;
  bool busy_[3] = {false, false, false};
  uint64_t busy_group_[3] = {kGroup, kGroup, kGroup};
  raft::NodeId busy_node_[3] = {1, 1, 1};  // where its operation went
  // Per client, the node it believes leads kGroup ([0]) and kChild ([1]).
  raft::NodeId believed_leader_[3][2] = {{1, 1}, {2, 2}, {3, 3}};
  int restarts_ = 0, reroutes_ = 0, leader_changes_ = 0, reads_ok_ = 0;
  uint64_t hinted_puts_ = 0;  // by the shards open at ExpectConverged
  struct GoneNote {
    uint64_t at;
    raft::NodeId gone, to;
  };
  std::vector<GoneNote> gone_notes_;
  int gone_campaigns_ = 0;  // replicas told their leader is gone (PeerGone true)
};

bool SimSplitter::StageSplit(replica::Replica& parent, const replica::SplitCommand& split, const raft::ConfState& conf,
                             uint64_t index, storage::WriteBatch& batch) {
  return sim->StageSplit(node, parent, split, conf, index, batch);
}

void SimSplitter::FinishSplit(replica::Replica& parent, const replica::SplitCommand&) { sim->FinishSplit(node, parent); }

// As Cluster::ClaimImage: no image naming slots the node's other replica
// holds or claimed; claimed until the import is written.
bool SimSplitter::ClaimImage(replica::Replica& r, uint16_t begin, uint16_t end) {
  SimNode& n = sim->nodes_[node - 1];
  kv::Shard* other = r.group() == kGroup ? n.child_shard.get() : n.shard.get();
  bool held = other != nullptr && (r.group() == kGroup ? n.child_replica != nullptr : n.replica != nullptr);
  if ((held && other->slot_begin() < end && begin < other->slot_end()) || Claimed(r.group(), begin, end)) return false;
  auto [it, fresh] = claims.try_emplace(r.group(), begin, end);
  if (!fresh) it->second = {std::min(it->second.first, begin), std::max(it->second.second, end)};
  return true;
}

void SimCourier::Ship(uint64_t group, raft::Message msg, replica::ImageWriter write) {
  sim->ShipImage(node, group, std::move(msg), std::move(write));
}

std::string SimCourier::Received(uint64_t group, const replica::SnapshotTicket& t) {
  node::ImageReceiver* r = sim->ReceiverOf(node);
  return r == nullptr ? "" : r->Complete(group, t.from, t.export_id);
}

void SimCourier::Consumed(uint64_t group, const replica::SnapshotTicket& t) {
  if (node::ImageReceiver* r = sim->ReceiverOf(node)) r->Discard(group, t.from, t.export_id);
}

void SimCourier::Discard(uint64_t group) {
  if (node::ImageReceiver* r = sim->ReceiverOf(node)) r->Discard(group);
}

void SimCourier::Recall(uint64_t group, const std::vector<raft::NodeId>& keep) {
  sim->RecallImages(node, group, keep);
}

void SimCourier::Adopt(uint64_t group, raft::NodeId to, raft::Term term) {
  for (auto& im : sim->images_) {
    if (im.from == node && im.group == group && im.msg.to == to && !im.parked) im.msg.term = std::max(im.msg.term, term);
  }
}

std::optional<raft::Index> SimCourier::Carrying(uint64_t group, raft::NodeId to) {
  for (const auto& im : sim->images_) {
    if (im.from == node && im.group == group && im.msg.to == to && !im.parked) return im.msg.snapshot.meta.index;
  }
  return std::nullopt;
}

// The seeds a test runs, [first, last]: its own `count` seeds from `first`,
// or, for a soak, SHOAL_REPLICA_SIM_SEEDS of them from first +
// SHOAL_REPLICA_SIM_SHIFT (keep the shift a multiple of 8: some tests vary
// their faults by seed % 2, 4 or 8). The tests' "it really happened" floors
// are sums over their seeds, so a soak asks for at least the default count.
struct SeedRange {
  uint64_t first = 0;
  uint64_t last = 0;
};
SeedRange Seeds(uint64_t first, uint64_t count) {
  if (const char* n = std::getenv("SHOAL_REPLICA_SIM_SEEDS")) count = std::max<uint64_t>(count, std::strtoull(n, nullptr, 10));
  if (const char* shift = std::getenv("SHOAL_REPLICA_SIM_SHIFT")) first += std::strtoull(shift, nullptr, 10);
  return {first, first + count - 1};
}

// "seed N events: ...", for a failure's trace.
std::string SeedTrace(const ReplicaSim& sim, uint64_t seed) {
  std::string events;
  for (const auto& e : sim.events_) events += e + "; ";
  return "seed " + std::to_string(seed) + " events: " + events;
}

TEST(ReplicaSim, SeedsAreLinearizableAndConverge) {
  int total_restarts = 0, total_reroutes = 0, total_changes = 0, acked = 0, streamed = 0, gone = 0, taken = 0, former = 0,
      resumed = 0;
  uint64_t snapshots_seen = 0, read_back = 0, hinted = 0;
  const auto [first_seed, last_seed] = Seeds(1, 12);
  for (uint64_t seed = first_seed; seed <= last_seed; ++seed) {
    ReplicaSim sim(seed);
    sim.streamed_ = seed % 2 == 0;  // half the seeds stream their snapshots in chunks
    sim.slow_images_ = seed % 4 == 0;
    sim.Start();
    sim.Run(3000);
    sim.Settle();
    sim.ExpectConverged(seed);
    hinted += sim.hinted_puts_;
    for (auto& n : sim.nodes_) {
      if (n.joined && n.replica->store().first_index() > 2) snapshots_seen++;
    }
    acked += sim.ExpectLinearizable(sim.Leader());
    read_back += sim.EntriesReadBack();
    total_restarts += sim.restarts_;
    total_reroutes += sim.reroutes_;
    total_changes += sim.leader_changes_;
    streamed += sim.images_streamed_;
    taken += sim.images_taken_;
    former += sim.images_taken_former_;
    resumed += sim.images_resumed_;
    gone += sim.gone_campaigns_;
  }
  EXPECT_GT(streamed, 0);  // snapshots went through the courier too
  EXPECT_GT(taken, 0);     // ... and were taken as they arrived
  EXPECT_GT(gone, 5);      // followers told their leader's process ended, at once
  // The faults really happened: restarts, leader changes clients had to follow, compaction.
  EXPECT_GT(total_restarts, 5);
  EXPECT_GT(total_changes, 5);
  EXPECT_GT(total_reroutes, 5);
  EXPECT_GT(acked, 500);
  EXPECT_GT(snapshots_seen, 0u);
  EXPECT_GT(read_back, 100u);  // laggers were sent entries no longer held in memory
  EXPECT_GT(hinted, 100u);     // blind writes applied on write hints (and the replicas still agree)
  std::printf("replica sim: %llu log entries read back from the engine, %llu writes applied on hints\n",
              static_cast<unsigned long long>(read_back), static_cast<unsigned long long>(hinted));
  std::printf("replica sim: %d acknowledged writes, %d restarts, %d leader changes, %d reroutes, %d snapshots streamed "
              "(%d taken on arrival, %d from a former leader, %d taken up again after their sender restarted), %d "
              "followers told their leader was gone\n",
              acked, total_restarts, total_changes, total_reroutes, streamed, taken, former, resumed, gone);
}

// Reads served the way connections serve them (docs/design/raft.md,
// "Reads in shoal's replicas"): from the leader's lease without a message, and from followers
// (READONLY) after a ReadIndex through the leader, the read itself running
// a little later and refused if a snapshot import overlapped it. Meanwhile
// processes stop and resume (what queued up, messages and clients, runs
// before their next tick; the missed ones are not fired), workers apply late (followers apply and serve an
// entry before its leader has applied it), nodes restart and partitions
// come and go. Every read must be linearizable.
TEST(ReplicaSim, LeaseAndFollowerReadsStayLinearizableThroughStalls) {
  int pauses = 0, bursts = 0, deferred = 0, lease = 0, leader = 0, follower = 0, refused = 0, changes = 0,
      queued = 0, lapsed = 0;
  size_t batched = 0;
  const auto [first_seed, last_seed] = Seeds(301, 24);
  for (uint64_t seed = first_seed; seed <= last_seed; ++seed) {
    ReplicaSim sim(seed);
    sim.streamed_ = seed % 2 == 0;
    sim.reads_ = true;
    sim.stalls_ = true;
    sim.Start();
    sim.Run(3000);
    sim.Settle();
    sim.ExpectConverged(seed);
    auto result = check_linearizable(sim.History());
    EXPECT_TRUE(result.ok) << "seed " << seed << ": " << result.key << "\n" << result.explain;
    pauses += sim.pauses_;
    bursts += sim.bursts_;
    deferred += sim.deferred_rounds_;
    lease += sim.lease_reads_;
    leader += sim.leader_reads_;
    follower += sim.follower_reads_;
    refused += sim.import_refusals_;
    changes += sim.leader_changes_;
    queued += sim.queued_lease_reads_;
    lapsed += sim.lapsed_leases_;
    batched += sim.batched_reads_;
  }
  // What the test is about really happened.
  EXPECT_GT(queued, 300);
  EXPECT_GT(batched, 50u);
  EXPECT_GT(pauses, 20);
  EXPECT_GT(bursts, 20);
  EXPECT_GT(deferred, 1000);
  EXPECT_GT(lease, 300);
  EXPECT_GT(follower, 300);
  EXPECT_GT(leader, 20);
  EXPECT_GT(changes, 10);
  std::printf("read sim: %d lease reads (%d more queued, %d of them after their lease lapsed), %d leader and %d "
              "follower ReadIndex reads, %zu served in batches, %d refused (import), %d pauses, %d resumed, %d late "
              "applies, %d leader changes\n",
              lease, queued, lapsed, leader, follower, batched, refused, pauses, bursts, deferred, changes);
}

// Failing disks on leaders and followers alike: a write or an fsync fails
// once (the node stops itself: shoal::FailStop), and crashes lose what was
// not synced (the disk keeps a prefix of it), while links are cut one way
// and the read test's stalls, late applies and READONLY reads go on. No
// acknowledged write is lost, every read is linearizable, the replicas
// converge.
TEST(ReplicaSim, StorageFaultsLoseNoAcknowledgedWrite) {
  int stops = 0, disk_faults = 0, losing = 0, oneway = 0, lease = 0, follower = 0, acked = 0, changes = 0,
      transfers = 0, unsynced = 0, reported = 0, joined = 0, joined_refused = 0, read_faults = 0, read_errors = 0;
  size_t lost = 0, raft_lost = 0;
  uint64_t read_back = 0, gets_failed = 0, iterators_failed = 0, log_read_errors = 0;
  std::map<std::string, int> stop_reasons;
  const auto [first_seed, last_seed] = Seeds(401, 16);
  for (uint64_t seed = first_seed; seed <= last_seed; ++seed) {
    ReplicaSim sim(seed);
    sim.streamed_ = seed % 2 == 0;
    sim.reads_ = true;
    sim.stalls_ = true;
    sim.storage_faults_ = true;
    sim.Start();
    sim.Run(3000);
    sim.Settle();
    SCOPED_TRACE(SeedTrace(sim, seed));
    sim.ExpectConverged(seed);
    acked += sim.ExpectLinearizable(sim.Leader());
    stops += sim.fail_stops_;
    disk_faults += sim.disk_faults_;
    losing += sim.crashes_losing_;
    lost += sim.writes_lost_;
    raft_lost += sim.raft_writes_lost_;
    oneway += sim.oneway_cuts_;
    transfers += sim.transfers_;
    lease += sim.lease_reads_;
    follower += sim.follower_reads_;
    changes += sim.leader_changes_;
    read_back += sim.EntriesReadBack();
    unsynced += sim.unsynced_finishes_;
    reported += sim.syncs_reported_;
    joined += sim.joined_rounds_;
    joined_refused += sim.joined_refusals_;
    read_faults += sim.read_faults_;
    read_errors += sim.read_errors_;
    const auto [gets, iterators] = sim.FailedReads();
    gets_failed += gets;
    iterators_failed += iterators;
    log_read_errors += sim.LogReadErrors();
    for (const auto& [why, count] : sim.stop_reasons_) stop_reasons[why.starts_with("reading the Raft state") ? "reading a replica's Raft state failed" : why] += count;
  }
  EXPECT_GT(read_faults, 50);  // batched reads failed: write hints' lookups, pipelined GETs
  EXPECT_GT(gets_failed, 50u);  // single reads failed: applies' reads, hints' lookups, GETs
  EXPECT_GT(iterators_failed, 20u);  // scans failed: the Raft log read back, images, openings
  EXPECT_GT(log_read_errors, 5u);  // the log read back for a follower failed: a snapshot instead
  EXPECT_GT(stop_reasons["apply failed"], 20);  // an apply's read failed: the node stopped, then applied again
  std::printf("storage sim: %llu single reads and %llu iterators failed on purpose; %llu reads of the log back "
              "failed\n", static_cast<unsigned long long>(gets_failed),
              static_cast<unsigned long long>(iterators_failed), static_cast<unsigned long long>(log_read_errors));
  std::string reasons;
  for (const auto& [why, count] : stop_reasons) reasons += " " + why + " " + std::to_string(count) + ";";
  std::printf("storage sim: nodes stopped:%s\n", reasons.c_str());
  std::printf("storage sim: %d batched reads failed on purpose, %d client reads answered with their error\n",
              read_faults, read_errors);
  EXPECT_GT(joined, 100);       // clients' writes proposed together in one entry
  EXPECT_GT(joined_refused, 5);  // ... and queued writes refused when their round came
  std::printf("storage sim: %d rounds joined two clients' writes or more into one entry, %d queued writes refused\n",
              joined, joined_refused);
  EXPECT_GT(read_back, 100u);  // entries sent from the engine's copy, between faults
  EXPECT_GT(unsynced, 1000);   // leaders' rounds finished before their sync ...
  EXPECT_GT(reported, 500);    // ... and told of it later
  EXPECT_GT(stops, 20);
  EXPECT_GT(losing, 10);
  EXPECT_GT(lost, 50u);
  EXPECT_GT(raft_lost, 10u);  // crashes between a round's log write and its sync
  EXPECT_GT(oneway, 10);
  EXPECT_GT(transfers, 50);
  EXPECT_GT(lease, 100);
  EXPECT_GT(follower, 100);
  EXPECT_GT(acked, 500);
  std::printf("storage sim: %d disk faults injected, %d nodes stopped by them, %d crashes lost %zu unsynced writes "
              "(%zu of the log or hard state), %d one-way cuts, %d leadership transfers, %d lease and %d follower "
              "reads, %d acknowledged writes, %d leader changes, %llu log entries read back from the engine, %d "
              "leader rounds finished before their sync (%d told of it later)\n",
              disk_faults, stops, losing, lost, raft_lost, oneway, transfers, lease, follower, acked, changes,
              static_cast<unsigned long long>(read_back), unsynced, reported);
}

}  // namespace
}  // namespace shoal::sim

namespace shoal::sim {
namespace {

// After Settle(): one leader; its Raft members are the incarnations the
// placement names, three voters on live nodes, each holding the leader's
// data; every other live node holds nothing; the history is linearizable.
void ExpectSettledAsPlaced(ReplicaSim& sim, int* acked) {
  SimNode& l = sim.Leader();
  if (!(l.replica && l.replica->is_leader())) sim.Dump();  // no leader: print what the group is left with
  ASSERT_TRUE(l.replica && l.replica->is_leader());
  raft::ConfState cs = l.replica->raft().tracker().conf_state();
  EXPECT_TRUE(cs.voters_outgoing.empty());
  // Raft's members are the incarnations the placement names.
  const cluster::Membership members = sim.WantedMembers();
  EXPECT_EQ(cs.voters, members.voters);
  EXPECT_EQ(cs.learners, members.learners);
  EXPECT_EQ(cs.voters.size(), 3u);
  EXPECT_EQ(sim.early_retire_, 0);
  uint64_t applied = l.replica->state_machine().applied_index();
  for (auto& n : sim.nodes_) {
    bool member = std::count(cs.voters.begin(), cs.voters.end(), sim.Member(n.id)) +
                  std::count(cs.learners.begin(), cs.learners.end(), sim.Member(n.id)) > 0;
    if (member) {
      EXPECT_TRUE(n.up && !n.lost && !n.removed && !n.draining) << "node " << n.id;
      ASSERT_TRUE(n.replica) << "node " << n.id;
      EXPECT_EQ(n.replica->node_id(), sim.Member(n.id)) << "node " << n.id;
      EXPECT_EQ(n.replica->state_machine().applied_index(), applied) << "node " << n.id;
      EXPECT_TRUE(sim.DataOf(n) == sim.DataOf(l)) << "node " << n.id << " holds other data than its leader";
      for (int k = 0; k < 3; ++k) {
        std::string key = "k" + std::to_string(k);
        EXPECT_EQ(sim.ValueOn(n, key), sim.ValueOn(l, key)) << "node " << n.id << " " << key;
      }
    } else if (n.up) {
      EXPECT_FALSE(n.replica) << "node " << n.id << " kept a replica it no longer has";
      for (int k = 0; k < 3; ++k) EXPECT_EQ(sim.ValueOn(n, "k" + std::to_string(k)), "") << "node " << n.id;
    }
  }
  *acked += sim.ExpectLinearizable(l);
}

// The placement driver and the leaders' membership steps under the same
// faults, while nodes join, a voter dies for good and a node drains: no
// acknowledged write is lost, the history stays linearizable, and the group
// ends on three voters on live nodes, every member holding the same data and
// every removed replica's data deleted.
void PlacementMovesLoseNothing(bool storage_faults) {
  int moves = 0, retired = 0, acked = 0, streamed = 0, recalled = 0, stops = 0, taken = 0, former = 0, resumed = 0;
  int placed_again = 0, kept_members = 0, old_retired = 0;
  uint64_t deferred_images = 0;
  size_t raft_lost = 0;
  const auto [first_seed, last_seed] = Seeds(101, 8);
  for (uint64_t seed = first_seed; seed <= last_seed; ++seed) {
    ReplicaSim sim(seed);
    sim.storage_faults_ = storage_faults;
    sim.streamed_ = seed % 4 != 3;
    sim.slow_images_ = seed % 4 == 1;
    sim.placement_ = true;
    sim.stale_permille_ = 10;
    sim.join_at_[0] = 200 + seed * 37 % 600;
    sim.join_at_[1] = sim.join_at_[0] + 300 + seed * 53 % 600;
    if (seed % 2 == 0) sim.loss_at_ = 1800 + seed * 71 % 600;
    if (seed % 4 != 1) sim.drain_at_ = 2600 + seed * 13 % 400;
    if (seed % 2 == 1) sim.outage_at_ = 1200 + seed * 29 % 500;
    // After an outage, as soon as the node is back (it may still hold the
    // replica the placement replaced).
    sim.move_back_at_ = seed % 2 == 1 ? sim.outage_at_ + kDownAfterSteps + 300 : 1500 + seed * 41 % 1500;
    sim.Start();
    sim.Run(4000);
    sim.Settle();
    SCOPED_TRACE(SeedTrace(sim, seed));
    ExpectSettledAsPlaced(sim, &acked);
    moves += sim.moves_;
    retired += sim.retired_;
    stops += sim.fail_stops_;
    raft_lost += sim.raft_writes_lost_;
    streamed += sim.images_streamed_;
    recalled += sim.images_recalled_;
    taken += sim.images_taken_;
    former += sim.images_taken_former_;
    resumed += sim.images_resumed_;
    placed_again += sim.placed_again_;
    deferred_images += sim.images_deferred_;
    kept_members += sim.kept_members_;
    old_retired += sim.old_incarnations_retired_;
  }
  EXPECT_GT(streamed, 4);  // new members got their data in chunks
  EXPECT_GT(taken, 4);     // ... and took it as it arrived
  // Transfers abandoned because their receivers left are counted, not
  // required: since a former leader goes on sending, most transfers end
  // before a membership change could recall them (SnapshotStreams.
  // RecalledTransfersStop tests the recall itself).
  EXPECT_GT(moves, 8);
  EXPECT_GE(placed_again, 2);  // replicas placed on a node the group had left: new Raft members
  EXPECT_GT(old_retired, 0);   // ... some while the node still held the old one
  // Fewer with storage faults: a node removed while it is down never comes
  // back to retire its replica.
  EXPECT_GT(retired, storage_faults ? 2 : 4);
  EXPECT_GT(acked, 300);
  if (storage_faults) {
    EXPECT_GT(stops, 8);
    EXPECT_GT(raft_lost, 0u);
  }
  std::printf("placement sim%s: %d membership moves, %d replicas retired, %d snapshots streamed (%d recalled, %d "
              "taken on arrival, %d from a former leader, %d taken up again after a restart), %d acknowledged "
              "writes, %d nodes stopped by a failed disk, %zu log writes lost in crashes, %d placements on a node "
              "the group had left (a new incarnation; %d older ones still there deleted first), %d placed again as "
              "the member the group still had, %llu images asked for while applies were unwritten (refused)\n",
              storage_faults ? " (storage faults)" : "", moves, retired, streamed, recalled, taken, former, resumed,
              acked, stops, raft_lost, placed_again, old_retired, kept_members,
              static_cast<unsigned long long>(deferred_images));
}

TEST(ReplicaSim, PlacementMovesUnderFaultsLoseNothing) { PlacementMovesLoseNothing(false); }

// The same, on disks that fail writes and fsyncs and lose unsynced writes
// in crashes, with links cut one way: membership changes and snapshot
// transfers go on through them.
TEST(ReplicaSim, PlacementMovesUnderStorageFaultsLoseNothing) { PlacementMovesLoseNothing(true); }

// A group that starts on one node, as a one-node cluster with durability
// none runs it: its leader commits its entries as it logs them
// (commit_lone_appends) and answers writes from the round that logged them.
// Two nodes join and the placement grows the group to three voters (a
// learner, then a joint change), under the faults of the runs above:
// crashes here keep what was written, as a process crash does (none's
// contract). No acknowledged write is lost, no follower learns of a commit
// its leader has not stored, and every member ends with the same data.
TEST(ReplicaSim, ALoneGroupThatCommitsAsItLogsGrowsWithoutLoss) {
  int acked = 0, lone = 0, moves = 0;
  uint64_t unlogged = 0;
  const auto [first_seed, last_seed] = Seeds(501, 6);
  for (uint64_t seed = first_seed; seed <= last_seed; ++seed) {
    ReplicaSim sim(seed);
    sim.founders_ = 1;
    sim.lone_appends_ = true;
    sim.join_nodes_[0] = 2;
    sim.join_nodes_[1] = 3;
    sim.streamed_ = seed % 2 == 0;
    sim.placement_ = true;
    sim.join_at_[0] = 300 + seed * 37 % 600;
    sim.join_at_[1] = sim.join_at_[0] + 200 + seed * 53 % 600;
    if (seed % 2 == 1) sim.outage_at_ = 400 + seed * 29 % 1500;
    sim.Start();
    sim.Run(3000);
    sim.Settle();
    SCOPED_TRACE(SeedTrace(sim, seed));
    ExpectSettledAsPlaced(sim, &acked);
    lone += sim.lone_acks_;
    moves += sim.moves_;
    unlogged += sim.unlogged_;
  }
  EXPECT_GT(lone, 100);  // the lone path answered writes
  EXPECT_GT(unlogged, 100u);  // ... most of them never logged (RaftStore::FinishDeferred)
  EXPECT_GT(moves, 6);   // ... and the groups grew
  EXPECT_GT(acked, lone + 100);
  std::printf("lone sim: %d acknowledged writes, %d of them by a group of one member, %d membership moves, %llu "
              "entries applied in the write that would have logged them\n",
              acked, lone, moves, static_cast<unsigned long long>(unlogged));
}

}  // namespace
}  // namespace shoal::sim

namespace shoal::sim {
namespace {

// The keys' expected counters on a shard holding [begin, end): keys written,
// and those whose last write set an expiry.
std::pair<int64_t, int64_t> ExpectedCounts(ReplicaSim& sim, SimNode& owner_of_values, uint16_t begin, uint16_t end) {
  int64_t keys = 0, expires = 0;
  for (const auto& key : sim.keys_) {
    uint16_t slot = storage::KeySlot(key);
    std::string v = sim.ValueOn(owner_of_values, key);
    if (slot < begin || slot >= end || v.empty()) continue;
    keys++;
    expires += sim.expiring_ops_.contains(std::stoull(v.substr(1)));
  }
  return {keys, expires};
}

// kGroup splits in two while clients write keys on both sides of the split
// slot, nodes restart, the network loses and partitions, and (some seeds) a
// follower is down across the split: it gets its child from its own split
// entry (log kept) or creates it empty after a snapshot taken past the split
// (log compacted). Writes proposed to the parent for moved slots are refused
// and retried on the child. Some seeds propose the split twice.
// `lone`: one node, whose groups have one member each; with durability
// none unless `lone_fsync`.
void SplitsLoseNothing(bool storage_faults, bool lone = false, bool lone_fsync = false) {
  int recounts = 0, stale_recounts = 0, stops = 0;
  size_t raft_lost = 0;
  int proposals = 0, acked = 0, refusals = 0, by_split = 0, empty = 0, lag_log = 0, lag_snapshot = 0, restarts = 0;
  int claim_waits = 0, joint = 0, lone_acks = 0, unsynced = 0, rewrites = 0;
  std::map<std::string, int> stop_reasons;
  uint64_t unlogged = 0;
  const auto [first_seed, last_seed] = Seeds(lone ? (lone_fsync ? 801 : storage_faults ? 701 : 601) : 201, 8);
  for (uint64_t seed = first_seed; seed <= last_seed; ++seed) {
    ReplicaSim sim(seed);
    sim.storage_faults_ = storage_faults;
    if (lone) {  // one node: both halves are groups of one
      sim.founders_ = 1;
      sim.lone_appends_ = !lone_fsync;
    }
    sim.splits_ = true;
    sim.streamed_ = seed / 2 % 2 == 0;
    sim.compact_entries_ = seed % 2 == 1 ? 16 : 1 << 20;  // odd seeds: laggers need snapshots
    sim.double_split_ = seed % 3 != 0;
    sim.lag_steps_ = seed % 4 != 0 ? 150 + seed * 37 % 200 : 0;
    sim.split_at_ = 600 + seed * 89 % 700;
    // Six keys of distinct slots; the split slot is the fourth's (a key on
    // the boundary), so three keys stay and three move.
    std::map<uint16_t, std::string> by_slot;
    for (int i = 0; by_slot.size() < 6; ++i) {
      std::string key = "s" + std::to_string(seed) + "k" + std::to_string(i);
      by_slot.emplace(storage::KeySlot(key), key);
    }
    for (const auto& [slot, key] : by_slot) sim.keys_.push_back(key);
    sim.split_slot_ = std::next(by_slot.begin(), 3)->first;
    sim.Start();
    sim.Run(3000);
    sim.Settle();
    std::string events;
    for (const auto& e : sim.events_) events += e + "; ";
    SCOPED_TRACE("seed " + std::to_string(seed) + " split slot " + std::to_string(sim.split_slot_) + " events: " + events);

    SimNode& pl = sim.Leader(kGroup);
    SimNode& cl = sim.Leader(kChild);
    ASSERT_TRUE(pl.replica && pl.replica->is_leader());
    ASSERT_TRUE(cl.child_replica && cl.child_replica->is_leader());
    auto owner = [&](const std::string& key) -> SimNode& {
      return storage::KeySlot(key) < sim.split_slot_ ? pl : cl;
    };
    // Every node holds both groups, split at one place, with the same state.
    auto check_nodes = [&](const char* when) {
      for (int i = 0; i < sim.founders_; ++i) {
        SimNode& n = sim.nodes_[static_cast<size_t>(i)];
        SCOPED_TRACE(std::string(when) + " node " + std::to_string(n.id));
        ASSERT_TRUE(n.replica && n.child_replica);
        EXPECT_EQ(n.shard->slot_begin(), 0);
        EXPECT_EQ(n.shard->slot_end(), sim.split_slot_);
        EXPECT_EQ(n.child_shard->slot_begin(), sim.split_slot_);
        EXPECT_EQ(n.child_shard->slot_end(), storage::kSlotCount);
        EXPECT_EQ(n.replica->state_machine().applied_index(), pl.replica->state_machine().applied_index());
        EXPECT_EQ(n.child_replica->state_machine().applied_index(), cl.child_replica->state_machine().applied_index());
        for (const auto& key : sim.keys_) {
          EXPECT_EQ(sim.ValueOn(n, key), sim.ValueOn(owner(key), key)) << key;
          sim.ExpectWholeRewrite(n, key);
        }
        auto [pk, pe] = ExpectedCounts(sim, pl, 0, sim.split_slot_);
        auto [ck, ce] = ExpectedCounts(sim, cl, sim.split_slot_, storage::kSlotCount);
        EXPECT_FALSE(n.shard->NeedsRecount() || n.child_shard->NeedsRecount());
        EXPECT_EQ(n.shard->KeyCount(0), pk);
        EXPECT_EQ(n.shard->ExpiresCount(0), pe);
        EXPECT_EQ(n.child_shard->KeyCount(0), ck);
        EXPECT_EQ(n.child_shard->ExpiresCount(0), ce);
        EXPECT_LE(sim.splits_staged_[n.id], 1);  // a repeated split entry changes nothing
      }
    };
    check_nodes("settled");
    EXPECT_EQ(sim.split_indexes_.size(), 1u);
    EXPECT_EQ(sim.overlaps_, 0);
    EXPECT_EQ(sim.empty_over_parent_, 0);

    // Final reads (after every acknowledged write) join the history; refused
    // operations never happened.
    for (const auto& key : sim.keys_) {
      uint64_t t = sim.Now();
      sim.history_.push_back(Operation{sim.history_.size(), false, key, sim.ValueOn(owner(key), key), t, sim.Now()});
    }
    std::vector<Operation> history;
    for (const auto& op : sim.history_) {
      if (!sim.refused_ops_.contains(op.id)) history.push_back(op);
    }
    auto result = check_linearizable(history);
    EXPECT_TRUE(result.ok) << result.key << "\n" << result.explain;
    // No acknowledged write is lost: each key ends with its last acknowledged
    // write's value, or with a write that did not finish before it began.
    for (const auto& key : sim.keys_) {
      const Operation* last = nullptr;
      for (const auto& op : history) {
        if (op.is_write && op.key == key && op.response != kNeverReturned && (!last || op.response > last->response)) last = &op;
      }
      if (last == nullptr) continue;
      std::string v = sim.ValueOn(owner(key), key);
      ASSERT_FALSE(v.empty()) << key;
      const Operation& w = sim.history_[std::stoull(v.substr(1))];
      EXPECT_TRUE(w.is_write && w.key == key && !sim.refused_ops_.contains(w.id)) << key << "=" << v;
      EXPECT_TRUE(w.id == last->id || w.response > last->invoke) << key << " holds " << v << ", acked " << last->value;
    }
    for (const auto& op : history) acked += op.is_write && op.response != kNeverReturned;

    // Restarted, every node reads the same ranges and counters from its store.
    for (auto& n : sim.nodes_) {
      if (!n.up) continue;
      sim.Down(n);
      sim.Up(n, false);
    }
    // An entry that changed nothing (a write that found nothing to do) does
    // not move the applied index on disk: the restarted replica applies it
    // again from its log, to the same effect (once the groups, all restarted,
    // have elected leaders again).
    sim.Run(400);
    check_nodes("restarted");

    if (sim.lagger_ != 0) {
      const std::string& origin = sim.child_origin_[sim.lagger_];
      lag_log += origin == "split";
      lag_snapshot += origin == "empty";
    }
    recounts += sim.recounts_done_;
    stale_recounts += sim.recounts_stale_;
    proposals += sim.split_proposals_;
    refusals += sim.moved_refusals_;
    by_split += sim.children_split_;
    empty += sim.children_empty_;
    claim_waits += sim.claim_waits_;
    joint += sim.joint_rounds_;
    lone_acks += sim.lone_acks_;
    unlogged += sim.unlogged_;
    restarts += sim.restarts_;
    stops += sim.fail_stops_;
    raft_lost += sim.raft_writes_lost_;
    unsynced += sim.unsynced_finishes_;
    rewrites += sim.rewrites_seen_;
    for (const auto& [why, count] : sim.stop_reasons_) stop_reasons[why] += count;
  }
  std::string reasons;
  for (const auto& [why, count] : stop_reasons) reasons += " " + why + " " + std::to_string(count) + ";";
  if (storage_faults) std::printf("split sim: nodes stopped:%s\n", reasons.c_str());
  EXPECT_GT(rewrites, 0);  // collections rewritten whole (MULTI DEL HSET/ZADD EXEC) were checked
  if (storage_faults) {
    // One node writes less than three: 6-13 stops over four ranges of
    // eight seeds when alone, which a threshold of 8 made a coin toss.
    EXPECT_GT(stops, lone ? 4 : 8);
    if (!lone || lone_fsync) {
      EXPECT_GT(raft_lost, 0u);  // (none: a crash keeps what was written)
    }
  }
  EXPECT_GT(refusals, 0);  // writes and reads reached the parent after the split
  if (lone) {
    EXPECT_GT(lone_acks, 300);  // answered by a group of one member
    if (lone_fsync) {
      EXPECT_GT(unsynced, 300);  // rounds finished before their sync (Replica::FinishUnsynced)
      std::printf("split sim (one node, fsync): %d rounds finished before their sync\n", unsynced);
    } else {
      EXPECT_GT(unlogged, 300u);  // ... most in the round that logged them, never logged (RaftStore::FinishDeferred)
    }
  } else {
    EXPECT_GT(lag_log, 0);       // a follower down across the split split through its log
    EXPECT_GT(lag_snapshot, 0);  // ... and one came back to a log compacted past it
    EXPECT_GT(empty, 0);
  }
  EXPECT_GT(restarts, 5);
  EXPECT_GT(acked, 300);
  EXPECT_GT(joint, 100);  // both groups applied in one storage write
  std::printf("split sim%s: %d rounds applying both groups in one write, %llu splits, %d split proposals, %d children "
              "by the split entry, %d created empty for a snapshot, %d laggers through the log, %d through a snapshot, "
              "%d operations refused (TRYAGAIN), %d restarts (%d stopped by a failed disk; %zu log writes lost in "
              "crashes), %d acknowledged writes (%d by a group of one member), %d key recounts (%d stale), %d child "
              "creations held back by an image's claim, %llu entries applied in the write that would have logged "
              "them, %d rewritten collections checked whole\n",
              storage_faults ? (lone_fsync ? " (one node, fsync, storage faults)"
                                : lone     ? " (one node, durability none, storage faults)"
                                           : " (storage faults)")
              : lone         ? " (one node, durability none)"
                             : "",
              joint,
              static_cast<unsigned long long>(last_seed - first_seed + 1), proposals, by_split, empty, lag_log,
              lag_snapshot, refusals, restarts, stops, raft_lost, acked, lone_acks, recounts, stale_recounts,
              claim_waits, static_cast<unsigned long long>(unlogged), rewrites);
}

TEST(ReplicaSim, SplitsUnderFaultsLoseNothing) { SplitsLoseNothing(false); }

// The same on failing disks: a split entry's write, a child's creation or a
// recount's save that fails stops the node or is done again, never half.
TEST(ReplicaSim, SplitsUnderStorageFaultsLoseNothing) { SplitsLoseNothing(true); }

// One node with durability none: the parent and its child are groups of one
// that commit entries as they log them (commit_lone_appends), through the
// split, restarts and a double split entry.
TEST(ReplicaSim, SplitsOfGroupsOfOneLoseNothing) { SplitsLoseNothing(false, /*lone=*/true); }

// The same on failing disks: a failed write stops the node (a crash that
// keeps what was written, durability none's contract), between a round
// that left its entries unlogged and the next, or with its log written and
// its applies still to come.
TEST(ReplicaSim, SplitsOfGroupsOfOneUnderStorageFaultsLoseNothing) {
  SplitsLoseNothing(true, /*lone=*/true);
}

// One node with fsync: its groups of one count their own entries committed
// only once synced, while their next rounds go on (Replica::FinishUnsynced);
// crashes lose what was not synced.
TEST(ReplicaSim, SplitsOfGroupsOfOneWithFsyncUnderStorageFaultsLoseNothing) {
  SplitsLoseNothing(true, /*lone=*/true, /*lone_fsync=*/true);
}

}  // namespace
}  // namespace shoal::sim

// Server: one shoal node serving clients. Owns the storage engine, the
// shards (state machines), the worker runtime, the acceptors and the WAL
// syncer. Start() and Stop() are called from the main thread only.
#pragma once

#include <array>
#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <asio/ip/tcp.hpp>

#include "cluster/cluster.h"
#include "kv/shard.h"
#include "node/groups.h"
#include "node/runtime.h"
#include "node/snapshot_streams.h"
#include "node/stream.h"
#include "node/transport.h"
#include "server/acl.h"
#include "server/blocking.h"
#include "server/command_table.h"
#include "server/config.h"
#include "storage/engine.h"

namespace shoal::server {

class Connection;
class Forwarder;

// A counter that every command bumps: one cache line per worker, so two
// workers never contend for it (one shared line cost a pipelined GET about
// 1 % of its time in the line's transfers); Total() sums the lines (INFO).
class PerWorkerCounter {
 public:
  void Add(int worker, uint64_t n) {
    slots_[static_cast<size_t>(worker) % kSlots].v.fetch_add(n, std::memory_order_relaxed);
  }
  uint64_t Total() const {
    uint64_t sum = 0;
    for (const Slot& s : slots_) sum += s.v.load(std::memory_order_relaxed);
    return sum;
  }
  void Reset() {
    for (Slot& s : slots_) s.v.store(0, std::memory_order_relaxed);
  }

 private:
  static constexpr size_t kSlots = 64;  // workers beyond share lines, still exact
  struct alignas(64) Slot {
    std::atomic<uint64_t> v{0};
  };
  std::array<Slot, kSlots> slots_;
};

// Counters for INFO stats; incremented on workers with relaxed atomics.
struct Stats {
  std::atomic<uint64_t> connections_received{0};
  std::atomic<uint64_t> connections_rejected{0};
  PerWorkerCounter commands_processed;
  std::atomic<uint64_t> expired_keys{0};
  PerWorkerCounter net_input_bytes;
  PerWorkerCounter net_output_bytes;
  std::atomic<int64_t> connected_clients{0};
  std::atomic<int64_t> client_buffer_bytes{0};
  void Reset() {
    connections_received = 0;
    connections_rejected = 0;
    commands_processed.Reset();
    expired_keys = 0;
    net_input_bytes.Reset();
    net_output_bytes.Reset();
  }
};

// Per-worker state, touched only on that worker's thread.
struct WorkerState {
  std::vector<Connection*> connections;
};

class Server {
 public:
  explicit Server(Config config);
  ~Server();

  // Opens storage, starts workers and listens. Returns an error if any step fails.
  Status Start();
  // Stops accepting, closes connections, syncs and closes storage. Idempotent.
  void Stop();

  // The port actually bound (useful with port 0).
  int port() const { return bound_port_; }

  // --- for connections and commands
  // The settings in force. CONFIG SET publishes a new copy (SetConfig); a
  // published copy is never changed or freed, so a reference taken on any
  // worker stays valid and consistent (settings change rarely: each copy is
  // kept for the server's lifetime).
  const Config& config() const { return current_.load(std::memory_order_acquire)->config; }
  void SetConfig(Config next);
  // CONFIG SET: changes a copy of the settings in force with `change`, and
  // publishes it unless `change` refuses; one at a time (no lost update).
  Status UpdateConfig(const std::function<Status(Config&)>& change);
  storage::Engine& engine() { return *engine_; }
  node::Runtime& runtime() { return *runtime_; }
  node::WalSyncer& syncer() { return *syncer_; }
  Stats& stats() { return stats_; }
  const CommandTable& commands() const { return commands_; }
  WorkerState& worker_state(int worker) { return worker_states_[static_cast<size_t>(worker)]; }
  cluster::Cluster& cluster() { return *cluster_; }
  node::Groups& groups() { return *groups_; }
  node::Transport& transport() { return *transport_; }
  node::SnapshotStreams& snapshots() { return *snapshots_; }
  Forwarder& forwarder() { return *forwarder_; }
  BlockingKeys& blocking() { return blocking_; }
  // The ACL users in force (the meta shard's, and requirepass's default).
  acl::Users& users() { return users_; }
  // The shards this node leads (cluster-aware views) or holds (plain views).
  std::vector<kv::Shard*> LedShards() const;
  std::vector<kv::Shard*> LocalShards() const { return cluster_->LocalShards(); }
  // What the key metadata caches of this node's shards hold together.
  const kv::KeyMetaBudget& meta_budget() const { return *meta_budget_; }
  // Limits for preparing writes (from the settings in force).
  const kv::Limits& limits() const { return current_.load(std::memory_order_acquire)->limits; }
  uint64_t NextClientId() { return next_client_id_.fetch_add(1) + 1; }
  // TLS: the context of the tls-port and of links between nodes (null
  // without TLS), whether clients must show a certificate, and a client's
  // failed handshake (logged at most once a second).
  const std::shared_ptr<node::TlsContext>& tls() const { return tls_; }
  node::Verify tls_verify_clients() const;
  void NoteTlsRefusal(const std::string& addr, const std::string& why);
  // The port announced to clients and peers (the tls-port with tls-cluster).
  int announced_port() const { return config().tls_cluster ? bound_tls_port_ : bound_port_; }
  int64_t start_time_ms() const { return start_time_ms_; }
  std::string run_id() const { return run_id_; }

 private:
  Status Listen();
  // One acceptor per worker on `port` (SO_REUSEPORT); returns the port bound.
  Result<int> ListenOn(int port, std::shared_ptr<node::TlsContext> tls);
  // Publishes `next` as the settings in force (settings_mu_ held).
  void PublishLocked(Config next);
  void StartActiveExpiry(int worker);

  struct Settings {
    Config config;
    kv::Limits limits;
  };
  std::mutex settings_mu_;  // one SetConfig at a time
  std::deque<Settings> settings_;  // every published version (stable addresses)
  std::atomic<const Settings*> current_{nullptr};
  // What the state machines' apply is given: it depends on no node setting
  // (a write's limits travel in its entry), only on the database count.
  kv::Limits apply_limits_;
  std::shared_ptr<kv::KeyMetaBudget> meta_budget_;
  Stats stats_;
  BlockingKeys blocking_;  // outlives the shards that tell it of writes
  CommandTable commands_;
  acl::Users users_;
  std::unique_ptr<storage::Engine> engine_;
  std::vector<WorkerState> worker_states_;
  std::atomic<uint64_t> next_client_id_{0};
  int bound_port_ = 0;
  int bound_tls_port_ = 0;
  std::shared_ptr<node::TlsContext> tls_;
  std::atomic<int64_t> tls_refusal_logged_ms_{0};
  int64_t start_time_ms_ = 0;
  std::string run_id_;
  bool stopped_ = false;
  // Set first thing in Stop(): no lease reads from then on (ReplicaOptions::stopping).
  std::atomic<bool> stopping_{false};
  // Declared last: destroyed first, while what connections use still lives.
  std::unique_ptr<node::Runtime> runtime_;
  std::unique_ptr<node::WalSyncer> syncer_;
  std::unique_ptr<node::Transport> transport_;
  std::unique_ptr<node::Groups> groups_;
  std::unique_ptr<node::SnapshotStreams> snapshots_;
  std::unique_ptr<cluster::Cluster> cluster_;
  std::unique_ptr<Forwarder> forwarder_;
  std::vector<std::unique_ptr<asio::ip::tcp::acceptor>> acceptors_;
};

}  // namespace shoal::server

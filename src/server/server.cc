#include "server/server.h"

#include <asio/experimental/as_tuple.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/post.hpp>
#include <asio/write.hpp>

#include <netdb.h>
#include <sched.h>
#include <sys/socket.h>

#include <filesystem>
#include <random>
#include <set>
#include <thread>

#include <spdlog/spdlog.h>

#include "common/clock.h"
#include "kv/shard.h"
#include "server/connection.h"
#include "server/forwarder.h"
#include "storage/slot.h"

namespace shoal::server {
namespace {

// Active expiry does at most this much per cycle, so it never stalls a worker.
constexpr size_t kExpireBatchKeys = 128;
constexpr int kExpireBatchesPerCycle = 8;
constexpr int64_t kExpireCycleBudgetUs = 2000;

// The cores this process may run on (taskset, a container's cpuset); all
// online cores if that is unknown.
int UsableCores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

// Workers by default: one per usable core but one. The node's other threads
// (RocksDB's flushes and compactions, the WAL syncer, the peer transport,
// snapshot transfers) and the kernel's network processing need a core of
// their own: on 2 cores, one worker served every single-node test with less
// CPU per request than two, and SET -P 1 with 1.4x the throughput
// (docs/PERFORMANCE.md, 2026-12-05, "one worker fewer than cores").
int DefaultWorkers() { return std::max(1, UsableCores() - 1); }

std::string RandomRunId() {
  std::random_device rd;
  std::string id;
  const char* hex = "0123456789abcdef";
  for (int i = 0; i < 40; ++i) id.push_back(hex[rd() % 16]);
  return id;
}

asio::awaitable<void> AcceptLoop(Server& server, node::Worker& worker, asio::ip::tcp::acceptor& acceptor,
                                 std::shared_ptr<node::TlsContext> tls) {
  Stats& stats = server.stats();
  asio::steady_timer backoff(worker.io());
  for (;;) {
    auto [ec, socket] = co_await acceptor.async_accept(asio::experimental::as_tuple(asio::use_awaitable));
    if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
    if (ec) {
      // Out of descriptors or similar: log, back off briefly, keep serving.
      spdlog::warn("accept failed: {}", ec.message());
      backoff.expires_after(std::chrono::milliseconds(10));
      co_await backoff.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
      continue;
    }
    stats.connections_received.fetch_add(1, std::memory_order_relaxed);
    if (stats.connected_clients.load(std::memory_order_relaxed) >= server.config().maxclients) {
      stats.connections_rejected.fetch_add(1, std::memory_order_relaxed);
      static const std::string kFull = "-ERR max number of clients reached\r\n";
      asio::error_code wec;
      if (!tls) asio::write(socket, asio::buffer(kFull), wec);  // (a TLS client cannot read it yet)
      continue;
    }
    auto conn = std::make_shared<Connection>(server, worker, std::move(socket), tls);
    asio::co_spawn(worker.io(), conn->Run(), asio::detached);
  }
}

}  // namespace

Server::Server(Config config) {
  apply_limits_.databases = config.databases;
  SetConfig(std::move(config));
}

void Server::SetConfig(Config next) {
  std::lock_guard lock(settings_mu_);
  PublishLocked(std::move(next));
}

Status Server::UpdateConfig(const std::function<Status(Config&)>& change) {
  std::lock_guard lock(settings_mu_);
  Config next = current_.load(std::memory_order_acquire)->config;
  Status s = change(next);
  if (s.ok()) PublishLocked(std::move(next));
  return s;
}

void Server::PublishLocked(Config next) {
  kv::Limits limits{next.proto_max_bulk_len, next.databases};
  settings_.push_back(Settings{std::move(next), limits});
  current_.store(&settings_.back(), std::memory_order_release);
}

Server::~Server() { Stop(); }

std::vector<kv::Shard*> Server::LedShards() const {
  std::vector<kv::Shard*> out;
  for (kv::Shard* s : cluster_->LocalShards()) {
    replica::Replica* r = groups_->Find(s->id());
    if (r != nullptr && r->published_is_leader()) out.push_back(s);
  }
  return out;
}

namespace {

// --join's host may be a name (`db1.example:6379`): resolved here, once (a
// node joins once), to the address the join and its cluster check dial. A
// name that does not resolve stops the start with a clear error.
Result<std::string> ResolveJoin(const std::string& join) {
  if (join.empty()) return join;
  const size_t colon = join.rfind(':');
  std::string host = join.substr(0, colon);
  const std::string port = join.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  asio::error_code ec;
  (void)asio::ip::make_address(host, ec);
  if (!ec) return host + ":" + port;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const int rc = ::getaddrinfo(host.c_str(), nullptr, &hints, &found);
  if (rc != 0 || found == nullptr) {
    return Status::InvalidArgument("join: cannot resolve '" + host + "': " + ::gai_strerror(rc));
  }
  std::string address;
  for (const addrinfo* a = found; a != nullptr; a = a->ai_next) {  // IPv4 first, as --bind defaults to it
    char text[NI_MAXHOST];
    if (::getnameinfo(a->ai_addr, a->ai_addrlen, text, sizeof(text), nullptr, 0, NI_NUMERICHOST) != 0) continue;
    if (address.empty() || a->ai_family == AF_INET) address = text;
    if (a->ai_family == AF_INET) break;
  }
  ::freeaddrinfo(found);
  if (address.empty()) return Status::InvalidArgument("join: '" + host + "' has no usable address");
  if (address != host) spdlog::info("--join {} resolves to {}", host, address);
  return address + ":" + port;
}

}  // namespace

Status Server::Start() {
  start_time_ms_ = RealClock().NowUnixMs();
  run_id_ = RandomRunId();
  std::error_code fs_ec;
  std::filesystem::create_directories(config().dir, fs_ec);
  if (fs_ec) return Status::IOError("cannot create dir " + config().dir + ": " + fs_ec.message());
  auto engine = storage::Engine::Open({.dir = config().dir,
                                       .memory_budget_bytes = config().maxmemory,
                                       .zero_ahead_wal = config().wal_zero_ahead,
                                       .note = [](const std::string& line) { spdlog::info("opening storage: {}", line); }});
  if (!engine.ok()) return engine.status();
  engine_ = std::move(engine).value();
  int workers = config().workers > 0 ? config().workers : DefaultWorkers();
  worker_states_.resize(static_cast<size_t>(workers));
  runtime_ = std::make_unique<node::Runtime>(workers);
  syncer_ = std::make_unique<node::WalSyncer>(engine_.get(), runtime_.get());
  forwarder_ = std::make_unique<Forwarder>(*this, workers);
  users_.SetRequirepass(config().requirepass, commands_);
  Status st = Listen();
  if (!st.ok()) return st;
  // Raft traffic: messages go to their group's worker, leadership gossip to the cluster.
  node::TransportOptions to;
  to.bind_host = config().bind;
  to.peer_port = static_cast<uint16_t>(config().effective_peer_port());
  to.secret = config().cluster_secret;
  if (config().tls_cluster) to.tls = tls_;
  // With one worker, peers' frames are read on it: it steps their messages
  // without waking another thread. With more, a frame carries messages for
  // every worker's groups, and a worker that reads it would hold them all up
  // whenever it is busy: the transport thread reads.
  if (runtime_->size() == 1) to.readers.push_back(&runtime_->worker(0).io());
  transport_ = std::make_unique<node::Transport>(
      to,
      [this](std::vector<node::GroupMessage> msgs) {
        // Meta messages of another unsafe recovery are dropped, and data
        // groups' messages from a node that cannot read the cluster's formats.
        const cluster::Cluster::FormatCheck formats = cluster_->DataPeerFormats();
        std::erase_if(msgs, [this, &formats](const node::GroupMessage& gm) {
          return gm.group == 0 ? !cluster_->MetaPeerInLineage(gm.msg.from) : !formats.Allows(gm.msg.from);
        });
        groups_->DeliverAll(std::move(msgs));
      },
      [this](raft::NodeId from, std::vector<node::LeaderReport> l) {
        cluster_->OnLeaders(from, std::move(l));
      });
  transport_->set_transfers_handler(
      [this](raft::NodeId from, node::NodeStats t) { cluster_->OnTransfers(from, t); });
  // A peer whose process ended: the groups it led elect new leaders at once.
  transport_->set_gone_handler([this](raft::NodeId node) { groups_->PeerGone(node); });
  node::GroupsOptions go;
  go.fsync = config().durability == Durability::kFsync;
  go.tick_ms = config().tick_ms;
  groups_ = std::make_unique<node::Groups>(runtime_.get(), engine_.get(), syncer_.get(), transport_.get(), go);
  // Snapshots of data shards travel in chunks beside the Raft messages; the
  // outcome of each goes back to its group's worker, and so does each image
  // that arrives whole.
  node::SnapshotStreamsOptions so;
  so.dir = config().dir + "/snapshots/streams";
  so.rate_bytes_per_s = static_cast<uint64_t>(config().snapshot_rate_mb) << 20;
  // An image is checked (each file's CRC32C against its sender's, its keys
  // inside its slots) as its last chunk arrives, on the streams' thread:
  // reading a shard's files through on a worker stalled every group there.
  so.check_image = [](const std::string& dir) { return kv::Shard::CheckImageFiles(dir); };
  snapshots_ = std::make_unique<node::SnapshotStreams>(
      transport_.get(), so, [this](uint64_t group, raft::NodeId to, bool failed) {
        asio::post(groups_->WorkerFor(group).io(), [this, group, to, failed] {
          if (replica::Replica* r = groups_->Find(group)) {
            r->ReportSnapshot(to, failed);
            groups_->Notify(r);
          }
        });
      },
      [this](uint64_t group, const replica::SnapshotTicket& ticket) {
        asio::post(groups_->WorkerFor(group).io(), [this, group, ticket] {
          if (replica::Replica* r = groups_->Find(group)) {
            r->ImageArrived(ticket);
            groups_->Notify(r);
          }
        });
      });
  transport_->set_chunk_handler(
      [this](raft::NodeId from, node::SnapshotChunk c) { snapshots_->OnChunk(from, std::move(c)); });
  cluster::ClusterOptions co;
  co.host = config().bind;
  co.port = static_cast<uint16_t>(announced_port());
  if (config().tls_cluster) co.tls = tls_;
  auto join = ResolveJoin(config().join);
  if (!join.ok()) return join.status();
  co.join = *join;
  co.secret = config().cluster_secret;
  co.shards = config().shards;
  co.replication_factor = config().replicas;
  co.down_after_ms = config().down_after_ms;
  co.split_bytes = static_cast<uint64_t>(config().split_size_mb) << 20;
  co.split_ops_per_sec = static_cast<uint64_t>(config().split_ops);
  co.courier = snapshots_.get();
  co.stopping = &stopping_;
  co.local_transfers = [this] {
    node::SnapshotStreams::Stats s = snapshots_->stats();
    return node::NodeStats{s.sending, s.bytes_sent, s.bytes_received, 0, cluster::BuildFeatures(), {}, {}};
  };
  // The key metadata caches get 1/128 of the budget (about 76 bytes an entry
  // with 20-byte keys: 110k entries for 1 GiB), shared by the node's shards:
  // the shards that are written take it.
  meta_budget_ = std::make_shared<kv::KeyMetaBudget>(static_cast<size_t>(config().maxmemory / 128));
  co.meta_budget = meta_budget_;
  co.limits = &apply_limits_;
  co.key_watcher = &blocking_;
  co.on_meta = [this](const proto::MetaState& m) { users_.Rebuild(&m, commands_); };
  // The Raft log gets 1/32 of the budget over all shards before it is
  // compacted (it lives in the engine: memtable, then disk), and a sixteenth
  // of that stays in memory besides.
  co.log_bytes_per_replica =
      static_cast<uint64_t>(std::max<int64_t>(256 << 10, config().maxmemory / 32 / std::max(1, config().shards)));
  co.log_cache_bytes_per_replica = std::max<uint64_t>(64 << 10, co.log_bytes_per_replica / 16);
  // The peer port must be bound before the cluster records this node's address.
  // The formats this build reads go with the first gossip: a peer that heard
  // none would take this node for one that cannot read the cluster's.
  transport_->SetLocalTransfers(node::NodeStats{.features = cluster::BuildFeatures(), .removed = {}, .leaderless = {}});
  st = transport_->Start();
  if (!st.ok()) return st;
  co.peer_port = transport_->port();
  cluster_ = std::make_unique<cluster::Cluster>(co, engine_.get(), runtime_.get(), groups_.get(), transport_.get());
  st = cluster_->Open();
  if (!st.ok()) return st.WithContext("cluster");
  transport_->set_node_id(cluster_->node_id());
  syncer_->Start();
  runtime_->Start();
  // Before the groups run: transfers an earlier run left are taken up (or
  // recalled) before any replica ships or recalls anew.
  snapshots_->Start();
  groups_->Start();
  cluster_->Start();
  for (int w = 0; w < workers; ++w) StartActiveExpiry(w);
  spdlog::info("shoal {} node {} listening on {}:{}{} (peers {}{}) with {} worker{}, dir {}, durability {}",
               SHOAL_VERSION, cluster::NodeName(cluster_->node_id()).substr(0, 16), config().bind,
               config().plain_port_off() ? std::string("(no plain-text port)") : std::to_string(bound_port_),
               bound_tls_port_ != 0 ? " and TLS " + std::to_string(bound_tls_port_) : std::string(),
               transport_->port(), config().tls_cluster ? ", TLS" : "", workers, workers == 1 ? "" : "s", config().dir,
               DurabilityName(config().durability));
  return Status::Ok();
}

Status Server::Listen() {
  if (config().tls_enabled()) {
    auto tls = node::MakeTlsContext({.cert_file = config().tls_cert_file,
                                     .key_file = config().tls_key_file,
                                     .ca_cert_file = config().tls_ca_cert_file,
                                     .ca_cert_dir = config().tls_ca_cert_dir});
    if (!tls.ok()) return tls.status();
    tls_ = std::move(tls).value();
  }
  if (!config().plain_port_off()) {
    auto plain = ListenOn(config().port, nullptr);
    if (!plain.ok()) return plain.status();
    bound_port_ = *plain;
  }
  if (config().tls_port != 0) {
    auto tls_port = ListenOn(config().tls_port, tls_);
    if (!tls_port.ok()) return tls_port.status();
    bound_tls_port_ = *tls_port;
  }
  return Status::Ok();
}

node::Verify Server::tls_verify_clients() const {
  const std::string& v = config().tls_auth_clients;
  // With tls-cluster, nodes join through the tls-port and must be able to
  // show their certificate there, whatever clients are asked for.
  if (v == "no") return config().tls_cluster ? node::Verify::kOptional : node::Verify::kNone;
  return v == "optional" ? node::Verify::kOptional : node::Verify::kRequire;
}

void Server::NoteTlsRefusal(const std::string& addr, const std::string& why) {
  const int64_t now = RealClock().NowMonoUs() / 1000;
  int64_t last = tls_refusal_logged_ms_.load(std::memory_order_relaxed);
  if (now - last < 1000 || !tls_refusal_logged_ms_.compare_exchange_strong(last, now)) return;
  spdlog::warn("TLS client {} refused: {} (a plain-text client on the TLS port, or a certificate that does "
               "not verify)", addr, why);
}

Result<int> Server::ListenOn(int port, std::shared_ptr<node::TlsContext> tls) {
  asio::error_code ec;
  auto address = asio::ip::make_address(config().bind, ec);
  if (ec) return Status::InvalidArgument("bad bind address '" + config().bind + "'");
  const size_t first = acceptors_.size();
  for (int i = 0; i < runtime_->size(); ++i) {
    auto acceptor = std::make_unique<asio::ip::tcp::acceptor>(runtime_->worker(i).io());
    asio::ip::tcp::endpoint ep(address, static_cast<uint16_t>(port));
    acceptor->open(ep.protocol(), ec);
    if (!ec) acceptor->set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) {
      // Every worker accepts on the same port; the kernel spreads connections.
      int one = 1;
      if (setsockopt(acceptor->native_handle(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) {
        return Status::IOError("SO_REUSEPORT failed");
      }
      acceptor->bind(ep, ec);
    }
    if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      return Status::IOError("cannot listen on " + config().bind + ":" + std::to_string(port) + ": " +
                             ec.message());
    }
    port = acceptor->local_endpoint().port();
    acceptors_.push_back(std::move(acceptor));
  }
  for (int i = 0; i < runtime_->size(); ++i) {
    asio::co_spawn(runtime_->worker(i).io(),
                   AcceptLoop(*this, runtime_->worker(i), *acceptors_[first + static_cast<size_t>(i)], tls),
                   asio::detached);
  }
  return port;
}

void Server::StartActiveExpiry(int w) {
  // Each worker expires keys of the shards it leads: due keys are proposed
  // as kOpExpireKey entries, one batch per shard in flight at a time.
  auto loop = [](Server* server, int w) -> asio::awaitable<void> {
    node::Worker& worker = server->runtime().worker(w);
    asio::steady_timer timer(worker.io());
    auto inflight = std::make_shared<std::set<uint64_t>>();
    for (;;) {
      timer.expires_after(std::chrono::milliseconds(1000 / server->config().hz));
      auto [ec] = co_await timer.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
      if (ec) co_return;
      int64_t now = RealClock().NowUnixMs();
      for (kv::Shard* shard : server->cluster().LocalShards()) {
        if (server->groups().WorkerOf(shard->id()) != w || inflight->contains(shard->id())) continue;
        replica::Replica* r = server->groups().Find(shard->id());
        if (r == nullptr || !r->is_leader()) continue;
        auto due = shard->DueExpiries(now, kExpireBatchKeys * kExpireBatchesPerCycle);
        if (due.empty()) continue;
        std::vector<kv::Entry> entries;
        for (const auto& d : due) {
          entries.push_back(kv::Entry{kv::kOpExpireKey, d.db, now, {d.key, std::to_string(d.expire_at_ms)}});
        }
        uint64_t id = shard->id();
        size_t n = entries.size();
        auto p = r->Propose(replica::EncodeKvBatch(entries, 2),
                            [server, inflight, id, n](bool applied, std::string reply) {
                              inflight->erase(id);
                              if (!applied) return;
                              (void)reply;
                              server->stats().expired_keys.fetch_add(n, std::memory_order_relaxed);
                            },
                            node::MonoUs());
        if (p.ok()) {
          inflight->insert(id);
          server->groups().Notify(r);
        }
      }
    }
  };
  asio::co_spawn(runtime_->worker(w).io(), loop(this, w), asio::detached);
}

void Server::Stop() {
  if (stopped_ || !runtime_) return;
  stopped_ = true;
  stopping_.store(true, std::memory_order_release);
  spdlog::info("shutting down");
  if (snapshots_) snapshots_->Stop();
  if (transport_) transport_->Stop();
  if (cluster_) cluster_->Stop();
  runtime_->Stop();
  acceptors_.clear();
  syncer_->Stop();
  if (engine_) {
    auto synced = engine_->Sync();
    if (!synced.ok()) spdlog::error("final sync failed: {}", synced.status().ToString());
  }
}

}  // namespace shoal::server

#include "server/server.h"

#include <asio/experimental/as_tuple.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/write.hpp>

#include <filesystem>
#include <random>
#include <thread>

#include <spdlog/spdlog.h>

#include "common/clock.h"
#include "server/connection.h"
#include "storage/slot.h"

namespace shoal::server {
namespace {

// Active expiry does at most this much per cycle, so it never stalls a worker.
constexpr size_t kExpireBatchKeys = 128;
constexpr int kExpireBatchesPerCycle = 8;
constexpr int64_t kExpireCycleBudgetUs = 2000;

std::string RandomRunId() {
  std::random_device rd;
  std::string id;
  const char* hex = "0123456789abcdef";
  for (int i = 0; i < 40; ++i) id.push_back(hex[rd() % 16]);
  return id;
}

asio::awaitable<void> AcceptLoop(Server& server, node::Worker& worker,
                                 asio::ip::tcp::acceptor& acceptor) {
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
      asio::write(socket, asio::buffer(kFull), wec);
      continue;
    }
    auto conn = std::make_shared<Connection>(server, worker, std::move(socket));
    asio::co_spawn(worker.io(), conn->Run(), asio::detached);
  }
}

}  // namespace

Server::Server(Config config) : config_(std::move(config)) { RefreshLimits(); }

Server::~Server() { Stop(); }

kv::Shard& Server::ShardForSlot(uint16_t slot) {
  for (kv::Shard* s : shard_ptrs_) {
    if (slot >= s->slot_begin() && slot < s->slot_end()) return *s;
  }
  SHOAL_CHECK(false && "slot not covered by any shard");
  __builtin_unreachable();
}

Status Server::Start() {
  start_time_ms_ = RealClock().NowUnixMs();
  run_id_ = RandomRunId();
  std::error_code fs_ec;
  std::filesystem::create_directories(config_.dir, fs_ec);
  if (fs_ec) return Status::IOError("cannot create dir " + config_.dir + ": " + fs_ec.message());
  auto engine = storage::Engine::Open({.dir = config_.dir, .memory_budget_bytes = config_.maxmemory});
  if (!engine.ok()) return engine.status();
  engine_ = std::move(engine).value();
  // A single node holds one shard covering every slot; the cluster layer
  // will split the slot space into many shards, each a Raft group.
  // The key metadata cache gets about 1/64 of the budget (~120 bytes an
  // entry): 131k keys for the default 1gb, enough for a hot working set.
  size_t meta_cache_entries = static_cast<size_t>(config_.maxmemory / 8192);
  shards_.push_back(std::make_unique<kv::Shard>(engine_.get(), 0, 0, storage::kSlotCount,
                                                meta_cache_entries));
  for (auto& s : shards_) {
    Status st = s->Load();
    if (!st.ok()) return st.WithContext("loading shard");
    shard_ptrs_.push_back(s.get());
  }
  int workers = config_.workers > 0 ? config_.workers
                                    : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  worker_states_.resize(static_cast<size_t>(workers));
  runtime_ = std::make_unique<node::Runtime>(workers);
  syncer_ = std::make_unique<node::WalSyncer>(engine_.get(), runtime_.get());
  Status st = Listen();
  if (!st.ok()) return st;
  syncer_->Start();
  runtime_->Start();
  for (kv::Shard* s : shard_ptrs_) StartActiveExpiry(s);
  spdlog::info("shoal {} listening on {}:{} with {} workers, dir {}, durability {}", SHOAL_VERSION,
               config_.bind, bound_port_, workers, config_.dir, DurabilityName(config_.durability));
  return Status::Ok();
}

Status Server::Listen() {
  asio::error_code ec;
  auto address = asio::ip::make_address(config_.bind, ec);
  if (ec) return Status::InvalidArgument("bad bind address '" + config_.bind + "'");
  int port = config_.port;
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
      return Status::IOError("cannot listen on " + config_.bind + ":" + std::to_string(port) + ": " +
                             ec.message());
    }
    port = acceptor->local_endpoint().port();
    acceptors_.push_back(std::move(acceptor));
  }
  bound_port_ = port;
  for (int i = 0; i < runtime_->size(); ++i) {
    asio::co_spawn(runtime_->worker(i).io(),
                   AcceptLoop(*this, runtime_->worker(i), *acceptors_[static_cast<size_t>(i)]),
                   asio::detached);
  }
  return Status::Ok();
}

void Server::StartActiveExpiry(kv::Shard* shard) {
  node::Worker& worker = runtime_->worker(OwnerWorker(*shard));
  auto loop = [](Server* server, kv::Shard* shard, node::Worker* worker) -> asio::awaitable<void> {
    asio::steady_timer timer(worker->io());
    kv::ApplyFn apply = kv::FindApply(kv::kOpExpireKey);
    for (;;) {
      timer.expires_after(std::chrono::milliseconds(1000 / server->config().hz));
      auto [ec] = co_await timer.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
      if (ec) co_return;
      int64_t start_us = RealClock().NowMonoUs();
      for (int round = 0; round < kExpireBatchesPerCycle; ++round) {
        int64_t now = RealClock().NowUnixMs();
        auto due = shard->DueExpiries(now, kExpireBatchKeys);
        for (const auto& d : due) {
          kv::Entry e{kv::kOpExpireKey, d.db, now, {d.key, std::to_string(d.expire_at_ms)}};
          int64_t before = shard->KeyCount(d.db);
          std::string ignored;
          resp::Writer w(&ignored);
          (void)shard->Apply(e, apply, server->limits(), &w);
          if (shard->KeyCount(d.db) < before) {
            server->stats().expired_keys.fetch_add(1, std::memory_order_relaxed);
          }
        }
        if (due.size() < kExpireBatchKeys) break;
        if (RealClock().NowMonoUs() - start_us > kExpireCycleBudgetUs) break;
      }
    }
  };
  asio::co_spawn(worker.io(), loop(this, shard, &worker), asio::detached);
}

void Server::Stop() {
  if (stopped_ || !runtime_) return;
  stopped_ = true;
  spdlog::info("shutting down");
  runtime_->Stop();
  acceptors_.clear();
  syncer_->Stop();
  if (engine_) {
    auto synced = engine_->Sync();
    if (!synced.ok()) spdlog::error("final sync failed: {}", synced.status().ToString());
  }
}

}  // namespace shoal::server

#include "node/runtime.h"

#include <pthread.h>

#include <cstdlib>

#include <asio/redirect_error.hpp>
#include <string>

#include <spdlog/spdlog.h>

namespace shoal::node {

asio::awaitable<void> Worker::WaitDurable(storage::Engine& engine, uint64_t seq,
                                          std::function<void()> kick) {
  asio::steady_timer timer(io_, asio::steady_timer::time_point::max());
  // Bounded: each round either sees progress or waits for the next sync.
  while (engine.durable_seq() < seq) {
    durable_waiters_.push_back(&timer);
    // Before the kick: the syncer, woken by it, sees that this worker waits.
    durable_wanted_.store(true, std::memory_order_release);
    kick();
    asio::error_code ec;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    std::erase(durable_waiters_, &timer);
    if (io_.stopped()) co_return;
  }
}

void Worker::NotifyDurable() {
  auto waiters = std::move(durable_waiters_);
  durable_waiters_.clear();
  for (auto* t : waiters) t->cancel();
}

Runtime::Runtime(int workers) {
  for (int i = 0; i < workers; ++i) workers_.push_back(std::make_unique<Worker>(i));
}

Runtime::~Runtime() { Stop(); }

void Runtime::Start() {
  started_ = true;
  for (auto& w : workers_) {
    Worker* worker = w.get();
    worker->thread_ = std::thread([worker] {
      std::string name = "shoal-w" + std::to_string(worker->index());
      pthread_setname_np(pthread_self(), name.c_str());
      worker->io_.run();
    });
  }
}

void Runtime::Stop() {
  for (auto& w : workers_) {
    w->guard_.reset();
    w->io_.stop();
  }
  for (auto& w : workers_) {
    if (w->thread_.joinable()) w->thread_.join();
  }
}

WalSyncer::WalSyncer(storage::Engine* engine, Runtime* runtime) : engine_(engine), runtime_(runtime) {}

WalSyncer::~WalSyncer() { Stop(); }

void WalSyncer::Start() {
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "shoal-walsync");
    Loop();
  });
}

void WalSyncer::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
}

void WalSyncer::Kick(uint64_t seq) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (wanted_ || (syncing_ && syncing_upto_ >= seq)) return;
    wanted_ = true;
  }
  cv_.notify_one();
}

void WalSyncer::Loop() {
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return wanted_ || stop_; });
      if (stop_) return;
      wanted_ = false;
      // Engine::Sync covers at least what was written before it starts.
      syncing_ = true;
      syncing_upto_ = engine_->write_seq();
    }
    if (engine_->durable_seq() >= engine_->write_seq()) {
      // Nothing new; still wake waiters, who re-check their sequence.
    } else {
      auto r = engine_->Sync();
      if (!r.ok()) {
        // Nothing waiting may be acknowledged, and after a failed fsync the
        // kernel may have dropped the dirty pages: a retry that succeeds
        // proves nothing. Stop (as etcd does); at restart the log is
        // replayed from what really is on disk.
        spdlog::critical("WAL sync failed: {}; stopping this node", r.status().ToString());
        spdlog::default_logger()->flush();
        FailStop("WAL sync failed");
      }
      syncs_.fetch_add(1, std::memory_order_relaxed);
    }
    {
      // Before the workers are told: a Kick(seq) from here on asks again,
      // and a worker that asked before is told below.
      std::lock_guard<std::mutex> lock(mu_);
      syncing_ = false;
    }
    for (int i = 0; i < runtime_->size(); ++i) {
      Worker& w = runtime_->worker(i);
      if (w.TakeDurableWanted()) asio::post(w.io(), [&w] { w.NotifyDurable(); });
    }
  }
}

}  // namespace shoal::node

// The node runtime: worker threads, each owning one io_context (thread per
// core, shared nothing), a way to run work on another worker and await its
// result, and the WAL syncer that group-commits writes with one fsync.
#pragma once

#include <asio/awaitable.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

#include "storage/engine.h"

namespace shoal::node {

// One worker thread and its event loop. Everything a worker owns is touched
// only on its thread; other threads reach it by posting to io().
class Worker {
 public:
  explicit Worker(int index) : index_(index), guard_(io_.get_executor()) {}
  int index() const { return index_; }
  asio::io_context& io() { return io_; }

  // Suspends the calling coroutine (running on this worker) until the
  // engine's durable sequence reaches `seq`.
  asio::awaitable<void> WaitDurable(storage::Engine& engine, uint64_t seq,
                                    std::function<void()> kick);
  // Called on this worker's thread when the durable sequence advanced.
  void NotifyDurable();
  // Whether a coroutine of this worker waits for the durable sequence (any
  // thread; the WAL syncer wakes only the workers that wait).
  bool TakeDurableWanted() { return durable_wanted_.exchange(false, std::memory_order_acq_rel); }

 private:
  friend class Runtime;
  int index_;
  asio::io_context io_{1};
  asio::executor_work_guard<asio::io_context::executor_type> guard_;
  std::thread thread_;
  std::vector<asio::steady_timer*> durable_waiters_;
  // Set before a waiter kicks the syncer, taken by the syncer after a sync.
  std::atomic<bool> durable_wanted_{false};
};

class Runtime {
 public:
  explicit Runtime(int workers);
  ~Runtime();
  int size() const { return static_cast<int>(workers_.size()); }
  Worker& worker(int i) { return *workers_[static_cast<size_t>(i)]; }
  // Starts one thread per worker. `name` prefixes thread names.
  void Start();
  // Stops every event loop and joins the threads. Idempotent.
  void Stop();

 private:
  std::vector<std::unique_ptr<Worker>> workers_;
  bool started_ = false;
};

// Runs fn() on `target` and resumes the awaiting coroutine on `home` with
// the result. fn must not throw. Not itself a coroutine, and callers should
// pass a named fn (std::move'd): g++ 12 mishandles lambda temporaries that
// own memory inside co_await expressions.
template <typename Fn>
auto RunOn(asio::io_context& target, asio::io_context& home, Fn fn) {
  using R = std::invoke_result_t<Fn>;
  return asio::async_initiate<const asio::use_awaitable_t<>&, void(R)>(
      [&target, &home](auto handler, Fn f) {
        asio::post(target, [handler = std::move(handler), f = std::move(f), &home]() mutable {
          R r = f();
          asio::post(home, [handler = std::move(handler), r = std::move(r)]() mutable {
            std::move(handler)(std::move(r));
          });
        });
      },
      asio::use_awaitable, std::move(fn));
}

// Runs fn(done) on `target`; fn (or whatever it hands `done` to) calls
// done(result) exactly once, on `target`'s thread, and the awaiting
// coroutine resumes on `home` with the result.
template <typename R, typename Fn>
auto RunOnAsync(asio::io_context& target, asio::io_context& home, Fn fn) {
  return asio::async_initiate<const asio::use_awaitable_t<>&, void(R)>(
      [&target, &home](auto handler, Fn f) {
        asio::post(target, [handler = std::move(handler), f = std::move(f), &home]() mutable {
          auto shared = std::make_shared<decltype(handler)>(std::move(handler));
          f(std::function<void(R)>([shared, &home](R r) {
            asio::post(home, [shared, r = std::move(r)]() mutable { std::move(*shared)(std::move(r)); });
          }));
        });
      },
      asio::use_awaitable, std::move(fn));
}

// A thread that fsyncs the WAL whenever writes are pending and someone waits
// for them, then tells every worker. Many writes share one fsync.
class WalSyncer {
 public:
  WalSyncer(storage::Engine* engine, Runtime* runtime);
  ~WalSyncer();
  void Start();
  void Stop();
  // Asks for a sync that covers storage sequence `seq`: none more if the
  // one under way does (those waiting are told when it ends). Any thread;
  // cheap.
  void Kick(uint64_t seq);
  uint64_t syncs() const { return syncs_.load(std::memory_order_relaxed); }

 private:
  void Loop();
  storage::Engine* engine_;
  Runtime* runtime_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool wanted_ = false;
  bool stop_ = false;
  bool syncing_ = false;       // a sync is under way ...
  uint64_t syncing_upto_ = 0;  // ... and covers at least this sequence
  std::atomic<uint64_t> syncs_{0};
  std::thread thread_;
};

}  // namespace shoal::node

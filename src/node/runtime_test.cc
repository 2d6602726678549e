#include "node/runtime.h"

#include <gtest/gtest.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <atomic>
#include <filesystem>
#include <future>
#include <thread>

namespace shoal::node {
namespace {

TEST(Runtime, RunOnExecutesOnTargetAndResumesAtHome) {
  Runtime rt(2);
  rt.Start();
  std::promise<std::pair<std::thread::id, std::thread::id>> done;
  auto body = [&]() -> asio::awaitable<void> {
    auto task = [] { return std::this_thread::get_id(); };
    std::thread::id target = co_await RunOn(rt.worker(1).io(), rt.worker(0).io(), std::move(task));
    done.set_value({target, std::this_thread::get_id()});
  };
  std::thread::id home_id;
  asio::post(rt.worker(0).io(), [&] { home_id = std::this_thread::get_id(); });
  asio::co_spawn(rt.worker(0).io(), body(), asio::detached);
  auto [target, resumed] = done.get_future().get();
  EXPECT_NE(target, resumed);
  EXPECT_EQ(resumed, home_id);
  rt.Stop();
}

// An engine in a fresh directory, two workers and a WAL syncer, all running;
// stopped and removed at the end.
class WalSyncerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::filesystem::remove_all(dir_);
    engine_ = std::move(storage::Engine::Open({.dir = dir_.string(), .memory_budget_bytes = 64 << 20}).value());
    syncer_ = std::make_unique<WalSyncer>(engine_.get(), &rt_);
    syncer_->Start();
    rt_.Start();
  }
  void TearDown() override {
    rt_.Stop();
    syncer_->Stop();
    engine_.reset();
    std::filesystem::remove_all(dir_);
  }
  const std::filesystem::path dir_ =
      std::filesystem::temp_directory_path() / ("shoal_runtime_test_" + std::to_string(::getpid()));
  Runtime rt_{2};
  std::unique_ptr<storage::Engine> engine_;
  std::unique_ptr<WalSyncer> syncer_;
};

TEST_F(WalSyncerTest, WaitersResumeOnceWritesAreDurable) {
  auto& engine = engine_;
  auto& rt = rt_;
  WalSyncer& syncer = *syncer_;
  std::promise<uint64_t> done;
  auto body = [&]() -> asio::awaitable<void> {
    auto batch = engine->NewBatch();
    batch->Put(storage::Cf::kMeta, "k", "v");
    uint64_t seq = engine->Write(*batch).value();
    EXPECT_LT(engine->durable_seq(), seq);
    co_await rt.worker(1).WaitDurable(*engine, seq, [&, seq] { syncer.Kick(seq); });
    done.set_value(engine->durable_seq());
  };
  asio::co_spawn(rt.worker(1).io(), body(), asio::detached);
  auto fut = done.get_future();
  ASSERT_EQ(fut.wait_for(std::chrono::seconds(20)), std::future_status::ready);
  EXPECT_GE(fut.get(), 1u);
  EXPECT_GE(syncer.syncs(), 1u);
}

// Two workers each write and wait for the sync, again and again, and a
// third thread writes without waiting: every wait ends, though a Kick(seq)
// that a sync under way covers asks for none more (no wake-up is lost
// between a sync's end and a waiter's kick).
TEST_F(WalSyncerTest, KicksThatASyncUnderWayCoversLoseNoWaiter) {
  auto& engine = engine_;
  auto& rt = rt_;
  WalSyncer& syncer = *syncer_;
  constexpr int kWrites = 300;
  std::atomic<bool> stop{false};
  std::thread other([&] {
    for (int i = 0; i < 100000 && !stop.load(); ++i) {
      auto batch = engine->NewBatch();
      batch->Put(storage::Cf::kMeta, "other", std::to_string(i));
      (void)engine->Write(*batch);
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  });
  std::promise<void> done[2];
  // (w is a parameter: the coroutine keeps its own copy.)
  auto body = [&](int w) -> asio::awaitable<void> {
    for (int i = 0; i < kWrites; ++i) {
      auto batch = engine->NewBatch();
      batch->Put(storage::Cf::kMeta, "w" + std::to_string(w), std::to_string(i));
      const uint64_t seq = engine->Write(*batch).value();
      co_await rt.worker(w).WaitDurable(*engine, seq, [&syncer, seq] { syncer.Kick(seq); });
      EXPECT_GE(engine->durable_seq(), seq);
    }
    done[w].set_value();
  };
  for (int w = 0; w < 2; ++w) asio::co_spawn(rt.worker(w).io(), body(w), asio::detached);
  for (auto& d : done) EXPECT_EQ(d.get_future().wait_for(std::chrono::seconds(60)), std::future_status::ready);
  stop = true;
  other.join();
}

}  // namespace
}  // namespace shoal::node

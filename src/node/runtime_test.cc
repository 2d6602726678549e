#include "node/runtime.h"

#include <gtest/gtest.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <filesystem>
#include <future>

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

TEST(WalSyncer, WaitersResumeOnceWritesAreDurable) {
  auto dir = std::filesystem::temp_directory_path() / ("shoal_runtime_test_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  auto engine = std::move(storage::Engine::Open({.dir = dir.string(), .memory_budget_bytes = 64 << 20}).value());
  Runtime rt(2);
  WalSyncer syncer(engine.get(), &rt);
  syncer.Start();
  rt.Start();
  std::promise<uint64_t> done;
  auto body = [&]() -> asio::awaitable<void> {
    auto batch = engine->NewBatch();
    batch->Put(storage::Cf::kMeta, "k", "v");
    uint64_t seq = engine->Write(*batch).value();
    EXPECT_LT(engine->durable_seq(), seq);
    co_await rt.worker(1).WaitDurable(*engine, seq, [&] { syncer.Kick(); });
    done.set_value(engine->durable_seq());
  };
  asio::co_spawn(rt.worker(1).io(), body(), asio::detached);
  auto fut = done.get_future();
  ASSERT_EQ(fut.wait_for(std::chrono::seconds(20)), std::future_status::ready);
  EXPECT_GE(fut.get(), 1u);
  EXPECT_GE(syncer.syncs(), 1u);
  rt.Stop();
  syncer.Stop();
  engine.reset();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace shoal::node

// Benchmark of the Raft library alone: three replicas over MemoryStorage,
// messages passed in memory, every Ready persisted at once. Reports
// committed entries per second for several entry and batch sizes, and heap
// allocations per committed entry.
#include <benchmark/benchmark.h>

#include <atomic>
#include <cstdlib>
#include <deque>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "raft/raw_node.h"

namespace {

std::atomic<uint64_t> g_allocations{0};

}  // namespace

void* operator new(std::size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace shoal::raft {
namespace {

constexpr NodeId kReplicas = 3;
constexpr Index kCompactEvery = 4096;

// Three replicas wired together in memory.
class Cluster {
 public:
  Cluster() {
    ConfState cs{{1, 2, 3}, {}, {}};
    for (NodeId id = 1; id <= kReplicas; ++id) {
      auto storage = std::make_unique<MemoryStorage>();
      SHOAL_CHECK(storage->apply_snapshot(bootstrap_snapshot(cs, "")).ok());
      storage->set_hard_state(HardState{1, kNoNode, 1});
      Config c;
      c.id = id;
      c.seed = id;
      c.max_inflight_msgs = 64;
      nodes_.push_back(RawNode::create(c, storage.get()).value());
      storages_.push_back(std::move(storage));
    }
    nodes_[0]->campaign();
    pump();
  }

  RawNode& leader() { return *nodes_[0]; }

  // Drains Readies and delivers messages until quiet; returns entries
  // applied by the leader.
  uint64_t pump() {
    uint64_t applied = 0;
    for (bool busy = true; busy;) {
      busy = false;
      for (size_t i = 0; i < nodes_.size(); ++i) {
        if (!nodes_[i]->has_ready()) continue;
        busy = true;
        Ready rd = nodes_[i]->ready();
        MemoryStorage& s = *storages_[i];
        if (rd.snapshot) SHOAL_CHECK(s.apply_snapshot(*rd.snapshot).ok());
        SHOAL_CHECK(s.append(rd.entries).ok());
        if (rd.hard_state) s.set_hard_state(*rd.hard_state);
        for (Message& m : rd.messages) queue_.push_back(std::move(m));
        for (Message& m : rd.messages_after_persist) queue_.push_back(std::move(m));
        if (i == 0) applied += rd.committed_entries.size();
        const Index last_applied = rd.committed_entries.empty() ? 0 : rd.committed_entries.back().index;
        nodes_[i]->advance();
        if (last_applied >= s.first_index() + kCompactEvery) {
          SHOAL_CHECK(s.create_snapshot(last_applied, ConfState{{1, 2, 3}, {}, {}}, "").ok());
          SHOAL_CHECK(s.compact(last_applied).ok());
        }
      }
      while (!queue_.empty()) {
        Message m = std::move(queue_.front());
        queue_.pop_front();
        const NodeId to = m.to;
        (void)nodes_[to - 1]->step(std::move(m));
        busy = true;
      }
    }
    return applied;
  }

 private:
  std::vector<std::unique_ptr<MemoryStorage>> storages_;
  std::vector<std::unique_ptr<RawNode>> nodes_;
  std::deque<Message> queue_;
};

// Arguments: entry size in bytes, proposals per Ready round.
void BM_Commit3Replicas(benchmark::State& state) {
  const auto entry_bytes = static_cast<size_t>(state.range(0));
  const auto batch = static_cast<int>(state.range(1));
  Cluster cluster;
  const std::string payload(entry_bytes, 'x');
  uint64_t committed = 0;
  const uint64_t allocs_before = g_allocations.load();
  for (auto _ : state) {
    for (int i = 0; i < batch; ++i) {
      Proposal p = cluster.leader().propose(payload);
      if (!p.ok()) state.SkipWithError("proposal refused");
    }
    committed += cluster.pump();
  }
  const uint64_t allocs = g_allocations.load() - allocs_before;
  state.SetItemsProcessed(static_cast<int64_t>(committed));
  state.SetBytesProcessed(static_cast<int64_t>(committed * entry_bytes));
  state.counters["entries/s"] = benchmark::Counter(static_cast<double>(committed), benchmark::Counter::kIsRate);
  state.counters["allocs/entry"] = committed == 0 ? 0.0 : static_cast<double>(allocs) / static_cast<double>(committed);
}
BENCHMARK(BM_Commit3Replicas)
    ->ArgNames({"entry_bytes", "batch"})
    ->ArgsProduct({{16, 256, 4096}, {1, 16, 128}})
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace shoal::raft

BENCHMARK_MAIN();

// Groups: every Raft group replica this node hosts, each pinned to one
// worker (group id mod workers), and the loop that drives them. Per worker,
// the replicas with work are collected, their durable state staged into one
// write batch, written once and made durable with one fsync by the WAL
// syncer (off the event loop), and only then are their acknowledgements sent
// and their committed entries applied (group commit).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <utility>
#include <vector>

#include "node/runtime.h"
#include "node/transport.h"
#include "replica/replica.h"

namespace shoal::node {

struct GroupsOptions {
  bool fsync = true;  // make Raft state durable before acknowledging it
  int tick_ms = 50;
};

class Groups {
 public:
  static constexpr uint64_t kMaxGroups = 4096;

  Groups(Runtime* runtime, storage::Engine* engine, WalSyncer* syncer, Transport* transport,
         GroupsOptions opts);
  ~Groups();

  // Starts the tick loops; call once the runtime runs.
  void Start();
  const GroupsOptions& options() const { return opts_; }
  int WorkerOf(uint64_t group) const { return static_cast<int>(group % static_cast<uint64_t>(runtime_->size())); }
  Worker& WorkerFor(uint64_t group) { return runtime_->worker(WorkerOf(group)); }

  // Takes ownership of a replica; any thread. Find() sees it at once; its
  // worker starts driving it with the next event.
  replica::Replica* Add(std::unique_ptr<replica::Replica> r);
  // The replica of `group` on this node, or nullptr. Any thread.
  replica::Replica* Find(uint64_t group) const {
    return group < kMaxGroups ? table_[group].load(std::memory_order_acquire) : nullptr;
  }
  // Every replica (snapshot of the list). Any thread.
  std::vector<replica::Replica*> All() const;
  // Stops driving `group`'s replica and deletes its durable state (log,
  // hard state, data) with one synced write. Call on the group's worker.
  // The object stays alive, never driven again (other threads may still
  // hold its pointer); Find() no longer returns it. A read that fails
  // while staging the deletion leaves the replica running (the error is
  // returned); a write or sync that fails stops the node (FailStop).
  Status Retire(uint64_t group);
  // Hands received messages to their groups' workers, one hand-off per
  // worker (a frame from a peer carries messages of many groups); called on
  // a worker, its own groups' messages are stepped at once. Any thread.
  void DeliverAll(std::vector<GroupMessage> msgs);
  // Node `node` has ended (Transport's gone handler): every replica here that
  // it led stands for election (Replica::PeerGone). Any thread.
  void PeerGone(raft::NodeId node);
  // The replica has work to drive; call on its worker's thread.
  void Notify(replica::Replica* r);
  // As Notify, but a round not yet running starts after the handlers
  // already queued on the worker (the other connections' proposals join it).
  void NotifySoon(replica::Replica* r);
  // fn runs on every worker after each tick, with the worker index.
  void SetTickHook(std::function<void(int worker)> fn) { tick_hook_ = std::move(fn); }

 private:
  struct Host {
    std::vector<replica::Replica*> replicas;
    // Replicas with work for Drive (a replica may be listed more than once;
    // Drive takes each once a round), and the list Drive is working through
    // (kept for its storage).
    std::vector<replica::Replica*> dirty;
    std::vector<replica::Replica*> draining;
    std::set<replica::Replica*> retired;
    std::unique_ptr<replica::ApplyRound> round;  // Drive's, kept between runs
    bool running = false;
    bool kick_posted = false;
  };
  // Lists r (a replica of worker w with work) for w's next Drive round;
  // starts nothing. Kick then starts the round if none runs: a loop over
  // many replicas marks them all first, so they share one round.
  void Mark(int w, replica::Replica* r);
  void Kick(int w);
  asio::awaitable<void> Drive(int w);
  // Finishes the Readys of `begun` that may finish before the write of
  // storage sequence `seq` is synced (Replica::MayFinishUnsynced), takes
  // them out of `begun`, and reports the sync to them when it comes.
  void FinishUnsynced(int w, std::vector<replica::Replica*>& begun, uint64_t seq);
  asio::awaitable<void> ReportSynced(int w, uint64_t seq,
                                     std::vector<std::pair<replica::Replica*, replica::Replica::SyncReport>> reports);
  asio::awaitable<void> TickLoop(int w);

  Runtime* runtime_;
  storage::Engine* engine_;
  WalSyncer* syncer_;
  Transport* transport_;
  GroupsOptions opts_;
  std::vector<Host> hosts_;
  std::unique_ptr<std::atomic<replica::Replica*>[]> table_;
  mutable std::mutex mu_;  // guards owned_
  std::vector<std::unique_ptr<replica::Replica>> owned_;
  std::vector<std::unique_ptr<replica::Replica>> retired_;
  std::function<void(int)> tick_hook_;
};

// Microseconds on the monotonic clock.
int64_t MonoUs();

}  // namespace shoal::node

#include "node/groups.h"

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "common/clock.h"

namespace shoal::node {

int64_t MonoUs() { return RealClock().NowMonoUs(); }

Groups::Groups(Runtime* runtime, storage::Engine* engine, WalSyncer* syncer, Transport* transport,
               GroupsOptions opts)
    : runtime_(runtime),
      engine_(engine),
      syncer_(syncer),
      transport_(transport),
      opts_(opts),
      hosts_(static_cast<size_t>(runtime->size())),
      table_(new std::atomic<replica::Replica*>[kMaxGroups]) {
  for (uint64_t i = 0; i < kMaxGroups; ++i) table_[i].store(nullptr);
}

Groups::~Groups() = default;

void Groups::Start() {
  for (int w = 0; w < runtime_->size(); ++w) {
    asio::co_spawn(runtime_->worker(w).io(), TickLoop(w), asio::detached);
  }
}

replica::Replica* Groups::Add(std::unique_ptr<replica::Replica> r) {
  replica::Replica* raw = r.get();
  SHOAL_CHECK(raw->group() < kMaxGroups);
  int w = WorkerOf(raw->group());
  {
    std::lock_guard lock(mu_);
    owned_.push_back(std::move(r));
  }
  asio::post(runtime_->worker(w).io(), [this, raw, w] {
    if (raw->retired()) return;  // retired on its worker before this ran (added from another)
    hosts_[static_cast<size_t>(w)].replicas.push_back(raw);
    Notify(raw);
  });
  table_[raw->group()].store(raw, std::memory_order_release);
  return raw;
}

std::vector<replica::Replica*> Groups::All() const {
  std::lock_guard lock(mu_);
  std::vector<replica::Replica*> out;
  for (const auto& r : owned_) out.push_back(r.get());
  return out;
}

Status Groups::Retire(uint64_t group) {
  replica::Replica* r = Find(group);
  if (r == nullptr) return Status::NotFound("group " + std::to_string(group));
  // Staged first, while the replica still runs: a read that fails here
  // (its range, the expiry index) changes nothing of it, and it stays (the
  // caller tries again later).
  auto batch = engine_->NewBatch();
  Status s = r->StageDestroy(*batch);
  if (!s.ok()) return s;
  Host& h = hosts_[static_cast<size_t>(WorkerOf(group))];
  table_[group].store(nullptr, std::memory_order_release);
  std::erase(h.replicas, r);
  std::erase(h.dirty, r);
  std::erase(h.draining, r);
  h.retired.insert(r);
  {
    std::lock_guard lock(mu_);
    for (auto& owned : owned_) {
      if (owned.get() == r) {
        retired_.push_back(std::move(owned));
        std::erase(owned_, nullptr);
        break;
      }
    }
  }
  // Written after any round of this worker that staged the replica's state,
  // so nothing of it survives. The replica no longer runs here: a write or
  // a sync that fails stops the node, as after any failed write (at
  // restart the replica opens from what is on disk, and is removed again).
  s = engine_->Write(*batch).status();
  if (s.ok()) s = engine_->Sync().status();
  if (!s.ok()) {
    spdlog::critical("group {}: removing this node's replica failed: {}; stopping this node", group, s.ToString());
    spdlog::default_logger()->flush();
    FailStop("retiring a replica failed");
  }
  return Status::Ok();
}

void Groups::DeliverAll(std::vector<GroupMessage> msgs) {
  if (msgs.empty()) return;
  const size_t n = static_cast<size_t>(runtime_->size());
  std::vector<std::vector<GroupMessage>> per(n);
  for (auto& gm : msgs) {
    if (gm.group >= kMaxGroups) continue;
    per[static_cast<size_t>(WorkerOf(gm.group))].push_back(std::move(gm));
  }
  // Every message of a worker is stepped before its round starts: a frame
  // carries messages of many groups (heartbeats, one group's entries and
  // another's acknowledgements), and they share one Ready round, one
  // storage write and one frame to each peer.
  auto step = [this](std::vector<GroupMessage>& ms) {
    const int64_t now = MonoUs();
    int w = -1;
    for (auto& gm : ms) {
      replica::Replica* r = Find(gm.group);
      if (r == nullptr) continue;  // not created here yet: the leader retries
      r->Step(std::move(gm.msg), now);
      w = WorkerOf(r->group());
      Mark(w, r);
    }
    if (w >= 0) Kick(w);
  };
  // Called on a worker (TransportOptions::readers): its own messages are
  // stepped at once, after the others are on their way.
  int here = -1;
  for (size_t w = 0; w < n; ++w) {
    if (per[w].empty()) continue;
    asio::io_context& io = runtime_->worker(static_cast<int>(w)).io();
    if (io.get_executor().running_in_this_thread()) {
      here = static_cast<int>(w);
      continue;
    }
    asio::post(io, [step, ms = std::move(per[w])]() mutable { step(ms); });
  }
  if (here >= 0) step(per[static_cast<size_t>(here)]);
}

void Groups::PeerGone(raft::NodeId node) {
  for (int w = 0; w < runtime_->size(); ++w) {
    asio::post(runtime_->worker(w).io(), [this, w, node] {
      Host& h = hosts_[static_cast<size_t>(w)];
      for (replica::Replica* r : std::vector<replica::Replica*>(h.replicas)) {
        if (h.retired.count(r) == 0 && r->PeerGone(node, MonoUs())) Mark(w, r);
      }
      Kick(w);
    });
  }
}

void Groups::Notify(replica::Replica* r) {
  const int w = WorkerOf(r->group());
  Mark(w, r);
  Kick(w);
}

void Groups::NotifySoon(replica::Replica* r) {
  const int w = WorkerOf(r->group());
  Mark(w, r);
  Host& h = hosts_[static_cast<size_t>(w)];
  if (h.running || h.kick_posted || h.dirty.empty()) return;
  h.kick_posted = true;
  asio::post(runtime_->worker(w).io(), [this, w] {
    hosts_[static_cast<size_t>(w)].kick_posted = false;
    Kick(w);
  });
}

void Groups::Mark(int w, replica::Replica* r) {
  Host& h = hosts_[static_cast<size_t>(w)];
  if (!r->HasReady() || h.retired.count(r) != 0) return;
  h.dirty.push_back(r);
  if (h.dirty.size() > 2 * h.replicas.size() + 64) {
    // Notified again and again while Drive waits (a slow disk): each once.
    std::sort(h.dirty.begin(), h.dirty.end());
    h.dirty.erase(std::unique(h.dirty.begin(), h.dirty.end()), h.dirty.end());
  }
}

void Groups::Kick(int w) {
  Host& h = hosts_[static_cast<size_t>(w)];
  if (h.running || h.dirty.empty()) return;
  h.running = true;
  // Drive starts here and now (co_spawn dispatches on this thread): a
  // round for everything Marked so far.
  asio::co_spawn(runtime_->worker(w).io(), Drive(w), asio::detached);
}

void Groups::FinishUnsynced(int w, std::vector<replica::Replica*>& begun, uint64_t seq) {
  Host& h = hosts_[static_cast<size_t>(w)];
  std::vector<std::pair<replica::Replica*, replica::Replica::SyncReport>> reports;
  const int64_t now = MonoUs();
  std::erase_if(begun, [&](replica::Replica* r) {
    if (!r->MayFinishUnsynced()) return false;
    reports.emplace_back(r, r->FinishUnsynced(now));
    if (r->HasReady() && h.retired.count(r) == 0) h.dirty.push_back(r);
    return true;
  });
  if (reports.empty()) return;
  syncer_->Kick(seq);
  asio::co_spawn(runtime_->worker(w).io(), ReportSynced(w, seq, std::move(reports)), asio::detached);
}

asio::awaitable<void> Groups::ReportSynced(int w, uint64_t seq,
                                           std::vector<std::pair<replica::Replica*, replica::Replica::SyncReport>> reports) {
  Worker& worker = runtime_->worker(w);
  WalSyncer* syncer = syncer_;
  co_await worker.WaitDurable(*engine_, seq, [syncer, seq] { syncer->Kick(seq); });
  if (worker.io().stopped()) co_return;
  Host& h = hosts_[static_cast<size_t>(w)];
  for (auto& [r, report] : reports) {
    if (h.retired.count(r) != 0) continue;  // kept alive, no longer driven
    r->Synced(report);
    Mark(w, r);
  }
  Kick(w);
}

asio::awaitable<void> Groups::Drive(int w) {
  Host& h = hosts_[static_cast<size_t>(w)];
  Worker& worker = runtime_->worker(w);
  // One storage write a round, as a rule: the log entries, terms and votes
  // of every group of the worker, and after them the applies of the
  // entries already committed (ApplyRound): a crash keeps an apply only
  // with the log it came from, and a reader sees an apply only once its
  // proposal can be answered.
  if (h.round == nullptr) h.round = std::make_unique<replica::ApplyRound>(engine_);
  replica::ApplyRound& round = *h.round;
  std::vector<replica::Replica*> begun;
  std::vector<raft::Message> msgs;
  while (!h.dirty.empty()) {
    // Each replica once, in a fixed order (by address).
    std::vector<replica::Replica*>& dirty = h.draining;
    dirty.swap(h.dirty);
    h.dirty.clear();
    std::sort(dirty.begin(), dirty.end());
    dirty.erase(std::unique(dirty.begin(), dirty.end()), dirty.end());
    begun.clear();
    std::vector<GroupMessage> out;
    bool needs_sync = false;
    for (replica::Replica* r : dirty) {
      msgs.clear();
      if (!r->BeginReady(round, &msgs, &needs_sync)) continue;
      begun.push_back(r);
      for (auto& m : msgs) out.push_back(GroupMessage{r->group(), std::move(m)});
    }
    // A round that logs entries, a snapshot or a vote sends what needs no
    // wait for the disk (a leader's entries, its heartbeats) before its
    // storage write: the entries reach the followers while the leader
    // writes and syncs them itself. A round that only commits and applies
    // sends it with its responses after the write, one frame to each peer
    // rather than two (heartbeats and their responses, most of all).
    if (needs_sync) {
      transport_->Send(std::move(out));
      out.clear();
    }
    const bool logged = round.batch().Count() > 0;
    const uint64_t writes_before = round.writes();
    // Committed entries are durable on a majority already: apply them now,
    // while this round's own log entries wait for the disk.
    const int64_t applied_at = MonoUs();
    for (replica::Replica* r : begun) r->ApplyReady(applied_at, round);
    round.Flush();
    // The responses of the Readys begun (after their durability, where
    // they need it), and whatever of `out` is still here.
    auto finish = [&] {
      const int64_t now = MonoUs();
      for (replica::Replica* r : begun) {
        msgs.clear();
        r->FinishReady(&msgs, now);
        for (auto& m : msgs) out.push_back(GroupMessage{r->group(), std::move(m)});
        if (r->HasReady() && h.retired.count(r) == 0) h.dirty.push_back(r);
      }
      transport_->Send(std::move(out));
    };
    if (logged) {
      const uint64_t seq = round.writes() > writes_before ? round.last_seq() : engine_->write_seq();
      if (needs_sync && opts_.fsync && engine_->durable_seq() < seq) {
        // Leaders whose new entries are all that waits for the disk finish
        // now, and the next rounds go on while the sync runs; the others
        // (votes, acknowledgements, snapshots) wait for it.
        FinishUnsynced(w, begun, seq);
        if (!begun.empty()) {
          WalSyncer* syncer = syncer_;
          co_await worker.WaitDurable(*engine_, seq, [syncer, seq] { syncer->Kick(seq); });
        } else {
          co_await asio::post(worker.io(), asio::use_awaitable);
        }
        if (worker.io().stopped()) co_return;
        finish();
      } else {
        finish();
        // Let the worker's other work (connections queueing proposals, peer
        // messages) run before the next round, so rounds stay batched as they
        // are while an fsync is awaited.
        co_await asio::post(worker.io(), asio::use_awaitable);
        if (worker.io().stopped()) co_return;
      }
    } else {
      finish();
    }
  }
  h.running = false;
}

asio::awaitable<void> Groups::TickLoop(int w) {
  Host& h = hosts_[static_cast<size_t>(w)];
  asio::steady_timer timer(runtime_->worker(w).io());
  const auto tick = std::chrono::milliseconds(opts_.tick_ms);
  auto next = std::chrono::steady_clock::now();
  for (;;) {
    // Never faster than real time: after a stall the missed ticks are not
    // fired in a burst. A burst would let a follower's election timer run
    // out within less than an election timeout of real time after it last
    // heard from its leader, inside the leader's lease (docs/design/raft.md).
    next = std::max(next + tick, std::chrono::steady_clock::now() + tick / 2);
    timer.expires_at(next);
    auto [ec] = co_await timer.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
    if (ec) co_return;
    int64_t now = MonoUs();
    for (replica::Replica* r : h.replicas) {
      r->Tick(now);
      Mark(w, r);
    }
    Kick(w);  // one round for every group's heartbeats: a frame to each peer
    if (tick_hook_) tick_hook_(w);
  }
}

}  // namespace shoal::node

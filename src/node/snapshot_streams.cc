#include "node/snapshot_streams.h"

#include <pthread.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "common/clock.h"

namespace shoal::node {
namespace fs = std::filesystem;
namespace {

// An export yields the CPU to the threads that serve requests: on a busy
// machine a move slows down before foreground latency does (the transfer
// thread keeps its priority: docs/PERFORMANCE.md has the A/B). Linux gives
// each thread its own nice value, and any process may raise its own.
void NameBackgroundThread(const char* name) {
  pthread_setname_np(pthread_self(), name);
  (void)setpriority(PRIO_PROCESS, static_cast<id_t>(gettid()), 10);
}

constexpr int kMaxExports = 2;                       // export threads at once
constexpr uint64_t kIncomingMaxBytes = 64 << 20;     // chunks waiting to be written
constexpr int64_t kExpireEveryUs = 60'000'000;       // look for abandoned images
constexpr int64_t kAbandonedAfterS = 600;            // ... untouched this long
constexpr int64_t kNoteEveryUs = 30'000'000;         // an export's .job note marks progress

// "<group> <to> <export id> <from> <snapshot index>", beside the export's
// folder: out-<group>-<to>-<export id>.job.
std::string JobNote(uint64_t group, const raft::Message& msg, uint64_t export_id) {
  return std::to_string(group) + " " + std::to_string(msg.to) + " " + std::to_string(export_id) + " " +
         std::to_string(msg.from) + " " + std::to_string(msg.snapshot.meta.index) + "\n";
}

}  // namespace

SnapshotStreams::SnapshotStreams(Transport* transport, SnapshotStreamsOptions opts, ReportFn report, ArrivedFn arrived)
    : transport_(transport),
      opts_(std::move(opts)),
      report_(std::move(report)),
      arrived_(std::move(arrived)),
      receiver_(opts_.dir, opts_.check_image) {}

SnapshotStreams::~SnapshotStreams() { Stop(); }

void SnapshotStreams::ResumeExports() {
  std::error_code ec;
  std::vector<fs::path> gone;
  std::map<std::pair<uint64_t, raft::NodeId>, std::unique_ptr<Job>> found;
  const auto now = fs::file_time_type::clock::now();
  for (const auto& e : fs::directory_iterator(opts_.dir, ec)) {
    const std::string name = e.path().filename().string();
    if (!name.starts_with("out-")) continue;
    if (e.is_directory()) {
      std::error_code ec2;
      if (!fs::exists(e.path().string() + ".job", ec2)) gone.push_back(e.path());  // not whole, or not noted
      continue;
    }
    if (!name.ends_with(".job")) continue;
    const std::string dir = e.path().string().substr(0, e.path().string().size() - 4);
    std::ifstream f(e.path());
    uint64_t group = 0, to = 0, export_id = 0, from = 0, index = 0;
    std::error_code ec2;
    const bool fresh = now - fs::last_write_time(e.path(), ec2) < std::chrono::seconds(kAbandonedAfterS);
    auto job = std::make_unique<Job>();
    if (!(f >> group >> to >> export_id >> from >> index) || !fresh || !fs::is_directory(dir, ec2)) {
      gone.push_back(e.path());
      gone.push_back(dir);
      continue;
    }
    job->group = group;
    job->msg = raft::Message{.type = raft::MessageType::kSnap, .to = to, .from = from};
    job->msg.snapshot.meta.index = index;
    job->dir = dir;
    job->started = true;
    job->exported.store(true, std::memory_order_relaxed);
    job->resumed = true;
    job->sender = std::make_unique<ImageSender>(group, from, to, export_id, dir, opts_.sender);
    if (!job->sender->Open(RealClock().NowMonoUs()).ok()) {
      gone.push_back(e.path());
      gone.push_back(dir);
      continue;
    }
    // One per receiving replica: the latest.
    auto& best = found[{group, to}];
    if (best) {
      if (best->msg.snapshot.meta.index >= index) {
        gone.push_back(e.path());
        gone.push_back(dir);
        continue;
      }
      gone.push_back(best->dir + ".job");
      gone.push_back(best->dir);
    }
    best = std::move(job);
  }
  for (const auto& p : gone) fs::remove_all(p, ec);
  std::lock_guard lock(mu_);
  for (auto& [key, job] : found) {
    spdlog::info("group {}: taking up again a snapshot transfer at {} to node {:016x} ({} bytes) left by the "
                 "last run",
                 job->group, job->msg.snapshot.meta.index, job->msg.to, job->sender->total());
    job->seq = ++seq_;
    carrying_.emplace(key, Carried{job->seq, job->msg.snapshot.meta.index, 0});
    sending_.fetch_add(1, std::memory_order_relaxed);
    jobs_.push_back(std::move(job));
  }
}

void SnapshotStreams::Start() {
  std::error_code ec;
  fs::create_directories(opts_.dir, ec);
  ResumeExports();
  receiver_.Recover();
  recovered_.store(true, std::memory_order_release);
  receiver_.Expire(kAbandonedAfterS);
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "shoal-snapshots");
    Loop();
  });
}

void SnapshotStreams::Stop() {
  {
    std::lock_guard lock(mu_);
    if (stop_) return;
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  // Exports under way read the store: wait for them (they cannot be cut short).
  for (auto* list : {&jobs_, &new_jobs_}) {
    for (auto& j : *list) {
      if (j->exporter.joinable()) j->exporter.join();
    }
    list->clear();
  }
}

void SnapshotStreams::Ship(uint64_t group, raft::Message msg, replica::ImageWriter write) {
  replica::SnapshotTicket t;
  replica::SnapshotTicket::Decode(msg.snapshot.data, &t);
  auto job = std::make_unique<Job>();
  job->group = group;
  job->dir = opts_.dir + "/out-" + std::to_string(group) + "-" + std::to_string(msg.to) + "-" +
             std::to_string(t.export_id);
  job->sender = std::make_unique<ImageSender>(group, msg.from, msg.to, t.export_id, job->dir, opts_.sender);
  job->msg = std::move(msg);
  job->write = std::move(write);
  {
    std::lock_guard lock(mu_);
    if (stop_) return;  // shutting down: the transfer dies with the process
    job->seq = ++seq_;
    carrying_[{group, job->msg.to}] = Carried{job->seq, job->msg.snapshot.meta.index, 0};
    new_jobs_.push_back(std::move(job));
  }
  cv_.notify_all();
}

std::string SnapshotStreams::Received(uint64_t group, const replica::SnapshotTicket& ticket) {
  return receiver_.Complete(group, ticket.from, ticket.export_id);
}

void SnapshotStreams::Consumed(uint64_t group, const replica::SnapshotTicket& ticket) {
  {
    std::lock_guard lock(mu_);
    discards_.push_back(Drop{group, ticket.from, ticket.export_id});
  }
  cv_.notify_all();
}

void SnapshotStreams::Discard(uint64_t group) {
  {
    std::lock_guard lock(mu_);
    discards_.push_back(Drop{group, raft::kNoNode, 0});
  }
  cv_.notify_all();
}

void SnapshotStreams::Recall(uint64_t group, const std::vector<raft::NodeId>& keep) {
  {
    std::lock_guard lock(mu_);
    recalls_.push_back(RecallOrder{group, keep, ++seq_});
    // No longer carried from here on (Carrying), though the jobs end later;
    // and never taken up again by a restart that comes first (their notes).
    for (auto it = carrying_.lower_bound({group, 0}); it != carrying_.end() && it->first.first == group;) {
      it = std::find(keep.begin(), keep.end(), it->first.second) == keep.end() ? carrying_.erase(it) : std::next(it);
    }
    const std::string prefix = "out-" + std::to_string(group) + "-";
    std::error_code ec;
    std::vector<fs::path> notes;
    for (const auto& e : fs::directory_iterator(opts_.dir, ec)) {
      const std::string name = e.path().filename().string();
      if (!name.starts_with(prefix) || !name.ends_with(".job")) continue;
      const raft::NodeId to = std::strtoull(name.c_str() + prefix.size(), nullptr, 10);
      if (std::find(keep.begin(), keep.end(), to) == keep.end()) notes.push_back(e.path());
    }
    for (const auto& n : notes) fs::remove(n, ec);
  }
  cv_.notify_all();
}

void SnapshotStreams::Adopt(uint64_t group, raft::NodeId to, raft::Term term) {
  std::lock_guard lock(mu_);
  if (auto it = carrying_.find({group, to}); it != carrying_.end()) it->second.adopted_term = term;
}

std::optional<raft::Index> SnapshotStreams::Carrying(uint64_t group, raft::NodeId to) {
  std::lock_guard lock(mu_);
  auto it = carrying_.find({group, to});
  if (it == carrying_.end()) return std::nullopt;
  return it->second.index;
}

void SnapshotStreams::OnChunk(raft::NodeId, SnapshotChunk c) {
  {
    std::lock_guard lock(mu_);
    if (incoming_bytes_ + c.data.size() > kIncomingMaxBytes) return;  // senders send again
    incoming_bytes_ += c.data.size();
    incoming_.push_back(std::move(c));
  }
  cv_.notify_all();
}

SnapshotStreams::Stats SnapshotStreams::stats() const {
  return Stats{bytes_sent_.load(std::memory_order_relaxed), bytes_received_.load(std::memory_order_relaxed),
               sending_.load(std::memory_order_relaxed), sent_.load(std::memory_order_relaxed),
               failed_.load(std::memory_order_relaxed), recalled_.load(std::memory_order_relaxed)};
}

void SnapshotStreams::Finish(Job& job, bool failed) {
  if (job.exporter.joinable()) job.exporter.join();
  std::error_code rm;
  fs::remove(job.dir + ".job", rm);
  {
    std::lock_guard lock(mu_);
    auto it = carrying_.find({job.group, job.msg.to});
    if (it != carrying_.end() && it->second.seq == job.seq) {
      // Adopted by a later term of this node's leadership: the ticket
      // leaves in that term (the follower takes it from its leader).
      if (it->second.adopted_term > job.msg.term) job.msg.term = it->second.adopted_term;
      carrying_.erase(it);
    }
  }
  std::error_code ec;
  fs::remove_all(job.dir, ec);
  sending_.fetch_sub(1, std::memory_order_relaxed);
  if (job.cancelled) return;  // replaced by a newer transfer, which reports
  (failed ? failed_ : sent_).fetch_add(1, std::memory_order_relaxed);
  if (!failed && !job.resumed) {
    // The image is durable at the receiver: now the ticket may follow.
    std::vector<GroupMessage> out;
    out.push_back(GroupMessage{job.group, job.msg});
    transport_->Send(std::move(out));
  }
  report_(job.group, job.msg.to, failed);
}

void SnapshotStreams::Loop() {
  for (;;) {
    std::deque<SnapshotChunk> incoming;
    std::vector<Drop> discards;
    std::vector<RecallOrder> recalls;
    std::list<std::unique_ptr<Job>> fresh;
    {
      std::unique_lock lock(mu_);
      cv_.wait_for(lock, std::chrono::milliseconds(jobs_.empty() ? 100 : 5), [this] {
        return stop_ || !incoming_.empty() || !new_jobs_.empty() || !discards_.empty() || !recalls_.empty();
      });
      if (stop_) return;
      incoming.swap(incoming_);
      incoming_bytes_ = 0;
      discards.swap(discards_);
      recalls.swap(recalls_);
      fresh.swap(new_jobs_);
    }
    for (const RecallOrder& r : recalls) {
      for (auto* list : {&jobs_, &fresh}) {
        for (auto& j : *list) {
          // A recall applies to the transfers shipped before it only.
          if (j->group != r.group || j->cancelled || j->seq > r.seq) continue;
          if (std::find(r.keep.begin(), r.keep.end(), j->msg.to) != r.keep.end()) continue;
          j->cancelled = true;
          recalled_.fetch_add(1, std::memory_order_relaxed);
          spdlog::info("group {}: snapshot to node {:016x} abandoned ({})", j->group, j->msg.to,
                       r.keep.empty() ? "the sending replica left or started over" : "it left the group");
        }
      }
    }
    for (auto& j : fresh) {
      // One transfer per receiving replica and group: a newer one replaces it.
      for (auto& old : jobs_) {
        if (old->group == j->group && old->msg.to == j->msg.to) old->cancelled = true;
      }
      sending_.fetch_add(1, std::memory_order_relaxed);
    }
    jobs_.splice(jobs_.end(), fresh);
    for (const auto& d : discards) {
      if (d.from == raft::kNoNode) {
        receiver_.Discard(d.group);
      } else {
        receiver_.Discard(d.group, d.from, d.export_id);
      }
    }
    int64_t now = RealClock().NowMonoUs();
    if (now - expired_at_us_ > kExpireEveryUs) {
      expired_at_us_ = now;
      receiver_.Expire(kAbandonedAfterS);
    }
    for (auto& c : incoming) {
      if (c.kind == SnapshotChunk::Kind::kAck) {
        for (auto& j : jobs_) {
          if (j->sender && j->exported.load(std::memory_order_acquire)) j->sender->OnAck(c, now);
        }
        continue;
      }
      uint64_t before = receiver_.bytes_received();
      SnapshotChunk ack = receiver_.Handle(c, now);
      bytes_received_.fetch_add(receiver_.bytes_received() - before, std::memory_order_relaxed);
      if (ack.refused) spdlog::warn("group {}: refused a snapshot chunk from node {:016x}", c.group, c.from);
      const bool whole = ack.done;
      transport_->SendChunk(c.from, std::move(ack));
      if (whole && arrived_) arrived_(c.group, replica::SnapshotTicket{c.from, c.export_id});
    }
    // Start exports, a few at a time: each writes a whole shard.
    int exporting = 0;
    for (auto& j : jobs_) exporting += j->started && !j->exported.load(std::memory_order_acquire);
    for (auto& j : jobs_) {
      if (exporting >= kMaxExports) break;
      if (j->started || j->cancelled) continue;
      j->started = true;
      ++exporting;
      Job* p = j.get();
      p->exporter = std::thread([this, p] {
        NameBackgroundThread("shoal-export");
        std::error_code ec;
        fs::remove_all(p->dir, ec);
        fs::remove(p->dir + ".job", ec);
        p->export_status = p->write(p->dir);  // reads a consistent storage view
        p->write = nullptr;                   // releases it
        if (p->export_status.ok()) {
          // Whole: a restart of this node takes the transfer up again.
          replica::SnapshotTicket t;
          replica::SnapshotTicket::Decode(p->msg.snapshot.data, &t);
          std::ofstream note(p->dir + ".job", std::ios::trunc);
          note << JobNote(p->group, p->msg, t.export_id);
        }
        p->exported.store(true, std::memory_order_release);
        cv_.notify_all();
      });
    }
    // Refill the rate budget: at most two chunks' worth saved up.
    if (opts_.rate_bytes_per_s > 0) {
      double cap = 2.0 * static_cast<double>(opts_.sender.chunk_bytes);
      tokens_ = std::min(cap, tokens_ + static_cast<double>(now - tokens_at_us_) *
                                          static_cast<double>(opts_.rate_bytes_per_s) / 1e6);
      tokens_at_us_ = now;
    }
    // Each pass starts at another transfer, so they share the budget.
    if (jobs_.size() > 1) jobs_.splice(jobs_.end(), jobs_, jobs_.begin());
    for (auto it = jobs_.begin(); it != jobs_.end();) {
      Job& j = **it;
      if (j.cancelled && (!j.started || j.exported.load(std::memory_order_acquire))) {
        Finish(j, true);
        it = jobs_.erase(it);
        continue;
      }
      if (!j.started || !j.exported.load(std::memory_order_acquire)) {
        ++it;
        continue;
      }
      bool failed = false, finished = false;
      if (j.exporter.joinable()) {
        j.exporter.join();
        Status s = j.export_status;
        if (s.ok()) s = j.sender->Open(now);
        if (!s.ok()) {
          spdlog::error("group {}: snapshot export for node {:016x} failed: {}", j.group, j.msg.to, s.ToString());
          failed = finished = true;
        } else {
          spdlog::info("group {}: sending a snapshot at {} to node {:016x} ({} bytes)", j.group,
                       j.msg.snapshot.meta.index, j.msg.to, j.sender->total());
        }
      }
      for (int sent = 0; !finished && sent < 4; ++sent) {
        if (j.sender->done()) {
          finished = true;
          break;
        }
        if (j.sender->failed(now)) {
          spdlog::warn("group {}: snapshot to node {:016x} gave up at {} of {} bytes", j.group, j.msg.to,
                       j.sender->acked(), j.sender->total());
          failed = finished = true;
          break;
        }
        auto next = j.sender->Next(now, opts_.rate_bytes_per_s == 0 || tokens_ >= 0);
        if (!next.ok()) {
          spdlog::error("group {}: snapshot to node {:016x}: {}", j.group, j.msg.to, next.status().ToString());
          failed = finished = true;
          break;
        }
        if (!next->has_value()) break;
        SnapshotChunk& c = **next;
        if (c.kind == SnapshotChunk::Kind::kData) {
          tokens_ -= static_cast<double>(c.data.size());
          bytes_sent_.fetch_add(c.data.size(), std::memory_order_relaxed);
        }
        transport_->SendChunk(j.msg.to, std::move(c));
      }
      if (finished) {
        Finish(j, failed);
        it = jobs_.erase(it);
      } else {
        if (j.sender->acked() > j.noted_acked && now - j.noted_us > kNoteEveryUs) {
          // Still going: a restart within kAbandonedAfterS of the last
          // progress takes it up again.
          std::error_code ec;
          fs::last_write_time(j.dir + ".job", fs::file_time_type::clock::now(), ec);
          j.noted_acked = j.sender->acked();
          j.noted_us = now;
        }
        ++it;
      }
    }
  }
}

}  // namespace shoal::node

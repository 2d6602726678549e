// SnapshotStreams: this node's end of snapshot transfers (the
// replica::SnapshotCourier of its data shards). An outgoing snapshot is
// exported into files by a thread of its own, off the group's worker, then
// streamed in chunks over the peer transport, at most `rate` bytes a second
// for all transfers together, and only then is its Raft message sent. Incoming
// chunks are written and made durable on this object's thread, never on a
// worker. See node/image_stream.h for the protocol and its resumption. A
// transfer outlives a restart of its sending node too: exports stay on disk
// with a note of where they go, and are sent on (without their Raft
// message, whose term has passed: the receiver takes an image on arrival).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "node/image_stream.h"
#include "node/transport.h"
#include "replica/replica.h"

namespace shoal::node {

struct SnapshotStreamsOptions {
  std::string dir;                // where images are written and received
  uint64_t rate_bytes_per_s = 0;  // outgoing, all transfers together; 0: unlimited
  ImageSenderOptions sender;
  ImageReceiver::CheckFn check_image;  // run on an incoming image once whole (null: none)
};

class SnapshotStreams final : public replica::SnapshotCourier {
 public:
  // Runs on this object's thread when a transfer ends; failed: it gave up.
  using ReportFn = std::function<void(uint64_t group, raft::NodeId to, bool failed)>;

  // Runs on this object's thread each time an incoming image is (or is
  // again found) whole and durable here.
  using ArrivedFn = std::function<void(uint64_t group, const replica::SnapshotTicket& ticket)>;

  SnapshotStreams(Transport* transport, SnapshotStreamsOptions opts, ReportFn report, ArrivedFn arrived = nullptr);
  ~SnapshotStreams() override;
  // Cleans what an earlier run left and starts the thread.
  void Start();
  // Stops the thread and waits for exports under way.
  void Stop();

  void Ship(uint64_t group, raft::Message msg, replica::ImageWriter write) override;
  std::string Received(uint64_t group, const replica::SnapshotTicket& ticket) override;
  void Consumed(uint64_t group, const replica::SnapshotTicket& ticket) override;
  void Discard(uint64_t group) override;
  void Recall(uint64_t group, const std::vector<raft::NodeId>& keep) override;
  std::optional<raft::Index> Carrying(uint64_t group, raft::NodeId to) override;
  void Adopt(uint64_t group, raft::NodeId to, raft::Term term) override;
  // Once Start has deleted the images an earlier run (perhaps an older
  // version, which did not check them) left whole.
  bool ChecksImages() const override {
    return opts_.check_image != nullptr && recovered_.load(std::memory_order_acquire);
  }
  // A chunk from the transport (its thread).
  void OnChunk(raft::NodeId from, SnapshotChunk c);

  struct Stats {
    uint64_t bytes_sent = 0, bytes_received = 0;
    uint64_t sending = 0, sent = 0, failed = 0;
    uint64_t recalled = 0;  // abandoned: the sending replica left or started over, or the receiver left
  };
  Stats stats() const;

 private:
  struct Job {
    uint64_t group;
    raft::Message msg;
    replica::ImageWriter write;
    std::string dir;
    std::thread exporter;
    bool started = false;    // the exporter runs or ran
    bool cancelled = false;  // replaced by a newer transfer to the same replica, or recalled
    bool resumed = false;    // left by an earlier run of this node: no ticket to send
    uint64_t noted_acked = 0;  // progress when its .job note was last touched
    int64_t noted_us = 0;
    std::atomic<bool> exported{false};
    Status export_status;
    std::unique_ptr<ImageSender> sender;
    uint64_t seq = 0;  // when it was shipped, against recalls
  };
  void Loop();
  void Finish(Job& job, bool failed);
  // Takes up again the transfers an earlier run left (each export folder
  // with its .job file, written once it was whole), or deletes them.
  void ResumeExports();

  Transport* transport_;
  SnapshotStreamsOptions opts_;
  ReportFn report_;
  ArrivedFn arrived_;
  ImageReceiver receiver_;  // this object's thread only (Complete is const)

  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::deque<SnapshotChunk> incoming_;
  struct Drop {
    uint64_t group;
    raft::NodeId from;  // 0: every image of the group
    uint64_t export_id;
  };
  std::vector<Drop> discards_;
  struct RecallOrder {
    uint64_t group;
    std::vector<raft::NodeId> keep;
    uint64_t seq;
  };
  uint64_t seq_ = 0;  // orders Ship and Recall calls (mu_)
  // The newest transfer by (group, receiver), until it finishes or is
  // recalled (mu_; Carrying, Adopt). A newer one to the same receiver
  // replaces the older.
  struct Carried {
    uint64_t seq = 0;
    raft::Index index = 0;
    raft::Term adopted_term = 0;  // Adopt: its ticket leaves in this term
  };
  std::map<std::pair<uint64_t, raft::NodeId>, Carried> carrying_;
  std::vector<RecallOrder> recalls_;
  uint64_t incoming_bytes_ = 0;
  std::list<std::unique_ptr<Job>> new_jobs_;
  // This object's thread only.
  std::list<std::unique_ptr<Job>> jobs_;
  double tokens_ = 0;
  int64_t tokens_at_us_ = 0;
  int64_t expired_at_us_ = 0;

  std::thread thread_;
  std::atomic<uint64_t> bytes_sent_{0}, bytes_received_{0}, sending_{0}, sent_{0}, failed_{0}, recalled_{0};
  std::atomic<bool> recovered_{false};  // Start ran the receiver's Recover
};

}  // namespace shoal::node

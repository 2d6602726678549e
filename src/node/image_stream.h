// Snapshot images in chunks: the two ends of one image's transfer, with no
// threads and no network of their own (node::SnapshotStreams drives them
// over the transport; the replica simulation over its simulated network).
//
// An image is a folder of files. The sender offers it (its manifest: file
// names and sizes), then sends the files' bytes, concatenated in manifest
// order, in chunks at increasing offsets. The receiver writes each chunk
// into place and makes it durable before acknowledging the offset it now
// holds, so an acknowledgement is never taken back, and a receiver that
// restarts answers the next offer with what it kept: the transfer resumes
// there. Chunks lost, repeated or out of order are answered with the
// receiver's offset, from which the sender sends again. An image is named
// by (group, sender, export id); the export id changes with the bytes.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "common/status.h"
#include "raft/types.h"

namespace shoal::node {

struct SnapshotChunk {
  enum class Kind : uint8_t { kOffer = 0, kData = 1, kAck = 2 };
  Kind kind = Kind::kOffer;
  uint64_t group = 0;
  raft::NodeId from = raft::kNoNode;  // the image's sender (also on acks)
  raft::NodeId to = raft::kNoNode;    // the image's receiver (also on acks)
  uint64_t export_id = 0;
  uint64_t offset = 0;  // kData: where data goes; kAck: bytes held durably
  uint64_t total = 0;   // the image's size
  std::string data;     // kData: bytes; kOffer: the manifest
  bool done = false;    // kAck: the whole image is held durably
  bool refused = false; // kAck: the receiver will not take this image
  bool resync = false;  // kAck: the receiver does not know this image: offer again
};

struct ImageFile {
  std::string name;
  uint64_t size = 0;
};
std::string EncodeManifest(const std::vector<ImageFile>& files);
// Refuses names that could leave the folder and absurd sizes.
bool DecodeManifest(std::string_view raw, std::vector<ImageFile>* files);

struct ImageSenderOptions {
  uint64_t chunk_bytes = 4 << 20;
  int window = 2;                        // chunks sent and not yet acknowledged
  int64_t resend_us = 1'000'000;         // no acknowledgement this long: offer again
  int64_t give_up_us = 30'000'000;       // no progress this long: fail
};

// One image going to one receiver.
class ImageSender {
 public:
  ImageSender(uint64_t group, raft::NodeId from, raft::NodeId to, uint64_t export_id, std::string dir,
              ImageSenderOptions opts = {});
  // Lists the folder's files (the manifest); call once, before Next.
  Status Open(int64_t now_us);
  // The next chunk to send now, or nothing (waiting for acknowledgements;
  // or only offers, when !may_send_data). Reads file bytes for data chunks.
  Result<std::optional<SnapshotChunk>> Next(int64_t now_us, bool may_send_data = true);
  void OnAck(const SnapshotChunk& ack, int64_t now_us);
  bool done() const { return done_; }
  // Refused, or no progress for give_up_us.
  bool failed(int64_t now_us) const { return refused_ || now_us - progress_us_ > opts_.give_up_us; }
  uint64_t total() const { return total_; }
  uint64_t acked() const { return acked_; }
  const std::string& dir() const { return dir_; }
  uint64_t export_id() const { return export_id_; }

 private:
  uint64_t group_;
  raft::NodeId from_, to_;
  uint64_t export_id_;
  std::string dir_;
  ImageSenderOptions opts_;
  std::vector<ImageFile> files_;
  std::string manifest_;
  uint64_t total_ = 0;
  bool offered_ = false;  // the receiver answered an offer
  int64_t offer_us_ = -1;
  uint64_t acked_ = 0, sent_ = 0;
  int64_t progress_us_ = 0, ack_us_ = 0;
  bool done_ = false, refused_ = false;
};

// Every image coming to this node, kept under `root` in a folder per image:
// in-<group>-<sender>-<export id>, with .manifest, the files, .held (the
// durable offset) and .complete once all of it is durable. A new offer for
// a group supersedes that group's unfinished images, but those of other
// senders that made progress within the last kKeepActiveUs, the
// kKeepOthers furthest along (a leader that lost its leadership meanwhile,
// or restarted, and goes on sending; whichever image completes first is
// taken, see Replica::ImageArrived). Superseded
// images are removed and their senders refused from then on (so two
// senders never take turns wiping each other's transfer).
class ImageReceiver {
 public:
  // Checks an image's files once they have all arrived (null: none); an
  // image that fails is deleted and its transfer refused. It runs on the
  // receiving thread, never on a worker.
  using CheckFn = std::function<Status(const std::string& dir)>;
  explicit ImageReceiver(std::string root, CheckFn check = nullptr);
  // Removes complete images left by an earlier run (their Raft message is
  // gone with it) and unreadable folders; keeps unfinished ones to resume.
  void Recover();
  // Handles an offer or a data chunk at `now_us` (a monotonic clock);
  // returns the acknowledgement to send.
  SnapshotChunk Handle(const SnapshotChunk& c, int64_t now_us);
  // The folder of a complete image, or "".
  std::string Complete(uint64_t group, raft::NodeId from, uint64_t export_id) const;
  // Removes every image of the group (its replica left); transfers under
  // way to it are refused from then on.
  void Discard(uint64_t group);
  // Removes one image (imported, or no longer needed); its sender is told
  // it arrived if it asks again.
  void Discard(uint64_t group, raft::NodeId from, uint64_t export_id);
  // Removes images nothing has written to for `age_s` seconds (given up,
  // or whose Raft message never came).
  void Expire(int64_t age_s);
  static constexpr uint64_t kMaxChunkBytes = 16 << 20;
  static constexpr int64_t kKeepActiveUs = 30'000'000;  // as ImageSenderOptions::give_up_us
  static constexpr size_t kKeepOthers = 2;
  uint64_t bytes_received() const { return bytes_received_; }

 private:
  struct Open {
    std::vector<ImageFile> files;
    uint64_t total = 0;
    uint64_t held = 0;  // durable bytes
    int64_t touched_us = 0;  // the last offer or chunk written
  };
  using Key = std::tuple<uint64_t, raft::NodeId, uint64_t>;
  std::string DirOf(const Key& k) const;
  SnapshotChunk Ack(const SnapshotChunk& c, uint64_t held, bool done, bool refused) const;
  // Checks the image whose bytes have all arrived and marks it whole; the
  // acknowledgement of its last chunk (refused when it failed its check).
  SnapshotChunk Finish(const SnapshotChunk& c, const std::string& dir, const std::vector<ImageFile>& files,
                       uint64_t total);
  Status Write(const std::string& dir, Open& o, uint64_t offset, std::string_view data);

  std::string root_;
  CheckFn check_;
  std::map<Key, Open> open_;
  void Supersede(const Key& k);
  std::deque<Key> superseded_;  // the newest few
  std::deque<Key> consumed_;    // the newest few
  uint64_t bytes_received_ = 0;
};

}  // namespace shoal::node

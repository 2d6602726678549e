#include "node/image_stream.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <thread>
#include <vector>

#include "node/snapshot_streams.h"

namespace shoal::node {
namespace {
namespace fs = std::filesystem;

// Removes the directories TempDir made when the test program ends.
class TempDirs : public ::testing::Environment {
 public:
  void TearDown() override {
    for (const auto& d : made) fs::remove_all(d);
  }
  std::vector<fs::path> made;
};
TempDirs* const g_temp_dirs = static_cast<TempDirs*>(::testing::AddGlobalTestEnvironment(new TempDirs));

std::string TempDir(const std::string& name) {
  auto d = fs::temp_directory_path() / ("shoal_image_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(d);
  fs::create_directories(d);
  g_temp_dirs->made.push_back(d);
  return d.string();
}

std::string Bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

void WriteFile(const std::string& path, const std::string& data) {
  std::ofstream(path, std::ios::binary) << data;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// An image of three files, one empty, spread over several chunks.
struct Image {
  explicit Image(const std::string& dir) : dir(dir) {
    files = {{"a.sst", Bytes(10'000, 1)}, {"b", ""}, {"c.sst", Bytes(3'333, 2)}};
    for (auto& [name, data] : files) WriteFile(dir + "/" + name, data);
  }
  void ExpectAt(const std::string& got) const {
    ASSERT_FALSE(got.empty());
    for (auto& [name, data] : files) EXPECT_EQ(ReadFile(got + "/" + name), data) << name;
  }
  std::string dir;
  std::vector<std::pair<std::string, std::string>> files;
};

ImageSenderOptions SmallChunks() {
  ImageSenderOptions o;
  o.chunk_bytes = 1000;
  o.window = 3;
  o.resend_us = 100;
  o.give_up_us = 100'000;
  return o;
}

// Runs the transfer, losing one in `drop` chunks each way at random; a receiver
// restart (a new object on the same folder) at step `restart_at`.
bool Transfer(ImageSender& s, std::unique_ptr<ImageReceiver>& r, const std::string& root, int drop,
              int restart_at = -1) {
  int64_t now = 0;
  std::mt19937 rng(5);
  for (int step = 0; step < 100'000 && !s.done() && !s.failed(now); ++step) {
    now += 10;
    if (step == restart_at) {
      r = std::make_unique<ImageReceiver>(root);
      r->Recover();
    }
    auto c = s.Next(now);
    EXPECT_TRUE(c.ok());
    if (!c->has_value()) continue;
    if (drop > 0 && rng() % drop == 0) continue;
    SnapshotChunk ack = r->Handle(**c, now);
    if (drop > 0 && rng() % drop == 0) continue;
    s.OnAck(ack, now);
  }
  return s.done();
}

TEST(ImageStream, CarriesAFolderInChunks) {
  Image img(TempDir("src1"));
  std::string root = TempDir("dst1");
  auto r = std::make_unique<ImageReceiver>(root);
  r->Recover();
  ImageSender s(7, 1, 2, 42, img.dir, SmallChunks());
  ASSERT_TRUE(s.Open(0).ok());
  EXPECT_EQ(s.total(), 13'333u);
  EXPECT_TRUE(r->Complete(7, 1, 42).empty());
  ASSERT_TRUE(Transfer(s, r, root, 0));
  img.ExpectAt(r->Complete(7, 1, 42));
  EXPECT_EQ(r->bytes_received(), 13'333u);
  r->Discard(7);
  EXPECT_TRUE(r->Complete(7, 1, 42).empty());
}

// The receiver's check runs once every byte is there, before the image is
// whole: one that fails is deleted and its transfer refused (its sender
// gives up), and is never offered to a replica; one that passes is whole.
TEST(ImageStream, AnImageThatFailsItsCheckIsDeletedAndRefused) {
  Image img(TempDir("src_chk"));
  std::string root = TempDir("dst_chk");
  std::vector<std::string> checked;
  bool pass = false;
  auto check = [&](const std::string& dir) {
    checked.push_back(dir);
    // every file is there when it runs, the empty one too
    EXPECT_EQ(ReadFile(dir + "/a.sst"), img.files[0].second);
    EXPECT_TRUE(fs::exists(dir + "/b"));
    return pass ? Status::Ok() : Status::Corruption("bad");
  };
  auto r = std::make_unique<ImageReceiver>(root, check);
  r->Recover();
  ImageSender bad(7, 1, 2, 42, img.dir, SmallChunks());
  ASSERT_TRUE(bad.Open(0).ok());
  EXPECT_FALSE(Transfer(bad, r, root, 0));
  EXPECT_TRUE(bad.failed(0));
  ASSERT_EQ(checked.size(), 1u);
  EXPECT_TRUE(r->Complete(7, 1, 42).empty());
  EXPECT_FALSE(fs::exists(checked[0]));
  pass = true;
  ImageSender again(7, 1, 2, 42, img.dir, SmallChunks());  // the same image offered again: refused
  ASSERT_TRUE(again.Open(0).ok());
  EXPECT_FALSE(Transfer(again, r, root, 0));
  EXPECT_EQ(checked.size(), 1u);
  EXPECT_TRUE(r->Complete(7, 1, 42).empty());
  ImageSender good(7, 1, 2, 43, img.dir, SmallChunks());
  ASSERT_TRUE(good.Open(0).ok());
  ASSERT_TRUE(Transfer(good, r, root, 0));
  EXPECT_EQ(checked.size(), 2u);
  img.ExpectAt(r->Complete(7, 1, 43));
}

TEST(ImageStream, SurvivesLostChunksAndAcknowledgements) {
  Image img(TempDir("src2"));
  std::string root = TempDir("dst2");
  auto r = std::make_unique<ImageReceiver>(root);
  ImageSender s(7, 1, 2, 43, img.dir, SmallChunks());
  ASSERT_TRUE(s.Open(0).ok());
  ASSERT_TRUE(Transfer(s, r, root, 3));
  img.ExpectAt(r->Complete(7, 1, 43));
}

TEST(ImageStream, ResumesWhereTheReceiverLeftOffAfterItRestarts) {
  Image img(TempDir("src3"));
  std::string root = TempDir("dst3");
  auto r = std::make_unique<ImageReceiver>(root);
  ImageSender s(7, 1, 2, 44, img.dir, SmallChunks());
  ASSERT_TRUE(s.Open(0).ok());
  ASSERT_TRUE(Transfer(s, r, root, 0, /*restart_at=*/8));
  img.ExpectAt(r->Complete(7, 1, 44));
  // Bytes received by the first receiver were not received again.
  EXPECT_LT(r->bytes_received(), 13'333u);
  EXPECT_GT(r->bytes_received(), 0u);
}

TEST(ImageStream, ANewImageOfTheGroupReplacesAnUnfinishedOne) {
  Image img(TempDir("src4"));
  std::string root = TempDir("dst4");
  ImageReceiver r(root);
  ImageSender old(7, 1, 2, 50, img.dir, SmallChunks());
  ASSERT_TRUE(old.Open(0).ok());
  auto offer = old.Next(1);
  old.OnAck(r.Handle(**offer, 1'000'000), 1'000'001);
  auto data = old.Next(2'000'000);
  old.OnAck(r.Handle(**data, 2'000'000), 2'000'001);
  EXPECT_EQ(old.acked(), 1000u);
  EXPECT_TRUE(fs::exists(root + "/in-7-1-50"));
  // Node 3's offer comes when node 1's transfer has been idle for longer
  // than kKeepActiveUs.
  const int64_t later = 2'000'000 + ImageReceiver::kKeepActiveUs + 1;
  ImageSender next(7, 3, 2, 60, img.dir, SmallChunks());
  ASSERT_TRUE(next.Open(later).ok());
  auto offer2 = next.Next(later);
  r.Handle(**offer2, later);
  EXPECT_FALSE(fs::exists(root + "/in-7-1-50"));
  // The old sender is refused from now on (it does not wipe the new one).
  auto more = old.Next(later + 1);
  SnapshotChunk ack = r.Handle(**more, later + 1);
  EXPECT_TRUE(ack.refused);
  old.OnAck(ack, later + 2);
  EXPECT_TRUE(old.failed(later + 3));
  EXPECT_TRUE(fs::exists(root + "/in-7-3-60"));
}

// A leader that lost its leadership goes on sending its image: an offer
// from the new leader does not wipe a transfer still making progress, and
// both go on. An image taken before its sender heard it all arrived is
// answered "done". A new offer keeps two other transfers at most, the
// furthest along; once the replica left, what still comes is refused.
TEST(ImageStream, AnImageStillArrivingIsKeptBesideANewOne) {
  Image img(TempDir("src9"));
  std::string root = TempDir("dst9");
  auto r = std::make_unique<ImageReceiver>(root);
  ImageSender old(7, 1, 2, 50, img.dir, SmallChunks());
  ASSERT_TRUE(old.Open(0).ok());
  old.OnAck(r->Handle(**old.Next(1), 1), 2);
  old.OnAck(r->Handle(**old.Next(3), 3), 4);
  ASSERT_EQ(old.acked(), 1000u);
  ImageSender next(7, 3, 2, 60, img.dir, SmallChunks());
  ASSERT_TRUE(next.Open(5).ok());
  next.OnAck(r->Handle(**next.Next(5), 5), 6);
  EXPECT_TRUE(fs::exists(root + "/in-7-1-50"));
  EXPECT_TRUE(fs::exists(root + "/in-7-3-60"));
  // Both finish.
  ASSERT_TRUE(Transfer(old, r, root, 0));
  img.ExpectAt(r->Complete(7, 1, 50));
  ASSERT_TRUE(Transfer(next, r, root, 0));
  img.ExpectAt(r->Complete(7, 3, 60));
  // Taken by the replica before node 1 heard it all arrived: asked again,
  // the receiver says it did rather than taking it anew.
  r->Discard(7, 1, 50);
  SnapshotChunk offer;
  offer.kind = SnapshotChunk::Kind::kOffer;
  offer.group = 7, offer.from = 1, offer.to = 2, offer.export_id = 50, offer.total = old.total();
  offer.data = EncodeManifest({{"x", old.total()}});
  SnapshotChunk ack = r->Handle(offer, 2'000'000);
  EXPECT_TRUE(ack.done);
  EXPECT_FALSE(ack.refused);
  EXPECT_FALSE(fs::exists(root + "/in-7-1-50"));
  // A fourth sender's offer keeps only the two other transfers in progress
  // that are furthest along: node 3's image has 1000 bytes, node 4's none,
  // node 5's none (the most recent), node 6 offers.
  ImageSender a(8, 3, 2, 70, img.dir, SmallChunks()), b(8, 4, 2, 80, img.dir, SmallChunks()),
      c(8, 5, 2, 90, img.dir, SmallChunks()), d(8, 6, 2, 95, img.dir, SmallChunks());
  for (ImageSender* s : {&a, &b, &c, &d}) ASSERT_TRUE(s->Open(0).ok());
  a.OnAck(r->Handle(**a.Next(10), 10), 11);
  a.OnAck(r->Handle(**a.Next(12), 12), 13);
  ASSERT_EQ(a.acked(), 1000u);
  b.OnAck(r->Handle(**b.Next(20), 20), 21);
  c.OnAck(r->Handle(**c.Next(25), 25), 26);
  d.OnAck(r->Handle(**d.Next(30), 30), 31);
  EXPECT_TRUE(fs::exists(root + "/in-8-3-70"));
  EXPECT_FALSE(fs::exists(root + "/in-8-4-80"));
  EXPECT_TRUE(fs::exists(root + "/in-8-5-90"));
  EXPECT_TRUE(fs::exists(root + "/in-8-6-95"));
  EXPECT_TRUE(r->Handle(**b.Next(40), 40).refused);
  // The replica left: transfers under way to it are refused.
  r->Discard(8);
  EXPECT_TRUE(r->Handle(**a.Next(50), 50).refused);
}

TEST(ImageStream, TornBytesPastTheAcknowledgedOffsetAreNotKept) {
  Image img(TempDir("src7"));
  std::string root = TempDir("dst7");
  auto r = std::make_unique<ImageReceiver>(root);
  ImageSender s(7, 1, 2, 46, img.dir, SmallChunks());
  ASSERT_TRUE(s.Open(0).ok());
  s.OnAck(r->Handle(**s.Next(1), 1), 2);  // offer
  s.OnAck(r->Handle(**s.Next(3), 3), 4);  // 1000 bytes
  s.OnAck(r->Handle(**s.Next(5), 5), 6);  // 2000 bytes
  ASSERT_EQ(s.acked(), 2000u);
  // A crash in the middle of the next write left garbage past the offset.
  { std::ofstream(root + "/in-7-1-46/a.sst", std::ios::binary | std::ios::app) << std::string(700, '\0'); }
  r = std::make_unique<ImageReceiver>(root);
  r->Recover();
  ASSERT_TRUE(Transfer(s, r, root, 0));
  img.ExpectAt(r->Complete(7, 1, 46));
}

TEST(ImageStream, ARestartedReceiverThatKeptNothingAsksForAnOffer) {
  Image img(TempDir("src8"));
  std::string root = TempDir("dst8");
  auto r = std::make_unique<ImageReceiver>(root);
  ImageSender s(7, 1, 2, 47, img.dir, SmallChunks());
  ASSERT_TRUE(s.Open(0).ok());
  s.OnAck(r->Handle(**s.Next(1), 1), 2);  // offer answered, nothing written yet
  fs::remove_all(root);                 // the receiver lost its disk
  r = std::make_unique<ImageReceiver>(root);
  r->Recover();
  SnapshotChunk ack = r->Handle(**s.Next(3), 3);
  EXPECT_TRUE(ack.resync);
  s.OnAck(ack, 4);
  auto next = s.Next(5);
  ASSERT_TRUE(next->has_value());
  EXPECT_EQ((*next)->kind, SnapshotChunk::Kind::kOffer);
  ASSERT_TRUE(Transfer(s, r, root, 0));
  img.ExpectAt(r->Complete(7, 1, 47));
}

TEST(ImageStream, RefusesBadManifestsAndOutOfRangeData) {
  std::string root = TempDir("dst5");
  ImageReceiver r(root);
  for (const std::string& name : std::vector<std::string>{"../x", ".hidden", "a/b", "", std::string(100, 'a')}) {
    SnapshotChunk c;
    c.kind = SnapshotChunk::Kind::kOffer;
    c.group = 1, c.from = 2, c.to = 3, c.export_id = 4;
    c.data = EncodeManifest({{name, 10}});
    c.total = 10;
    EXPECT_TRUE(r.Handle(c, 1).refused) << name;
  }
  SnapshotChunk c;
  c.kind = SnapshotChunk::Kind::kOffer;
  c.group = 1, c.from = 2, c.to = 3, c.export_id = 4;
  c.data = EncodeManifest({{"ok", 10}});
  c.total = 11;  // disagrees with the manifest
  EXPECT_TRUE(r.Handle(c, 1).refused);
  c.total = 10;
  EXPECT_FALSE(r.Handle(c, 1).refused);
  c.kind = SnapshotChunk::Kind::kData;
  c.data = std::string(11, 'x');
  EXPECT_TRUE(r.Handle(c, 1).refused);
  EXPECT_TRUE(r.Complete(1, 2, 4).empty());
  std::vector<ImageFile> files;
  EXPECT_FALSE(DecodeManifest("garbage", &files));
}

TEST(ImageStream, GivesUpOnASilentReceiver) {
  Image img(TempDir("src6"));
  ImageSender s(7, 1, 2, 45, img.dir, SmallChunks());
  ASSERT_TRUE(s.Open(0).ok());
  int64_t now = 0;
  int offers = 0;
  while (!s.failed(now) && now < 1'000'000) {
    now += 10;
    auto c = s.Next(now);
    if (c->has_value() && (*c)->kind == SnapshotChunk::Kind::kOffer) ++offers;
  }
  EXPECT_TRUE(s.failed(now));
  EXPECT_FALSE(s.done());
  EXPECT_GT(offers, 10);  // it kept asking, at the resend interval
}

// Two nodes' SnapshotStreams over real transports on loopback; node 1
// sends at `rate` bytes a second.
struct TwoNodes {
  explicit TwoNodes(uint64_t rate)
      : ta(TransportOptions{.node_id = 1, .bind_host = "127.0.0.1"}, Deliver(), [](auto, auto) {}),
        tb(TransportOptions{.node_id = 2, .bind_host = "127.0.0.1"}, Deliver(), [](auto, auto) {}),
        dir_a(TempDir("streams_a")),
        dir_b(TempDir("streams_b")),
        rate_a(rate),
        b(&tb, {.dir = dir_b, .rate_bytes_per_s = 0, .sender = {}, .check_image = nullptr}, [](auto, auto, auto) {},
          [this](uint64_t g, const replica::SnapshotTicket& t) {
            std::lock_guard lock(mu);
            arrived.emplace_back(g, t.from, t.export_id);
          }) {
    NewA();
    tb.set_chunk_handler([this](raft::NodeId from, SnapshotChunk c) { b.OnChunk(from, std::move(c)); });
    for (Transport* t : {&ta, &tb}) {
      t->set_cluster_id(77);
      EXPECT_TRUE(t->Start().ok());
    }
    ta.SetAddress(2, "127.0.0.1", tb.port());
    tb.SetAddress(1, "127.0.0.1", ta.port());
    a->Start();
    b.Start();
  }
  ~TwoNodes() {
    a->Stop();
    b.Stop();
    ta.Stop();
    tb.Stop();
  }
  // Node 1's end, anew on the same folder (a restart of its process).
  void NewA() {
    if (a) a->Stop();
    a = std::make_unique<SnapshotStreams>(&ta, SnapshotStreamsOptions{.dir = dir_a, .rate_bytes_per_s = rate_a,
                                                                      .sender = {.chunk_bytes = 64 << 10},
                                                                      .check_image = nullptr},
                                          [this](uint64_t g, raft::NodeId to, bool failed) {
                                            std::lock_guard lock(mu);
                                            reports.emplace_back(g, to, failed);
                                          });
    ta.set_chunk_handler([this](raft::NodeId from, SnapshotChunk c) { a->OnChunk(from, std::move(c)); });
  }
  Transport::DeliverFn Deliver() {
    return [this](std::vector<GroupMessage> ms) {
      std::lock_guard lock(mu);
      for (auto& gm : ms) delivered.push_back(std::move(gm.msg));
    };
  }
  // Ships group 5's image `export_id` of `payload` to node 2.
  replica::SnapshotTicket Ship(uint64_t export_id, const std::string& payload) {
    replica::SnapshotTicket t{1, export_id};
    raft::Message m{.type = raft::MessageType::kSnap, .to = 2, .from = 1, .term = 3};
    m.snapshot.meta.index = 10;
    m.snapshot.data = t.Encode();
    a->Ship(5, m, [payload](const std::string& dir) {
      fs::create_directories(dir);
      WriteFile(dir + "/data.sst", payload);
      WriteFile(dir + "/counters", "");
      return Status::Ok();
    });
    return t;
  }
  // Waits (at most 10 s) until `done` holds, under mu.
  template <typename Cond>
  bool Wait(Cond done) {
    for (int i = 0; i < 1000; ++i) {
      {
        std::lock_guard lock(mu);
        if (done()) return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

  std::mutex mu;
  std::vector<raft::Message> delivered;
  std::vector<std::tuple<uint64_t, raft::NodeId, bool>> reports;
  std::vector<std::tuple<uint64_t, raft::NodeId, uint64_t>> arrived;  // on b
  Transport ta, tb;
  std::string dir_a, dir_b;
  uint64_t rate_a;
  std::unique_ptr<SnapshotStreams> a;
  SnapshotStreams b;
};

// The image arrives whole, then its Raft message, and the sender is told.
TEST(SnapshotStreams, StreamsAnImageThenSendsItsMessage) {
  TwoNodes n(200'000);
  const std::string payload = Bytes(300'000, 9);
  auto start = std::chrono::steady_clock::now();
  replica::SnapshotTicket t = n.Ship(99, payload);
  n.Wait([&] { return !n.reports.empty() && !n.delivered.empty(); });
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  {
    std::lock_guard lock(n.mu);
    ASSERT_EQ(n.reports.size(), 1u);
    EXPECT_EQ(n.reports[0], std::make_tuple(uint64_t{5}, raft::NodeId{2}, false));
    ASSERT_EQ(n.delivered.size(), 1u);
    EXPECT_EQ(n.delivered[0].snapshot.data, t.Encode());
  }
  std::string got = n.b.Received(5, t);
  ASSERT_FALSE(got.empty());
  EXPECT_EQ(ReadFile(got + "/data.sst"), payload);
  EXPECT_TRUE(fs::exists(got + "/counters"));
  // The rate setting holds: 300 kB at 200 kB/s (with two chunks of burst).
  EXPECT_GT(secs, 0.6);
  EXPECT_EQ(n.a->stats().bytes_sent, 300'000u);
  EXPECT_EQ(n.b.stats().bytes_received, 300'000u);
  EXPECT_EQ(n.a->stats().sent, 1u);
  EXPECT_FALSE(fs::exists(n.dir_a + "/out-5-2-99"));  // the export is cleaned up
  n.b.Discard(5);  // carried out on b's thread
  EXPECT_TRUE(n.Wait([&] { return n.b.Received(5, t).empty(); }));
}

// A sending replica that leaves or starts over, or whose receiver left the
// group, abandons the transfer: no more bytes, no ticket, no report, its export
// deleted. A recall reaches only transfers shipped before it, and one that
// keeps the receiver leaves its transfer alone.
TEST(SnapshotStreams, RecalledTransfersStop) {
  TwoNodes n(200'000);
  n.Ship(7, Bytes(2'000'000, 3));  // 10 s at this rate
  ASSERT_TRUE(n.Wait([&] { return n.a->stats().bytes_sent > 0; }));
  n.a->Recall(5, {2, 3});  // the receiver stays a member: nothing happens
  n.a->Recall(6, {});      // another group
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(n.a->stats().recalled, 0u);
  EXPECT_EQ(n.a->stats().sending, 1u);
  n.a->Recall(5, {3});     // the receiver left
  replica::SnapshotTicket later = n.Ship(8, Bytes(100'000, 4));  // shipped after the recall: it goes
  ASSERT_TRUE(n.Wait([&] { return !n.reports.empty(); }));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  std::lock_guard lock(n.mu);
  EXPECT_EQ(n.a->stats().recalled, 1u);
  EXPECT_EQ(n.a->stats().sending, 0u);
  EXPECT_LT(n.a->stats().bytes_sent, 2'000'000u);
  ASSERT_EQ(n.reports.size(), 1u);  // for the later one only
  EXPECT_EQ(n.reports[0], std::make_tuple(uint64_t{5}, raft::NodeId{2}, false));
  ASSERT_EQ(n.delivered.size(), 1u);
  EXPECT_EQ(n.delivered[0].snapshot.data, later.Encode());
  EXPECT_FALSE(fs::exists(n.dir_a + "/out-5-2-7"));
}

// The sending node restarts in the middle of a transfer: the new run takes
// it up where the receiver is, without its Raft message (whose term has
// passed: the receiver takes the image on arrival), and reports it.
TEST(SnapshotStreams, ATransferOutlivesARestartOfItsSender) {
  TwoNodes n(400'000);
  const std::string payload = Bytes(1'500'000, 5);  // about 3.5 s at this rate
  replica::SnapshotTicket t = n.Ship(41, payload);
  ASSERT_TRUE(n.Wait([&] { return n.b.stats().bytes_received > 300'000; }));
  EXPECT_TRUE(fs::exists(n.dir_a + "/out-5-2-41.job"));
  EXPECT_EQ(n.a->Carrying(5, 2), std::optional<raft::Index>(10));
  n.NewA();  // stops the first run (its thread), as a crash would end it
  EXPECT_EQ(n.a->Carrying(5, 2), std::nullopt);
  n.a->Start();
  EXPECT_EQ(n.a->Carrying(5, 2), std::optional<raft::Index>(10));
  ASSERT_TRUE(n.Wait([&] { return !n.reports.empty(); }));
  {
    std::lock_guard lock(n.mu);
    EXPECT_EQ(n.reports[0], std::make_tuple(uint64_t{5}, raft::NodeId{2}, false));
    EXPECT_TRUE(n.delivered.empty());  // no ticket of a past term
    ASSERT_FALSE(n.arrived.empty());
    EXPECT_EQ(n.arrived.back(), std::make_tuple(uint64_t{5}, raft::NodeId{1}, uint64_t{41}));
  }
  std::string got = n.b.Received(5, t);
  ASSERT_FALSE(got.empty());
  EXPECT_EQ(ReadFile(got + "/data.sst"), payload);
  // Sent once, not again from the start (a chunk at most twice).
  EXPECT_LT(n.b.stats().bytes_received, payload.size() + (64u << 10) + 64);
  EXPECT_EQ(n.a->Carrying(5, 2), std::nullopt);
  EXPECT_FALSE(fs::exists(n.dir_a + "/out-5-2-41"));
  EXPECT_FALSE(fs::exists(n.dir_a + "/out-5-2-41.job"));
  // A transfer recalled (its receiver left) is not taken up again by a
  // restart that comes before the transfer has stopped.
  n.Ship(42, payload);
  ASSERT_TRUE(n.Wait([&] { return fs::exists(n.dir_a + "/out-5-2-42.job"); }));
  n.a->Recall(5, {3});
  EXPECT_FALSE(fs::exists(n.dir_a + "/out-5-2-42.job"));
  n.NewA();
  n.a->Start();
  EXPECT_EQ(n.a->Carrying(5, 2), std::nullopt);
  EXPECT_EQ(n.a->stats().sending, 0u);
}

}  // namespace
}  // namespace shoal::node

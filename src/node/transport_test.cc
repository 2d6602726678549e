#include "node/transport.h"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

#include "common/clock.h"
#include "node/codec.h"
#include "peer.pb.h"

namespace shoal::node {
namespace {

// A transport whose deliveries are recorded.
struct Endpoint {
  explicit Endpoint(raft::NodeId id, uint64_t cluster)
      : t(TransportOptions{.node_id = id, .bind_host = "127.0.0.1", .peer_port = 0},
          [this](uint64_t group, raft::Message m) {
            std::lock_guard lock(mu);
            got.emplace_back(group, std::move(m));
          },
          [this](raft::NodeId from, std::vector<LeaderReport> l) {
            std::lock_guard lock(mu);
            leaders_from = from;
            leaders = std::move(l);
          }) {
    t.set_cluster_id(cluster);
    EXPECT_TRUE(t.Start().ok());
  }
  size_t count() {
    std::lock_guard lock(mu);
    return got.size();
  }
  Transport t;
  std::mutex mu;
  std::vector<std::pair<uint64_t, raft::Message>> got;
  raft::NodeId leaders_from = 0;
  std::vector<LeaderReport> leaders;
};

raft::Message Heartbeat(raft::NodeId from, raft::NodeId to) {
  raft::Message m;
  m.type = raft::MessageType::kHeartbeat;
  m.from = from;
  m.to = to;
  m.term = 5;
  m.commit = 9;
  return m;
}

// A plain TCP connection to 127.0.0.1:port (-1 on failure).
int ConnectTo(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Waits (bounded) for cond.
template <typename Cond>
bool WaitFor(Cond cond, int ms = 3000) {
  for (int i = 0; i < ms / 10; ++i) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return cond();
}

TEST(Transport, DeliversBatchedMessagesAndLeadershipGossip) {
  Endpoint a(1, 77), b(2, 77);
  a.t.SetAddress(2, "127.0.0.1", b.t.port());
  a.t.SetLocalLeaders({LeaderReport{4, 3, {1, 2, 5}, {7}, true}});
  std::vector<GroupMessage> msgs;
  for (uint64_t g = 1; g <= 5; ++g) msgs.push_back(GroupMessage{g, Heartbeat(1, 2)});
  a.t.Send(std::move(msgs));
  ASSERT_TRUE(WaitFor([&] { return b.count() == 5; }));
  {
    std::lock_guard lock(b.mu);
    EXPECT_EQ(b.got[4].first, 5u);
    EXPECT_EQ(b.got[4].second.commit, 9u);
    EXPECT_EQ(b.got[4].second.from, 1u);
  }
  ASSERT_TRUE(WaitFor([&] {
    std::lock_guard lock(b.mu);
    return b.leaders_from == 1 && b.leaders.size() == 1;
  }));
  {
    std::lock_guard lock(b.mu);
    EXPECT_EQ(b.leaders[0].group, 4u);
    EXPECT_EQ(b.leaders[0].term, 3u);
    EXPECT_EQ(b.leaders[0].voters, (std::vector<raft::NodeId>{1, 2, 5}));
    EXPECT_EQ(b.leaders[0].learners, (std::vector<raft::NodeId>{7}));
    EXPECT_TRUE(b.leaders[0].joint);
  }
  // b learned a's address from its frames and can answer.
  b.t.Send({GroupMessage{3, Heartbeat(2, 1)}});
  ASSERT_TRUE(WaitFor([&] { return a.count() == 1; }));
}

TEST(Transport, RefusesAnotherClustersFrames) {
  Endpoint a(1, 77), b(2, 88);
  a.t.SetAddress(2, "127.0.0.1", b.t.port());
  a.t.Send({GroupMessage{1, Heartbeat(1, 2)}});
  ASSERT_TRUE(WaitFor([&] { return b.t.frames_refused() > 0; }));
  EXPECT_EQ(b.count(), 0u);
}

TEST(Transport, SurvivesGarbageOnThePeerPort) {
  Endpoint b(2, 77);
  const std::string inputs[] = {
      std::string("\x00\x00\x00\x05hello", 9),          // not a protobuf frame
      std::string("\xff\xff\xff\xff", 4),               // oversized length
      std::string("\x00\x00\x00\x02\x08", 5),           // truncated frame, then close
      "GET / HTTP/1.1\r\nHost: x\r\n\r\n",              // wrong protocol
  };
  for (const auto& in : inputs) {
    int fd = ConnectTo(b.t.port());
    ASSERT_GE(fd, 0);
    ASSERT_EQ(write(fd, in.data(), in.size()), static_cast<ssize_t>(in.size()));
    close(fd);
  }
  ASSERT_TRUE(WaitFor([&] { return b.t.frames_refused() >= 2; }));
  // Still serving: a well-formed frame from the same cluster gets through.
  Endpoint a(1, 77);
  a.t.SetAddress(2, "127.0.0.1", b.t.port());
  a.t.Send({GroupMessage{1, Heartbeat(1, 2)}});
  ASSERT_TRUE(WaitFor([&] { return b.count() == 1; }));
  EXPECT_EQ(b.count(), 1u);
}

TEST(Transport, ReconnectsWhenThePeerComesBack) {
  Endpoint a(1, 77);
  uint16_t port = 0;
  {
    Endpoint b(2, 77);
    port = b.t.port();
    a.t.SetAddress(2, "127.0.0.1", port);
    a.t.Send({GroupMessage{1, Heartbeat(1, 2)}});
    ASSERT_TRUE(WaitFor([&] { return b.count() == 1; }));
  }
  // b is gone; a new b on the same port must receive later messages.
  std::atomic<int> got{0};
  Transport b3(TransportOptions{.node_id = 2, .bind_host = "127.0.0.1", .peer_port = port},
               [&](uint64_t, raft::Message) { got++; },
               [](raft::NodeId, std::vector<LeaderReport>) {});
  b3.set_cluster_id(77);
  ASSERT_TRUE(b3.Start().ok());
  ASSERT_TRUE(WaitFor([&] {
    a.t.Send({GroupMessage{1, Heartbeat(1, 2)}});
    return got.load() > 0;
  }, 5000));
}

// A frame as a peer would write it: a heartbeat for group 1, stamped `sent_us`.
std::string Frame(uint64_t cluster, uint64_t sent_us) {
  proto::PeerFrame pf;
  pf.set_version(1);
  pf.set_cluster_id(cluster);
  pf.set_from_node(1);
  pf.set_sent_us(sent_us);
  auto* gm = pf.add_messages();
  gm->set_group(1);
  ToProto(Heartbeat(1, 2), gm->mutable_msg());
  std::string body = pf.SerializeAsString();
  std::string out;
  for (int i = 3; i >= 0; --i) out.push_back(static_cast<char>(body.size() >> (8 * i)));
  return out + body;
}

// A stream that stalled (the kernel holds it through a partition and
// delivers it all when the partition heals): a frame that arrives much later
// than the fastest one on its connection closes the connection, and neither
// it nor anything behind it is delivered.
TEST(Transport, LateFramesCloseTheConnectionUnread) {
  Endpoint b(2, 77);
  int fd = ConnectTo(b.t.port());
  ASSERT_GE(fd, 0);
  const uint64_t now = static_cast<uint64_t>(RealClock().NowMonoUs()) + (1ULL << 40);  // any origin
  std::string first = Frame(77, now), on_time = Frame(77, now + 1000);
  ASSERT_EQ(write(fd, first.data(), first.size()), static_cast<ssize_t>(first.size()));
  ASSERT_EQ(write(fd, on_time.data(), on_time.size()), static_cast<ssize_t>(on_time.size()));
  ASSERT_TRUE(WaitFor([&] { return b.count() == 2; }));
  // Built well before the first one, arriving after it: late.
  const uint64_t late_by = static_cast<uint64_t>(Transport::kMaxLatenessUs) + 1'000'000;
  std::string late = Frame(77, now - late_by), behind = Frame(77, now + 2000);
  ASSERT_EQ(write(fd, late.data(), late.size()), static_cast<ssize_t>(late.size()));
  (void)write(fd, behind.data(), behind.size());  // may fail: the peer closes
  ASSERT_TRUE(WaitFor([&] { return b.t.frames_late() == 1; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(b.count(), 2u);
  close(fd);
  // A new connection starts afresh.
  Endpoint a(1, 77);
  a.t.SetAddress(2, "127.0.0.1", b.t.port());
  a.t.Send({GroupMessage{1, Heartbeat(1, 2)}});
  ASSERT_TRUE(WaitFor([&] { return b.count() == 3; }));
}

// Messages that waited in the send queue (the peer's address unknown, or
// unreachable) longer than kMaxMessageAgeUs are dropped, not sent late.
TEST(Transport, OldQueuedMessagesAreDroppedNotSent) {
  Endpoint a(1, 77), b(2, 77);
  a.t.Send({GroupMessage{1, Heartbeat(1, 2)}});  // no address yet: it waits
  std::this_thread::sleep_for(std::chrono::microseconds(Transport::kMaxMessageAgeUs + 300'000));
  a.t.SetAddress(2, "127.0.0.1", b.t.port());
  ASSERT_TRUE(WaitFor([&] { return a.t.messages_expired() == 1; }));
  a.t.Send({GroupMessage{2, Heartbeat(1, 2)}});
  ASSERT_TRUE(WaitFor([&] { return b.count() == 1; }));
  std::lock_guard lock(b.mu);
  EXPECT_EQ(b.got[0].first, 2u);  // the fresh one only
}

}  // namespace
}  // namespace shoal::node

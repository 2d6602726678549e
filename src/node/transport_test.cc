#include "node/transport.h"

#include "node/deadline.h"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

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
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(b.t.port());
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
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

}  // namespace
}  // namespace shoal::node

namespace shoal::node {
namespace {

// A peer that accepts and never answers: a read under a Deadline ends when
// the deadline passes, cut short (operation_aborted), instead of waiting
// forever; one that answers in time is not disturbed.
TEST(Deadline, CutsShortAReadThatIsNeverAnswered) {
  int lfd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(lfd, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(lfd, 4), 0);
  socklen_t len = sizeof a;
  ASSERT_EQ(::getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len), 0);
  const uint16_t port = ntohs(a.sin_port);
  asio::io_context io;
  asio::ip::tcp::socket sock(io);
  sock.connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));  // the backlog accepts it
  char buf[8];
  asio::error_code got;
  bool expired = false;
  auto start = std::chrono::steady_clock::now();
  {
    Deadline deadline(sock, std::chrono::milliseconds(200));
    sock.async_read_some(asio::buffer(buf), [&](const asio::error_code& ec, size_t) {
      got = ec;
      expired = deadline.expired();
    });
    io.run_for(std::chrono::seconds(5));
  }
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(got, asio::error::operation_aborted);
  EXPECT_TRUE(expired);
  EXPECT_LT(took, std::chrono::seconds(3));
  EXPECT_GE(took, std::chrono::milliseconds(190));
  // Answered in time: the read completes with its bytes.
  int cfd = ::accept(lfd, nullptr, nullptr);
  ASSERT_GE(cfd, 0);
  ASSERT_EQ(::write(cfd, "pong", 4), 4);
  io.restart();
  size_t n = 0;
  got = asio::error::would_block;
  {
    Deadline deadline(sock, std::chrono::seconds(5));
    sock.async_read_some(asio::buffer(buf), [&](const asio::error_code& ec, size_t k) {
      got = ec;
      n = k;
      io.stop();  // the deadline's timer would keep run_for going
    });
    io.run_for(std::chrono::seconds(5));
  }
  EXPECT_FALSE(got);
  EXPECT_EQ(n, 4u);
  ::close(cfd);
  ::close(lfd);
}

}  // namespace
}  // namespace shoal::node

#include "node/transport.h"

#include "node/codec.h"
#include "node/deadline.h"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <thread>

namespace shoal::node {
namespace {

// A worker's event loop on a thread of its own, where a transport may read
// its accepted connections (TransportOptions::readers), as a node's does.
struct Reader {
  Reader() : guard(io.get_executor()), thread([this] { io.run(); }) {}
  ~Reader() { Stop(); }
  void Stop() {
    guard.reset();
    io.stop();
    if (thread.joinable()) thread.join();
  }
  asio::io_context io{1};
  asio::executor_work_guard<asio::io_context::executor_type> guard;
  std::thread thread;
};

// Each transport test runs twice: reading connections on the transport
// thread, and on a worker.
bool g_on_worker = false;
class TransportReads : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override { g_on_worker = GetParam(); }
};
std::vector<asio::io_context*> ReadersOf(Reader& r) {
  return g_on_worker ? std::vector<asio::io_context*>{&r.io} : std::vector<asio::io_context*>{};
}

// A transport whose deliveries are recorded.
struct Endpoint {
  explicit Endpoint(raft::NodeId id, uint64_t cluster, std::string secret = "")
      : t(TransportOptions{.node_id = id,
                           .bind_host = "127.0.0.1",
                           .peer_port = 0,
                           .secret = std::move(secret),
                           .readers = ReadersOf(reader)},
          [this](std::vector<GroupMessage> msgs) {
            std::lock_guard lock(mu);
            delivered_on = std::this_thread::get_id();
            for (auto& gm : msgs) got.emplace_back(gm.group, std::move(gm.msg));
          },
          [this](raft::NodeId from, std::vector<LeaderReport> l) {
            std::lock_guard lock(mu);
            leaders_from = from;
            leaders = std::move(l);
          }) {
    t.set_cluster_id(cluster);
    EXPECT_TRUE(t.Start().ok());
  }
  // As a node stops: the transport, then the workers.
  ~Endpoint() {
    t.Stop();
    reader.Stop();
  }
  size_t count() {
    std::lock_guard lock(mu);
    return got.size();
  }
  Reader reader;
  Transport t;
  std::mutex mu;
  std::vector<std::pair<uint64_t, raft::Message>> got;
  std::thread::id delivered_on;  // the thread of the last delivery
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

// A plain socket connected to 127.0.0.1:port (-1 on failure).
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

TEST_P(TransportReads, DeliversBatchedMessagesAndLeadershipGossip) {
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
    // Read where the options say: on the worker given, or not.
    EXPECT_EQ(b.delivered_on == b.reader.thread.get_id(), g_on_worker);
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

TEST_P(TransportReads, RefusesAnotherClustersFrames) {
  Endpoint a(1, 77), b(2, 88);
  a.t.SetAddress(2, "127.0.0.1", b.t.port());
  a.t.Send({GroupMessage{1, Heartbeat(1, 2)}});
  ASSERT_TRUE(WaitFor([&] { return b.t.frames_refused() > 0; }));
  EXPECT_EQ(b.count(), 0u);
}

TEST_P(TransportReads, SurvivesGarbageOnThePeerPort) {
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

constexpr const char* kSecret = "0123456789abcdef-secret";

TEST_P(TransportReads, PeersThatProveTheSecretTalk) {
  Endpoint a(1, 77, kSecret), b(2, 77, kSecret);
  a.t.SetAddress(2, "127.0.0.1", b.t.port());
  a.t.Send({GroupMessage{1, Heartbeat(1, 2)}});
  ASSERT_TRUE(WaitFor([&] { return b.count() == 1; }));
  b.t.Send({GroupMessage{1, Heartbeat(2, 1)}});  // the other way, on its own connection
  ASSERT_TRUE(WaitFor([&] { return a.count() == 1; }));
  EXPECT_EQ(a.t.peers_refused() + b.t.peers_refused(), 0u);
}

// A node with another secret, or none, is refused by one with a secret, and
// a node with a secret will not talk to one without: nothing is delivered
// either way, and each side counts the refusal.
TEST_P(TransportReads, PeersWithoutTheSecretAreRefusedBothWays) {
  Endpoint b(2, 77, kSecret);
  Endpoint wrong(1, 77, "another-secret-of-16-bytes"), none(3, 77);
  wrong.t.SetAddress(2, "127.0.0.1", b.t.port());
  none.t.SetAddress(2, "127.0.0.1", b.t.port());
  wrong.t.Send({GroupMessage{1, Heartbeat(1, 2)}});
  none.t.Send({GroupMessage{1, Heartbeat(3, 2)}});
  ASSERT_TRUE(WaitFor([&] {
    return b.t.peers_refused() >= 2 && wrong.t.peers_refused() >= 1 && none.t.peers_refused() >= 1;
  }));
  // And a node with the secret refuses to send to one without it.
  Endpoint open(4, 77);
  b.t.SetAddress(4, "127.0.0.1", open.t.port());
  b.t.Send({GroupMessage{1, Heartbeat(2, 4)}});
  const uint64_t before = open.t.peers_refused();
  ASSERT_TRUE(WaitFor([&] { return open.t.peers_refused() > before; }));  // it logs the refusal too
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(b.count(), 0u);
  EXPECT_EQ(open.count(), 0u);
  // The right secret still gets through afterwards.
  Endpoint good(5, 77, kSecret);
  good.t.SetAddress(2, "127.0.0.1", b.t.port());
  good.t.Send({GroupMessage{1, Heartbeat(5, 2)}});
  ASSERT_TRUE(WaitFor([&] { return b.count() == 1; }));
}

// Someone who reads the greeting and sends a well-formed frame of the right
// cluster without the handshake's proof injects nothing.
TEST_P(TransportReads, AFrameWithoutTheProofIsNotTaken) {
  Endpoint b(2, 77, kSecret);
  int fd = ConnectTo(b.t.port());
  ASSERT_GE(fd, 0);
  char greeting[41];
  ASSERT_EQ(read(fd, greeting, sizeof greeting), 41);
  EXPECT_EQ(std::string(greeting, 8), "SHOALPG1");
  EXPECT_EQ(greeting[8], 1);  // a secret is required
  // 72 bytes of a made-up answer (magic, nonce, proof).
  std::string forged = "SHOALPA1" + std::string(64, 'x');
  ASSERT_EQ(write(fd, forged.data(), forged.size()), 72);
  ASSERT_TRUE(WaitFor([&] { return b.t.peers_refused() >= 1; }));
  char byte;
  EXPECT_LE(read(fd, &byte, 1), 0);  // closed on it
  close(fd);
  EXPECT_EQ(b.count(), 0u);
}

// Someone on the path who lets the handshake through and then changes one
// byte of a frame gets nothing delivered: each frame carries a MAC keyed by
// the connection's session key.
TEST_P(TransportReads, AFrameChangedOnTheWayIsRefused) {
  Endpoint a(1, 77, kSecret), b(2, 77, kSecret);
  // A relay from a to b on a port of its own, flipping the 20th byte a
  // sends after its 72-byte answer to the challenge.
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(lfd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  ASSERT_EQ(bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(lfd, 4), 0);
  socklen_t alen = sizeof(addr);
  ASSERT_EQ(getsockname(lfd, reinterpret_cast<sockaddr*>(&addr), &alen), 0);
  std::atomic<bool> stop{false};
  std::thread relay([&] {
    timeval tv{0, 100000};
    setsockopt(lfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int from = -1;
    for (int i = 0; i < 50 && from < 0 && !stop; ++i) from = accept(lfd, nullptr, nullptr);
    if (from < 0) return;
    int to = ConnectTo(b.t.port());
    if (to < 0) return;
    setsockopt(from, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(to, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    size_t upstream = 0;
    char buf[65536];
    for (int round = 0; round < 100 && !stop; ++round) {
      ssize_t n = read(to, buf, sizeof buf);  // b -> a: greeting, proof
      if (n > 0) (void)!write(from, buf, static_cast<size_t>(n));
      n = read(from, buf, sizeof buf);  // a -> b
      if (n == 0) break;
      if (n > 0) {
        for (ssize_t k = 0; k < n; ++k, ++upstream) {
          if (upstream == 72 + 20) buf[k] ^= 0x01;
        }
        (void)!write(to, buf, static_cast<size_t>(n));
      }
    }
    close(from);
    close(to);
  });
  a.t.SetAddress(2, "127.0.0.1", ntohs(addr.sin_port));
  a.t.Send({GroupMessage{1, Heartbeat(1, 2)}});
  ASSERT_TRUE(WaitFor([&] { return b.t.peers_refused() >= 1; }));
  stop = true;
  relay.join();
  close(lfd);
  EXPECT_EQ(b.count(), 0u);
}

// A frame as a peer of cluster 77 sends it: one message for `group`, and
// where the sender listens for peers when `peer_port` is not 0.
std::string FrameOf(uint64_t group, const raft::Message& m, uint16_t peer_port = 0) {
  proto::PeerFrame pf;
  pf.set_version(1);
  pf.set_cluster_id(77);
  pf.set_from_node(m.from);
  if (peer_port != 0) {
    pf.set_from_host("127.0.0.1");
    pf.set_from_peer_port(peer_port);
  }
  auto* gm = pf.add_messages();
  gm->set_group(group);
  ToProto(m, gm->mutable_msg());
  std::string body = pf.SerializeAsString();
  std::string frame;
  for (int i = 3; i >= 0; --i) frame.push_back(static_cast<char>(body.size() >> (8 * i)));
  return frame + body;
}

// Frames are taken however the bytes arrive: many in one read, one split
// into pieces of a few bytes, and one longer than the reader's first room.
TEST_P(TransportReads, TakesFramesHoweverTheirBytesArrive) {
  Endpoint b(2, 77);
  int fd = ConnectTo(b.t.port());
  ASSERT_GE(fd, 0);
  std::string together;
  for (uint64_t g = 1; g <= 20; ++g) together += FrameOf(g, Heartbeat(1, 2));
  ASSERT_EQ(write(fd, together.data(), together.size()), static_cast<ssize_t>(together.size()));
  ASSERT_TRUE(WaitFor([&] { return b.count() == 20; }));
  std::string pieces;
  for (uint64_t g = 21; g <= 30; ++g) pieces += FrameOf(g, Heartbeat(1, 2));
  raft::Message big = Heartbeat(1, 2);
  big.type = raft::MessageType::kApp;
  big.entries.push_back(raft::Entry{5, 10, raft::EntryType::kNormal, std::string(300 * 1024, 'x')});
  pieces += FrameOf(31, big);
  pieces += FrameOf(32, Heartbeat(1, 2));
  for (size_t at = 0, step = 1; at < pieces.size(); at += step, step = step % 7 + 1) {
    if (at > pieces.size() - 30 * 1024 && at < pieces.size() - 29 * 1024) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));  // the long frame's end comes late
    }
    const size_t n = std::min(at < 1000 ? step : 16 * 1024, pieces.size() - at);
    ASSERT_EQ(write(fd, pieces.data() + at, n), static_cast<ssize_t>(n));
    if (at < 1000) std::this_thread::sleep_for(std::chrono::microseconds(200));
    if (at >= 1000) step = n;
  }
  ASSERT_TRUE(WaitFor([&] { return b.count() == 32; }));
  close(fd);
  std::lock_guard lock(b.mu);
  for (uint64_t g = 1; g <= 32; ++g) EXPECT_EQ(b.got[g - 1].first, g);
  ASSERT_EQ(b.got[30].second.entries.size(), 1u);
  EXPECT_EQ(b.got[30].second.entries[0].data, std::string(300 * 1024, 'x'));
  EXPECT_EQ(b.got[31].second.commit, 9u);
  EXPECT_EQ(b.t.frames_refused(), 0u);
}

// A frame over 256 KiB (a snapshot chunk) is not read on the worker: the
// connection moves to the transport thread for it, and back to the worker
// once its frames have been short for a second. Every frame arrives, in
// order, also when frames on either side of a move come in one read.
TEST_P(TransportReads, LongFramesAreReadOffTheWorker) {
  Endpoint b(2, 77);
  int fd = ConnectTo(b.t.port());
  ASSERT_GE(fd, 0);
  raft::Message big = Heartbeat(1, 2);
  big.type = raft::MessageType::kApp;
  big.entries.push_back(raft::Entry{5, 10, raft::EntryType::kNormal, std::string(300 * 1024, 'x')});
  uint64_t sent = 0;
  // Frames for the next groups, in one write; waits until all arrived.
  auto send = [&](std::initializer_list<const raft::Message*> ms) {
    std::string frames;
    for (const raft::Message* m : ms) frames += FrameOf(++sent, *m);
    EXPECT_EQ(write(fd, frames.data(), frames.size()), static_cast<ssize_t>(frames.size()));
    return WaitFor([&] { return b.count() == sent; });
  };
  auto on_worker = [&] {
    std::lock_guard lock(b.mu);
    return b.delivered_on == b.reader.thread.get_id();
  };
  const raft::Message hb = Heartbeat(1, 2);
  ASSERT_TRUE(send({&hb}));
  EXPECT_EQ(on_worker(), g_on_worker);
  ASSERT_TRUE(send({&hb, &big, &hb}));  // a short one before the move, one after it
  EXPECT_FALSE(on_worker());
  ASSERT_TRUE(send({&hb}));  // within a second of the long one: still off the worker
  EXPECT_FALSE(on_worker());
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  ASSERT_TRUE(send({&hb, &hb, &hb}));  // the first read there, the rest after the move back
  EXPECT_EQ(on_worker(), g_on_worker);
  ASSERT_TRUE(send({&big}));
  EXPECT_FALSE(on_worker());
  close(fd);
  std::lock_guard lock(b.mu);
  ASSERT_EQ(b.got.size(), 9u);
  for (uint64_t g = 1; g <= 9; ++g) EXPECT_EQ(b.got[g - 1].first, g);
  ASSERT_EQ(b.got[2].second.entries.size(), 1u);
  EXPECT_EQ(b.got[2].second.entries[0].data, std::string(300 * 1024, 'x'));
  EXPECT_EQ(b.got[8].second.entries.at(0).data.size(), 300u * 1024);
  EXPECT_EQ(b.t.frames_refused(), 0u);
}

// The same with the cluster secret: each frame's MAC covers its number on
// the connection, which carries on across the moves.
TEST_P(TransportReads, LongFramesWithTheSecretKeepTheirMacs) {
  Endpoint a(1, 77, kSecret), b(2, 77, kSecret);
  a.t.SetAddress(2, "127.0.0.1", b.t.port());
  raft::Message big = Heartbeat(1, 2);
  big.type = raft::MessageType::kApp;
  big.entries.push_back(raft::Entry{5, 10, raft::EntryType::kNormal, std::string(300 * 1024, 'y')});
  uint64_t group = 0;
  for (int i = 0; i < 3; ++i) {
    a.t.Send({GroupMessage{++group, Heartbeat(1, 2)}});
    a.t.Send({GroupMessage{++group, big}});
    a.t.Send({GroupMessage{++group, Heartbeat(1, 2)}});
    ASSERT_TRUE(WaitFor([&] { return b.count() == group; }));
    if (i == 1) std::this_thread::sleep_for(std::chrono::milliseconds(1100));  // back to the worker
  }
  std::lock_guard lock(b.mu);
  ASSERT_EQ(b.got.size(), 9u);
  for (uint64_t g = 1; g <= 9; ++g) EXPECT_EQ(b.got[g - 1].first, g);
  EXPECT_EQ(b.got[7].second.entries.at(0).data, std::string(300 * 1024, 'y'));
  EXPECT_EQ(b.t.peers_refused() + b.t.frames_refused(), 0u);
}

// A peer writes on one connection at a time: once a newer connection from
// it has brought a frame, what comes on an older one is older than that and
// is not taken, and the older connection is closed.
TEST_P(TransportReads, AnOlderConnectionOfAPeerIsDroppedOnceANewerOneSpoke) {
  Endpoint b(2, 77);
  int old_fd = ConnectTo(b.t.port());
  ASSERT_GE(old_fd, 0);
  std::string frame = FrameOf(1, Heartbeat(1, 2));
  ASSERT_EQ(write(old_fd, frame.data(), frame.size()), static_cast<ssize_t>(frame.size()));
  ASSERT_TRUE(WaitFor([&] { return b.count() == 1; }));
  int new_fd = ConnectTo(b.t.port());
  ASSERT_GE(new_fd, 0);
  frame = FrameOf(2, Heartbeat(1, 2));
  ASSERT_EQ(write(new_fd, frame.data(), frame.size()), static_cast<ssize_t>(frame.size()));
  ASSERT_TRUE(WaitFor([&] { return b.count() == 2; }));
  frame = FrameOf(3, Heartbeat(1, 2));
  ASSERT_EQ(write(old_fd, frame.data(), frame.size()), static_cast<ssize_t>(frame.size()));
  timeval tv{3, 0};
  setsockopt(old_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char buf[64];
  ssize_t n = 0;
  for (int reads = 0; reads < 10 && (n = read(old_fd, buf, sizeof buf)) > 0; ++reads) {
  }  // the greeting, then the end: closed on it
  EXPECT_EQ(n, 0);
  frame = FrameOf(4, Heartbeat(1, 2));
  ASSERT_EQ(write(new_fd, frame.data(), frame.size()), static_cast<ssize_t>(frame.size()));
  ASSERT_TRUE(WaitFor([&] { return b.count() == 3; }));
  close(old_fd);
  close(new_fd);
  std::lock_guard lock(b.mu);
  EXPECT_EQ(b.got[0].first, 1u);
  EXPECT_EQ(b.got[1].first, 2u);
  EXPECT_EQ(b.got[2].first, 4u);
}

// Messages from one thread arrive in the order sent, whether Send() wrote
// their frame itself (the connection idle), left the rest of a frame the
// socket did not take to the writer, or queued them behind the writer's
// frames. b stops reading until a's socket is full, then frames of every
// size go while a second thread sends heartbeats beside them.
void SendsKeepTheirOrder(const std::string& secret) {
  std::atomic<bool> hold{true}, held{false};
  std::mutex mu;
  std::map<uint64_t, std::vector<uint64_t>> seen;  // group -> commits, as delivered
  Reader reader;
  Transport b(TransportOptions{.node_id = 2,
                               .bind_host = "127.0.0.1",
                               .peer_port = 0,
                               .secret = secret,
                               .readers = ReadersOf(reader)},
              [&](std::vector<GroupMessage> ms) {
                if (hold.load()) {
                  held = true;
                  WaitFor([&] { return !hold.load(); }, 10000);
                  held = false;
                }
                std::lock_guard lock(mu);
                for (auto& gm : ms) seen[gm.group].push_back(gm.msg.commit);
              },
              [](raft::NodeId, std::vector<LeaderReport>) {});
  b.set_cluster_id(77);
  ASSERT_TRUE(b.Start().ok());
  struct StopBoth {  // as a node stops: the transport, then the workers
    Transport& b;
    Reader& reader;
    ~StopBoth() {
      b.Stop();
      reader.Stop();
    }
  } stop_both{b, reader};
  struct Release {  // b reads again before it stops, however the test ends
    std::atomic<bool>& hold;
    ~Release() { hold = false; }
  } release{hold};
  Endpoint a(1, 77, secret);
  a.t.SetAddress(2, "127.0.0.1", b.port());
  uint64_t large = 0;
  auto send_large = [&](size_t bytes) {
    raft::Message m = Heartbeat(1, 2);
    m.type = raft::MessageType::kApp;
    m.commit = ++large;
    m.entries.push_back(raft::Entry{5, large, raft::EntryType::kNormal, std::string(bytes, static_cast<char>('a' + large % 26))});
    a.t.Send({GroupMessage{1, std::move(m)}});
  };
  auto delivered = [&](uint64_t group) {
    std::lock_guard lock(mu);
    return seen[group].size();
  };
  // Frames Send() writes itself while b does not read, until one finds the
  // socket full. A gossip frame may wake the writer meanwhile and take a
  // frame that fills it: then b reads again and it starts over.
  for (int attempt = 0; attempt < 5 && a.t.direct_rests() == 0; ++attempt) {
    hold = true;
    ASSERT_TRUE(WaitFor([&] {
      a.t.Send({GroupMessage{3, Heartbeat(1, 2)}});  // b stops reading on it
      return held.load();
    }));
    for (int i = 0; i < 1000 && a.t.direct_rests() == 0; ++i) {
      const uint64_t direct = a.t.frames_sent_direct();
      send_large(40 * 1024);
      if (a.t.frames_sent_direct() == direct && a.t.direct_rests() == 0) break;  // the writer's
    }
    hold = false;
    ASSERT_TRUE(WaitFor([&] { return delivered(1) == large; }, 20000));
  }
  ASSERT_GT(a.t.direct_rests(), 0u);
  hold = true;
  constexpr uint64_t kSmall = 400;
  std::thread beside([&] {
    for (uint64_t i = 1; i <= kSmall; ++i) {
      raft::Message m = Heartbeat(1, 2);
      m.commit = i;
      a.t.Send({GroupMessage{2, std::move(m)}});
      if (i % 50 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      if (i == 100) hold = false;
    }
  });
  // Every fourth is too large for Send() to write.
  for (int i = 0; i < 80; ++i) send_large(i % 4 == 0 ? 300 * 1024 : 40 * 1024);
  beside.join();
  hold = false;
  ASSERT_TRUE(WaitFor([&] { return delivered(1) == large && delivered(2) == kSmall; }, 20000));
  std::lock_guard lock(mu);
  for (uint64_t i = 1; i <= large; ++i) ASSERT_EQ(seen[1][i - 1], i);
  for (uint64_t i = 1; i <= kSmall; ++i) ASSERT_EQ(seen[2][i - 1], i);
  EXPECT_GT(a.t.frames_sent(), a.t.frames_sent_direct());  // the writer wrote some
  EXPECT_EQ(b.frames_refused(), 0u);
  EXPECT_EQ(b.peers_refused(), 0u);
}

TEST_P(TransportReads, SendsKeepTheirOrderHoweverTheirFramesLeave) { SendsKeepTheirOrder(""); }

TEST_P(TransportReads, SendsKeepTheirOrderHoweverTheirFramesLeaveWithTheSecret) { SendsKeepTheirOrder(kSecret); }

// One Send() to two peers, where one peer's messages leave at once and the
// other's go to its writer (too large to write at once): those arrive whole.
TEST_P(TransportReads, MessagesLeftToTheWriterArriveWhole) {
  Endpoint a(1, 77), b(2, 77), c(3, 77);
  a.t.SetAddress(2, "127.0.0.1", b.t.port());
  a.t.SetAddress(3, "127.0.0.1", c.t.port());
  a.t.Send({GroupMessage{1, Heartbeat(1, 2)}, GroupMessage{1, Heartbeat(1, 3)}});
  ASSERT_TRUE(WaitFor([&] { return b.count() == 1 && c.count() == 1; }));
  constexpr int kRounds = 20;
  for (int i = 0; i < kRounds; ++i) {
    raft::Message app = Heartbeat(1, 2);
    app.type = raft::MessageType::kApp;
    app.commit = static_cast<uint64_t>(i);
    app.context = "transfer";
    app.entries.push_back(raft::Entry{5, 10, raft::EntryType::kNormal, std::string(100 * 1024, 'e')});
    a.t.Send({GroupMessage{1, std::move(app)}, GroupMessage{1, Heartbeat(1, 3)}});
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  ASSERT_TRUE(WaitFor([&] { return b.count() == 1 + kRounds && c.count() == 1 + kRounds; }));
  EXPECT_GT(a.t.frames_sent_direct(), 0u);  // c's heartbeats, for the most part
  std::lock_guard lock(b.mu);
  for (int i = 1; i <= kRounds; ++i) {
    const raft::Message& m = b.got[static_cast<size_t>(i)].second;
    EXPECT_EQ(m.commit, static_cast<uint64_t>(i - 1));
    EXPECT_EQ(m.context, "transfer");
    ASSERT_EQ(m.entries.size(), 1u);
    EXPECT_EQ(m.entries[0].data, std::string(100 * 1024, 'e'));
  }
}

TEST_P(TransportReads, ReconnectsWhenThePeerComesBack) {
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
               [&](std::vector<GroupMessage> ms) { got += static_cast<int>(ms.size()); },
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

// A socket listening on a free loopback port (-1 on failure), and the port.
int ListenOnLoopback(uint16_t* port) {
  int lfd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (lfd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(lfd, 4) != 0 ||
      ::getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ::close(lfd);
    return -1;
  }
  *port = ntohs(a.sin_port);
  return lfd;
}

// A peer is reported gone only on the evidence that its process ended: a
// connection from it ended by its side, nothing came from it since, and its
// Raft port refused a connection. Here the peer (node 2) is played with
// plain sockets: its Raft port still takes connections (into the backlog)
// when its connection ends, so the probe finds it alive; it is reported once
// its port refuses this node's writer, and only once.
TEST_P(TransportReads, APeerIsGoneWhenItsConnectionEndedAndItsPortRefuses) {
  std::atomic<int> gone{0};  // outlives the transport that counts into it
  Endpoint a(1, 77);
  a.t.set_gone_handler([&](raft::NodeId node) {
    EXPECT_EQ(node, 2u);
    ++gone;
  });
  uint16_t port = 0;
  int lfd = ListenOnLoopback(&port);
  ASSERT_GE(lfd, 0);
  auto speak = [&] {
    int fd = ConnectTo(a.t.port());
    EXPECT_GE(fd, 0);
    const std::string frame = FrameOf(1, Heartbeat(2, 1), port);
    EXPECT_EQ(write(fd, frame.data(), frame.size()), static_cast<ssize_t>(frame.size()));
    return fd;
  };
  int fd = speak();
  ASSERT_TRUE(WaitFor([&] { return a.count() == 1; }));
  close(fd);  // its connection ends; its port still takes connections
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  EXPECT_EQ(gone.load(), 0);

  close(lfd);  // now its port refuses: this node's writer, dialing it again, is told
  ASSERT_TRUE(WaitFor([&] { return gone.load() == 1; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(400));  // refused again and again: once
  EXPECT_EQ(gone.load(), 1);

  // It speaks again: its port still refuses, but that alone is not enough.
  fd = speak();
  ASSERT_TRUE(WaitFor([&] { return a.count() == 2; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  EXPECT_EQ(gone.load(), 1);

  close(fd);  // its connection ends once more: the probe is refused at once
  ASSERT_TRUE(WaitFor([&] { return gone.load() == 2; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  EXPECT_EQ(gone.load(), 2);
  EXPECT_EQ(a.t.peers_gone(), 2u);
}

// A peer that accepts and never answers: a read under a Deadline ends when
// the deadline passes, cut short (operation_aborted), instead of waiting
// forever; one that answers in time is not disturbed.
TEST(Deadline, CutsShortAReadThatIsNeverAnswered) {
  uint16_t port = 0;
  int lfd = ListenOnLoopback(&port);
  ASSERT_GE(lfd, 0);
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

// A read under a MovingDeadline ends once the deadline passes (checked
// every `period`), and not while it is cleared.
TEST(MovingDeadline, CutsShortAReadOnceItsDeadlinePasses) {
  uint16_t port = 0;
  int lfd = ListenOnLoopback(&port);
  ASSERT_GE(lfd, 0);
  asio::io_context io;
  asio::ip::tcp::socket sock(io);
  sock.connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  int cfd = ::accept(lfd, nullptr, nullptr);
  ASSERT_GE(cfd, 0);
  char buf[8];
  asio::error_code got = asio::error::would_block;
  size_t n = 0;
  MovingDeadline deadline(sock, std::chrono::milliseconds(20));
  // Cleared: a read that waits 300 ms for its bytes gets them.
  deadline.Clear();
  sock.async_read_some(asio::buffer(buf), [&](const asio::error_code& ec, size_t k) {
    got = ec;
    n = k;
  });
  asio::steady_timer later(io, std::chrono::milliseconds(300));
  later.async_wait([&](const asio::error_code&) { EXPECT_EQ(::write(cfd, "pong", 4), 4); });
  for (int i = 0; i < 100 && n == 0; ++i) io.run_for(std::chrono::milliseconds(20));
  EXPECT_FALSE(got);
  EXPECT_EQ(n, 4u);
  EXPECT_FALSE(deadline.expired());
  // Set: a read that is never answered is cut short after about 200 ms.
  got = asio::error::would_block;
  deadline.Set(std::chrono::milliseconds(200));
  auto start = std::chrono::steady_clock::now();
  bool done = false;
  sock.async_read_some(asio::buffer(buf), [&](const asio::error_code& ec, size_t) {
    got = ec;
    done = true;
  });
  for (int i = 0; i < 250 && !done; ++i) io.run_for(std::chrono::milliseconds(20));
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(got, asio::error::operation_aborted);
  EXPECT_TRUE(deadline.expired());
  EXPECT_GE(took, std::chrono::milliseconds(190));
  EXPECT_LT(took, std::chrono::seconds(3));
  ::close(cfd);
  ::close(lfd);
}

INSTANTIATE_TEST_SUITE_P(, TransportReads, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "OnAWorker" : "OnTheTransportThread";
                         });

}  // namespace
}  // namespace shoal::node

#include "node/transport.h"

#include <asio/co_spawn.hpp>
#include <asio/connect.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/post.hpp>
#include <asio/read.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include <spdlog/spdlog.h>

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <optional>

#include "common/member_id.h"
#include "common/secret.h"
#include "node/codec.h"
#include "node/deadline.h"
#include "peer.pb.h"

namespace shoal::node {
namespace {

constexpr uint32_t kWireVersion = 1;
constexpr auto kGossipInterval = std::chrono::milliseconds(100);
constexpr auto kBackoffMin = std::chrono::milliseconds(20);
constexpr auto kBackoffMax = std::chrono::milliseconds(500);
// Socket deadlines. A peer gossips every kGossipInterval, so a connection
// silent for kIdleMax is dead (a half-open connection, a stopped process).
// A frame gets 30 s plus a second per MiB (a frame is usually under ~12 MiB,
// but one large entry travels alone: a 512 MiB value may take minutes on a
// slow link); slower than that, the link is made anew.
constexpr auto kConnectMax = std::chrono::seconds(2);
// How long a probe of a peer that closed its connection watches the
// connection it made (Transport::ProbeGone).
constexpr auto kProbeWatch = std::chrono::milliseconds(100);
// How long after a peer's connection ended a refused dial of its Raft port
// still shows that its process ended (a few of its writer's redials).
constexpr auto kGoneEvidenceMax = std::chrono::seconds(2);
constexpr auto kIdleMax = std::chrono::seconds(30);
// How often a connection's reads look whether their deadline passed.
constexpr auto kDeadlineCheck = std::chrono::seconds(1);
// A connection's first room to read frames into.
constexpr size_t kReadRoom = 64 * 1024;
// Frames longer than this (snapshot chunks, large entries) are read on the
// transport thread, and a connection goes back to its reader once it has
// brought none for kLongFramesGone.
constexpr uint32_t kLongFrame = 256 * 1024;
constexpr auto kLongFramesGone = std::chrono::seconds(1);
std::chrono::seconds FrameMax(size_t bytes) { return std::chrono::seconds(30 + (bytes >> 20)); }
// Messages queued for an unreachable peer beyond this are dropped (Raft resends).
constexpr size_t kQueueMax = 8192;
constexpr size_t kChunkQueueMax = 64;
// A frame takes queued messages and snapshot chunks up to about this many
// payload bytes, so heartbeats and gossip do not wait behind much.
constexpr uint64_t kFrameSoftBytes = 8 << 20;
// Send()'s callers write frames of messages up to this many payload bytes
// themselves (SendNow); larger ones go by the writer.
constexpr uint64_t kDirectBytesMax = 64 << 10;

uint64_t PayloadBytes(const raft::Message& m) {
  return raft::entries_size(m.entries) + m.snapshot.data.size() + m.context.size();
}

using asio::experimental::as_tuple;

// The connection's first bytes, from the accepting side: magic, flags (bit
// 0: a cluster secret is required), a nonce. With a secret, the dialing
// side answers magic, its nonce and its proof, and the accepting side its
// proof (common/secret.h); then frames flow from the dialer as before.
constexpr std::string_view kGreetingMagic = "SHOALPG1";
constexpr std::string_view kAuthMagic = "SHOALPA1";
// A dialer that leaves because one side has a secret and the other none.
constexpr std::string_view kNoSecretMagic = "SHOALPN1";
constexpr std::string_view kHasSecretMagic = "SHOALPS1";
constexpr size_t kGreetingBytes = 8 + 1 + kNonceBytes;
constexpr size_t kAuthBytes = 8 + kNonceBytes + kProofBytes;
constexpr std::string_view kDialerRole = "shoal peer dialer v1";
constexpr std::string_view kAcceptorRole = "shoal peer acceptor v1";
constexpr auto kAuthMax = std::chrono::seconds(2);
constexpr int kHandshakesMax = 128;
constexpr int kHandshakesPerAddressMax = 16;
constexpr int kTlsHandshakesPerAddressPerSecond = 32;
constexpr auto kGreetingWait = std::chrono::milliseconds(300);

std::string Endpoint(const asio::ip::tcp::socket& s) {
  asio::error_code ec;
  auto ep = s.remote_endpoint(ec);
  return ec ? std::string("a peer") : ep.address().to_string() + ":" + std::to_string(ep.port());
}

}  // namespace

// What reading a proved connection needs, kept across its moves between
// the transport thread and its reader (TransportOptions::readers).
struct Transport::Reading {
  uint64_t serial = 0;  // see Superseded
  asio::io_context* reader = nullptr;  // where it is read when not on the transport thread (null: never)
  FrameMacer mac_in;  // keyed with the session key; empty without a secret
  uint64_t frames_in = 0;  // frames read on it (each frame's MAC covers its number)
  raft::NodeId from = 0;   // the peer that writes on it, once known
  // buf[begin, end) has arrived and is not yet handled (buf's size is the
  // room to read into); the frame at begin was handled if `handled` is not 0.
  std::string buf;
  size_t begin = 0, end = 0, handled = 0;
  std::chrono::steady_clock::time_point long_frame_at{};  // the last frame over kLongFrame
};

struct Transport::Peer {
  Peer(asio::io_context& io, std::shared_ptr<TlsContext> tls) : stream(asio::ip::tcp::socket(io), std::move(tls)), signal(io) {
    signal.expires_at(asio::steady_timer::time_point::max());
  }
  std::string host;
  uint16_t port = 0;
  Stream stream;  // the outgoing connection
  asio::steady_timer signal;
  // Shared with Send()'s callers, under `mu`: the queue; the descriptor of
  // the connection while it is open, in plain text, and its writer waits
  // with nothing to write (-1 otherwise), on which a caller of Send() may
  // write a frame itself (SendNow); the end of such a frame that the socket
  // did not take, which the writer writes first; the session key and
  // frame count while `idle_fd` is set; and how many of Send()'s posts
  // carry messages for this peer that are not yet in its queue (SendNow
  // writes nothing before them, so each thread's messages keep their order).
  std::mutex mu;
  int idle_fd = -1;
  std::string tail;
  bool tail_whole = false;  // the socket took none of it: the writer counts the frame
  std::atomic<int> posted{0};
  std::vector<GroupMessage> queue;
  std::deque<SnapshotChunk> chunks;
  bool send_leaders = false;
  bool writer_running = false;
  raft::NodeId id = 0;
  // Frames read from this peer (ProbeGone), counted by whichever thread
  // reads its connection.
  std::atomic<uint64_t> frames_in{0};
  // The rest is the transport thread's. frames_in when a connection from
  // this peer last ended by its side (closed or reset), kNever if none did:
  // it has sent frames since while frames_in is past it.
  static constexpr uint64_t kNever = ~uint64_t{0};
  uint64_t frames_at_close = kNever;
  // Where it listened and when, at that close: only a refusal there, and
  // soon after, counts (RefusedAfterClose).
  std::string host_at_close;
  uint16_t port_at_close = 0;
  std::chrono::steady_clock::time_point closed_at;
  // frames_in when it was reported gone (kNever: not yet): it has not spoken
  // since while frames_in is still that.
  uint64_t frames_at_report = kNever;
  std::string refusal;     // why the last handshake with it failed (logged once)
  // With a secret: the key of the current connection, and how many frames
  // went out on it (each frame's MAC covers its number).
  FrameMacer mac_out;
  uint64_t frames_out = 0;
};

Transport::Transport(TransportOptions opts, DeliverFn deliver, LeadersFn leaders)
    : opts_(std::move(opts)), deliver_(std::move(deliver)), leaders_(std::move(leaders)) {
  node_id_.store(opts_.node_id);
}

Transport::~Transport() { Stop(); }

Status Transport::Start() {
  asio::error_code ec;
  auto address = asio::ip::make_address(opts_.bind_host, ec);
  if (ec) return Status::InvalidArgument("bad bind address '" + opts_.bind_host + "'");
  acceptor_ = std::make_unique<asio::ip::tcp::acceptor>(io_);
  asio::ip::tcp::endpoint ep(address, opts_.peer_port);
  acceptor_->open(ep.protocol(), ec);
  if (!ec) acceptor_->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_->bind(ep, ec);
  if (!ec) acceptor_->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return Status::IOError("cannot listen for peers on " + opts_.bind_host + ":" +
                           std::to_string(opts_.peer_port) + ": " + ec.message());
  }
  port_ = acceptor_->local_endpoint().port();
  asio::co_spawn(io_, AcceptLoop(), asio::detached);
  asio::co_spawn(io_, GossipLoop(), asio::detached);
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "shoal-peers");
    io_.run();
  });
  return Status::Ok();
}

void Transport::Stop() {
  if (stopped_) return;
  stopped_ = true;
  io_.stop();
  if (thread_.joinable()) thread_.join();
  // The connections close now; the peers themselves stay until the
  // transport is destroyed, as Send() may still look them up meanwhile.
  for (auto& [id, p] : peers_) CloseOutgoing(*p);
  acceptor_.reset();
}

raft::NodeId Transport::NodeFor(raft::NodeId member) const {
  if (auto it = peers_.find(member); it != peers_.end() && it->second->port != 0) return member;
  raft::NodeId found = member;  // a peer whose address is known first
  for (const auto& [id, p] : peers_) {
    if (!SameNode(id, member)) continue;
    found = id;
    if (p->port != 0) break;
  }
  return found;
}

Transport::Peer& Transport::PeerFor(raft::NodeId id) {
  if (auto it = peers_.find(id); it != peers_.end()) return *it->second;
  auto p = std::make_unique<Peer>(io_, opts_.tls);
  p->id = id;
  Peer& added = *p;
  std::unique_lock lock(peers_mu_);
  peers_.emplace(id, std::move(p));
  return added;
}

void Transport::CloseOutgoing(Peer& p) {
  {
    std::lock_guard lock(p.mu);
    p.idle_fd = -1;
    p.tail.clear();
  }
  p.stream.Close();
}

void Transport::Wake(Peer& p) {
  if (p.writer_running) {
    p.signal.cancel();
    return;
  }
  if (p.port == 0) return;  // address unknown yet
  p.writer_running = true;
  asio::co_spawn(io_, WriteLoop(&p), asio::detached);
}

void Transport::SetAddress(raft::NodeId id, const std::string& host, uint16_t port) {
  if (id == node_id()) return;
  asio::post(io_, [this, id, host, port] {
    Peer& p = PeerFor(id);
    if (p.host == host && p.port == port) return;
    {
      std::unique_lock lock(peers_mu_);
      p.host = host;
      p.port = port;
    }
    CloseOutgoing(p);  // reconnect to the new address
    Wake(p);
  });
}

void Transport::Send(std::vector<GroupMessage> msgs) {
  if (msgs.empty()) return;
  // What SendNow leaves goes to the writers; the peers it counted the post
  // on are told when their messages are queued.
  std::vector<Peer*> counted = SendNow(msgs);
  if (msgs.empty()) return;
  asio::post(io_, [this, msgs = std::move(msgs), counted = std::move(counted)]() mutable {
    std::map<raft::NodeId, Peer*> touched;
    for (auto& gm : msgs) {
      if (SameNode(gm.msg.to, node_id())) continue;
      const raft::NodeId to = NodeFor(gm.msg.to);
      Peer& p = PeerFor(to);
      std::lock_guard lock(p.mu);
      if (p.queue.size() >= kQueueMax) continue;
      touched[to] = &p;
      p.queue.push_back(std::move(gm));
    }
    for (Peer* p : counted) p->posted.fetch_sub(1, std::memory_order_release);
    for (auto& [id, p] : touched) Wake(*p);
  });
}

bool Transport::IdleLocked(const Peer& p) {
  return p.idle_fd >= 0 && p.queue.empty() && p.tail.empty() && p.posted.load(std::memory_order_acquire) == 0;
}

std::vector<Transport::Peer*> Transport::SendNow(std::vector<GroupMessage>& msgs) {
  const raft::NodeId self = node_id();
  // Each message's peer, by the message's place (a peer, once added, lives
  // as long as the transport).
  std::vector<Peer*> dest(msgs.size(), nullptr);
  std::vector<Peer*> order;  // the peers, in the order they first appear
  {
    std::shared_lock peers(peers_mu_);
    if (peers_.empty()) return {};
    for (size_t i = 0; i < msgs.size(); ++i) {
      if (SameNode(msgs[i].msg.to, self)) continue;
      auto it = peers_.find(NodeFor(msgs[i].msg.to));
      if (it == peers_.end()) continue;
      dest[i] = it->second.get();
      if (std::find(order.begin(), order.end(), dest[i]) == order.end()) order.push_back(dest[i]);
    }
  }
  std::vector<bool> sent(msgs.size(), false);
  bool any = false;
  std::string frame;
  for (Peer* p : order) {
    {
      // A look, never a wait: a writer busy with the peer takes its messages.
      std::unique_lock lock(p->mu, std::try_to_lock);
      if (!lock.owns_lock() || !IdleLocked(*p)) continue;
    }
    uint64_t payload = 0;
    for (size_t i = 0; i < msgs.size(); ++i) {
      if (dest[i] == p) payload += PayloadBytes(msgs[i].msg);
    }
    // Large entries go by the writer, whose writes have deadlines.
    if (payload > kDirectBytesMax) continue;
    // Encoded before the lock is taken to write it, so that the transport
    // thread never waits for an encoding.
    proto::PeerFrame pf;
    FrameHeader(pf);
    for (size_t i = 0; i < msgs.size(); ++i) {
      if (dest[i] != p) continue;
      auto* out = pf.add_messages();
      out->set_group(msgs[i].group);
      ToProto(msgs[i].msg, out->mutable_msg());
    }
    frame.clear();
    Encode(pf, &frame);
    std::unique_lock lock(p->mu, std::try_to_lock);
    if (!lock.owns_lock() || !IdleLocked(*p)) continue;  // the writer woke meanwhile
    Mac(*p, &frame);
    for (size_t i = 0; i < msgs.size(); ++i) sent[i] = sent[i] || dest[i] == p;
    any = true;
    const ssize_t n = ::send(p->idle_fd, frame.data(), frame.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      frames_sent_.fetch_add(1, std::memory_order_relaxed);
      frames_direct_.fetch_add(1, std::memory_order_relaxed);
    }
    if (n == static_cast<ssize_t>(frame.size())) continue;
    // The socket took part of the frame or none (full, or the connection
    // failed): its writer writes the rest first, on this connection, or
    // finds it broken and dials again (Raft resends what is lost).
    if (n > 0) direct_rests_.fetch_add(1, std::memory_order_relaxed);
    p->tail = frame.substr(n > 0 ? static_cast<size_t>(n) : 0);
    p->tail_whole = n <= 0;
    p->idle_fd = -1;
    asio::post(io_, [this, p] { Wake(*p); });
  }
  // Each peer with messages left counts their post until they are queued,
  // so that this thread's next SendNow writes nothing for it before them.
  std::vector<Peer*> counted;
  for (size_t i = 0; i < msgs.size(); ++i) {
    if (sent[i] || dest[i] == nullptr || std::find(counted.begin(), counted.end(), dest[i]) != counted.end()) continue;
    counted.push_back(dest[i]);
    dest[i]->posted.fetch_add(1, std::memory_order_relaxed);
  }
  if (!any) return counted;
  std::vector<GroupMessage> left;
  left.reserve(msgs.size());
  for (size_t i = 0; i < msgs.size(); ++i) {
    if (!sent[i]) left.push_back(std::move(msgs[i]));
  }
  msgs.swap(left);
  return counted;
}

void Transport::FrameHeader(proto::PeerFrame& pf) const {
  pf.set_version(kWireVersion);
  pf.set_cluster_id(cluster_id());
  pf.set_from_node(node_id());
  pf.set_from_host(opts_.bind_host);
  pf.set_from_peer_port(port_);
}

void Transport::Encode(const proto::PeerFrame& pf, std::string* frame) {
  uint32_t n = static_cast<uint32_t>(pf.ByteSizeLong());
  for (int i = 3; i >= 0; --i) frame->push_back(static_cast<char>(n >> (8 * i)));
  pf.AppendToString(frame);
}

void Transport::Mac(Peer& p, std::string* frame) {
  if (!p.mac_out.empty()) p.mac_out.Append(p.frames_out++, *frame, frame);
}

void Transport::SendChunk(raft::NodeId to, SnapshotChunk c) {
  asio::post(io_, [this, to, c = std::move(c)]() mutable {
    if (SameNode(to, node_id())) return;
    Peer& p = PeerFor(NodeFor(to));
    if (p.chunks.size() >= kChunkQueueMax) return;
    p.chunks.push_back(std::move(c));
    Wake(p);
  });
}

void Transport::SetLocalTransfers(NodeStats stats) {
  asio::post(io_, [this, stats] {
    if (stats.meta_recovery != local_transfers_.meta_recovery) {
      // The meta replica changed recovery: what it queued before must not
      // reach a peer after the new number has (peers judge meta messages by
      // the number they last heard from this node).
      for (auto& [id, p] : peers_) {
        std::lock_guard lock(p->mu);
        std::erase_if(p->queue, [](const GroupMessage& gm) { return gm.group == 0; });
      }
    }
    local_transfers_ = stats;
  });
}

void Transport::SetLocalLeaders(std::vector<LeaderReport> leaders) {
  asio::post(io_, [this, leaders = std::move(leaders)]() mutable { local_leaders_ = std::move(leaders); });
}

asio::awaitable<void> Transport::GossipLoop() {
  asio::steady_timer timer(io_);
  for (;;) {
    timer.expires_after(kGossipInterval);
    auto [ec] = co_await timer.async_wait(as_tuple(asio::use_awaitable));
    if (ec) co_return;
    for (auto& [id, p] : peers_) {
      p->send_leaders = true;
      Wake(*p);
    }
  }
}

void Transport::DropQueued(Peer& p) {
  {
    std::lock_guard lock(p.mu);
    p.queue.clear();
  }
  p.chunks.clear();
  p.send_leaders = false;
}

void Transport::BuildFrame(Peer& p, std::string* frame) {
  proto::PeerFrame pf;
  FrameHeader(pf);
  uint64_t payload = 0;
  size_t taken = 0;
  for (; taken < p.queue.size(); ++taken) {
    auto& gm = p.queue[taken];
    uint64_t bytes = PayloadBytes(gm.msg);
    if (taken > 0 && payload + bytes > kFrameSoftBytes) break;
    if (bytes + (1 << 20) > opts_.max_frame_bytes) {
      // The peer would refuse the frame and drop the connection with
      // everything else queued on it; Raft resends (only inline
      // snapshots, the meta shard's, can be this large).
      spdlog::error("group {}: a {} byte message to member {:016x} is over the frame limit; dropped", gm.group,
                    bytes, gm.msg.to);
      continue;
    }
    payload += bytes;
    auto* out = pf.add_messages();
    out->set_group(gm.group);
    ToProto(gm.msg, out->mutable_msg());
  }
  p.queue.erase(p.queue.begin(), p.queue.begin() + static_cast<long>(taken));
  // Snapshot chunks share the frame budget; at least one goes each frame.
  while (!p.chunks.empty() && (pf.chunks_size() == 0 || payload + p.chunks.front().data.size() <= kFrameSoftBytes)) {
    SnapshotChunk& c = p.chunks.front();
    payload += c.data.size();
    auto* out = pf.add_chunks();
    out->set_kind(static_cast<uint32_t>(c.kind));
    out->set_group(c.group);
    out->set_from(c.from);
    out->set_to(c.to);
    out->set_export_id(c.export_id);
    out->set_offset(c.offset);
    out->set_total(c.total);
    out->set_data(std::move(c.data));
    out->set_done(c.done);
    out->set_refused(c.refused);
    out->set_resync(c.resync);
    p.chunks.pop_front();
  }
  if (p.send_leaders) {
    p.send_leaders = false;
    pf.set_has_leaders(true);
    pf.set_has_transfers(true);
    pf.set_transfers_sending(local_transfers_.sending);
    pf.set_transfer_bytes_sent(local_transfers_.bytes_sent);
    pf.set_transfer_bytes_received(local_transfers_.bytes_received);
    pf.set_meta_recovery(local_transfers_.meta_recovery);
    pf.set_features(local_transfers_.features);
    for (uint64_t id : local_transfers_.removed) pf.add_removed_nodes(id);
    for (const LeaderlessReplica& r : local_transfers_.leaderless) {
      auto* l = pf.add_leaderless();
      l->set_group(r.group);
      l->set_member(r.member);
      l->set_last_term(r.last_term);
      l->set_last_index(r.last_index);
      l->set_applied(r.applied);
      for (raft::NodeId v : r.voters) l->add_voters(v);
      for (raft::NodeId v : r.voters_outgoing) l->add_voters_outgoing(v);
      for (raft::NodeId v : r.learners) l->add_learners(v);
      l->set_recovery(r.recovery);
    }
    for (const LeaderReport& r : local_leaders_) {
      auto* l = pf.add_leaders();
      l->set_group(r.group);
      l->set_term(r.term);
      for (raft::NodeId v : r.voters) l->add_voters(v);
      for (raft::NodeId v : r.learners) l->add_learners(v);
      l->set_joint(r.joint);
      l->set_slot_begin(r.slot_begin);
      l->set_slot_end(r.slot_end);
      l->set_bytes(r.bytes);
      l->set_ops_per_sec(r.ops_per_sec);
      l->set_split_slot(r.split_slot);
      l->set_load_measured(r.load_measured);
      l->set_recovery(r.recovery);
    }
  }
  Encode(pf, frame);
  Mac(p, frame);
}

asio::awaitable<void> Transport::WriteLoop(Peer* p) {
  auto backoff = kBackoffMin;
  asio::steady_timer wait(io_);
  std::string frame;
  // Each frame's write has a deadline (FrameMax), on whichever connection
  // the stream holds then.
  MovingDeadline deadline(p->stream.socket(), kDeadlineCheck);
  for (;;) {
    {
      std::unique_lock lock(p->mu);
      if (p->queue.empty() && p->chunks.empty() && !p->send_leaders && p->tail.empty()) {
        // Nothing to write: until Wake, Send()'s callers may write on the
        // connection themselves.
        if (p->stream.socket().is_open() && !p->stream.tls()) p->idle_fd = p->stream.socket().native_handle();
        lock.unlock();
        p->signal.expires_at(asio::steady_timer::time_point::max());
        auto [ec] = co_await p->signal.async_wait(as_tuple(asio::use_awaitable));
        (void)ec;
        if (stopped_) co_return;
        lock.lock();
        p->idle_fd = -1;  // the writer's again
        continue;
      }
    }
    if (!p->stream.socket().is_open()) {
      asio::ip::tcp::socket s(io_);
      asio::error_code ec = co_await Dial(p->host, p->port, s);
      if (ec == asio::error::connection_refused) RefusedAfterClose(*p, p->host, p->port);
      if (ec) {
        DropQueued(*p);  // Raft resends what matters, and snapshot senders their chunks
        wait.expires_after(backoff);
        co_await wait.async_wait(as_tuple(asio::use_awaitable));
        backoff = std::min(backoff * 2, std::chrono::duration_cast<std::chrono::milliseconds>(kBackoffMax));
        if (stopped_) co_return;
        continue;
      }
      s.set_option(asio::ip::tcp::no_delay(true), ec);
      p->stream.Reset(std::move(s));
      if (!co_await DialerHandshake(*p, p->stream)) {
        CloseOutgoing(*p);
        DropQueued(*p);
        wait.expires_after(kBackoffMax);
        co_await wait.async_wait(as_tuple(asio::use_awaitable));
        if (stopped_) co_return;
        continue;
      }
      backoff = kBackoffMin;
    }
    frame.clear();
    bool rest = false;  // the rest of a frame that SendNow began (and counted)
    {
      std::lock_guard lock(p->mu);
      if (!p->tail.empty()) {
        frame.swap(p->tail);
        rest = !p->tail_whole;
      } else {
        BuildFrame(*p, &frame);
      }
    }
    deadline.Set(FrameMax(frame.size()));
    auto [ec, written] = co_await p->stream.Write(asio::buffer(frame));
    deadline.Clear();
    (void)written;
    if (ec) {
      CloseOutgoing(*p);
      if (stopped_) co_return;
      continue;
    }
    if (rest) continue;
    frames_sent_.fetch_add(1, std::memory_order_relaxed);
  }
}

asio::awaitable<bool> Transport::DialerHandshake(Peer& p, Stream& s) {
  const std::string where = p.host + ":" + std::to_string(p.port);
  auto refuse = [&](std::string why) {
    peers_refused_.fetch_add(1, std::memory_order_relaxed);
    if (why != p.refusal) spdlog::error("peer {}: {}", where, why);  // once per reason
    p.refusal = std::move(why);
    return false;
  };
  if (s.tls()) {
    Deadline deadline(s.socket(), kAuthMax, Deadline::kClose);
    const asio::error_code hec = co_await s.Handshake(/*accepting=*/false);
    if (hec == asio::error::operation_aborted || hec == asio::error::eof) {
      co_return refuse("no TLS handshake (it runs without tls-cluster, or is not a shoal peer port)");
    }
    if (hec) co_return refuse("TLS handshake failed: " + hec.message() + " (start every node with tls-cluster and "
                              "certificates from the same CA)");
  }
  std::string greeting(kGreetingBytes, '\0');
  {
    // Without a secret, a peer that says nothing for a moment is an older
    // shoal (no greeting): talk to it as before, so upgrades can roll.
    Deadline deadline(s.socket(), opts_.secret.empty() ? kGreetingWait : kConnectMax);
    auto [ec, n] = co_await s.Read(asio::buffer(greeting));
    if (ec == asio::error::operation_aborted && n == 0 && opts_.secret.empty()) co_return true;
    if (ec == asio::error::operation_aborted && n == 0) {
      co_return refuse("it sent no greeting (an older shoal, or not a shoal peer port): it cannot prove the "
                       "cluster secret");
    }
    if (ec && s.tls() && ec != asio::error::eof && ec != asio::error::connection_reset) {
      // TLS 1.3: the acceptor judges this node's certificate after the
      // handshake ends here, and says no with an alert.
      co_return refuse("it refused this node's TLS certificate: " + ec.message());
    }
    if (ec) co_return false;  // gone: the backoff covers it
  }
  if (!greeting.starts_with(kGreetingMagic)) co_return refuse("not a shoal peer port (no greeting); not talking to it");
  const bool required = (greeting[8] & 1) != 0;
  const std::string_view challenge = std::string_view(greeting).substr(9);
  if (required == opts_.secret.empty()) {
    // Say why before leaving, so that the other side logs it too.
    const std::string_view notice = required ? kNoSecretMagic : kHasSecretMagic;
    Deadline deadline(s.socket(), kConnectMax);
    co_await s.Write(asio::buffer(notice));
  }
  if (required && opts_.secret.empty()) {
    co_return refuse("it requires the cluster secret and this node has none: start every node with the same "
                     "cluster-secret-file");
  }
  if (!required && !opts_.secret.empty()) {
    co_return refuse("it runs without a cluster secret, so it cannot prove it is a member: not talking to it "
                     "(start every node with the same cluster-secret-file)");
  }
  if (required) {
    const std::string nonce = RandomNonce();
    std::string auth(kAuthMagic);
    auth += nonce;
    auth += Proof(opts_.secret, kDialerRole, challenge, nonce);
    Deadline deadline(s.socket(), kAuthMax);
    auto [wec, wn] = co_await s.Write(asio::buffer(auth));
    if (wec) co_return false;
    std::string proof(kProofBytes, '\0');
    auto [rec, rn] = co_await s.Read(asio::buffer(proof));
    if (rec) {
      co_return rec == asio::error::eof || rec == asio::error::connection_reset
          ? refuse("it refused this node's proof of the cluster secret: the secrets differ")
          : false;
    }
    if (!ProofsEqual(proof, Proof(opts_.secret, kAcceptorRole, challenge, nonce))) {
      co_return refuse("it did not prove the cluster secret: the secrets differ, or it is not a member");
    }
    p.mac_out = FrameMacer(SessionKey(opts_.secret, challenge, nonce));
  } else {
    p.mac_out = FrameMacer();
  }
  p.frames_out = 0;
  if (!p.refusal.empty()) spdlog::info("peer {}: connected again, the cluster secret is proved", where);
  p.refusal.clear();
  co_return true;
}

void Transport::LogRefusedPeer(const std::string& who, const std::string& why) {
  peers_refused_.fetch_add(1, std::memory_order_relaxed);
  frames_refused_.fetch_add(1, std::memory_order_relaxed);
  const auto now = std::chrono::steady_clock::now();
  const std::string host = who.substr(0, who.rfind(':'));
  auto it = refusals_logged_.find(host);
  if (it != refusals_logged_.end() && now - it->second < std::chrono::seconds(10)) return;
  if (refusals_logged_.size() > 1000) refusals_logged_.clear();
  refusals_logged_[host] = now;
  spdlog::warn("peer connection from {} refused: {}", who, why);
}

asio::awaitable<bool> Transport::AcceptorHandshake(Stream& s, std::string* session_key) {
  Deadline deadline(s.socket(), kAuthMax, Deadline::kClose);  // (a connection that is late is dropped)
  if (s.tls()) {
    const asio::error_code hec = co_await s.Handshake(/*accepting=*/true, Verify::kRequire);
    if (hec) {
      // Nothing at all (a probe, ProbeGone) is not worth a line.
      if (hec != asio::error::eof) {
        LogRefusedPeer(Endpoint(s.socket()), "TLS handshake failed: " + hec.message() +
                                                 " (every node needs tls-cluster and a certificate from the same CA)");
      }
      co_return false;
    }
  }
  const std::string challenge = RandomNonce();
  std::string greeting(kGreetingMagic);
  greeting.push_back(opts_.secret.empty() ? 0 : 1);
  greeting += challenge;
  auto [wec, wn] = co_await s.Write(asio::buffer(greeting));
  if (wec) co_return false;
  if (opts_.secret.empty()) co_return true;
  std::string auth(kAuthBytes, '\0');
  auto [rec, rn] = co_await s.Read(asio::buffer(auth));
  if (rec) {
    // Nothing at all: a probe (ProbeGone) or a port scan. Something short
    // of an answer: a node without the secret sends frames at once.
    if (rn > 0) {
      LogRefusedPeer(Endpoint(s.socket()), auth.starts_with(kNoSecretMagic)
                                      ? "it runs without a cluster secret (start every node with the same "
                                        "cluster-secret-file)"
                                      : "it did not prove the cluster secret");
    }
    co_return false;
  }
  const std::string_view nonce = std::string_view(auth).substr(8, kNonceBytes);
  if (!auth.starts_with(kAuthMagic) ||
      !ProofsEqual(std::string_view(auth).substr(8 + kNonceBytes), Proof(opts_.secret, kDialerRole, challenge, nonce))) {
    LogRefusedPeer(Endpoint(s.socket()), auth.starts_with(kAuthMagic)
                                    ? "its proof of the cluster secret is wrong: the secrets differ"
                                    : "it did not prove the cluster secret (it runs without one?)");
    co_return false;
  }
  const std::string proof = Proof(opts_.secret, kAcceptorRole, challenge, nonce);
  auto [pec, pn] = co_await s.Write(asio::buffer(proof));
  *session_key = SessionKey(opts_.secret, challenge, nonce);
  co_return !pec;
}

asio::awaitable<void> Transport::AcceptLoop() {
  for (;;) {
    auto [ec, socket] = co_await acceptor_->async_accept(as_tuple(asio::use_awaitable));
    if (ec == asio::error::operation_aborted || !acceptor_->is_open()) co_return;
    if (ec) {  // out of descriptors, say: let them come back
      asio::steady_timer pause(io_, std::chrono::milliseconds(10));
      co_await pause.async_wait(as_tuple(asio::use_awaitable));
      continue;
    }
    asio::error_code nec;
    socket.set_option(asio::ip::tcp::no_delay(true), nec);
    asio::co_spawn(io_, ReadLoop(std::move(socket)), asio::detached);
  }
}

asio::awaitable<asio::error_code> Transport::Dial(const std::string& host, uint16_t port,
                                                  asio::ip::tcp::socket& s) {
  asio::error_code aec, lec, ec;
  auto remote = asio::ip::make_address(host, aec);
  auto local = asio::ip::make_address(opts_.bind_host, lec);
  if (aec || lec) co_return aec ? aec : lec;
  s.open(asio::ip::tcp::v4(), ec);
  // Originate from our bind address, so that rules by address apply.
  if (!ec) s.bind(asio::ip::tcp::endpoint(local, 0), ec);
  if (ec) co_return ec;
  Deadline deadline(s, kConnectMax);
  auto [cec] = co_await s.async_connect(asio::ip::tcp::endpoint(remote, port), as_tuple(asio::use_awaitable));
  co_return cec;
}

asio::awaitable<void> Transport::ProbeGone(raft::NodeId node) {
  auto it = peers_.find(node);
  if (it == peers_.end() || it->second->port == 0 || !gone_) co_return;
  const std::string host = it->second->host;
  const uint16_t port = it->second->port;
  asio::steady_timer wait(io_);
  // A process that is ending closes its sockets one by one: a connection may
  // close before its listening socket does, and a probe in between is taken
  // into the backlog, then reset. So a probe that connects is watched
  // briefly: a live peer keeps an accepted connection open (it waits 30 s
  // for a frame); one reset or closed at once is probed again. A probe that
  // gives up is not the last word: the next refused dial of this peer's
  // writer counts as well (RefusedAfterClose).
  for (int attempt = 0; attempt < 3; ++attempt) {
    asio::ip::tcp::socket s(io_);
    asio::error_code cec = co_await Dial(host, port, s);
    if (stopped_) co_return;
    auto p = peers_.find(node);
    if (p == peers_.end()) co_return;
    if (cec == asio::error::connection_refused) {
      RefusedAfterClose(*p->second, host, port);
      co_return;
    }
    if (cec) co_return;  // silent or unreachable: Raft's timeouts decide
    char byte;
    Deadline watching(s, kProbeWatch);
    auto [rec, n] = co_await s.async_read_some(asio::buffer(&byte, 1), as_tuple(asio::use_awaitable));
    (void)n;
    if (stopped_ || rec == asio::error::operation_aborted || rec == asio::error::timed_out) co_return;  // alive
    if (rec != asio::error::eof && rec != asio::error::connection_reset) co_return;
    wait.expires_after(kBackoffMin);
    co_await wait.async_wait(as_tuple(asio::use_awaitable));
  }
}

void Transport::RefusedAfterClose(Peer& p, const std::string& host, uint16_t port) {
  // The evidence that the peer's process ended: a connection from it ended
  // by its side, no frame came from it since, and now the Raft port where it
  // listened then refuses a connection, soon after (a stale address given
  // later, or a refusal long after, proves nothing). Reported once until it
  // speaks again.
  const uint64_t frames_in = p.frames_in.load(std::memory_order_relaxed);
  if (stopped_ || !gone_ || p.frames_at_report == frames_in || p.frames_at_close == Peer::kNever ||
      frames_in != p.frames_at_close || host != p.host_at_close || port != p.port_at_close ||
      std::chrono::steady_clock::now() - p.closed_at > kGoneEvidenceMax) {
    return;
  }
  p.frames_at_report = frames_in;
  peers_gone_.fetch_add(1, std::memory_order_relaxed);
  spdlog::info("node {:016x} is gone: it closed its connection and its Raft port refuses connections", p.id);
  gone_(p.id);
}

void Transport::MaybeProbeGone(raft::NodeId from, const asio::error_code& ec) {
  // The peer's end closed or reset the connection (not our own deadline):
  // its process may have ended. Its Raft port tells.
  if (from != 0 && !stopped_ && (ec == asio::error::eof || ec == asio::error::connection_reset)) {
    Peer& p = PeerFor(from);
    p.frames_at_close = p.frames_in.load(std::memory_order_relaxed);
    p.host_at_close = p.host;
    p.port_at_close = p.port;
    p.closed_at = std::chrono::steady_clock::now();
    asio::co_spawn(io_, ProbeGone(from), asio::detached);
  }
}

asio::awaitable<void> Transport::ReadLoop(asio::ip::tcp::socket accepted) {
  const uint64_t serial = ++accepted_;
  Stream stream(std::move(accepted), opts_.tls);
  asio::ip::tcp::socket& socket = stream.socket();
  std::string session_key;
  {
    // Connections not yet proved are bounded, in all and per address, so
    // that silent ones cannot use up the node's descriptors.
    asio::error_code rec;
    const std::string ip = socket.remote_endpoint(rec).address().to_string();
    if (rec || handshakes_ >= kHandshakesMax || handshakes_by_ip_[ip] >= kHandshakesPerAddressMax) {
      if (!rec) LogRefusedPeer(ip + ":0", "too many connections waiting to prove the cluster secret");
      co_return;
    }
    if (opts_.tls) {
      // A TLS handshake costs the acceptor a key exchange and a signature on
      // this thread, which carries all Raft traffic: an address may start
      // only so many a second (a peer needs one per reconnection).
      const int64_t second = std::chrono::duration_cast<std::chrono::seconds>(
                                 std::chrono::steady_clock::now().time_since_epoch()).count();
      if (tls_starts_by_ip_.size() > 4096) tls_starts_by_ip_.clear();
      auto& [at, count] = tls_starts_by_ip_[ip];
      if (at != second) {
        at = second;
        count = 0;
      }
      if (++count > kTlsHandshakesPerAddressPerSecond) {
        LogRefusedPeer(ip + ":0", "too many TLS handshakes a second from one address");
        co_return;
      }
    }
    ++handshakes_;
    ++handshakes_by_ip_[ip];
    const bool proved = co_await AcceptorHandshake(stream, &session_key);
    --handshakes_;
    if (--handshakes_by_ip_[ip] == 0) handshakes_by_ip_.erase(ip);
    if (!proved) co_return;
  }
  auto reading = std::make_unique<Reading>();
  reading->serial = serial;
  if (!session_key.empty()) reading->mac_in = FrameMacer(session_key);
  if (opts_.readers.empty() || stream.tls()) {
    co_await ReadFrames(stream, std::move(reading));
    co_return;
  }
  // A plain connection moves to a reader (its descriptor, with nothing
  // pending on it: the handshake read exactly its own bytes).
  reading->reader = opts_.readers[next_reader_++ % opts_.readers.size()];
  asio::io_context& to = *reading->reader;
  MoveReading(stream, to, std::move(reading));
}

void Transport::MoveReading(Stream& stream, asio::io_context& to, std::unique_ptr<Reading> reading) {
  asio::ip::tcp::socket& socket = stream.socket();
  asio::error_code ec;
  const auto protocol = socket.local_endpoint(ec).protocol();
  if (ec) return;
  const int fd = socket.release(ec);
  if (ec) return;
  asio::ip::tcp::socket moved(to);
  moved.assign(protocol, fd, ec);
  if (ec) {
    ::close(fd);
    return;
  }
  asio::co_spawn(to, ReadMoved(std::move(moved), std::move(reading)), asio::detached);
}

asio::awaitable<void> Transport::ReadMoved(asio::ip::tcp::socket socket, std::unique_ptr<Reading> reading) {
  Stream stream(std::move(socket));
  co_await ReadFrames(stream, std::move(reading));
}

bool Transport::Superseded(raft::NodeId from, uint64_t serial) {
  std::lock_guard lock(latest_mu_);
  uint64_t& latest = latest_[from];
  if (serial < latest) return true;
  latest = serial;
  return false;
}

void Transport::OnTransportThread(std::function<void()> fn) {
  if (io_.get_executor().running_in_this_thread()) {
    fn();
  } else {
    asio::post(io_, std::move(fn));
  }
}

void Transport::NoteFrame(raft::NodeId from, const proto::PeerFrame& pf) {
  {
    std::shared_lock lock(peers_mu_);
    auto it = peers_.find(from);
    if (it != peers_.end() && (it->second->port != 0 || pf.from_host().empty() || pf.from_peer_port() == 0)) {
      it->second->frames_in.fetch_add(1, std::memory_order_relaxed);
      return;
    }
  }
  // A peer not known yet, or whose address is not: the transport thread
  // adds it and learns where it listens from the frame.
  OnTransportThread([this, from, host = pf.from_host(), port = pf.from_peer_port()] {
    Peer& p = PeerFor(from);
    p.frames_in.fetch_add(1, std::memory_order_relaxed);
    if (p.port == 0 && !host.empty() && port != 0 && port < 65536) {
      std::unique_lock lock(peers_mu_);
      p.host = host;
      p.port = static_cast<uint16_t>(port);
    }
  });
}

asio::awaitable<void> Transport::ReadFrames(Stream& stream, std::unique_ptr<Reading> reading) {
  asio::ip::tcp::socket& socket = stream.socket();
  Reading& r = *reading;
  FrameMacer& mac_in = r.mac_in;
  const size_t mac_bytes = mac_in.empty() ? 0 : kProofBytes;
  uint64_t& frames_in = r.frames_in;
  raft::NodeId& from = r.from;  // the peer that writes on this connection, once known
  // Frames are read as they come, many at a time: buf[begin, end) has
  // arrived and is not yet handled (buf's size is the room to read into).
  // The room grows with what a frame has brought (1 MiB, then doubling), so
  // a length that promises much and a sender that sends little hold little
  // memory.
  std::string& buf = r.buf;
  if (buf.empty()) buf.assign(kReadRoom, '\0');
  size_t& begin = r.begin;
  size_t& end = r.end;
  size_t& handled = r.handled;
  // On its reader, a connection goes back to the transport thread for a long
  // frame (a snapshot chunk: reading, checking and parsing megabytes would
  // hold up the reader's clients), and returns once its frames have been
  // short for a while.
  const bool on_reader = r.reader != nullptr && !io_.get_executor().running_in_this_thread();
  // A silent connection is dropped after kIdleMax, a frame that takes too
  // long to arrive after FrameMax(its length).
  MovingDeadline deadline(socket, kDeadlineCheck);
  for (;;) {
    begin += handled;  // the frame handled last time round
    handled = 0;
    if (begin == end) {
      begin = end = 0;
      if (buf.size() > kReadRoom) {  // a long frame's room is given back
        buf.resize(kReadRoom);
        buf.shrink_to_fit();
      }
    }
    uint32_t len = 0;
    size_t want = 0;  // the frame's bytes (head, body and MAC), once its head is here
    bool idle_set = false;  // the wait for this frame's head has its deadline
    for (;;) {
      const size_t have = end - begin;
      if (want == 0 && have >= 4) {
        const auto* head = reinterpret_cast<const unsigned char*>(buf.data() + begin);
        if (from == 0 && std::string_view(buf.data() + begin, 4) == kHasSecretMagic.substr(0, 4)) {
          OnTransportThread([this, who = Endpoint(socket)] {
            LogRefusedPeer(who, "it has a cluster secret and this node runs without one (start every node with the "
                                "same cluster-secret-file)");
          });
          co_return;
        }
        len = (uint32_t{head[0]} << 24) | (uint32_t{head[1]} << 16) | (uint32_t{head[2]} << 8) | head[3];
        if (len > opts_.max_frame_bytes) {
          frames_refused_.fetch_add(1, std::memory_order_relaxed);
          spdlog::warn("peer frame of {} bytes refused", len);
          co_return;
        }
        want = 4 + size_t{len} + mac_bytes;
        if (len > kLongFrame) {
          r.long_frame_at = std::chrono::steady_clock::now();
          if (on_reader) {
            MoveReading(stream, io_, std::move(reading));
            co_return;
          }
        }
        if (have < want) deadline.Set(FrameMax(len));
      }
      if (want != 0 && have >= want) break;
      if (want == 0 && !idle_set) {
        deadline.Set(kIdleMax);  // once a frame: a head sent a byte at a time gains no time
        idle_set = true;
      }
      // Room to read into: what is here moves to the front, and the room
      // grows for a frame longer than it.
      if (begin > 0) {
        std::memmove(buf.data(), buf.data() + begin, have);
        begin = 0;
        end = have;
      }
      if (want > buf.size() && end == buf.size()) {
        buf.resize(std::min(want, end + std::max<size_t>(1 << 20, end)));
      }
      auto [ec, n] = co_await stream.ReadSome(asio::buffer(buf.data() + end, buf.size() - end));
      if (ec) {
        OnTransportThread([this, from, err = ec] { MaybeProbeGone(from, err); });
        co_return;
      }
      end += n;
    }
    deadline.Clear();
    // The frame, at buf[begin, begin + want): read in place until the next
    // round (its parse copies out what is kept).
    handled = want;
    const std::string_view framed(buf.data() + begin, 4 + size_t{len});
    if (mac_bytes != 0) {
      if (!mac_in.Verify(frames_in++, framed, std::string_view(buf.data() + begin + framed.size(), mac_bytes))) {
        OnTransportThread([this, who = Endpoint(socket)] {
          LogRefusedPeer(who, "a frame's MAC is wrong (changed or added on the way)");
        });
        co_return;
      }
    }
    proto::PeerFrame pf;
    if (!pf.ParseFromArray(framed.data() + 4, static_cast<int>(len)) || pf.version() != kWireVersion || pf.from_node() == 0) {
      frames_refused_.fetch_add(1, std::memory_order_relaxed);
      spdlog::warn("malformed peer frame refused");
      co_return;
    }
    uint64_t ours = cluster_id();
    if (ours == 0 || node_id() == 0 || pf.cluster_id() != ours) {
      frames_refused_.fetch_add(1, std::memory_order_relaxed);
      if (ours != 0) spdlog::warn("frame from node {:016x} of foreign cluster {:016x} refused", pf.from_node(), pf.cluster_id());
      co_return;
    }
    from = pf.from_node();
    if (Superseded(from, r.serial)) co_return;  // (closed by us: no probe)
    NoteFrame(from, pf);
    if (pf.messages_size() > 0) {
      std::vector<GroupMessage> got;
      got.reserve(static_cast<size_t>(pf.messages_size()));
      for (const auto& gm : pf.messages()) {
        raft::Message m;
        // Raft ids are member ids: the node's id with an incarnation.
        if (!FromProto(gm.msg(), &m) || !SameNode(m.from, pf.from_node()) || !SameNode(m.to, node_id())) continue;
        got.push_back(GroupMessage{gm.group(), std::move(m)});
      }
      if (!got.empty()) deliver_(std::move(got));
    }
    for (auto& pc : *pf.mutable_chunks()) {
      if (!chunks_ || pc.kind() > static_cast<uint32_t>(SnapshotChunk::Kind::kAck)) continue;
      SnapshotChunk c;
      c.kind = static_cast<SnapshotChunk::Kind>(pc.kind());
      c.group = pc.group();
      c.from = pc.from();
      c.to = pc.to();
      c.export_id = pc.export_id();
      c.offset = pc.offset();
      c.total = pc.total();
      c.data = std::move(*pc.mutable_data());  // up to a chunk (MiBs): moved, not copied
      c.done = pc.done();
      c.refused = pc.refused();
      c.resync = pc.resync();
      // Offers and data come from the image's sender, acknowledgements
      // from its receiver.
      bool ack = c.kind == SnapshotChunk::Kind::kAck;
      if (!SameNode(ack ? c.to : c.from, pf.from_node()) || !SameNode(ack ? c.from : c.to, node_id())) continue;
      chunks_(pf.from_node(), std::move(c));
    }
    if (pf.has_transfers() && transfers_) {
      NodeStats stats{pf.transfers_sending(), pf.transfer_bytes_sent(), pf.transfer_bytes_received(),
                      pf.meta_recovery(),     pf.features(),           {pf.removed_nodes().begin(), pf.removed_nodes().end()},
                      {}};
      for (const auto& l : pf.leaderless()) {
        stats.leaderless.push_back(LeaderlessReplica{l.group(), l.member(), l.last_term(), l.last_index(), l.applied(),
                                                     {l.voters().begin(), l.voters().end()},
                                                     {l.voters_outgoing().begin(), l.voters_outgoing().end()},
                                                     {l.learners().begin(), l.learners().end()}, l.recovery()});
      }
      transfers_(pf.from_node(), std::move(stats));
    }
    if (pf.has_leaders()) {
      std::vector<LeaderReport> leaders;
      for (const auto& l : pf.leaders()) {
        leaders.push_back(LeaderReport{l.group(), l.term(), {l.voters().begin(), l.voters().end()},
                                       {l.learners().begin(), l.learners().end()}, l.joint(),
                                       l.slot_begin(), l.slot_end(), l.bytes(), l.ops_per_sec(),
                                       l.split_slot(), l.load_measured(), l.recovery()});
      }
      leaders_(pf.from_node(), std::move(leaders));
    }
    const auto now = std::chrono::steady_clock::now();
    if (len > kLongFrame) r.long_frame_at = now;  // (however long its body took to come)
    if (r.reader != nullptr && !on_reader && now - r.long_frame_at > kLongFramesGone) {
      MoveReading(stream, *r.reader, std::move(reading));  // (the frame is handled: `handled` says so)
      co_return;
    }
  }
}

}  // namespace shoal::node

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

#include <deque>
#include <optional>

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
constexpr auto kIdleMax = std::chrono::seconds(30);
std::chrono::seconds FrameMax(size_t bytes) { return std::chrono::seconds(30 + (bytes >> 20)); }
// Messages queued for an unreachable peer beyond this are dropped (Raft resends).
constexpr size_t kQueueMax = 8192;
constexpr size_t kChunkQueueMax = 64;
// A frame takes queued messages and snapshot chunks up to about this many
// payload bytes, so heartbeats and gossip do not wait behind much.
constexpr uint64_t kFrameSoftBytes = 8 << 20;

uint64_t PayloadBytes(const raft::Message& m) {
  return raft::entries_size(m.entries) + m.snapshot.data.size() + m.context.size();
}

using asio::experimental::as_tuple;

}  // namespace

struct Transport::Peer {
  explicit Peer(asio::io_context& io) : socket(io), signal(io) {
    signal.expires_at(asio::steady_timer::time_point::max());
  }
  std::string host;
  uint16_t port = 0;
  asio::ip::tcp::socket socket;
  asio::steady_timer signal;
  std::vector<GroupMessage> queue;
  std::deque<SnapshotChunk> chunks;
  bool send_leaders = false;
  bool writer_running = false;
  uint64_t frames_in = 0;  // frames read from this peer (ProbeGone)
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
  peers_.clear();
  acceptor_.reset();
}

Transport::Peer& Transport::PeerFor(raft::NodeId id) {
  auto& p = peers_[id];
  if (!p) p = std::make_unique<Peer>(io_);
  return *p;
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
    p.host = host;
    p.port = port;
    asio::error_code ec;
    p.socket.close(ec);  // reconnect to the new address
    Wake(p);
  });
}

void Transport::Send(std::vector<GroupMessage> msgs) {
  if (msgs.empty()) return;
  asio::post(io_, [this, msgs = std::move(msgs)]() mutable {
    std::map<raft::NodeId, Peer*> touched;
    for (auto& gm : msgs) {
      if (gm.msg.to == node_id()) continue;
      Peer& p = PeerFor(gm.msg.to);
      if (p.queue.size() >= kQueueMax) continue;
      touched[gm.msg.to] = &p;
      p.queue.push_back(std::move(gm));
    }
    for (auto& [id, p] : touched) Wake(*p);
  });
}

void Transport::SendChunk(raft::NodeId to, SnapshotChunk c) {
  asio::post(io_, [this, to, c = std::move(c)]() mutable {
    if (to == node_id()) return;
    Peer& p = PeerFor(to);
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
      for (auto& [id, p] : peers_) std::erase_if(p->queue, [](const GroupMessage& gm) { return gm.group == 0; });
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

asio::awaitable<void> Transport::WriteLoop(Peer* p) {
  auto backoff = kBackoffMin;
  asio::steady_timer wait(io_);
  std::string frame;
  for (;;) {
    if (p->queue.empty() && p->chunks.empty() && !p->send_leaders) {
      p->signal.expires_at(asio::steady_timer::time_point::max());
      auto [ec] = co_await p->signal.async_wait(as_tuple(asio::use_awaitable));
      (void)ec;
      if (stopped_) co_return;
      continue;
    }
    if (!p->socket.is_open()) {
      asio::ip::tcp::socket s(io_);
      asio::error_code ec = co_await Dial(p->host, p->port, s);
      if (ec) {
        p->queue.clear();  // Raft resends what matters
        p->chunks.clear();  // so do snapshot senders
        p->send_leaders = false;
        wait.expires_after(backoff);
        co_await wait.async_wait(as_tuple(asio::use_awaitable));
        backoff = std::min(backoff * 2, std::chrono::duration_cast<std::chrono::milliseconds>(kBackoffMax));
        if (stopped_) co_return;
        continue;
      }
      s.set_option(asio::ip::tcp::no_delay(true), ec);
      p->socket = std::move(s);
      backoff = kBackoffMin;
    }
    proto::PeerFrame pf;
    pf.set_version(kWireVersion);
    pf.set_cluster_id(cluster_id());
    pf.set_from_node(node_id());
    pf.set_from_host(opts_.bind_host);
    pf.set_from_peer_port(port_);
    uint64_t payload = 0;
    size_t taken = 0;
    for (; taken < p->queue.size(); ++taken) {
      auto& gm = p->queue[taken];
      uint64_t bytes = PayloadBytes(gm.msg);
      if (taken > 0 && payload + bytes > kFrameSoftBytes) break;
      if (bytes + (1 << 20) > opts_.max_frame_bytes) {
        // The peer would refuse the frame and drop the connection with
        // everything else queued on it; Raft resends (only inline
        // snapshots, the meta shard's, can be this large).
        spdlog::error("group {}: a {} byte message to node {} is over the frame limit; dropped", gm.group,
                      bytes, gm.msg.to);
        continue;
      }
      payload += bytes;
      auto* out = pf.add_messages();
      out->set_group(gm.group);
      ToProto(gm.msg, out->mutable_msg());
    }
    p->queue.erase(p->queue.begin(), p->queue.begin() + static_cast<long>(taken));
    // Snapshot chunks share the frame budget; at least one goes each frame.
    while (!p->chunks.empty() && (pf.chunks_size() == 0 || payload + p->chunks.front().data.size() <= kFrameSoftBytes)) {
      SnapshotChunk& c = p->chunks.front();
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
      p->chunks.pop_front();
    }
    if (p->send_leaders) {
      p->send_leaders = false;
      pf.set_has_leaders(true);
      pf.set_has_transfers(true);
      pf.set_transfers_sending(local_transfers_.sending);
      pf.set_transfer_bytes_sent(local_transfers_.bytes_sent);
      pf.set_transfer_bytes_received(local_transfers_.bytes_received);
      pf.set_meta_recovery(local_transfers_.meta_recovery);
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
    frame.clear();
    uint32_t n = static_cast<uint32_t>(pf.ByteSizeLong());
    for (int i = 3; i >= 0; --i) frame.push_back(static_cast<char>(n >> (8 * i)));
    pf.AppendToString(&frame);
    std::optional<Deadline> deadline(std::in_place, p->socket, FrameMax(frame.size()));
    auto [ec, written] = co_await asio::async_write(p->socket, asio::buffer(frame), as_tuple(asio::use_awaitable));
    deadline.reset();
    (void)written;
    if (ec) {
      asio::error_code cec;
      p->socket.close(cec);
      if (stopped_) co_return;
      continue;
    }
    frames_sent_.fetch_add(1, std::memory_order_relaxed);
  }
}

asio::awaitable<void> Transport::AcceptLoop() {
  for (;;) {
    auto [ec, socket] = co_await acceptor_->async_accept(as_tuple(asio::use_awaitable));
    if (ec == asio::error::operation_aborted || !acceptor_->is_open()) co_return;
    if (ec) continue;
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
  const uint64_t frames_at_close = it->second->frames_in;
  const std::string host = it->second->host;
  const uint16_t port = it->second->port;
  asio::steady_timer wait(io_);
  // A process that is ending closes its sockets one by one: a connection may
  // close before its listening socket does, and a probe in between is taken
  // into the backlog, then reset. So a probe that connects is watched
  // briefly: a live peer keeps an accepted connection open (it waits 30 s
  // for a frame); one reset or closed at once is probed again.
  for (int attempt = 0; attempt < 3; ++attempt) {
    asio::ip::tcp::socket s(io_);
    asio::error_code cec = co_await Dial(host, port, s);
    if (stopped_) co_return;
    if (cec == asio::error::connection_refused) {
      auto p = peers_.find(node);
      if (p != peers_.end() && p->second->frames_in != frames_at_close) co_return;  // it spoke again since
      peers_gone_.fetch_add(1, std::memory_order_relaxed);
      spdlog::info("node {:016x} is gone: it closed its connection and its Raft port refuses connections", node);
      gone_(node);
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

void Transport::MaybeProbeGone(raft::NodeId from, const asio::error_code& ec) {
  // The peer's end closed or reset the connection (not our own deadline):
  // its process may have ended. Its Raft port tells.
  if (from != 0 && !stopped_ && (ec == asio::error::eof || ec == asio::error::connection_reset)) {
    asio::co_spawn(io_, ProbeGone(from), asio::detached);
  }
}

asio::awaitable<void> Transport::ReadLoop(asio::ip::tcp::socket socket) {
  std::string body;
  raft::NodeId from = 0;  // the peer that writes on this connection, once known
  for (;;) {
    unsigned char head[4];
    std::optional<Deadline> idle(std::in_place, socket, kIdleMax);
    auto [ec, n] = co_await asio::async_read(socket, asio::buffer(head, 4), as_tuple(asio::use_awaitable));
    idle.reset();
    if (ec) {
      MaybeProbeGone(from, ec);
      co_return;
    }
    uint32_t len = (uint32_t{head[0]} << 24) | (uint32_t{head[1]} << 16) | (uint32_t{head[2]} << 8) | head[3];
    if (len > opts_.max_frame_bytes) {
      frames_refused_.fetch_add(1, std::memory_order_relaxed);
      spdlog::warn("peer frame of {} bytes refused", len);
      co_return;
    }
    body.resize(len);
    std::optional<Deadline> reading(std::in_place, socket, FrameMax(len));
    auto [ec2, n2] = co_await asio::async_read(socket, asio::buffer(body), as_tuple(asio::use_awaitable));
    reading.reset();
    if (ec2) {
      MaybeProbeGone(from, ec2);
      co_return;
    }
    proto::PeerFrame pf;
    if (!pf.ParseFromString(body) || pf.version() != kWireVersion || pf.from_node() == 0) {
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
    ++PeerFor(from).frames_in;
    if (!pf.from_host().empty() && pf.from_peer_port() != 0 && pf.from_peer_port() < 65536) {
      Peer& p = PeerFor(pf.from_node());
      if (p.port == 0) {
        p.host = pf.from_host();
        p.port = static_cast<uint16_t>(pf.from_peer_port());
      }
    }
    for (const auto& gm : pf.messages()) {
      raft::Message m;
      if (!FromProto(gm.msg(), &m) || m.from != pf.from_node() || m.to != node_id()) continue;
      deliver_(gm.group(), std::move(m));
    }
    for (const auto& pc : pf.chunks()) {
      if (!chunks_ || pc.kind() > static_cast<uint32_t>(SnapshotChunk::Kind::kAck)) continue;
      SnapshotChunk c;
      c.kind = static_cast<SnapshotChunk::Kind>(pc.kind());
      c.group = pc.group();
      c.from = pc.from();
      c.to = pc.to();
      c.export_id = pc.export_id();
      c.offset = pc.offset();
      c.total = pc.total();
      c.data = pc.data();
      c.done = pc.done();
      c.refused = pc.refused();
      c.resync = pc.resync();
      // Offers and data come from the image's sender, acknowledgements
      // from its receiver.
      bool ack = c.kind == SnapshotChunk::Kind::kAck;
      if ((ack ? c.to : c.from) != pf.from_node() || (ack ? c.from : c.to) != node_id()) continue;
      chunks_(pf.from_node(), std::move(c));
    }
    if (pf.has_transfers() && transfers_) {
      transfers_(pf.from_node(), NodeStats{pf.transfers_sending(), pf.transfer_bytes_sent(),
                                           pf.transfer_bytes_received(), pf.meta_recovery()});
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
  }
}

}  // namespace shoal::node

// Transport: Raft traffic between nodes. Frames are [u32 big-endian
// length][proto::PeerFrame], version 1, each carrying every message queued
// for one destination node since the last write (batched per node). One
// outgoing connection per peer, opened from this node's bind address and
// re-opened with backoff; frames of another cluster are refused. Runs on a
// thread of its own; Send() and the setters may be called from any thread.
// The frames of an accepted connection are read on that thread too, or, with
// TransportOptions::readers, on a worker once the connection is proved: the
// messages for that worker's groups are then stepped without a hand-off
// (long frames, such as snapshot chunks, are still read on the transport
// thread: the connection moves there and back).
// Send() writes a frame itself, on the calling thread, when the connection
// is open, in plain text, and its writer has nothing queued: a worker's
// messages then leave without waking the transport thread (one hand-off less
// on each way of a replicated write); otherwise they queue for the writer.
#pragma once

#include <asio/awaitable.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"
#include "node/image_stream.h"
#include "node/stream.h"
#include "raft/types.h"

namespace shoal::proto {
class PeerFrame;
}

namespace shoal::node {

struct GroupMessage {
  uint64_t group;
  raft::Message msg;
};

// A group this node leads, with its membership, as gossiped to every peer.
struct LeaderReport {
  uint64_t group = 0;
  uint64_t term = 0;
  std::vector<raft::NodeId> voters;  // incoming and outgoing while joint
  std::vector<raft::NodeId> learners;
  bool joint = false;
  // Data shards (see LeaderReport in proto/peer.proto); 0 when unknown.
  uint32_t slot_begin = 0, slot_end = 0;
  uint64_t bytes = 0;
  uint64_t ops_per_sec = 0;
  uint32_t split_slot = 0;
  bool load_measured = false;
  uint64_t recovery = 0;  // the unsafe recovery the leader's replica belongs to
};

// A replica that has heard from no leader of its group for a while, as its
// node gossips it: an unsafe recovery picks, among these, the survivor that
// is furthest ahead (cluster::RefuseSurvivor).
struct LeaderlessReplica {
  uint64_t group = 0;
  raft::NodeId member = raft::kNoNode;
  uint64_t last_term = 0, last_index = 0;  // of its durable log
  uint64_t applied = 0;
  std::vector<raft::NodeId> voters, voters_outgoing, learners;  // the membership its log has
  uint64_t recovery = 0;  // the unsafe recovery it belongs to
  bool operator==(const LeaderlessReplica&) const = default;
};

// What a node gossips of itself with its leaderships: its snapshot
// transfers (counters since it started), the unsafe recovery its meta
// replica belongs to, and its replicas that hear no leader.
struct NodeStats {
  uint64_t sending = 0;
  uint64_t bytes_sent = 0;
  uint64_t bytes_received = 0;
  uint64_t meta_recovery = 0;
  uint64_t features = 0;
  std::vector<uint64_t> removed;  // removed nodes heard from lately (PeerFrame.removed_nodes)
  std::vector<LeaderlessReplica> leaderless;
};

struct TransportOptions {
  raft::NodeId node_id = raft::kNoNode;
  std::string bind_host = "127.0.0.1";
  uint16_t peer_port = 0;  // 0: any (tests)
  // Frames larger than this are refused (an inline snapshot, as the meta
  // shard sends, travels in one frame; data shards stream theirs in chunks).
  uint32_t max_frame_bytes = 1u << 30;
  // The cluster secret (empty: none). With one, every connection starts
  // with a challenge and response both ways (common/secret.h) before any
  // frame; a peer that does not prove it, or that runs without one, is
  // refused and logged on both sides.
  std::string secret{};
  // TLS (tls-cluster): every connection is TLS, and both sides show a
  // certificate the CA signed; a peer that cannot is refused and logged.
  // The cluster secret, if any, is then proved inside TLS.
  std::shared_ptr<TlsContext> tls{};
  // Where accepted connections' frames are read once the connection is
  // proved, each connection on the next of these in turn (a node with one
  // worker passes it); frames over 256 KiB (snapshot chunks) are still
  // read on the transport thread, the connection moving there and back.
  // Empty, or with TLS: on the transport thread. The
  // handlers below then run on the reading thread, so they must be
  // thread-safe, and they may still run after Stop(): the readers must be
  // stopped (their threads joined) before the transport is destroyed.
  std::vector<asio::io_context*> readers{};
};

class Transport {
 public:
  // Called on the thread that reads the connection (the transport thread or
  // one of TransportOptions::readers) with the well-formed messages of each
  // frame received (one call per frame, so the receiver can hand a frame's
  // messages to each worker at once).
  using DeliverFn = std::function<void(std::vector<GroupMessage> msgs)>;
  // Called on the reading thread with a peer's complete leadership list
  // (every gossip round, so also a heartbeat of that peer).
  using LeadersFn = std::function<void(raft::NodeId from, std::vector<LeaderReport>)>;

  // Called on the reading thread with a snapshot chunk from peer `from`.
  using ChunkFn = std::function<void(raft::NodeId from, SnapshotChunk)>;

  Transport(TransportOptions opts, DeliverFn deliver, LeadersFn leaders);
  // Where snapshot chunks go; set before Start (chunks are dropped without).
  void set_chunk_handler(ChunkFn fn) { chunks_ = std::move(fn); }
  // Called on the reading thread with a peer's transfer counters.
  using TransfersFn = std::function<void(raft::NodeId from, NodeStats)>;
  void set_transfers_handler(TransfersFn fn) { transfers_ = std::move(fn); }
  // Called on the transport thread when a peer's process is known to have
  // ended: the connection it had open to this node was closed or reset by
  // its end (at exit the kernel closes a process's sockets), then a new
  // connection to its Raft port (a probe, or this node's writer redialing)
  // is refused, and no frame came from it in between. Once per peer until
  // it speaks again. A link cut or a stopped process shows neither (Raft's
  // timeouts notice those); a firewall that rejects connections does:
  // docs/OPERATIONS.md.
  using GoneFn = std::function<void(raft::NodeId node)>;
  void set_gone_handler(GoneFn fn) { gone_ = std::move(fn); }
  uint64_t peers_gone() const { return peers_gone_.load(std::memory_order_relaxed); }
  ~Transport();
  Status Start();
  void Stop();
  uint16_t port() const { return port_; }

  // This node's id; frames are refused until it and the cluster id are set.
  void set_node_id(raft::NodeId id) { node_id_.store(id, std::memory_order_release); }
  raft::NodeId node_id() const { return node_id_.load(std::memory_order_acquire); }
  void set_cluster_id(uint64_t id) { cluster_id_.store(id, std::memory_order_release); }
  uint64_t cluster_id() const { return cluster_id_.load(std::memory_order_acquire); }
  // Where node `id` listens for peers.
  void SetAddress(raft::NodeId id, const std::string& host, uint16_t port);
  // Queues messages (each to msg.to) and wakes the writers.
  void Send(std::vector<GroupMessage> msgs);
  // Queues a snapshot chunk for node `to` (dropped, and sent again by its
  // sender, if too many wait).
  void SendChunk(raft::NodeId to, SnapshotChunk c);
  // The groups this node leads, gossiped to every peer.
  void SetLocalLeaders(std::vector<LeaderReport> leaders);
  // This node's figures, gossiped with the leaderships. A change of its
  // meta recovery drops the meta-shard messages still queued.
  void SetLocalTransfers(NodeStats stats);

  // Frames written, in all and by Send()'s callers themselves.
  uint64_t frames_sent() const { return frames_sent_.load(std::memory_order_relaxed); }
  uint64_t frames_sent_direct() const { return frames_direct_.load(std::memory_order_relaxed); }
  // Of those, frames the socket took only part of (its writer wrote the rest).
  uint64_t direct_rests() const { return direct_rests_.load(std::memory_order_relaxed); }
  uint64_t frames_refused() const { return frames_refused_.load(std::memory_order_relaxed); }
  // Connections refused for the cluster secret, either side.
  uint64_t peers_refused() const { return peers_refused_.load(std::memory_order_relaxed); }

 private:
  struct Peer;
  Peer& PeerFor(raft::NodeId id);
  // The peer node a Raft member id is on (common/member_id.h).
  raft::NodeId NodeFor(raft::NodeId member) const;
  void Wake(Peer& p);
  // Send()'s own writes: the messages of `msgs` whose peer's connection is
  // idle leave in a frame written here; the others are left in `msgs`, and
  // their known peers, returned, count one more post on its way (Peer::posted).
  std::vector<Peer*> SendNow(std::vector<GroupMessage>& msgs);
  // The frame's fields that say who sends it.
  void FrameHeader(proto::PeerFrame& pf) const;
  // Appends [length][pf] to frame.
  static void Encode(const proto::PeerFrame& pf, std::string* frame);
  // With a session key, appends the frame's MAC (counts p.frames_out; under p.mu).
  static void Mac(Peer& p, std::string* frame);
  // Whether p's writer waits with nothing to write and nothing on its way
  // to it, so that SendNow may write on its connection (under p.mu).
  static bool IdleLocked(const Peer& p);
  // Closes p's outgoing connection (transport thread); what it had not yet
  // written is dropped.
  void CloseOutgoing(Peer& p);
  // Drops what waits for p's writer (transport thread).
  void DropQueued(Peer& p);
  // The next frame for p's writer, from what waits (under p.mu).
  void BuildFrame(Peer& p, std::string* frame);
  asio::awaitable<void> AcceptLoop();
  struct Reading;
  // An accepted connection: its handshake, then its frames (ReadFrames),
  // here or on a reader.
  asio::awaitable<void> ReadLoop(asio::ip::tcp::socket socket);
  // Moves a proved plain connection, and what reading it needs, to `to`
  // (the transport's io_context or a reader), where ReadFrames goes on.
  void MoveReading(Stream& stream, asio::io_context& to, std::unique_ptr<Reading> reading);
  asio::awaitable<void> ReadMoved(asio::ip::tcp::socket socket, std::unique_ptr<Reading> reading);
  // The frames of a proved connection, on whichever thread owns `stream`:
  // what only the transport thread may touch goes there (OnTransportThread).
  asio::awaitable<void> ReadFrames(Stream& stream, std::unique_ptr<Reading> reading);
  // Whether a connection accepted later than connection `serial` has
  // brought a frame from `from`: a peer writes on one connection at a time,
  // so what is left to read on an older one is older than what it sent
  // since, and is dropped with that connection (any thread).
  bool Superseded(raft::NodeId from, uint64_t serial);
  // A frame from `from` arrived (any thread): counts it for ProbeGone and
  // learns the peer's address from it if none is known.
  void NoteFrame(raft::NodeId from, const proto::PeerFrame& pf);
  // Runs fn on the transport thread: at once when called there.
  void OnTransportThread(std::function<void()> fn);
  asio::awaitable<void> WriteLoop(Peer* p);
  // The start of every connection (see TransportOptions::secret): false
  // when the other side is refused (logged) or went away.
  asio::awaitable<bool> DialerHandshake(Peer& p, Stream& s);
  asio::awaitable<bool> AcceptorHandshake(Stream& s, std::string* session_key);
  // Logs a refusal of a connection from `who` at most every 10 s per address.
  void LogRefusedPeer(const std::string& who, const std::string& why);
  asio::awaitable<void> GossipLoop();
  // Connects `s` from this node's bind address to host:port (within 2 s).
  asio::awaitable<asio::error_code> Dial(const std::string& host, uint16_t port, asio::ip::tcp::socket& s);
  // Whether `node`'s Raft port refuses a connection now (see GoneFn).
  asio::awaitable<void> ProbeGone(raft::NodeId node);
  void MaybeProbeGone(raft::NodeId from, const asio::error_code& ec);
  // A dial of `p` at host:port was refused: reports it gone if a connection
  // from it ended by its side at most 2 s ago, while it listened there, and
  // it has sent nothing since.
  void RefusedAfterClose(Peer& p, const std::string& host, uint16_t port);

  TransportOptions opts_;
  DeliverFn deliver_;
  LeadersFn leaders_;
  ChunkFn chunks_;
  TransfersFn transfers_;
  GoneFn gone_;
  NodeStats local_transfers_;  // transport thread
  std::atomic<uint64_t> cluster_id_{0};
  std::atomic<raft::NodeId> node_id_{0};
  asio::io_context io_{1};
  std::unique_ptr<asio::ip::tcp::acceptor> acceptor_;
  uint16_t port_ = 0;
  std::thread thread_;
  // Peers and local leaders are touched only on the transport thread.
  std::map<raft::NodeId, std::unique_ptr<Peer>> peers_;
  // Held exclusively by the transport thread while it adds a peer or changes
  // its address; shared by SendNow while it looks peers up. Peers are never
  // removed before the transport is destroyed.
  std::shared_mutex peers_mu_;
  std::vector<LeaderReport> local_leaders_;
  std::atomic<uint64_t> frames_sent_{0};
  std::atomic<uint64_t> frames_direct_{0};
  std::atomic<uint64_t> direct_rests_{0};
  std::atomic<uint64_t> frames_refused_{0};
  std::atomic<uint64_t> peers_gone_{0};
  std::atomic<uint64_t> peers_refused_{0};
  std::map<std::string, std::chrono::steady_clock::time_point> refusals_logged_;  // transport thread
  size_t next_reader_ = 0;                     // transport thread: the reader the next connection goes to
  uint64_t accepted_ = 0;                      // transport thread: connections accepted
  std::mutex latest_mu_;
  std::map<raft::NodeId, uint64_t> latest_;  // under latest_mu_: each peer's latest connection with a frame
  int handshakes_ = 0;                         // transport thread: connections not yet proved
  std::map<std::string, int> handshakes_by_ip_;
  std::map<std::string, std::pair<int64_t, int>> tls_starts_by_ip_;  // transport thread: second, count
  bool stopped_ = false;
};

}  // namespace shoal::node

// Connection: one client. Reads requests, runs them in order, and writes the
// replies of a whole pipeline at once, after the writes they depend on are
// durable. Lives on one worker; touched only on that worker's thread.
#pragma once

#include <asio/awaitable.hpp>
#include <asio/ip/tcp.hpp>

#include <functional>
#include <memory>
#include <span>
#include <optional>
#include <string>
#include <vector>

#include "node/stream.h"
#include "resp/parser.h"
#include "resp/writer.h"
#include "server/acl.h"
#include "server/forwarder.h"
#include "server/server.h"

namespace shoal::server {

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  // `tls`: the TLS port's context (the handshake is the connection's first
  // step); null on the plain port.
  Connection(Server& server, node::Worker& worker, asio::ip::tcp::socket socket,
             std::shared_ptr<node::TlsContext> tls = nullptr);
  ~Connection();

  asio::awaitable<void> Run();

  // --- state that commands read and change
  Server& server() { return server_; }
  node::Worker& worker() { return worker_; }
  uint64_t id() const { return id_; }
  uint16_t db() const { return db_; }
  void set_db(uint16_t db) { db_ = db; }
  int protocol() const { return protocol_; }
  void set_protocol(int p) {
    protocol_ = p;
    writer_.set_protocol(p);
  }
  bool authenticated() const { return authenticated_; }
  // Logs in as `user` (AUTH, HELLO AUTH). The password is kept so that
  // requests forwarded to other nodes run there as the same user, never
  // with more rights (Forwarder::Session).
  void LogIn(std::string user, std::string password);
  const std::string& user_name() const { return user_name_; }
  // The user's rules in force (looked up again when the ACL changes);
  // nullptr if the user was deleted.
  const acl::User* user() const;
  // What a forwarded request runs under on another node.
  Forwarder::Session session() const { return {db_, protocol_, user_name_, auth_password_, auth_key_}; }
  // Whether the user may touch every one of `keys` (WATCH's, a transaction's watches).
  bool KeysPermitted(std::span<const std::string_view> keys) const;
  const std::string& name() const { return name_; }
  void set_name(std::string n) { name_ = std::move(n); }
  void set_lib_name(std::string n) { lib_name_ = std::move(n); }
  void set_lib_ver(std::string v) { lib_ver_ = std::move(v); }
  // Whether the client speaks TLS, and showed a certificate the CA signed.
  bool tls() const { return stream_.tls(); }
  bool peer_certified() const { return stream_.peer_certified(); }
  const std::string& addr() const { return addr_; }
  const std::string& laddr() const { return laddr_; }
  // Closes the connection after the current reply is written.
  void CloseAfterReply() { close_after_reply_ = true; }
  // Closes the connection now (CLIENT KILL); safe from its own worker only.
  void Kill();
  // One line of CLIENT LIST / CLIENT INFO for this client.
  std::string InfoLine() const;
  // The reply buffer of the current pipeline (for async handlers).
  resp::Writer& writer() { return writer_; }
  // A cluster-aware client (it asked about the cluster, or it is another
  // node) gets MOVED for keys led elsewhere; any other client's requests
  // are forwarded.
  bool cluster_aware() const { return cluster_aware_; }
  void set_cluster_aware(bool v) { cluster_aware_ = v; }
  // A connection from another node's forwarder (SHOAL.ROUTED).
  bool routed() const { return routed_; }
  void set_routed() { routed_ = cluster_aware_ = true; }
  // The nonce SHOAL.CHALLENGE gave this connection, for one SHOAL.JOIN.
  std::string& join_challenge() { return join_challenge_; }
  // READONLY: reads may be served by a follower (linearizable, ReadIndex).
  void set_readonly(bool v) { readonly_ = v; }

  // MULTI ... EXEC: the commands queued since MULTI (transactions.cc).
  // A WATCHed key and the fingerprint of its value then (kv::KeyFingerprint).
  struct Watched {
    uint16_t db;
    std::string key, fingerprint;
  };
  struct Multi {
    bool active = false;
    bool failed = false;  // a command was refused while queuing: EXEC aborts
    std::optional<uint16_t> slot;  // of the keys queued so far
    std::vector<std::vector<std::string>> commands;
    std::vector<Watched> watches;  // since WATCH (kept by MULTI, dropped by EXEC, DISCARD, UNWATCH)
    size_t bytes = 0;  // of the commands queued
  };
  Multi& multi() { return multi_; }
  // Runs a transaction's commands as one (EXEC, and SHOAL.EXEC from a node
  // that forwards a plain client's transaction): all their keys in one slot,
  // one log entry on the slot's shard, the replies as one array; nothing
  // (a null array) if a watched key changed meanwhile.
  asio::awaitable<void> RunTransaction(std::vector<std::vector<std::string>> commands,
                                       std::vector<Watched> watches);
  // WATCH key [key ...]: their fingerprints, read where their slot is led.
  asio::awaitable<void> Watch(kv::Args args);
  // WAIT numreplicas timeout: how many replicas (besides the leader) hold
  // the client's last write, waiting up to timeout ms (0: until enough do).
  asio::awaitable<void> Wait(kv::Args args);
  // SHOAL.WAIT slot numreplicas timeout: the same for the shard that holds
  // `slot`, counted where it is led (another node's WAIT, forwarded).
  asio::awaitable<void> WaitForSlot(uint16_t slot, int64_t numreplicas, int64_t timeout_ms);

 private:
  // Runs one command; returns false if it must continue asynchronously.
  bool ExecuteNow(const Command* cmd, kv::Args args, const Command** async_cmd);
  asio::awaitable<void> ExecuteLater(const Command& cmd, kv::Args args);
  // The error a command is refused with (unknown, arity, auth), or "".
  std::string Refusal(const Command* cmd, kv::Args args) const;
  // Runs a read on `shards` (the keyed read's shard, or the keyless read's).
  // now_ms: the expiry clock (0: the clock's now).
  void RunRead(const Command& cmd, kv::Args args, std::span<kv::Shard* const> shards, int64_t now_ms = 0);
  // Runs it unless a snapshot import overlapped it on one of `replicas`
  // (then a TRYAGAIN error); `shards`: as RunRead (for a keyed read, the
  // node's shards as before: reads find the key's shard themselves).
  void RunReadOn(const Command& cmd, kv::Args args, std::span<replica::Replica* const> replicas,
                 std::span<kv::Shard* const> shards = {}, int64_t now_ms = 0);
  // Keyless reads (KEYS, SCAN, DBSIZE, RANDOMKEY): each shard read passes a
  // read barrier first.
  asio::awaitable<void> RunKeylessRead(const Command& cmd, kv::Args args);
  // now_ms: the time it is prepared at (0: the clock's).
  bool PrepareWrite(const Command& cmd, kv::Args args, kv::Entry* entry, resp::Writer* errors, int64_t now_ms = 0);
  // Queues a write for group commit. `raw`: the request as the client sent
  // it (with its slot), to run again elsewhere if the shard's leader refuses
  // it (a leadership transfer) and leadership moves on; empty: such a write
  // is answered TRYAGAIN instead.
  // `caller_reruns`: if its leader refuses it unlogged, FlushWrites leaves
  // it refused and says so (flush_left_refused_); the caller prepares it
  // again (a transaction: its clock and relative TTLs are of its own try).
  void QueueWrite(uint64_t group, kv::Entry entry, uint16_t slot = 0, std::string_view raw = {},
                  bool caller_reruns = false);
  bool WritesQueueFull() const;
  // Proposes the queued writes (one log entry per shard, concurrently) and
  // writes their replies in request order. A batch its leader refuses
  // without logging it (a transfer under way, too much uncommitted) is
  // proposed again while this node leads, and its writes with a raw request
  // are run again as new requests once another node leads (bounded in time).
  asio::awaitable<void> FlushWrites();
  // A keyed read that needs no wait: `r` (the slot's replica here) may
  // serve it now under its lease. Runs it and returns true; false leaves
  // it to RunKeyed (a barrier to wait for, or not this node's to serve).
  //
  // Such reads one after another in one request buffer, with nothing
  // between them that may wait, share one reading of the clocks
  // (read_clock_; two clock reads were 5% of a pipelined GET's CPU,
  // PERFORMANCE.md 2026-12-04 (last, after)). Sound because:
  // - each of them arrived before the reading was taken (Run resets it at
  //   every read from the socket): a lease that held then made this node
  //   the only leader from when each read was asked, and the lease itself
  //   is still loaded per read, so one given up is seen at once;
  // - the reading is taken anew once the engine's visible writes move on
  //   (VisibleSeq): a read never sees a write prepared after the time it
  //   judges expiry by (a TTL above what was set, a key alive past it);
  // - at most kReadsPerClock share it.
  // `counted`: already counted (a queued GET served the slow way).
  bool RunReadNow(const Command& cmd, kv::Args args, uint16_t slot, replica::Replica* r, bool counted = false);
  // GETs that RunReadNow would serve at once are queued instead, while
  // nothing else comes between them, and served together (one engine
  // MultiGet, kv::GetBatch) before anything else is answered or awaited.
  // Queues GET `key` of `slot` when `r` may serve it now (RunReadNow's
  // checks); false leaves it to the caller, who serves the queue first.
  bool QueueRead(std::string_view key, uint16_t slot, replica::Replica* r);
  // Serves the queued GETs and writes their replies in order, each under
  // the same checks as RunReadNow at the time of the read: a fresh clock
  // reading, each replica's lease and ownership of the slot, its import
  // generation around the read. False, with nothing written, if a check no
  // longer holds (a lease lapsed, a split): then ServeQueuedReadsSlowly.
  bool ServeQueuedReads();
  asio::awaitable<void> ServeQueuedReadsSlowly();
  struct QueuedRead {
    replica::Replica* r;
    uint16_t slot;
  };
  std::vector<QueuedRead> queued_reads_;
  kv::GetBatch get_batch_;
  const Command* get_command_ = nullptr;  // GET (its reads are queued)
  const Command* last_found_ = nullptr;   // Run's last command looked up
  // RunReadNow's (and QueueRead's) checks: `r` may serve a read of `slot`
  // now under its lease, judged on read_clock_ (taken anew when due).
  bool LeaseServesNow(replica::Replica* r, uint16_t slot, bool* leader_here);
  static constexpr int kReadsPerClock = 32;
  struct ReadClock {
    int64_t mono_us = 0;  // 0: not read yet
    int64_t unix_ms = 0;
    uint64_t seq = 0;  // the engine's VisibleSeq before the clocks were read
    int reads = 0;
  };
  ReadClock read_clock_;
  // Routes and runs a command on keys (all in one slot); see Run().
  // `inner`: part of a command already counted (WATCH's reads of its keys,
  // a queued write run again): not counted again, nor shown as the
  // connection's last command.
  asio::awaitable<void> RunKeyed(const Command& cmd, kv::Args args, uint16_t slot, bool inner = false);
  // A blocking command (BLPOP...) on keys of `slot`: applied at once, and
  // again after each write to its keys, until it takes something, its
  // timeout passes, the client leaves or the shard's leadership moves.
  asio::awaitable<void> RunBlocking(const Command& cmd, kv::Args args, uint16_t slot);
  // While a command waits: reads what the client sends meanwhile into the
  // read buffer (without growing it) and calls *gone if the client leaves.
  // Stops when *watching turns false.
  struct ClientWatch {
    bool watching = true;
    std::function<void()> gone;
  };
  void WatchClient(std::shared_ptr<ClientWatch> watch);
  // Watches the client while it lives; stops watching when it goes.
  struct WatchGuard {
    WatchGuard(Connection* c, std::shared_ptr<ClientWatch> w);
    ~WatchGuard();
    Connection* c;
    std::shared_ptr<ClientWatch> w;
  };
  // A plain client's request that may wait long (a blocking pop, WAIT), on
  // a forwarding link of its own to the slot's leader, closed if the client
  // leaves first.
  asio::awaitable<void> ForwardWaiting(uint16_t slot, kv::Args args, int64_t timeout_ms);
  // MOVED to the slot's leader, or CLUSTERDOWN when it has none.
  void ReplyMoved(uint64_t group, uint16_t slot);
  // What a blocked command answers when its shard's leadership moved away:
  // MOVED (cluster-aware), or UNBLOCKED.
  std::string NotLedHere(uint64_t group, uint16_t slot);
  // For a cluster-aware client about to get MOVED: waits (up to 1 s) until
  // the group's new leader is known, so that it is told where to go rather
  // than CLUSTERDOWN in the moment between two leaders. A group that stayed
  // leaderless for the whole wait is not waited for again on this
  // connection for kLeaderlessMemoUs (a shard without a majority: each
  // command would hold up the pipeline behind it for a second).
  asio::awaitable<void> AwaitLeaderKnown(uint64_t group);
  // Waits until local state may serve a linearizable read of the group.
  asio::awaitable<bool> ReadBarrier(replica::Replica* r);
  // The same for several groups at once: every barrier is asked before any
  // is awaited (a node's shards confirm in one round, not one after another).
  // result[i] says whether replicas[i] may serve.
  asio::awaitable<std::vector<char>> ReadBarriers(std::span<replica::Replica* const> replicas);
  // Keyless writes (FLUSHDB, FLUSHALL): every shard this node leads, and for
  // a plain client every other node as well.
  asio::awaitable<void> RunKeylessWrite(const Command& cmd, kv::Args args);
  asio::awaitable<bool> FlushReplies();
  void GrowReadBuffer(size_t wanted);
  // Inside MULTI: checks and queues a command (QUEUED, or why not).
  void QueueInMulti(const Command* cmd, kv::Args args);

  Server& server_;
  node::Worker& worker_;
  node::Stream stream_;
  uint64_t id_;
  uint16_t db_ = 0;
  int protocol_ = 2;
  bool authenticated_;
  std::string user_name_ = "default";
  std::string auth_password_;
  std::string auth_key_;       // SHA-256 of auth_password_ (forwarding links are pooled by it)
  uint64_t user_created_ = 0;  // acl::User::created of the user logged in as
  mutable std::shared_ptr<const acl::User> user_;
  mutable uint64_t user_epoch_ = 0;
  bool close_after_reply_ = false;
  bool killed_ = false;
  std::string name_, lib_name_, lib_ver_, addr_, laddr_;
  std::string last_command_ = "NULL";
  int64_t created_ms_, last_active_ms_;
  std::vector<char> rbuf_;
  size_t rlen_ = 0;
  std::string aside_;  // requests read while a command waits, beyond rbuf_'s room
  std::string wbuf_;
  resp::Writer writer_;
  resp::Parser parser_;
  std::vector<std::string_view> args_;
  std::vector<size_t> key_positions_;  // Run's, per command
  bool cluster_aware_ = false;
  bool routed_ = false;
  uint64_t leaderless_group_ = 0;   // AwaitLeaderKnown's last wait in vain, and until when
  int64_t leaderless_until_us_ = 0;  // it is not waited for again
  bool readonly_ = false;
  bool blocked_ = false;  // in a blocking command (CLIENT LIST flags=b)
  uint16_t last_write_slot_ = 0;  // for WAIT
  bool wrote_ = false;
  // Writes of the current pipeline waiting to be proposed: one log entry
  // per shard, all shards at once.
  struct QueuedWrite {
    uint64_t group;
    kv::Entry entry;
    uint16_t slot;
    size_t raw_begin, raw_end;  // in queued_raw_ (equal: none)
    bool caller_reruns;
  };
  std::vector<QueuedWrite> queued_entries_;
  std::string queued_raw_;
  // The last flushed queue's storage, for the next (FlushWrites), and its
  // writes' entries, whose argument strings the next writes are prepared
  // into (TakeEntry; at most kSpareEntryBytes of them).
  std::vector<QueuedWrite> spare_entries_;
  std::string spare_raw_;
  std::vector<kv::Entry> spare_writes_;
  size_t spare_writes_bytes_ = 0;
  kv::Entry TakeEntry();
  void KeepEntries(std::vector<kv::Entry>* entries);
  size_t queued_bytes_ = 0;
  // Set by FlushWrites: a write queued with caller_reruns was refused
  // unlogged (it is in no log); its caller may run it again.
  bool flush_left_refused_ = false;
  std::string join_challenge_;
  Multi multi_;
};

}  // namespace shoal::server

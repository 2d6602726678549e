#include "server/connection.h"

#include <asio/experimental/as_tuple.hpp>
#include <asio/read.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include <algorithm>
#include <cstring>
#include <random>

#include <map>
#include <set>

#include "common/clock.h"
#include "common/secret.h"
#include "resp/reply_scan.h"
#include "kv/commands.h"
#include "kv/transaction.h"
#include "node/deadline.h"
#include "node/runtime.h"
#include "server/forwarder.h"
#include "common/strings.h"
#include "storage/slot.h"

namespace shoal::server {
namespace {

constexpr size_t kReadBufferBytes = 16 * 1024;
constexpr size_t kWriteBufferKeepBytes = 64 * 1024;
// Flushed writes' entries kept for the next writes to be prepared into:
// what a pipeline of 16 SETs of 100-byte values holds, about 4 KiB.
constexpr size_t kSpareEntryBytes = 8 * 1024;
constexpr size_t kSpareEntriesMax = 64;
// A pipeline's writes are applied in batches of at most this much.
constexpr size_t kWriteBatchEntriesMax = 512;
constexpr size_t kWriteBatchBytesMax = 4 * 1024 * 1024;
// A write or read its shard's leader turns away without logging it (a
// leadership transfer under way, a leader that just stepped down) is tried
// again every pause for this long before the client sees TRYAGAIN. A
// transfer ends within an election timeout.
constexpr int64_t kRefusedRetryUs = 2'000'000;
constexpr int64_t kLeaderlessMemoUs = 2'000'000;
constexpr auto kRefusedRetryPause = std::chrono::milliseconds(5);  // doubled after each try
constexpr auto kRefusedRetryPauseMax = std::chrono::milliseconds(100);
constexpr auto kTlsHandshakeMax = std::chrono::seconds(10);
constexpr std::string_view kNoKeyPermission =
    "NOPERM this user has no permissions to access one of the keys used as arguments";
constexpr size_t kRawKeptMax = 64 * 1024;  // a queued write's request bytes kept for that

// The slot of every key at `positions`, or nullopt if they differ.
std::optional<uint16_t> KeysSlot(kv::Args args, const std::vector<size_t>& positions) {
  uint16_t slot = storage::KeySlot(args[positions[0]]);
  for (size_t i : positions) {
    if (storage::KeySlot(args[i]) != slot) return std::nullopt;
  }
  return slot;
}

std::string Endpoint(const asio::ip::tcp::endpoint& ep) {
  return ep.address().to_string() + ":" + std::to_string(ep.port());
}

std::string UnknownCommandError(kv::Args args) {
  std::string list;
  for (size_t i = 1; i < args.size() && list.size() < 128; ++i) {
    size_t room = 128 - list.size();
    list += "'" + std::string(args[i].substr(0, room)) + "' ";
  }
  return "ERR unknown command '" + std::string(args[0].substr(0, 128)) +
         "', with args beginning with: " + list;
}

// Commands that run at once inside MULTI; all others are queued.
bool RunsInsideMulti(const Command* cmd) {
  if (cmd == nullptr) return false;
  static constexpr std::string_view kNow[] = {"exec", "discard", "multi", "watch", "quit", "reset"};
  return std::find(std::begin(kNow), std::end(kNow), cmd->spec.name) != std::end(kNow);
}

bool ArityOk(int arity, size_t argc) {
  return arity > 0 ? argc == static_cast<size_t>(arity) : argc >= static_cast<size_t>(-arity);
}

}  // namespace

Connection::Connection(Server& server, node::Worker& worker, asio::ip::tcp::socket socket,
                       std::shared_ptr<node::TlsContext> tls)
    : server_(server),
      worker_(worker),
      stream_(std::move(socket), std::move(tls)),
      id_(server.NextClientId()),
      authenticated_(server.users().DefaultOpen()),
      created_ms_(RealClock().NowUnixMs()),
      last_active_ms_(created_ms_),
      rbuf_(kReadBufferBytes),
      writer_(&wbuf_, 2),
      parser_(resp::ParserLimits{.bulk_bytes_max = server.config().proto_max_bulk_len}) {
  get_command_ = server.commands().Find("get");
  asio::error_code ec;
  auto remote = stream_.socket().remote_endpoint(ec);
  if (!ec) addr_ = Endpoint(remote);
  auto local = stream_.socket().local_endpoint(ec);
  if (!ec) laddr_ = Endpoint(local);
  stream_.socket().set_option(asio::ip::tcp::no_delay(true), ec);
  server_.worker_state(worker_.index()).connections.push_back(this);
  server_.stats().connected_clients.fetch_add(1, std::memory_order_relaxed);
  server_.stats().client_buffer_bytes.fetch_add(static_cast<int64_t>(rbuf_.size()),
                                                std::memory_order_relaxed);
}

Connection::~Connection() {
  std::erase(server_.worker_state(worker_.index()).connections, this);
  server_.stats().connected_clients.fetch_sub(1, std::memory_order_relaxed);
  server_.stats().client_buffer_bytes.fetch_sub(static_cast<int64_t>(rbuf_.size()),
                                                std::memory_order_relaxed);
}

void Connection::Kill() {
  killed_ = true;
  stream_.Close();
}

void Connection::GrowReadBuffer(size_t wanted) {
  size_t old = rbuf_.size();
  size_t size = std::max(wanted, old * 2);
  rbuf_.resize(size);
  server_.stats().client_buffer_bytes.fetch_add(static_cast<int64_t>(size - old),
                                                std::memory_order_relaxed);
}

asio::awaitable<void> Connection::Run() {
  auto self = shared_from_this();
  auto& stats = server_.stats();
  if (stream_.tls()) {
    // A client that never finishes its handshake (or speaks plain text to
    // the TLS port) holds its connection for at most this long.
    asio::error_code hec;
    {
      node::Deadline deadline(stream_.socket(), kTlsHandshakeMax, node::Deadline::kClose);
      hec = co_await stream_.Handshake(/*accepting=*/true, server_.tls_verify_clients());
    }
    if (hec) {
      server_.NoteTlsRefusal(addr_, hec.message());
      stream_.Close();
      co_return;
    }
  }
  try {
    while (!killed_) {
      if (rlen_ == rbuf_.size()) GrowReadBuffer(rbuf_.size() * 2);
      auto [rec, n] = co_await stream_.ReadSome(asio::buffer(rbuf_.data() + rlen_, rbuf_.size() - rlen_));
      if (rec) break;
      rlen_ += n;
      stats.net_input_bytes.Add(worker_.index(), n);
      last_active_ms_ = RealClock().NowUnixMs();
      size_t pos = 0;
      bool reads_in_row = false;   // the command before was served by RunReadNow
      bool writes_in_row = false;  // the command before was a queued write
      // Writes queued one after another, with nothing between them that may
      // wait or read, share one reading of the wall clock as their entries'
      // now_ms (a reading a write was about 1% of a pipelined SET's CPU),
      // at most kWritesPerClock of them. Each arrived before the reading
      // (taken after the socket read), and they apply in order in one
      // round, as writes within one millisecond always shared a reading; a
      // read or an await between them takes a new one, so no write is
      // judged by a time before a read this connection was served.
      constexpr int kWritesPerClock = 64;
      int64_t write_now_ms = 0;  // 0: not read yet
      int writes_on_clock = 0;
      while (pos < rlen_ && !close_after_reply_ && !killed_) {
        if (!reads_in_row) read_clock_ = {};
        reads_in_row = false;
        if (!writes_in_row) write_now_ms = 0;
        writes_in_row = false;
        size_t consumed = 0;
        auto st = parser_.Parse(rbuf_.data() + pos, rlen_ - pos, authenticated_, &args_, &consumed);
        if (st == resp::ParseStatus::kIncomplete) break;
        if (st == resp::ParseStatus::kError) {
          if (!queued_reads_.empty() && !ServeQueuedReads()) co_await ServeQueuedReadsSlowly();
          if (!queued_entries_.empty()) co_await FlushWrites();  // their replies come first
          writer_.Error("ERR " + parser_.error());
          close_after_reply_ = true;
          break;
        }
        pos += consumed;
        if (args_.empty()) continue;
        // A pipeline repeats its command: the last one found is tried first.
        const Command* cmd = last_found_ != nullptr && EqualsIgnoreCase(args_[0], last_found_->spec.name)
                                 ? last_found_
                                 : (last_found_ = server_.commands().Find(args_[0]));
        // Queued GETs are answered before anything else is (a GET that is
        // not queued after all serves them below, before it runs).
        if (!queued_reads_.empty() && (cmd != get_command_ || multi_.active) && !ServeQueuedReads()) {
          co_await ServeQueuedReadsSlowly();
        }
        if (multi_.active && !RunsInsideMulti(cmd)) {
          if (!queued_entries_.empty()) co_await FlushWrites();
          QueueInMulti(cmd, args_);
          continue;
        }
        std::vector<size_t>& keys = key_positions_;  // its storage is kept (this loop's alone)
        keys.clear();
        if (cmd != nullptr && (cmd->spec.read != nullptr || cmd->spec.apply != nullptr) &&
            Refusal(cmd, args_).empty()) {
          kv::KeyPositionsInto(cmd->spec, args_, &keys);
        }
        if (!keys.empty()) {
          std::optional<uint16_t> slot = KeysSlot(args_, keys);
          if (!slot) {
            if (!queued_entries_.empty()) co_await FlushWrites();
            server_.stats().commands_processed.Add(worker_.index(), 1);
            writer_.Error("CROSSSLOT Keys in request don't hash to the same slot");
            continue;
          }
          if (cmd->spec.apply != nullptr) {
            last_write_slot_ = *slot;
            wrote_ = true;
          }
          if (cmd->spec.flags & kv::kCmdBlocking) {
            if (!queued_entries_.empty()) co_await FlushWrites();
            co_await RunBlocking(*cmd, args_, *slot);
            continue;
          }
          uint64_t group = server_.cluster().GroupOfSlot(*slot);
          replica::Replica* r = group != 0 ? server_.groups().Find(group) : nullptr;
          if (cmd->spec.apply != nullptr && r != nullptr && r->published_is_leader()) {
            // Writes queue up and are proposed together (one log entry),
            // until something else must see them or the queue is full.
            kv::Entry entry = TakeEntry();
            std::string error;
            resp::Writer errors(&error, protocol_);
            server_.stats().commands_processed.Add(worker_.index(), 1);
            last_command_ = cmd->spec.name;
            if (write_now_ms == 0 || writes_on_clock >= kWritesPerClock) {
              write_now_ms = RealClock().NowUnixMs();
              writes_on_clock = 0;
            }
            ++writes_on_clock;
            if (!PrepareWrite(*cmd, args_, &entry, &errors, write_now_ms)) {
              if (!queued_entries_.empty()) co_await FlushWrites();
              writer_.Raw(error);
              continue;
            }
            server_.cluster().NoteOp(worker_.index(), *slot);
            // Its bytes are kept to run it again if its leader refuses it
            // and leadership moves on; a huge one's are not (TRYAGAIN then).
            std::string_view raw(rbuf_.data() + pos - consumed, consumed <= kRawKeptMax ? consumed : 0);
            QueueWrite(group, std::move(entry), *slot, raw);
            if (WritesQueueFull()) {
              co_await FlushWrites();
            } else {
              writes_in_row = true;
            }
            continue;
          }
          if (!queued_entries_.empty()) co_await FlushWrites();
          // `r` was looked up before FlushWrites may have waited: a replica
          // retired meanwhile is kept alive with no lease (RunReadNow
          // declines), and a split meanwhile fails its OwnsSlot check.
          if (cmd == get_command_ && r != nullptr && QueueRead(args_[1], *slot, r)) {
            reads_in_row = true;
            continue;
          }
          if (!queued_reads_.empty() && !ServeQueuedReads()) co_await ServeQueuedReadsSlowly();
          if (cmd->spec.read != nullptr && r != nullptr && RunReadNow(*cmd, args_, *slot, r)) {
            reads_in_row = true;
            continue;
          }
          co_await RunKeyed(*cmd, args_, *slot);
          continue;
        }
        if (!queued_reads_.empty() && !ServeQueuedReads()) co_await ServeQueuedReadsSlowly();
        if (!queued_entries_.empty()) co_await FlushWrites();
        const Command* later = nullptr;
        if (!ExecuteNow(cmd, args_, &later)) co_await ExecuteLater(*later, args_);
      }
      if (!queued_reads_.empty() && !ServeQueuedReads()) co_await ServeQueuedReadsSlowly();
      if (!queued_entries_.empty()) co_await FlushWrites();
      if (pos > 0) {
        std::memmove(rbuf_.data(), rbuf_.data() + pos, rlen_ - pos);
        rlen_ -= pos;
      }
      // A request bigger than the buffer: grow to what it needs, within limits.
      size_t wanted = parser_.bytes_wanted_hint();
      if (rlen_ > 0 && wanted > rbuf_.size()) {
        if (static_cast<int64_t>(wanted) > server_.config().client_query_buffer_limit) {
          close_after_reply_ = true;
        } else {
          GrowReadBuffer(wanted);
        }
      } else if (rlen_ == rbuf_.size() &&
                 static_cast<int64_t>(rbuf_.size()) >= server_.config().client_query_buffer_limit) {
        close_after_reply_ = true;
      }
      if (!co_await FlushReplies()) break;
      if (close_after_reply_) break;
    }
  } catch (const std::exception&) {
    // The peer went away or the socket failed: nothing to answer.
  }
  stream_.Close();
}

asio::awaitable<bool> Connection::FlushReplies() {
  if (wbuf_.empty()) co_return true;
  // Writes are durable before they are applied (a majority of their
  // shard's replicas has the log entry on disk), so a reply needs no wait.
  if (killed_) co_return false;
  auto [wec, written] = co_await stream_.Write(asio::buffer(wbuf_));
  (void)written;
  if (wec) {
    killed_ = true;  // the client is gone: Run() ends
    stream_.Close();
    co_return false;
  }
  server_.stats().net_output_bytes.Add(worker_.index(), wbuf_.size());
  wbuf_.clear();
  if (wbuf_.capacity() > kWriteBufferKeepBytes) wbuf_.shrink_to_fit();
  co_return true;
}

std::string Connection::Refusal(const Command* cmd, kv::Args args) const {
  if (cmd == nullptr) return UnknownCommandError(args);
  if (!ArityOk(cmd->spec.arity, args.size())) return kv::ArityError(cmd->spec.name);
  if (!cmd->subcommands.empty() && args.size() >= 2) {
    const Subcommand* sub = nullptr;
    for (const auto& s : cmd->subcommands) {
      if (EqualsIgnoreCase(s.name, args[1])) sub = &s;
    }
    if (sub == nullptr) {
      return "ERR unknown subcommand '" + std::string(args[1].substr(0, 128)) + "'. Try " +
             ToUpper(cmd->spec.name) + " HELP.";
    }
    if (!ArityOk(sub->arity, args.size())) {
      return kv::ArityError(std::string(cmd->spec.name) + "|" + std::string(sub->name));
    }
  }
  if (!authenticated_ && !(cmd->spec.flags & kv::kCmdNoAuth)) return "NOAUTH Authentication required.";
  if (cmd->spec.flags & kv::kCmdNoAuth) return "";  // AUTH, HELLO, QUIT: whatever the user's rules
  const acl::User* u = user();
  if (u != nullptr && u->unrestricted()) return "";
  static const acl::User kNobody;  // a deleted user may do nothing
  const acl::User& rules = u != nullptr ? *u : kNobody;
  // What other nodes send for a client (a forwarded MULTI/EXEC, WAIT,
  // WATCH) is judged as the command the client gave.
  const Command* as = cmd;
  if (cmd->spec.name.starts_with("shoal.")) {
    const std::string_view name = cmd->spec.name;
    const Command* pub = name == "shoal.exec"          ? server_.commands().Find("exec")
                         : name == "shoal.wait"        ? server_.commands().Find("wait")
                         : name == "shoal.fingerprint" ? server_.commands().Find("watch")
                                                       : nullptr;
    if (pub != nullptr) as = pub;
  }
  std::string e = acl::CheckCommand(rules, *as, as == cmd ? args : kv::Args{});
  if (!e.empty()) return e;
  if (!rules.all_keys && (cmd->spec.read != nullptr || cmd->spec.apply != nullptr) &&
      !acl::KeysAllowed(rules, args, kv::KeyPositions(cmd->spec, args))) {
    return std::string(kNoKeyPermission);
  }
  return "";
}

bool Connection::KeysPermitted(std::span<const std::string_view> keys) const {
  const acl::User* u = user();
  if (u != nullptr && u->all_keys) return true;
  static const acl::User kNobody;
  std::vector<size_t> positions(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) positions[i] = i;
  return acl::KeysAllowed(u != nullptr ? *u : kNobody, keys, positions);
}

const acl::User* Connection::user() const {
  const uint64_t epoch = server_.users().epoch();
  if (epoch != user_epoch_) {
    user_ = server_.users().Find(user_name_);
    // The user was deleted and made again since this connection logged in:
    // not the same user (its clients were logged out, as in Redis).
    if (user_ != nullptr && user_->created != user_created_) user_.reset();
    user_epoch_ = epoch;
  }
  return user_.get();
}

void Connection::LogIn(std::string user, std::string password) {
  authenticated_ = true;
  auto u = server_.users().Find(user);
  user_created_ = u != nullptr ? u->created : 0;
  user_name_ = std::move(user);
  auth_password_ = std::move(password);
  auth_key_ = Sha256Hex(auth_password_);
  user_epoch_ = 0;  // look the user up again
}

namespace {
// The heap storage an entry's arguments hold (strings past the inline
// buffer, and the vector's own).
size_t EntryStorage(const kv::Entry& e) {
  size_t bytes = e.args.capacity() * sizeof(std::string);
  for (const std::string& a : e.args) {
    if (a.capacity() > std::string().capacity()) bytes += a.capacity() + 1;
  }
  return bytes;
}
}  // namespace

kv::Entry Connection::TakeEntry() {
  if (spare_writes_.empty()) return {};
  kv::Entry e = std::move(spare_writes_.back());
  spare_writes_.pop_back();
  spare_writes_bytes_ -= std::min(spare_writes_bytes_, EntryStorage(e));
  e.hints.clear();
  return e;
}

void Connection::KeepEntries(std::vector<kv::Entry>* entries) {
  for (kv::Entry& e : *entries) {
    if (spare_writes_.size() >= kSpareEntriesMax) break;
    const size_t bytes = EntryStorage(e);
    if (spare_writes_bytes_ + bytes > kSpareEntryBytes) continue;
    spare_writes_bytes_ += bytes;
    spare_writes_.push_back(std::move(e));
  }
  entries->clear();
}

void Connection::QueueWrite(uint64_t group, kv::Entry entry, uint16_t slot, std::string_view raw,
                            bool caller_reruns) {
  for (const auto& a : entry.args) queued_bytes_ += a.size();
  const size_t begin = queued_raw_.size();
  queued_raw_.append(raw);
  queued_entries_.push_back(QueuedWrite{group, std::move(entry), slot, begin, queued_raw_.size(), caller_reruns});
}

bool Connection::WritesQueueFull() const {
  return queued_entries_.size() >= kWriteBatchEntriesMax || queued_bytes_ >= kWriteBatchBytesMax;
}

namespace {
struct ProposeResult {
  bool applied = false;
  std::string reply;
  bool refused = false;  // by the leader before logging it: it is in no log
};
}  // namespace

// Proposes one batch per shard, all at once, and completes with every
// result (in the order of `batches`) on `home`.
struct ShardBatch {
  replica::Replica* replica;
  std::string data;
  // Joined with other connections' writes into one log entry
  // (Replica::ProposeJoined): none of its writes must be applied alone.
  bool joinable = false;
};

template <typename Token>
auto ProposeAll(node::Groups* groups, asio::io_context& home, std::vector<ShardBatch> batches, Token&& token) {
  return asio::async_initiate<Token, void(std::vector<ProposeResult>)>(
      [groups, &home](auto handler, std::vector<ShardBatch> batches) {
        using Handler = decltype(handler);
        struct State {
          explicit State(Handler h, size_t n) : handler(std::move(h)), results(n), remaining(n) {}
          Handler handler;
          std::vector<ProposeResult> results;
          size_t remaining;
        };
        auto state = std::make_shared<State>(std::move(handler), batches.size());
        for (size_t i = 0; i < batches.size(); ++i) {
          replica::Replica* r = batches[i].replica;
          // Always a post, never a dispatch: `finish` may run inside this
          // initiation (a proposal made at once, below, whose group applies
          // it in the same call) or inside a Ready round (its apply), where
          // the awaiting coroutine must not resume.
          auto finish = [state, i, &home](ProposeResult res) {
            asio::post(home, [state, i, res = std::move(res)]() mutable {
              state->results[i] = std::move(res);
              if (--state->remaining == 0) std::move(state->handler)(std::move(state->results));
            });
          };
          if (r == nullptr) {
            finish(ProposeResult{false, "-TRYAGAIN the shard's replica left this node; retry\r\n", true});
            continue;
          }
          // A refusal: the batch is in no log, and may be tried again.
          auto refused = [](const raft::Proposal& p) {
            return ProposeResult{false, std::string("-TRYAGAIN the shard's leader moved (") + raft::to_string(p.error) +
                                            "); retry\r\n",
                                 true};
          };
          auto propose = [r, groups, finish, refused, data = std::move(batches[i].data),
                          joinable = batches[i].joinable]() mutable {
            if (joinable) {
              r->ProposeJoined(std::move(data), [finish, refused](raft::Proposal p, bool applied, std::string reply) {
                finish(p.ok() ? ProposeResult{applied, std::move(reply)} : refused(p));
              }, node::MonoUs());
              groups->NotifySoon(r);
              return;
            }
            auto p = r->Propose(std::move(data), [finish](bool applied, std::string reply) {
              finish(ProposeResult{applied, std::move(reply)});
            }, node::MonoUs());
            if (!p.ok()) return finish(refused(p));
            groups->NotifySoon(r);
          };
          // On the replica's own worker (every write with one worker) it is
          // proposed at once, not behind the handlers queued meanwhile; its
          // outcome still comes back through `home`'s queue, so the awaiting
          // coroutine never resumes inside a Ready round. The round that
          // carries it starts behind those handlers (NotifySoon), so the
          // writes they hold join it.
          asio::io_context& owner = groups->WorkerFor(r->group()).io();
          if (owner.get_executor().running_in_this_thread()) {
            propose();
          } else {
            asio::post(owner, std::move(propose));
          }
        }
      },
      token, std::move(batches));
}

asio::awaitable<void> Connection::FlushWrites() {
  // The queue's storage is kept for the next batch (spare_*_: a flush that
  // runs inside this one, a write run again below, takes fresh storage).
  auto queued = std::move(queued_entries_);
  queued_entries_ = std::move(spare_entries_);
  queued_entries_.clear();
  std::string raw = std::move(queued_raw_);
  queued_raw_ = std::move(spare_raw_);
  queued_raw_.clear();
  queued_bytes_ = 0;
  flush_left_refused_ = false;
  if (queued.empty()) co_return;
  // One batch per shard, in order of each shard's first write; `pos` lists
  // the writes' positions batch by batch (runs[b] is batch b's part of it,
  // and of `entries`), so that replies go out in request order.
  struct ShardRun {
    uint64_t group;
    size_t begin, end;
  };
  std::vector<ShardRun> runs;
  std::vector<uint32_t> pos(queued.size());
  for (size_t i = 0; i < queued.size(); ++i) pos[i] = static_cast<uint32_t>(i);
  const bool one_shard = std::all_of(queued.begin(), queued.end(),
                                     [&](const QueuedWrite& q) { return q.group == queued[0].group; });
  if (one_shard) {
    runs.push_back(ShardRun{queued[0].group, 0, queued.size()});
  } else {
    std::sort(pos.begin(), pos.end(), [&](uint32_t a, uint32_t b) {
      return queued[a].group != queued[b].group ? queued[a].group < queued[b].group : a < b;
    });
    for (size_t i = 0; i < pos.size(); ++i) {
      if (i == 0 || queued[pos[i]].group != runs.back().group) runs.push_back(ShardRun{queued[pos[i]].group, i, i});
      runs.back().end = i + 1;
    }
    // Each run starts with its shard's first write.
    std::sort(runs.begin(), runs.end(), [&](const ShardRun& a, const ShardRun& b) { return pos[a.begin] < pos[b.begin]; });
    std::vector<uint32_t> by_run;
    by_run.reserve(pos.size());
    for (ShardRun& run : runs) {
      const size_t begin = by_run.size();
      by_run.insert(by_run.end(), pos.begin() + static_cast<ptrdiff_t>(run.begin),
                    pos.begin() + static_cast<ptrdiff_t>(run.end));
      run.begin = begin;
      run.end = by_run.size();
    }
    pos = std::move(by_run);
  }
  std::vector<kv::Entry> entries;
  entries.reserve(pos.size());
  for (uint32_t p : pos) entries.push_back(std::move(queued[p].entry));
  auto batch_of = [&](const ShardRun& run) {  // r null: the replica just left this node
    const auto part = std::span<const kv::Entry>(entries).subspan(run.begin, run.end - run.begin);
    return ShardBatch{server_.groups().Find(run.group), replica::EncodeKvBatch(part, protocol_),
                      std::none_of(part.begin(), part.end(), [](const kv::Entry& e) { return kv::MustApplyAlone(e.op); })};
  };
  auto positions = [&](const ShardRun& run) {
    return std::span<const uint32_t>(pos).subspan(run.begin, run.end - run.begin);
  };
  std::vector<ShardBatch> batches;
  batches.reserve(runs.size());
  for (const ShardRun& run : runs) batches.push_back(batch_of(run));
  std::vector<ProposeResult> results =
      co_await ProposeAll(&server_.groups(), worker_.io(), std::move(batches), asio::use_awaitable);
  // A refused batch is in no log, so it may be tried again, until
  // kRefusedRetryUs after the first try: here while this node still leads
  // (a transfer that fails, room for uncommitted entries again), each write
  // prepared again from the client's bytes (a relative TTL counts from the
  // new try); else each as a new request where its key is led now.
  const int64_t give_up_us = node::MonoUs() + kRefusedRetryUs;
  resp::Parser parser(resp::ParserLimits{.bulk_bytes_max = server_.config().proto_max_bulk_len});
  std::vector<std::string_view> args;
  auto request_of = [&](const QueuedWrite& q) -> const Command* {  // null: none kept
    size_t used = 0;
    if (q.raw_begin == q.raw_end ||
        parser.Parse(raw.data() + q.raw_begin, q.raw_end - q.raw_begin, true, &args, &used) !=
            resp::ParseStatus::kCommand ||
        args.empty()) {
      return nullptr;
    }
    return server_.commands().Find(args[0]);
  };
  std::vector<std::optional<std::string>> rerun;
  for (size_t b = 0; b < runs.size(); ++b) {
    if (!results[b].refused) continue;
    const uint64_t g = runs[b].group;
    const auto pos_b = positions(runs[b]);
    if (std::any_of(pos_b.begin(), pos_b.end(), [&](uint32_t p) { return queued[p].caller_reruns; })) {
      flush_left_refused_ = true;  // prepared again by its caller, not re-proposed stale here
      continue;
    }
    bool moved = false;
    auto pause_for = kRefusedRetryPause;
    while (results[b].refused && !killed_ && node::MonoUs() < give_up_us) {
      asio::steady_timer pause(worker_.io(), pause_for);
      co_await pause.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
      pause_for = std::min(pause_for * 2, kRefusedRetryPauseMax);  // an overloaded leader: fewer tries
      replica::Replica* r = server_.groups().Find(g);
      if (r != nullptr && r->published_is_leader()) {
        for (size_t k = 0; k < pos_b.size(); ++k) {
          const Command* cmd = request_of(queued[pos_b[k]]);
          kv::Entry entry;
          std::string error;
          resp::Writer errors(&error, protocol_);
          if (cmd != nullptr && PrepareWrite(*cmd, args, &entry, &errors)) entries[runs[b].begin + k] = std::move(entry);
        }
        std::vector<ShardBatch> again;
        again.push_back(batch_of(runs[b]));
        std::vector<ProposeResult> res =
            co_await ProposeAll(&server_.groups(), worker_.io(), std::move(again), asio::use_awaitable);
        results[b] = std::move(res[0]);
      } else if (r == nullptr || r->published_leader() != raft::kNoNode) {
        moved = true;
        break;
      }
    }
    if (!moved) continue;  // answered, or still refused (TRYAGAIN)
    if (rerun.empty()) rerun.resize(queued.size());
    for (uint32_t p : pos_b) {
      // Not after the time is up, nor once a split gave its slot to another
      // shard (which may have taken a later write of this pipeline to the
      // same key: this one must not land after it).
      if (killed_ || node::MonoUs() >= give_up_us || server_.cluster().GroupOfSlot(queued[p].slot) != g) continue;
      const Command* cmd = request_of(queued[p]);
      if (cmd == nullptr) continue;
      std::string before = std::move(wbuf_);
      wbuf_.clear();
      co_await RunKeyed(*cmd, args, queued[p].slot, /*inner=*/true);
      rerun[p] = std::move(wbuf_);
      wbuf_ = std::move(before);
    }
  }
  KeepEntries(&entries);
  std::vector<std::string_view> replies(queued.size());
  for (size_t b = 0; b < runs.size(); ++b) {
    const auto pos_b = positions(runs[b]);
    const ProposeResult& res = results[b];
    size_t off = 0;
    for (size_t k = 0; k < pos_b.size(); ++k) {
      std::string_view reply = res.reply;
      if (!rerun.empty() && rerun[pos_b[k]]) {
        reply = *rerun[pos_b[k]];
      } else if (res.applied) {
        size_t len = resp::ScanReply(res.reply.data() + off, res.reply.size() - off);
        if (len == resp::kReplyIncomplete || len == resp::kReplyMalformed) {
          static const std::string kBroken = "-ERR internal error: reply of a replicated write is malformed\r\n";
          reply = kBroken;
        } else {
          reply = std::string_view(res.reply).substr(off, len);
          off += len;
        }
      }
      replies[pos_b[k]] = reply;
    }
  }
  for (auto r : replies) writer_.Raw(r);
  // Kept only while small: an idle connection does not hold a big
  // pipeline's storage (as wbuf_, kWriteBufferKeepBytes).
  queued.clear();
  if (queued.capacity() * sizeof(QueuedWrite) <= kWriteBufferKeepBytes &&
      queued.capacity() > spare_entries_.capacity()) {
    spare_entries_ = std::move(queued);
  }
  raw.clear();
  if (raw.capacity() <= kWriteBufferKeepBytes && raw.capacity() > spare_raw_.capacity()) spare_raw_ = std::move(raw);
}

asio::awaitable<bool> Connection::ReadBarrier(replica::Replica* r) {
  if (r->LeaseReadOk(node::MonoUs())) co_return true;
  node::Groups* groups = &server_.groups();
  auto read = [r, groups](std::function<void(bool)> done) {
    r->ReadIndex(std::move(done), node::MonoUs());
    groups->Notify(r);
  };
  co_return co_await node::RunOnAsync<bool>(server_.groups().WorkerFor(r->group()).io(), worker_.io(),
                                             std::move(read));
}

asio::awaitable<std::vector<char>> Connection::ReadBarriers(std::span<replica::Replica* const> replicas) {
  std::vector<char> result(replicas.size(), 0);
  std::vector<size_t> asked;
  const int64_t now_us = node::MonoUs();
  for (size_t i = 0; i < replicas.size(); ++i) {
    if (replicas[i]->LeaseReadOk(now_us)) {
      result[i] = 1;
    } else {
      asked.push_back(i);
    }
  }
  if (asked.empty()) co_return result;
  // Each answer comes back to this worker (RunOnAsync's way); the last one
  // resumes the coroutine. Only this worker's thread touches `left`.
  node::Groups* groups = &server_.groups();
  asio::io_context* home = &worker_.io();
  std::vector<replica::Replica*> targets;
  for (size_t i : asked) targets.push_back(replicas[i]);
  std::vector<char> answers = co_await asio::async_initiate<const asio::use_awaitable_t<>&, void(std::vector<char>)>(
      [groups, home](auto on_done, std::vector<replica::Replica*> rs) {
        struct State {
          decltype(on_done) handler;
          std::vector<char> answers;
          size_t left;
        };
        auto state = std::make_shared<State>(State{std::move(on_done), std::vector<char>(rs.size(), 0), rs.size()});
        for (size_t k = 0; k < rs.size(); ++k) {
          replica::Replica* r = rs[k];
          asio::post(groups->WorkerFor(r->group()).io(), [state, r, k, groups, home] {
            r->ReadIndex(
                [state, k, home](bool ok) {
                  asio::post(*home, [state, k, ok] {
                    state->answers[k] = ok ? 1 : 0;
                    if (--state->left == 0) std::move(state->handler)(std::move(state->answers));
                  });
                },
                node::MonoUs());
            groups->Notify(r);
          });
        }
      },
      asio::use_awaitable, std::move(targets));
  for (size_t k = 0; k < asked.size(); ++k) result[asked[k]] = answers[k];
  co_return result;
}

bool Connection::LeaseServesNow(replica::Replica* r, uint16_t slot, bool* leader_here) {
  *leader_here = r->published_is_leader();
  if (!(*leader_here || readonly_)) return false;
  const uint64_t seq = server_.engine().VisibleSeq();
  if (read_clock_.mono_us == 0 || read_clock_.reads >= kReadsPerClock || read_clock_.seq != seq) {
    read_clock_ = ReadClock{node::MonoUs(), RealClock().NowUnixMs(), seq, 0};  // the seq first, then the clocks
  }
  if (!r->LeaseReadOk(read_clock_.mono_us) || !r->state_machine().OwnsSlot(slot)) return false;
  ++read_clock_.reads;
  return true;
}

bool Connection::RunReadNow(const Command& cmd, kv::Args args, uint16_t slot, replica::Replica* r, bool counted) {
  // What RunKeyed does for a read whose barrier passes at once, without
  // its coroutine frames: most reads at a leader with its lease.
  bool leader_here = false;
  if (!LeaseServesNow(r, slot, &leader_here)) return false;
  if (!counted) {
    server_.stats().commands_processed.Add(worker_.index(), 1);
    last_command_ = cmd.spec.name;
  }
  if (leader_here) server_.cluster().NoteOp(worker_.index(), slot);
  replica::Replica* replicas[] = {r};
  RunReadOn(cmd, args, replicas, {}, read_clock_.unix_ms);
  return true;
}

bool Connection::QueueRead(std::string_view key, uint16_t slot, replica::Replica* r) {
  if (get_batch_.full() && !ServeQueuedReads()) return false;  // the caller serves them the slow way first
  // RunReadNow's checks, which ServeQueuedReads makes again when it reads.
  bool leader_here = false;
  if (!LeaseServesNow(r, slot, &leader_here)) return false;
  server_.stats().commands_processed.Add(worker_.index(), 1);
  last_command_ = get_command_->spec.name;
  queued_reads_.push_back(QueuedRead{r, slot});
  get_batch_.Add(slot, db_, key);
  return true;
}

bool Connection::ServeQueuedReads() {
  // The checks of RunReadNow, made now: the reads happen now. A fresh
  // reading of the clocks (one for the batch, where RunReadNow shares one
  // among up to kReadsPerClock reads): a write the reads see was visible
  // by the time they ran, so prepared (its TTL made absolute) before the
  // clocks were read give or take the reads' own microseconds, as for a
  // read served alone.
  const int64_t mono_us = node::MonoUs();
  const int64_t unix_ms = RealClock().NowUnixMs();
  for (const QueuedRead& q : queued_reads_) {
    if (!q.r->LeaseReadOk(mono_us) || !q.r->state_machine().OwnsSlot(q.slot)) return false;
  }
  // As RunReadOn: a read that overlapped a snapshot's import is refused.
  uint64_t few[kv::GetBatch::kMaxKeys];
  for (size_t i = 0; i < queued_reads_.size(); ++i) few[i] = queued_reads_[i].r->import_generation();
  get_batch_.Read(server_.engine());
  std::atomic_thread_fence(std::memory_order_acquire);
  for (size_t i = 0; i < queued_reads_.size(); ++i) {
    const QueuedRead& q = queued_reads_[i];
    if (few[i] % 2 == 1 || q.r->import_generation() != few[i]) {
      writer_.Error("TRYAGAIN a snapshot was being installed on this replica during the read; retry");
    } else {
      get_batch_.Reply(i, unix_ms, &writer_);
    }
    if (q.r->published_is_leader()) server_.cluster().NoteOp(worker_.index(), q.slot);  // as RunReadNow
  }
  queued_reads_.clear();
  get_batch_.Clear();
  return true;
}

asio::awaitable<void> Connection::ServeQueuedReadsSlowly() {
  // Seldom: a lease lapsed or a shard split since the GETs were queued.
  // Each is served as if it had not been queued (already counted).
  std::vector<std::pair<std::string, QueuedRead>> reads;
  for (size_t i = 0; i < queued_reads_.size(); ++i) reads.emplace_back(std::string(get_batch_.key(i)), queued_reads_[i]);
  queued_reads_.clear();
  get_batch_.Clear();
  for (const auto& [key, q] : reads) {
    const std::string_view args[] = {"GET", key};
    if (RunReadNow(*get_command_, args, q.slot, q.r, /*counted=*/true)) continue;
    co_await RunKeyed(*get_command_, args, q.slot, /*inner=*/true);
    read_clock_ = {};  // it may have waited: no later read shares a reading from before
  }
}

asio::awaitable<void> Connection::RunKeyed(const Command& cmd, kv::Args args, uint16_t slot, bool inner) {
  if (!inner) {
    server_.stats().commands_processed.Add(worker_.index(), 1);
    last_command_ = cmd.spec.name;
  }
  uint64_t group = server_.cluster().GroupOfSlot(slot);
  if (group == 0) {  // group 0 is the meta shard: no shard map yet (joining)
    writer_.Error(server_.cluster().NoShardMapError());
    co_return;
  }
  replica::Replica* r = server_.groups().Find(group);
  bool leader_here = r != nullptr && r->published_is_leader();
  bool confirmed = false;
  if (cmd.spec.read != nullptr && r != nullptr && (leader_here || readonly_)) {
    // A read that leadership moving left unconfirmed (the leader stepped
    // down, a follower's leader is gone) is asked again, where the key is
    // led by then, until kRefusedRetryUs after the first try.
    const int64_t give_up_us = node::MonoUs() + kRefusedRetryUs;
    confirmed = co_await ReadBarrier(r);
    while (!confirmed && !killed_ && node::MonoUs() < give_up_us) {
      asio::steady_timer pause(worker_.io(), kRefusedRetryPause);
      co_await pause.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
      group = server_.cluster().GroupOfSlot(slot);
      r = group != 0 ? server_.groups().Find(group) : nullptr;
      leader_here = r != nullptr && r->published_is_leader();
      if (r == nullptr || !(leader_here || readonly_)) break;
      confirmed = co_await ReadBarrier(r);
    }
    if (group == 0) {
      writer_.Error(server_.cluster().NoShardMapError());
      co_return;
    }
  }
  if (cmd.spec.read != nullptr && r != nullptr && (leader_here || readonly_)) {
    if (!confirmed) {
      writer_.Error("TRYAGAIN the read could not be confirmed by a quorum of the shard's replicas; retry");
    } else if (!r->state_machine().OwnsSlot(slot)) {
      // The shard split meanwhile: its confirmation says nothing of the
      // slot's new shard.
      writer_.Error("TRYAGAIN the key's slot moved to another shard (a split); retry");
    } else {
      if (leader_here) server_.cluster().NoteOp(worker_.index(), slot);
      replica::Replica* replicas[] = {r};
      RunReadOn(cmd, args, replicas);
    }
    co_return;
  }
  if (leader_here) {  // a write that could not be queued (leadership just came here)
    kv::Entry entry;
    if (!PrepareWrite(cmd, args, &entry, &writer_)) co_return;
    QueueWrite(group, std::move(entry));
    co_await FlushWrites();
    co_return;
  }
  if (cluster_aware_) {
    // Leadership on its way elsewhere (a transfer, an election): the new
    // leader is named within a round trip or two, so wait for it (bounded)
    // rather than answer CLUSTERDOWN for a shard that is not down.
    co_await AwaitLeaderKnown(group);
    // (A split meanwhile may have handed the slot to another group.)
    if (uint64_t now_group = server_.cluster().GroupOfSlot(slot); now_group != 0) group = now_group;
    ReplyMoved(group, slot);
    co_return;
  }
  std::string reply = co_await server_.forwarder().ToSlotLeader(worker_.index(), slot, session(), args);
  writer_.Raw(reply);
}

void Connection::ReplyMoved(uint64_t group, uint16_t slot) {
  auto rt = server_.cluster().routing();
  const cluster::NodeAddr* addr = rt->Node(server_.cluster().LeaderOf(group));
  if (addr == nullptr) {
    writer_.Error("CLUSTERDOWN The cluster is down: the key's shard has no leader right now");
  } else {
    writer_.Error("MOVED " + std::to_string(slot) + " " + addr->host + ":" + std::to_string(addr->port));
  }
}

// ---- WAIT

asio::awaitable<void> Connection::Wait(kv::Args args) {
  auto n = ParseInt64(args[1]);
  if (!n) {
    writer_.Error("ERR value is not an integer or out of range");
    co_return;
  }
  auto t = ParseInt64(args[2]);
  if (!t) {
    writer_.Error("ERR timeout is not an integer or out of range");
    co_return;
  }
  if (*t < 0) {
    writer_.Error("ERR timeout is negative");
    co_return;
  }
  if (!wrote_) {  // no write to wait for
    writer_.Integer(0);
    co_return;
  }
  co_await WaitForSlot(last_write_slot_, *n, *t);
}

asio::awaitable<void> Connection::WaitForSlot(uint16_t slot, int64_t numreplicas, int64_t timeout_ms) {
  const uint64_t group = server_.cluster().GroupOfSlot(slot);
  replica::Replica* r = group != 0 ? server_.groups().Find(group) : nullptr;
  if (r == nullptr || !r->published_is_leader()) {
    if (cluster_aware_) {
      // Not led here: this node cannot say who holds what (a routed link's
      // forwarder follows the MOVED).
      if (routed_) {
        ReplyMoved(group, slot);
      } else {
        writer_.Integer(0);
      }
      co_return;
    }
    const std::string s = std::to_string(slot), n = std::to_string(numreplicas), t = std::to_string(timeout_ms);
    std::string_view fwd[] = {"SHOAL.WAIT", s, n, t};
    co_await ForwardWaiting(slot, fwd, timeout_ms);
    co_return;
  }
  // Followers whose log holds everything committed when WAIT began (so the
  // client's last write, acknowledged before), counted on the group's worker.
  node::Groups* groups = &server_.groups();
  uint64_t target = 0;
  const int64_t deadline_us =
      timeout_ms > 0 && timeout_ms < INT64_MAX / 2000 ? node::MonoUs() + timeout_ms * 1000 : INT64_MAX;
  asio::steady_timer pause(worker_.io());
  int64_t count = 0;
  bool gone = false;
  auto watch = std::make_shared<ClientWatch>();
  watch->gone = [&gone] { gone = true; };
  WatchGuard guard(this, watch);
  for (;;) {
    auto counted = co_await node::RunOnAsync<std::pair<int64_t, uint64_t>>(
        groups->WorkerFor(group).io(), worker_.io(),
        [groups, group, target](std::function<void(std::pair<int64_t, uint64_t>)> done) {
          replica::Replica* g = groups->Find(group);
          if (g == nullptr || !g->is_leader()) return done({-1, target});
          const raft::Raft& raft = g->raft();
          const uint64_t want = target != 0 ? target : raft.hard_state().commit;
          int64_t n = 0;
          for (const auto& [id, pr] : raft.tracker().progress()) {
            if (id != g->node_id() && pr.match >= want) ++n;
          }
          done({n, want});
        });
    if (counted.first < 0) break;  // leadership moved: what was counted stands
    count = counted.first;
    target = counted.second;
    if (count >= numreplicas || gone || killed_ || node::MonoUs() >= deadline_us) break;
    pause.expires_after(std::chrono::milliseconds(10));
    co_await pause.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
  }
  writer_.Integer(count);
}

// ---- blocking commands

namespace {

// The reply of a pop that took nothing: a blocking command then waits.
bool IsNullReply(std::string_view reply) { return reply == "*-1\r\n" || reply == "$-1\r\n" || reply == "_\r\n"; }

// How often a waiting command checks that its shard is still led here.
constexpr auto kBlockedCheckEvery = std::chrono::milliseconds(100);

}  // namespace

void Connection::WatchClient(std::shared_ptr<ClientWatch> watch) {
  stream_.socket().async_wait(asio::socket_base::wait_read, [this, self = shared_from_this(), watch](asio::error_code ec) {
    if (!watch->watching) return;
    auto gone = [&] {
      watch->watching = false;
      watch->gone();
    };
    if (ec) return gone();
    // The client's next requests: into the read buffer's free room (it
    // cannot grow while the waiting command's arguments point into it),
    // then aside until the command ends, as far as the query buffer limit.
    // Readable with nothing to read: the client closed (for TLS, a record
    // only partly here reads as nothing yet, without an error).
    asio::error_code rec;
    const size_t room = rbuf_.size() - rlen_;
    size_t n = 0;
    if (room > 0) {
      n = stream_.ReadNow(asio::buffer(rbuf_.data() + rlen_, room), rec);
      rlen_ += n;
    } else {
      constexpr size_t kAsideStep = 16 * 1024;
      if (static_cast<int64_t>(rlen_ + aside_.size() + kAsideStep) > server_.config().client_query_buffer_limit) {
        close_after_reply_ = true;
        return gone();
      }
      const size_t had = aside_.size();
      aside_.resize(had + kAsideStep);
      n = stream_.ReadNow(asio::buffer(aside_.data() + had, kAsideStep), rec);
      aside_.resize(had + n);
    }
    if (rec) return gone();
    server_.stats().net_input_bytes.Add(worker_.index(), n);
    WatchClient(watch);
  });
}

Connection::WatchGuard::WatchGuard(Connection* conn, std::shared_ptr<ClientWatch> watch)
    : c(conn), w(std::move(watch)) {
  c->WatchClient(w);
}

Connection::WatchGuard::~WatchGuard() {
  if (w->watching) {
    w->watching = false;
    asio::error_code ignored;
    c->stream_.socket().cancel(ignored);  // the pending wait (nothing else is pending meanwhile)
  }
  // What was read aside joins the read buffer (the command is over: nothing
  // points into the buffer any more).
  if (!c->aside_.empty()) {
    if (c->rlen_ + c->aside_.size() > c->rbuf_.size()) c->GrowReadBuffer(c->rlen_ + c->aside_.size());
    std::memcpy(c->rbuf_.data() + c->rlen_, c->aside_.data(), c->aside_.size());
    c->rlen_ += c->aside_.size();
    c->aside_.clear();
  }
}

asio::awaitable<void> Connection::AwaitLeaderKnown(uint64_t group) {
  if (!cluster_aware_ || group == 0) co_return;  // (plain clients are told UNBLOCKED)
  if (group == leaderless_group_ && node::MonoUs() < leaderless_until_us_) co_return;
  asio::steady_timer pause(worker_.io());
  for (int i = 0; i < 100 && !killed_; ++i) {
    if (server_.cluster().routing()->Node(server_.cluster().LeaderOf(group)) != nullptr) co_return;
    pause.expires_after(std::chrono::milliseconds(10));
    co_await pause.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
  }
  leaderless_group_ = group;
  leaderless_until_us_ = node::MonoUs() + kLeaderlessMemoUs;
}

std::string Connection::NotLedHere(uint64_t group, uint16_t slot) {
  if (cluster_aware_) {
    std::string saved = std::move(wbuf_);
    wbuf_.clear();
    ReplyMoved(group, slot);
    std::string moved = std::move(wbuf_);
    wbuf_ = std::move(saved);
    return moved;
  }
  return "-UNBLOCKED the key's shard is no longer led by this node; retry\r\n";
}

asio::awaitable<void> Connection::ForwardWaiting(uint16_t slot, kv::Args args, int64_t timeout_ms) {
  auto blocking = std::make_shared<Forwarder::Blocking>();
  blocking->timeout_ms = timeout_ms;
  auto watch = std::make_shared<ClientWatch>();
  watch->gone = [blocking] { blocking->Abandon(); };
  WatchGuard guard(this, watch);
  std::string reply = co_await server_.forwarder().ToSlotLeader(worker_.index(), slot, session(), args, blocking);
  if (blocking->abandoned) {
    close_after_reply_ = true;
    co_return;
  }
  writer_.Raw(reply);
}

asio::awaitable<void> Connection::RunBlocking(const Command& cmd, kv::Args args, uint16_t slot) {
  server_.stats().commands_processed.Add(worker_.index(), 1);
  last_command_ = cmd.spec.name;
  uint64_t group = server_.cluster().GroupOfSlot(slot);
  if (group == 0) {
    writer_.Error(server_.cluster().NoShardMapError());
    co_return;
  }
  // The replies before it go out now: it may wait long.
  if (!co_await FlushReplies()) co_return;
  replica::Replica* r = server_.groups().Find(group);
  auto watch = std::make_shared<ClientWatch>();
  struct Unblock {
    bool* b;
    ~Unblock() { *b = false; }
  } unblock{&blocked_};
  if (r == nullptr || !r->published_is_leader()) {
    if (cluster_aware_) {
      co_await AwaitLeaderKnown(group);
      ReplyMoved(group, slot);
      co_return;
    }
    blocked_ = true;
    co_await ForwardWaiting(slot, args, kv::BlockingTimeoutMs(cmd.spec, args).value_or(0));
    co_return;
  }
  kv::Entry entry;
  if (!PrepareWrite(cmd, args, &entry, &writer_)) co_return;
  const int64_t timeout_ms = kv::BlockingTimeoutMs(cmd.spec, args).value_or(0);
  // No deadline without a timeout, nor past a century.
  constexpr int64_t kTimeoutMaxMs = 100LL * 365 * 86'400'000;
  const int64_t deadline_us =
      timeout_ms > 0 && timeout_ms < kTimeoutMaxMs ? node::MonoUs() + timeout_ms * 1000 : INT64_MAX;
  // Registered before the first try: a write that lands between that try
  // and the wait still wakes it. Only the keys it takes from (not BLMOVE's
  // destination).
  auto blocked = std::make_shared<BlockedClient>(worker_.io());
  blocked->wants = cmd.spec.group == "sorted_set" ? kv::ValueType::kZSet : kv::ValueType::kList;
  for (size_t k : kv::BlockingKeyPositions(cmd.spec, args)) blocked->keys.emplace_back(db_, std::string(args[k]));
  BlockingKeys& registry = server_.blocking();
  registry.Add(blocked);
  // However this ends, the client leaves the queues, and passes a wake on
  // unless it leaves with a clean "nothing" and no wake it did not use
  // (taking something, an error, a wake in flight: the next may have work).
  bool pass_on = true;
  uint64_t seen = 0;
  struct Leave {
    BlockingKeys& registry;
    std::shared_ptr<BlockedClient> blocked;
    const bool& pass_on;
    const uint64_t& seen;
    ~Leave() { registry.Remove(blocked, pass_on || blocked->wakes.load() != seen); }
  } leave{registry, blocked, pass_on, seen};
  bool client_gone = false;
  watch->gone = [blocked, &client_gone] {
    client_gone = true;
    blocked->timer.cancel();
  };
  blocked_ = true;
  WatchGuard guard(this, watch);
  std::string reply;
  for (;;) {
    // Still led here? (A split may have handed the slot to a child led here.)
    const uint64_t g = server_.cluster().GroupOfSlot(slot);
    replica::Replica* rr = g != 0 ? server_.groups().Find(g) : nullptr;
    if (client_gone || killed_) break;
    if (rr == nullptr || !rr->published_is_leader()) {
      co_await AwaitLeaderKnown(g);
      reply = NotLedHere(g, slot);
      break;
    }
    group = g;
    seen = blocked->wakes.load();
    entry.now_ms = RealClock().NowUnixMs();  // expiry as of this try
    QueueWrite(group, entry);
    std::string before = std::move(wbuf_);
    wbuf_.clear();
    co_await FlushWrites();
    reply = std::move(wbuf_);
    wbuf_ = std::move(before);
    if (!IsNullReply(reply)) break;  // took something, or an error
    // Nothing to take: wait for a write to a key, the timeout, the client
    // leaving, or the shard's leadership moving away.
    bool again = false;
    while (!again) {
      if (client_gone || killed_) break;
      if (blocked->wakes.load() != seen) {
        again = true;
        break;
      }
      const int64_t now = node::MonoUs();
      if (now >= deadline_us) {
        // A timeout is a null array, whatever the command (BLMOVE's too, as
        // Redis answers it).
        reply.clear();
        writer_.NullArray();
        pass_on = false;
        break;
      }
      const uint64_t g2 = server_.cluster().GroupOfSlot(slot);
      replica::Replica* r2 = g2 != 0 ? server_.groups().Find(g2) : nullptr;
      if (r2 == nullptr || !r2->published_is_leader()) {
        co_await AwaitLeaderKnown(g2);
        reply = NotLedHere(g2, slot);
        break;
      }
      blocked->timer.expires_after(
          std::min<std::chrono::microseconds>(kBlockedCheckEvery, std::chrono::microseconds(deadline_us - now)));
      co_await blocked->timer.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
    }
    if (!again) break;
  }
  if (client_gone || killed_) {
    close_after_reply_ = true;
    co_return;
  }
  writer_.Raw(reply);  // empty when the answer was written instead
}

asio::awaitable<void> Connection::RunKeylessWrite(const Command& cmd, kv::Args args) {
  if (server_.cluster().removed_elsewhere()) {  // its shard map is stale: it must not flush the cluster
    writer_.Error(server_.cluster().NoShardMapError());
    co_return;
  }
  kv::Entry entry;
  if (!PrepareWrite(cmd, args, &entry, &writer_)) co_return;
  if (!cluster_aware_) {
    // The whole database: every shard must have a leader to flush it (a
    // split's child before its first election has none yet).
    auto rt = server_.cluster().routing();
    for (const auto& s : rt->shards) {
      if (server_.cluster().LeaderOf(s.id) == 0) {
        writer_.Error("TRYAGAIN shard " + std::to_string(s.id) + " has no leader right now; retry");
        co_return;
      }
    }
  }
  // A shard that splits meanwhile may keep keys of the moved slots: then
  // the client is told to retry (a flush may be repeated).
  const uint64_t ranges = server_.cluster().LocalRangesSig();
  std::string error;
  std::set<uint64_t> flushed;
  for (kv::Shard* shard : server_.LedShards()) {
    QueueWrite(shard->id(), entry);
    std::string before = std::move(wbuf_);
    wbuf_.clear();
    co_await FlushWrites();
    if (wbuf_.starts_with("+")) {
      flushed.insert(shard->id());
    } else if (error.empty()) {
      error = wbuf_;
    }
    wbuf_ = std::move(before);
  }
  if (!cluster_aware_) {
    // A plain client means the whole database: the other nodes flush the
    // shards they lead and say which (routed connections only).
    auto rt = server_.cluster().routing();
    for (const auto& [id, node] : rt->nodes) {
      if (id == server_.cluster().node_id()) continue;
      bool sent = false;
      std::string reply = co_await server_.forwarder().ToNode(worker_.index(), node.host, node.port, session(), args, &sent);
      if (!reply.starts_with("+") && error.empty()) error = reply;
      constexpr std::string_view kTag = "+OK flushed";
      if (reply.starts_with(kTag)) {
        for (std::string_view rest = std::string_view(reply).substr(kTag.size()); !rest.empty();) {
          rest.remove_prefix(std::min(rest.find_first_not_of(" \r\n"), rest.size()));
          size_t end = std::min(rest.find_first_of(" \r\n"), rest.size());
          if (end == 0) break;
          if (auto v = ParseInt64(rest.substr(0, end)); v && *v > 0) flushed.insert(static_cast<uint64_t>(*v));
          rest.remove_prefix(end);
        }
      }
    }
    // A shard whose leadership moved meanwhile may have been flushed by no
    // node: OK only when every shard was.
    for (const auto& shard : rt->shards) {
      if (error.empty() && !flushed.contains(shard.id)) {
        error = "-TRYAGAIN shard " + std::to_string(shard.id) +
                " was not flushed (its leadership moved during the flush); retry\r\n";
      }
    }
  }
  if (error.empty() && server_.cluster().LocalRangesSig() != ranges) {
    error = "-TRYAGAIN a shard split during the flush; retry\r\n";
  }
  if (!error.empty()) {
    writer_.Raw(error);
  } else if (routed_) {
    // For the node that forwarded it: which shards this node flushed.
    std::string ids;
    for (uint64_t id : flushed) ids += " " + std::to_string(id);
    writer_.Simple("OK flushed" + ids);
  } else {
    writer_.Simple("OK");
  }
}

void Connection::RunRead(const Command& cmd, kv::Args args, std::span<kv::Shard* const> shards, int64_t now_ms) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  kv::ReadContext ctx{&server_.engine(), db_, now_ms != 0 ? now_ms : RealClock().NowUnixMs(), &server_.limits(),
                      shards, rng()};
  cmd.spec.read(ctx, args, &writer_);
}

void Connection::RunReadOn(const Command& cmd, kv::Args args, std::span<replica::Replica* const> replicas,
                           std::span<kv::Shard* const> shards, int64_t now_ms) {
  // A replica installing a snapshot clears its range before the snapshot's
  // files are in: a read that overlapped that saw a half state. The import
  // generation is odd meanwhile and changes at each end (a seqlock).
  uint64_t few[4];  // a keyed read's one replica: no allocation
  std::vector<uint64_t> many;
  if (replicas.size() > std::size(few)) many.resize(replicas.size());
  const std::span<uint64_t> gens = many.empty() ? std::span<uint64_t>(few, replicas.size()) : std::span<uint64_t>(many);
  for (size_t i = 0; i < replicas.size(); ++i) gens[i] = replicas[i]->import_generation();
  const size_t mark = wbuf_.size();
  bool clean = std::none_of(gens.begin(), gens.end(), [](uint64_t g) { return g % 2 == 1; });
  if (clean) RunRead(cmd, args, shards, now_ms);
  std::atomic_thread_fence(std::memory_order_acquire);
  for (size_t i = 0; i < replicas.size(); ++i) clean = clean && replicas[i]->import_generation() == gens[i];
  if (!clean) {
    wbuf_.resize(mark);
    writer_.Error("TRYAGAIN a snapshot was being installed on this replica during the read; retry");
  }
}

asio::awaitable<void> Connection::RunKeylessRead(const Command& cmd, kv::Args args) {
  // KEYS, SCAN, DBSIZE, RANDOMKEY: every local replica's data may be read
  // (KEYS and SCAN walk the node's whole keyspace), so each is confirmed as
  // a keyed read is (the lease, or a ReadIndex through the leader).
  std::vector<kv::Shard*> shards = server_.LocalShards();
  std::vector<uint64_t> ids;
  std::vector<replica::Replica*> replicas;
  for (kv::Shard* s : shards) {
    replica::Replica* r = server_.groups().Find(s->id());
    if (r == nullptr) {
      writer_.Error("TRYAGAIN shard " + std::to_string(s->id()) + " left this node during the read; retry");
      co_return;
    }
    ids.push_back(s->id());
    replicas.push_back(r);
  }
  // As a keyed read: barriers that leadership moving (or a leader not yet
  // settled in its term, just after a restart) left unconfirmed are asked
  // again until kRefusedRetryUs after the first try. All are asked at once,
  // so a node's shards confirm in one round rather than one after another.
  const int64_t give_up_us = node::MonoUs() + kRefusedRetryUs;
  std::vector<char> confirmed = co_await ReadBarriers(replicas);
  for (;;) {
    std::vector<size_t> unconfirmed;
    for (size_t i = 0; i < replicas.size(); ++i) {
      if (!confirmed[i]) unconfirmed.push_back(i);
    }
    if (unconfirmed.empty()) break;
    if (killed_ || node::MonoUs() >= give_up_us) {
      writer_.Error("TRYAGAIN the read of shard " + std::to_string(ids[unconfirmed[0]]) +
                    " could not be confirmed by a quorum of its replicas; retry");
      co_return;
    }
    asio::steady_timer pause(worker_.io(), kRefusedRetryPause);
    co_await pause.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
    std::vector<replica::Replica*> again;
    for (size_t i : unconfirmed) {
      if (server_.groups().Find(ids[i]) != replicas[i]) {
        writer_.Error("TRYAGAIN shard " + std::to_string(ids[i]) + " left this node during the read; retry");
        co_return;
      }
      again.push_back(replicas[i]);
    }
    std::vector<char> now = co_await ReadBarriers(again);
    for (size_t k = 0; k < unconfirmed.size(); ++k) confirmed[unconfirmed[k]] = now[k];
  }
  // The shards may have changed while it waited (a split, a leadership
  // moved, a replica left): then what was confirmed is not what would be read.
  std::vector<uint64_t> now_ids;
  for (kv::Shard* s : server_.LocalShards()) now_ids.push_back(s->id());
  if (now_ids != ids) {
    writer_.Error("TRYAGAIN the shards of this node changed during the read; retry");
    co_return;
  }
  // Counts (DBSIZE) are of the shards this node leads for a cluster-aware
  // client (as Redis Cluster's per-node answers), of all for a plain one.
  std::vector<kv::Shard*> counted = cluster_aware_ ? server_.LedShards() : server_.LocalShards();
  RunReadOn(cmd, args, replicas, counted);
}

bool Connection::PrepareWrite(const Command& cmd, kv::Args args, kv::Entry* entry, resp::Writer* errors,
                              int64_t now_ms) {
  entry->op = cmd.spec.op;
  entry->db = db_;
  entry->now_ms = now_ms != 0 ? now_ms : RealClock().NowUnixMs();
  if (cmd.spec.prepare) {
    kv::PrepareContext ctx{db_, entry->now_ms, &server_.limits()};
    return cmd.spec.prepare(ctx, args, entry, errors);
  }
  entry->args.assign(args.begin() + 1, args.end());
  return true;
}

bool Connection::ExecuteNow(const Command* cmd, kv::Args args, const Command** later) {
  std::string refusal = Refusal(cmd, args);
  if (!refusal.empty()) {
    writer_.Error(refusal);
    return true;
  }
  server_.stats().commands_processed.Add(worker_.index(), 1);
  last_command_ = cmd->spec.name;
  if (cmd->sync) {
    cmd->sync(*this, args, &writer_);
    return true;
  }
  if (cmd->spec.read) {  // keyless (keyed ones went to RunKeyed)
    *later = cmd;
    return false;
  }
  if (cmd->async) {
    *later = cmd;
    return false;
  }
  *later = cmd;  // a keyless write (FLUSHDB, FLUSHALL)
  return false;
}

asio::awaitable<void> Connection::ExecuteLater(const Command& cmd, kv::Args args) {
  if (cmd.async) {
    co_await cmd.async(*this, args);
    co_return;
  }
  if (cmd.spec.read) {
    co_await RunKeylessRead(cmd, args);
    co_return;
  }
  co_await RunKeylessWrite(cmd, args);
}

std::string Connection::InfoLine() const {
  int64_t now = RealClock().NowUnixMs();
  std::string line;
  line += "id=" + std::to_string(id_);
  line += " addr=" + addr_ + " laddr=" + laddr_;
  line += " fd=" + std::to_string(const_cast<node::Stream&>(stream_).socket().native_handle());
  line += " name=" + name_;
  line += " age=" + std::to_string((now - created_ms_) / 1000);
  line += " idle=" + std::to_string((now - last_active_ms_) / 1000);
  line += std::string(" flags=") + (blocked_ ? "b" : "N") + " db=" + std::to_string(db_);
  line += " sub=0 psub=0 ssub=0 multi=-1";
  line += " qbuf=" + std::to_string(rlen_) + " qbuf-free=" + std::to_string(rbuf_.size() - rlen_);
  line += " argv-mem=0 multi-mem=0 rbs=" + std::to_string(rbuf_.size()) + " rbp=0";
  line += " obl=0 oll=0 omem=0 tot-mem=" + std::to_string(rbuf_.size() + wbuf_.capacity());
  line += " events=r cmd=" + last_command_ + " user=" + user_name_ + " redir=-1";
  line += " resp=" + std::to_string(protocol_);
  line += " lib-name=" + lib_name_ + " lib-ver=" + lib_ver_;
  return line;
}

// ---- MULTI ... EXEC

namespace {

// The connection commands a transaction may hold: they change nothing of the
// connection but its database (SELECT), so a transaction forwarded whole to
// another node leaves that node's link as it was.
bool AllowedInTransaction(const Command& cmd) {
  static constexpr std::string_view kAllowed[] = {"ping", "echo", "select", "time", "unwatch"};
  return std::find(std::begin(kAllowed), std::end(kAllowed), cmd.spec.name) != std::end(kAllowed);
}

std::string NotInTransaction(const Command& cmd) {
  return "ERR " + ToUpper(cmd.spec.name) + " inside MULTI is not supported by shoal";
}

// A transaction is one log entry: bounded as one value is (and its commands
// as a reply can be built).
constexpr size_t kTransactionCommandsMax = 100'000;
constexpr size_t kTransactionBytesMax = 512u << 20;

}  // namespace

void Connection::QueueInMulti(const Command* cmd, kv::Args args) {
  std::string refusal = Refusal(cmd, args);
  size_t bytes = 0;
  for (auto a : args) bytes += a.size() + 16;
  if (refusal.empty() && (multi_.commands.size() >= kTransactionCommandsMax ||
                          multi_.bytes + bytes > kTransactionBytesMax)) {
    refusal = "ERR a transaction is limited to " + std::to_string(kTransactionCommandsMax) +
              " commands and 512 MiB in shoal";
  }
  if (refusal.empty()) {
    const bool data = cmd->spec.read != nullptr || cmd->spec.apply != nullptr;
    if (data) {
      std::vector<size_t> keys = kv::KeyPositions(cmd->spec, args);
      if (keys.empty()) {
        refusal = "ERR " + ToUpper(cmd->spec.name) +
                  " inside MULTI is not supported by shoal (a transaction's commands must name keys of one slot)";
      } else if (auto slot = KeysSlot(args, keys); !slot || (multi_.slot && *slot != *multi_.slot)) {
        refusal = "CROSSSLOT Keys in request don't hash to the same slot";
      } else {
        multi_.slot = *slot;
        uint64_t group = server_.cluster().GroupOfSlot(*slot);
        if (group == 0) {
          refusal = server_.cluster().NoShardMapError();
        } else if (cluster_aware_ && !routed_) {
          // A cluster client is sent where the slot's shard is led, as Redis Cluster does.
          replica::Replica* r = server_.groups().Find(group);
          if (r == nullptr || !r->published_is_leader()) {
            auto rt = server_.cluster().routing();
            const cluster::NodeAddr* addr = rt->Node(server_.cluster().LeaderOf(group));
            refusal = addr == nullptr ? "CLUSTERDOWN The cluster is down: the key's shard has no leader right now"
                                      : "MOVED " + std::to_string(*slot) + " " + addr->host + ":" +
                                            std::to_string(addr->port);
          }
        }
      }
    } else if (cmd->sync == nullptr || !AllowedInTransaction(*cmd)) {
      refusal = NotInTransaction(*cmd);
    }
  }
  if (!refusal.empty()) {
    multi_.failed = true;
    writer_.Error(refusal);
    return;
  }
  multi_.bytes += bytes;
  multi_.commands.emplace_back(args.begin(), args.end());
  writer_.Simple("QUEUED");
}

asio::awaitable<void> Connection::Watch(kv::Args args) {
  if (multi_.active) {
    writer_.Error("ERR WATCH inside MULTI is not allowed");
    co_return;
  }
  const uint16_t slot = storage::KeySlot(args[1]);
  for (size_t i = 1; i < args.size(); ++i) {
    if (storage::KeySlot(args[i]) != slot ||
        (!multi_.watches.empty() && storage::KeySlot(multi_.watches[0].key) != slot)) {
      writer_.Error("CROSSSLOT Keys in request don't hash to the same slot");
      co_return;
    }
  }
  if (!KeysPermitted(args.subspan(1))) {
    writer_.Error(kNoKeyPermission);
    co_return;
  }
  const Command* fingerprint = server_.commands().Find("shoal.fingerprint");
  std::vector<Watched> got;
  for (size_t i = 1; i < args.size(); ++i) {
    // A key watched already keeps its first fingerprint, as in Redis.
    auto same = [&](const Watched& w) { return w.db == db_ && w.key == args[i]; };
    if (std::any_of(multi_.watches.begin(), multi_.watches.end(), same) || std::any_of(got.begin(), got.end(), same)) {
      continue;
    }
    if (multi_.watches.size() + got.size() >= kTransactionCommandsMax) {
      writer_.Error("ERR at most " + std::to_string(kTransactionCommandsMax) + " keys may be watched in shoal");
      co_return;
    }
    // The key's fingerprint, read as any keyed read is (here, forwarded, or
    // MOVED), its reply taken back out of the output.
    const size_t mark = wbuf_.size();
    const std::string_view read[] = {"shoal.fingerprint", args[i]};
    co_await RunKeyed(*fingerprint, read, slot, /*inner=*/true);
    std::string reply = wbuf_.substr(mark);
    wbuf_.resize(mark);
    const size_t start = reply.find("\r\n");
    if (!reply.starts_with("$") || start == std::string::npos || reply.size() < start + 4) {
      writer_.Raw(reply.starts_with("-") ? reply : "-ERR WATCH: unexpected reply\r\n");
      co_return;
    }
    got.push_back(Watched{db_, std::string(args[i]), reply.substr(start + 2, reply.size() - start - 4)});
  }
  multi_.watches.insert(multi_.watches.end(), got.begin(), got.end());
  writer_.Simple("OK");
}

asio::awaitable<void> Connection::RunTransaction(std::vector<std::vector<std::string>> commands,
                                                 std::vector<Watched> watches) {
  server_.stats().commands_processed.Add(worker_.index(), 1);
  // Every command is checked again (a forwarded transaction comes as one
  // SHOAL.EXEC), and the slot of its keys found: the watched keys' too.
  std::vector<std::vector<std::string_view>> views;
  std::vector<const Command*> cmds;
  std::optional<uint16_t> slot;
  std::string first_key;
  for (const Watched& w : watches) {
    if (slot && storage::KeySlot(w.key) != *slot) {
      writer_.Error("CROSSSLOT Keys in request don't hash to the same slot");
      co_return;
    }
    const std::string_view key = w.key;
    if (!KeysPermitted(std::span<const std::string_view>(&key, 1))) {
      writer_.Error(kNoKeyPermission);
      co_return;
    }
    slot = storage::KeySlot(w.key);
    first_key = w.key;
  }
  for (const auto& c : commands) {
    std::vector<std::string_view> v(c.begin(), c.end());
    const Command* cmd = v.empty() ? nullptr : server_.commands().Find(v[0]);
    std::string refusal = v.empty() ? "ERR empty command in a transaction" : Refusal(cmd, v);
    if (refusal.empty() && (cmd->spec.read != nullptr || cmd->spec.apply != nullptr)) {
      std::vector<size_t> keys = kv::KeyPositions(cmd->spec, v);
      auto s = keys.empty() ? std::nullopt : KeysSlot(v, keys);
      if (!s || (slot && *s != *slot)) {
        refusal = "CROSSSLOT Keys in request don't hash to the same slot";
      } else if (!slot) {
        slot = *s;
        first_key = std::string(v[keys[0]]);
      }
    } else if (refusal.empty() && (cmd->sync == nullptr || !AllowedInTransaction(*cmd))) {
      refusal = NotInTransaction(*cmd);
    }
    if (!refusal.empty()) {
      writer_.Error("EXECABORT Transaction discarded because of previous errors: " + refusal);
      co_return;
    }
    views.push_back(std::move(v));
    cmds.push_back(cmd);
  }
  if (!slot) {  // no keys: connection and server commands only, run in order
    writer_.ArrayHeader(cmds.size());
    for (size_t i = 0; i < cmds.size(); ++i) cmds[i]->sync(*this, views[i], &writer_);
    co_return;
  }
  last_write_slot_ = *slot;  // for WAIT (a transaction writes, as a rule)
  wrote_ = true;
  // A transaction its leader refused unlogged (leadership moving away) is in
  // no log: it runs again, wherever its slot is led by then, until
  // kRefusedRetryUs after the first try.
  const int64_t give_up_us = node::MonoUs() + kRefusedRetryUs;
  const uint16_t db_before = db_;
  auto pause_for = kRefusedRetryPause;
  for (;;) {
    const uint64_t group = server_.cluster().GroupOfSlot(*slot);
    if (group == 0) {
      writer_.Error(server_.cluster().NoShardMapError());
      co_return;
    }
    replica::Replica* r = server_.groups().Find(group);
    if (r == nullptr || !r->published_is_leader()) {
      if (cluster_aware_) {
        co_await AwaitLeaderKnown(group);
        ReplyMoved(group, *slot);
        co_return;
      }
      // A plain client's transaction goes whole to the shard's leader; the
      // SELECTs inside it change this connection's database as they would here.
      std::vector<std::string> fwd{"shoal.exec", std::to_string(watches.size())};
      for (const Watched& w : watches) fwd.insert(fwd.end(), {std::to_string(w.db), w.key, w.fingerprint});
      uint16_t db_after = db_;
      for (size_t i = 0; i < views.size(); ++i) {
        fwd.push_back(std::to_string(views[i].size()));
        fwd.insert(fwd.end(), commands[i].begin(), commands[i].end());
        if (cmds[i]->spec.name == "select" && views[i].size() == 2) {
          auto d = ParseInt64(views[i][1]);
          if (d && *d >= 0 && *d < server_.limits().databases) db_after = static_cast<uint16_t>(*d);
        }
      }
      std::vector<std::string_view> fwd_args(fwd.begin(), fwd.end());
      std::string reply =
          co_await server_.forwarder().ToSlotLeader(worker_.index(), *slot, session(), fwd_args);
      writer_.Raw(reply);
      if (reply.starts_with("*") && !reply.starts_with("*-1")) db_ = db_after;  // it ran
      co_return;
    }
    // Here: each write prepared (its errors become its reply), each read and
    // connection command in its place, as one entry.
    const int64_t now = RealClock().NowUnixMs();
    std::vector<kv::ExecItem> items(watches.size() + cmds.size());
    for (size_t i = 0; i < watches.size(); ++i) {
      items[i].kind = kv::ExecItem::Kind::kWatch;
      items[i].db = watches[i].db;
      items[i].args = {watches[i].key};
      items[i].reply = watches[i].fingerprint;
    }
    for (size_t i = 0; i < cmds.size(); ++i) {
      const Command& cmd = *cmds[i];
      kv::ExecItem& it = items[watches.size() + i];
      last_command_ = cmd.spec.name;
      if (cmd.spec.apply != nullptr) {
        resp::Writer errors(&it.reply, protocol_);
        if (PrepareWrite(cmd, views[i], &it.write, &errors, now)) it.kind = kv::ExecItem::Kind::kWrite;
      } else if (cmd.spec.read != nullptr) {
        it.kind = kv::ExecItem::Kind::kRead;
        it.db = db_;
        it.args = commands[i];
      } else {
        resp::Writer out(&it.reply, protocol_);
        cmd.sync(*this, views[i], &out);
      }
    }
    thread_local std::mt19937_64 rng{std::random_device{}()};
    kv::Entry entry = kv::MakeExecEntry(first_key, now, rng(), items);
    entry.db = db_;
    server_.cluster().NoteOp(worker_.index(), *slot);
    QueueWrite(group, std::move(entry), *slot, {}, /*caller_reruns=*/true);
    const size_t mark = wbuf_.size();
    co_await FlushWrites();
    // A transaction that did not run (refused, aborted by WATCH) selected nothing.
    std::string_view reply = std::string_view(wbuf_).substr(mark);
    if (!reply.starts_with("*") || reply.starts_with("*-1")) db_ = db_before;
    if (!flush_left_refused_ || killed_ || node::MonoUs() >= give_up_us) co_return;
    // Refused unlogged: asked again after a pause (prepared anew here, or
    // sent where the slot is led by then); an overloaded leader, less often.
    wbuf_.resize(mark);
    asio::steady_timer pause(worker_.io(), pause_for);
    co_await pause.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
    pause_for = std::min(pause_for * 2, kRefusedRetryPauseMax);
  }
}

}  // namespace shoal::server

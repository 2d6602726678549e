// MULTI, EXEC, DISCARD, WATCH, UNWATCH and SHOAL.EXEC (a transaction forwarded whole by the
// node a plain client is connected to). The queueing and the running of a
// transaction are Connection's (connection.cc); the entry and its apply are
// kv's (kv/transaction.h).
#include "common/strings.h"
#include "server/command_table.h"
#include "server/connection.h"

namespace shoal::server {
namespace {

using kv::Args;

void Multi(Connection& c, Args, resp::Writer* r) {
  Connection::Multi& m = c.multi();
  if (m.active) return r->Error("ERR MULTI calls can not be nested");
  std::vector<Connection::Watched> watches = std::move(m.watches);
  m = Connection::Multi{};
  m.watches = std::move(watches);
  m.active = true;
  r->Simple("OK");
}

asio::awaitable<void> Watch(Connection& c, Args args) { co_await c.Watch(args); }

void Unwatch(Connection& c, Args, resp::Writer* r) {
  c.multi().watches.clear();
  r->Simple("OK");
}

void Discard(Connection& c, Args, resp::Writer* r) {
  Connection::Multi& m = c.multi();
  if (!m.active) return r->Error("ERR DISCARD without MULTI");
  m = Connection::Multi{};
  r->Simple("OK");
}

asio::awaitable<void> Exec(Connection& c, Args) {
  if (!c.multi().active) {  // the watches stay, as in Redis
    c.writer().Error("ERR EXEC without MULTI");
    co_return;
  }
  Connection::Multi m = std::move(c.multi());
  c.multi() = Connection::Multi{};
  if (m.failed) {
    c.writer().Error("EXECABORT Transaction discarded because of previous errors.");
    co_return;
  }
  co_await c.RunTransaction(std::move(m.commands), std::move(m.watches));
}

// SHOAL.EXEC nwatched [db key fingerprint]... argc arg... [argc arg...]:
// a transaction, with the keys it watches.
asio::awaitable<void> ShoalExec(Connection& c, Args args) {
  if (!c.routed()) {  // a node's forwarding link (SHOAL.ROUTED), not a client
    c.writer().Error("ERR SHOAL.EXEC is sent by a node that forwards a transaction, not by clients");
    co_return;
  }
  std::vector<std::vector<std::string>> commands;
  std::vector<Connection::Watched> watches;
  auto nw = ParseInt64(args[1]);
  if (!nw || *nw < 0 || static_cast<uint64_t>(*nw) > (args.size() - 2) / 3) {
    c.writer().Error("ERR SHOAL.EXEC: malformed transaction");
    co_return;
  }
  size_t i = 2;
  for (int64_t w = 0; w < *nw; ++w, i += 3) {
    auto db = ParseInt64(args[i]);
    if (!db || *db < 0 || *db >= kv::kDatabasesMax) {
      c.writer().Error("ERR SHOAL.EXEC: malformed transaction");
      co_return;
    }
    watches.push_back({static_cast<uint16_t>(*db), std::string(args[i + 1]), std::string(args[i + 2])});
  }
  while (i < args.size()) {
    auto n = ParseInt64(args[i]);
    if (!n || *n <= 0 || static_cast<uint64_t>(*n) > args.size() - i - 1) {
      c.writer().Error("ERR SHOAL.EXEC: malformed transaction");
      co_return;
    }
    commands.emplace_back(args.begin() + static_cast<std::ptrdiff_t>(i + 1),
                          args.begin() + static_cast<std::ptrdiff_t>(i + 1 + static_cast<size_t>(*n)));
    i += 1 + static_cast<size_t>(*n);
  }
  // The link that forwarded it keeps its database (SELECT inside changes it here only).
  const uint16_t db = c.db();
  co_await c.RunTransaction(std::move(commands), std::move(watches));
  c.set_db(db);
}

}  // namespace

void AppendTransactionCommands(std::vector<Command>* out) {
  using namespace kv;
  auto row = [](std::string_view name, int arity, uint32_t flags) {
    return CommandSpec{name, arity, flags | kCmdConnection, 0, 0, 0, "transactions", 0};
  };
  out->push_back(Command{row("multi", 1, kCmdNoScript | kCmdLoading | kCmdStale | kCmdFast), Multi});
  out->push_back(Command{row("discard", 1, kCmdNoScript | kCmdLoading | kCmdStale | kCmdFast), Discard});
  out->push_back(Command{row("exec", 1, kCmdNoScript | kCmdLoading | kCmdStale), nullptr, Exec});
  out->push_back(Command{row("watch", -2, kCmdNoScript | kCmdLoading | kCmdStale | kCmdFast), nullptr, Watch});
  out->push_back(Command{row("unwatch", 1, kCmdNoScript | kCmdLoading | kCmdStale | kCmdFast), Unwatch});
  out->push_back(Command{row("shoal.exec", -2, kCmdNoScript), nullptr, ShoalExec});
}

}  // namespace shoal::server

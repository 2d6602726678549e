// Connection and server commands: PING ECHO HELLO AUTH QUIT SELECT TIME
// CLIENT CONFIG INFO COMMAND.
#include <functional>

#include "common/clock.h"
#include "common/secret.h"
#include "common/strings.h"
#include "server/connection.h"
#include "server/introspection.h"

namespace shoal::server {
namespace {

using kv::Args;

void Ping(Connection&, Args args, resp::Writer* r) {
  if (args.size() > 2) return r->Error(kv::ArityError("ping"));
  args.size() == 2 ? r->Bulk(args[1]) : r->Simple("PONG");
}

void Echo(Connection&, Args args, resp::Writer* r) { r->Bulk(args[1]); }

void Quit(Connection& c, Args, resp::Writer* r) {
  r->Simple("OK");
  c.CloseAfterReply();
}

void Time(Connection&, Args, resp::Writer* r) {
  int64_t us = RealClock().NowUnixMs() * 1000;
  struct timespec ts;
  if (clock_gettime(CLOCK_REALTIME, &ts) == 0) us = ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
  r->ArrayHeader(2);
  r->Bulk(std::to_string(us / 1000000));
  r->Bulk(std::to_string(us % 1000000));
}

void Select(Connection& c, Args args, resp::Writer* r) {
  auto db = ParseInt64(args[1]);
  if (!db || *db < INT32_MIN || *db > INT32_MAX) return r->Error("ERR value is not an integer or out of range");
  if (*db < 0 || *db >= c.server().config().databases) return r->Error("ERR DB index is out of range");
  c.set_db(static_cast<uint16_t>(*db));
  r->Simple("OK");
}

// Checks user/password against the ACL users (the default user's password
// is requirepass unless ACL SETUSER default changed it).
bool CheckPassword(Connection& c, std::string_view user, std::string_view pass) {
  auto u = c.server().users().Find(std::string(user));
  return u != nullptr && acl::PasswordMatches(*u, pass);
}

void Auth(Connection& c, Args args, resp::Writer* r) {
  if (args.size() > 3) return r->Error("ERR syntax error");
  if (args.size() == 2 && c.server().users().DefaultOpen()) {
    return r->Error(
        "ERR AUTH <password> called without any password configured for the default user. "
        "Are you sure your configuration is correct?");
  }
  std::string_view user = args.size() == 3 ? args[1] : "default";
  std::string_view pass = args.back();
  if (!CheckPassword(c, user, pass)) {
    return r->Error("WRONGPASS invalid username-password pair or user is disabled.");
  }
  c.LogIn(std::string(user), std::string(pass));
  r->Simple("OK");
}

bool ValidClientName(std::string_view name) {
  for (char ch : name) {
    if (ch < '!' || ch > '~') return false;
  }
  return true;
}

void Hello(Connection& c, Args args, resp::Writer* r) {
  int64_t version = c.protocol();
  if (args.size() >= 2) {
    auto v = ParseInt64(args[1]);
    if (!v) return r->Error("ERR Protocol version is not an integer or out of range");
    if (*v < 2 || *v > 3) return r->Error("NOPROTO unsupported protocol version");
    version = *v;
  }
  std::string_view user, pass, name;
  bool has_auth = false, has_name = false;
  for (size_t j = 2; j < args.size(); ++j) {
    size_t more = args.size() - 1 - j;
    if (EqualsIgnoreCase(args[j], "auth") && more >= 2) {
      has_auth = true;
      user = args[j + 1];
      pass = args[j + 2];
      j += 2;
    } else if (EqualsIgnoreCase(args[j], "setname") && more >= 1) {
      has_name = true;
      name = args[j + 1];
      j += 1;
    } else {
      return r->Error("ERR Syntax error in HELLO option '" + std::string(args[j]) + "'");
    }
  }
  if (has_auth) {
    if (!CheckPassword(c, user, pass)) {
      return r->Error("WRONGPASS invalid username-password pair or user is disabled.");
    }
    c.LogIn(std::string(user), std::string(pass));
  }
  if (!c.authenticated()) {
    return r->Error(
        "NOAUTH HELLO must be called with the client already authenticated, otherwise the "
        "HELLO AUTH <user> <pass> option can be used to authenticate the client and "
        "select the RESP protocol version at the same time");
  }
  if (has_name) {
    if (!ValidClientName(name)) {
      return r->Error("ERR Client names cannot contain spaces, newlines or special characters.");
    }
    c.set_name(std::string(name));
  }
  c.set_protocol(static_cast<int>(version));
  r->MapHeader(7);
  r->Bulk("server");
  r->Bulk("redis");
  r->Bulk("version");
  r->Bulk(kRedisCompatVersion);
  r->Bulk("proto");
  r->Integer(version);
  r->Bulk("id");
  r->Integer(static_cast<int64_t>(c.id()));
  r->Bulk("mode");
  r->Bulk("standalone");
  r->Bulk("role");
  r->Bulk("master");
  r->Bulk("modules");
  r->ArrayHeader(0);
}

// ---- CLIENT

asio::awaitable<std::string> ClientList(Connection& c, std::optional<uint64_t> only_id) {
  std::string all;
  Server& server = c.server();
  for (int w = 0; w < server.runtime().size(); ++w) {
    auto task = [&server, w, only_id] {
      std::string lines;
      for (Connection* conn : server.worker_state(w).connections) {
        if (only_id && conn->id() != *only_id) continue;
        lines += conn->InfoLine() + "\n";
      }
      return lines;
    };
    all += co_await node::RunOn(server.runtime().worker(w).io(), c.worker().io(), std::move(task));
  }
  co_return all;
}

// Kills matching clients on every worker; returns how many.
asio::awaitable<int64_t> ClientKill(Connection& c, std::function<bool(Connection&)> match) {
  int64_t killed = 0;
  Server& server = c.server();
  for (int w = 0; w < server.runtime().size(); ++w) {
    auto task = [&server, w, match] {
      int64_t n = 0;
      auto conns = server.worker_state(w).connections;
      for (Connection* conn : conns) {
        if (match(*conn)) {
          conn->Kill();
          ++n;
        }
      }
      return n;
    };
    killed += co_await node::RunOn(server.runtime().worker(w).io(), c.worker().io(), std::move(task));
  }
  co_return killed;
}

// CLIENT LIST [ID id | TYPE normal]
asio::awaitable<void> ClientListCmd(Connection& c, Args args) {
  resp::Writer& r = c.writer();
  std::optional<uint64_t> id;
  if (args.size() == 4 && EqualsIgnoreCase(args[2], "id")) {
    auto v = ParseInt64(args[3]);
    if (!v || *v <= 0) {
      r.Error("ERR Invalid client ID");
      co_return;
    }
    id = static_cast<uint64_t>(*v);
  } else if (args.size() == 4 && EqualsIgnoreCase(args[2], "type")) {
    if (!EqualsIgnoreCase(args[3], "normal")) {
      r.Verbatim("");
      co_return;
    }
  } else if (args.size() != 2) {
    r.Error("ERR syntax error");
    co_return;
  }
  r.Verbatim(co_await ClientList(c, id));
}

// CLIENT KILL addr:port | CLIENT KILL [ID id] [ADDR a] [LADDR a] [SKIPME yes|no] ...
asio::awaitable<void> ClientKillCmd(Connection& c, Args args) {
  resp::Writer& r = c.writer();
  if (args.size() == 3) {  // old form: CLIENT KILL addr:port
    std::string addr(args[2]);
    std::function<bool(Connection&)> match = [addr](Connection& x) { return x.addr() == addr; };
    int64_t n = co_await ClientKill(c, std::move(match));
    n > 0 ? r.Simple("OK") : r.Error("ERR No such client");
    co_return;
  }
  std::optional<uint64_t> id;
  std::string addr, laddr;
  bool skipme = true;
  for (size_t i = 2; i < args.size(); i += 2) {
    if (i + 1 >= args.size()) {
      r.Error("ERR syntax error");
      co_return;
    }
    std::string_view opt = args[i], val = args[i + 1];
    if (EqualsIgnoreCase(opt, "id")) {
      auto v = ParseInt64(val);
      if (!v || *v <= 0) {
        r.Error("ERR client-id should be greater than 0");
        co_return;
      }
      id = static_cast<uint64_t>(*v);
    } else if (EqualsIgnoreCase(opt, "addr")) {
      addr = val;
    } else if (EqualsIgnoreCase(opt, "laddr")) {
      laddr = val;
    } else if (EqualsIgnoreCase(opt, "skipme")) {
      if (EqualsIgnoreCase(val, "yes")) skipme = true;
      else if (EqualsIgnoreCase(val, "no")) skipme = false;
      else {
        r.Error("ERR syntax error");
        co_return;
      }
    } else if (EqualsIgnoreCase(opt, "user") || EqualsIgnoreCase(opt, "type")) {
      // Every client is a normal client of the default user.
      if (!EqualsIgnoreCase(val, "default") && !EqualsIgnoreCase(val, "normal")) {
        r.Integer(0);
        co_return;
      }
    } else {
      r.Error("ERR syntax error");
      co_return;
    }
  }
  uint64_t me = c.id();
  std::function<bool(Connection&)> match = [=](Connection& x) {
    if (skipme && x.id() == me) return false;
    if (id && x.id() != *id) return false;
    if (!addr.empty() && x.addr() != addr) return false;
    if (!laddr.empty() && x.laddr() != laddr) return false;
    return true;
  };
  int64_t n = co_await ClientKill(c, std::move(match));
  r.Integer(n);
}

asio::awaitable<void> Client(Connection& c, Args args) {
  resp::Writer& r = c.writer();
  std::string sub = ToLower(args[1]);
  if (sub == "id") {
    r.Integer(static_cast<int64_t>(c.id()));
  } else if (sub == "getname") {
    c.name().empty() ? r.NullBulk() : r.Bulk(c.name());
  } else if (sub == "setname") {
    if (!ValidClientName(args[2])) {
      r.Error("ERR Client names cannot contain spaces, newlines or special characters.");
    } else {
      c.set_name(std::string(args[2]));
      r.Simple("OK");
    }
  } else if (sub == "setinfo") {
    std::string attr = ToLower(args[2]);
    if (attr != "lib-name" && attr != "lib-ver") {
      r.Error("ERR Unrecognized option '" + std::string(args[2]) + "'");
    } else if (!ValidClientName(args[3])) {
      r.Error("ERR " + attr + " cannot contain spaces, newlines or special characters.");
    } else {
      attr == "lib-name" ? c.set_lib_name(std::string(args[3])) : c.set_lib_ver(std::string(args[3]));
      r.Simple("OK");
    }
  } else if (sub == "info") {
    r.Verbatim(c.InfoLine() + "\n");
  } else if (sub == "list") {
    co_await ClientListCmd(c, args);
  } else if (sub == "kill") {
    co_await ClientKillCmd(c, args);
  } else if (sub == "help") {
    r.ArrayHeader(8);
    for (const char* line :
         {"CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:", "ID", "GETNAME",
          "SETNAME <name>", "SETINFO <lib-name|lib-ver> <value>", "INFO", "LIST [ID id|TYPE normal]",
          "KILL <addr:port> | KILL [ID id] [ADDR addr:port] [LADDR addr:port] [SKIPME yes|no]"}) {
      r.Simple(line);
    }
  }
}

// ---- CONFIG

struct Param {
  std::string_view name;
  bool mutable_at_runtime;
};

constexpr Param kParams[] = {
    {"bind", false},          {"port", false},
    {"dir", false},           {"databases", false},
    {"requirepass", true},    {"maxmemory", false},
    {"maxclients", true},     {"proto-max-bulk-len", true},
    {"client-query-buffer-limit", true}, {"hz", false},
    {"appendonly", false},    {"appendfsync", false},
    {"save", false},          {"loglevel", false},
    {"workers", false},       {"durability", false},
    {"tls-port", false},      {"tls-cert-file", false},
    {"tls-key-file", false},  {"tls-ca-cert-file", false},
    {"tls-ca-cert-dir", false}, {"tls-auth-clients", false},
    {"tls-cluster", false},
};

std::string ParamValue(const Config& cfg, std::string_view name) {
  if (name == "bind") return cfg.bind;
  if (name == "port") return std::to_string(cfg.port);
  if (name == "dir") return cfg.dir;
  if (name == "databases") return std::to_string(cfg.databases);
  if (name == "requirepass") return cfg.requirepass;
  if (name == "maxmemory") return std::to_string(cfg.maxmemory);
  if (name == "maxclients") return std::to_string(cfg.maxclients);
  if (name == "proto-max-bulk-len") return std::to_string(cfg.proto_max_bulk_len);
  if (name == "client-query-buffer-limit") return std::to_string(cfg.client_query_buffer_limit);
  if (name == "hz") return std::to_string(cfg.hz);
  if (name == "appendonly") return "yes";  // every write goes to the RocksDB WAL
  if (name == "appendfsync") return cfg.durability == Durability::kFsync ? "always" : "no";
  if (name == "save") return "";
  if (name == "loglevel") return cfg.loglevel;
  if (name == "workers") return std::to_string(cfg.workers);
  if (name == "durability") return DurabilityName(cfg.durability);
  if (name == "tls-port") return std::to_string(cfg.tls_port);
  if (name == "tls-cert-file") return cfg.tls_cert_file;
  if (name == "tls-key-file") return cfg.tls_key_file;
  if (name == "tls-ca-cert-file") return cfg.tls_ca_cert_file;
  if (name == "tls-ca-cert-dir") return cfg.tls_ca_cert_dir;
  if (name == "tls-auth-clients") return cfg.tls_auth_clients;
  if (name == "tls-cluster") return cfg.tls_cluster ? "yes" : "no";
  return "";
}

Status SetParam(Server& server, std::string_view name, std::string_view value) {
  return server.UpdateConfig([&](Config& next) {
    if (name == "requirepass") {
      next.requirepass = value;
    } else if (name == "maxclients") {
      auto v = ParseInt64(value);
      if (!v) return Status::InvalidArgument("argument couldn't be parsed into an integer");
      next.maxclients = static_cast<int>(*v);
    } else {
      auto v = ParseMemory(value);
      if (!v.ok()) return Status::InvalidArgument("argument must be a memory value");
      (name == "proto-max-bulk-len" ? next.proto_max_bulk_len : next.client_query_buffer_limit) = *v;
    }
    return next.Validate();
  });
}

Status SetParamAndUsers(Server& server, std::string_view name, std::string_view value) {
  Status s = SetParam(server, name, value);
  // The default user follows requirepass once it is in force (never before:
  // the users are rebuilt on worker 0 from the settings in force).
  if (s.ok() && name == "requirepass") server.users().SetRequirepass(server.config().requirepass, server.commands());
  return s;
}

void ConfigCmd(Connection& c, Args args, resp::Writer* r) {
  std::string sub = ToLower(args[1]);
  Server& server = c.server();
  if (sub == "get") {
    // A plain name is echoed as typed (as Redis does); a pattern lists matches.
    std::vector<std::pair<std::string, std::string>> out;
    for (const Param& p : kParams) {
      for (size_t i = 2; i < args.size(); ++i) {
        bool plain = args[i].find_first_of("*?[") == std::string_view::npos;
        if (plain ? EqualsIgnoreCase(args[i], p.name) : GlobMatch(args[i], p.name, true)) {
          out.emplace_back(plain ? std::string(args[i]) : std::string(p.name),
                           ParamValue(server.config(), p.name));
          break;
        }
      }
    }
    r->MapHeader(out.size());
    for (const auto& [k, v] : out) {
      r->Bulk(k);
      r->Bulk(v);
    }
  } else if (sub == "set") {
    if (args.size() % 2 != 0) return r->Error(kv::ArityError("config|set"));
    for (size_t i = 2; i < args.size(); i += 2) {
      std::string name = ToLower(args[i]);
      const Param* param = nullptr;
      for (const Param& p : kParams) {
        if (p.name == name) param = &p;
      }
      if (param == nullptr || !param->mutable_at_runtime) {
        return r->Error("ERR Unknown option or number of arguments for CONFIG SET - '" +
                        std::string(args[i]) + "'");
      }
      Status s = SetParamAndUsers(server, name, args[i + 1]);
      if (!s.ok()) {
        return r->Error("ERR CONFIG SET failed (possibly related to argument '" + name +
                        "') - " + s.message());
      }
    }
    r->Simple("OK");
  } else if (sub == "resetstat") {
    server.stats().Reset();
    r->Simple("OK");
  } else if (sub == "help") {
    r->ArrayHeader(4);
    r->Simple("CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:");
    r->Simple("GET <pattern> [<pattern> ...]");
    r->Simple("SET <directive> <value> [<directive> <value> ...]");
    r->Simple("RESETSTAT");
  }
}

void Info(Connection& c, Args args, resp::Writer* r) {
  std::vector<std::string> sections;
  for (size_t i = 1; i < args.size(); ++i) sections.push_back(ToLower(args[i]));
  r->Verbatim(BuildInfo(c.server(), sections));
}

// FUNCTION and SCRIPT: shoal has no scripting yet, so there is nothing to
// list, flush or kill; what would add a script is refused plainly.
constexpr std::string_view kNoScripting = "ERR scripting is not supported by shoal yet";

bool FlushOption(Args args) {
  return args.size() == 2 || (args.size() == 3 && (EqualsIgnoreCase(args[2], "sync") || EqualsIgnoreCase(args[2], "async")));
}

void FunctionCmd(Connection&, Args args, resp::Writer* r) {
  std::string sub = ToLower(args[1]);
  if (sub == "flush") {
    if (!FlushOption(args)) return r->Error("ERR FUNCTION FLUSH only supports SYNC|ASYNC option");
    r->Simple("OK");
  } else if (sub == "list") {
    bool withcode = false;
    for (size_t i = 2; i < args.size(); ++i) {
      if (!withcode && EqualsIgnoreCase(args[i], "withcode")) {
        withcode = true;
      } else if (EqualsIgnoreCase(args[i], "libraryname")) {
        if (++i >= args.size()) return r->Error("ERR library name argument was not given");
      } else {
        return r->Error("ERR Unknown argument " + std::string(args[i]));
      }
    }
    r->ArrayHeader(0);
  } else if (sub == "delete") {
    r->Error("ERR Library not found");
  } else if (sub == "kill") {
    r->Error("NOTBUSY No scripts in execution right now.");
  } else if (sub == "stats") {
    r->MapHeader(2);
    r->Bulk("running_script");
    r->NullBulk();
    r->Bulk("engines");
    r->MapHeader(0);
  } else if (sub == "help") {
    r->ArrayHeader(5);
    r->Simple("FUNCTION <subcommand> [<arg> [value] [opt] ...]. Subcommands are (shoal has no scripting yet):");
    r->Simple("LIST [WITHCODE] [LIBRARYNAME <pattern>]");
    r->Simple("FLUSH [ASYNC|SYNC]");
    r->Simple("STATS");
    r->Simple("HELP");
  } else {  // load, dump, restore
    r->Error(kNoScripting);
  }
}

void ScriptCmd(Connection&, Args args, resp::Writer* r) {
  std::string sub = ToLower(args[1]);
  if (sub == "flush") {
    if (!FlushOption(args)) return r->Error("ERR SCRIPT FLUSH only support SYNC|ASYNC option");
    r->Simple("OK");
  } else if (sub == "exists") {
    r->ArrayHeader(args.size() - 2);
    for (size_t i = 2; i < args.size(); ++i) r->Integer(0);
  } else if (sub == "kill") {
    r->Error("NOTBUSY No scripts in execution right now.");
  } else if (sub == "help") {
    r->ArrayHeader(4);
    r->Simple("SCRIPT <subcommand> [<arg> [value] [opt] ...]. Subcommands are (shoal has no scripting yet):");
    r->Simple("EXISTS <sha1> [<sha1> ...]");
    r->Simple("FLUSH [ASYNC|SYNC]");
    r->Simple("HELP");
  } else {  // load, debug
    r->Error(kNoScripting);
  }
}

}  // namespace

void AppendServerCommands(std::vector<Command>* out) {
  using namespace kv;
  auto row = [](std::string_view name, int arity, uint32_t flags, std::string_view group) {
    return CommandSpec{name, arity, flags | kCmdConnection, 0, 0, 0, group, 0};
  };
  auto add_sync = [&](CommandSpec spec, SyncHandler h, std::vector<Subcommand> subs = {}) {
    out->push_back(Command{spec, h, nullptr, std::move(subs)});
  };
  add_sync(row("ping", -1, kCmdFast | kCmdStale, "connection"), Ping);
  add_sync(row("echo", 2, kCmdFast, "connection"), Echo);
  add_sync(row("quit", -1, kCmdNoAuth | kCmdFast | kCmdLoading | kCmdStale, "connection"), Quit);
  add_sync(row("select", 2, kCmdFast | kCmdLoading | kCmdStale, "connection"), Select);
  add_sync(row("auth", -2, kCmdNoAuth | kCmdFast | kCmdLoading | kCmdStale, "connection"), Auth);
  add_sync(row("hello", -1, kCmdNoAuth | kCmdFast | kCmdLoading | kCmdStale, "connection"), Hello);
  add_sync(row("time", 1, kCmdFast | kCmdLoading | kCmdStale, "server"), Time);
  add_sync(row("info", -1, kCmdLoading | kCmdStale, "server"), Info);
  add_sync(row("config", -2, kCmdAdmin | kCmdLoading | kCmdStale, "server"), ConfigCmd,
           {{"get", -3}, {"set", -4}, {"resetstat", 2}, {"help", 2}});
  add_sync(row("command", -1, kCmdLoading | kCmdStale, "server"), CommandCmd,
           {{"count", 2}, {"info", -2}, {"docs", -2}, {"list", -2}, {"getkeys", -3}, {"help", 2}});
  add_sync(row("function", -2, kCmdNoScript, "scripting"), FunctionCmd,
           {{"delete", 3}, {"dump", 2}, {"flush", -2}, {"help", 2}, {"kill", 2}, {"list", -2}, {"load", -3},
            {"restore", -3}, {"stats", 2}});
  add_sync(row("script", -2, kCmdNoScript, "scripting"), ScriptCmd,
           {{"debug", 3}, {"exists", -3}, {"flush", -2}, {"help", 2}, {"kill", 2}, {"load", 3}});
  out->push_back(Command{row("client", -2, kCmdLoading | kCmdStale, "connection"), nullptr, Client,
                         {{"id", 2}, {"getname", 2}, {"setname", 3}, {"setinfo", 4}, {"info", 2},
                          {"list", -2}, {"kill", -3}, {"help", 2}}});
}

}  // namespace shoal::server

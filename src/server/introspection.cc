#include "server/introspection.h"

#include <dlfcn.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "common/clock.h"
#include "cluster/meta.h"
#include "common/strings.h"
#include "server/acl.h"
#include "server/connection.h"
#include "server/server.h"

namespace shoal::server {
namespace {

int64_t ResidentBytes() {
  std::ifstream statm("/proc/self/statm");
  int64_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident * sysconf(_SC_PAGESIZE);
}

// The malloc serving this process (Redis's mem_allocator): the one linked
// in (cmake -DSHOAL_MALLOC=...) or preloaded, found by its own symbols.
std::string AllocatorName() {
  using Mallctl = int (*)(const char*, void*, size_t*, void*, size_t);
  if (auto mallctl = reinterpret_cast<Mallctl>(dlsym(RTLD_DEFAULT, "mallctl"))) {
    const char* version = nullptr;
    size_t len = sizeof(version);
    if (mallctl("version", &version, &len, nullptr, 0) == 0 && version != nullptr) {
      std::string v(version);
      return "jemalloc-" + v.substr(0, v.find('-'));
    }
    return "jemalloc";
  }
  using MiVersion = int (*)();
  if (auto mi_version = reinterpret_cast<MiVersion>(dlsym(RTLD_DEFAULT, "mi_version"))) {
    const int v = mi_version();
    return "mimalloc-" + std::to_string(v / 100) + "." + std::to_string(v / 10 % 10) + "." + std::to_string(v % 10);
  }
  if (dlsym(RTLD_DEFAULT, "__asan_init") != nullptr) return "asan";
  return "libc";
}

std::string Human(int64_t bytes) {
  char buf[32];
  double b = static_cast<double>(bytes);
  if (b >= 1 << 30) snprintf(buf, sizeof(buf), "%.2fG", b / (1 << 30));
  else if (b >= 1 << 20) snprintf(buf, sizeof(buf), "%.2fM", b / (1 << 20));
  else if (b >= 1 << 10) snprintf(buf, sizeof(buf), "%.2fK", b / (1 << 10));
  else snprintf(buf, sizeof(buf), "%lldB", static_cast<long long>(bytes));
  return buf;
}

class InfoWriter {
 public:
  explicit InfoWriter(const std::vector<std::string>& sections) : sections_(sections) {}
  bool Begin(const std::string& name) {
    bool all = sections_.empty();
    for (const auto& s : sections_) {
      if (s == "all" || s == "everything" || s == "default" || s == ToLower(name)) all = true;
    }
    if (!all) return false;
    if (!out_.empty()) out_ += "\r\n";
    out_ += "# " + name + "\r\n";
    return true;
  }
  // A section shown only when asked for by name (or "all"/"everything").
  bool BeginOnRequest(const std::string& name) {
    for (const auto& s : sections_) {
      if (s == "all" || s == "everything" || s == ToLower(name)) return Begin(name);
    }
    return false;
  }
  template <typename T>
  void Field(const std::string& key, const T& value) {
    std::ostringstream os;
    os << value;
    out_ += key + ":" + os.str() + "\r\n";
  }
  std::string Take() { return std::move(out_); }

 private:
  const std::vector<std::string>& sections_;
  std::string out_;
};

}  // namespace

std::string BuildInfo(Server& server, const std::vector<std::string>& sections) {
  InfoWriter w(sections);
  const Config& cfg = server.config();
  Stats& st = server.stats();
  int64_t now = RealClock().NowUnixMs();
  if (w.Begin("Server")) {
    struct utsname u;
    uname(&u);
    w.Field("redis_version", kRedisCompatVersion);
    w.Field("shoal_version", SHOAL_VERSION);
    w.Field("redis_mode", "standalone");
    w.Field("os", std::string(u.sysname) + " " + u.release + " " + u.machine);
    w.Field("arch_bits", 64);
    w.Field("multiplexing_api", "epoll");
    w.Field("process_id", getpid());
    w.Field("run_id", server.run_id());
    w.Field("tcp_port", server.port());
    w.Field("uptime_in_seconds", (now - server.start_time_ms()) / 1000);
    w.Field("uptime_in_days", (now - server.start_time_ms()) / 86400000);
    w.Field("hz", cfg.hz);
    w.Field("io_threads_active", 0);
    w.Field("workers", server.runtime().size());
    w.Field("executable", "shoal");
  }
  if (w.Begin("Clients")) {
    w.Field("connected_clients", st.connected_clients.load());
    w.Field("maxclients", cfg.maxclients);
    w.Field("client_buffers_bytes", st.client_buffer_bytes.load());
    w.Field("blocked_clients", static_cast<int64_t>(server.blocking().blocked()));
  }
  if (w.Begin("Memory")) {
    storage::MemoryUsage m = server.engine().Memory();
    int64_t used = m.block_cache_bytes + m.value_cache_bytes + m.table_readers_bytes + st.client_buffer_bytes.load();
    int64_t rss = ResidentBytes();
    w.Field("used_memory", used);
    w.Field("used_memory_human", Human(used));
    w.Field("used_memory_rss", rss);
    w.Field("used_memory_rss_human", Human(rss));
    w.Field("maxmemory", cfg.maxmemory);
    w.Field("maxmemory_human", Human(cfg.maxmemory));
    w.Field("maxmemory_policy", "noeviction");
    static const std::string allocator = AllocatorName();
    w.Field("mem_allocator", allocator);
    w.Field("storage_block_cache_bytes", m.block_cache_bytes);
    w.Field("storage_block_cache_capacity", m.cache_capacity_bytes);
    w.Field("storage_memtable_bytes", m.memtable_bytes);
    w.Field("storage_table_readers_bytes", m.table_readers_bytes);
    w.Field("storage_value_cache_bytes", m.value_cache_bytes);
    w.Field("storage_value_cache_capacity", m.value_cache_capacity_bytes);
    w.Field("storage_value_cache_hits", static_cast<int64_t>(m.value_cache_hits));
    w.Field("storage_value_cache_misses", static_cast<int64_t>(m.value_cache_misses));
    w.Field("client_buffers_bytes", st.client_buffer_bytes.load());
    // From the shared budget's counter: the caches themselves belong to
    // their workers.
    w.Field("key_meta_cache_entries", server.meta_budget().entries());
    w.Field("key_meta_cache_bytes", server.meta_budget().used_bytes());
    w.Field("key_meta_cache_budget_bytes", server.meta_budget().max_bytes());
    w.Field("storage_disk_bytes", server.engine().DiskBytes());
  }
  if (w.Begin("Persistence")) {
    w.Field("loading", 0);
    w.Field("durability", DurabilityName(cfg.durability));
    w.Field("aof_enabled", 1);
    w.Field("rdb_bgsave_in_progress", 0);
    w.Field("write_seq", server.engine().write_seq());
    w.Field("durable_seq", server.engine().durable_seq());
    w.Field("wal_syncs", server.syncer().syncs());
    uint64_t applied = 0;
    for (const kv::Shard* s : server.LocalShards()) applied += s->applied_index();
    w.Field("applied_index", applied);
  }
  if (w.Begin("Stats")) {
    w.Field("total_connections_received", st.connections_received.load());
    w.Field("total_commands_processed", st.commands_processed.Total());
    w.Field("total_net_input_bytes", st.net_input_bytes.Total());
    w.Field("total_net_output_bytes", st.net_output_bytes.Total());
    w.Field("rejected_connections", st.connections_rejected.load());
    w.Field("expired_keys", st.expired_keys.load());
    w.Field("evicted_keys", 0);
  }
  if (w.Begin("Replication")) {
    w.Field("role", "master");
    w.Field("connected_slaves", 0);
  }
  if (w.Begin("CPU")) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    w.Field("used_cpu_sys", ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
    w.Field("used_cpu_user", ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6);
  }
  if (w.Begin("Cluster")) {
    w.Field("cluster_enabled", 1);
    cluster::MetaPtr m = server.cluster().meta();
    w.Field("cluster_features", cluster::FeatureNames(m ? m->features() : 0));
    uint64_t hinted = 0;
    for (const kv::Shard* s : server.LocalShards()) hinted += s->hinted_puts();
    w.Field("write_hints_applied", hinted);
  }
  if (w.BeginOnRequest("Raft")) {  // this node's replicas, as each last published itself
    auto ids = [](const std::vector<raft::NodeId>& v) {
      std::string out;
      for (raft::NodeId id : v) out += (out.empty() ? "" : "|") + std::to_string(id);
      return out.empty() ? std::string("-") : out;
    };
    node::SnapshotStreams::Stats ss = server.snapshots().stats();
    w.Field("snapshots_sending", ss.sending);
    w.Field("snapshots_sent", ss.sent);
    w.Field("snapshots_failed", ss.failed);
    w.Field("snapshots_recalled", ss.recalled);
    w.Field("snapshot_bytes_sent", ss.bytes_sent);
    w.Field("snapshot_bytes_received", ss.bytes_received);
    // Campaigns by the replicas now here (pre-vote rounds; a transfer's not
    // counted), and those started because a leader's process was seen to end.
    uint64_t campaigns = 0, campaigns_gone = 0, taken_on_arrival = 0;
    for (replica::Replica* r : server.groups().All()) {
      campaigns += r->campaigns();
      campaigns_gone += r->campaigns_for_gone_leader();
      taken_on_arrival += r->images_taken_on_arrival();
    }
    // Snapshots the replicas here took as their image arrived, before or
    // without its ticket (a leader change while it travelled).
    w.Field("snapshots_taken_on_arrival", taken_on_arrival);
    w.Field("elections_started", campaigns);
    w.Field("elections_for_gone_leader", campaigns_gone);
    w.Field("peers_seen_gone", server.transport().peers_gone());
    w.Field("peer_frames_sent", server.transport().frames_sent());
    // Of those, frames a worker wrote itself (the connection had nothing queued).
    w.Field("peer_frames_sent_direct", server.transport().frames_sent_direct());
    w.Field("peer_frames_refused", server.transport().frames_refused());
    w.Field("peer_connections_refused", server.transport().peers_refused());
    w.Field("cluster_secret", server.config().cluster_secret.empty() ? "no" : "yes");
    for (replica::Replica* r : server.groups().All()) {
      auto conf = r->published_conf();
      w.Field("group" + std::to_string(r->group()),
              "leader=" + std::to_string(r->published_leader()) + ",term=" + std::to_string(r->published_term()) +
                  ",applied=" + std::to_string(r->published_applied()) +
                  ",voters=" + (conf ? ids(conf->voters) + (conf->voters_outgoing.empty() ? "" : "+" + ids(conf->voters_outgoing)) : "?") +
                  ",learners=" + (conf ? ids(conf->learners) : "?"));
    }
  }
  if (w.Begin("Keyspace")) {
    for (int db = 0; db < cfg.databases; ++db) {
      int64_t keys = 0, expires = 0;
      for (const kv::Shard* s : server.LocalShards()) {
        keys += s->KeyCount(static_cast<uint16_t>(db));
        expires += s->ExpiresCount(static_cast<uint16_t>(db));
      }
      if (keys > 0) {
        w.Field("db" + std::to_string(db),
                "keys=" + std::to_string(keys) + ",expires=" + std::to_string(expires) + ",avg_ttl=0");
      }
    }
  }
  return w.Take();
}

namespace {

void WriteFlags(uint32_t flags, resp::Writer* r) {
  static constexpr std::pair<uint32_t, const char*> kNames[] = {
      {kv::kCmdWrite, "write"},     {kv::kCmdReadonly, "readonly"}, {kv::kCmdDenyOom, "denyoom"},
      {kv::kCmdAdmin, "admin"},     {kv::kCmdNoScript, "noscript"}, {kv::kCmdLoading, "loading"},
      {kv::kCmdStale, "stale"},     {kv::kCmdFast, "fast"},         {kv::kCmdNoAuth, "no_auth"},
      {kv::kCmdMovableKeys, "movablekeys"}, {kv::kCmdBlocking, "blocking"},
  };
  size_t n = 0;
  for (const auto& [bit, name] : kNames) n += (flags & bit) != 0;
  r->SetHeader(n);
  for (const auto& [bit, name] : kNames) {
    if (flags & bit) r->Simple(name);
  }
}

void WriteCommandInfo(const Command& cmd, resp::Writer* r) {
  const kv::CommandSpec& s = cmd.spec;
  r->ArrayHeader(10);
  r->Bulk(s.name);
  r->Integer(s.arity);
  WriteFlags(s.flags | (s.numkeys_at > 0 || s.option_keys != nullptr ? uint32_t{kv::kCmdMovableKeys} : 0u), r);
  r->Integer(s.first_key);
  r->Integer(s.last_key);
  r->Integer(s.key_step);
  // ACL categories (ACL CAT's, server/acl.h).
  std::vector<std::string_view> cats;
  for (std::string_view c : acl::Categories()) {
    if (acl::InCategory(cmd, c)) cats.push_back(c);
  }
  r->SetHeader(cats.size());
  for (std::string_view c : cats) r->Simple("@" + std::string(c));
  r->SetHeader(0);  // tips
  r->ArrayHeader(0);  // key specs
  r->ArrayHeader(cmd.subcommands.size());
  for (const Subcommand& sub : cmd.subcommands) {
    r->ArrayHeader(10);
    r->Bulk(std::string(s.name) + "|" + std::string(sub.name));
    r->Integer(sub.arity);
    WriteFlags(s.flags, r);
    r->Integer(0);
    r->Integer(0);
    r->Integer(0);
    r->SetHeader(0);
    r->SetHeader(0);
    r->ArrayHeader(0);
    r->ArrayHeader(0);
  }
}

void WriteCommandDocs(const Command& cmd, resp::Writer* r) {
  r->Bulk(cmd.spec.name);
  r->MapHeader(3);
  r->Bulk("summary");
  r->Bulk("See the Redis documentation of " + ToUpper(cmd.spec.name) + ".");
  r->Bulk("since");
  r->Bulk("1.0.0");
  r->Bulk("group");
  r->Bulk(cmd.spec.group);
}

}  // namespace

void CommandCmd(Connection& c, kv::Args args, resp::Writer* r) {
  const CommandTable& table = c.server().commands();
  if (args.size() == 1) {
    r->ArrayHeader(table.all().size());
    for (const Command& cmd : table.all()) WriteCommandInfo(cmd, r);
    return;
  }
  std::string sub = ToLower(args[1]);
  if (sub == "count") return r->Integer(static_cast<int64_t>(table.all().size()));
  if (sub == "list") {
    r->ArrayHeader(table.all().size());
    for (const Command& cmd : table.all()) r->Bulk(cmd.spec.name);
    return;
  }
  if (sub == "info") {
    r->ArrayHeader(args.size() - 2);
    for (size_t i = 2; i < args.size(); ++i) {
      const Command* cmd = table.Find(args[i]);
      cmd ? WriteCommandInfo(*cmd, r) : r->NullArray();
    }
    return;
  }
  if (sub == "docs") {
    std::vector<const Command*> cmds;
    if (args.size() == 2) {
      for (const Command& cmd : table.all()) cmds.push_back(&cmd);
    } else {
      for (size_t i = 2; i < args.size(); ++i) {
        if (const Command* cmd = table.Find(args[i])) cmds.push_back(cmd);
      }
    }
    r->MapHeader(cmds.size());
    for (const Command* cmd : cmds) WriteCommandDocs(*cmd, r);
    return;
  }
  if (sub == "getkeys") {
    const Command* cmd = table.Find(args[2]);
    if (cmd == nullptr) return r->Error("ERR Invalid command specified");
    const kv::CommandSpec& s = cmd->spec;
    size_t argc = args.size() - 2;
    if (s.arity > 0 ? argc != static_cast<size_t>(s.arity) : argc < static_cast<size_t>(-s.arity)) {
      return r->Error("ERR Invalid number of arguments specified for command");
    }
    if (s.first_key == 0 && s.numkeys_at == 0) return r->Error("ERR The command has no key arguments");
    std::vector<size_t> keys = kv::KeyPositions(s, args.subspan(2));
    if (keys.empty()) return r->Error("ERR Invalid arguments specified for command");
    r->ArrayHeader(keys.size());
    for (size_t i : keys) r->Bulk(args[i + 2]);
    return;
  }
  if (sub == "help") {
    r->ArrayHeader(6);
    for (const char* line : {"COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                             "(no subcommand)", "COUNT", "INFO [<command-name> ...]",
                             "DOCS [<command-name> ...]", "LIST", }) {
      r->Simple(line);
    }
  }
}

}  // namespace shoal::server

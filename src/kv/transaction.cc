#include "kv/transaction.h"

#include <charconv>
#include <unordered_map>

#include "common/strings.h"
#include "kv/collection.h"
#include "kv/command_util.h"

namespace shoal::kv {
namespace {

std::optional<uint64_t> ParseUint64(std::string_view s) {
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

// Entry layout: key seed item... where an item is one of
//   "r" reply | "w" op db argc arg... | "q" db argc arg... | "v" db key fingerprint
void PutArgs(const std::vector<std::string>& args, std::vector<std::string>* out) {
  out->push_back(std::to_string(args.size()));
  out->insert(out->end(), args.begin(), args.end());
}

const CommandSpec* FindRead(std::string_view name) {
  static const auto* by_name = [] {
    auto* m = new std::unordered_map<std::string, const CommandSpec*>;
    for (const CommandSpec& s : DataCommands()) {
      if (s.read != nullptr) (*m)[std::string(s.name)] = &s;
    }
    return m;
  }();
  auto it = by_name->find(ToLower(name));
  return it == by_name->end() ? nullptr : it->second;
}

// A corrupt transaction entry is a bug of its proposer: it is refused whole.
constexpr std::string_view kErrBadEntry = "ERR internal error: malformed transaction entry";

Status ExecApply(ApplyTxn& txn, const Entry& e, const Limits& limits, resp::Writer* reply) {
  // First the shape, so that a malformed entry changes nothing.
  struct Item {
    char kind;
    size_t at, argc;  // args[at .. at+argc)
    uint16_t op = 0, db = 0;
  };
  std::vector<Item> items;
  size_t i = 2;
  bool ok = e.args.size() >= 2 && ParseUint64(e.args[1]).has_value();
  while (ok && i < e.args.size()) {
    const std::string& k = e.args[i];
    Item it{k.empty() ? '?' : k[0], 0, 0};
    if (k == "r" && i + 1 < e.args.size()) {
      it.at = i + 1;
      it.argc = 1;
      i += 2;
    } else if (k == "v" && i + 3 < e.args.size()) {
      auto db = ParseUint64(e.args[i + 1]);
      ok = db && *db < static_cast<uint64_t>(kDatabasesMax);
      if (!ok) break;
      it.db = static_cast<uint16_t>(*db);
      it.at = i + 2;  // key, fingerprint
      it.argc = 2;
      i += 4;
    } else if ((k == "w" || k == "q") && i + 2 < e.args.size()) {
      const size_t fixed = k == "w" ? 2 : 1;  // op db | db
      if (i + fixed + 1 >= e.args.size()) {
        ok = false;
        break;
      }
      auto op = k == "w" ? ParseUint64(e.args[i + 1]) : std::optional<uint64_t>(0);
      auto db = ParseUint64(e.args[i + fixed]);
      auto argc = ParseUint64(e.args[i + fixed + 1]);
      ok = op && db && argc && *op < 1024 && *db < static_cast<uint64_t>(kDatabasesMax) &&
           *argc <= e.args.size() - (i + fixed + 2) && (k == "w" || *argc > 0);
      if (!ok) break;
      it.op = static_cast<uint16_t>(*op);
      it.db = static_cast<uint16_t>(*db);
      it.at = i + fixed + 2;
      it.argc = static_cast<size_t>(*argc);
      i = it.at + it.argc;
    } else {
      ok = false;
    }
    items.push_back(it);
  }
  if (!ok) {
    reply->Error(kErrBadEntry);
    return Status::Ok();
  }
  // WATCH: any watched key changed since, and nothing runs.
  size_t replies = 0;
  for (const Item& it : items) {
    if (it.kind != 'v') {
      ++replies;
      continue;
    }
    auto raw = txn.GetLive(it.db, e.args[it.at]);
    if (!raw.ok()) return raw.status();
    if (KeyFingerprint(*raw) != e.args[it.at + 1]) {
      reply->NullArray();
      return Status::Ok();
    }
  }
  uint64_t seed = *ParseUint64(e.args[1]);
  reply->ArrayHeader(replies);
  for (const Item& it : items) {
    if (it.kind == 'v') continue;
    if (it.kind == 'r') {
      reply->Raw(e.args[it.at]);
      continue;
    }
    if (it.kind == 'w') {
      ApplyFn fn = FindApply(it.op);
      if (fn == nullptr) {
        reply->Error(kErrBadEntry);
        continue;
      }
      Entry sub;
      sub.op = it.op;
      sub.db = it.db;
      sub.now_ms = e.now_ms;
      sub.args.assign(e.args.begin() + static_cast<std::ptrdiff_t>(it.at),
                      e.args.begin() + static_cast<std::ptrdiff_t>(it.at + it.argc));
      Status s = fn(txn, sub, limits, reply);
      if (!s.ok()) return s;
      continue;
    }
    std::vector<std::string_view> args(e.args.begin() + static_cast<std::ptrdiff_t>(it.at),
                                       e.args.begin() + static_cast<std::ptrdiff_t>(it.at + it.argc));
    const CommandSpec* spec = FindRead(args[0]);
    if (spec == nullptr) {
      reply->Error(kErrBadEntry);
      continue;
    }
    std::unique_ptr<storage::Engine> view = txn.NewReadView();
    Shard* shards[] = {txn.shard()};
    ReadContext ctx{view.get(), it.db, e.now_ms, &limits, shards, NextRandom(&seed)};
    spec->read(ctx, args, reply);
  }
  return Status::Ok();
}

}  // namespace

Entry MakeExecEntry(std::string_view key, int64_t now_ms, uint64_t seed, const std::vector<ExecItem>& items) {
  Entry e;
  e.op = kOpExec;
  e.now_ms = now_ms;
  e.args = {std::string(key), std::to_string(seed)};
  for (const ExecItem& it : items) {
    switch (it.kind) {
      case ExecItem::Kind::kReply:
        e.args.insert(e.args.end(), {"r", it.reply});
        break;
      case ExecItem::Kind::kWrite:
        e.args.insert(e.args.end(), {"w", std::to_string(it.write.op), std::to_string(it.write.db)});
        PutArgs(it.write.args, &e.args);
        break;
      case ExecItem::Kind::kRead:
        e.args.insert(e.args.end(), {"q", std::to_string(it.db)});
        PutArgs(it.args, &e.args);
        break;
      case ExecItem::Kind::kWatch:
        e.args.insert(e.args.end(), {"v", std::to_string(it.db), it.args.at(0), it.reply});
        break;
    }
  }
  return e;
}

ApplyFn ExecApplyFn() { return ExecApply; }

namespace {
void FingerprintRead(ReadContext& ctx, Args args, resp::Writer* reply) {
  std::string raw;
  Value v;
  bool found = false;
  if (!ReadLive(ctx, args[1], &raw, &v, &found, reply)) return;
  reply->Bulk(KeyFingerprint(found ? std::optional<std::string>(raw) : std::nullopt));
}
}  // namespace

void AppendWatchCommands(std::vector<CommandSpec>* out) {
  out->push_back({"shoal.fingerprint", 2, kCmdReadonly | kCmdFast, 1, 1, 1, "transactions", 0, FingerprintRead});
}

}  // namespace shoal::kv

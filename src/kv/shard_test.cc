#include "kv/shard.h"
#include "kv/transaction.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "kv/commands.h"
#include "storage/fault_engine.h"
#include "storage/keys.h"
#include "storage/slot.h"

namespace shoal::kv {
namespace {

// A write as its prepare makes it (the entry a replica applies).
Entry EntryOf(std::vector<std::string> words, int64_t now_ms, uint16_t db = 0) {
  const CommandSpec* spec = nullptr;
  for (const auto& s : DataCommands()) {
    if (s.name == words[0]) spec = &s;
  }
  SHOAL_CHECK(spec != nullptr);
  Entry e;
  e.op = spec->op;
  e.db = db;
  e.now_ms = now_ms;
  std::vector<std::string_view> args(words.begin(), words.end());
  Limits limits;
  PrepareContext ctx{db, now_ms, &limits};
  std::string out;
  resp::Writer w(&out, 2);
  if (spec->prepare) {
    SHOAL_CHECK(spec->prepare(ctx, args, &e, &w));
  } else {
    e.args.assign(words.begin() + 1, words.end());
  }
  return e;
}

// Runs commands against one shard the way the server does: reads directly,
// writes through prepare + apply.
class ShardHarness {
 public:
  // With `faults`, the shard's engine is a storage::FaultEngine (faults()).
  explicit ShardHarness(const std::string& name, uint16_t slot_begin = 0,
                        uint16_t slot_end = storage::kSlotCount, bool faults = false)
      : with_faults_(faults) {
    dir_ = std::filesystem::temp_directory_path() /
           ("shoal_shard_test_" + std::to_string(::getpid()) + "_" + name);
    std::filesystem::remove_all(dir_);
    Open(slot_begin, slot_end);
  }
  ~ShardHarness() {
    shard_.reset();
    engine_.reset();
    disk_.reset();
    std::filesystem::remove_all(dir_);
  }
  // (Re)opens the engine and shard 0; [begin, end) is the range a shard
  // without a stored one starts with.
  void Open(uint16_t begin = 0, uint16_t end = storage::kSlotCount) {
    shard_.reset();
    engine_.reset();
    disk_.reset();
    engine_ = std::move(storage::Engine::Open({.dir = dir_.string(), .memory_budget_bytes = 64 << 20}).value());
    if (with_faults_) {
      disk_ = std::move(engine_);
      auto layer = std::make_unique<storage::FaultEngine>(disk_.get());
      faults_ = layer.get();
      engine_ = std::move(layer);
    }
    shard_ = std::make_unique<Shard>(engine_.get(), 0, begin, end);
    EXPECT_TRUE(shard_->Load().ok());
  }

  std::string Run(std::vector<std::string> words, uint16_t db = 0) {
    return RunOn(*shard_, std::move(words), db);
  }

  // As Run, against another shard of the same engine (a split's child).
  std::string RunOn(Shard& shard, std::vector<std::string> words, uint16_t db = 0) {
    std::vector<std::string_view> args(words.begin(), words.end());
    std::string out;
    resp::Writer w(&out, 2);
    const CommandSpec* spec = nullptr;
    for (const auto& s : DataCommands()) {
      if (s.name == words[0]) spec = &s;
    }
    if (spec == nullptr) return "unknown";
    if (spec->read) {
      Shard* shards[] = {&shard};
      ReadContext ctx{engine_.get(), db, now_ms, &limits_, shards, 42};
      spec->read(ctx, args, &w);
      return out;
    }
    Entry entry;
    entry.op = spec->op;
    entry.db = db;
    entry.now_ms = now_ms;
    PrepareContext pctx{db, now_ms, &limits_};
    if (spec->prepare) {
      if (!spec->prepare(pctx, args, &entry, &w)) return out;
    } else {
      entry.args.assign(words.begin() + 1, words.end());
    }
    log.push_back(entry);
    EXPECT_TRUE(shard.Apply(entry, FindApply(entry.op), limits_, &w).ok());
    return out;
  }

  Shard& shard() { return *shard_; }
  storage::Engine& engine() { return *engine_; }
  storage::FaultEngine& faults() { return *faults_; }
  // Applies one write as a replica does, and returns the apply's status (a
  // failure stops a replica: nothing of the entry is written).
  Status ApplyOnly(std::vector<std::string> words, std::string* reply = nullptr, uint16_t db = 0) {
    const Entry entry = EntryOf(std::move(words), now_ms, db);
    std::string out;
    resp::Writer w(reply != nullptr ? reply : &out, 2);
    return shard_->Apply(entry, FindApply(entry.op), limits_, &w).status();
  }
  Limits& limits() { return limits_; }
  // Splits shard 0 at `slot` into `child` as the log entry after the last
  // applied one, as a replica does: stage, write, finish.
  // With `recount`, the parent's counters are then recounted (as the
  // cluster does, off the worker) and exact.
  Status Split(uint32_t child, uint16_t slot, bool recount = false) {
    auto batch = engine_->NewBatch();
    Status s = shard_->StageSplit(child, slot, shard_->applied_index() + 1, *batch);
    if (!s.ok()) return s;
    auto seq = engine_->Write(*batch);
    if (!seq.ok()) return seq.status();
    shard_->FinishSplit();
    return recount ? Recount(*shard_) : Status::Ok();
  }
  // Runs a shard's pending recount to its end.
  static Status Recount(Shard& shard) {
    auto job = shard.BeginRecount();
    if (!job) return Status::Ok();
    const std::atomic<bool> go{false};
    auto counted = job->count(go);
    if (!counted.ok()) return counted.status();
    auto done = shard.FinishRecount(job->generation, *counted);
    if (!done.ok()) return done.status();
    return *done ? Status::Ok() : Status::Aborted("stale recount");
  }
  // The stored value of key in db (whichever shard holds it), or "<none>".
  std::string Stored(const std::string& key, uint16_t db = 0) {
    std::string raw;
    if (!engine_->Get(storage::Cf::kData, storage::DataKey(db, key), &raw).ok()) return "<none>";
    Value v;
    EXPECT_TRUE(DecodeValue(raw, &v));
    return std::string(v.payload);
  }
  Status ImportFiles(const std::string& dir, uint64_t index) {
    auto batch = engine_->NewBatch();
    Shard::ImportMarker marker{"Ptest", "x"};
    Status s = shard_->StageImportFiles(dir, index, *batch, marker);
    if (!s.ok()) return s;
    batch->Delete(storage::Cf::kRaft, marker.key);
    auto seq = engine_->Write(*batch);
    if (!seq.ok()) return seq.status();
    shard_->FinishImage();
    return Status::Ok();
  }
  int64_t now_ms = 1'700'000'000'000;
  std::vector<Entry> log;

 private:
  std::filesystem::path dir_;
  Limits limits_;
  bool with_faults_ = false;
  std::unique_ptr<storage::Engine> disk_;  // under engine_ when it is a FaultEngine
  storage::FaultEngine* faults_ = nullptr;
  std::unique_ptr<storage::Engine> engine_;
  std::unique_ptr<Shard> shard_;
};

// A file export sees the state of the moment it began, not later writes;
// importing it elsewhere gives the same keys, counters and expiry index.
TEST(Shard, FileExportIsAConsistentViewAndImportsWhole) {
  ShardHarness a("fexp_a"), b("fexp_b");
  a.Run({"set", "k1", "v1"});
  a.Run({"set", "k2", "v2", "px", "500"});
  a.Run({"set", "k3", "v3"}, 2);
  b.Run({"set", "old", "gone"});  // the import replaces everything
  uint64_t index = a.shard().applied_index();
  auto exp = a.shard().BeginExport();
  EXPECT_EQ(exp->index(), index);
  a.Run({"set", "later", "x"});
  a.Run({"del", "k1"});
  auto dir = std::filesystem::temp_directory_path() / ("shoal_shard_fexp_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(exp->Write(dir.string()).ok());
  EXPECT_TRUE(std::filesystem::exists(dir / "data.sst"));
  EXPECT_TRUE(std::filesystem::exists(dir / "expiry.sst"));
  EXPECT_TRUE(std::filesystem::exists(dir / "counters"));
  ASSERT_TRUE(b.ImportFiles(dir.string(), index).ok());
  EXPECT_FALSE(std::filesystem::exists(dir / "data.sst"));  // moved into the store
  EXPECT_EQ(b.shard().applied_index(), index);
  EXPECT_EQ(b.Run({"get", "k1"}), "$2\r\nv1\r\n");
  EXPECT_EQ(b.Run({"get", "later"}), "$-1\r\n");
  EXPECT_EQ(b.Run({"get", "old"}), "$-1\r\n");
  EXPECT_EQ(b.Run({"get", "k3"}, 2), "$2\r\nv3\r\n");
  EXPECT_EQ(b.shard().KeyCount(0), 2);
  EXPECT_EQ(b.shard().KeyCount(2), 1);
  EXPECT_EQ(b.shard().ExpiresCount(0), 1);
  auto due = b.shard().DueExpiries(b.now_ms + 1000, 10);
  ASSERT_EQ(due.size(), 1u);
  EXPECT_EQ(due[0].key, "k2");
  // A shard with no expiring keys exports no expiry file; still imports.
  ShardHarness c("fexp_c");
  c.Run({"set", "x", "1"});
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(c.shard().BeginExport()->Write(dir.string()).ok());
  EXPECT_FALSE(std::filesystem::exists(dir / "expiry.sst"));
  ASSERT_TRUE(b.ImportFiles(dir.string(), 1).ok());
  EXPECT_EQ(b.Run({"get", "x"}), "$1\r\n1\r\n");
  EXPECT_EQ(b.Run({"get", "k1"}), "$-1\r\n");
  EXPECT_EQ(b.shard().ExpiresCount(0), 0);
  EXPECT_TRUE(b.shard().DueExpiries(b.now_ms + 1000, 10).empty());
  // A folder without its data is refused and changes nothing.
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  { std::ofstream(dir / "counters"); }
  EXPECT_FALSE(b.ImportFiles(dir.string(), 5).ok());
  EXPECT_EQ(b.Run({"get", "x"}), "$1\r\n1\r\n");
  std::filesystem::remove_all(dir);
}

// An image's data file holds its shard's slots only, the sentinel included:
// its key range then overlaps no other shard's files, and RocksDB ingests it
// at the bottom level instead of level 0 (where compactions rewrote every
// moved byte, over and over). A file whose keys stray past the range its
// image names is refused before Raft takes it.
TEST(Shard, ImageDataFileStaysInsideItsSlots) {
  ShardHarness a("slots_a", 100, 200), b("slots_b", 100, 200);
  int put = 0;
  for (int i = 0; put < 20 && i < 200000; ++i) {
    std::string k = "k" + std::to_string(i);
    uint16_t slot = storage::KeySlot(k);
    if (slot < 100 || slot >= 200) continue;
    a.Run({"set", k, "v"});
    a.Run({"hset", "{" + k + "}h", "f", "v"});  // same slot
    put += 2;
  }
  ASSERT_EQ(put, 20);
  auto dir = std::filesystem::temp_directory_path() / ("shoal_shard_slots_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(a.shard().BeginExport()->Write(dir.string()).ok());
  auto bounds = storage::ReadSstBounds((dir / "data.sst").string());
  ASSERT_TRUE(bounds.ok()) << bounds.status().ToString();
  EXPECT_GE(bounds->first, storage::DataSlotDbPrefix(100, 0));
  EXPECT_EQ(bounds->last, Shard::SentinelKey(0, 200));
  EXPECT_TRUE(bounds->last.starts_with(storage::DataSlotDbPrefix(199, 0xffff)));
  EXPECT_TRUE(Shard::CheckImageFiles(dir.string()).ok());
  ASSERT_TRUE(b.ImportFiles(dir.string(), 7).ok());
  EXPECT_EQ(b.shard().KeyCount(0), 20);
  std::string raw;
  EXPECT_EQ(b.engine().Get(storage::Cf::kData, Shard::SentinelKey(0, 200), &raw).code(), Code::kNotFound);
  // The same data named as a narrower range: refused, nothing changes.
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(a.shard().BeginExport()->Write(dir.string()).ok());
  std::string counters;
  {
    std::ifstream f(dir / "counters", std::ios::binary);
    counters.assign(std::istreambuf_iterator<char>(f), {});
  }
  const std::string wide = Shard::EncodeRange(100, 200), narrow = Shard::EncodeRange(150, 200);
  size_t at = counters.find(wide);
  ASSERT_NE(at, std::string::npos);
  counters.replace(at, wide.size(), narrow);
  { std::ofstream(dir / "counters", std::ios::binary | std::ios::trunc) << counters; }
  Status refused = Shard::CheckImageFiles(dir.string());
  EXPECT_EQ(refused.code(), Code::kCorruption) << refused.ToString();
  EXPECT_NE(refused.ToString().find("outside its slots"), std::string::npos) << refused.ToString();
  std::filesystem::remove_all(dir);
  EXPECT_EQ(b.shard().KeyCount(0), 20);
}

TEST(Shard, SetGetIncrAndCounters) {
  ShardHarness h("basic");
  EXPECT_EQ(h.Run({"set", "k", "v"}), "+OK\r\n");
  EXPECT_EQ(h.Run({"get", "k"}), "$1\r\nv\r\n");
  EXPECT_EQ(h.Run({"incr", "n"}), ":1\r\n");
  EXPECT_EQ(h.Run({"incrby", "n", "41"}), ":42\r\n");
  EXPECT_EQ(h.Run({"incr", "k"}), "-ERR value is not an integer or out of range\r\n");
  EXPECT_EQ(h.Run({"dbsize"}), ":2\r\n");
  EXPECT_EQ(h.Run({"mset", "a", "1", "a", "2"}), "+OK\r\n");
  EXPECT_EQ(h.Run({"dbsize"}), ":3\r\n");
  EXPECT_EQ(h.Run({"get", "a"}), "$1\r\n2\r\n");
  EXPECT_EQ(h.Run({"del", "a", "a", "zz"}), ":1\r\n");
  EXPECT_EQ(h.Run({"dbsize"}), ":2\r\n");
  EXPECT_EQ(h.shard().applied_index(), 6u);  // six writes, errors included
}

TEST(Shard, ExpiryIsAbsoluteAndLazy) {
  ShardHarness h("expiry");
  EXPECT_EQ(h.Run({"set", "k", "v", "px", "100"}), "+OK\r\n");
  EXPECT_EQ(h.Run({"pttl", "k"}), ":100\r\n");
  EXPECT_EQ(h.shard().ExpiresCount(0), 1);
  h.now_ms += 100;
  EXPECT_EQ(h.Run({"get", "k"}), "$-1\r\n");
  auto due = h.shard().DueExpiries(h.now_ms, 10);
  ASSERT_EQ(due.size(), 1u);
  EXPECT_EQ(due[0].key, "k");
  // Active expiry proposes the internal op; it removes key and index entry.
  Entry e{kOpExpireKey, 0, h.now_ms, {"k", std::to_string(due[0].expire_at_ms)}};
  std::string out;
  resp::Writer w(&out);
  ASSERT_TRUE(h.shard().Apply(e, FindApply(kOpExpireKey), Limits{}, &w).ok());
  EXPECT_EQ(h.shard().KeyCount(0), 0);
  EXPECT_EQ(h.shard().ExpiresCount(0), 0);
  EXPECT_TRUE(h.shard().DueExpiries(h.now_ms, 10).empty());
}

TEST(Shard, StaleExpiryIndexIsDropped) {
  ShardHarness h("stale");
  h.Run({"set", "k", "v", "px", "100"});
  h.Run({"persist", "k"});
  h.now_ms += 1000;
  EXPECT_TRUE(h.shard().DueExpiries(h.now_ms, 10).empty());  // persist removed the index entry
  h.Run({"set", "i", "v", "px", "100"});
  h.Run({"flushdb"});
  h.now_ms += 1000;
  EXPECT_TRUE(h.shard().DueExpiries(h.now_ms, 10).empty());  // flushdb removes index entries
  h.Run({"set", "j", "v", "px", "100"});
  h.Run({"flushall"});
  h.now_ms += 1000;
  auto due = h.shard().DueExpiries(h.now_ms, 10);
  ASSERT_EQ(due.size(), 1u);  // left behind by flushall's range delete
  Entry e{kOpExpireKey, 0, h.now_ms, {"j", std::to_string(due[0].expire_at_ms)}};
  std::string out;
  resp::Writer w(&out);
  ASSERT_TRUE(h.shard().Apply(e, FindApply(kOpExpireKey), Limits{}, &w).ok());
  EXPECT_TRUE(h.shard().DueExpiries(h.now_ms, 10).empty());
  EXPECT_EQ(h.Run({"dbsize"}), ":0\r\n");
}

TEST(Shard, StateAndCountersSurviveReopen) {
  ShardHarness h("reopen");
  h.Run({"set", "a", "1"});
  h.Run({"set", "b", "2", "ex", "100"}, 3);
  h.Open();
  EXPECT_EQ(h.Run({"get", "a"}), "$1\r\n1\r\n");
  EXPECT_EQ(h.Run({"dbsize"}, 3), ":1\r\n");
  EXPECT_EQ(h.shard().ExpiresCount(3), 1);
  EXPECT_EQ(h.shard().applied_index(), 2u);
}

// Apply depends only on the entry and the state: the longest string a
// write may make is the proposing node's setting, carried in the entry, not
// the applying replica's (nodes configured differently must not diverge).
TEST(Shard, StringLimitIsTheProposersOnEveryReplica) {
  ShardHarness a("limit_a"), b("limit_b");
  a.limits().proto_max_bulk_len = 8;
  EXPECT_EQ(a.Run({"set", "s", "hello"}), "+OK\r\n");
  EXPECT_TRUE(a.Run({"append", "s", "world"}).starts_with("-ERR string exceeds maximum allowed size"));
  EXPECT_TRUE(a.Run({"setrange", "s", "7", "xy"}).starts_with("-ERR string exceeds maximum allowed size"));
  EXPECT_EQ(a.Run({"append", "s", "!"}), ":6\r\n");
  std::string out;
  resp::Writer w(&out);
  for (const Entry& e : a.log) ASSERT_TRUE(b.shard().Apply(e, FindApply(e.op), Limits{}, &w).ok());  // 512 MiB here
  EXPECT_EQ(b.Run({"get", "s"}), "$6\r\nhello!\r\n");
  EXPECT_EQ(a.Run({"get", "s"}), "$6\r\nhello!\r\n");
}

TEST(Shard, ReplayingTheLogGivesTheSameState) {
  ShardHarness a("replay_a"), b("replay_b");
  a.Run({"set", "x", "1", "ex", "10"});
  a.Run({"incrbyfloat", "x", "1.5"});
  a.Run({"append", "y", "hello"});
  a.Run({"setrange", "y", "10", "!"});
  a.Run({"rename", "y", "z"});
  a.Run({"expire", "z", "5", "nx"});
  std::string out;
  resp::Writer w(&out);
  for (const Entry& e : a.log) ASSERT_TRUE(b.shard().Apply(e, FindApply(e.op), Limits{}, &w).ok());
  for (const char* key : {"x", "y", "z"}) {
    EXPECT_EQ(a.Run({"get", key}), b.Run({"get", key})) << key;
    EXPECT_EQ(a.Run({"pttl", key}), b.Run({"pttl", key})) << key;
  }
  EXPECT_EQ(b.Run({"get", "x"}), "$3\r\n2.5\r\n");
  EXPECT_EQ(b.Run({"strlen", "z"}), ":11\r\n");
}

TEST(Shard, ABatchAppliesLikeOneByOne) {
  ShardHarness a("batch_a"), b("batch_b");
  a.Run({"mset", "x", "1", "y", "2"});
  a.Run({"incr", "x"});
  a.Run({"set", "x", "10", "px", "50", "get"});
  a.Run({"append", "x", "0"});
  a.Run({"rename", "y", "z"});
  a.Run({"msetnx", "z", "9", "w", "9"});
  a.Run({"del", "x", "w"});
  a.Run({"incrbyfloat", "z", "0.5"});
  std::vector<ApplyFn> fns;
  for (const Entry& e : a.log) fns.push_back(FindApply(e.op));
  std::string replies;
  resp::Writer w(&replies);
  ASSERT_TRUE(b.shard().ApplyBatch(a.log, fns, Limits{}, &w).ok());
  EXPECT_EQ(replies, "+OK\r\n:2\r\n$1\r\n2\r\n:3\r\n+OK\r\n:0\r\n:1\r\n$3\r\n2.5\r\n");
  for (const char* key : {"x", "y", "z", "w"}) EXPECT_EQ(a.Run({"get", key}), b.Run({"get", key}));
  EXPECT_EQ(b.Run({"dbsize"}), ":1\r\n");
  EXPECT_EQ(b.shard().applied_index(), a.shard().applied_index());
}

TEST(Shard, BlindWritesKeepCountersAndExpiryIndexExact) {
  ShardHarness h("blind");
  // Seen keys are overwritten without a read; counters and index must hold.
  h.Run({"set", "k", "v", "px", "100"});
  h.Run({"set", "k", "v2"});  // blind: drops the TTL and its index entry
  EXPECT_EQ(h.shard().ExpiresCount(0), 0);
  h.Run({"mset", "k", "v3", "j", "1", "j", "2"});
  EXPECT_EQ(h.Run({"dbsize"}), ":2\r\n");
  EXPECT_GT(h.shard().meta_cache_size(), 0u);
  h.Run({"setex", "j", "1", "x"});
  EXPECT_EQ(h.shard().ExpiresCount(0), 1);
  h.Run({"flushall"});
  h.Run({"set", "k", "again"});  // after a flush nothing cached may claim k exists
  EXPECT_EQ(h.Run({"dbsize"}), ":1\r\n");
  h.now_ms += 5000;
  auto due = h.shard().DueExpiries(h.now_ms, 10);
  for (const auto& d : due) {  // only FLUSHALL's stale hint for j may remain
    EXPECT_EQ(d.key, "j");
  }
  h.Open();  // a fresh cache reads storage again: same answers
  h.Run({"set", "k", "v4"});
  EXPECT_EQ(h.Run({"dbsize"}), ":1\r\n");
  EXPECT_EQ(h.Run({"get", "k"}), "$2\r\nv4\r\n");
}

TEST(Shard, ABatchPublishesEveryKeysStateToTheMetadataCache) {
  // A batch long enough for the cache's look-ahead, with keys the
  // allocation-free hash does not take (over 60 bytes) and one key twice.
  ShardHarness h("publish");
  auto key = [](int i) { return (i % 7 == 0 ? std::string(70, 'L') : std::string("key:")) + std::to_string(i); };
  std::vector<Entry> first;
  for (int i = 0; i < 40; ++i) {
    first.push_back(i % 3 == 0 ? EntryOf({"set", key(i), "v", "px", "100000"}, h.now_ms)
                               : EntryOf({"set", key(i), "v"}, h.now_ms));
  }
  first.push_back(EntryOf({"set", key(5), "again", "px", "100000"}, h.now_ms));  // 5 now expires
  std::vector<ApplyFn> fns;
  for (const Entry& e : first) fns.push_back(FindApply(e.op));
  std::string replies;
  resp::Writer w(&replies);
  ASSERT_TRUE(h.shard().ApplyBatch(first, fns, Limits{}, &w).ok());
  EXPECT_EQ(h.shard().meta_cache_size(), 40u);
  for (int i = 0; i < 40; ++i) {
    std::optional<KeyMetaCache::Meta> meta = h.shard().CommittedMeta(0, key(i));
    ASSERT_TRUE(meta.has_value()) << i;
    EXPECT_TRUE(meta->exists) << i;
    EXPECT_EQ(meta->expire_at_ms != 0, i % 3 == 0 || i == 5) << i;
  }
  EXPECT_EQ(h.shard().meta_cache_size(), 40u);  // every answer above came from the cache
  // A second batch writes blind on what the first published: the counters
  // and the expiry index stay exact.
  std::vector<Entry> second;
  for (int i = 0; i < 40; ++i) second.push_back(EntryOf({"set", key(i), "w"}, h.now_ms));
  ASSERT_TRUE(h.shard().ApplyBatch(second, std::span<const ApplyFn>(fns).first(second.size()), Limits{}, &w).ok());
  EXPECT_EQ(h.Run({"dbsize"}), ":40\r\n");
  EXPECT_EQ(h.shard().ExpiresCount(0), 0);
  EXPECT_EQ(h.Run({"get", key(7)}), "$1\r\nw\r\n");
}

TEST(Shard, ScanVisitsEveryKeyOnce) {
  ShardHarness h("scan");
  for (int i = 0; i < 300; ++i) h.Run({"set", "key:" + std::to_string(i), "v"});
  std::set<std::string> seen;
  std::string cursor = "0";
  for (int round = 0; round < 10000; ++round) {
    std::string out = h.Run({"scan", cursor, "count", "7"});
    // Reply: *2 $n cursor *m ($len key)*
    std::istringstream in(out);
    std::string line;
    std::getline(in, line);
    std::getline(in, line);
    std::getline(in, cursor);
    cursor.pop_back();
    std::getline(in, line);
    int m = std::stoi(line.substr(1));
    for (int i = 0; i < m; ++i) {
      std::getline(in, line);
      std::getline(in, line);
      line.pop_back();
      EXPECT_TRUE(seen.insert(line).second) << line;
    }
    if (cursor == "0") break;
  }
  EXPECT_EQ(cursor, "0");
  EXPECT_EQ(seen.size(), 300u);
}


constexpr uint16_t kSplitSlot = 8192;
constexpr uint32_t kChild = 9;

// `n` keys named prefix + number, all below kSplitSlot (kept by the parent
// of a split there) or all at or above it (moved to the child).
std::vector<std::string> KeysOnSide(const std::string& prefix, size_t n, bool moved) {
  std::vector<std::string> out;
  for (int i = 0; out.size() < n; ++i) {
    std::string key = prefix + std::to_string(i);
    if ((storage::KeySlot(key) >= kSplitSlot) == moved) out.push_back(key);
  }
  return out;
}

// Writes, per side of kSplitSlot, plain and expiring keys into dbs 0 and 5
// (and kept ones into db 2): db 0 keeps 3 + 2 expiring, moves 4 + 3; db 5
// keeps 1, moves 1 + 1; db 2 keeps 2, moves none.
void FillBothSides(ShardHarness& h) {
  for (const auto& k : KeysOnSide("kp", 3, false)) h.Run({"set", k, "v"});
  for (const auto& k : KeysOnSide("ke", 2, false)) h.Run({"set", k, "v", "px", "100000"});
  for (const auto& k : KeysOnSide("mp", 4, true)) h.Run({"set", k, "v"});
  for (const auto& k : KeysOnSide("me", 3, true)) h.Run({"set", k, "v", "px", "100000"});
  for (const auto& k : KeysOnSide("kp", 1, false)) h.Run({"set", k, "v"}, 5);
  for (const auto& k : KeysOnSide("mp", 1, true)) h.Run({"set", k, "v"}, 5);
  for (const auto& k : KeysOnSide("me", 1, true)) h.Run({"set", k, "v", "ex", "100"}, 5);
  for (const auto& k : KeysOnSide("kp", 2, false)) h.Run({"set", k, "v"}, 2);
}

// A split reads nothing: the parent keeps counting what it gave away and the
// child starts at zero (their sum stays right), both marked for a recount,
// which counts the range off the owner thread in a view taken when it began
// and adds what applied since. Then the counters are exact, per db, and kept.
TEST(ShardSplit, RecountMakesTheCountersExactAfterASplit) {
  ShardHarness h("split_counts");
  FillBothSides(h);
  ASSERT_EQ(h.shard().KeyCount(0), 12);
  ASSERT_EQ(h.shard().ExpiresCount(0), 5);
  EXPECT_FALSE(h.shard().NeedsRecount());
  EXPECT_FALSE(h.shard().BeginRecount().has_value());
  uint64_t index = h.shard().applied_index() + 1;
  ASSERT_TRUE(h.Split(kChild, kSplitSlot).ok());
  EXPECT_EQ(h.shard().slot_begin(), 0);
  EXPECT_EQ(h.shard().slot_end(), kSplitSlot);
  EXPECT_EQ(h.shard().applied_index(), index);
  EXPECT_EQ(h.shard().KeyCount(0), 12);  // unchanged until the recount
  EXPECT_TRUE(h.shard().NeedsRecount());
  // The child, opened on the same engine, finds its range, applied index
  // and the recount mark stored (not the range it was constructed with).
  Shard child(&h.engine(), kChild, 0, storage::kSlotCount);
  ASSERT_TRUE(child.Load().ok());
  EXPECT_EQ(child.slot_begin(), kSplitSlot);
  EXPECT_EQ(child.slot_end(), storage::kSlotCount);
  EXPECT_EQ(child.applied_index(), 1u);
  EXPECT_EQ(child.KeyCount(0), 0);
  EXPECT_TRUE(child.NeedsRecount());

  const std::atomic<bool> go{false};
  auto job = h.shard().BeginRecount();
  ASSERT_TRUE(job.has_value());
  // A write applied after the recount began: counted through the deltas.
  h.Run({"set", KeysOnSide("late", 1, false)[0], "v"});
  auto counted = job->count(go);
  ASSERT_TRUE(counted.ok());
  EXPECT_EQ((*counted)[0].first, 5);  // what the view held
  auto done = h.shard().FinishRecount(job->generation, *counted);
  ASSERT_TRUE(done.ok() && *done);
  EXPECT_FALSE(h.shard().NeedsRecount());
  EXPECT_EQ(h.shard().KeyCount(0), 6);
  EXPECT_EQ(h.shard().ExpiresCount(0), 2);
  EXPECT_EQ(h.shard().KeyCount(5), 1);
  EXPECT_EQ(h.shard().ExpiresCount(5), 0);
  EXPECT_EQ(h.shard().KeyCount(2), 2);
  EXPECT_EQ(h.Run({"dbsize"}), ":6\r\n");
  // The same job cannot finish twice.
  auto again = h.shard().FinishRecount(job->generation, *counted);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(*again);

  auto cjob = child.BeginRecount();
  ASSERT_TRUE(cjob.has_value());
  auto ccount = cjob->count(go);
  ASSERT_TRUE(ccount.ok());
  ASSERT_TRUE(*child.FinishRecount(cjob->generation, *ccount));
  EXPECT_EQ(child.KeyCount(0), 7);
  EXPECT_EQ(child.ExpiresCount(0), 3);
  EXPECT_EQ(child.KeyCount(5), 2);
  EXPECT_EQ(child.ExpiresCount(5), 1);
  EXPECT_EQ(child.KeyCount(2), 0);
  // The expiry index stays in place: each shard finds only its own keys due.
  const int64_t later = h.now_ms + 200'000;
  EXPECT_EQ(h.shard().DueExpiries(later, 100).size(), 2u);
  auto due = child.DueExpiries(later, 100);
  EXPECT_EQ(due.size(), 4u);
  for (const auto& d : due) EXPECT_GE(storage::KeySlot(d.key), kSplitSlot) << d.key;
  // The exact counters are stored: a reopen finds them, and no recount due.
  job.reset();  // their views of the store go before it closes
  cjob.reset();
  h.Open();
  EXPECT_EQ(h.shard().slot_end(), kSplitSlot);
  EXPECT_EQ(h.shard().KeyCount(0), 6);
  EXPECT_EQ(h.shard().ExpiresCount(0), 2);
  EXPECT_EQ(h.shard().KeyCount(5), 1);
  EXPECT_FALSE(h.shard().NeedsRecount());
  EXPECT_EQ(h.shard().applied_index(), index + 1);
}

// A recount is stale once a flush (or another split, or an image) came
// between its view and its end: it changes nothing, and the next one is
// exact. A stop request makes the count give up.
TEST(ShardSplit, StaleOrStoppedRecountChangesNothing) {
  ShardHarness h("split_stale");
  FillBothSides(h);
  ASSERT_TRUE(h.Split(kChild, kSplitSlot).ok());
  auto job = h.shard().BeginRecount();
  ASSERT_TRUE(job.has_value());
  const std::atomic<bool> go{false}, stop{true};
  auto counted = job->count(go);
  ASSERT_TRUE(counted.ok());
  EXPECT_EQ(h.Run({"flushdb"}), "+OK\r\n");  // db 0
  auto done = h.shard().FinishRecount(job->generation, *counted);
  ASSERT_TRUE(done.ok());
  EXPECT_FALSE(*done);
  EXPECT_TRUE(h.shard().NeedsRecount());
  auto next = h.shard().BeginRecount();
  ASSERT_TRUE(next.has_value());
  auto recounted = next->count(go);
  ASSERT_TRUE(recounted.ok());
  ASSERT_TRUE(*h.shard().FinishRecount(next->generation, *recounted));
  EXPECT_EQ(h.shard().KeyCount(0), 0);
  EXPECT_EQ(h.shard().KeyCount(5), 1);
  EXPECT_EQ(h.shard().KeyCount(2), 2);
  // A big enough range for the stop check to be reached.
  ASSERT_TRUE(h.Split(kChild + 1, kSplitSlot / 2).ok());
  for (int i = 0; i < 10000; ++i) h.Run({"set", KeysOnSide("bulk" + std::to_string(i) + ":", 1, false)[0], "v"});
  auto stopped = h.shard().BeginRecount();
  ASSERT_TRUE(stopped.has_value());
  EXPECT_FALSE(stopped->count(stop).ok());
}

// After the split the parent refuses writes of the moved slots (they belong
// to the child now) without changing anything, and takes writes of its own.
TEST(ShardSplit, ParentRefusesMovedSlotsAndChildTakesThem) {
  ShardHarness h("split_writes");
  FillBothSides(h);
  const std::string moved = KeysOnSide("mp", 1, true)[0];
  const std::string moved_new = KeysOnSide("mnew", 1, true)[0];
  const std::string kept = KeysOnSide("kp", 1, false)[0];
  ASSERT_TRUE(h.Split(kChild, kSplitSlot, /*recount=*/true).ok());
  EXPECT_TRUE(h.Run({"set", moved, "changed"}).starts_with("-TRYAGAIN"));
  EXPECT_TRUE(h.Run({"set", moved_new, "x", "px", "50"}).starts_with("-TRYAGAIN"));
  EXPECT_TRUE(h.Run({"del", moved}).starts_with("-TRYAGAIN"));
  EXPECT_TRUE(h.Run({"incr", moved_new}).starts_with("-TRYAGAIN"));
  EXPECT_EQ(h.Stored(moved), "v");
  EXPECT_EQ(h.Stored(moved_new), "<none>");
  EXPECT_EQ(h.shard().KeyCount(0), 5);
  EXPECT_EQ(h.shard().ExpiresCount(0), 2);
  EXPECT_EQ(h.Run({"set", kept, "new"}), "+OK\r\n");
  EXPECT_EQ(h.Stored(kept), "new");
  // In one batch, a refused entry keeps its place among the replies.
  const std::string kept_new = KeysOnSide("knew", 1, false)[0];
  ShardHarness scratch("split_writes_log");  // prepares the entries
  scratch.Run({"set", kept_new, "1"});
  scratch.Run({"set", moved, "2"});
  scratch.Run({"incr", kept_new});
  std::vector<ApplyFn> fns;
  for (const Entry& e : scratch.log) fns.push_back(FindApply(e.op));
  std::string replies;
  resp::Writer w(&replies);
  ASSERT_TRUE(h.shard().ApplyBatch(scratch.log, fns, Limits{}, &w).ok());
  EXPECT_EQ(replies, "+OK\r\n-TRYAGAIN the key's slot moved to another shard (a split); retry\r\n:2\r\n");
  EXPECT_EQ(h.Stored(moved), "v");
  EXPECT_EQ(h.shard().KeyCount(0), 6);
  // The child applies writes of its slots, refuses the parent's, and its
  // counters go on from the moved ones.
  Shard child(&h.engine(), kChild, kSplitSlot, storage::kSlotCount);
  ASSERT_TRUE(child.Load().ok());
  ASSERT_TRUE(ShardHarness::Recount(child).ok());
  EXPECT_EQ(h.RunOn(child, {"get", moved}), "$1\r\nv\r\n");
  EXPECT_EQ(h.RunOn(child, {"set", moved, "child"}), "+OK\r\n");
  EXPECT_EQ(h.RunOn(child, {"set", moved_new, "n"}), "+OK\r\n");
  EXPECT_TRUE(h.RunOn(child, {"set", kept, "x"}).starts_with("-TRYAGAIN"));
  EXPECT_EQ(h.Stored(moved), "child");
  EXPECT_EQ(h.Stored(kept), "new");
  EXPECT_EQ(child.KeyCount(0), 8);
  EXPECT_EQ(child.applied_index(), 4u);
  // Flushing one shard leaves the other's keys on the shared engine alone.
  EXPECT_EQ(h.Run({"flushall"}), "+OK\r\n");
  EXPECT_EQ(h.Stored(kept), "<none>");
  EXPECT_EQ(h.Stored(moved), "child");
  EXPECT_EQ(h.RunOn(child, {"dbsize"}), ":8\r\n");
}

TEST(ShardSplit, SlotOutsideTheRangeFailsAndStagesNothing) {
  ShardHarness h("split_bad", 100, 200);
  std::string key;
  for (int i = 0; key.empty() || storage::KeySlot(key) < 100 || storage::KeySlot(key) >= 200; ++i) {
    key = "k" + std::to_string(i);
  }
  ASSERT_EQ(h.Run({"set", key, "v"}), "+OK\r\n");
  uint64_t applied = h.shard().applied_index();
  for (uint16_t slot : std::vector<uint16_t>{0, 99, 100, 200, 201, storage::kSlotCount}) {
    auto batch = h.engine().NewBatch();
    EXPECT_FALSE(h.shard().StageSplit(kChild, slot, applied + 1, *batch).ok()) << slot;
    EXPECT_EQ(batch->Count(), 0u) << slot;
    h.shard().FinishSplit();  // nothing staged: nothing to finish
    EXPECT_EQ(h.shard().slot_begin(), 100) << slot;
    EXPECT_EQ(h.shard().slot_end(), 200) << slot;
    EXPECT_EQ(h.shard().applied_index(), applied) << slot;
  }
  Shard child(&h.engine(), kChild, 1, 2);
  ASSERT_TRUE(child.Load().ok());
  ASSERT_TRUE(ShardHarness::Recount(child).ok());
  EXPECT_EQ(child.slot_begin(), 1);  // no range was stored for it
  EXPECT_EQ(child.applied_index(), 0u);
  // The edges of a valid split: one slot on either side.
  ASSERT_TRUE(h.Split(kChild, 101).ok());
  EXPECT_EQ(h.shard().slot_end(), 101);
  EXPECT_FALSE(h.Split(kChild + 1, 101).ok());  // a range of one slot cannot split
}

TEST(ShardSplit, RangePersistsAcrossReopen) {
  ShardHarness h("split_range", 100, 200);  // no range stored yet: this one is written
  h.Open(0, storage::kSlotCount);
  EXPECT_EQ(h.shard().slot_begin(), 100);
  EXPECT_EQ(h.shard().slot_end(), 200);
  ASSERT_TRUE(h.Split(kChild, 150).ok());
  h.Open(0, storage::kSlotCount);
  EXPECT_EQ(h.shard().slot_begin(), 100);
  EXPECT_EQ(h.shard().slot_end(), 150);
}

// A split's child starts with its counters at zero until its recount. An
// image taken before then must still carry all of its keys, in every
// database (the counters only tell which databases may be skipped).
TEST(ShardSplit, ChildImageBeforeItsRecountCarriesEveryKey) {
  ShardHarness a("split_early_a");
  FillBothSides(a);
  ASSERT_TRUE(a.Split(kChild, kSplitSlot).ok());
  Shard child(&a.engine(), kChild, kSplitSlot, storage::kSlotCount);
  ASSERT_TRUE(child.Load().ok());
  ASSERT_TRUE(child.NeedsRecount());
  ASSERT_EQ(child.KeyCount(0), 0);  // not counted yet
  auto dir = std::filesystem::temp_directory_path() / ("shoal_shard_split_early_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(child.BeginExport()->Write(dir.string()).ok());
  ShardHarness b("split_early_b");
  Shard taken(&b.engine(), kChild, 0, storage::kSlotCount);
  ASSERT_TRUE(taken.Load().ok());
  auto batch = b.engine().NewBatch();
  ASSERT_TRUE(taken.StageImportFiles(dir.string(), child.applied_index(), *batch, Shard::ImportMarker{"Ptest", "x"}).ok());
  ASSERT_TRUE(b.engine().Write(*batch).ok());
  taken.FinishImage();
  std::filesystem::remove_all(dir);
  for (const auto& k : KeysOnSide("mp", 4, true)) EXPECT_EQ(b.RunOn(taken, {"get", k}), "$1\r\nv\r\n") << k;
  for (const auto& k : KeysOnSide("mp", 1, true)) EXPECT_EQ(b.RunOn(taken, {"get", k}, 5), "$1\r\nv\r\n") << k;
  ASSERT_TRUE(ShardHarness::Recount(taken).ok());
  EXPECT_EQ(taken.KeyCount(0), 7);
  EXPECT_EQ(taken.KeyCount(5), 2);
}

// An image's SST is checked against its CRC-32C before RocksDB reads it
// (RocksDB aborts on some corrupt files instead of refusing them): a
// corrupt image, inline or as files, is refused and changes nothing.
TEST(Shard, CorruptImageIsRefusedBeforeAnythingChanges) {
  ShardHarness a("crc_a"), b("crc_b");
  for (int i = 0; i < 50; ++i) a.Run({"set", "k" + std::to_string(i), "v"});
  b.Run({"set", "mine", "kept"});
  auto image = a.shard().ExportImage();
  ASSERT_TRUE(image.ok());
  std::string bad = *image;
  bad[40] ^= 0x5a;  // inside the SST
  auto batch = b.engine().NewBatch();
  Status st = b.shard().StageImage(bad, 9, *batch);
  EXPECT_EQ(st.code(), Code::kCorruption) << st.ToString();
  auto dir = std::filesystem::temp_directory_path() / ("shoal_shard_crc_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(a.shard().BeginExport()->Write(dir.string()).ok());
  {
    std::fstream f(dir / "data.sst", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(40);
    f.put('\x5a');
  }
  EXPECT_EQ(Shard::CheckImageFiles(dir.string()).code(), Code::kCorruption);  // the replica checks before Raft takes it
  std::filesystem::remove(dir / "expiry.sst");
  {
    std::string sums;
    std::ifstream f(dir / "checksums", std::ios::binary);
    sums.assign(std::istreambuf_iterator<char>(f), {});
    EXPECT_NE(sums.find("data.sst"), std::string::npos);
  }
  std::filesystem::remove_all(dir);
  EXPECT_EQ(b.Run({"get", "mine"}), "$4\r\nkept\r\n");
  EXPECT_EQ(b.Run({"get", "k1"}), "$-1\r\n");
  // Intact, it imports; a file its checksums list must be there.
  a.Run({"set", "exp", "v", "px", "100000"});
  ASSERT_TRUE(a.shard().BeginExport()->Write(dir.string()).ok());
  EXPECT_TRUE(Shard::CheckImageFiles(dir.string()).ok());
  std::filesystem::copy_file(dir / "expiry.sst", dir / "expiry.keep");
  std::filesystem::remove(dir / "expiry.sst");
  EXPECT_FALSE(Shard::CheckImageFiles(dir.string()).ok());
  std::filesystem::rename(dir / "expiry.keep", dir / "expiry.sst");
  ASSERT_TRUE(b.ImportFiles(dir.string(), 9).ok());
  std::filesystem::remove_all(dir);
  EXPECT_EQ(b.Run({"get", "k1"}), "$1\r\nv\r\n");
  EXPECT_EQ(b.shard().KeyCount(0), 51);
}

// Found by libFuzzer (snapshot_image_fuzz): a version 1 image whose data
// record has a key shorter than its [slot][db] prefix aborted the node in
// the write that stored it. It is refused as corrupt, and nothing changes.
TEST(Shard, ImageWithAShortDataKeyIsRefused) {
  ShardHarness b("short_key");
  b.Run({"set", "mine", "kept"});
  const std::string image("\x01" "d\x01\x00\x00\x00\x00\x00\x00\x00\x00", 11);
  auto batch = b.engine().NewBatch();
  Status st = b.shard().StageImage(image, 9, *batch);
  EXPECT_EQ(st.code(), Code::kCorruption) << st.ToString();
  EXPECT_EQ(b.Run({"get", "mine"}), "$4\r\nkept\r\n");
}

// A replica that missed the split catches up from an image taken after it:
// it takes the image's smaller range and drops the keys of the slots it no
// longer holds (inline and file images alike).
TEST(ShardSplit, ImageCarriesTheRangeAndAnOlderReplicaAdoptsIt) {
  ShardHarness a("split_img_a");
  FillBothSides(a);
  ASSERT_TRUE(a.Split(kChild, kSplitSlot).ok());
  const std::string moved = KeysOnSide("mp", 1, true)[0];
  const std::string kept = KeysOnSide("kp", 1, false)[0];
  a.Run({"set", kept, "after"});
  uint64_t index = a.shard().applied_index();
  auto image = a.shard().ExportImage();
  ASSERT_TRUE(image.ok());
  auto dir = std::filesystem::temp_directory_path() / ("shoal_shard_split_img_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(a.shard().BeginExport()->Write(dir.string()).ok());
  // Both forms name their range (a node checks it before taking the image).
  uint16_t b = 1, e = 1;
  ASSERT_TRUE(Shard::ImageRange(*image, &b, &e));
  EXPECT_EQ(b, 0);
  EXPECT_EQ(e, kSplitSlot);
  b = e = 1;
  ASSERT_TRUE(Shard::ImageFilesRange(dir.string(), &b, &e));
  EXPECT_EQ(b, 0);
  EXPECT_EQ(e, kSplitSlot);
  EXPECT_FALSE(Shard::ImageRange("junk", &b, &e));
  EXPECT_FALSE(Shard::ImageFilesRange((dir / "missing").string(), &b, &e));
  // Two replicas that hold the whole range, the moved keys included.
  ShardHarness inline_b("split_img_b"), files_c("split_img_c");
  for (ShardHarness* h : {&inline_b, &files_c}) FillBothSides(*h);
  {
    auto batch = inline_b.engine().NewBatch();
    ASSERT_TRUE(inline_b.shard().StageImage(*image, index, *batch).ok());
    ASSERT_TRUE(inline_b.engine().Write(*batch).ok());
    inline_b.shard().FinishImage();
  }
  ASSERT_TRUE(files_c.ImportFiles(dir.string(), index).ok());
  std::filesystem::remove_all(dir);
  for (ShardHarness* h : {&inline_b, &files_c}) {
    // The image was taken before the exporter's recount: its counters are
    // estimates, and the image says so; the importer recounts.
    EXPECT_TRUE(h->shard().NeedsRecount());
    EXPECT_EQ(h->shard().KeyCount(0), 12);
    ASSERT_TRUE(ShardHarness::Recount(h->shard()).ok());
    EXPECT_FALSE(h->shard().NeedsRecount());
  }
  for (ShardHarness* h : {&inline_b, &files_c}) {
    for (int reopened = 0; reopened < 2; ++reopened) {
      SCOPED_TRACE(h == &inline_b ? "inline image" : "file image");
      EXPECT_EQ(h->shard().slot_begin(), 0);
      EXPECT_EQ(h->shard().slot_end(), kSplitSlot);
      EXPECT_EQ(h->shard().applied_index(), index);
      EXPECT_EQ(h->Stored(kept), "after");
      EXPECT_EQ(h->Stored(moved), "<none>");
      EXPECT_EQ(h->Stored(KeysOnSide("mp", 1, true)[0], 5), "<none>");
      EXPECT_EQ(h->shard().KeyCount(0), 5);
      EXPECT_EQ(h->shard().ExpiresCount(0), 2);
      EXPECT_EQ(h->shard().KeyCount(5), 1);
      EXPECT_EQ(h->shard().ExpiresCount(5), 0);
      EXPECT_TRUE(h->Run({"set", moved, "x"}).starts_with("-TRYAGAIN"));
      // The expiry index holds the kept expiring keys only.
      size_t expiring = 0;
      {
        auto it = h->engine().NewIterator(storage::Cf::kExpiry);
        for (it->SeekToFirst(); it->Valid(); it->Next()) {
          storage::DecodedExpiryKey d;
          ASSERT_TRUE(storage::DecodeExpiryKey(it->key(), &d));
          EXPECT_LT(storage::KeySlot(d.key), kSplitSlot) << d.key;
          ++expiring;
        }
      }
      EXPECT_EQ(expiring, 2u);
      h->Open();  // the adopted range is stored
    }
  }
}

}  // namespace
}  // namespace shoal::kv

namespace shoal::kv {
namespace {

// How many element keys of `key` storage holds (a hash's fields).
size_t ElementsStored(storage::Engine& engine, const std::string& key, uint16_t db = 0) {
  std::string prefix = storage::ElementPrefix(db, key);
  auto it = engine.NewIterator(storage::Cf::kData);
  size_t n = 0;
  for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) ++n;
  return n;
}

// HSET key with n fields f0..f(n-1).
void FillHash(ShardHarness& h, const std::string& key, int n, uint16_t db = 0) {
  std::vector<std::string> words{"hset", key};
  for (int i = 0; i < n; ++i) {
    words.push_back("f" + std::to_string(i));
    words.push_back("v" + std::to_string(i));
  }
  h.Run(words, db);
}

// A hash's fields are keys of their own: whatever removes or replaces the
// hash removes them too, small hashes field by field, big ones by a range.
TEST(Hash, FieldsGoWithTheirHash) {
  ShardHarness h("hash_gone");
  FillHash(h, "small", 3);
  FillHash(h, "big", 1500);  // above kPointDeleteMax: one range tombstone
  EXPECT_EQ(h.Run({"dbsize"}), ":2\r\n");
  EXPECT_EQ(h.Run({"hlen", "big"}), ":1500\r\n");
  EXPECT_EQ(ElementsStored(h.engine(), "big"), 1500u);
  EXPECT_EQ(h.Run({"del", "small", "big"}), ":2\r\n");
  EXPECT_EQ(ElementsStored(h.engine(), "small"), 0u);
  EXPECT_EQ(ElementsStored(h.engine(), "big"), 0u);
  EXPECT_EQ(h.Run({"dbsize"}), ":0\r\n");
  // Made again, a hash has none of its old fields.
  EXPECT_EQ(h.Run({"hset", "big", "f7", "new"}), ":1\r\n");
  EXPECT_EQ(h.Run({"hgetall", "big"}), "*2\r\n$2\r\nf7\r\n$3\r\nnew\r\n");
  EXPECT_EQ(h.Run({"hget", "big", "f8"}), "$-1\r\n");
  // SET over a hash replaces it, fields and all.
  FillHash(h, "big", 100);
  EXPECT_EQ(h.Run({"set", "big", "s"}), "+OK\r\n");
  EXPECT_EQ(ElementsStored(h.engine(), "big"), 0u);
  EXPECT_EQ(h.Run({"type", "big"}), "+string\r\n");
  // Even when the key is known to the blind-write cache as a hash.
  FillHash(h, "c", 2);
  h.Run({"set", "c", "x"});
  EXPECT_EQ(ElementsStored(h.engine(), "c"), 0u);
  // Expiry removes them: lazily on access and by active expiry's entry.
  FillHash(h, "e1", 5);
  FillHash(h, "e2", 1100);
  h.Run({"pexpire", "e1", "10"});
  h.Run({"pexpire", "e2", "10"});
  EXPECT_EQ(h.shard().ExpiresCount(0), 2);
  h.now_ms += 20;
  EXPECT_EQ(h.Run({"hset", "e1", "a", "b"}), ":1\r\n");  // expired: a new hash
  EXPECT_EQ(h.Run({"hlen", "e1"}), ":1\r\n");
  EXPECT_EQ(ElementsStored(h.engine(), "e1"), 1u);
  auto due = h.shard().DueExpiries(h.now_ms, 10);
  ASSERT_EQ(due.size(), 1u);
  Entry expire;
  expire.op = kOpExpireKey;
  expire.now_ms = h.now_ms;
  expire.args = {due[0].key, std::to_string(due[0].expire_at_ms)};
  std::string out;
  resp::Writer w(&out);
  ASSERT_TRUE(h.shard().Apply(expire, FindApply(kOpExpireKey), h.limits(), &w).ok());
  EXPECT_EQ(ElementsStored(h.engine(), "e2"), 0u);
  EXPECT_EQ(h.Run({"exists", "e2"}), ":0\r\n");
  // HDEL of the last field removes the key.
  EXPECT_EQ(h.Run({"hdel", "e1", "a", "a"}), ":1\r\n");
  EXPECT_EQ(h.Run({"exists", "e1"}), ":0\r\n");
  EXPECT_EQ(h.Run({"dbsize"}), ":2\r\n");  // "big" and "c", strings now
}

TEST(Hash, FlushdbTakesOnlyItsDatabasesFields) {
  ShardHarness h("hash_flush");
  FillHash(h, "h", 10, 0);
  FillHash(h, "h", 10, 3);
  EXPECT_EQ(h.Run({"flushdb"}, 3), "+OK\r\n");
  EXPECT_EQ(ElementsStored(h.engine(), "h", 3), 0u);
  EXPECT_EQ(ElementsStored(h.engine(), "h", 0), 10u);
  EXPECT_EQ(h.Run({"hlen", "h"}, 0), ":10\r\n");
  EXPECT_EQ(h.Run({"flushall"}), "+OK\r\n");
  EXPECT_EQ(ElementsStored(h.engine(), "h", 0), 0u);
}

TEST(Hash, RenameMovesTheFields) {
  ShardHarness h("hash_rename");
  FillHash(h, "{t}a", 100);
  FillHash(h, "{t}b", 70);
  h.Run({"hset", "{t}b", "only-b", "1"});
  EXPECT_EQ(h.Run({"rename", "{t}a", "{t}b"}), "+OK\r\n");
  EXPECT_EQ(ElementsStored(h.engine(), "{t}a"), 0u);
  EXPECT_EQ(ElementsStored(h.engine(), "{t}b"), 100u);
  EXPECT_EQ(h.Run({"hlen", "{t}b"}), ":100\r\n");
  EXPECT_EQ(h.Run({"hget", "{t}b", "only-b"}), "$-1\r\n");
  EXPECT_EQ(h.Run({"hget", "{t}b", "f99"}), "$3\r\nv99\r\n");
  EXPECT_EQ(h.Run({"dbsize"}), ":1\r\n");
}

// Apply reads see the writes of earlier entries of the same batch, element
// keys and range deletes included.
TEST(Hash, ABatchAppliesLikeOneByOne) {
  ShardHarness a("hash_batch_a"), b("hash_batch_b");
  FillHash(a, "h", 1100);  // DEL below: a range tombstone, then fields written again
  a.Run({"hdel", "h", "f1", "f2"});
  a.Run({"hincrby", "h", "n", "5"});
  a.Run({"del", "h"});
  a.Run({"hset", "h", "f3", "x", "f3", "y"});
  a.Run({"hsetnx", "h", "f3", "z"});
  a.Run({"hincrbyfloat", "h", "g", "1.5"});
  FillHash(a, "{r}s", 3);
  a.Run({"rename", "{r}s", "{r}t"});
  a.Run({"hset", "{r}t", "f0", "changed"});
  std::vector<ApplyFn> fns;
  for (const Entry& e : a.log) fns.push_back(FindApply(e.op));
  std::string replies;
  resp::Writer w(&replies);
  ASSERT_TRUE(b.shard().ApplyBatch(a.log, fns, Limits{}, &w).ok());
  EXPECT_EQ(replies, ":1100\r\n:2\r\n:5\r\n:1\r\n:1\r\n:0\r\n$3\r\n1.5\r\n:3\r\n+OK\r\n:0\r\n");
  for (const char* key : {"h", "{r}s", "{r}t"}) {
    EXPECT_EQ(a.Run({"hgetall", key}), b.Run({"hgetall", key}));
    EXPECT_EQ(ElementsStored(a.engine(), key), ElementsStored(b.engine(), key));
  }
  EXPECT_EQ(b.Run({"hgetall", "h"}), "*4\r\n$2\r\nf3\r\n$1\r\ny\r\n$1\r\ng\r\n$3\r\n1.5\r\n");
  EXPECT_EQ(b.Run({"dbsize"}), ":2\r\n");
}

// Snapshots carry the fields; a split leaves them in place for the child;
// recounts count hashes, not fields.
TEST(Hash, ImagesAndSplitsCarryTheFields) {
  ShardHarness a("hash_img_a"), b("hash_img_b");
  for (int i = 0; i < 40; ++i) FillHash(a, "h" + std::to_string(i), 20);
  uint64_t index = a.shard().applied_index();
  auto dir = std::filesystem::temp_directory_path() / ("shoal_hash_img_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(a.shard().BeginExport()->Write(dir.string()).ok());
  ASSERT_TRUE(b.ImportFiles(dir.string(), index).ok());
  std::filesystem::remove_all(dir);
  for (int i = 0; i < 40; ++i) {
    std::string key = "h" + std::to_string(i);
    EXPECT_EQ(a.Run({"hgetall", key}), b.Run({"hgetall", key}));
  }
  EXPECT_EQ(b.shard().KeyCount(0), 40);
  ASSERT_TRUE(b.Split(7, 8192, true).ok());
  Shard child(&b.engine(), 7, 8192, storage::kSlotCount);
  ASSERT_TRUE(child.Load().ok());
  ASSERT_TRUE(ShardHarness::Recount(child).ok());
  EXPECT_EQ(b.shard().KeyCount(0) + child.KeyCount(0), 40);
  int moved = 0;
  for (int i = 0; i < 40; ++i) {
    std::string key = "h" + std::to_string(i);
    if (storage::KeySlot(key) < 8192) continue;
    ++moved;
    EXPECT_EQ(b.RunOn(child, {"hlen", key}), ":20\r\n");
    EXPECT_EQ(b.RunOn(child, {"hdel", key, "f0"}), ":1\r\n");
  }
  EXPECT_GT(moved, 0);
  EXPECT_EQ(child.KeyCount(0), moved);
}


// SPOP's choice is the proposer's (a seed in the entry): replaying the log
// elsewhere pops the same members; STORE forms and SMOVE in one batch see
// each other's writes.
TEST(Set, ReplicasApplyingTheSameLogAgree) {
  ShardHarness a("set_log_a"), b("set_log_b");
  std::vector<std::string> words{"sadd", "{s}a"};
  for (int i = 0; i < 150; ++i) words.push_back("m" + std::to_string(i));
  a.Run(words);
  a.Run({"sadd", "{s}b", "m1", "m2", "m3", "x"});
  std::string popped = a.Run({"spop", "{s}a", "20"});
  EXPECT_TRUE(popped.starts_with("*20\r\n")) << popped;
  a.Run({"spop", "{s}a"});
  a.Run({"sinterstore", "{s}c", "{s}a", "{s}b"});
  a.Run({"smove", "{s}b", "{s}c", "x"});
  a.Run({"sunionstore", "{s}b", "{s}b", "{s}c"});
  a.Run({"sdiffstore", "{s}a", "{s}a", "{s}c"});
  std::vector<ApplyFn> fns;
  for (const Entry& e : a.log) fns.push_back(FindApply(e.op));
  std::string replies;
  resp::Writer w(&replies);
  ASSERT_TRUE(b.shard().ApplyBatch(a.log, fns, Limits{}, &w).ok());
  for (const char* key : {"{s}a", "{s}b", "{s}c"}) {
    EXPECT_EQ(a.Run({"smembers", key}), b.Run({"smembers", key})) << key;
    EXPECT_EQ(a.Run({"scard", key}), b.Run({"scard", key})) << key;
    EXPECT_EQ(ElementsStored(a.engine(), key), ElementsStored(b.engine(), key)) << key;
  }
  // c = (a after 21 pops) & b, plus x; a loses c's members.
  const size_t c = ElementsStored(a.engine(), "{s}c");
  EXPECT_EQ(a.Run({"scard", "{s}a"}), ":" + std::to_string(150 - 21 - (c - 1)) + "\r\n");
  EXPECT_EQ(a.Run({"smembers", "{s}b"}), "*4\r\n$2\r\nm1\r\n$2\r\nm2\r\n$2\r\nm3\r\n$1\r\nx\r\n");
}


// HSCAN/SSCAN resume by a seek: every element present throughout comes
// back, whatever is removed meanwhile, and each call makes progress (also
// over elements that share their first 7 bytes).
TEST(Set, ScanReturnsEveryElementPresentThroughout) {
  ShardHarness h("set_scan");
  std::vector<std::string> words{"sadd", "s"};
  for (int i = 0; i < 600; ++i) words.push_back("m" + std::to_string(1000 + i));
  for (int i = 0; i < 300; ++i) words.push_back("samepre-" + std::to_string(i));  // one 7-byte head
  h.Run(words);
  std::set<std::string> seen;
  std::string cursor = "0";
  int calls = 0, removed = 0;
  do {
    std::string out = h.Run({"sscan", "s", cursor, "count", "10"});
    ASSERT_TRUE(out.starts_with("*2\r\n$")) << out;
    size_t p = out.find("\r\n", 4) + 2;
    size_t e = out.find("\r\n", p);
    cursor = out.substr(p, e - p);
    std::istringstream rest(out.substr(e + 2));
    std::string line;
    std::getline(rest, line);  // *n
    while (std::getline(rest, line)) {
      if (line.starts_with("$")) continue;
      line.pop_back();  // \r
      seen.insert(line);
      // Remove what was returned: the positions of the rest all move.
      if (line.starts_with("m") && removed < 200) removed += h.Run({"srem", "s", line}) == ":1\r\n";
    }
    ASSERT_LT(++calls, 200);
  } while (cursor != "0");
  EXPECT_EQ(seen.size(), 900u);
  EXPECT_EQ(removed, 200);
  EXPECT_GT(calls, 30);  // COUNT 10 over 600 distinct heads
  EXPECT_EQ(h.Run({"hscan", "s", "0"}), "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n");
  EXPECT_EQ(h.Run({"sscan", "nokey", "0", "count", "0"}), "*2\r\n$1\r\n0\r\n*0\r\n");  // options not read
}

// Random choices from a big set seek random points; SPOP's are the
// proposer's and replay the same; counts with repeats are bounded.
TEST(Set, RandomChoicesFromABigSet) {
  ShardHarness a("set_big_a"), b("set_big_b");
  std::vector<std::string> words{"sadd", "big"};
  for (int i = 0; i < 3000; ++i) words.push_back("m" + std::to_string(i));
  a.Run(words);
  std::string five = a.Run({"srandmember", "big", "5"});
  EXPECT_TRUE(five.starts_with("*5\r\n")) << five;
  EXPECT_TRUE(a.Run({"srandmember", "big", "-7"}).starts_with("*7\r\n"));
  EXPECT_TRUE(a.Run({"srandmember", "big"}).starts_with("$"));
  EXPECT_TRUE(a.Run({"srandmember", "big", "-1000001"}).starts_with("-ERR a negative count"));
  // Popped members spread over the set: few of them among the first 100 in
  // byte order (about 1 expected; seeking random points in byte order, as
  // first written, gave nearly all 25).
  std::string popped = a.Run({"spop", "big", "25"});
  EXPECT_TRUE(popped.starts_with("*25\r\n")) << popped;
  std::vector<std::string> all;
  for (int i = 0; i < 3000; ++i) all.push_back("m" + std::to_string(i));
  std::sort(all.begin(), all.end());
  int early = 0;
  for (int i = 0; i < 100; ++i) early += popped.find("\r\n" + all[static_cast<size_t>(i)] + "\r\n") != std::string::npos;
  EXPECT_LT(early, 8) << popped;
  a.Run({"spop", "big"});
  EXPECT_EQ(a.Run({"scard", "big"}), ":2974\r\n");
  EXPECT_EQ(ElementsStored(a.engine(), "big"), 2974u);
  for (const Entry& e : a.log) {
    std::string out;
    resp::Writer w(&out);
    ASSERT_TRUE(b.shard().Apply(e, FindApply(e.op), Limits{}, &w).ok());
  }
  EXPECT_EQ(a.Run({"smembers", "big"}), b.Run({"smembers", "big"}));
}


// Lists: elements by position; trims and pops of many delete by range; a
// replayed log (inserts, removals, moves within one list) gives the same list.
TEST(List, PositionsTrimsAndReplays) {
  ShardHarness a("list_a"), b("list_b");
  std::vector<std::string> words{"rpush", "{l}x"};
  for (int i = 0; i < 3000; ++i) words.push_back("v" + std::to_string(i));
  a.Run(words);
  EXPECT_EQ(a.Run({"ltrim", "{l}x", "1000", "-1001"}), "+OK\r\n");  // ranges above kPointDeleteMax
  EXPECT_EQ(a.Run({"llen", "{l}x"}), ":1000\r\n");
  EXPECT_EQ(ElementsStored(a.engine(), "{l}x"), 1000u);
  EXPECT_EQ(a.Run({"lindex", "{l}x", "0"}), "$5\r\nv1000\r\n");
  EXPECT_EQ(a.Run({"lindex", "{l}x", "-1"}), "$5\r\nv1999\r\n");
  EXPECT_EQ(a.Run({"lpush", "{l}x", "front"}), ":1001\r\n");
  EXPECT_EQ(a.Run({"lrange", "{l}x", "0", "1"}), "*2\r\n$5\r\nfront\r\n$5\r\nv1000\r\n");
  EXPECT_EQ(a.Run({"linsert", "{l}x", "after", "v1002", "mid"}), ":1002\r\n");   // near the head
  EXPECT_EQ(a.Run({"linsert", "{l}x", "before", "v1998", "late"}), ":1003\r\n");  // near the tail
  EXPECT_EQ(a.Run({"lrange", "{l}x", "3", "4"}), "*2\r\n$5\r\nv1002\r\n$3\r\nmid\r\n");
  EXPECT_EQ(a.Run({"lrange", "{l}x", "-3", "-2"}), "*2\r\n$4\r\nlate\r\n$5\r\nv1998\r\n");
  EXPECT_EQ(a.Run({"lrem", "{l}x", "0", "mid"}), ":1\r\n");
  EXPECT_EQ(a.Run({"lmove", "{l}x", "{l}x", "left", "right"}), "$5\r\nfront\r\n");
  EXPECT_EQ(a.Run({"lindex", "{l}x", "-1"}), "$5\r\nfront\r\n");
  EXPECT_EQ(a.Run({"rpoplpush", "{l}x", "{l}y"}), "$5\r\nfront\r\n");
  std::string popped = a.Run({"lpop", "{l}x", "900"});
  EXPECT_TRUE(popped.starts_with("*900\r\n$5\r\nv1000\r\n")) << popped.substr(0, 40);
  EXPECT_EQ(a.Run({"llen", "{l}x"}), ":101\r\n");
  EXPECT_EQ(ElementsStored(a.engine(), "{l}x"), 101u);
  EXPECT_EQ(a.Run({"rename", "{l}x", "{l}z"}), "+OK\r\n");
  EXPECT_EQ(a.Run({"lrange", "{l}z", "-3", "-1"}), "*3\r\n$4\r\nlate\r\n$5\r\nv1998\r\n$5\r\nv1999\r\n");
  std::vector<ApplyFn> fns;
  for (const Entry& e : a.log) fns.push_back(FindApply(e.op));
  std::string replies;
  resp::Writer w(&replies);
  ASSERT_TRUE(b.shard().ApplyBatch(a.log, fns, Limits{}, &w).ok());
  for (const char* key : {"{l}x", "{l}y", "{l}z"}) {
    EXPECT_EQ(a.Run({"lrange", key, "0", "-1"}), b.Run({"lrange", key, "0", "-1"})) << key;
    EXPECT_EQ(ElementsStored(a.engine(), key), ElementsStored(b.engine(), key)) << key;
  }
  EXPECT_EQ(a.Run({"del", "{l}z"}), ":1\r\n");
  EXPECT_EQ(ElementsStored(a.engine(), "{l}z"), 0u);
}

namespace {
// ZADD key with members m0..m{n-1} scored i % 100 (ties broken by name).
std::string FillZset(ShardHarness& h, const std::string& key, int n) {
  std::vector<std::string> words{"zadd", key};
  for (int i = 0; i < n; ++i) {
    words.push_back(std::to_string(i % 100));
    words.push_back("m" + std::to_string(i));
  }
  return h.Run(words);
}
std::string Bulks(const std::vector<std::string>& v) {
  std::string out = "*" + std::to_string(v.size()) + "\r\n";
  for (const auto& s : v) out += "$" + std::to_string(s.size()) + "\r\n" + s + "\r\n";
  return out;
}
}  // namespace

// Ranks, score ranges and pops over a big sorted set with ties, from both
// ends (walks forward and backward), against the order computed here.
TEST(Zset, RanksAndRangesOfABigSet) {
  ShardHarness h("zset_big");
  FillZset(h, "z", 2000);
  std::vector<std::pair<int, std::string>> order;
  for (int i = 0; i < 2000; ++i) order.emplace_back(i % 100, "m" + std::to_string(i));
  std::sort(order.begin(), order.end());
  auto names = [&](size_t lo, size_t hi) {  // ranks [lo, hi]
    std::vector<std::string> v;
    for (size_t i = lo; i <= hi; ++i) v.push_back(order[i].second);
    return v;
  };
  EXPECT_EQ(h.Run({"zcard", "z"}), ":2000\r\n");
  EXPECT_EQ(h.Run({"zrange", "z", "0", "2"}), Bulks(names(0, 2)));
  EXPECT_EQ(h.Run({"zrange", "z", "-3", "-1"}), Bulks(names(1997, 1999)));  // walked from the end
  EXPECT_EQ(h.Run({"zrange", "z", "1500", "1502"}), Bulks(names(1500, 1502)));
  auto rev = names(1995, 1999);
  std::reverse(rev.begin(), rev.end());
  EXPECT_EQ(h.Run({"zrevrange", "z", "0", "4"}), Bulks(rev));
  EXPECT_EQ(h.Run({"zrank", "z", order[1234].second}), ":1234\r\n");
  EXPECT_EQ(h.Run({"zrevrank", "z", order[1234].second}), ":765\r\n");
  EXPECT_EQ(h.Run({"zcount", "z", "(10", "20"}), ":200\r\n");
  EXPECT_EQ(h.Run({"zrangebyscore", "z", "(98", "+inf", "limit", "1", "2"}), Bulks(names(1981, 1982)));
  auto top = names(1978, 1979);
  std::reverse(top.begin(), top.end());
  EXPECT_EQ(h.Run({"zrevrangebyscore", "z", "(99", "-inf", "limit", "0", "2"}), Bulks(top));
  EXPECT_EQ(h.Run({"zpopmax", "z"}), "*2\r\n$" + std::to_string(order[1999].second.size()) + "\r\n" +
                                         order[1999].second + "\r\n$2\r\n99\r\n");
  EXPECT_EQ(h.Run({"zremrangebyscore", "z", "0", "(1"}), ":20\r\n");
  EXPECT_EQ(h.Run({"zcard", "z"}), ":1979\r\n");
  EXPECT_EQ(ElementsStored(h.engine(), "z"), 2 * 1979u);
  EXPECT_EQ(h.Run({"zremrangebyrank", "z", "0", "-1"}), ":1979\r\n");  // all: the key goes
  EXPECT_EQ(h.Run({"exists", "z"}), ":0\r\n");
  EXPECT_EQ(ElementsStored(h.engine(), "z"), 0u);
}

// Writes applied as one batch see each other's staged entries, walking
// backward too (ZPOPMAX), across a range tombstone (DEL of a big set).
TEST(Zset, ABatchAppliesLikeOneByOne) {
  ShardHarness a("zset_batch_a"), b("zset_batch_b");
  std::string expected;  // the replies of the writes, one by one
  auto run = [&](std::vector<std::string> words) { expected += a.Run(std::move(words)); };
  expected += FillZset(a, "{z}a", 1100);  // 2200 entries: DEL drops them by a range tombstone
  run({"zpopmax", "{z}a", "3"});
  run({"zadd", "{z}a", "200", "late", "-1", "early"});
  run({"zpopmax", "{z}a"});
  run({"zpopmin", "{z}a"});
  run({"del", "{z}a"});
  run({"zadd", "{z}a", "5", "x", "6", "y", "7", "z"});
  run({"zpopmax", "{z}a"});
  run({"zincrby", "{z}a", "10", "x"});
  expected += FillZset(a, "{z}b", 30);
  run({"zunionstore", "{z}c", "2", "{z}a", "{z}b"});
  run({"zrangestore", "{z}d", "{z}c", "0", "4", "rev"});
  run({"zremrangebyrank", "{z}c", "-2", "-1"});
  run({"zmpop", "2", "{z}none", "{z}d", "max", "count", "2"});
  std::vector<ApplyFn> fns;
  for (const Entry& e : a.log) fns.push_back(FindApply(e.op));
  std::string replies;
  resp::Writer w(&replies);
  ASSERT_TRUE(b.shard().ApplyBatch(a.log, fns, Limits{}, &w).ok());
  EXPECT_EQ(replies, expected);
  for (const char* key : {"{z}a", "{z}b", "{z}c", "{z}d"}) {
    EXPECT_EQ(a.Run({"zrange", key, "0", "-1", "withscores"}), b.Run({"zrange", key, "0", "-1", "withscores"}))
        << key;
    EXPECT_EQ(ElementsStored(a.engine(), key), ElementsStored(b.engine(), key)) << key;
  }
  EXPECT_EQ(b.Run({"zrevrange", "{z}a", "0", "-1"}), "*2\r\n$1\r\nx\r\n$1\r\ny\r\n");
  EXPECT_EQ(b.Run({"zcard", "{z}d"}), ":3\r\n");
}

// A transaction is one entry: its reads see the writes before them (the
// apply's view: staged values, elements, a range tombstone, walked both
// ways), and a replica applying the same entry ends in the same state.
TEST(Transaction, ReadsSeeEarlierWritesOfTheSameEntry) {
  ShardHarness a("txn_a"), b("txn_b");
  auto write = [&](std::vector<std::string> words) {
    ExecItem it;
    it.kind = ExecItem::Kind::kWrite;
    const CommandSpec* spec = nullptr;
    for (const auto& s : DataCommands()) {
      if (s.name == words[0]) spec = &s;
    }
    EXPECT_NE(spec, nullptr);
    it.write.op = spec->op;
    std::vector<std::string_view> args(words.begin(), words.end());
    std::string err;
    resp::Writer w(&err);
    PrepareContext ctx{0, a.now_ms, &a.limits()};
    if (spec->prepare) {
      EXPECT_TRUE(spec->prepare(ctx, args, &it.write, &w)) << err;
    } else {
      it.write.args.assign(words.begin() + 1, words.end());
    }
    return it;
  };
  auto read = [](std::vector<std::string> words) {
    ExecItem it;
    it.kind = ExecItem::Kind::kRead;
    it.args = std::move(words);
    return it;
  };
  std::vector<std::string> big{"zadd", "{t}z"};
  for (int i = 0; i < 1100; ++i) big.insert(big.end(), {std::to_string(i), "m" + std::to_string(i)});
  a.Run({"set", "{t}old", "v"});
  ExecItem pong;
  pong.reply = "+PONG\r\n";
  std::vector<ExecItem> items = {
      write(big),
      read({"zrange", "{t}z", "-2", "-1", "withscores"}),  // walked backward through the view
      read({"zrevrank", "{t}z", "m5"}),
      write({"del", "{t}z"}),  // 2200 entries: a range tombstone
      read({"zcard", "{t}z"}),
      read({"zrange", "{t}z", "0", "-1"}),
      write({"zadd", "{t}z", "7", "late"}),
      read({"zrange", "{t}z", "0", "-1", "withscores"}),
      read({"get", "{t}old"}),
      write({"del", "{t}old"}),
      read({"exists", "{t}old", "{t}z"}),
      pong,
      write({"incr", "{t}z"}),  // WRONGTYPE: a reply, the rest stands
  };
  Entry e = MakeExecEntry("{t}z", a.now_ms, 99, items);
  std::string ra, rb;
  resp::Writer wa(&ra), wb(&rb);
  ASSERT_TRUE(a.shard().Apply(e, FindApply(e.op), a.limits(), &wa).ok());
  EXPECT_EQ(ra,
            "*13\r\n:1100\r\n*4\r\n$5\r\nm1098\r\n$4\r\n1098\r\n$5\r\nm1099\r\n$4\r\n1099\r\n:1094\r\n:1\r\n:0\r\n"
            "*0\r\n:1\r\n*2\r\n$4\r\nlate\r\n$1\r\n7\r\n$1\r\nv\r\n:1\r\n:1\r\n+PONG\r\n"
            "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n");
  ASSERT_TRUE(b.shard().Apply(e, FindApply(e.op), b.limits(), &wb).ok());
  EXPECT_EQ(b.Run({"zrange", "{t}z", "0", "-1", "withscores"}), a.Run({"zrange", "{t}z", "0", "-1", "withscores"}));
  EXPECT_EQ(ElementsStored(a.engine(), "{t}z"), 2u);
  EXPECT_EQ(ElementsStored(b.engine(), "{t}z"), 2u);
  EXPECT_EQ(a.Run({"exists", "{t}old"}), ":0\r\n");
  // A malformed entry changes nothing.
  Entry bad = e;
  bad.args.resize(5);
  std::string rc;
  resp::Writer wc(&rc);
  ASSERT_TRUE(a.shard().Apply(bad, FindApply(bad.op), a.limits(), &wc).ok());
  EXPECT_EQ(rc, "-ERR internal error: malformed transaction entry\r\n");
  EXPECT_EQ(a.Run({"zcard", "{t}z"}), ":1\r\n");
}

// WATCH compares fingerprints of values: a collection's carries a version
// that every element write raises and that never repeats for its key, even
// when it is deleted and made again with the same contents.
TEST(Transaction, FingerprintsChangeWithEveryElementWrite) {
  ShardHarness h("txn_fp");
  auto fp = [&](const std::string& key) { return h.Run({"shoal.fingerprint", key}); };
  EXPECT_EQ(fp("h"), "$1\r\n0\r\n");
  h.Run({"hset", "h", "a", "1"});
  const std::string f1 = fp("h");
  h.Run({"hset", "h", "a", "1"});  // the same value, written again
  const std::string f2 = fp("h");
  h.Run({"del", "h"});
  h.Run({"hset", "h", "a", "1"});
  const std::string f3 = fp("h");
  EXPECT_NE(f1, f2);
  EXPECT_NE(f2, f3);
  EXPECT_NE(f1, f3);
  EXPECT_EQ(fp("h"), f3);  // reads change nothing
  h.Run({"hget", "h", "a"});
  EXPECT_EQ(fp("h"), f3);
  h.Run({"zadd", "z", "1", "m"});
  const std::string z1 = fp("z");
  h.Run({"zincrby", "z", "0", "m"});  // a score unchanged: nothing written
  EXPECT_EQ(fp("z"), z1);
  h.Run({"zincrby", "z", "1", "m"});
  EXPECT_NE(fp("z"), z1);
  EXPECT_EQ(h.Run({"zrange", "z", "0", "-1", "withscores"}), "*2\r\n$1\r\nm\r\n$1\r\n2\r\n");
  // A string's is its value: the same value again is no change (compare and set).
  h.Run({"set", "s", "v"});
  const std::string s1 = fp("s");
  h.Run({"set", "s", "v"});
  EXPECT_EQ(fp("s"), s1);
  h.Run({"append", "s", "!"});
  EXPECT_NE(fp("s"), s1);
}

// Records what a shard tells its KeyWatcher.
class RecordingWatcher : public KeyWatcher {
 public:
  bool Watching() const override { return watching; }
  void KeysChanged(std::span<const ChangedKey> keys) override {
    for (const auto& k : keys) seen.push_back(std::to_string(k.db) + ":" + k.key + (k.type == ValueType::kList ? "/l" : "/z"));
  }
  bool watching = true;
  std::vector<std::string> seen;
};

TEST(Blocking, WatcherHearsOfListsAndSortedSetsThatStillExist) {
  ShardHarness h("blocking_watch");
  RecordingWatcher w;
  h.shard().set_key_watcher(&w);
  h.Run({"rpush", "l", "a"});
  h.Run({"zadd", "z", "1", "m"}, 3);
  h.Run({"set", "s", "v"});
  h.Run({"sadd", "st", "m"});
  h.Run({"hset", "hh", "f", "v"});
  EXPECT_EQ(w.seen, (std::vector<std::string>{"0:l/l", "3:z/z"}));
  w.seen.clear();
  h.Run({"lpop", "l"});  // gone: nothing to wake anyone for
  h.Run({"rename", "z", "z2"}, 3);
  EXPECT_EQ(w.seen, (std::vector<std::string>{"3:z2/z"}));
  w.seen.clear();
  w.watching = false;  // nobody waits: nothing is collected
  h.Run({"rpush", "l", "b"});
  EXPECT_TRUE(w.seen.empty());
  h.shard().set_key_watcher(nullptr);
}

TEST(Blocking, PopsOfBlockingCommandsAreTheirNonBlockingForm) {
  ShardHarness h("blocking_forms");
  // Nothing to take: a null reply (the server then waits).
  EXPECT_EQ(h.Run({"blpop", "a", "b", "0"}), "*-1\r\n");
  EXPECT_EQ(h.Run({"blmove", "a", "b", "left", "right", "1.5"}), "$-1\r\n");
  EXPECT_EQ(h.Run({"bzpopmin", "z", "0"}), "*-1\r\n");
  EXPECT_EQ(h.Run({"blmpop", "0", "2", "a", "b", "left"}), "*-1\r\n");
  EXPECT_EQ(h.Run({"blpop", "a", "-1"}), "-ERR timeout is negative\r\n");
  EXPECT_EQ(h.Run({"blpop", "a", "nan"}), "-ERR timeout is not a float or out of range\r\n");
  h.Run({"rpush", "b", "1", "2", "3"});
  EXPECT_EQ(h.Run({"blpop", "a", "b", "0"}), "*2\r\n$1\r\nb\r\n$1\r\n1\r\n");
  EXPECT_EQ(h.Run({"brpop", "a", "b", "0"}), "*2\r\n$1\r\nb\r\n$1\r\n3\r\n");
  EXPECT_EQ(h.Run({"lmpop", "2", "a", "b", "right", "count", "5"}), "*2\r\n$1\r\nb\r\n*1\r\n$1\r\n2\r\n");
  h.Run({"zadd", "z", "2", "b", "1", "a"});
  EXPECT_EQ(h.Run({"bzpopmax", "y", "z", "0"}), "*3\r\n$1\r\nz\r\n$1\r\nb\r\n$1\r\n2\r\n");
  // Timeouts as the server reads them.
  const CommandSpec* blpop = nullptr;
  const CommandSpec* bzmpop = nullptr;
  for (const auto& s : DataCommands()) {
    if (s.name == "blpop") blpop = &s;
    if (s.name == "bzmpop") bzmpop = &s;
  }
  ASSERT_TRUE(blpop != nullptr && bzmpop != nullptr);
  std::vector<std::string_view> a1 = {"blpop", "k", "1.5"};
  EXPECT_EQ(BlockingTimeoutMs(*blpop, a1), 1500);
  std::vector<std::string_view> a2 = {"bzmpop", "0.25", "1", "k", "min"};
  EXPECT_EQ(BlockingTimeoutMs(*bzmpop, a2), 250);
  std::vector<std::string_view> a3 = {"blpop", "k", "-0.0001"};
  EXPECT_EQ(BlockingTimeoutMs(*blpop, a3), 0);  // as Redis: truncated to 0, no timeout
  EXPECT_EQ(KeyPositions(*blpop, std::vector<std::string_view>{"blpop", "x", "y", "0"}),
            (std::vector<size_t>{1, 2}));
  EXPECT_EQ(KeyPositions(*bzmpop, a2), (std::vector<size_t>{3}));
}

// A batch of GETs (the connection's pipelined GETs) replies to each key as
// GET does: strings, missing and expired keys, another type, a large value,
// a key asked twice, two dbs; a batch after Clear reads afresh.
TEST(Shard, GetBatchRepliesAsGetDoes) {
  ShardHarness h("getbatch");
  h.Run({"set", "s", "v"});
  h.Run({"set", "big", std::string(10000, 'x')});
  h.Run({"set", "brief", "b", "px", "100"});
  h.Run({"hset", "h", "f", "v"});
  h.Run({"set", "s", "other db"}, 3);
  h.now_ms += 500;  // "brief" has expired (no expiry applied it yet)
  struct Ask {
    std::string key;
    uint16_t db;
  };
  const std::vector<Ask> asks = {{"s", 0},     {"missing", 0}, {"brief", 0}, {"h", 0},
                                 {"big", 0},   {"s", 3},       {"s", 0},     {"big", 3}};
  GetBatch batch;
  for (int round = 0; round < 2; ++round) {
    for (const Ask& a : asks) batch.Add(storage::KeySlot(a.key), a.db, a.key);
    ASSERT_EQ(batch.size(), asks.size());
    batch.Read(h.engine());
    for (size_t i = 0; i < asks.size(); ++i) {
      std::string out;
      resp::Writer w(&out, 2);
      batch.Reply(i, h.now_ms, &w);
      EXPECT_EQ(out, h.Run({"get", asks[i].key}, asks[i].db)) << asks[i].key << " in db " << asks[i].db;
      EXPECT_EQ(batch.key(i), asks[i].key);
    }
    batch.Clear();
    EXPECT_TRUE(batch.empty());
    h.Run({"set", "missing", "now here"});
    h.Run({"del", "big"});
  }
  for (const Ask& a : asks) {  // batches of one key each (a GET alone)
    batch.Add(storage::KeySlot(a.key), a.db, a.key);
    batch.Read(h.engine());
    std::string out;
    resp::Writer w(&out, 2);
    batch.Reply(0, h.now_ms, &w);
    EXPECT_EQ(out, h.Run({"get", a.key}, a.db)) << a.key << " alone in db " << a.db;
    batch.Clear();
  }
}

}  // namespace

// The key metadata cache finds what was set, last value wins, across its
// growth; it holds at most its budget's bytes of keys (then starts over),
// caches no key longer than 64 KiB nor one charged more than the whole
// budget, and nothing at all with a budget of 0.
// Keys of 9 bytes: each entry is charged 9 + KeyMetaBudget::kEntryBytes.
std::string MetaKey9(int i) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "k%08d", i);
  return buf;
}
constexpr size_t kMetaCharge9 = 9 + KeyMetaBudget::kEntryBytes;

TEST(KeyMetaCacheTest, FindsWhatWasSetWithinItsBound) {
  KeyMetaCache cache(5000 * kMetaCharge9);
  auto key = [](int i) { return MetaKey9(i * 7919 % 100000000); };
  for (int i = 0; i < 4000; ++i) cache.Set(key(i), {i % 3 != 0, i, i % 5 == 0});
  for (int i = 0; i < 4000; i += 2) cache.Set(key(i), {true, -i, false});  // overwrites
  EXPECT_EQ(cache.size(), 4000u);
  EXPECT_EQ(cache.bytes(), 4000 * kMetaCharge9);
  for (int i = 0; i < 4000; ++i) {
    auto m = cache.Find(key(i));
    ASSERT_TRUE(m.has_value()) << i;
    if (i % 2 == 0) {
      EXPECT_TRUE(m->exists);
      EXPECT_EQ(m->expire_at_ms, -i);
      EXPECT_FALSE(m->collection);
    } else {
      EXPECT_EQ(m->exists, i % 3 != 0);
      EXPECT_EQ(m->expire_at_ms, i);
      EXPECT_EQ(m->collection, i % 5 == 0);
    }
  }
  EXPECT_FALSE(cache.Find("k1").has_value());
  EXPECT_FALSE(cache.Find("").has_value());
  for (int i = 4000; i < 5000; ++i) cache.Set(key(i), {true, 0, false});
  EXPECT_EQ(cache.size(), 5000u);
  cache.Set(key(0), {false, 0, false});  // a known key: no room needed
  EXPECT_EQ(cache.size(), 5000u);
  cache.Set("new", {true, 7, false});  // full: starts over with it
  EXPECT_EQ(cache.size(), 1u);
  EXPECT_FALSE(cache.Find(key(1)).has_value());
  EXPECT_EQ(cache.Find("new")->expire_at_ms, 7);
  cache.Set(std::string(70000, 'x'), {true, 0, false});
  EXPECT_FALSE(cache.Find(std::string(70000, 'x')).has_value());
  cache.Clear();
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_FALSE(cache.Find("new").has_value());
  KeyMetaCache off(0);
  off.Set("a", {true, 0, false});
  EXPECT_FALSE(off.Find("a").has_value());
  // A key whose charge passes the whole budget is left out, and the keys
  // held stay.
  KeyMetaCache tiny(100);
  tiny.Set("a", {true, 3, false});
  tiny.Set(std::string(200, 'y'), {true, 0, false});
  EXPECT_FALSE(tiny.Find(std::string(200, 'y')).has_value());
  EXPECT_EQ(tiny.Find("a")->expire_at_ms, 3);
  EXPECT_EQ(tiny.bytes(), 1 + KeyMetaBudget::kEntryBytes);
}

TEST(KeyMetaCacheTest, HashedCallsAgreeWithTheirKeys) {
  // The data key's hash made without an allocation is its Hash, for short
  // keys and long ones (which take the allocating path).
  for (const std::string& key : {std::string("a"), std::string("{tag}k:1"), std::string(60, 'z'), std::string(61, 'z'),
                                 std::string(300, 'q')}) {
    for (uint16_t db : {0, 3, 300}) {
      EXPECT_EQ(KeyMetaCache::DataKeyHash(db, key), KeyMetaCache::Hash(storage::DataKey(db, key))) << key.size();
    }
  }
  KeyMetaCache cache(1000 * kMetaCharge9);
  cache.PrefetchSlot(KeyMetaCache::Hash("x"));  // empty: nothing to fetch (a sanitizer build checks the reads)
  cache.PrefetchKey(KeyMetaCache::Hash("x"));
  for (int i = 0; i < 500; ++i) {
    const std::string k = MetaKey9(i);
    if (i % 2 == 0) {
      cache.Set(k, KeyMetaCache::Hash(k), {true, i, false});
    } else {
      cache.Set(k, {true, i, false});
    }
  }
  for (int i = 0; i < 500; ++i) {
    const std::string k = MetaKey9(i);
    cache.PrefetchSlot(KeyMetaCache::Hash(k));
    cache.PrefetchKey(KeyMetaCache::Hash(k));
    ASSERT_TRUE(cache.Find(k, KeyMetaCache::Hash(k)).has_value()) << i;
    EXPECT_EQ(cache.Find(k, KeyMetaCache::Hash(k))->expire_at_ms, i);
    EXPECT_EQ(cache.Find(k)->expire_at_ms, i);
  }
  EXPECT_EQ(cache.size(), 500u);
  EXPECT_FALSE(cache.Find("absent", KeyMetaCache::Hash("absent")).has_value());
}

TEST(KeyMetaCacheTest, ShardsShareOneBudgetAndTheWrittenOnesGetIt) {
  auto budget = std::make_shared<KeyMetaBudget>(1000 * kMetaCharge9);
  {
    std::vector<std::unique_ptr<KeyMetaCache>> caches;
    for (int c = 0; c < 4; ++c) caches.push_back(std::make_unique<KeyMetaCache>(budget));
    KeyMetaCache& hot = *caches[0];
    KeyMetaCache& later = *caches[1];
    // One written shard takes the whole budget, not a quarter of it.
    for (int i = 0; i < 1000; ++i) hot.Set(MetaKey9(i), {true, 0, false});
    EXPECT_EQ(hot.size(), 1000u);
    EXPECT_EQ(budget->entries(), 1000u);
    EXPECT_EQ(budget->used_bytes(), 1000 * kMetaCharge9);
    for (int i = 0; i < 1000; ++i) ASSERT_TRUE(hot.Find(MetaKey9(i)).has_value()) << i;
    // Spent: a shard written now still grows to its even share (250 keys)
    // while the idle one keeps its keys...
    for (int i = 0; i < 250; ++i) later.Set(MetaKey9(i), {true, 0, false});
    EXPECT_EQ(later.size(), 250u);
    EXPECT_EQ(hot.size(), 1000u);
    EXPECT_EQ(budget->entries(), 1250u);
    // ...and past it starts over rather than taking more.
    later.Set("one more", {true, 0, false});
    EXPECT_EQ(later.size(), 1u);
    EXPECT_EQ(budget->entries(), 1001u);
    // The shard over its share starts over on its next new key, and gives
    // the budget back.
    hot.Set("new", {true, 0, false});
    EXPECT_EQ(hot.size(), 1u);
    EXPECT_EQ(budget->entries(), 2u);
    EXPECT_FALSE(hot.Find(MetaKey9(5)).has_value());
    // Clear gives back what a cache held; so does its end.
    for (int i = 0; i < 300; ++i) caches[2]->Set(MetaKey9(i), {true, 0, false});
    EXPECT_EQ(budget->entries(), 302u);
    caches[2]->Clear();
    EXPECT_EQ(budget->entries(), 2u);
    for (int i = 0; i < 10; ++i) caches[3]->Set(MetaKey9(i), {true, 0, false});
    EXPECT_EQ(budget->entries(), 12u);
    // A detached cache (a retired shard's) gives its keys back and takes no more.
    caches[3]->Detach();
    EXPECT_EQ(budget->entries(), 2u);
    caches[3]->Set(MetaKey9(1), {true, 0, false});
    EXPECT_FALSE(caches[3]->Find(MetaKey9(1)).has_value());
    EXPECT_EQ(budget->entries(), 2u);
  }
  EXPECT_EQ(budget->entries(), 0u);
  EXPECT_EQ(budget->used_bytes(), 0u);
}

}  // namespace shoal::kv

namespace shoal::kv {
namespace {

// Splits a command line on spaces.
std::vector<std::string> Words(std::string_view line) {
  std::vector<std::string> out;
  std::istringstream in{std::string(line)};
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

// A connection prepares writes into entries that held earlier writes (their
// strings' storage is reused): every prepare must give the same entry into
// such a one as into a fresh one, so it sets `args` whole (kv::PrepareFn).
// Every write command with a prepare has a sample here, so one added later
// is checked too.
TEST(Prepare, IntoAnEntryThatHeldAnotherWriteAsIntoAFreshOne) {
  const std::vector<std::string_view> samples = {
      "set k v", "set k v ex 10 nx get", "set k v keepttl xx", "setex k 10 v", "psetex k 100 v",
      "getex k", "getex k px 100", "getex k persist", "mset a 1 b 2", "msetnx a 1 b 2", "append k v",
      "setrange k 3 v", "incr k", "decr k", "incrby k 5", "decrby k 5", "incrbyfloat k 1.5",
      "setbit k 7 1", "bitop and d a b", "bitop not d a", "bitfield k set u8 0 200 get u4 0",
      "hset h f v g w", "hmset h f v", "hincrby h f 2", "hincrbyfloat h f 1.5", "hdel h f",
      "hsetnx h f v", "move k 1", "expire k 10", "expire k 10 nx", "pexpire k 100", "expireat k 4000000000",
      "pexpireat k 4000000000000", "persist k", "del a b", "unlink a b", "rename a b", "renamenx a b",
      "copy a b replace", "lpush l a b", "rpush l a b", "lpushx l a", "rpushx l a", "lpop l", "rpop l 2",
      "lset l 0 v", "ltrim l 0 1", "lrem l 0 a", "linsert l before a b", "lmove a b left right",
      "rpoplpush a b", "lmpop 2 a b left count 2", "blpop a b 0", "brpop a 1", "blmove a b left right 0",
      "brpoplpush a b 0", "blmpop 0 1 a right", "sadd s a b", "srem s a", "spop s", "spop s 2",
      "smove s t a", "sinterstore d s t", "sunionstore d s t", "sdiffstore d s t", "zadd z 1 a 2 b",
      "zadd z xx gt ch incr 1 a", "zincrby z 1 a", "zrem z a", "zpopmin z", "zpopmax z 2",
      "zremrangebyrank z 0 1", "zremrangebyscore z 0 1", "zremrangebylex z [a [b",
      "zrangestore d z 0 -1", "zunionstore d 2 z y weights 1 2", "zinterstore d 2 z y aggregate max",
      "zdiffstore d 2 z y", "zmpop 1 z min count 2", "bzpopmin z 0", "bzpopmax z 1", "bzmpop 0 1 z max",
      "pfadd p a b", "pfmerge p q", "getdel k", "getset k v", "setnx k v", "hincrby h f -1",
      "restore r 0 x", "expiretime k", "flushdb", "flushall", "swapdb 0 1", "sort k store d",
  };
  Limits limits;
  PrepareContext pctx{0, 1'700'000'000'000, &limits};
  std::set<std::string_view> covered;
  for (std::string_view line : samples) {
    const std::vector<std::string> words = Words(line);
    const CommandSpec* spec = nullptr;
    for (const auto& s : DataCommands()) {
      if (s.name == words[0]) spec = &s;
    }
    if (spec == nullptr || spec->prepare == nullptr) continue;  // a sample of a command without one
    covered.insert(spec->name);
    std::vector<std::string_view> args(words.begin(), words.end());
    std::string fresh_reply, used_reply;
    resp::Writer fresh_w(&fresh_reply, 2), used_w(&used_reply, 2);
    Entry fresh;
    const bool fresh_ok = spec->prepare(pctx, args, &fresh, &fresh_w);
    Entry used;
    used.args.assign(9, std::string(300, 'x'));  // another write's arguments, longer and more
    used.args[0] = "k";
    const bool used_ok = spec->prepare(pctx, args, &used, &used_w);
    EXPECT_EQ(fresh_ok, used_ok) << line;
    EXPECT_EQ(fresh_reply, used_reply) << line;
    if (fresh_ok && used_ok) {
      if (spec->name == "spop") {  // its last argument is a random seed, drawn anew each time
        ASSERT_EQ(fresh.args.size(), used.args.size()) << line;
        fresh.args.pop_back();
        used.args.pop_back();
      }
      EXPECT_EQ(fresh.args, used.args) << line;
    }
  }
  for (const auto& s : DataCommands()) {
    if (s.prepare != nullptr) {
      EXPECT_TRUE(covered.count(s.name)) << "no sample prepares " << s.name;
    }
  }
}

// Reads that fail in an apply fail the apply (a replica then stops, and
// applies the entry again at restart, from its intact log): a failed read
// taken for "nothing there" would let this replica alone apply the entry
// otherwise than the others, and nothing would tell.

TEST(ReadFailures, AFlushdbThatCannotReadItsKeysFailsAndDeletesNothing) {
  // The shard's range starts at the first key's slot: the read that fails
  // is of keys (each slot's own seek would otherwise hide it).
  const uint16_t first = storage::KeySlot("k0");
  ShardHarness h("read_fail_flushdb", first, storage::kSlotCount, /*faults=*/true);
  std::vector<std::string> keys;
  for (int i = 0; keys.size() < 20; ++i) {
    std::string k = "k" + std::to_string(i);
    if (storage::KeySlot(k) >= first) keys.push_back(k);
  }
  for (const auto& k : keys) h.Run({"set", k, "v"});
  h.Run({"hset", "k0", "f", "v"}, 1);  // elements in another database stay either way
  // The first seek, a step within the first slot's keys, later slots' seeks.
  for (int at : {0, 1, 2, 7, 100, 5000}) {
    h.faults().FailNextIterators(1, at);
    EXPECT_FALSE(h.ApplyOnly({"flushdb"}).ok()) << "failing move " << at;
  }
  for (const auto& k : keys) EXPECT_EQ(h.Stored(k), "v") << k;
  EXPECT_EQ(h.Run({"dbsize"}), ":20\r\n");
  h.faults().ClearFaults();
  EXPECT_TRUE(h.ApplyOnly({"flushdb"}).ok());
  for (const auto& k : keys) EXPECT_EQ(h.Stored(k), "<none>") << k;
  EXPECT_EQ(h.Run({"dbsize"}), ":0\r\n");
  EXPECT_EQ(h.Run({"hget", "k0", "f"}, 1), "$1\r\nv\r\n");
}

TEST(ReadFailures, ASortThatCannotReadItsSourceStoresNothingAndFails) {
  ShardHarness h("read_fail_sort", 0, storage::kSlotCount, /*faults=*/true);
  h.Run({"rpush", "{s}src", "c", "a", "b"});
  const std::vector<std::string> sort = {"sort", "{s}src", "alpha", "store", "{s}dst"};
  h.faults().FailNextIterators(1);  // the list's elements
  EXPECT_FALSE(h.ApplyOnly(sort).ok());
  h.faults().FailNextGets(1);  // the list's record
  EXPECT_FALSE(h.ApplyOnly(sort).ok());
  EXPECT_EQ(h.Run({"exists", "{s}dst"}), ":0\r\n");
  h.faults().ClearFaults();
  std::string reply;
  EXPECT_TRUE(h.ApplyOnly(sort, &reply).ok());
  EXPECT_EQ(reply, ":3\r\n");
  EXPECT_EQ(h.Run({"lrange", "{s}dst", "0", "-1"}), "*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n");
}

// A pop that stops on an element this apply staged must still have read
// what storage holds before it: ZADD then ZPOPMIN in one apply pops the
// stored minimum, or fails if it cannot be read (it popped the staged
// member, on this replica alone).
TEST(ReadFailures, APopStoppingOnAStagedElementFailsIfStorageWasNotRead) {
  ShardHarness h("read_fail_zpop", 0, storage::kSlotCount, /*faults=*/true);
  h.Run({"zadd", "{z}k", "1", "a", "2", "b"});
  h.Run({"rpush", "{z}l", "a", "b"});
  const std::vector<Entry> zset = {EntryOf({"zadd", "{z}k", "5", "x"}, h.now_ms), EntryOf({"zpopmin", "{z}k"}, h.now_ms)};
  const std::vector<Entry> list = {EntryOf({"rpush", "{z}l", "d"}, h.now_ms), EntryOf({"lpop", "{z}l"}, h.now_ms)};
  for (const auto* entries : {&zset, &list}) {
    std::vector<ApplyFn> fns;
    for (const Entry& e : *entries) fns.push_back(FindApply(e.op));
    std::string replies;
    resp::Writer w(&replies);
    h.faults().FailNextIterators(1);
    EXPECT_FALSE(h.shard().ApplyBatch(*entries, fns, Limits{}, &w).ok()) << replies;
    h.faults().ClearFaults();
    replies.clear();
    ASSERT_TRUE(h.shard().ApplyBatch(*entries, fns, Limits{}, &w).ok());
    EXPECT_EQ(replies, entries == &zset ? ":1\r\n*2\r\n$1\r\na\r\n$1\r\n1\r\n" : ":3\r\n$1\r\na\r\n");
  }
  EXPECT_EQ(h.Run({"zrange", "{z}k", "0", "-1"}), "*2\r\n$1\r\nb\r\n$1\r\nx\r\n");
  EXPECT_EQ(h.Run({"lrange", "{z}l", "0", "-1"}), "*2\r\n$1\r\nb\r\n$1\r\nd\r\n");
}

// A transaction's read walks the store under its staged writes; a seek
// that failed ends the walk with the error, not with the stored keys
// before the next staged one left out.
TEST(ReadFailures, ATransactionsWalkReportsAStoreReadThatFailed) {
  ShardHarness h("read_fail_overlay", 0, storage::kSlotCount, /*faults=*/true);
  h.Run({"rpush", "{t}l", "a", "b", "c"});
  auto batch = h.engine().NewBatch();
  ApplyTxn txn(&h.shard(), &h.engine(), batch.get(), h.now_ms);
  // Staged after the list's record and before its elements (same slot).
  ASSERT_TRUE(txn.Put(0, "{t}zz", EncodeValue(ValueType::kString, 0, "v")).ok());
  Status failed;
  auto view = txn.NewReadView(&failed);
  h.faults().FailNextIterators(1);
  auto it = view->NewIterator(storage::Cf::kData);
  std::vector<std::string> walked;
  for (it->SeekToFirst(); it->Valid(); it->Next()) walked.emplace_back(it->key());
  EXPECT_FALSE(it->status().ok());
  EXPECT_FALSE(failed.ok()) << "the view keeps the failure for the apply";
  EXPECT_TRUE(walked.empty()) << walked.size() << " keys walked past a failed seek";
}

// A stored value that does not decode is an error for MGET as for GET, not
// a missing key.
TEST(ReadFailures, MgetAnswersAValueThatDoesNotDecodeAsGetDoes) {
  ShardHarness h("read_fail_mget");
  h.Run({"set", "good", "v"});
  auto batch = h.engine().NewBatch();
  batch->Put(storage::Cf::kData, storage::DataKey(0, "bad"), std::string("\xff\xfe", 2));
  ASSERT_TRUE(h.engine().Write(*batch).ok());
  EXPECT_EQ(h.Run({"get", "bad"}), "-ERR storage error: corrupt value\r\n");
  EXPECT_EQ(h.Run({"mget", "good", "bad"}), "-ERR storage error: corrupt value\r\n");
  EXPECT_EQ(h.Run({"mget", "good", "none"}), "*2\r\n$1\r\nv\r\n$-1\r\n");
}

}  // namespace
}  // namespace shoal::kv

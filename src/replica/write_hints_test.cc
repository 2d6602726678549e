#include "replica/write_hints.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "kv/commands.h"
#include "replica/replica.h"
#include "storage/fault_engine.h"
#include "storage/keys.h"
#include "storage/slot.h"

namespace shoal::replica {
namespace {

// One shard on a real engine, written the way a replica applies its log.
class WriteHintsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("shoal_write_hints_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    engine_ = std::move(storage::Engine::Open({.dir = dir_.string(), .memory_budget_bytes = 64 << 20}).value());
    fault_ = std::make_unique<storage::FaultEngine>(engine_.get());
    OpenShard();
  }
  // A shard over the store as it is, with an empty key metadata cache (a
  // restart's).
  void OpenShard() {
    shard_.reset();
    shard_ = std::make_unique<kv::Shard>(fault_.get(), 0, 0, storage::kSlotCount);
    ASSERT_TRUE(shard_->Load().ok());
  }
  void TearDown() override {
    shard_.reset();
    fault_.reset();
    engine_.reset();
    std::filesystem::remove_all(dir_);
  }

  kv::Entry Prepare(std::vector<std::string> words, uint16_t db = 0) {
    std::vector<std::string_view> args(words.begin(), words.end());
    const kv::CommandSpec* spec = nullptr;
    for (const auto& s : kv::DataCommands()) {
      if (s.name == words[0]) spec = &s;
    }
    SHOAL_CHECK(spec != nullptr && spec->op != 0);
    kv::Entry e;
    e.op = spec->op;
    e.db = db;
    e.now_ms = now_ms_;
    std::string err;
    resp::Writer w(&err, 2);
    kv::PrepareContext ctx{db, now_ms_, &limits_};
    if (spec->prepare != nullptr) {
      SHOAL_CHECK(spec->prepare(ctx, args, &e, &w));
    } else {
      e.args.assign(words.begin() + 1, words.end());
    }
    return e;
  }
  std::string Batch(std::vector<std::vector<std::string>> commands) {
    std::vector<kv::Entry> entries;
    for (auto& c : commands) entries.push_back(Prepare(std::move(c)));
    return EncodeKvBatch(entries, 2);
  }
  static std::vector<kv::Entry> Decode(const std::string& data) {
    std::vector<kv::Entry> entries;
    int protocol = 0;
    SHOAL_CHECK(DecodeKvBatch(data, &entries, &protocol));
    return entries;
  }
  // Applies a log entry's batch as the next index; returns its replies.
  std::string Apply(const std::string& data) {
    std::vector<kv::Entry> entries = Decode(data);
    std::vector<kv::ApplyFn> fns;
    for (const auto& e : entries) fns.push_back(kv::FindApply(e.op));
    std::string out;
    resp::Writer w(&out, 2);
    EXPECT_TRUE(shard_->ApplyBatch(entries, fns, limits_, &w, shard_->applied_index() + 1).ok());
    return out;
  }
  // Annotates, appends (as the leader does) and returns the annotated batch.
  std::string Propose(WriteHints& hints, const std::string& data, uint64_t term, uint64_t index) {
    std::string out = hints.Annotate(data, term, index);
    hints.Appended(index, true);
    return out;
  }

  int64_t now_ms_ = 1'700'000'000'000;
  kv::Limits limits_;
  std::filesystem::path dir_;
  std::unique_ptr<storage::Engine> engine_;
  std::unique_ptr<storage::FaultEngine> fault_;  // over engine_
  std::unique_ptr<kv::Shard> shard_;
};

TEST_F(WriteHintsTest, TrailerRoundTripsAndGarbageIsRefused) {
  std::vector<kv::Entry> entries = {Prepare({"set", "a", "1"}), Prepare({"mset", "b", "2", "c", "3"})};
  entries[0].hints = {kv::KeyHint{0, true, 123}};
  entries[1].hints = {kv::KeyHint{0, false, 0}, kv::KeyHint{2, true, 0}};
  const std::string enc = EncodeKvBatch(entries, 3);
  std::vector<kv::Entry> out;
  int protocol = 0;
  ASSERT_TRUE(DecodeKvBatch(enc, &out, &protocol));
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].hints, entries[0].hints);
  EXPECT_EQ(out[1].hints, entries[1].hints);
  // Cut anywhere, it is refused, except right before the trailer: a batch
  // without hints.
  const size_t bare = EncodeKvBatch({Prepare({"set", "a", "1"}), Prepare({"mset", "b", "2", "c", "3"})}, 3).size();
  for (size_t cut = 0; cut < enc.size(); ++cut) {
    EXPECT_EQ(DecodeKvBatch(enc.substr(0, cut), &out, &protocol), cut == bare) << cut;
  }
  ASSERT_TRUE(DecodeKvBatch(enc.substr(0, bare), &out, &protocol));
  EXPECT_TRUE(out[0].hints.empty() && out[1].hints.empty());
  // A hint naming an entry or an argument that is not there.
  std::vector<kv::Entry> bad = {Prepare({"set", "a", "1"})};
  bad[0].hints = {kv::KeyHint{9, true, 0}};
  EXPECT_FALSE(DecodeKvBatch(EncodeKvBatch(bad, 2), &out, &protocol));
  std::string wrong_entry = EncodeKvBatch({Prepare({"set", "a", "1"})}, 2);
  AppendHintTrailer(std::vector<kv::Entry>{kv::Entry{}, entries[0]}, &wrong_entry);
  EXPECT_FALSE(DecodeKvBatch(wrong_entry, &out, &protocol));
  // Without hints the encoding is what builds without write hints read.
  EXPECT_EQ(EncodeKvBatch({Prepare({"set", "a", "1"})}, 2).find('H', 6), std::string::npos);
}

// Decoding into entries kept from an earlier batch (KvStateMachine::StageMany)
// gives what decoding into fresh ones gives: no argument, hint or field of
// the earlier batch is left over, and entries past the end stay kept.
TEST_F(WriteHintsTest, BatchesDecodeIntoKeptEntriesAsIntoFreshOnes) {
  std::vector<kv::Entry> first = {Prepare({"mset", "k1", std::string(300, 'a'), "k2", "b"}),
                                  Prepare({"set", "long key of the first batch", "v", "px", "100"}),
                                  Prepare({"set", "c", "3"})};
  first[0].hints = {kv::KeyHint{0, true, 77}};
  first[1].hints = {kv::KeyHint{0, false, 0}};
  std::vector<kv::Entry> second = {Prepare({"set", "x", "1"}), Prepare({"incr", "n"})};
  second[1].hints = {kv::KeyHint{0, true, 0}};
  const std::string enc1 = EncodeKvBatch(first, 2), enc2 = EncodeKvBatch(second, 3);

  std::vector<kv::Entry> kept;
  size_t used = 0, added = 0;
  int protocol = 0;
  ASSERT_TRUE(AppendKvBatch(enc1, &kept, &used, &protocol, &added));
  EXPECT_EQ(used, 3u);
  EXPECT_EQ(added, 3u);
  used = 0;
  ASSERT_TRUE(AppendKvBatch(enc2, &kept, &used, &protocol, &added));
  EXPECT_EQ(used, 2u);
  EXPECT_EQ(added, 2u);
  EXPECT_EQ(protocol, 3);
  EXPECT_EQ(kept.size(), 3u);  // the third is kept for a later batch
  std::vector<kv::Entry> fresh;
  ASSERT_TRUE(DecodeKvBatch(enc2, &fresh, &protocol));
  ASSERT_EQ(fresh.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(kept[i].op, fresh[i].op) << i;
    EXPECT_EQ(kept[i].db, fresh[i].db) << i;
    EXPECT_EQ(kept[i].now_ms, fresh[i].now_ms) << i;
    EXPECT_EQ(kept[i].args, fresh[i].args) << i;
    EXPECT_EQ(kept[i].hints, fresh[i].hints) << i;
    EXPECT_EQ(kept[i].args, second[i].args) << i;
  }
  // Appended after what is there: the first batch again, after the second.
  ASSERT_TRUE(AppendKvBatch(enc1, &kept, &used, &protocol, &added));
  EXPECT_EQ(used, 5u);
  EXPECT_EQ(added, 3u);
  EXPECT_EQ(kept[2].args, first[0].args);
  EXPECT_EQ(kept[2].hints, first[0].hints);
  EXPECT_EQ(kept[4].args, first[2].args);
  EXPECT_TRUE(kept[4].hints.empty());
}

TEST_F(WriteHintsTest, BlindWritesCarryTheCommittedStateOfTheirKeys) {
  Apply(Batch({{"set", "a", "old", "px", "100000"}, {"hset", "h", "f", "v"}}));  // index 1
  WriteHints hints(shard_.get());
  auto out = Decode(Propose(hints, Batch({{"set", "a", "x"},
                                          {"set", "b", "y"},
                                          {"set", "a", "z", "nx"},
                                          {"set", "h", "s"},
                                          {"mset", "c", "1", "a", "2", "d", "3"},
                                          {"setex", "e", "10", "v"}}),
                            1, 2));
  ASSERT_EQ(out.size(), 6u);
  EXPECT_EQ(out[0].hints, (std::vector<kv::KeyHint>{{0, true, now_ms_ + 100000}}));
  EXPECT_EQ(out[1].hints, (std::vector<kv::KeyHint>{{0, false, 0}}));
  EXPECT_TRUE(out[2].hints.empty());  // not blind, and its key is written before it in the batch
  EXPECT_TRUE(out[3].hints.empty());  // a hash: replacing it must find its fields
  EXPECT_EQ(out[4].hints, (std::vector<kv::KeyHint>{{0, false, 0}, {4, false, 0}}));  // a: written before
  EXPECT_EQ(out[5].hints, (std::vector<kv::KeyHint>{{0, false, 0}}));
}

TEST_F(WriteHintsTest, AProposalReadsTheKeysTheCacheLacksTogether) {
  Apply(Batch({{"set", "a", "old", "px", "100000"}, {"set", "b", "old"}, {"hset", "h", "f", "v"}}));  // index 1
  OpenShard();  // nothing cached
  WriteHints hints(shard_.get());
  uint64_t calls = fault_->read_calls(), keys = fault_->keys_read();
  auto out = Decode(Propose(hints,
                            Batch({{"set", "a", "x"},
                                   {"set", "h", "s"},
                                   {"mset", "c", "1", "b", "2", "d", "3"},
                                   {"set", "c", "3"},
                                   {"setex", "e", "10", "v"},
                                   {"set", "a", "y", "nx"}}),
                            1, 2));
  // One read for the six keys the cache lacked, c once though named twice
  // (its second write has no hint: c is written before it in the batch).
  EXPECT_EQ(fault_->read_calls() - calls, 1u);
  EXPECT_EQ(fault_->keys_read() - keys, 6u);  // a, h, c, b, d, e
  ASSERT_EQ(out.size(), 6u);
  EXPECT_EQ(out[0].hints, (std::vector<kv::KeyHint>{{0, true, now_ms_ + 100000}}));
  EXPECT_TRUE(out[1].hints.empty());  // a hash
  EXPECT_EQ(out[2].hints, (std::vector<kv::KeyHint>{{0, false, 0}, {2, true, 0}, {4, false, 0}}));
  EXPECT_TRUE(out[3].hints.empty());
  EXPECT_EQ(out[4].hints, (std::vector<kv::KeyHint>{{0, false, 0}}));
  EXPECT_TRUE(out[5].hints.empty());  // not blind
  // What was read is cached.
  calls = fault_->read_calls();
  for (const char* key : {"a", "b", "c", "d", "e", "h"}) EXPECT_TRUE(shard_->CommittedMeta(0, key).has_value());
  EXPECT_EQ(fault_->read_calls(), calls);
  EXPECT_TRUE(shard_->CommittedMeta(0, "h")->collection);
}

TEST_F(WriteHintsTest, ALargeProposalIsReadInOneGoToo) {
  std::vector<std::vector<std::string>> sets;
  for (int i = 0; i < 300; ++i) sets.push_back({"set", "k" + std::to_string(i), "v"});
  WriteHints hints(shard_.get());
  const uint64_t calls = fault_->read_calls(), keys = fault_->keys_read();
  auto out = Decode(Propose(hints, Batch(sets), 1, 1));
  EXPECT_EQ(fault_->read_calls() - calls, 1u);
  EXPECT_EQ(fault_->keys_read() - keys, 300u);
  ASSERT_EQ(out.size(), 300u);
  for (const auto& e : out) EXPECT_EQ(e.hints, (std::vector<kv::KeyHint>{{0, false, 0}}));
}

TEST_F(WriteHintsTest, AKeyThatCannotBeReadGetsNoHintAndIsReadAgainLater) {
  Apply(Batch({{"set", "f", "old", "px", "100000"}}));  // index 1
  OpenShard();
  fault_->FailReadsOf(storage::Cf::kData, storage::DataKey(0, "f"));
  WriteHints hints(shard_.get());
  auto out = Decode(hints.Annotate(Batch({{"set", "f", "1"}, {"set", "g", "1"}}), 1, 2));
  hints.Appended(2, false);
  EXPECT_TRUE(out[0].hints.empty());  // unknown: the followers read it themselves
  EXPECT_EQ(out[1].hints, (std::vector<kv::KeyHint>{{0, false, 0}}));
  fault_->ClearFaults();
  const uint64_t calls = fault_->read_calls();
  out = Decode(hints.Annotate(Batch({{"set", "f", "2"}, {"set", "g", "2"}}), 1, 2));
  hints.Appended(2, false);
  EXPECT_EQ(fault_->read_calls() - calls, 1u);  // f, not cached after its failure; g is
  EXPECT_EQ(out[0].hints, (std::vector<kv::KeyHint>{{0, true, now_ms_ + 100000}}));
  EXPECT_EQ(out[1].hints, (std::vector<kv::KeyHint>{{0, false, 0}}));
}

TEST_F(WriteHintsTest, KeysWithWritesInFlightGetNoHintUntilTheyApply) {
  Apply(Batch({{"set", "a", "1"}}));  // index 1
  WriteHints hints(shard_.get());
  const std::string second = Propose(hints, Batch({{"set", "a", "2"}}), 1, 2);
  EXPECT_EQ(Decode(second)[0].hints.size(), 1u);
  const std::string third = Propose(hints, Batch({{"set", "a", "3"}, {"incr", "c"}, {"set", "c", "3"}}), 1, 3);
  auto out = Decode(third);
  EXPECT_EQ(out[0].hints, (std::vector<kv::KeyHint>{{0, true, 0}}));  // what entry 2, in flight, leaves
  EXPECT_TRUE(out[2].hints.empty());  // INCR before it in the batch
  const std::string fourth = Propose(hints, Batch({{"set", "c", "4"}, {"set", "d", "4"}}), 1, 4);
  // Entry 3 leaves c as its last write there, the blind SET, does.
  EXPECT_EQ(Decode(fourth)[0].hints, (std::vector<kv::KeyHint>{{0, true, 0}}));
  EXPECT_EQ(hints.tracked(), 3u);
  const std::string fifth = Propose(hints, Batch({{"incr", "d"}}), 1, 5);
  const std::string sixth = Propose(hints, Batch({{"set", "d", "6"}}), 1, 6);
  EXPECT_TRUE(Decode(sixth)[0].hints.empty());  // INCR's outcome is not known
  // Any argument of another command counts as a key it may write.
  Propose(hints, Batch({{"rename", "x", "y"}}), 1, 7);
  auto renamed = Decode(hints.Annotate(Batch({{"set", "y", "1"}, {"set", "x", "1"}}), 1, 8));
  hints.Appended(8, false);  // not appended: not tracked
  EXPECT_TRUE(renamed[0].hints.empty());
  EXPECT_TRUE(renamed[1].hints.empty());
  for (const auto* data : {&second, &third, &fourth, &fifth, &sixth}) Apply(*data);
  auto later = Decode(hints.Annotate(Batch({{"set", "d", "8"}, {"set", "y", "8"}}), 1, 8));
  hints.Appended(8, false);
  EXPECT_EQ(later[0].hints, (std::vector<kv::KeyHint>{{0, true, 0}}));  // applied: read
  EXPECT_TRUE(later[1].hints.empty());  // RENAME (7) not applied yet
  EXPECT_EQ(hints.tracked(), 1u);
}

TEST_F(WriteHintsTest, AHotKeyIsHintedWithWhatItsLastWriteInFlightLeaves) {
  Apply(Batch({{"set", "a", "1"}}));  // index 1
  WriteHints hints(shard_.get());
  const std::string past = std::to_string(now_ms_ - 1);
  std::vector<std::string> log;
  log.push_back(Propose(hints, Batch({{"set", "a", "2", "px", "100000"}}), 1, 2));
  log.push_back(Propose(hints, Batch({{"set", "a", "3"}}), 1, 3));
  log.push_back(Propose(hints, Batch({{"set", "a", "4", "pxat", past}}), 1, 4));  // gone at once
  log.push_back(Propose(hints, Batch({{"mset", "a", "5", "b", "5"}}), 1, 5));
  log.push_back(Propose(hints, Batch({{"set", "a", "6", "nx"}}), 1, 6));  // reads first: outcome unknown
  log.push_back(Propose(hints, Batch({{"set", "a", "7"}}), 1, 7));
  EXPECT_EQ(Decode(log[0])[0].hints, (std::vector<kv::KeyHint>{{0, true, 0}}));
  EXPECT_EQ(Decode(log[1])[0].hints, (std::vector<kv::KeyHint>{{0, true, now_ms_ + 100000}}));
  EXPECT_EQ(Decode(log[2])[0].hints, (std::vector<kv::KeyHint>{{0, true, 0}}));
  EXPECT_EQ(Decode(log[3])[0].hints, (std::vector<kv::KeyHint>{{0, false, 0}, {2, false, 0}}));
  EXPECT_TRUE(Decode(log[4])[0].hints.empty());
  EXPECT_TRUE(Decode(log[5])[0].hints.empty());
  for (const auto& data : log) Apply(data);
  // Applied on those hints, the counters match what the keys hold.
  EXPECT_EQ(shard_->KeyCount(0), 2);
  EXPECT_EQ(shard_->ExpiresCount(0), 0);
  auto it = engine_->NewScanIterator(storage::Cf::kExpiry);
  it->SeekToFirst();
  EXPECT_FALSE(it->Valid());
  EXPECT_GE(shard_->hinted_puts(), 4u);
  EXPECT_EQ(hints.tracked(), 6u);  // pruned at the next proposal
  hints.Annotate(Batch({{"set", "z", "1"}}), 1, 8);
  EXPECT_EQ(hints.tracked(), 0u);
}

TEST_F(WriteHintsTest, AnEntryWithUnnamedKeysStopsEveryHintUntilItApplies) {
  Apply(Batch({{"set", "a", "1"}}));  // index 1
  WriteHints hints(shard_.get());
  const std::string flush = Propose(hints, Batch({{"flushdb"}}), 1, 2);
  const std::string third = Propose(hints, Batch({{"set", "a", "2"}, {"set", "z", "2"}}), 1, 3);
  EXPECT_TRUE(Decode(third)[0].hints.empty());
  EXPECT_TRUE(Decode(third)[1].hints.empty());
  Apply(flush);
  Apply(third);
  // Not a kv batch at all (a split): the same.
  Propose(hints, "split of the shard", 1, 4);
  const std::string fifth = Propose(hints, Batch({{"set", "q", "1"}}), 1, 5);
  EXPECT_TRUE(Decode(fifth)[0].hints.empty());
  auto batch = engine_->NewBatch();
  shard_->StageApplied(4, *batch);  // the split entry applies (as an entry that changes no data here)
  ASSERT_TRUE(engine_->Write(*batch).ok());
  Apply(fifth);
  auto after = Decode(hints.Annotate(Batch({{"set", "a", "3"}}), 1, 6));
  EXPECT_EQ(after[0].hints, (std::vector<kv::KeyHint>{{0, true, 0}}));  // FLUSHDB ran, then SET a 2
}

TEST_F(WriteHintsTest, ANewLeaderHintsOnlyOnceTheEarlierTermsAreApplied) {
  Apply(Batch({{"set", "a", "1"}}));  // index 1; entries 2 and 3 came from an older leader
  WriteHints hints(shard_.get());
  auto early = Decode(Propose(hints, Batch({{"set", "b", "1"}}), 2, 4));
  EXPECT_TRUE(early[0].hints.empty());
  Apply(Batch({{"set", "b", "0"}}));  // 2
  Apply(Batch({{"set", "c", "0"}}));  // 3
  auto still = Decode(Propose(hints, Batch({{"set", "c", "1"}}), 2, 5));
  EXPECT_EQ(still[0].hints, (std::vector<kv::KeyHint>{{0, true, 0}}));  // 3 applied; 4 wrote b, not c
  // A later term starts over: nothing it tracked is trusted.
  auto next_term = Decode(Propose(hints, Batch({{"set", "d", "1"}}), 3, 9));
  EXPECT_TRUE(next_term[0].hints.empty());
  EXPECT_EQ(hints.tracked(), 1u);
}

TEST_F(WriteHintsTest, ApplyTrustsTheHintAndReadsNothing) {
  // A hint that disagrees with storage shows that apply took it: every
  // replica gets the same hint, so they all count alike.
  std::vector<kv::Entry> entries = {Prepare({"set", "k", "v"})};
  entries[0].hints = {kv::KeyHint{0, true, 0}};
  Apply(EncodeKvBatch(entries, 2));
  EXPECT_EQ(shard_->KeyCount(0), 0);  // "existed": not counted again
  EXPECT_EQ(shard_->hinted_puts(), 1u);
  // A true hint gives what a read would.
  entries = {Prepare({"set", "n", "v", "px", "5000"})};
  entries[0].hints = {kv::KeyHint{0, false, 0}};
  Apply(EncodeKvBatch(entries, 2));
  EXPECT_EQ(shard_->KeyCount(0), 1);
  EXPECT_EQ(shard_->ExpiresCount(0), 1);
  entries = {Prepare({"set", "n", "w"})};
  entries[0].hints = {kv::KeyHint{0, true, now_ms_ + 5000}};
  Apply(EncodeKvBatch(entries, 2));
  EXPECT_EQ(shard_->KeyCount(0), 1);
  EXPECT_EQ(shard_->ExpiresCount(0), 0);
  auto it = engine_->NewScanIterator(storage::Cf::kExpiry);
  it->SeekToFirst();
  EXPECT_FALSE(it->Valid());  // the old expiry's index entry went with it
  EXPECT_EQ(shard_->hinted_puts(), 3u);
}

TEST_F(WriteHintsTest, FollowersKeepNoKeyMetadataWhileHintsRun) {
  KvStateMachine sm(shard_.get(), &limits_);
  sm.LeadershipChanged(false);
  Apply(Batch({{"set", "a", "1"}}));
  EXPECT_EQ(shard_->meta_cache_size(), 0u);
  sm.LeadershipChanged(true);
  Apply(Batch({{"set", "b", "1"}}));
  EXPECT_EQ(shard_->meta_cache_size(), 1u);
  const std::atomic<bool> hints_on{false};
  KvStateMachine off(shard_.get(), &limits_, &hints_on);
  off.LeadershipChanged(false);
  EXPECT_EQ(shard_->meta_cache_size(), 1u);  // without hints followers need it
  EXPECT_EQ(off.Annotate("data", 1, 2), "data");
}

}  // namespace
}  // namespace shoal::replica

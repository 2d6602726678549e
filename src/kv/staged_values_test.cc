#include "kv/staged_values.h"

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <string>
#include <vector>

namespace shoal::kv {
namespace {

TEST(StagedValuesTest, FindsWhatItMadeAndKeepsItsAddress) {
  StagedValues v;
  EXPECT_EQ(v.Find("a"), nullptr);
  bool made = false;
  StagedValues::Item* a = v.Emplace("a", &made);
  EXPECT_TRUE(made);
  EXPECT_FALSE(a->raw.has_value());
  a->raw = "1";
  // Many more: the table grows and blocks are added; `a` stays put.
  for (int i = 0; i < 1000; ++i) v.Emplace("k" + std::to_string(i))->raw = std::to_string(i);
  EXPECT_EQ(v.Find("a"), a);
  EXPECT_EQ(*a->raw, "1");
  EXPECT_EQ(v.Emplace("a", &made), a);
  EXPECT_FALSE(made);
  EXPECT_EQ(v.size(), 1001u);
  ASSERT_NE(v.Find("k999"), nullptr);
  EXPECT_EQ(*v.Find("k999")->raw, "999");
  EXPECT_EQ(v.Find("k1000"), nullptr);
  // Keys that are prefixes of others, an empty key, a long key, bytes 0 and 0xff.
  v.Emplace("");
  v.Emplace(std::string(10000, 'x'))->raw = "long";
  v.Emplace(std::string("\0\xff", 2))->raw = "bytes";
  EXPECT_NE(v.Find(""), nullptr);
  EXPECT_EQ(*v.Find(std::string(10000, 'x'))->raw, "long");
  EXPECT_EQ(v.Find(std::string(9999, 'x')), nullptr);
  EXPECT_EQ(*v.Find(std::string("\0\xff", 2))->raw, "bytes");
  EXPECT_EQ(v.Find(std::string("\0", 1)), nullptr);
}

TEST(StagedValuesTest, ForEachGoesInTheOrderItemsWereMade) {
  StagedValues v;
  for (const char* k : {"c", "a", "b", "a"}) v.Emplace(k);
  std::string seen;
  v.ForEach([&](const StagedValues::Item& item) { seen += item.key; });
  EXPECT_EQ(seen, "cab");
}

// After and Before against std::map's bounds, over random keys and targets,
// with inserts between queries (the order is rebuilt), and after Clear.
TEST(StagedValuesTest, OrderedQueriesAgreeWithAMap) {
  std::mt19937 rng(7);
  StagedValues v;
  for (int round = 0; round < 3; ++round) {
    std::map<std::string, int> m;
    auto key = [&] {
      std::string k(1 + rng() % 4, 'a');
      for (char& c : k) c = static_cast<char>(rng() % 2 == 0 ? 'a' + rng() % 3 : 0xfe + rng() % 2);
      return k;
    };
    for (int step = 0; step < 400; ++step) {
      std::string k = key();
      v.Emplace(k)->raw = k;
      m.emplace(k, 0);
      for (int q = 0; q < 3; ++q) {
        std::string t = key();
        for (bool strict : {false, true}) {
          auto after = strict ? m.upper_bound(t) : m.lower_bound(t);
          const StagedValues::Item* a = v.After(t, strict);
          if (after == m.end()) {
            EXPECT_EQ(a, nullptr);
          } else {
            ASSERT_NE(a, nullptr);
            EXPECT_EQ(a->key, after->first);
          }
          auto before = strict ? m.lower_bound(t) : m.upper_bound(t);
          const StagedValues::Item* b = v.Before(t, strict);
          if (before == m.begin()) {
            EXPECT_EQ(b, nullptr);
          } else {
            ASSERT_NE(b, nullptr);
            EXPECT_EQ(b->key, std::prev(before)->first);
            EXPECT_EQ(*b->raw, b->key);
          }
        }
      }
    }
    EXPECT_EQ(v.size(), m.size());
    v.Clear();
    EXPECT_TRUE(v.empty());
    EXPECT_EQ(v.After("", false), nullptr);
    EXPECT_EQ(v.Before("\xff\xff\xff\xff\xff", false), nullptr);
    for (const auto& [k, unused] : m) EXPECT_EQ(v.Find(k), nullptr);
  }
}

// Whatever was staged, Clear forgets it all, and new items are whole.
TEST(StagedValuesTest, ClearForgetsEverythingWhateverItsSize) {
  StagedValues v;
  for (int n : {3, 5000, 70, 0, 300}) {
    for (int i = 0; i < n; ++i) v.Emplace("key:" + std::to_string(i) + std::string(i % 50, 'p'))->raw = "v";
    EXPECT_EQ(v.size(), static_cast<size_t>(n));
    if (n > 0) {
      ASSERT_NE(v.Find("key:0"), nullptr);
      EXPECT_EQ(*v.Find("key:0")->raw, "v");
    }
    v.Clear();
    EXPECT_EQ(v.Find("key:0"), nullptr);
    EXPECT_FALSE(v.Emplace("key:1")->raw.has_value());
    v.Clear();
  }
}

// Few items with many key bytes, over several arena chunks and Clears: the
// keys stay whole, and so do those made after a key longer than a chunk.
TEST(StagedValuesTest, KeysStayWholeAcrossChunksAndClears) {
  StagedValues v;
  for (int round = 0; round < 3; ++round) {
    std::vector<std::string> keys;
    for (int i = 0; i < 40; ++i) keys.push_back(std::string(300 + round + i, static_cast<char>('a' + i % 26)) + std::to_string(i));
    keys.push_back(std::string(9000, 'z'));
    keys.push_back("after-the-long-one");
    for (const std::string& k : keys) v.Emplace(k)->raw = k.substr(0, 3);
    for (const std::string& k : keys) {
      const StagedValues::Item* item = v.Find(k);
      ASSERT_NE(item, nullptr);
      EXPECT_EQ(item->key, k);
      EXPECT_EQ(*item->raw, k.substr(0, 3));
    }
    v.Clear();
    for (const std::string& k : keys) EXPECT_EQ(v.Find(k), nullptr);
  }
}

}  // namespace
}  // namespace shoal::kv

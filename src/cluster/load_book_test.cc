#include "cluster/load_book.h"

#include <gtest/gtest.h>

#include <cmath>

namespace shoal::cluster {
namespace {

constexpr int64_t kSec = 1'000'000;

LoadBook::Report Rep(uint64_t leader, uint64_t term, uint32_t begin, uint32_t end, bool measured, uint64_t bytes,
                     uint64_t ops) {
  return LoadBook::Report{leader, term, begin, end, measured, bytes, ops};
}

TEST(LoadBook, NothingKnownUntilALeaderHasMeasured) {
  LoadBook book;
  auto r = Rep(1, 5, 0, 16384, false, 0, 0);
  EXPECT_FALSE(book.Observe(7, &r, 0).known);
  EXPECT_FALSE(book.Observe(7, nullptr, kSec / 2).known);
  r = Rep(1, 5, 0, 16384, true, 1000, 40);
  auto e = book.Observe(7, &r, kSec);
  EXPECT_TRUE(e.known);
  EXPECT_EQ(e.bytes, 1000u);
  EXPECT_EQ(e.ops_per_sec, 40u);
  // No leader for a moment: the last figures stand.
  e = book.Observe(7, nullptr, 2 * kSec);
  EXPECT_TRUE(e.known);
  EXPECT_EQ(e.bytes, 1000u);
}

// The new leader measures from zero; the sum of its growing figure and the
// old one fading stays at the steady rate, and the size is kept.
TEST(LoadBook, ALeaderChangeKeepsTheFigures) {
  LoadBook book;
  auto a = Rep(1, 5, 0, 8192, true, 1 << 30, 5000);
  book.Observe(3, &a, 0);
  auto b = Rep(2, 6, 0, 8192, false, 0, 0);  // just elected: nothing measured
  auto e = book.Observe(3, &b, kSec / 10);
  EXPECT_TRUE(e.known);
  EXPECT_EQ(e.bytes, 1u << 30);
  EXPECT_NEAR(static_cast<double>(e.ops_per_sec), 5000, 10);
  for (int s = 1; s <= 60; ++s) {
    const double t = s;  // seconds since the change
    const double grown = 5000 * (1 - std::exp(-t / LoadBook::kLoadMemorySecs));
    b = Rep(2, 6, 0, 8192, true, 1 << 30, static_cast<uint64_t>(grown));
    e = book.Observe(3, &b, kSec / 10 + s * kSec);
    EXPECT_NEAR(static_cast<double>(e.ops_per_sec), 5000, 5000 * 0.02) << s << " s";
  }
}

// Reported late, the new leader's figure has already grown: the sum never
// goes above the larger of the two figures (no inflation under flapping).
TEST(LoadBook, FlappingLeadersDoNotInflateTheLoad) {
  LoadBook book;
  auto r = Rep(1, 1, 0, 100, true, 100, 5000);
  book.Observe(9, &r, 0);
  int64_t now = 0;
  for (uint64_t term = 2; term < 40; ++term) {
    now += kSec;
    r = Rep(term % 2 + 1, term, 0, 100, true, 100, 5000 * 4 / 10);  // a second of growth
    auto e = book.Observe(9, &r, now);
    EXPECT_LE(e.ops_per_sec, 5000u) << term;
    EXPECT_GE(e.ops_per_sec, 2000u) << term;
  }
}

TEST(LoadBook, SplitHalvesStartWithHalfTheParent) {
  LoadBook book;
  auto p = Rep(1, 3, 0, 16384, true, 1000, 8000);
  book.Observe(1, &p, 0);
  // The parent shrinks first (its leader has not measured the new range)...
  p = Rep(1, 3, 0, 8192, false, 0, 0);
  auto e = book.Observe(1, &p, kSec);
  EXPECT_TRUE(e.known);
  EXPECT_EQ(e.bytes, 500u);
  EXPECT_NEAR(static_cast<double>(e.ops_per_sec), 4000, 500);
  // ...then the child appears.
  auto c = Rep(2, 1, 8192, 16384, false, 0, 0);
  e = book.Observe(2, &c, kSec);
  EXPECT_TRUE(e.known);
  EXPECT_EQ(e.bytes, 500u);
  EXPECT_NEAR(static_cast<double>(e.ops_per_sec), 4000, 500);
  // The other order: a child seen before its parent's report shrinks.
  LoadBook other;
  p = Rep(1, 3, 0, 16384, true, 1000, 8000);
  other.Observe(1, &p, 0);
  e = other.Observe(2, &c, kSec);
  EXPECT_TRUE(e.known);
  EXPECT_EQ(e.bytes, 500u);
  // An unrelated new shard learns nothing from it.
  auto u = Rep(3, 1, 20000, 30000, false, 0, 0);
  EXPECT_FALSE(other.Observe(3, &u, kSec).known);
}

// A figure not refreshed for a while is forgotten rather than carried onto
// a later leader (it would count twice).
TEST(LoadBook, StaleFiguresAreForgotten) {
  LoadBook book;
  auto a = Rep(1, 5, 0, 100, true, 100, 5000);
  book.Observe(4, &a, 0);
  book.Forget(LoadBook::kForgetUs + 1);
  EXPECT_EQ(book.size(), 0u);
  auto b = Rep(2, 6, 0, 100, true, 100, 5000);
  book.Observe(4, &a, 0);
  auto e = book.Observe(4, &b, LoadBook::kForgetUs + kSec);  // not seen since: no carry
  EXPECT_EQ(e.ops_per_sec, 5000u);
  EXPECT_FALSE(book.Observe(5, nullptr, 0).known);
}

// Figures within kDeadBand of those in use leave them in use: the planner
// sees the same weights round after round.
TEST(LoadBook, SmallChangesLeaveTheFiguresAsTheyAre) {
  LoadBook book;
  auto r = Rep(1, 1, 0, 100, true, 1000, 1000);
  book.Observe(1, &r, 0);
  r = Rep(1, 1, 0, 100, true, 1150, 850);  // +-15%
  auto e = book.Observe(1, &r, kSec);
  EXPECT_EQ(e.bytes, 1000u);
  EXPECT_EQ(e.ops_per_sec, 1000u);
  r = Rep(1, 1, 0, 100, true, 1300, 700);  // +-30%
  e = book.Observe(1, &r, 2 * kSec);
  EXPECT_EQ(e.bytes, 1300u);
  EXPECT_EQ(e.ops_per_sec, 700u);
}

// A split of a split: the new child takes half of its closest parent, not
// of the first shard it ever split from.
TEST(LoadBook, ASplitsChildTakesHalfItsClosestParent) {
  LoadBook book;
  auto p = Rep(1, 1, 0, 16384, true, 1000, 1000);
  book.Observe(1, &p, 0);
  p = Rep(1, 1, 0, 8192, true, 500, 500);
  book.Observe(1, &p, kSec);
  auto c1 = Rep(2, 1, 8192, 16384, true, 8000, 40000);  // grew hot
  book.Observe(2, &c1, 2 * kSec);
  c1 = Rep(2, 1, 8192, 12288, false, 0, 0);
  book.Observe(2, &c1, 3 * kSec);
  auto c3 = Rep(3, 1, 12288, 16384, false, 0, 0);
  auto e = book.Observe(3, &c3, 3 * kSec);
  EXPECT_TRUE(e.known);
  EXPECT_EQ(e.bytes, 4000u);
  EXPECT_NEAR(static_cast<double>(e.ops_per_sec), 20000, 1000);
}

// A new leader that has not applied the split yet reports the range before
// it; its figures are not taken, and the shard's are kept.
TEST(LoadBook, ALeaderBehindASplitDoesNotResetTheFigures) {
  LoadBook book;
  auto a = Rep(1, 1, 0, 8192, true, 500, 10000);
  book.Observe(1, &a, 0);
  auto b = Rep(2, 2, 0, 16384, true, 1000, 0);
  auto e = book.Observe(1, &b, kSec);
  EXPECT_TRUE(e.known);
  EXPECT_EQ(e.bytes, 500u);
  EXPECT_NEAR(static_cast<double>(e.ops_per_sec), 10000, 2000);
  b = Rep(2, 2, 0, 8192, true, 500, 9000);  // applied now
  e = book.Observe(1, &b, 2 * kSec);
  EXPECT_EQ(e.bytes, 500u);
  EXPECT_NEAR(static_cast<double>(e.ops_per_sec), 10000, 2000);
  // A report without a range (an older node) changes nothing either.
  auto old = Rep(3, 3, 0, 0, false, 0, 0);
  e = book.Observe(1, &old, 3 * kSec);
  EXPECT_EQ(e.bytes, 500u);
}

// A leader that measures nothing for a long while (one of an older
// version): its shard is unknown, weighing the mean, rather than idle.
TEST(LoadBook, NothingMeasuredForLongIsUnknown) {
  LoadBook book;
  auto a = Rep(1, 1, 0, 100, true, 500, 10000);
  book.Observe(1, &a, 0);
  auto b = Rep(2, 2, 0, 100, false, 0, 0);
  for (int64_t t = kSec; t <= 2 * LoadBook::kForgetUs; t += kSec) EXPECT_TRUE(book.Observe(1, &b, t).known) << t;
  EXPECT_FALSE(book.Observe(1, &b, 2 * LoadBook::kForgetUs + kSec).known);
}

}  // namespace
}  // namespace shoal::cluster

#include "sim/linearizability.h"

#include <gtest/gtest.h>

namespace shoal::sim {
namespace {

Operation put(uint64_t id, const std::string& v, uint64_t inv, uint64_t resp, const std::string& key = "k") {
  return Operation{id, true, key, v, inv, resp};
}
Operation get(uint64_t id, const std::string& v, uint64_t inv, uint64_t resp, const std::string& key = "k") {
  return Operation{id, false, key, v, inv, resp};
}

TEST(LinearizabilityTest, SequentialHistoryIsLinearizable) {
  EXPECT_TRUE(check_linearizable({put(1, "x", 1, 2), get(2, "x", 3, 4), put(3, "y", 5, 6), get(4, "y", 7, 8)}).ok);
}

TEST(LinearizabilityTest, StaleReadIsNot) {
  // The read starts after the second write finished but sees the first.
  auto r = check_linearizable({put(1, "x", 1, 2), put(2, "y", 3, 4), get(3, "x", 5, 6)});
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.key, "k");
}

TEST(LinearizabilityTest, ConcurrentOperationsMayReorder) {
  EXPECT_TRUE(check_linearizable({put(1, "x", 1, 10), get(2, "x", 2, 3), get(3, "", 4, 5)}).ok == false);
  EXPECT_TRUE(check_linearizable({put(1, "x", 1, 10), get(2, "", 2, 3), get(3, "x", 4, 5)}).ok);
}

TEST(LinearizabilityTest, ReadsCannotGoBackInTime) {
  // Two reads during one write: once one sees it, a later one must too.
  EXPECT_FALSE(check_linearizable({put(1, "x", 1, 10), get(2, "x", 2, 3), get(3, "", 4, 5)}).ok);
}

TEST(LinearizabilityTest, UnknownWriteMayOrMayNotApply) {
  EXPECT_TRUE(check_linearizable({put(1, "x", 1, kNeverReturned), get(2, "", 2, 3)}).ok);
  EXPECT_TRUE(check_linearizable({put(1, "x", 1, kNeverReturned), get(2, "x", 2, 3)}).ok);
  EXPECT_FALSE(check_linearizable({put(1, "x", 4, kNeverReturned), get(2, "x", 2, 3)}).ok);
}

TEST(LinearizabilityTest, KeysAreIndependent) {
  EXPECT_TRUE(check_linearizable({put(1, "x", 1, 2, "a"), get(2, "", 3, 4, "b"), get(3, "x", 5, 6, "a")}).ok);
  EXPECT_FALSE(check_linearizable({put(1, "x", 1, 2, "a"), get(2, "x", 3, 4, "b")}).ok);
}

}  // namespace
}  // namespace shoal::sim

#include "resp/writer.h"

#include <gtest/gtest.h>

namespace shoal::resp {
namespace {

TEST(Writer, Resp2) {
  std::string out;
  Writer w(&out, 2);
  w.Simple("OK");
  w.Error("ERR bad\r\nthing");
  w.Integer(-42);
  w.Bulk("hi");
  w.NullBulk();
  w.NullArray();
  w.MapHeader(1);
  w.Bool(true);
  w.Double(1.5);
  EXPECT_EQ(out, "+OK\r\n-ERR bad  thing\r\n:-42\r\n$2\r\nhi\r\n$-1\r\n*-1\r\n*2\r\n:1\r\n$3\r\n1.5\r\n");
}

TEST(Writer, Resp3) {
  std::string out;
  Writer w(&out, 3);
  w.NullBulk();
  w.MapHeader(2);
  w.SetHeader(3);
  w.Bool(false);
  w.Double(2.0);
  w.Verbatim("abc");
  EXPECT_EQ(out, "_\r\n%2\r\n~3\r\n#f\r\n,2\r\n=7\r\ntxt:abc\r\n");
}

}  // namespace
}  // namespace shoal::resp

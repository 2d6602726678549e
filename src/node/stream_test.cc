#include "node/stream.h"

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace shoal::node {
namespace {

TEST(Stream, TlsContextNamesTheFileItCannotUse) {
  auto missing = MakeTlsContext({.cert_file = "/nonexistent/node.crt", .key_file = "/nonexistent/node.key"});
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("tls-cert-file /nonexistent/node.crt: no such file"), std::string::npos);
  auto none = MakeTlsContext({});
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("tls-cert-file and tls-key-file"), std::string::npos);
  auto garbage = std::filesystem::temp_directory_path() / ("garbage" + std::to_string(::getpid()) + ".crt");
  std::ofstream(garbage) << "not a certificate\n";
  auto bad = MakeTlsContext({.cert_file = garbage.string(), .key_file = garbage.string()});
  std::filesystem::remove(garbage);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("tls-cert-file " + garbage.string() + ": "), std::string::npos);
}

// Plain streams over a loopback TCP pair: lines, ReadNow, and the end.
TEST(Stream, PlainReadLineAndReadNow) {
  asio::io_context io;
  asio::ip::tcp::acceptor acceptor(io, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  asio::ip::tcp::socket a(io), b(io);
  a.connect(acceptor.local_endpoint());
  acceptor.accept(b);
  Stream left(std::move(a)), right(std::move(b));
  EXPECT_FALSE(left.tls());
  std::vector<std::string> lines;
  bool done = false;
  asio::co_spawn(io, [&]() -> asio::awaitable<void> {
    auto [wec, wn] = co_await left.Write(asio::buffer(std::string_view("+one\r\n+tw")));
    EXPECT_FALSE(wec);
    std::string pending, line;
    bool got = co_await right.ReadLine(&pending, &line);
    EXPECT_TRUE(got);
    lines.push_back(line);
    co_await left.Write(asio::buffer(std::string_view("o\r\n")));
    got = co_await right.ReadLine(&pending, &line);
    EXPECT_TRUE(got);
    lines.push_back(line);
    // Nothing has arrived: ReadNow says so without waiting or failing.
    char buf[16];
    asio::error_code ec;
    EXPECT_EQ(right.ReadNow(asio::buffer(buf), ec), 0u);
    EXPECT_FALSE(ec);
    left.Close();
    asio::steady_timer t(io, std::chrono::milliseconds(50));
    co_await t.async_wait(asio::use_awaitable);
    EXPECT_EQ(right.ReadNow(asio::buffer(buf), ec), 0u);
    EXPECT_EQ(ec, asio::error::eof);
    done = true;
  }, asio::detached);
  io.run_for(std::chrono::seconds(5));
  EXPECT_TRUE(done);
  EXPECT_EQ(lines, (std::vector<std::string>{"+one", "+two"}));
}

}  // namespace
}  // namespace shoal::node

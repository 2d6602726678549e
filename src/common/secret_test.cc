#include "common/secret.h"

#include <gtest/gtest.h>

#include <sys/stat.h>

#include <cstdio>
#include <fstream>

namespace shoal {
namespace {

TEST(Secret, ProofIsHmacSha256OverRoleAndNonces) {
  // The proof depends on every part: secret, role, challenge, response.
  const std::string a = Proof("0123456789abcdef", "dialer", "challenge", "nonce");
  EXPECT_EQ(a.size(), kProofBytes);
  EXPECT_EQ(a, Proof("0123456789abcdef", "dialer", "challenge", "nonce"));
  EXPECT_NE(a, Proof("0123456789abcdeF", "dialer", "challenge", "nonce"));
  EXPECT_NE(a, Proof("0123456789abcdef", "acceptor", "challenge", "nonce"));
  EXPECT_NE(a, Proof("0123456789abcdef", "dialer", "challengf", "nonce"));
  EXPECT_NE(a, Proof("0123456789abcdef", "dialer", "challenge", "noncf"));
  // The role is separated from the nonces: moving a byte across does not collide.
  EXPECT_NE(Proof("0123456789abcdef", "ab", "c", ""), Proof("0123456789abcdef", "a", "bc", ""));
  EXPECT_TRUE(ProofsEqual(a, a));
  EXPECT_FALSE(ProofsEqual(a, a.substr(1)));
  EXPECT_FALSE(ProofsEqual("", ""));
}

TEST(Secret, KnownAnswer) {
  // HMAC-SHA256(key "0123456789abcdef", "r" 0x00 "c" "n"), computed with
  // `printf 'r\0cn' | openssl dgst -sha256 -hmac 0123456789abcdef`.
  EXPECT_EQ(ToHex(Proof("0123456789abcdef", "r", "c", "n")),
            "1bd2431f4617df8faa42603ae30e79e879574c9ffb948e8753395516c952001d");
}

TEST(Secret, FrameMacCoversKeySequenceAndBytes) {
  const std::string k = SessionKey("0123456789abcdef", "challenge", "nonce");
  EXPECT_EQ(k.size(), 32u);
  EXPECT_NE(k, SessionKey("0123456789abcdef", "challenge", "noncf"));
  const std::string m = FrameMac(k, 7, "frame bytes");
  EXPECT_EQ(m.size(), 32u);
  EXPECT_EQ(m, FrameMac(k, 7, "frame bytes"));
  EXPECT_NE(m, FrameMac(k, 8, "frame bytes"));
  EXPECT_NE(m, FrameMac(k, 7, "frame bytez"));
  EXPECT_NE(m, FrameMac(SessionKey("0123456789abcdef", "c", "n"), 7, "frame bytes"));
  // HMAC-SHA256 itself: key "k", message 8 zero bytes then "x", from
  // `printf '\0\0\0\0\0\0\0\0x' | openssl dgst -sha256 -hmac k`.
  EXPECT_EQ(ToHex(FrameMac("k", 0, "x")), "898a08d3309411c4bba4e94acdec4ed56bcb2111835430e9276f7604d80c4dfe");
  EXPECT_TRUE(ConstantTimeEquals("abc", "abc"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abd"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "ab"));
}

TEST(Secret, NoncesDiffer) {
  EXPECT_EQ(RandomNonce().size(), kNonceBytes);
  EXPECT_NE(RandomNonce(), RandomNonce());
}

TEST(Secret, HexRoundTrip) {
  std::string out;
  EXPECT_TRUE(FromHex(ToHex(std::string("\x00\xff\x10z", 4)), &out));
  EXPECT_EQ(out, std::string("\x00\xff\x10z", 4));
  EXPECT_TRUE(FromHex("ABcd", &out));
  EXPECT_EQ(out, "\xab\xcd");
  EXPECT_FALSE(FromHex("abc", &out));
  EXPECT_FALSE(FromHex("zz", &out));
}

TEST(Secret, FileIsReadTrimmedAndChecked) {
  const std::string path = ::testing::TempDir() + "/shoal_secret_test";
  {
    std::ofstream(path) << "  0123456789abcdef0123  \nsecond line ignored\n";
  }
  ::chmod(path.c_str(), 0600);
  std::string warning;
  auto s = ReadSecretFile(path, &warning);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(*s, "0123456789abcdef0123");
  EXPECT_TRUE(warning.empty());
  ::chmod(path.c_str(), 0644);
  s = ReadSecretFile(path, &warning);
  ASSERT_TRUE(s.ok());
  EXPECT_NE(warning.find("chmod 600"), std::string::npos);
  {
    std::ofstream(path) << "short\n";
  }
  s = ReadSecretFile(path, nullptr);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().ToString().find("at least 16 bytes"), std::string::npos);
  EXPECT_FALSE(ReadSecretFile(path + ".missing", nullptr).ok());
  std::remove(path.c_str());
}

}  // namespace
}  // namespace shoal

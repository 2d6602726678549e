#include "common/secret.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

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

// HMAC-SHA256(key, seq as 8 big-endian bytes || frame) by OpenSSL's
// one-shot function: what every frame's MAC must be.
std::string OneShotFrameMac(std::string_view key, uint64_t seq, std::string_view frame) {
  std::string msg;
  for (int i = 7; i >= 0; --i) msg.push_back(static_cast<char>(seq >> (8 * i)));
  msg.append(frame);
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(msg.data()),
       msg.size(), out, &len);
  return std::string(reinterpret_cast<const char*>(out), len);
}

TEST(Secret, FrameMacerReusedGivesEachFrameItsOwnMac) {
  const std::string k = SessionKey("0123456789abcdef", "challenge", "nonce");
  FrameMacer macer(k);
  ASSERT_FALSE(macer.empty());
  // Frames of sizes around SHA-256's 64-byte blocks and its padding, one
  // after another on the same state.
  uint64_t seq = 0;
  for (size_t size : {0, 1, 47, 55, 56, 63, 64, 65, 119, 1000, 100000, 3}) {
    std::string frame(size, '\0');
    for (size_t i = 0; i < size; ++i) frame[i] = static_cast<char>(i * 131 + size);
    std::string out = "prefix";
    macer.Append(seq, frame, &out);
    ASSERT_EQ(out.substr(0, 6), "prefix");
    const std::string mac = out.substr(6);
    EXPECT_EQ(mac, OneShotFrameMac(k, seq, frame)) << size;
    EXPECT_EQ(mac, FrameMac(k, seq, frame)) << size;
    EXPECT_TRUE(macer.Verify(seq, frame, mac)) << size;
    EXPECT_FALSE(macer.Verify(seq + 1, frame, mac)) << size;
    std::string bad = mac;
    bad[size % bad.size()] ^= 1;
    EXPECT_FALSE(macer.Verify(seq, frame, bad)) << size;
    EXPECT_FALSE(macer.Verify(seq, frame, mac.substr(1))) << size;
    if (size > 0) {
      std::string changed = frame;
      changed[size / 2] ^= 0x40;
      EXPECT_FALSE(macer.Verify(seq, changed, mac)) << size;
    }
    seq += 1 + size;  // numbers far apart as well as next to each other
  }
  // A frame whose MAC is appended to the frame's own string.
  std::string frame = "frame bytes";
  const std::string expected = frame + OneShotFrameMac(k, 9, frame);
  macer.Append(9, frame, &frame);
  EXPECT_EQ(frame, expected);

  FrameMacer moved = std::move(macer);
  EXPECT_TRUE(macer.empty());  // NOLINT(bugprone-use-after-move): moved-from is empty by contract
  EXPECT_TRUE(moved.Verify(9, "frame bytes", expected.substr(11)));
  EXPECT_TRUE(FrameMacer().empty());
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
